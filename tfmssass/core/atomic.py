"""Atomic output: write to a temporary file beside the target, then rename over it.

A run killed half-way leaves either the old file or the new one, never a torn file, so resumed runs
can trust that any output file that exists is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def keep_settings(target: str | os.PathLike, settings: dict) -> bool:
    """Write a folder's settings as JSON, or check that the ones already there are the same.

    False (nothing written) when they differ: one output folder holds one set of settings.
    """
    target = Path(target)
    text = json.dumps(settings, indent=1, sort_keys=True) + "\n"
    if target.is_file():  # compared as data, so a file written with other spacing still matches
        try:
            same = json.loads(target.read_text()) == json.loads(text)
        except ValueError:
            same = False
        if not same:
            return False
    write_text(target, text)
    return True
