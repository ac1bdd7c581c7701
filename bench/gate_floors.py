"""How far stage 1's points on upright films fall outside the training labels' range: what the
plausibility gate's floors (``FLOOR`` in ``tfmssass/stages/keypoints/plausibility.py``) must allow.

    python bench/gate_floors.py --keypoints RUN --labels TRAIN_LABELS --phantoms TUNING_DIR [--films 120]

The limits are measured from TRAIN_LABELS without floors; each film of TUNING_DIR (upright, never
the held-out sets) is detected by the run's stage 1, and per feature the largest excess over the
limits of that film is kept. Prints the 90th, 95th, 99th percentile and the maximum per feature.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from tfmssass.core import anatomy
    from tfmssass.io import read_radiograph
    from tfmssass.stages.keypoints import plausibility
    from tfmssass.stages.keypoints.detect import Stage1
    from tfmssass.stages.runs import load_keypoints

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keypoints", required=True, help="Stage-1 run folder.")
    parser.add_argument("--labels", required=True, help="The run's training labels.csv.")
    parser.add_argument("--phantoms", required=True, help="Tuning films (a folder with labels.csv).")
    parser.add_argument("--films", type=int, default=120)
    args = parser.parse_args()

    train = pd.read_csv(args.labels)
    points = train[list(anatomy.ALL_KEYPOINT_COLUMNS)].to_numpy(float).reshape(-1, 24, 2)
    shipped = dict(plausibility.FLOOR)
    plausibility.FLOOR = {k: 0.0 for k in shipped}  # the labels' own range, widened only
    limits = plausibility.measure_limits(points, list(train["view"]))
    model, config = load_keypoints(args.keypoints)
    stage1 = Stage1(model, config.input_size, config.cache_long_side, config.confidence_threshold, config.min_points)
    detect = tf.function(stage1.detect, autograph=False, input_signature=[
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([], tf.int32)])
    excess = {k: [] for k in plausibility.FEATURES}
    tuning = pd.read_csv(Path(args.phantoms) / "labels.csv").head(args.films)
    for name in tuning["image"]:
        image = read_radiograph(Path(args.phantoms) / name).image.astype(np.float32)
        result = detect(tf.constant(image), tf.constant(-1))
        view = anatomy.VIEWS[int(result.view)]
        span = anatomy.VIEW_SLICES[view]
        confidence = result.confidence.numpy()[span]
        valid = np.minimum(confidence[0::2], confidence[1::2]) >= config.confidence_threshold
        values, measured = plausibility.chain_features(np.nan_to_num(result.points.numpy()[span]), valid)
        for k in plausibility.FEATURES:
            low, high = np.array(limits[view][k]).T
            over = np.maximum(low - values[k].numpy(), values[k].numpy() - high)
            excess[k].append(float(np.where(measured[k].numpy(), np.maximum(over, 0.0), 0.0).max()))
    print(f"{len(tuning)} films of {args.phantoms}; limits from {args.labels} without floors")
    print("| feature | 90th | 95th | 99th percentile | max | floor now |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for k, values in excess.items():
        p = np.percentile(values, [90, 95, 99])
        print(f"| {k} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} | {max(values):.3f} | {shipped[k]} |")


if __name__ == "__main__":
    main()
