"""The fit loop both stages share: distribution strategy, worker roles, best checkpoint, logs and
resume after a kill.

While training runs, ``backup/`` in the run folder lets a killed run continue where it stopped:
run the same command again. Where the run folder itself lives and what it holds is
:mod:`tfmssass.stages.runs`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from tfmssass.core.atomic import write_text
from tfmssass.stages.runs import BEST, LAST, RunFolderError


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` takes what Keras 3's ``fit`` hands it.

    Keras 3 reduces a whole (x, y) batch at once and scalar logs with ``axis=0``; the collective
    strategy accepts neither (a nest; an axis on a 0-d tensor). Reduce each tensor on its own,
    over the replicas only where it has no axis to reduce.
    """

    def reduce(self, reduce_op, value, axis):
        def one(v):
            first = v.values[0] if isinstance(v, tf.distribute.DistributedValues) else tf.convert_to_tensor(v)
            return super(_MultiWorkerStrategy, self).reduce(reduce_op, v, axis if first.shape.rank else None)
        return tf.nest.map_structure(one, value)


def choose_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """``auto``: MirroredStrategy when several GPUs are visible, else the default strategy.
    ``multiworker``: one replica group across the machines named in ``TF_CONFIG``."""
    if kind == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise RunFolderError("--strategy multiworker needs TF_CONFIG (see README, Training on a cluster)")
        return _MultiWorkerStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "mirrored" or (kind == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in a multi-worker run: input shard (index of count) and whether it is
    the chief, the one worker that writes the run folder's checkpoint, logs and ``done``."""

    count: int = 1
    index: int = 0
    chief: bool = True


def worker_role(strategy: tf.distribute.Strategy) -> WorkerRole:
    resolver = getattr(strategy, "cluster_resolver", None)
    jobs = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not jobs:
        return WorkerRole()
    chiefs = len(jobs.get("chief", []))
    count = chiefs + len(jobs.get("worker", []))
    index = resolver.task_id + (chiefs if resolver.task_type == "worker" else 0)
    chief = resolver.task_type == "chief" or (not chiefs and resolver.task_type == "worker" and resolver.task_id == 0)
    return WorkerRole(count, index, chief)


class AverageStatistics(keras.callbacks.Callback):
    """At each epoch end, average the float non-trainable state (BatchNorm moving statistics)
    over the workers. Gradients are all-reduced, so the weights agree; these statistics are
    updated from each worker's own batches and would drift apart, so that each worker's checkpoint
    would be a different model. Runs before the backup and the checkpoint are written."""

    def __init__(self, strategy: tf.distribute.Strategy):
        super().__init__()
        self.strategy = strategy
        self._average = None

    def on_epoch_end(self, epoch, logs=None):
        if self._average is None:
            state = [v for v in self.model.non_trainable_variables if v.dtype.startswith("float")]

            @tf.function
            def average():
                context = tf.distribute.get_replica_context()
                means = context.all_reduce("MEAN", [tf.identity(v.value) for v in state])
                for variable, mean in zip(state, means):
                    variable.assign(mean)

            self._average = average
        self.strategy.run(self._average)


def set_precision(mixed: bool) -> None:
    """mixed_float16 compute with float32 variables; Keras wraps the optimizer for loss scaling."""
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")


def _best_so_far(run: Path, monitor: str, mode: str):
    log = run / "log.csv"
    if not log.is_file() or log.stat().st_size == 0:  # stopped before its first epoch ended
        return None
    frame = pd.read_csv(log)
    if monitor not in frame or frame[monitor].dropna().empty:
        return None
    return float(frame[monitor].min() if mode == "min" else frame[monitor].max())


def backup_dir(run: Path, role: WorkerRole) -> Path:
    return (run if role.chief else run / "workers" / str(role.index)) / "backup"


def resumed_epoch(run: Path, role: WorkerRole = WorkerRole()) -> int:
    """The epoch a restarted run continues from (0 for a fresh one), as BackupAndRestore sees it."""
    meta = backup_dir(run, role) / "training_metadata.json"
    return int(json.loads(meta.read_text())["epoch"]) if meta.is_file() else 0


@dataclass(frozen=True)
class FitPlan:
    """What one training run fits and how it picks its best epoch."""

    train_ds: object
    steps_per_epoch: int
    epochs: int
    monitor: str  # the logged metric that chooses the best checkpoint
    mode: str = "min"
    val_ds: object = None
    validation_steps: int | None = None
    metric_callbacks: tuple = ()  # callbacks that add ``monitor`` to the logs (they run first)


def fit_run(run: Path, model: keras.Model, plan: FitPlan, extra_callbacks=(), verbose: int = 1,
            role: WorkerRole = WorkerRole(), strategy: tf.distribute.Strategy | None = None
            ) -> keras.callbacks.History:
    """Fit with best-checkpointing, CSV + TensorBoard logs and resume after a kill.

    With several workers (``strategy`` multi-worker), their BatchNorm statistics are averaged at
    each epoch end (:class:`AverageStatistics`). Every worker keeps its own backup (``backup/`` on
    the chief, ``workers/<i>/backup`` on the others), so a restarted cluster resumes from the last
    finished epoch even on a shared folder.
    Only the chief writes the checkpoint, logs and ``done``; each worker ends by saving its final
    weights (``last.weights.h5``, in ``workers/<i>/`` on the others), which must agree.
    """
    own = backup_dir(run, role).parent
    own.mkdir(parents=True, exist_ok=True)
    callbacks = [AverageStatistics(strategy)] if role.count > 1 else []
    callbacks += [keras.callbacks.BackupAndRestore(str(own / "backup"), double_checkpoint=True),
                  *plan.metric_callbacks]  # these add the monitored metric to the logs, so they go first
    if role.chief:
        callbacks += [
            keras.callbacks.ModelCheckpoint(
                str(run / BEST), monitor=plan.monitor, mode=plan.mode, save_best_only=True,
                save_weights_only=True, initial_value_threshold=_best_so_far(run, plan.monitor, plan.mode)),
            keras.callbacks.CSVLogger(str(run / "log.csv"), append=True),
            keras.callbacks.TensorBoard(str(run / "tensorboard"), write_graph=False),
        ]
    callbacks += list(extra_callbacks)
    # the datasets shuffle themselves (per worker, seeded): Keras must not try to
    history = model.fit(plan.train_ds, epochs=plan.epochs, steps_per_epoch=plan.steps_per_epoch, shuffle=False,
                        validation_data=plan.val_ds, validation_steps=plan.validation_steps,
                        callbacks=callbacks, verbose=verbose if role.chief else 0)
    tmp = own / f".{LAST}.{os.getpid()}.weights.h5"  # Keras insists on the suffix
    model.save_weights(str(tmp))
    os.replace(tmp, own / LAST)
    if role.chief:
        write_text(run / "done", "finished\n")
    return history
