"""Input pipeline vs model step rate, for both stages (the pipeline must not be the bottleneck).

Usage: python bench/pipeline_speed.py LABELS.csv [--work DIR]
Prints a table: stage, what, samples/s. Run it on an idle machine: both sides use every core.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import keras

from tfmssass.core.config import grader_config, keypoint_config
from tfmssass.data.cache import build_cache
from tfmssass.io.labels import load_labels
from tfmssass.stages.grader.data import (
    CornerAugment,
    balanced_training_dataset,
    corner_samples,
    extract_patches,
)
from tfmssass.stages.grader.model import CornerGrader
from tfmssass.stages.keypoints.data import keypoint_dataset, point_table
from tfmssass.stages.keypoints.heatmaps import WeightedHeatmapLoss
from tfmssass.stages.keypoints.model import HRNet


def rate(iterator, batches: int, batch_size: int) -> float:
    next(iterator)  # warm-up (tracing, first decode)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def step_rate(model, x, y, steps: int = 8) -> float:
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("labels")
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="tfmssass-bench-"))
    frame, _ = load_labels(args.labels, check_images=False)
    rows = []

    kc = keypoint_config("small")
    cache, _ = build_cache(frame, work / "cache", kc.cache_long_side, progress=False)
    points, weights = point_table(frame, cache)
    ds = keypoint_dataset(cache["cache_path"], points, weights, kc.input_size, kc.batch_size, kc.sigma)
    it = iter(ds)
    rows.append(("keypoints", "tf.data pipeline (decode PNG, affine, targets)", rate(it, 10, kc.batch_size)))
    x, y = next(it)
    model = HRNet.from_preset(kc.backbone, input_size=kc.input_size)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=WeightedHeatmapLoss())
    rows.append(("keypoints", f"HRNet-{kc.backbone} train step, batch {kc.batch_size}", step_rate(model, x, y)))

    gc = grader_config("small")
    patches, _ = extract_patches(frame, work / "patches", gc.patch_depth_px, progress=False)
    samples = corner_samples(patches)
    ds, _ = balanced_training_dataset(samples, 0, 3, gc.crop, gc.batch_size, gc.per_class, 0, CornerAugment())
    it = iter(ds)
    rows.append(("grader", "tf.data pipeline (crop, CLAHE, augment)", rate(it, 10, gc.batch_size)))
    x, y = next(it)
    grader = CornerGrader(gc.backbone, gc.input_size)
    grader.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    rows.append(("grader", f"{gc.backbone} grader train step, batch {gc.batch_size}", step_rate(grader, x, y)))

    print("| stage | what | samples/s |")
    print("|---|---|---:|")
    for stage, what, value in rows:
        print(f"| {stage} | {what} | {value:.1f} |")



if __name__ == "__main__":
    main()
