"""Where a stage-1 run loses films, by view and look, before any grade: its orientation classifier, the
levels it names wrong, and what its plausibility gate does with a film read turned.

    python bench/stage1_checks.py --keypoints RUN --phantoms DIR [--films 60]

On the first ``--films`` upright labelled films of DIR (half of each view):
1. **Orientation**: the classifier's answer on the film and its mirror averaged, as scoring asks it:
   sure and right (upright at probability 0.9 or more), right but unsure, or wrong.
2. **Levels named wrong**, read as scoring reads them (:func:`levels_wrong`): on the film whole and cut
   above and below between two disks (:func:`cut_versions`), so a run is judged on archives' cut films too;
   and per level on whole films, those answered a third of a disk or more too high or too low.
3. **The gate on turned films**: stage 1 run on the film turned 0, 90, 180 and 270 degrees without the
   classifier, and the share its plausibility gate lets through. What it lets through at 180 degrees is
   read upside down; only the classifier stands between such a film and grades on the wrong corners.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keypoints", required=True, help="stage-1 run folder (weights, classifier, limits)")
    parser.add_argument("--phantoms", required=True, help="upright labelled films ('tfmssass synth')")
    parser.add_argument("--films", type=int, default=60)
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from tfmssass.core.anatomy import LEVELS, VIEW_SLICES
    from tfmssass.core.config import KeypointConfig
    from tfmssass.io import read_radiograph
    from tfmssass.stages.keypoints.detect import FOUND, KeypointDetector, Stage1, shrink_to_long_side
    from tfmssass.stages.keypoints.model import build_hrnet
    from tfmssass.stages.keypoints.orientation import ORIENTATION_THRESHOLD, load_orientation, thumbnail, with_mirror
    from tfmssass.stages.keypoints.plausibility import read_limits
    from tfmssass.stages.keypoints.validation import cut_versions, levels_wrong
    from tfmssass.stages.runs import BEST

    run = Path(args.keypoints)
    config = KeypointConfig.from_dict(json.loads((run / "config.json").read_text())["keypoints"])
    model = build_hrnet(config)
    model.load_weights(str(run / BEST))
    detector = KeypointDetector.from_config(model, config)
    gate = Stage1(model, config.input_size, config.cache_long_side, config.confidence_threshold,
                  config.min_points, limits=read_limits(run))
    classifier = load_orientation(run)

    labels = pd.read_csv(Path(args.phantoms) / "labels.csv")
    labels = labels.groupby("view").head(args.films // 2)
    names = [c[:-3] for c in labels.columns if c.endswith("_cx")]
    rows, misplaced = [], []
    for index, (_, row) in enumerate(labels.iterrows()):
        image = read_radiograph(Path(args.phantoms) / row["image"]).image.astype(np.float32)
        small, scale = (t.numpy() for t in shrink_to_long_side(tf.constant(image), config.cache_long_side))
        points = np.array([[row[f"{n}_{e}x"], row[f"{n}_{e}y"]] for n in names for e in "ca"], np.float32) * scale
        view = row["view"]
        record = {"view": view, "look": row.get("look", "")}
        if classifier is not None:
            seen = thumbnail(small)
            p = with_mirror(*classifier(tf.stack([seen, seen[:, ::-1]]), training=False))[:4].numpy()
            record["orientation"] = ("sure and right" if p.argmax() == 0 and p.max() >= ORIENTATION_THRESHOLD
                                     else "right, unsure" if p.argmax() == 0 else "wrong")
        centres = points[VIEW_SLICES[view]][0::2]
        known = centres[np.all(np.isfinite(centres), axis=1)]
        step = float(np.median(np.linalg.norm(np.diff(known, axis=0), axis=1)))
        for kind, (film, truth) in zip(("whole", "cut above", "cut below"), cut_versions(small, points, view, index)):
            detection = detector.detect(film)
            wrong, labelled = levels_wrong(detection, truth, view, film.shape[0], film.shape[1], step)
            record[f"wrong {kind}"], record[f"labelled {kind}"] = wrong, labelled
            if kind == "whole" and detection.found and detection.view == view:
                low = detection.low_confidence[VIEW_SLICES[view]]
                off = (detection.points[VIEW_SLICES[view]][0::2] - centres)[:, 1] / step  # + too low, in disks
                for level, (shift, unsure) in enumerate(zip(off, low[0::2] | low[1::2])):
                    if not unsure and abs(shift) >= 1 / 3:
                        misplaced.append({"view": view, "level": LEVELS[view][level],
                                          "too": "high" if shift < 0 else "low"})
        for turns in (0, 1, 2, 3):
            found = gate.detect(tf.constant(np.ascontiguousarray(np.rot90(image, turns))), tf.constant(-1)).finding
            record[f"gate {90 * turns}"] = int(found) == FOUND
        rows.append(record)
    films = pd.DataFrame(rows)

    pd.set_option("display.width", 160)
    keys = ["view", "look"]
    table = films.groupby(keys).size().rename("films").to_frame()
    if classifier is not None:
        table = table.join(pd.crosstab([films.view, films.look], films.orientation, normalize="index").round(2))
    for kind in ("whole", "cut above", "cut below"):
        grouped = films.groupby(keys)
        table[f"% wrong {kind}"] = (100 * grouped[f"wrong {kind}"].sum() / grouped[f"labelled {kind}"].sum()).round(1)
    for degrees in (0, 90, 180, 270):
        table[f"gate {degrees}°"] = films.groupby(keys)[f"gate {degrees}"].mean().round(2)
    print(table.to_string())
    if misplaced:
        off = pd.DataFrame(misplaced)
        print("\nwhole films, confident levels answered a third of a disk or more too high or too low:")
        print(pd.crosstab([off.view, off.level], off.too).to_string())
    print(f"\nall {len(films)} films: levels named wrong "
          + ", ".join(f"{kind} {100 * films[f'wrong {kind}'].sum() / max(films[f'labelled {kind}'].sum(), 1):.1f}%"
                      for kind in ("whole", "cut above", "cut below"))
          + "; let through turned " + ", ".join(f"{90 * t}° {films[f'gate {90 * t}'].mean():.2f}" for t in range(4))
          + (f"; orientation sure and right {(films.orientation == 'sure and right').mean():.2f}, "
             f"right {(films.orientation != 'wrong').mean():.2f}" if classifier is not None else ""))


if __name__ == "__main__":
    main()
