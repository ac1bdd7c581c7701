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

import keras
import numpy as np
import pandas as pd

from tfmssass.core.atomic import keep_settings, write_text
from tfmssass.core.config import GraderConfig, KeypointConfig, demo_model_dir
from tfmssass.core.errors import UsageError
from tfmssass.data.tfrecords import load_index
from tfmssass.io.labels import SYNTH_MANIFEST, drawn_by_synth, load_labels
from tfmssass.io.split import split_patients, write_split
from tfmssass.stages.grader.calibration import Calibration
from tfmssass.stages.grader.ensemble import build_ensemble
from tfmssass.stages.grader.model import build_grader
from tfmssass.stages.keypoints.detect import KeypointDetector
from tfmssass.stages.keypoints.model import HRNet, build_hrnet

BEST = "best.weights.h5"
LAST = "last.weights.h5"
#: The key of a grader run's config.json that makes it an ensemble: its members' configs and calibrations.
ENSEMBLE = "ensemble"

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


def training_data_summary(frame) -> dict:
    """What the model learnt from, kept with it: counts, and whether the labels are phantoms
    (:func:`~tfmssass.io.labels.drawn_by_synth`), so every output of a phantom-trained model can say so."""
    return {"radiographs": int(len(frame)), "patients": int(frame["patient_id"].nunique()),
            "views": {str(k): int(v) for k, v in frame["view"].value_counts().sort_index().items()},
            "phantom": drawn_by_synth(frame)}


def trained_on_phantoms(config: dict) -> bool:
    """Whether a run learnt from phantoms only (older runs: a synth.json beside their labels)."""
    data = config.get("training_data") or {}
    if "phantom" in data:
        return bool(data["phantom"])
    labels = config.get("labels")
    return bool(labels) and (Path(labels).parent / SYNTH_MANIFEST).is_file()


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
        frame, _ = load_labels(source)
        split = None
        origin = {"labels": str(source.resolve()), "training_data": training_data_summary(frame)}
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
#: ``--init demo``: the shipped demo model's weights (``saved_models/phantom-demo``), the quickest start.
DEMO = "demo"
#: Where a run keeps the weights it took from an exported model.
EXPORT_INIT = "init-from-export.weights.h5"


def _is_export(path) -> bool:
    return (Path(path) / "saved_model.pb").is_file() and (Path(path) / "metadata.json").is_file()


def initial_weights(init, stage: str, config: dict, out) -> tuple[str | None, bool]:
    """What ``--init`` names: ``imagenet``, a weights file (returned as is), an earlier run folder of
    the same stage and network, or an exported model (``demo``: the shipped one) of the same network,
    whose weights are returned to fine-tune from; and whether every weight fits (a run or an export)."""
    if init == IMAGENET and stage != "grader":
        raise RunFolderError(f"--init imagenet: keras.applications has no ImageNet weights for the {stage} "
                             "network (HRNet); start from a weights file or an earlier run")
    if init is None or init == IMAGENET:
        return init, False
    if init == DEMO:
        init = str(demo_model_dir())
    if not Path(init).exists():
        raise RunFolderError(f"--init {init}: no such file, run folder or exported model")
    if not Path(init).is_dir():
        return init, False
    if _is_export(init):
        return weights_from_export(init, stage, config, Path(out) / EXPORT_INIT), True
    earlier = read_config(init)
    if earlier.get("stage") != stage:
        raise RunFolderError(f"{init}: a {earlier.get('stage')} run; --init needs a {stage} run")
    if ENSEMBLE in earlier:
        raise RunFolderError(f"{init}: an ensemble of graders; start from one of its members")
    same = lambda k: list(np.atleast_1d(earlier[stage].get(k))) == list(np.atleast_1d(config.get(k)))  # noqa: E731
    differ = [f"{k} {earlier[stage].get(k)} here, {config.get(k)} asked" for k in NETWORK_FIELDS[stage] if not same(k)]
    if differ:
        raise RunFolderError(f"{init}: another network ({'; '.join(differ)}): give the same --preset/--backbone")
    best = Path(init) / BEST
    if not best.is_file():
        raise RunFolderError(f"{init}: no {BEST} yet (train it first)")
    return str(best.resolve()), True


def weights_from_export(export_dir, stage: str, config: dict, weights_path: Path) -> str:
    """The ``stage`` network's weights out of an exported model (:mod:`tfmssass.serving.export`: its
    ``model_variables`` hold stage 1, the orientation check, then the grader) into ``weights_path``, for
    a network built as ``config`` asks, which must be the export's."""
    import tensorflow as tf

    exported = json.loads((Path(export_dir) / "metadata.json").read_text()).get(stage, {})
    differ = [f"{k} {exported.get(k)} there, {config.get(k)} asked" for k in NETWORK_FIELDS[stage]
              if list(np.atleast_1d(exported.get(k))) != list(np.atleast_1d(config.get(k)))]
    if differ:
        preset = f" (it was trained with --preset {exported['preset']})" if exported.get("preset") else ""
        raise RunFolderError(f"{export_dir}: another {stage} network{preset}: {'; '.join(differ)}")
    # a grader exported before the gradability head has none: its weights are taken as they are, and
    # the fine-tuned grader starts its head from scratch (CornerGrader.load_grader_weights)
    model = build_hrnet(KeypointConfig.from_dict(config)) if stage == "keypoints" else \
        build_grader(GraderConfig.from_dict({**config, "gradability": exported.get("gradability", False)}))
    # the grader's are the last weights; an ensemble's export (``ensemble`` in its metadata) ends with its last member's
    variables = tf.saved_model.load(str(export_dir)).model_variables
    taken = variables[:len(model.weights)] if stage == "keypoints" else variables[-len(model.weights):]
    for weight, variable in zip(model.weights, taken):
        if tuple(weight.shape) != tuple(variable.shape):
            raise RunFolderError(f"{export_dir}: its {stage} weights do not fit this network ({weight.path})")
        weight.assign(np.asarray(variable.numpy(), weight.dtype))  # large ones are stored float16
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(weights_path))
    return str(weights_path.resolve())


#: What a run learnt, judged from its validation at the end (``learned.json``), and the line that says it.
LEARNED = "learned.json"
#: A stage has learnt something usable past these (the best epoch's validation): a grader's balanced
#: accuracy over its four grades (chance: 0.25), stage 1's median point error in % of the diagonal
#: (the demo: about 0.5; an untrained network: tens).
LEARNED_LIMITS = {"grader": ("val_balanced_accuracy", "max", 0.35, "balanced accuracy {v:.2f} (chance 0.25)"),
                  "keypoints": ("val_point_error", "min", 5.0, "median point error {v:.1f}% of the diagonal")}


def judge_learning(run_dir, stage: str) -> str | None:
    """After a run's last epoch: whether its best validation passed :data:`LEARNED_LIMITS`, kept in
    ``learned.json``; returns the warning to print when it did not (None when it did)."""
    monitor, mode, limit, words = LEARNED_LIMITS[stage]
    log = pd.read_csv(Path(run_dir) / "log.csv") if (Path(run_dir) / "log.csv").is_file() else pd.DataFrame()
    values = pd.to_numeric(log.get(monitor, pd.Series(dtype=float)), errors="coerce").dropna()
    best = None if values.empty else float(values.max() if mode == "max" else values.min())
    learned = best is not None and (best > limit if mode == "max" else best < limit)
    write_text(Path(run_dir) / LEARNED, json.dumps({"stage": stage, "monitor": monitor, "best": best,
                                                    "limit": limit, "learned": learned}, indent=1) + "\n")
    if learned:
        return None
    said = "no validation" if best is None else words.format(v=best)
    return (f"{run_dir}: the {stage} model learnt little ({said}; a usable one is past {limit:g}): it is "
            "undertrained. Train longer (--epochs), on more films, or fine-tune from the demo (--init demo); "
            "see docs/training.md")


def learning_warning(run_dir) -> str | None:
    """The warning :func:`judge_learning` gave a run folder, for whoever scores with it."""
    path = Path(run_dir) / LEARNED
    if not path.is_file():
        return None
    verdict = json.loads(path.read_text())
    return None if verdict["learned"] else f"{verdict['stage']} (best {verdict['monitor']} {verdict['best']})"


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


def load_grader(run_dir) -> tuple[keras.Model, GraderConfig]:
    """The trained stage-2 network of a run folder (best epoch) and its configuration; for an ensemble
    (``tfmssass combine-graders``), all its members as one network, configured as its first."""
    run = read_config(run_dir)
    config = GraderConfig.from_dict(run["grader"])
    if ENSEMBLE in run:
        members = run[ENSEMBLE]["members"]
        model = build_ensemble([GraderConfig.from_dict(m["grader"]) for m in members],
                               [Calibration.from_dict(m["calibration"]) for m in members])
    else:
        model = build_grader(config)
    model.load_weights(str(Path(run_dir) / BEST))
    return model, config
