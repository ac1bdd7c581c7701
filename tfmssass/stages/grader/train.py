"""Stage 2 training: labelled radiographs → run folder with a trained corner grader (``tfmssass train grader``).

Every run trains from prepared TFRecord shards, each grade an endless stream drawn with equal
probability (:func:`tfmssass.stages.grader.data.prepared_balanced_dataset`): ``--data`` names a
prepared folder; ``--labels`` prepares into ``RUN/data`` first.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from tfmssass.core.config import GRADABLE_THRESHOLD, GraderConfig, KeypointConfig
from tfmssass.data.tfrecords import NOT_GRADABLE_RECORD, grade_counts, label_counts_text, load_index
from tfmssass.io.labels import load_labels
from tfmssass.stages.grader import metrics as grading_metrics
from tfmssass.stages.grader.calibration import (
    CALIBRATION,
    Calibration,
    calibrate_gradable,
    choose_gradable_threshold,
    fit_calibration,
    fit_gradability,
    write_calibration,
)
from tfmssass.stages.grader.data import (
    CornerAugment,
    balanced_steps,
    corner_dataset,
    corner_samples,
    extract_patches,
    predicted_points,
    prepared_balanced_dataset,
    prepared_validation_dataset,
)
from tfmssass.stages.grader.model import build_grader, grade_loss, gradability_loss, grader_outputs
from tfmssass.stages.prepare import prepare_for_run
from tfmssass.stages.runs import (
    ENSEMBLE,
    IMAGENET,
    RunFolderError,
    initial_weights,
    judge_learning,
    load_grader,
    read_config,
    run_data,
    start_run,
)
from tfmssass.stages.training import (
    FitPlan,
    WorkerRole,
    choose_strategy,
    fit_run,
    resumed_epoch,
    set_precision,
    worker_role,
)

#: Best epoch by balanced accuracy on the (naturally skewed) validation corners, over the answers a
#: reader gives (grades 0-3, and NG where validation corners are NG): plain accuracy would favour a
#: grader that calls everything 0, and grades alone would not see the gradability head.
MONITOR = "val_balanced_accuracy"


@dataclass
class Predicted:
    """A grader's raw answers on labelled corners: grade probabilities [N, 4], P(gradable) [N], and the
    labels [N] (0-3, or 4: a reader's NG)."""

    probabilities: np.ndarray
    gradable: np.ndarray
    labels: np.ndarray

    @property
    def graded(self) -> np.ndarray:
        """Which corners have a grade (the grade metrics and the grade calibration use only these)."""
        return self.labels < NOT_GRADABLE_RECORD


def predict_dataset(model, dataset) -> Predicted:
    """The grader's answers over a dataset of (crop, label) batches."""
    probs, gradable, labels = [np.zeros((0, 4), np.float32)], [np.zeros(0, np.float32)], [np.zeros(0, np.int64)]
    for x, y in dataset:
        p, g = grader_outputs(model, x)
        probs.append(np.asarray(p, np.float32))
        gradable.append(np.asarray(g, np.float32))
        labels.append(np.asarray(y))
    return Predicted(np.concatenate(probs), np.concatenate(gradable), np.concatenate(labels))


def samples_dataset(config: GraderConfig, samples: pd.DataFrame, batch_size: int = 64):
    """Corner samples (a table) as crops made exactly as in validation."""
    return corner_dataset(samples, np.arange(len(samples)), config.crop, batch_size, CornerAugment(enabled=False),
                          seed=config.seed, drop_remainder=False)


def predict_samples(model, config: GraderConfig, samples: pd.DataFrame, batch_size: int = 64) -> np.ndarray:
    """Grade probabilities [N, 4] of corner samples, crops made exactly as in validation."""
    if samples.empty:
        return np.zeros((0, 4), np.float32)
    return predict_dataset(model, samples_dataset(config, samples, batch_size)).probabilities


class GradingMetricsCallback(keras.callbacks.Callback):
    """After each epoch, grade every validation corner: balanced and exact accuracy, QWK."""

    def __init__(self, val_ds):
        super().__init__()
        self.val_ds = val_ds

    def on_epoch_end(self, epoch, logs=None):
        seen = predict_dataset(self.model, self.val_ds)
        graded = seen.graded
        cm = grading_metrics.confusion_matrix(seen.labels[graded], seen.probabilities[graded].argmax(axis=1))
        stats = grading_metrics.summary(cm)
        table = grading_metrics.per_grade_table(cm)
        if logs is not None:
            # the answers a reader can give: a grade, or NG where the validation has NG corners
            said_ng = seen.gradable < GRADABLE_THRESHOLD
            answers = np.where(said_ng, NOT_GRADABLE_RECORD, seen.probabilities.argmax(axis=1))
            logs[MONITOR] = float(np.mean([np.mean(answers[seen.labels == c] == c) for c in np.unique(seen.labels)]))
            logs["val_grade_balanced_accuracy"] = stats["balanced_accuracy"]
            logs["val_exact_accuracy"] = stats["exact_accuracy"]
            logs["val_qwk"] = stats["quadratic_weighted_kappa"]
            logs["val_grade2_sensitivity"] = float(table.loc[2, "sensitivity"])
            if (~graded).any():  # how often NG corners are called NG, and graded ones are not
                logs["val_ng_sensitivity"] = float(said_ng[~graded].mean())
                logs["val_ng_false_rate"] = float(said_ng[graded].mean())


def _prepared_inputs(data_dir, index: dict, config: GraderConfig, first_epoch: int, role: WorkerRole):
    train_counts, val_counts = grade_counts(index, "train"), grade_counts(index, "val")
    if not any(train_counts.values()) or not any(val_counts.values()):
        raise ValueError(f"{data_dir}: need graded corners of at least two patients (one for validation)")
    steps = balanced_steps(train_counts, config.batch_size, config.per_class)
    train_ds = prepared_balanced_dataset(
        data_dir, train_counts, first_epoch, config.crop, config.batch_size, config.seed,
        CornerAugment(**config.augment), role, steps_per_epoch=steps)
    val_ds = prepared_validation_dataset(data_dir, val_counts, config.crop, 64, seed=config.seed)
    if config.gradability:  # both heads learn from the one label: a grade 0-3, or 4 for NG
        train_ds = train_ds.map(lambda x, y: (x, {"grades": y, "gradable": y}))
    else:  # a grader without the head cannot learn from NG corners
        train_ds = train_ds.unbatch().filter(lambda x, y: y < NOT_GRADABLE_RECORD).batch(config.batch_size)
    return train_ds, steps, val_ds, {g: n for g, n in train_counts.items() if n}


def train_grader(source, out, config: GraderConfig, init: str | None = None,
                 mixed_precision: bool = False, strategy: str = "auto", verbose: int = 1,
                 extra_callbacks=(), keypoints_run=None) -> Path:
    """Train the grader from ``source``: a labels.csv (prepared into the run folder first) or a
    folder made by ``tfmssass prepare``.

    Crops come from the labelled points, or with ``keypoints_run`` (labels only) from a stage-1
    run's predictions, so the grader learns on the points it will be given.
    """
    chosen = choose_strategy(strategy)  # first: a multi-worker strategy must precede other TF work
    role = worker_role(chosen)
    index = load_index(source) if Path(source).is_dir() else None
    if index is not None:
        if keypoints_run:
            raise ValueError("--keypoints needs --labels: prepared data holds crops at the labelled points")
        settings = index["settings"]  # the prepared folder fixes the patch scale and the split
        config = replace(config, patch_depth_px=settings["patch_depth_px"], val_fraction=settings["val_fraction"])
    keypoints_run = str(Path(keypoints_run).resolve()) if keypoints_run else None
    init, from_run = initial_weights(init, "grader", config.to_dict(), out)
    run, frame, split = start_run(source, out, "grader", config.to_dict(), init, mixed_precision,
                                  config.val_fraction, config.seed, keypoints_run=keypoints_run)
    if split is None:  # finished before; a run killed between its last epoch and calibration gets it now
        if not (run / CALIBRATION).is_file():
            calibrate_run(run, verbose=verbose)
        return run
    if index is not None:
        data = Path(source)
    else:
        points = predicted_points(keypoints_run, frame) if keypoints_run else None
        data, index = prepare_for_run(run, source, KeypointConfig().cache_long_side, config.patch_depth_px,
                                      config.val_fraction, config.seed, progress=verbose > 0,
                                      corner_points=points, corners_from=keypoints_run or "labels")
    first_epoch = resumed_epoch(run, role)  # a resumed run reseeds its grade streams from here
    train_ds, steps, val_ds, counts = _prepared_inputs(data, index, config, first_epoch, role)
    if role.chief:
        print("training corners per grade: " + label_counts_text(counts))

    set_precision(mixed_precision)
    with chosen.scope():
        model = build_grader(config)
        if init and from_run:  # fine-tune a whole earlier grader
            model.load_grader_weights(init)
        elif init == IMAGENET:
            model.load_imagenet()
        elif init:
            model.load_backbone_weights(init)
        losses = {"grades": grade_loss, "gradable": gradability_loss} if config.gradability else \
            "sparse_categorical_crossentropy"
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=losses)
    plan = FitPlan(train_ds, steps, config.epochs, MONITOR, "max", metric_callbacks=(GradingMetricsCallback(val_ds),))
    fit_run(run, model, plan, extra_callbacks, verbose, role, chosen)
    if role.chief:
        calibrate_run(run, verbose=verbose)
        if warning := judge_learning(run, "grader"):
            print(f"warning: {warning}")
    return run


def calibration_corners(run_dir, model, config: GraderConfig, labels_csv=None, keypoints_run=None) -> Predicted:
    """The grader's raw answers (:class:`Predicted`) on the corners a run is calibrated on: its validation
    corners as prepared (crops at the labelled points); or, with ``labels_csv``, the radiographs of
    that file whose patients the run did not train on, cut at a stage-1 run's predicted points when
    ``keypoints_run`` is given (the points scoring will use, so the confidence is the one scoring earns)."""
    if labels_csv is None:
        data = run_data(run_dir)
        val_counts = grade_counts(load_index(data), "val")
        if not any(val_counts.values()):
            raise ValueError(f"{run_dir}: no validation corners to calibrate on")
        return predict_dataset(model, prepared_validation_dataset(data, val_counts, config.crop, 64, seed=config.seed))
    frame, _ = load_labels(labels_csv, check_images=False)
    split = pd.read_csv(Path(run_dir) / "split.csv", dtype={"patient_id": str})
    trained = set(split.loc[split["split"] == "train", "patient_id"])
    frame = frame[~frame["patient_id"].astype(str).isin(trained)]
    if frame.empty:
        raise ValueError(f"{labels_csv}: every patient in it trained the run; calibrate on patients it did not see")
    points = predicted_points(keypoints_run, frame) if keypoints_run else None
    with tempfile.TemporaryDirectory(prefix="tfmssass-calibration-") as work:
        samples = corner_samples(extract_patches(frame, work, config.patch_depth_px, points)[0], include_ng=True)
        if samples.empty:
            raise ValueError(f"{labels_csv}: no graded corner could be cut")
        return predict_dataset(model, samples_dataset(config, samples))


def calibrate_run(run_dir, labels_csv=None, keypoints_run=None, verbose: int = 1):
    """Fit the run's calibration (:mod:`tfmssass.stages.grader.calibration`) with its best weights
    on :func:`calibration_corners`, and keep it in the run (``calibration.json``)."""
    if ENSEMBLE in read_config(run_dir):
        raise RunFolderError(f"{run_dir}: an ensemble; its members are calibrated (calibrate them and combine again)")
    model, config = load_grader(run_dir)
    seen = calibration_corners(run_dir, model, config, labels_csv, keypoints_run)
    graded = seen.graded
    calibration = fit_calibration(seen.probabilities[graded], seen.labels[graded],
                                  grade_counts(load_index(run_data(run_dir)), "train"))
    gradable, gradability = fit_gradability(seen.gradable, graded) if config.gradability else ((1.0, 0.0), {})
    threshold, decided = choose_gradable_threshold(calibrate_gradable(seen.gradable, Calibration(gradable=gradable)),
                                                   graded)
    calibration = replace(calibration, gradable=gradable, gradable_threshold=threshold, validation={
        "gradability": {**gradability, "threshold": decided},
        **calibration.validation, "corners_from": str(Path(labels_csv).resolve()) if labels_csv else "validation split",
        "points": "stage-1 run " + str(Path(keypoints_run).resolve()) if keypoints_run else "labelled"})
    write_calibration(run_dir, calibration)
    if verbose:
        v = calibration.validation
        print(f"calibration on {v['corners']} corners ({v['corners_from']}, {v['points']} points): temperature "
              f"{calibration.temperature:.3f}, prior {', '.join(f'{p:.3f}' for p in calibration.prior)}; "
              f"ECE {v['ece_before']:.3f} before, {v['ece_after']:.3f} after")
        if gradability.get("fitted"):
            print(f"gradability on {gradability['corners']} corners ({gradability['not_gradable']} NG): logit "
                  f"scaled by {gradable[0]:.3f}, shifted by {gradable[1]:+.3f}; NLL {gradability['nll_before']:.3f} "
                  f"before, {gradability['nll_after']:.3f} after")
            print(f"not gradable under P(gradable) {threshold:.2f} (a hidden corner graded costs "
                  f"{decided['hidden_graded_cost']:g} visible ones left): here {decided['not_gradable_graded']:.1%} of "
                  f"the NG corners graded, {decided['gradable_called_not_gradable']:.1%} of the graded ones called NG")
    return calibration
