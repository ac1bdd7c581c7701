"""Stage-1 evaluation: how far predicted disk points are from the labelled ones.

Errors are radial (Euclidean) distances in original pixels, in millimetres where the pixel spacing
is calibrated, and as % of the image diagonal. A point counts as a detection failure when it is off
by more than 5% of the diagonal, or when its radiograph was "spine not found" or got the wrong view.
Such points enter the median as infinitely wrong, so missed spines cannot flatter the result.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from tfmssass.core import anatomy
from tfmssass.core.anatomy import VIEW_SLICES
from tfmssass.core.atomic import atomic_path, write_bytes, write_text
from tfmssass.io import RadiographError, read_radiograph
from tfmssass.io.labels import load_labels, resolve_image
from tfmssass.stages.runs import load_detector

FAILURE_PCT = 5.0
PCK_MM = (2.0, 5.0)
PCK_PCT = (1.0, 2.0)


def point_records(row, image_shape, spacing_mm, detection, file) -> list[dict]:
    """One record per labelled point of the radiograph's view."""
    view = row["view"]
    diagonal = math.hypot(*image_shape)
    span = VIEW_SLICES[view]
    usable = detection.found and detection.view == view
    records = []
    for j, level in enumerate(anatomy.LEVELS[view]):
        cx, cy, ax, ay = (row[c] for c in anatomy.keypoint_columns(level))
        for k, (name, x, y) in enumerate((("c", cx, cy), ("a", ax, ay))):
            if pd.isna(x) or pd.isna(y):
                continue
            slot = span.start + 2 * j + k
            px, py = detection.points[slot] if usable else (np.nan, np.nan)
            error = math.hypot(px - x, py - y) if usable else math.inf
            records.append({
                "file": file, "patient_id": row["patient_id"], "visit_date": row["visit_date"],
                "view": view, "level": level, "point": name, "true_x": x, "true_y": y,
                "pred_x": px, "pred_y": py, "confidence": float(detection.confidence[slot]),
                "error_px": error, "error_mm": error * spacing_mm if spacing_mm else np.nan,
                "error_pct_diagonal": error / diagonal * 100.0,
                "failed": (not usable) or error / diagonal * 100.0 > FAILURE_PCT,
                "detected_view": detection.view, "spine_found": detection.found,
            })
    return records


def summarise(points: pd.DataFrame) -> dict:
    """Mean/median error (px, mm, % diagonal), PCK and failure rate over a point table.

    Means are over detected points; medians, PCK and failures count misses as infinitely wrong.
    Millimetre figures use calibrated radiographs only (``error_mm`` is NaN elsewhere).
    """
    if points.empty:
        return {"points": 0}
    finite = np.isfinite(points["error_px"])
    mm = points["error_mm"].dropna()
    pct = points["error_pct_diagonal"]
    out = {
        "points": int(len(points)),
        "points_calibrated": int(len(mm)),
        "mean_error_px": float(points.loc[finite, "error_px"].mean()),
        "median_error_px": float(points["error_px"].median()),
        "mean_error_mm": float(mm[np.isfinite(mm)].mean()) if len(mm) else math.nan,
        "median_error_mm": float(mm.median()) if len(mm) else math.nan,
        "mean_error_pct_diagonal": float(pct[finite].mean()),
        "median_error_pct_diagonal": float(pct.median()),
        "failure_rate": float(points["failed"].mean()),
    }
    for limit in PCK_MM:
        out[f"pck_{limit:g}mm"] = float((mm <= limit).mean()) if len(mm) else math.nan
    for limit in PCK_PCT:
        out[f"pck_{limit:g}pct_diagonal"] = float((pct <= limit).mean())
    return out


def draw_comparison(image: np.ndarray, records: list[dict], path: Path, long_side: int = 900) -> None:
    """True points green, predicted red, joined by a yellow line; saved as PNG."""
    scale = min(1.0, long_side / max(image.shape))
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = cv2.cvtColor((np.clip(small, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    for r in records:
        t = (int(round(r["true_x"] * scale)), int(round(r["true_y"] * scale)))
        cv2.circle(canvas, t, 4, (0, 200, 0), -1)
        if np.isfinite(r["pred_x"]):
            p = (int(round(r["pred_x"] * scale)), int(round(r["pred_y"] * scale)))
            cv2.line(canvas, t, p, (0, 220, 255), 1)
            cv2.circle(canvas, p, 4, (0, 0, 230), 1)
    ok, png = cv2.imencode(".png", canvas)
    if ok:
        write_bytes(path, png.tobytes())


def evaluate_keypoints(run_dir, labels_csv, out, flip_test: bool = False, worst: int = 6) -> dict:

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    detector = load_detector(run_dir, flip_test=flip_test)
    frame, _ = load_labels(labels_csv, check_images=False)
    records, unreadable, per_image = [], [], []
    for _, row in tqdm(list(frame.iterrows()), desc="evaluating", unit="radiograph"):
        path = resolve_image(frame, row)
        try:
            radiograph = read_radiograph(path)
        except RadiographError as exc:
            unreadable.append({"file": str(row["image"]), "reason": exc.reason})
            continue
        meta = radiograph.meta
        spacing = meta["pixel_spacing_mm"][0] if meta.get("spacing_calibrated") else None
        detection = detector.detect(radiograph.image)
        recs = point_records(row, radiograph.image.shape, spacing, detection, str(row["image"]))
        records += recs
        if recs:
            per_image.append((float(np.median([r["error_pct_diagonal"] for r in recs])), path, recs))
    points = pd.DataFrame(records)
    with atomic_path(out / "points.csv") as tmp:
        points.to_csv(tmp, index=False)
    per_level = []
    for (level, point), group in points.groupby(["level", "point"], sort=False):
        per_level.append({"level": level, "point": point, **summarise(group)})
    with atomic_path(out / "levels.csv") as tmp:
        pd.DataFrame(per_level).to_csv(tmp, index=False)
    images = points.groupby("file").first()
    summary = {
        "run": str(run_dir), "labels": str(labels_csv), "flip_test": flip_test,
        "radiographs": int(len(images)), "unreadable": unreadable,
        "overall": {**summarise(points),
                    "view_accuracy": float((images["detected_view"] == images["view"]).mean()),
                    "spine_not_found_rate": float((~images["spine_found"]).mean())},
        "by_view": {view: summarise(group) for view, group in points.groupby("view")},
    }
    write_text(out / "summary.json", json.dumps(summary, indent=1, default=float) + "\n")
    for rank, (_, path, recs) in enumerate(sorted(per_image, key=lambda t: -t[0])[:worst], start=1):
        draw_comparison(read_radiograph(path).image, recs, out / f"worst_{rank}.png")
    return summary
