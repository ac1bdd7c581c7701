"""Stage 2 training: labels.csv → run folder with a trained corner grader (``tfmssass train grader``)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd

from . import grading_metrics
from .config import GraderConfig
from .data.corners import CornerAugment, predicted_points, balanced_training_dataset, corner_dataset, corner_samples, extract_patches
from .models.grader import CornerGrader
from .train import BEST, choose_strategy, fit_run, read_config, record_skipped, set_precision, start_run

#: Best epoch by balanced accuracy on the (naturally skewed) validation corners: plain accuracy
#: would favour a grader that calls everything 0.
MONITOR = "val_balanced_accuracy"


def build_model(config: GraderConfig) -> CornerGrader:
    return CornerGrader(config.backbone, config.input_size)


def load_grader(run_dir) -> tuple[CornerGrader, GraderConfig]:
    config = GraderConfig.from_dict(read_config(run_dir)["grader"])
    model = build_model(config)
    model.load_weights(str(Path(run_dir) / BEST))
    return model, config


def predict_samples(model, config: GraderConfig, samples: pd.DataFrame, batch_size: int = 64) -> np.ndarray:
    """Grade probabilities [N, 4] of corner samples, crops made exactly as in validation."""
    if samples.empty:
        return np.zeros((0, 4), np.float32)
    ds = corner_dataset(samples, np.arange(len(samples)), config.input_size, batch_size,
                        config.extent, CornerAugment(enabled=False), config.clahe, config.clahe_clip,
                        seed=config.seed, drop_remainder=False)
    return np.concatenate([np.asarray(model(x, training=False)) for x, _ in ds], axis=0)


class GradingMetricsCallback(keras.callbacks.Callback):
    def __init__(self, config: GraderConfig, samples: pd.DataFrame):
        super().__init__()
        self.config, self.samples = config, samples

    def on_epoch_end(self, epoch, logs=None):
        probs = predict_samples(self.model, self.config, self.samples)
        cm = grading_metrics.confusion_matrix(self.samples["grade"], probs.argmax(axis=1))
        stats = grading_metrics.summary(cm)
        table = grading_metrics.per_grade_table(cm)
        if logs is not None:
            logs[MONITOR] = stats["balanced_accuracy"]
            logs["val_exact_accuracy"] = stats["exact_accuracy"]
            logs["val_qwk"] = stats["quadratic_weighted_kappa"]
            logs["val_grade2_sensitivity"] = float(table.loc[2, "sensitivity"])


def train_grader(labels_csv, out, config: GraderConfig, init: str | None = None,
                 mixed_precision: bool = False, strategy: str = "auto", verbose: int = 1,
                 extra_callbacks=(), keypoints_run=None) -> Path:
    """Train the grader. Crops come from the labelled points, or with ``keypoints_run`` from a
    stage-1 run's predictions (so the grader learns on the points it will be given)."""
    run, frame, split = start_run(labels_csv, out, "grader", config.to_dict(), init, mixed_precision,
                                  config.val_fraction, config.seed,
                                  keypoints_run=str(Path(keypoints_run).resolve()) if keypoints_run else None)
    if frame is None:
        return run
    points_from = predicted_points(keypoints_run, frame) if keypoints_run else None
    patches, errors = extract_patches(frame, run / "patches", config.patch_depth_px, points_from,
                                      progress=verbose > 0)
    record_skipped(run, errors)
    samples = corner_samples(patches)
    side = samples["patient_id"].map(dict(zip(split["patient_id"], split["split"])))
    train_samples = samples[side == "train"].reset_index(drop=True)
    val_samples = samples[side == "val"].reset_index(drop=True)
    if train_samples.empty or val_samples.empty:
        raise ValueError("need graded corners of at least two patients (one for validation)")
    counts = train_samples["grade"].value_counts().sort_index()
    print("training corners per grade: " + ", ".join(f"{g}: {n}" for g, n in counts.items()))

    set_precision(mixed_precision)
    with choose_strategy(strategy).scope():
        model = build_model(config)
        if init:
            model.load_backbone_weights(init)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    done_epochs = 0
    if (run / "log.csv").is_file():  # resuming: continue the balanced windows where they stopped
        done_epochs = len(pd.read_csv(run / "log.csv"))
    train_ds, steps = balanced_training_dataset(
        train_samples, done_epochs, config.epochs, config.input_size, config.batch_size,
        config.per_class, config.seed, extent=config.extent, augment=CornerAugment(**config.augment),
        use_clahe=config.clahe, clip=config.clahe_clip)
    callback = GradingMetricsCallback(config, val_samples)
    fit_run(run, model, train_ds, steps, config.epochs, MONITOR, "max",
            metric_callbacks=[callback], extra_callbacks=extra_callbacks, verbose=verbose)
    return run
