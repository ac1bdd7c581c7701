"""Stage 1 training: labelled radiographs → run folder with a trained HRNet (``tfmssass train keypoints``).

Every run trains from prepared TFRecord shards: ``--data`` names a prepared folder; ``--labels``
prepares into ``RUN/data`` first (:func:`tfmssass.stages.prepare.prepare_for_run`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from tfmssass.core.config import GraderConfig, KeypointConfig
from tfmssass.data.tfrecords import (
    NEGATIVE_VIEW,
    RADIOGRAPHS,
    load_index,
    parse_radiograph,
    parse_radiograph_ids,
    read_records,
)
from tfmssass.stages.implants import share_limit_from_data, write_share_limit
from tfmssass.stages.keypoints.data import (
    KeypointAugment,
    prepared_keypoint_dataset,
)
from tfmssass.stages.keypoints.detect import KeypointDetector
from tfmssass.stages.keypoints.heatmaps import WeightedHeatmapLoss
from tfmssass.stages.keypoints.model import build_hrnet
from tfmssass.stages.keypoints.orientation import WEIGHTS as ORIENTATION_WEIGHTS
from tfmssass.stages.keypoints.orientation import train_orientation
from tfmssass.stages.keypoints.plausibility import limits_from_data, write_limits
from tfmssass.stages.keypoints.validation import LEVELS_WRONG, validation_errors
from tfmssass.stages.prepare import prepare_for_run
from tfmssass.stages.runs import initial_weights, judge_learning, run_data, start_run
from tfmssass.stages.training import FitPlan, WorkerRole, choose_strategy, fit_run, set_precision, worker_role

MONITOR = LEVELS_WRONG  # the best epoch names the levels of whole and cut validation films right


class ValidationCallback(keras.callbacks.Callback):
    """After each epoch, run the real coarse-to-fine detector on validation radiographs, whole and cut."""

    def __init__(self, config: KeypointConfig, images, points, views):
        super().__init__()
        self.config, self.images, self.points, self.views = config, images, points, views

    def on_epoch_end(self, epoch, logs=None):
        detector = KeypointDetector.from_config(self.model, self.config)
        if logs is not None:
            logs.update(validation_errors(detector, self.images, self.points, self.views))


def _prepared_inputs(data_dir, index: dict, config: KeypointConfig, role: WorkerRole):
    """Training and validation inputs from a prepared folder: this worker's share of the training
    shards, and the whole validation set on every worker."""
    counts = index["splits"]
    if counts["train"]["radiographs"] == 0 or counts["val"]["radiographs"] == 0:
        raise ValueError(f"{data_dir}: need radiographs of at least two patients (one for validation)")
    train_ds = prepared_keypoint_dataset(data_dir, "train", config.input_size, config.batch_size,
                                         config.sigma, KeypointAugment(**config.augment), config.seed,
                                         workers=role.count, worker_index=role.index)
    # every validation radiograph once per epoch: one pass, repeated, read for a known number of steps
    # (a TFRecord stream's length is unknown to Keras, which otherwise probes for its end each epoch)
    val_ds = prepared_keypoint_dataset(data_dir, "val", config.input_size, config.batch_size, config.sigma,
                                       KeypointAugment(enabled=False), config.seed, repeat=False).repeat()
    val_images, val_points, val_views = [], [], []
    for serialized in read_records(data_dir, RADIOGRAPHS, "val", repeat=False):
        view = parse_radiograph_ids(serialized)["view"].numpy().decode()
        if view == NEGATIVE_VIEW:
            continue  # no points to measure; the orientation check learns to refuse these
        image, points, _ = parse_radiograph(serialized)
        val_images.append(image.numpy())
        val_points.append(points.numpy())
        val_views.append(view)
        if len(val_images) == config.val_point_images:
            break
    return train_ds, val_ds, counts["train"]["radiographs"], (val_images, np.stack(val_points), val_views)


def train_keypoints(source, out, config: KeypointConfig, init: str | None = None,
                    mixed_precision: bool = False, strategy: str = "auto", verbose: int = 1,
                    extra_callbacks=()) -> Path:
    """Train stage 1 from ``source``: a labels.csv (prepared into the run folder first) or a folder
    made by ``tfmssass prepare``."""
    chosen = choose_strategy(strategy)  # first: a multi-worker strategy must precede other TF work
    role = worker_role(chosen)
    index = load_index(source) if Path(source).is_dir() else None
    if index is not None:
        settings = index["settings"]  # the prepared folder fixes the working size and the split
        config = replace(config, cache_long_side=settings["long_side"], val_fraction=settings["val_fraction"])
    init, from_run = initial_weights(init, "keypoints", config.to_dict(), out)
    run, _, split = start_run(source, out, "keypoints", config.to_dict(), init, mixed_precision,
                              config.val_fraction, config.seed)
    if split is None:  # finished before; a run stopped between its last epoch and its checks gets them now
        if role.chief and not (Path(run) / ORIENTATION_WEIGHTS).is_file():
            learn_checks(run, config.orientation_epochs, config.orientation_steps, verbose=verbose)
        return run
    if index is not None:
        data = Path(source)
    else:
        data, index = prepare_for_run(run, source, config.cache_long_side, GraderConfig().patch_depth_px,
                                      config.val_fraction, config.seed, progress=verbose > 0)
    train_ds, val_ds, n_train, val_points = _prepared_inputs(data, index, config, role)

    set_precision(mixed_precision)
    with chosen.scope():
        model = build_hrnet(config)
        if init:
            model.load_weights(init, skip_mismatch=not from_run)  # an earlier run: every weight fits
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      loss=WeightedHeatmapLoss(config.foreground_weight), run_eagerly=config.eager)
    steps = config.steps_per_epoch or max(1, n_train // config.batch_size)
    callback = ValidationCallback(config, *val_points)
    val_steps = math.ceil(index["splits"]["val"]["radiographs"] / config.batch_size)
    plan = FitPlan(train_ds, steps, config.epochs, MONITOR, "min", val_ds, val_steps, metric_callbacks=(callback,))
    fit_run(run, model, plan, extra_callbacks, verbose, role, chosen)
    if role.chief and (Path(run) / "done").is_file():
        learn_checks(run, config.orientation_epochs, config.orientation_steps, verbose=verbose)
        if warning := judge_learning(run, "keypoints"):
            print(f"warning: {warning}")
    return run


def learn_checks(run_dir, epochs: int = 40, steps_per_epoch: int = 60, verbose: int = 1, init=None) -> dict:
    """What stage 1 checks before a film is graded, learnt from the run's prepared data: which way up
    a film is stored (:mod:`.orientation`; ``init`` an earlier run whose classifier is fine-tuned), the
    plausible chains (:mod:`.plausibility`) and the implant rule's limit on these films
    (:mod:`tfmssass.stages.implants`)."""
    data = run_data(run_dir)
    write_limits(run_dir, limits_from_data(data))
    write_share_limit(run_dir, share_limit_from_data(data))
    summary = train_orientation(data, run_dir, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                verbose=2 if verbose else 0, init=init)
    if verbose:
        print(f"{run_dir}: orientation classifier, validation accuracy {summary['validation_accuracy']:.3f}; "
              f"plausibility limits in {Path(run_dir) / 'plausibility.json'}, implant limit in "
              f"{Path(run_dir) / 'implants.json'}")
    return summary
