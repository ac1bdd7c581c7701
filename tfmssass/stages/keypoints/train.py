"""Stage 1 training: labels.csv → run folder with a trained HRNet (``tfmssass train keypoints``)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from tfmssass.core.anatomy import VIEW_SLICES
from tfmssass.core.config import KeypointConfig
from tfmssass.data.cache import build_cache
from tfmssass.data.records import (
    RADIOGRAPHS,
    load_index,
    load_png16,
    parse_radiograph,
    parse_radiograph_ids,
    read_records,
)
from tfmssass.stages.keypoints.data import (
    KeypointAugment,
    keypoint_dataset,
    point_table,
    prepared_keypoint_dataset,
)
from tfmssass.stages.keypoints.detect import KeypointDetector
from tfmssass.stages.keypoints.heatmaps import WeightedHeatmapLoss
from tfmssass.stages.keypoints.model import build_hrnet
from tfmssass.stages.runs import record_skipped, start_run
from tfmssass.stages.training import WorkerRole, choose_strategy, fit_run, set_precision, worker_role

MONITOR = "val_point_error"  # median radial error, % of the image diagonal


def median_error_percent(detector: KeypointDetector, images, points, views) -> float:
    """Median radial error of the labelled points, as % of each image's diagonal (misses: 100%)."""
    errors = []
    for image, truth, view in zip(images, points, views):
        det = detector.detect(image)
        span = VIEW_SLICES[view]
        diagonal = math.hypot(*image.shape)
        known = np.all(np.isfinite(truth[span]), axis=1)
        if not det.found or det.view != view:
            errors += [100.0] * int(known.sum())
            continue
        err = np.linalg.norm(det.points[span][known] - truth[span][known], axis=1) / diagonal * 100
        errors += err.tolist()
    return float(np.median(errors)) if errors else float("nan")


class PointErrorCallback(keras.callbacks.Callback):
    """After each epoch, run the real coarse-to-fine detector on validation radiographs."""

    def __init__(self, config: KeypointConfig, images, points, views):
        super().__init__()
        self.config, self.images, self.points, self.views = config, images, points, views

    def on_epoch_end(self, epoch, logs=None):
        detector = KeypointDetector.from_config(self.model, self.config)
        if logs is not None:
            logs[MONITOR] = median_error_percent(detector, self.images, self.points, self.views)


def _labelled_inputs(run, frame, split, config: KeypointConfig, verbose: int):
    """Training and validation inputs from labels.csv, through the decode-once PNG cache."""
    cache, errors = build_cache(frame, run / "cache", config.cache_long_side, progress=verbose > 0)
    record_skipped(run, errors)
    sides = frame["patient_id"].map(dict(zip(split["patient_id"], split["split"])))
    cache["split"] = cache["row"].map(sides)
    points, weights = point_table(frame, cache)
    train = (cache["split"] == "train").to_numpy()
    val = ~train
    if train.sum() == 0 or val.sum() == 0:
        raise ValueError("need radiographs of at least two patients (one for validation)")

    def dataset(chosen, augment, repeat):
        return keypoint_dataset(cache["cache_path"][chosen], points[chosen], weights[chosen],
                                config.input_size, config.batch_size, config.sigma, augment,
                                seed=config.seed, repeat=repeat)

    picked = np.flatnonzero(val)[: config.val_point_images]
    val_images = [load_png16(cache["cache_path"].iloc[i]).numpy() for i in picked]
    val_views = [frame.loc[cache["row"].iloc[i], "view"] for i in picked]
    return (dataset(train, KeypointAugment(**config.augment), True),
            dataset(val, KeypointAugment(enabled=False), False), int(train.sum()),
            (val_images, points[picked], val_views))


def _prepared_inputs(data_dir, index: dict, config: KeypointConfig, role: WorkerRole):
    """The same inputs from a prepared folder: this worker's share of the training shards, and
    the whole validation set on every worker."""
    counts = index["splits"]
    if counts["train"]["radiographs"] == 0 or counts["val"]["radiographs"] == 0:
        raise ValueError(f"{data_dir}: need radiographs of at least two patients (one for validation)")
    train_ds = prepared_keypoint_dataset(data_dir, "train", config.input_size, config.batch_size,
                                         config.sigma, KeypointAugment(**config.augment), config.seed,
                                         workers=role.count, worker_index=role.index)
    val_ds = prepared_keypoint_dataset(data_dir, "val", config.input_size, config.batch_size, config.sigma,
                                       KeypointAugment(enabled=False), config.seed, repeat=False)
    val_images, val_points, val_views = [], [], []
    records = read_records(data_dir, RADIOGRAPHS, "val", repeat=False).take(config.val_point_images)
    for serialized in records:
        image, points, _ = parse_radiograph(serialized)
        val_images.append(image.numpy())
        val_points.append(points.numpy())
        val_views.append(parse_radiograph_ids(serialized)["view"].numpy().decode())
    return train_ds, val_ds, counts["train"]["radiographs"], (val_images, np.stack(val_points), val_views)


def train_keypoints(source, out, config: KeypointConfig, init: str | None = None,
                    mixed_precision: bool = False, strategy: str = "auto", verbose: int = 1,
                    extra_callbacks=()) -> Path:
    """Train stage 1 from ``source``: a labels.csv or a folder made by ``tfmssass prepare``."""
    chosen = choose_strategy(strategy)  # first: a multi-worker strategy must precede other TF work
    role = worker_role(chosen)
    index = None
    if Path(source).is_dir():
        index = load_index(source)
        settings = index["settings"]  # the prepared folder fixes the working size and the split
        config = replace(config, cache_long_side=settings["long_side"], val_fraction=settings["val_fraction"])
    run, frame, split = start_run(source, out, "keypoints", config.to_dict(), init, mixed_precision,
                                  config.val_fraction, config.seed)
    if split is None:
        return run
    if index is None:
        train_ds, val_ds, n_train, val_points = _labelled_inputs(run, frame, split, config, verbose)
    else:
        train_ds, val_ds, n_train, val_points = _prepared_inputs(source, index, config, role)

    set_precision(mixed_precision)
    with chosen.scope():
        model = build_hrnet(config)
        if init:
            model.load_weights(init, skip_mismatch=True)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      loss=WeightedHeatmapLoss(config.foreground_weight))
    steps = config.steps_per_epoch or max(1, n_train // config.batch_size)
    callback = PointErrorCallback(config, *val_points)
    fit_run(run, model, train_ds, steps, config.epochs, MONITOR, "min", val_ds=val_ds,
            metric_callbacks=[callback], extra_callbacks=extra_callbacks, verbose=verbose, role=role, strategy=chosen)
    return run
