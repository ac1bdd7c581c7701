"""Contact sheets of the phantoms for docs/phantoms.md: each view at each difficulty as the reader shows
it, and lesions close up.

Usage: python bench/phantom_sheet.py [--style radiograph] [--seed 777] [--out docs/img]
Writes OUT/phantoms-<style>.png (2 rows: cervical, lumbar; 3 columns: easy, realistic, hard, seeds S, S+1,
S+2) and, for the
radiograph style, OUT/phantoms-lesions.png (corners of each finding, cut around the labelled disk).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from tfmssass.core import anatomy
from tfmssass.io import read_radiograph
from tfmssass.synth.sets import synthesize

TILE = 420


def _tile(image: np.ndarray, text: str, size: int = TILE) -> np.ndarray:
    h, w = image.shape
    scale = size / max(h, w)
    small = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    tile = np.zeros((size + 22, size), np.float32)
    tile[22:22 + small.shape[0], :small.shape[1]] = small
    tile = (np.clip(tile, 0, 1) * 255).astype(np.uint8)
    cv2.putText(tile, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1, cv2.LINE_AA)
    return tile


def overview(style: str, seed: int, work: Path) -> np.ndarray:
    rows = []
    for view in anatomy.VIEWS:
        tiles = []
        for k, difficulty in enumerate(("easy", "realistic", "hard")):
            out = work / f"{style}-{difficulty}-{view}"
            frame = synthesize(out, 1, 1, seed=seed + k, difficulty=difficulty, views=(view,), workers=1,
                               progress=False, style=style)
            image = read_radiograph(out / frame.iloc[0]["image"]).image
            look = frame.iloc[0].get("look", "") if "look" in frame else ""
            tiles.append(_tile(image, f"{view} {difficulty} {look}".strip()))
        rows.append(np.hstack(tiles))
    return np.vstack(rows)


def lesions(seed: int, work: Path, per_kind: int = 1) -> np.ndarray:
    """Close-ups around the corner of each kind of finding (the first found in a realistic set)."""
    out = work / "lesions"
    frame = synthesize(out, 16, 1, seed=seed, difficulty="realistic", workers=2, progress=False, style="radiograph")
    wanted = ["erosion", "sclerosis", "squaring", "syndesmophyte", "bridge", "claw", "traction", "dish"]
    tiles = []
    for kind in wanted:
        for _, row in frame.iterrows():
            hits = [f.split(":")[0] for f in str(row.get("findings", "")).split(";") if f.endswith(":" + kind)]
            hits = [h for h in hits if h in anatomy.ALL_LEVELS or h in anatomy.CORNERS[row["view"]]]
            if not hits:
                continue
            where = hits[0]
            level = where if where in anatomy.ALL_LEVELS else next(
                lv for lv in anatomy.LEVELS[row["view"]] if where in anatomy.level_corners(lv))
            if row[f"{level}_ax"] != row[f"{level}_ax"]:  # off the film
                continue
            image = read_radiograph(out / row["image"]).image
            x, y = row[f"{level}_ax"], row[f"{level}_ay"]
            r = int((18 if row["view"] == "cervical" else 30) / row["pixel_spacing_mm"])
            crop = image[max(int(y) - r, 0):int(y) + r, max(int(x) - r, 0):int(x) + r]
            tiles.append(_tile(crop, f"{kind} {where}", 240))
            break
    return np.hstack(tiles)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--style", default="radiograph")
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--out", default="docs/img")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cv2.imwrite(str(out / f"phantoms-{args.style}.png"), overview(args.style, args.seed, Path(tmp)))
        if args.style == "radiograph":
            cv2.imwrite(str(out / "phantoms-lesions.png"), lesions(args.seed, Path(tmp)))
    print(f"written under {out}")


if __name__ == "__main__":
    main()
