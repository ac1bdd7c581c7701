"""The run folder, shared by both stages: config, split, best checkpoint, logs, resume.

A run folder holds ``config.json`` and ``split.csv`` (what was trained on what),
``best.weights.h5`` (best epoch by the validation metric), ``log.csv`` and ``tensorboard/``.
While training runs, ``backup/`` lets a killed run continue where it stopped: run the same
command again. ``done`` marks a finished run.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from .atomic import atomic_path, write_text
from .io.labels import load_labels
from .split import split_patients, write_split

BEST = "best.weights.h5"


class RunFolderError(Exception):
    pass


def open_run(run_dir: str | Path, config: dict) -> tuple[Path, bool]:
    """Create or reopen a run folder. Returns (path, already_done).

    Reopening with a different config is refused: one folder, one experiment.
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    config_path = run / "config.json"
    text = json.dumps(config, indent=1, sort_keys=True) + "\n"
    if config_path.is_file() and config_path.read_text() != text:
        raise RunFolderError(f"{run}: holds a run with another configuration; use a new --out folder")
    write_text(config_path, text)
    return run, (run / "done").is_file()


def training_data_summary(labels_csv, frame) -> dict:
    """What the model learnt from, kept with it: counts, and whether the labels are phantoms
    (``tfmssass synth`` writes ``synth.json`` beside its labels.csv), so every output of a
    phantom-trained model can say so."""
    return {"radiographs": int(len(frame)), "patients": int(frame["patient_id"].nunique()),
            "views": {str(k): int(v) for k, v in frame["view"].value_counts().sort_index().items()},
            "phantom": (Path(labels_csv).parent / "synth.json").is_file()}


def trained_on_phantoms(config: dict) -> bool:
    """Whether a run learnt from phantoms only (older runs: a synth.json beside their labels)."""
    data = config.get("training_data") or {}
    if "phantom" in data:
        return bool(data["phantom"])
    labels = config.get("labels")
    return bool(labels) and (Path(labels).parent / "synth.json").is_file()


def start_run(labels_csv, out, stage: str, config: dict, init, mixed_precision: bool,
              val_fraction: float, seed: int, **extra):
    """Read the labels, open the run folder and write its patient split.

    Returns (run, frame, split); frame and split are None when the run had already finished.
    """
    frame, _ = load_labels(labels_csv, check_images=False)
    run, done = open_run(out, {"stage": stage, "labels": str(Path(labels_csv).resolve()), stage: config,
                               "init": init, "mixed_precision": mixed_precision,
                               "training_data": training_data_summary(labels_csv, frame), **extra})
    if done:
        print(f"{run}: already finished (delete {run / 'done'} to train again)")
        return run, None, None
    split = split_patients(frame, val_fraction, seed)
    write_split(split, run / "split.csv")
    return run, frame, split


def record_skipped(run: Path, errors: list[str]) -> None:
    """Inputs that could not be used: one line each on the terminal and in ``skipped.csv``."""
    for line in errors:
        print(f"skipped: {line}")
    if errors:
        with atomic_path(run / "skipped.csv") as tmp:
            pd.DataFrame({"error": errors}).to_csv(tmp, index=False)


def read_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise RunFolderError(f"{run_dir}: not a training run folder (no config.json)")
    return json.loads(path.read_text())


def choose_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """MirroredStrategy when several GPUs are visible (or asked for); else the default strategy."""
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "mirrored" or (kind == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def set_precision(mixed: bool) -> None:
    """mixed_float16 compute with float32 variables; Keras wraps the optimizer for loss scaling."""
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")


def _best_so_far(run: Path, monitor: str, mode: str):
    log = run / "log.csv"
    if not log.is_file():
        return None
    frame = pd.read_csv(log)
    if monitor not in frame or frame[monitor].dropna().empty:
        return None
    return float(frame[monitor].min() if mode == "min" else frame[monitor].max())


def fit_run(run: Path, model: keras.Model, train_ds, steps_per_epoch: int, epochs: int,
            monitor: str, mode: str = "min", val_ds=None, validation_steps=None,
            metric_callbacks=(), extra_callbacks=(), verbose: int = 1) -> keras.callbacks.History:
    """Fit with best-checkpointing, CSV + TensorBoard logs and resume after a kill."""
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run / "backup"), delete_checkpoint=True),
        *metric_callbacks,  # these add the monitored metric to the logs, so they go first
        keras.callbacks.ModelCheckpoint(
            str(run / BEST), monitor=monitor, mode=mode, save_best_only=True,
            save_weights_only=True, initial_value_threshold=_best_so_far(run, monitor, mode)),
        keras.callbacks.CSVLogger(str(run / "log.csv"), append=True),
        keras.callbacks.TensorBoard(str(run / "tensorboard"), write_graph=False),
        *extra_callbacks,
    ]
    history = model.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
                        validation_data=val_ds, validation_steps=validation_steps,
                        callbacks=callbacks, verbose=verbose)
    write_text(run / "done", "finished\n")
    return history
