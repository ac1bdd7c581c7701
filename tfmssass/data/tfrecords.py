"""The prepared-data format (``tfmssass prepare``): TFRecord shards and how training reads them.

Two kinds of record, one file family each, so that each stage reads only what it needs:

- ``radiographs/<split>-<unit>.tfrecord``: one record per radiograph, for stage 1: the display
  absent), their supervision weights, the 24 corner labels (0-3, 4 for ``NG``, -1 where blank) and the ids.
- ``corners/<split>-g<label>-<unit>.tfrecord``: one record per corner read (graded 0-3, or 4: a reader's
  ``NG``, which teaches the grader when a corner cannot be graded), for stage 2: the
  level patch (16-bit PNG, centre→anterior distance ``patch_depth_px``), the level's points in patch
  pixels, whether it is a ``_sup`` corner, the grade and the ids. One file family per grade lets
  training draw the grades evenly without reading the common grades in full.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmssass.core.errors import TfmssassError

RADIOGRAPHS = "radiographs"
CORNERS = "corners"
#: A corner a reader called not gradable (``NG``), as prepared records and training labels hold it.
NOT_GRADABLE_RECORD = 4
#: The corner labels a prepared folder keeps, one shard family each: grades 0-3 and NG.
LABEL_CLASSES = (0, 1, 2, 3, NOT_GRADABLE_RECORD)


def label_counts_text(counts: dict) -> str:
    """Corner counts per label as people read them: "0: 2696, 1: 902, ..., NG: 116"."""
    return ", ".join(f"{'NG' if int(g) == NOT_GRADABLE_RECORD else g}: {n}" for g, n in sorted(counts.items(),
                                                                                            key=lambda i: int(i[0])))
#: The view id of a negative: a film that is not a lateral cervical or lumbar radiograph, every point
#: known absent (all 24 weights 1, all points NaN).
NEGATIVE_VIEW = "other"


def _bytes(*values: str | bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[v.encode() if isinstance(v, str) else v for v in values]))


def _floats(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values, np.float32).ravel()))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(values, np.int64).ravel()))


def _ids(ids: dict) -> dict:
    return {key: _bytes(str(ids[key])) for key in ("image", "patient_id", "visit_date", "view")}


def radiograph_example(png: bytes, points, weights, grades, scale, size, spacing_mm: float,
                       ids: dict) -> bytes:
    """points [24, 2] display px; weights [24]; grades [24] (-1 blank); scale (sx, sy) original→
    display; size (height, width) original px; spacing_mm NaN unless calibrated."""
    feature = {"image_png": _bytes(png), "points": _floats(points), "weights": _floats(weights),
               "grades": _ints(grades), "scale": _floats(scale), "size": _ints(size),
               "spacing_mm": _floats([spacing_mm]), **_ids(ids)}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def corner_example(png: bytes, centre, anterior, cranial, sup: bool, grade: int, corner: str,
                   level: str, ids: dict) -> bytes:
    feature = {"patch_png": _bytes(png), "c": _floats(centre), "a": _floats(anterior),
               "up": _floats(cranial), "sup": _ints([int(sup)]), "grade": _ints([grade]),
               "corner": _bytes(corner), "level": _bytes(level), **_ids(ids)}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


_ID_SPEC = {key: tf.io.FixedLenFeature([], tf.string) for key in ("image", "patient_id", "visit_date", "view")}
RADIOGRAPH_SPEC = {
    "image_png": tf.io.FixedLenFeature([], tf.string), "points": tf.io.FixedLenFeature([48], tf.float32),
    "weights": tf.io.FixedLenFeature([24], tf.float32), "grades": tf.io.FixedLenFeature([24], tf.int64),
    "scale": tf.io.FixedLenFeature([2], tf.float32), "size": tf.io.FixedLenFeature([2], tf.int64),
    "spacing_mm": tf.io.FixedLenFeature([1], tf.float32), **_ID_SPEC,
}
CORNER_SPEC = {
    "patch_png": tf.io.FixedLenFeature([], tf.string), "c": tf.io.FixedLenFeature([2], tf.float32),
    "a": tf.io.FixedLenFeature([2], tf.float32), "up": tf.io.FixedLenFeature([2], tf.float32),
    "sup": tf.io.FixedLenFeature([1], tf.int64), "grade": tf.io.FixedLenFeature([1], tf.int64),
    "corner": tf.io.FixedLenFeature([], tf.string), "level": tf.io.FixedLenFeature([], tf.string),
    **_ID_SPEC,
}


def decode_png16(data):
    """16-bit PNG bytes → float image [H, W] in [0, 1]."""
    return tf.cast(tf.io.decode_png(data, channels=1, dtype=tf.uint16)[..., 0], tf.float32) / 65535.0


def parse_radiograph(serialized) -> tuple:
    """(image [H, W], points [24, 2], weights [24]): what stage-1 sampling needs."""
    r = tf.io.parse_single_example(serialized, RADIOGRAPH_SPEC)
    return decode_png16(r["image_png"]), tf.reshape(r["points"], [24, 2]), r["weights"]


def parse_radiograph_points(serialized) -> tuple:
    """(points [24, 2], view): the labels alone, no image decoded."""
    r = tf.io.parse_single_example(serialized, RADIOGRAPH_SPEC)
    return tf.reshape(r["points"], [24, 2]), r["view"]


def parse_radiograph_ids(serialized) -> dict:
    r = tf.io.parse_single_example(serialized, RADIOGRAPH_SPEC)
    return {k: r[k] for k in ("image", "patient_id", "visit_date", "view")}


def parse_corner(serialized) -> tuple:
    """(patch [H, W], centre, anterior, cranial, sup, grade): what stage-2 sampling needs."""
    r = tf.io.parse_single_example(serialized, CORNER_SPEC)
    return (decode_png16(r["patch_png"]), r["c"], r["a"], r["up"], tf.cast(r["sup"][0], tf.bool),
            tf.cast(r["grade"][0], tf.int32))


def shard_pattern(data_dir, kind: str, split: str, grade: int | None = None) -> Path:
    """The glob pattern of one family's shard files."""
    stem = f"{split}-g{grade}-" if grade is not None else f"{split}-"
    return Path(data_dir) / kind / f"{stem}*.tfrecord"


def shard_files(data_dir, kind: str, split: str, grade: int | None = None) -> list[str]:
    """The shard files of one family, sorted (the same list on every worker)."""
    pattern = shard_pattern(data_dir, kind, split, grade)
    return sorted(str(p) for p in pattern.parent.glob(pattern.name))


def _no_auto_shard(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Sharding is done here, per worker, so tf.distribute must not shard again."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


def read_records(data_dir, kind: str, split: str, grade: int | None = None, *, repeat: bool,
                 seed: int = 0, workers: int = 1, worker_index: int = 0,
                 shuffle_buffer: int = 256) -> tf.data.Dataset:
    """Serialized records of one family: files listed, sharded per worker, read interleaved.

    Each worker reads its own files when there are at least as many files as workers, else every
    ``workers``-th record. Training streams (``repeat``) reshuffle files and records each pass;
    validation streams are read in order, whole, by every worker.
    """
    files = shard_files(data_dir, kind, split, grade)
    if not files:
        raise FileNotFoundError(f"{data_dir}: no {kind} shards for split {split!r}")
    names = tf.data.Dataset.list_files(str(shard_pattern(data_dir, kind, split, grade)), shuffle=False)
    by_file = repeat and workers > 1 and len(files) >= workers
    mine = len(files[worker_index::workers]) if by_file else len(files)
    if by_file:
        names = names.shard(workers, worker_index)
    if repeat:
        names = names.shuffle(mine, seed=seed, reshuffle_each_iteration=True).repeat()
    # at most one open reader per file of this worker, so a pass reads each record once
    records = names.interleave(tf.data.TFRecordDataset, cycle_length=min(4, mine),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if repeat and workers > 1 and not by_file:
        records = records.shard(workers, worker_index)
    if repeat:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return _no_auto_shard(records)


FORMAT_VERSION = 3  # 2: radiographs shrunk with TF's area resize, as inference does; 3: NG corners kept


INDEX = "index.json"


class PrepareError(TfmssassError):
    """A prepared data folder that cannot be used; one line."""


def load_index(data_dir) -> dict:
    """A prepared folder's index; a clear error for a folder that is not (or not yet) one."""
    path = Path(data_dir) / INDEX
    if not path.is_file():
        raise PrepareError(f"{data_dir}: not a prepared data folder (no {INDEX}; run 'tfmssass prepare')")
    index = json.loads(path.read_text())
    if index.get("settings", {}).get("format") != FORMAT_VERSION:
        raise PrepareError(f"{data_dir}: prepared by another version of tfmssass; prepare it again")
    return index


def grade_counts(index: dict, split: str) -> dict[int, int]:
    return {int(g): int(n) for g, n in index["splits"][split]["grades"].items()}


def load_png16(path):
    return decode_png16(tf.io.read_file(path))
