"""Training input throughput: labels.csv (decode-once PNG cache) against prepared TFRecord shards.

For each stage and each input path, this times the first epoch from nothing (decoding the
radiographs included: the labels path decodes into its cache serially, ``tfmssass prepare`` decodes
in parallel processes) and then later epochs (samples per second through the whole tf.data
pipeline with training augmentation: reading, PNG decoding, warping, CLAHE, targets). No model
runs, so the numbers are the input pipeline's ceiling on this machine.

    python bench/data_throughput.py [--patients 24] [--epochs 3] [--work bench_work/throughput]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tfmssass.core.config import grader_config, keypoint_config
from tfmssass.data.cache import build_cache
from tfmssass.data.records import grade_counts
from tfmssass.io.labels import load_labels
from tfmssass.io.split import split_patients
from tfmssass.stages.grader.data import (
    CornerAugment,
    balanced_steps,
    balanced_training_dataset,
    corner_samples,
    extract_patches,
    prepared_balanced_dataset,
)
from tfmssass.stages.keypoints.data import (
    KeypointAugment,
    keypoint_dataset,
    point_table,
    prepared_keypoint_dataset,
)
from tfmssass.stages.prepare import prepare
from tfmssass.synth.phantoms import synthesize


def drain(iterator, steps: int) -> float:
    """Seconds to pull ``steps`` batches from a running iterator (Keras keeps one across epochs)."""
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return time.perf_counter() - start


def epochs(dataset, steps: int, later: int) -> tuple[float, float]:
    """(seconds of the first epoch, mean seconds of the ``later`` epochs after it)."""
    iterator = iter(dataset)
    first = drain(iterator, steps)
    return first, sum(drain(iterator, steps) for _ in range(later)) / later


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed after the first")
    parser.add_argument("--work", default="bench_work/throughput")
    args = parser.parse_args()
    work = Path(args.work)
    phantoms = work / "phantoms"
    if not (phantoms / "labels.csv").is_file():
        synthesize(phantoms, patients=args.patients, visits=1, seed=500, workers=2, progress=False)
    for old in ("labels_run", "prepared"):
        shutil.rmtree(work / old, ignore_errors=True)
    kp, gr = keypoint_config("small"), grader_config("small")
    frame, _ = load_labels(phantoms / "labels.csv", check_images=False)
    split = split_patients(frame, kp.val_fraction, kp.seed)
    train_rows = frame[frame["patient_id"].map(dict(zip(split["patient_id"], split["split"]))) == "train"]
    rows = []

    # ---- labels.csv path: decode (all rows, as a run does) into the run folder's cache, serially;
    #      then epochs of the training rows from the cache
    start = time.perf_counter()
    cache, _ = build_cache(frame, work / "labels_run" / "cache", kp.cache_long_side, progress=False)
    decode_kp = time.perf_counter() - start
    cache = cache[cache["row"].isin(train_rows.index)].reset_index(drop=True)
    points, weights = point_table(frame, cache)
    kp_steps = max(1, len(cache) // kp.batch_size)
    kp_ds = keypoint_dataset(cache["cache_path"], points, weights, kp.input_size, kp.batch_size, kp.sigma,
                             KeypointAugment(), seed=0)
    start = time.perf_counter()
    patches, _ = extract_patches(frame, work / "labels_run" / "patches", gr.patch_depth_px, progress=False)
    decode_gr = time.perf_counter() - start
    samples = corner_samples(patches)
    samples = samples[samples["row"].isin(train_rows.index)].reset_index(drop=True)
    gr_ds, gr_steps = balanced_training_dataset(samples, 0, args.epochs + 1, gr.crop, gr.batch_size, None, 0,
                                                augment=CornerAugment())
    (f1, l1), (f2, l2) = epochs(kp_ds, kp_steps, args.epochs), epochs(gr_ds, gr_steps, args.epochs)
    first, later = [f1, f2], [l1, l2]
    rows.append(("labels.csv", decode_kp + decode_gr, first, later, kp_steps, gr_steps))

    # ---- prepared path: one parallel decode for both stages, then epochs from the shards
    start = time.perf_counter()
    index = prepare(phantoms / "labels.csv", work / "prepared", kp.cache_long_side, gr.patch_depth_px,
                    kp.val_fraction, kp.seed, workers=2, progress=False)
    decode = time.perf_counter() - start
    counts = grade_counts(index, "train")
    p_kp_steps = max(1, index["splits"]["train"]["radiographs"] // kp.batch_size)
    p_gr_steps = balanced_steps(counts, gr.batch_size, None)
    p_kp = prepared_keypoint_dataset(work / "prepared", "train", kp.input_size, kp.batch_size, kp.sigma,
                                     KeypointAugment(), seed=0)
    p_gr = prepared_balanced_dataset(work / "prepared", counts, 0, gr.crop, gr.batch_size, 0,
                                     augment=CornerAugment(), steps_per_epoch=p_gr_steps)
    (f1, l1), (f2, l2) = epochs(p_kp, p_kp_steps, args.epochs), epochs(p_gr, p_gr_steps, args.epochs)
    first, later = [f1, f2], [l1, l2]
    rows.append(("prepared", decode, first, later, p_kp_steps, p_gr_steps))

    shard_mb = [p.stat().st_size / 2**20 for p in (work / "prepared").rglob("*.tfrecord")]
    table = []
    for name, decode, first, later, kp_steps, gr_steps in rows:
        for stage, f, l, steps, batch in (("stage 1", first[0], later[0], kp_steps, kp.batch_size),
                                          ("stage 2", first[1], later[1], gr_steps, gr.batch_size)):
            table.append({"input": name, "stage": stage, "samples/epoch": steps * batch,
                          "later epochs (samples/s)": round(steps * batch / l, 1),
                          "first epoch incl. decode (s)": round(decode + f, 1)})
    frame = pd.DataFrame(table)
    print(f"{len(frame)} rows; {len(train_rows)} training radiographs of {args.patients} phantom patients; "
          f"decode: labels path {rows[0][1]:.1f} s (serial, per run folder), prepare {rows[1][1]:.1f} s "
          f"(2 processes, both stages)")
    print("| " + " | ".join(frame.columns) + " |")
    print("| --- | --- | ---: | ---: | ---: |")
    for row in frame.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in row) + " |")
    for stage in ("stage 1", "stage 2"):
        a = frame[(frame["stage"] == stage)].set_index("input")["later epochs (samples/s)"]
        print(f"{stage}: prepared / labels.csv, later epochs: {a['prepared'] / a['labels.csv']:.2f}x")
    print(f"shards: {len(shard_mb)}, {np.sum(shard_mb):.1f} MB in all, largest {np.max(shard_mb):.1f} MB")


if __name__ == "__main__":
    main()
