"""Run folders: what a training run writes, and loading its trained model back.

A run folder holds ``config.json`` and ``split.csv`` (what was trained on what),
``best.weights.h5`` (best epoch by the validation metric), ``log.csv`` and ``tensorboard/``;
``done`` marks a finished run (see :mod:`tfmssass.stages.training` for the fit loop and resume).
A ``--labels`` run also holds its prepared records in ``data/`` and the unreadable radiographs in
``skipped.csv``.
Scoring, export and evaluation load models only through here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tfmssass.core.atomic import keep_settings
from tfmssass.core.config import GraderConfig, KeypointConfig
from tfmssass.core.errors import UsageError
from tfmssass.data.records import load_index
from tfmssass.io.labels import load_labels
from tfmssass.io.split import split_patients, write_split
from tfmssass.stages.grader.model import CornerGrader, build_grader
from tfmssass.stages.keypoints.detect import KeypointDetector
from tfmssass.stages.keypoints.model import HRNet, build_hrnet

BEST = "best.weights.h5"
LAST = "last.weights.h5"

#: Said by every output of models that learnt from phantoms only.
PHANTOM_WARNING = ("PHANTOM-TRAINED DEMO MODELS: trained on synthetic phantoms only; "
                   "not for clinical or research use")


class RunFolderError(UsageError):
    """A run folder that cannot be used as named (not a run, another experiment's): exit 2."""


def open_run(run_dir: str | Path, config: dict) -> tuple[Path, bool]:
    """Create or reopen a run folder. Returns (path, already_done).

    Reopening with a different config is refused: one folder, one experiment.
    """
    run = Path(run_dir)
    if not keep_settings(run / "config.json", config):
        raise RunFolderError(f"{run}: holds a run with another configuration; use a new --out folder")
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


def start_run(source, out, stage: str, config: dict, init, mixed_precision: bool,
              val_fraction: float, seed: int, **extra):
    """Open the run folder for ``source`` (a labels.csv, or a folder made by ``tfmssass prepare``)
    and write its patient split: the labels' split made here, or the prepared folder's own.

    Returns (run, frame, split): frame is the label table (None for prepared data); split is None
    when the run had already finished.
    """
    source = Path(source)
    if source.is_dir():
        index = load_index(source)
        frame, split = None, pd.read_csv(source / "split.csv")
        origin = {"data": str(source.resolve()), "training_data": index["training_data"]}
    else:
        frame, _ = load_labels(source, check_images=False)
        split = None
        origin = {"labels": str(source.resolve()), "training_data": training_data_summary(source, frame)}
    run, done = open_run(out, {"stage": stage, **origin, stage: config, "init": init,
                               "mixed_precision": mixed_precision, **extra})
    if done:
        print(f"{run}: already finished (delete {run / 'done'} to train again)")
        return run, frame, None
    if split is None:
        split = split_patients(frame, val_fraction, seed)
    write_split(split, run / "split.csv")
    return run, frame, split


def read_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise RunFolderError(f"{run_dir}: not a training run folder (no config.json)")
    return json.loads(path.read_text())


#: The settings that shape a stage's network: a run can only start from a run that agrees on them.
NETWORK_FIELDS = {"keypoints": ("backbone", "input_size"), "grader": ("backbone", "input_size")}


def run_data(run_dir) -> Path:
    """The prepared folder a run trained from (``--data``, or its own ``data/``)."""
    return Path(read_config(run_dir).get("data") or Path(run_dir) / "data")


#: ``--init imagenet``: a keras.applications backbone's ImageNet weights (the grader's only).
IMAGENET = "imagenet"


def initial_weights(init, stage: str, config: dict) -> tuple[str | None, bool]:
    """What ``--init`` names: ``imagenet``, a weights file (returned as is), or an earlier run folder
    of the same stage and network, whose best weights are returned to fine-tune from; and whether it
    was a run."""
    if init == IMAGENET and stage != "grader":
        raise RunFolderError(f"--init imagenet: keras.applications has no ImageNet weights for the {stage} "
                             "network (HRNet); start from a weights file or an earlier run")
    if init is None or init == IMAGENET:
        return init, False
    if not Path(init).exists():
        raise RunFolderError(f"--init {init}: no such file or run folder")
    if not Path(init).is_dir():
        return init, False
    earlier = read_config(init)
    if earlier.get("stage") != stage:
        raise RunFolderError(f"{init}: a {earlier.get('stage')} run; --init needs a {stage} run")
    same = lambda k: list(np.atleast_1d(earlier[stage].get(k))) == list(np.atleast_1d(config.get(k)))  # noqa: E731
    differ = [f"{k} {earlier[stage].get(k)} here, {config.get(k)} asked" for k in NETWORK_FIELDS[stage] if not same(k)]
    if differ:
        raise RunFolderError(f"{init}: another network ({'; '.join(differ)}): give the same --preset/--backbone")
    best = Path(init) / BEST
    if not best.is_file():
        raise RunFolderError(f"{init}: no {BEST} yet (train it first)")
    return str(best.resolve()), True


def load_keypoints(run_dir) -> tuple[HRNet, KeypointConfig]:
    """The trained stage-1 network of a run folder (best epoch) and its configuration."""
    config = KeypointConfig.from_dict(read_config(run_dir)["keypoints"])
    model = build_hrnet(config)
    model.load_weights(str(Path(run_dir) / BEST))
    return model, config


def load_detector(run_dir, flip_test: bool = False) -> KeypointDetector:
    """The trained stage-1 model of a run folder, ready for coarse-to-fine detection."""
    model, config = load_keypoints(run_dir)
    return KeypointDetector.from_config(model, config, flip_test)


def load_grader(run_dir) -> tuple[CornerGrader, GraderConfig]:
    """The trained stage-2 network of a run folder (best epoch) and its configuration."""
    config = GraderConfig.from_dict(read_config(run_dir)["grader"])
    model = build_grader(config)
    model.load_weights(str(Path(run_dir) / BEST))
    return model, config
