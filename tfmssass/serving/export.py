"""``tfmssass export``: both trained stages as one TF SavedModel for TF Serving.

What is saved is :class:`~tfmssass.serving.module.ScoringModule` built from the two run folders, the
same object ``tfmssass score --keypoints RUN --grader RUN`` runs in memory, so served and local
results agree. Its signatures and outputs are described in :mod:`tfmssass.serving.module`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from tfmssass.core.errors import UsageError
from tfmssass.serving.module import ScoringModule


def export_module(module: ScoringModule, out) -> Path:
    """Write the SavedModel (atomically: a temp folder renamed into place) and metadata.json."""
    out = Path(out)
    if not out.name.isdigit():
        raise UsageError(f"{out}: the last folder must be a numeric version (TF Serving layout), e.g. .../1")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out}: already exists; choose a new version number")
    signatures = module.signatures()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tf.saved_model.save(module, str(tmp / "model"), signatures=signatures)
        (tmp / "model" / "metadata.json").write_text(json.dumps(module.metadata, indent=1, sort_keys=True) + "\n")
        if out.exists():
            out.rmdir()
        (tmp / "model").rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_runs(keypoints_run, grader_run, out) -> Path:
    return export_module(ScoringModule.from_runs(keypoints_run, grader_run), out)
