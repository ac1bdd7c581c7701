"""Training input: the one decode (``prepare``) and the input pipelines against the model step
rate, for both stages (the pipeline must not be the bottleneck).

Every training run reads prepared records (``--labels`` prepares into the run folder first), so
this is the whole data path: decoding the radiographs once, in parallel processes, then epochs
through tf.data with training augmentation (reading, PNG decoding, warping, CLAHE, targets).

    python bench/pipeline_speed.py [--labels LABELS.csv | --patients 24] [--work DIR] [--workers 2]

Prints a table: stage, what, rate. Run it on an idle machine: both sides use every core.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import keras

from tfmssass.core.config import grader_config, keypoint_config
from tfmssass.data.tfrecords import grade_counts
from tfmssass.stages.grader.data import CornerAugment, balanced_steps, prepared_balanced_dataset
from tfmssass.stages.grader.model import build_grader
from tfmssass.stages.keypoints.data import KeypointAugment, prepared_keypoint_dataset
from tfmssass.stages.keypoints.heatmaps import WeightedHeatmapLoss
from tfmssass.stages.keypoints.model import build_hrnet
from tfmssass.stages.prepare import prepare
from tfmssass.synth.sets import synthesize


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", help="a labels.csv (default: phantoms made in the work folder)")
    parser.add_argument("--patients", type=int, default=24, help="phantom patients when no --labels")
    parser.add_argument("--work", default=None)
    parser.add_argument("--workers", type=int, default=2, help="prepare's decoding processes")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="tfmssass-bench-"))
    labels = Path(args.labels) if args.labels else work / "phantoms" / "labels.csv"
    if not labels.is_file():
        synthesize(labels.parent, patients=args.patients, visits=1, seed=500, workers=args.workers, progress=False)
    kc, gc = keypoint_config("small"), grader_config("small")
    data = work / "prepared"
    shutil.rmtree(data, ignore_errors=True)
    start = time.perf_counter()
    index = prepare(labels, data, kc.cache_long_side, gc.patch_depth_px, workers=args.workers, progress=False)
    seconds = time.perf_counter() - start
    radiographs = sum(index["splits"][s]["radiographs"] for s in ("train", "val"))
    rows = [("both", f"prepare: decode {radiographs} radiographs once ({args.workers} processes)",
             f"{radiographs / seconds:.1f} radiographs/s")]

    ds = prepared_keypoint_dataset(data, "train", kc.input_size, kc.batch_size, kc.sigma, KeypointAugment())
    it = iter(ds)
    rows.append(("keypoints", "tf.data pipeline (read, decode PNG, affine, targets)",
                 f"{rate(it, 10, kc.batch_size):.1f} samples/s"))
    x, y = next(it)
    model = build_hrnet(kc)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=WeightedHeatmapLoss())
    rows.append(("keypoints", f"HRNet-{kc.backbone} train step, batch {kc.batch_size}",
                 f"{step_rate(model, x, y):.1f} samples/s"))

    counts = grade_counts(index, "train")
    steps = balanced_steps(counts, gc.batch_size, gc.per_class)
    ds = prepared_balanced_dataset(data, counts, 0, gc.crop, gc.batch_size, gc.seed, CornerAugment(),
                                   steps_per_epoch=steps)
    it = iter(ds)
    rows.append(("grader", "tf.data pipeline (read, crop, CLAHE, augment; grades balanced)",
                 f"{rate(it, 10, gc.batch_size):.1f} samples/s"))
    x, y = next(it)
    grader = build_grader(gc)
    grader.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    rows.append(("grader", f"{gc.backbone} grader train step, batch {gc.batch_size}",
                 f"{step_rate(grader, x, y):.1f} samples/s"))

    print("| stage | what | rate |")
    print("|---|---|---:|")
    for stage, what, value in rows:
        print(f"| {stage} | {what} | {value} |")


if __name__ == "__main__":
    main()
