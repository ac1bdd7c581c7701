"""``tfmssass prepare``: decode every labelled radiograph once into TFRecord shards for training.

Radiographs are split by patient (as a training run would) and cut into units of ``per_shard``
radiographs. Each unit is decoded in parallel and written as one radiograph shard plus one corner
shard per grade (:mod:`tfmssass.data.tfrecords`); a unit's marker in ``.units/`` is written last, so
a rerun skips every complete unit and redoes only the one a kill interrupted. When all units are
there, ``index.json`` (counts per split, view and grade; the shard files with their record counts),
``patients.csv``, ``radiographs.csv``, ``split.csv`` and ``errors.csv`` are written.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from tfmssass.core import anatomy
from tfmssass.core.atomic import keep_settings, write_text
from tfmssass.core.system import usable_cpus
from tfmssass.data.tfrecords import (
    CORNERS,
    FORMAT_VERSION,
    INDEX,
    LABEL_CLASSES,
    NEGATIVE_VIEW,
    RADIOGRAPHS,
    PrepareError,
    corner_example,
    radiograph_example,
)
from tfmssass.io import RadiographError, read_radiograph
from tfmssass.io.images import encode_png16
from tfmssass.io.labels import drawn_by_synth, load_labels, resolve_image
from tfmssass.io.split import split_patients, write_split
from tfmssass.ops.image import shrink_to_long_side
from tfmssass.stages.grader.crops import level_patch
from tfmssass.stages.grader.data import croppable_levels, level_points, patch_points, record_label
from tfmssass.stages.keypoints.data import row_points


def _grades(row) -> list[int]:
    """The 24 corner labels in :data:`anatomy.ALL_CORNERS` order, -1 where blank."""
    return [-1 if (g := record_label(row, c)) is None else g for c in anatomy.ALL_CORNERS]


def prepare_one(task: dict) -> dict:
    """Decode one radiograph into its records (runs in a worker process).

    Returns {"row", "radiograph": bytes, "corners": [(grade, bytes)], "error": None} or, for a
    file that cannot be used, {"row", "error": "file: reason"}. A negative (``task["negative"]``, a film
    that is not a lateral cervical or lumbar radiograph) has every point known absent and no corners.
    """
    row, path = task["row"], Path(task["path"])
    negative = task.get("negative", False)
    ids = {k: row.get(k, "") for k in ("image", "patient_id", "visit_date", "view")}
    try:
        radiograph = read_radiograph(path)
    except RadiographError as exc:
        return {"row": task["index"], "error": str(exc)}
    image = radiograph.image
    small, scale = shrink_to_long_side(image, task["long_side"])  # as inference shrinks it
    sx, sy = (float(v) for v in scale.numpy())
    if negative:  # every heatmap must stay empty, and there is nothing to grade
        points, weights, grades = np.full((24, 2), np.nan, np.float32), np.ones(24, np.float32), [-1] * 24
    else:
        points, weights = row_points(row, sx, sy)
        grades = _grades(row)
    record = radiograph_example(encode_png16(small.numpy()), points, weights, grades, (sx, sy),
                                (radiograph.height, radiograph.width), radiograph.calibrated_spacing_mm, ids)
    if negative:
        return {"row": task["index"], "radiograph": record, "corners": [], "error": None}
    corners = []
    depth_px = task["patch_depth_px"]
    level_points_used = level_points(row) if task.get("points") is None else task["points"]
    for level, c, a, up, depth in croppable_levels(row["view"], level_points_used):
        labelled = [(name, sup, record_label(row, name))
                    for name, sup in zip(anatomy.level_corners(level), (False, True))]
        graded = [(name, sup, label) for name, sup, label in labelled if label is not None]
        if not graded:
            continue  # not read: never a 0, never trained on (an NG corner teaches gradability)
        patch, _, _ = level_patch(image, tf.constant(c, tf.float32), float(depth), depth_px)
        png = encode_png16(patch.numpy())
        p = patch_points(c, a, up, depth, depth_px)
        for name, sup, grade in graded:
            corners.append((int(grade), corner_example(png, (p["cx"], p["cy"]), (p["ax"], p["ay"]),
                                                       (p["upx"], p["upy"]), sup, int(grade), name,
                                                       level, ids)))
    return {"row": task["index"], "radiograph": record, "corners": corners, "error": None}


def _labels_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _settings(labels_csv: Path, long_side: int, patch_depth_px: int, val_fraction: float, seed: int,
              per_shard: int, corners_from: str, negatives_csv: Path | None) -> dict:
    settings = {"format": FORMAT_VERSION, "labels": str(labels_csv.resolve()),
                "labels_sha1": _labels_digest(labels_csv), "long_side": long_side,
                "patch_depth_px": patch_depth_px, "val_fraction": val_fraction, "seed": seed,
                "per_shard": per_shard, "corners_from": corners_from}
    if negatives_csv is not None:  # absent otherwise, so folders prepared before still resume
        settings.update(negatives=str(negatives_csv.resolve()), negatives_sha1=_labels_digest(negatives_csv))
    return settings


def read_negatives(csv: Path) -> pd.DataFrame:
    """The films a negatives CSV lists (column ``image``, relative to the CSV's folder; ``patient_id`` and
    ``visit_date`` optional): radiographs that are not lateral cervical or lumbar films."""
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PrepareError(f"{csv}: cannot be read as a CSV ({exc})") from None
    if "image" not in frame.columns:
        raise PrepareError(f"{csv}: no 'image' column")
    for column in ("patient_id", "visit_date"):
        if column not in frame.columns:
            frame[column] = ""
    frame["view"] = NEGATIVE_VIEW
    frame.attrs["source"] = str(csv)
    return frame


def _negative_split(frame: pd.DataFrame, val_fraction: float, seed: int) -> pd.Series:
    """train or val per negative film, by a seeded hash of its path (negatives have no patient to split by)."""
    share = frame["image"].map(lambda image: int(hashlib.sha1(f"{seed}:{image}".encode()).hexdigest()[:8], 16)
                               / 0xFFFFFFFF)
    return share.map(lambda v: "val" if v < val_fraction else "train")


def _open_folder(out: Path, settings: dict) -> None:
    """One folder, one preparation: a rerun with other labels or settings is refused."""
    if not keep_settings(out / "settings.json", settings):
        raise PrepareError(f"{out}: holds data prepared from other labels or settings; use a new --out folder")


def _write_records(target: Path, records: list[bytes]) -> None:
    """A whole shard to a temporary file, renamed on success: a shard that exists is complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for record in records:
            writer.write(record)
    os.replace(tmp, target)


def _write_unit(out: Path, split: str, number: str, results: list[dict], frame: pd.DataFrame) -> dict:
    """``frame``: the table the unit's rows index (the labels, or the negatives)."""
    """A unit's shards (radiographs, then corners per grade), then its marker."""
    good = [r for r in results if r["error"] is None]
    files = {}
    shard = f"{RADIOGRAPHS}/{split}-{number}.tfrecord"
    if good:
        _write_records(out / shard, [r["radiograph"] for r in good])
        files[shard] = len(good)
    for grade in LABEL_CLASSES:
        records = [b for r in good for g, b in r["corners"] if g == grade]
        if records:
            name = f"{CORNERS}/{split}-g{grade}-{number}.tfrecord"
            _write_records(out / name, records)
            files[name] = len(records)
    rows = []
    for r in good:
        row = frame.loc[r["row"]]
        counts = [sum(1 for g, _ in r["corners"] if g == grade) for grade in LABEL_CLASSES]
        rows.append({"image": row["image"], "patient_id": row["patient_id"], "visit_date": row["visit_date"],
                     "view": row["view"], "split": split, "shard": shard,
                     **{f"grade_{g}": n for g, n in zip(LABEL_CLASSES, counts)}})
    marker = {"files": files, "radiographs": rows, "errors": [r["error"] for r in results if r["error"]]}
    write_text(_marker(out, split, number), json.dumps(marker) + "\n")
    return marker


def _marker(out: Path, split: str, number: str) -> Path:
    return out / ".units" / f"{split}-{number}.json"


def _units(side: pd.Series, per_shard: int, prefix: str = "") -> list[tuple[str, str, list]]:
    """(split, unit number, row indices): each split's rows (``side``: train or val per row) in table
    order, per_shard at a time."""
    units = []
    for name in ("train", "val"):
        rows = list(side.index[side == name])
        for k in range(0, len(rows), per_shard):
            units.append((name, f"{prefix}{k // per_shard:05d}", rows[k:k + per_shard]))
    return units


def _summarise(out: Path, settings: dict, markers: list[dict], phantom: bool) -> dict:
    table = pd.DataFrame([r for m in markers for r in m["radiographs"]],
                         columns=["image", "patient_id", "visit_date", "view", "split", "shard",
                                  *(f"grade_{g}" for g in LABEL_CLASSES)])
    grade_cols = [f"grade_{g}" for g in LABEL_CLASSES]
    lateral = table["view"] != NEGATIVE_VIEW  # negatives have no patient to count
    splits = {}
    for name in ("train", "val"):
        part = table[table["split"] == name]
        views = {v: int((part["view"] == v).sum()) for v in anatomy.VIEWS}
        if (part["view"] == NEGATIVE_VIEW).any():  # listed only where there are some
            views[NEGATIVE_VIEW] = int((part["view"] == NEGATIVE_VIEW).sum())
        splits[name] = {
            "radiographs": int(len(part)), "patients": int(part.loc[lateral[part.index], "patient_id"].nunique()),
            "views": views, "grades": {str(g): int(part[f"grade_{g}"].sum()) for g in LABEL_CLASSES},
        }
    patients = table[lateral].groupby(["patient_id", "split"], sort=True).agg(
        radiographs=("image", "size"), **{c: (c, "sum") for c in grade_cols}).reset_index()
    patients["corners"] = patients[grade_cols].sum(axis=1)
    errors = [line for m in markers for line in m["errors"]]
    index = {
        "settings": settings, "splits": splits,
        "files": {name: n for m in markers for name, n in m["files"].items()},
        "training_data": {"radiographs": int(len(table)), "patients": int(table.loc[lateral, "patient_id"].nunique()),
                          "views": {str(k): int(v) for k, v in table["view"].value_counts().sort_index().items()},
                          "phantom": phantom},
        "errors": len(errors),
    }
    write_text(out / "radiographs.csv", table.to_csv(index=False))
    write_text(out / "patients.csv", patients[["patient_id", "split", "radiographs", "corners", *grade_cols]]
               .to_csv(index=False))
    write_text(out / "errors.csv", pd.DataFrame({"error": errors}).to_csv(index=False))
    write_text(out / INDEX, json.dumps(index, indent=1) + "\n")
    return index


def prepare(labels_csv, out, long_side: int = 1024, patch_depth_px: int = 96, val_fraction: float = 0.2,
            seed: int = 0, per_shard: int = 64, workers: int | None = None, progress: bool = True,
            corner_points: dict | None = None, corners_from: str = "labels", negatives_csv=None) -> dict:
    """Prepare (or finish preparing) ``out`` from ``labels_csv``; returns the index.

    Corner patches are cut at the labelled points, or at ``corner_points`` ({label row: {level:
    (cx, cy, ax, ay)}}, e.g. a stage-1 run's predictions; ``corners_from`` names their source).
    ``negatives_csv`` lists films that are not lateral cervical or lumbar radiographs
    (:func:`read_negatives`): stage 1 learns to find nothing on them.
    """
    labels_csv, out = Path(labels_csv), Path(out)
    negatives_csv = Path(negatives_csv) if negatives_csv is not None else None
    frame, _ = load_labels(labels_csv)
    negatives = read_negatives(negatives_csv) if negatives_csv is not None else None
    settings = _settings(labels_csv, long_side, patch_depth_px, val_fraction, seed, per_shard, corners_from,
                         negatives_csv)
    _open_folder(out, settings)
    split = split_patients(frame, val_fraction, seed)
    write_split(split, out / "split.csv")
    sources = {"": frame}
    units = [(*unit, "") for unit in _units(frame["patient_id"].map(dict(zip(split["patient_id"], split["split"]))),
                                            per_shard)]
    if negatives is not None:
        sources[NEGATIVE_VIEW] = negatives
        units += [(*unit, NEGATIVE_VIEW)
                  for unit in _units(_negative_split(negatives, val_fraction, seed), per_shard, "neg-")]
    markers, pending = [], []
    for unit in units:
        marker = _marker(out, *unit[:2])
        if marker.is_file():
            markers.append(json.loads(marker.read_text()))
        else:
            pending.append(unit)
    workers = workers or usable_cpus()
    todo = sum(len(unit[2]) for unit in pending)
    bar = tqdm(total=todo, desc="preparing radiographs", unit="image", disable=not progress or not todo)
    if markers:
        bar.write(f"{out}: {len(markers)} of {len(units)} shard units already complete, skipped")
    pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            if workers > 1 and todo > 1 else None)
    try:
        for side, number, rows, source in pending:
            table = sources[source]
            tasks = [{"index": i, "row": table.loc[i].to_dict(), "path": str(resolve_image(table, table.loc[i])),
                      "long_side": long_side, "patch_depth_px": patch_depth_px, "negative": bool(source),
                      "points": None if corner_points is None or source else corner_points.get(i, {})}
                     for i in rows]
            results = []
            for result in (pool.map(prepare_one, tasks) if pool else map(prepare_one, tasks)):
                if result["error"]:
                    bar.write(f"skipped: {result['error']}")
                results.append(result)
                bar.update(1)
            markers.append(_write_unit(out, side, number, results, table))
    finally:
        bar.close()
        if pool:
            pool.shutdown(cancel_futures=True)
    phantom = drawn_by_synth(frame) and (negatives is None or negatives.empty or drawn_by_synth(negatives))
    return _summarise(out, settings, markers, phantom)


def prepare_for_run(run: Path, labels_csv, long_side: int, patch_depth_px: int, val_fraction: float, seed: int,
                    progress: bool = True, corner_points: dict | None = None,
                    corners_from: str = "labels") -> tuple[Path, dict]:
    """A ``--labels`` training run's data: its labels prepared into ``RUN/data`` (resumable, like
    any prepared folder), so every run trains from records. Returns (data folder, index); the
    radiographs that could not be read are listed in ``RUN/skipped.csv`` too."""
    data = Path(run) / "data"
    index = prepare(labels_csv, data, long_side, patch_depth_px, val_fraction, seed, progress=progress,
                    corner_points=corner_points, corners_from=corners_from)
    write_text(Path(run) / "skipped.csv", (data / "errors.csv").read_text())
    return data, index
