"""Stage-2 data: one corner per sample, in canonical orientation; training streams balanced by grade.

Each disk level is cut once from the full-resolution radiograph into an axis-aligned patch, scaled
so that the centre→anterior distance is ``patch_depth_px``. The patch holds enough room around the
canonical crop to rotate, shift and jitter the key points. A sample is (patch, corner): the ``_inf``
corner uses the level crop, the ``_sup`` corner the same crop flipped vertically, so both show the
graded corner top-right and the label is true by construction. No horizontal flip is ever applied
after canonicalisation: it would move the anterior corner to the back.

Training reads prepared records (:func:`prepared_balanced_dataset`); evaluation cuts the patches
of a label file directly (:func:`extract_patches`, :func:`corner_dataset`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from tfmssass.core import anatomy
from tfmssass.core.anatomy import VIEW_SLICES
from tfmssass.core.atomic import write_bytes
from tfmssass.core.geometry import CropJitter, CropSpec, cranial_directions
from tfmssass.data.tfrecords import CORNERS, NOT_GRADABLE_RECORD, load_png16, parse_corner, read_records
from tfmssass.io import RadiographError, read_radiograph
from tfmssass.io.images import encode_png16
from tfmssass.io.labels import NOT_GRADABLE, corner_label, resolve_image
from tfmssass.ops.image import IntensityJitter, jitter_intensity
from tfmssass.stages.grader.crops import PATCH_EXTENT, canonical_crop, level_patch
from tfmssass.stages.runs import load_detector
from tfmssass.stages.training import WorkerRole


@dataclass(frozen=True)
class CornerAugment:
    enabled: bool = True
    # key-point noise, in centre→anterior distances: about stage 1's error on radiograph-style films
    # (median 0.16-0.2 of that distance); at 0.06 the grader lost 0.06 exact at stage-1 points
    jitter: float = 0.15
    rotation_deg: float = 10.0
    zoom: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.04
    contrast: tuple[float, float] = (0.8, 1.25)
    brightness: float = 0.06
    gamma: tuple[float, float] = (0.75, 1.35)
    noise: float = 0.02


def level_points(row) -> dict[str, tuple]:
    return {level: tuple(row[c] for c in anatomy.keypoint_columns(level))
            for level in anatomy.LEVELS[row["view"]]}


def croppable_levels(view: str, points: dict):
    """(level, centre, anterior, cranial, depth) for each level of ``view`` that can be cropped:
    both points known, a neighbouring level to tell cranial from caudal, a depth of ≥ 2 px."""
    table = np.array([points.get(lv, (np.nan,) * 4) for lv in anatomy.LEVELS[view]], float)
    cranial = cranial_directions(table[:, :2])
    for j, level in enumerate(anatomy.LEVELS[view]):
        c, a, up = table[j, :2], table[j, 2:], cranial[j]
        if not (np.all(np.isfinite(table[j])) and np.all(np.isfinite(up))):
            continue
        depth = float(np.hypot(*(a - c)))
        if depth >= 2:
            yield level, c, a, up, depth


def patch_origin(centre, depth: float, depth_px: int) -> tuple[np.ndarray, float]:
    """Where a level's patch begins (original px) and its scale, as :func:`tfmssass.stages.grader.crops.level_patch`."""
    factor = depth_px / depth
    side = int(round(PATCH_EXTENT * depth_px))
    return np.asarray(centre, float) - side / (2.0 * factor), factor


def patch_points(centre, anterior, cranial, depth: float, depth_px: int) -> dict:
    """A level's centre and anterior point in its patch's pixels, and its cranial direction."""
    origin, factor = patch_origin(centre, depth, depth_px)
    to_patch = lambda p: (np.asarray(p) + 0.5 - origin) * factor - 0.5  # noqa: E731
    return {**dict(zip(("cx", "cy"), to_patch(centre))), **dict(zip(("ax", "ay"), to_patch(anterior))),
            "upx": cranial[0], "upy": cranial[1]}


def predicted_points(keypoints_run, frame: pd.DataFrame) -> dict:
    """Stage-1 predictions per label row, {level: (cx, cy, ax, ay)} in original pixels.

    The labelled view is passed to the detector; a radiograph whose spine is not found gets no
    points, so its corners are left out rather than graded on a guess.
    """
    detector = load_detector(keypoints_run)
    found = {}
    for index, row in tqdm(list(frame.iterrows()), desc="stage-1 points", unit="radiograph"):
        try:
            image = read_radiograph(resolve_image(frame, row)).image
        except RadiographError:
            found[index] = {}
            continue
        det = detector.detect(image, view=row["view"])
        pts = det.points[VIEW_SLICES[row["view"]]]
        found[index] = {level: (*pts[2 * j], *pts[2 * j + 1])
                        for j, level in enumerate(anatomy.LEVELS[row["view"]])} if det.found else {}
    return found


def _file_key(path: Path, depth_px: int) -> str:
    """Names a cut patch after its source's path, size and modification time and the patch scale,
    so a changed file is cut again."""
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{depth_px}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def extract_patches(frame: pd.DataFrame, patch_dir, depth_px: int = 96, points_from=None,
                    progress: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Cut every level with both points and a neighbour into a patch; one index row per level.

    ``points_from`` (optional) maps a label-row index to {level: (cx, cy, ax, ay)}, e.g. stage-1
    predictions, used instead of the labelled points.
    """
    patch_dir = Path(patch_dir)
    patch_dir.mkdir(parents=True, exist_ok=True)
    rows, errors = [], []
    for index, row in tqdm(list(frame.iterrows()), desc="cutting levels", unit="radiograph",
                           disable=not progress):
        view = row["view"]
        pts = points_from[index] if points_from is not None else level_points(row)
        path = resolve_image(frame, row)
        image = None
        for level, c, a, up, depth in croppable_levels(view, pts):
            try:
                key = f"{_file_key(path, depth_px)}_{level}"
            except FileNotFoundError:
                errors.append(f"{path}: no such file")
                break
            target = patch_dir / f"{key}.png"
            if not target.is_file():
                if image is None:
                    try:
                        image = read_radiograph(path).image
                    except RadiographError as exc:
                        errors.append(str(exc))
                        break
                patch, _, _ = level_patch(image, tf.constant(c, tf.float32), float(depth), depth_px)
                write_bytes(target, encode_png16(patch.numpy()))
            upper, lower = anatomy.level_corners(level)
            rows.append({
                "row": index, "image": row["image"], "patient_id": row["patient_id"],
                "visit_date": row["visit_date"], "view": view, "level": level, "patch_path": str(target),
                **patch_points(c, a, up, depth, depth_px), "inf_corner": upper, "sup_corner": lower,
                "grade_inf": record_label(row, upper), "grade_sup": record_label(row, lower),
            })
    return pd.DataFrame(rows), errors


def record_label(row, corner: str) -> int | None:
    """A label row's corner as prepared records and training hold it: 0-3, :data:`NOT_GRADABLE_RECORD` (4)
    for a reader's NG, None when not read."""
    label = corner_label(row, corner)
    return NOT_GRADABLE_RECORD if label == NOT_GRADABLE else label


def corner_samples(patches: pd.DataFrame, include_ng: bool = False) -> pd.DataFrame:
    """One row per graded corner (and with ``include_ng`` per NG corner, grade 4): the patch, whether it
    is a ``_sup`` corner, and its label."""
    out = []
    for _, p in patches.iterrows():
        for side in ("inf", "sup"):
            grade = p[f"grade_{side}"]
            if pd.isna(grade) or (grade == NOT_GRADABLE_RECORD and not include_ng):
                continue  # not read: never a 0, never trained on
            out.append({**p.to_dict(), "corner": p[f"{side}_corner"], "sup": side == "sup",
                        "grade": int(grade)})
    return pd.DataFrame(out)


def draw_augmentation(augment: CornerAugment, seed) -> tuple[object, CropJitter, IntensityJitter]:
    """One sample's random draws, by name: key-point noise [2, 2] (centre, anterior; in
    centre→anterior distances), the crop's geometric jitter and the intensity jitter. Stateless:
    the same ``seed`` (a [2] int64 tensor) gives the same draws."""
    r = tf.random.stateless_uniform([10], seed=seed)
    noise = tf.random.stateless_normal([2, 2], seed=seed + 7) * augment.jitter
    crop = CropJitter(angle=(r[0] * 2 - 1) * math.radians(augment.rotation_deg),
                      zoom=augment.zoom[0] + (augment.zoom[1] - augment.zoom[0]) * r[1],
                      shift=((r[2] * 2 - 1) * augment.shift, (r[3] * 2 - 1) * augment.shift))
    intensity = IntensityJitter.from_uniforms(r[4:8], seed + 3, augment.gamma, augment.contrast,
                                              augment.brightness, augment.noise)
    return noise, crop, intensity


def make_corner_fn(spec: CropSpec, augment: CornerAugment, seed: int):
    def sample(counter, patch, c, a, up, sup, label):
        if not augment.enabled:
            return canonical_crop(patch, c, a, up, sup, spec)[..., None], label
        noise, crop, intensity = draw_augmentation(augment, tf.stack([tf.cast(seed, tf.int64), counter]))
        depth = tf.norm(a - c)
        x = canonical_crop(patch, c + noise[0] * depth, a + noise[1] * depth, up, sup, spec, crop)
        return jitter_intensity(x, intensity)[..., None], label

    return sample


def crop_batches(samples: tf.data.Dataset, spec: CropSpec, batch_size: int, augment: CornerAugment, seed: int,
                 counter_offset: int, drop_remainder: bool) -> tf.data.Dataset:
    """(patch, c, a, up, sup, grade) elements → batches of (crop [B, S, S, 1], grade [B])."""
    fn = make_corner_fn(spec, augment, seed)
    ds = samples.enumerate(start=counter_offset).map(lambda i, e: fn(i, *e),
                                                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def corner_dataset(samples: pd.DataFrame, indices: np.ndarray, spec: CropSpec, batch_size: int,
                   augment: CornerAugment = CornerAugment(), seed: int = 0,
                   drop_remainder: bool = True) -> tf.data.Dataset:
    """Batches of (crop [B, S, S, 1] in [0, 1], grade [B]) for the given sample indices, in order."""
    pick = samples.iloc[np.asarray(indices)]
    tensors = (
        pick["patch_path"].astype(str).to_numpy(),
        pick[["cx", "cy"]].to_numpy(np.float32), pick[["ax", "ay"]].to_numpy(np.float32),
        pick[["upx", "upy"]].to_numpy(np.float32), pick["sup"].to_numpy(bool),
        pick["grade"].to_numpy(np.int32),
    )
    loaded = tf.data.Dataset.from_tensor_slices(tensors).map(
        lambda path, *rest: (load_png16(path), *rest), num_parallel_calls=tf.data.AUTOTUNE)
    return crop_batches(loaded, spec, batch_size, augment, seed, 0, drop_remainder)


def balanced_steps(grade_counts: dict, batch_size: int, per_class: int | None) -> int:
    """Steps per epoch of a balanced stream: every present grade ``per_class`` times (default: the
    rarest grade's count): the paper's rule, each epoch as many samples of every grade as the
    rarest grade has."""
    present = [n for n in grade_counts.values() if n > 0]
    n = per_class or min(present)
    return max(1, n * len(present) // batch_size)


def prepared_balanced_dataset(data_dir, grade_counts: dict, first_epoch: int, spec: CropSpec, batch_size: int,
                              seed: int, augment: CornerAugment = CornerAugment(), role: WorkerRole = WorkerRole(),
                              steps_per_epoch: int = 1) -> tf.data.Dataset:
    """Training corners from a prepared folder: each grade's shards are an endless shuffled
    stream, and the grades are drawn with equal probability, so an epoch is class-balanced while
    every corner of a grade comes round before any repeats (up to the shuffle buffer). A resumed
    run starts its streams from a seed of its first epoch."""
    present = [g for g, n in sorted(grade_counts.items()) if n > 0]
    run_seed = seed + 1000 * first_epoch
    streams = [read_records(data_dir, CORNERS, "train", int(g), repeat=True, seed=run_seed + int(g),
                            workers=role.count, worker_index=role.index) for g in present]
    mixed = tf.data.Dataset.sample_from_datasets(streams, [1.0 / len(present)] * len(present),
                                                 seed=run_seed, stop_on_empty_dataset=False)
    parsed = mixed.map(parse_corner, num_parallel_calls=tf.data.AUTOTUNE)
    return crop_batches(parsed, spec, batch_size, augment, seed, first_epoch * steps_per_epoch * batch_size,
                        drop_remainder=True)


def prepared_validation_dataset(data_dir, grade_counts: dict, spec: CropSpec, batch_size: int,
                                seed: int = 0) -> tf.data.Dataset:
    """Every validation corner once, unaugmented, in file order (read whole by every worker)."""
    parts = [read_records(data_dir, CORNERS, "val", int(g), repeat=False)
             for g, n in sorted(grade_counts.items()) if n > 0]
    records = parts[0]
    for part in parts[1:]:
        records = records.concatenate(part)
    parsed = records.map(parse_corner, num_parallel_calls=tf.data.AUTOTUNE)
    return crop_batches(parsed, spec, batch_size, CornerAugment(enabled=False), seed, 0, drop_remainder=False)
