"""Stage-1 training data: radiograph + 24 points → (input image, heatmap targets with weights).

Each sample draws one affine (region, rotation, zoom, left-right flip, shift) that moves image and
points together. The region is the whole radiograph (as in the coarse pass) or the labelled spine
with a random margin (as in the fine pass), so one network learns both passes. Random draws are
stateless, seeded by (seed, element counter), so a run is reproducible with parallel maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import tensorflow as tf

from tfmssass.core import anatomy
from tfmssass.core.anatomy import VIEW_SLICES
from tfmssass.data.tfrecords import RADIOGRAPHS, parse_radiograph, read_records
from tfmssass.ops.image import (
    IntensityJitter,
    apply_matrix,
    clahe_float,
    jitter_intensity,
    region_matrix,
    warp,
)
from tfmssass.stages.keypoints.heatmaps import STRIDE, gaussian_heatmaps, input_to_heatmap


@dataclass(frozen=True)
class KeypointAugment:
    """Augmentation ranges; ``enabled=False`` gives the deterministic validation view."""

    enabled: bool = True
    whole_image_probability: float = 0.5
    margin: tuple[float, float] = (0.1, 0.4)  # of the spine box, each side, for fine regions
    rotation_deg: float = 15.0
    zoom: tuple[float, float] = (0.85, 1.15)
    shift: float = 0.05
    flip_probability: float = 0.5
    contrast: tuple[float, float] = (0.75, 1.3)
    brightness: float = 0.08
    gamma: tuple[float, float] = (0.7, 1.4)
    noise: float = 0.02
    clahe_probability: float = 0.25  # CLAHE (as stage 2 uses it), so contrast styles vary
    cut_probability: float = 0.4  # the film cut off at the top or bottom: the levels cut away must not respond
    cut_share: float = 0.4  # at most this share of the film's height is cut away (films without levels to cut by)
    cut_levels: tuple[int, int] = (1, 3)  # a cut film loses this many levels at one end (as archives' films do)


def row_points(row, scale_x: float, scale_y: float) -> tuple[np.ndarray, np.ndarray]:
    """One label row's points [24, 2] in working (shrunk) pixels, NaN where absent, and their
    supervision weights [24].

    Weight 1 for every point of the other view (its heatmap must stay empty) and for labelled
    points of the radiograph's own view; 0 for points of its own view that nobody placed.
    """
    points = np.full((24, 2), np.nan, np.float32)
    weights = np.ones(24, np.float32)
    view = row["view"]
    offset = VIEW_SLICES[view].start
    for j, level in enumerate(anatomy.LEVELS[view]):
        cx, cy, ax, ay = (row[col] for col in anatomy.keypoint_columns(level))
        for k, (x, y) in enumerate(((cx, cy), (ax, ay))):
            slot = offset + 2 * j + k
            if pd.isna(x) or pd.isna(y):
                weights[slot] = 0.0
            else:  # original px → working px (pixel-centre aligned)
                points[slot] = ((x + 0.5) * scale_x - 0.5, (y + 0.5) * scale_y - 0.5)
    return points, weights


def spine_box(points, margin):
    """Box (x0, y0, x1, y1) around the finite points, widened by ``margin`` × size on each side."""
    finite = tf.reduce_all(tf.math.is_finite(points), axis=-1)
    pts = tf.boolean_mask(points, finite)
    lo, hi = tf.reduce_min(pts, axis=0), tf.reduce_max(pts, axis=0)
    size = tf.maximum(hi - lo, 8.0)
    pad = size * margin
    return tf.concat([lo - pad, hi + pad], axis=0)


@dataclass(frozen=True)
class RegionDraws:
    """One sample's random geometry, each draw named: the margin around the spine, whether the
    whole radiograph is shown (the coarse pass) instead, turn (radians), zoom, left-right flip and
    shift (fractions of the input)."""

    margin: object = 0.2
    use_whole: object = False
    angle: object = 0.0
    zoom: object = 1.0
    flip: object = False
    shift: tuple = (0.0, 0.0)


def draw_augmentation(augment: KeypointAugment, seed, has_points) -> tuple[RegionDraws, IntensityJitter, object]:
    """One sample's random draws, by name: the region's geometry, the intensity jitter, and
    whether CLAHE is applied. Stateless: the same ``seed`` gives the same draws. A radiograph
    without two labelled points is always shown whole."""
    rand = tf.random.stateless_uniform([12], seed=seed)
    lo, hi = augment.margin
    region = RegionDraws(margin=lo + (hi - lo) * rand[0],
                         use_whole=(rand[1] < augment.whole_image_probability) | ~has_points,
                         angle=(rand[2] * 2 - 1) * math.radians(augment.rotation_deg),
                         zoom=augment.zoom[0] + (augment.zoom[1] - augment.zoom[0]) * rand[3],
                         flip=rand[4] < augment.flip_probability,
                         shift=((rand[5] * 2 - 1) * augment.shift, (rand[6] * 2 - 1) * augment.shift))
    intensity = IntensityJitter.from_uniforms(rand[7:11], seed + 1, augment.gamma, augment.contrast,
                                              augment.brightness, augment.noise)
    return region, intensity, rand[11] < augment.clahe_probability


def level_cut_row(points, levels_off, top, where):
    """The film row at which to cut so that ``levels_off`` levels fall off the top (or the bottom): between
    the last disk centre cut away and the first kept, ``where`` (0-1) of the way; -1 when fewer than
    ``levels_off`` + 3 centres are labelled (the rest must still make a chain)."""
    centres = points[0::2]
    ys = tf.sort(tf.boolean_mask(centres[:, 1], tf.reduce_all(tf.math.is_finite(centres), axis=-1)))
    n = tf.shape(ys)[0]
    enough = n >= levels_off + 3
    k = tf.minimum(levels_off, tf.maximum(n - 1, 0))
    gone = tf.where(top, k - 1, n - k)  # the centre cut away next to the edge, and the one kept
    kept = tf.where(top, k, n - k - 1)
    padded = tf.concat([ys, [0.0]], axis=0)  # a film with no labelled level (a negative) has none to take
    at = lambda i: tf.gather(padded, tf.clip_by_value(i, 0, tf.maximum(n - 1, 0)))  # noqa: E731
    row = at(gone) + where * (at(kept) - at(gone))
    return tf.where(enough, row, -1.0)


def cut_film(image, points, augment: KeypointAugment, seed):
    """The film cut off at the top or bottom at random (``augment.cut_probability``), as films cut off
    above or below the graded levels are: 1-3 levels (``augment.cut_levels``) fall off, the edge between
    two disks; a film without enough labelled levels is cut by a share of its height instead. Points keep
    their place, so those cut away lie off the film and their heatmaps are trained to stay empty."""
    rand = tf.random.stateless_uniform([5], seed=seed)
    rows = tf.shape(image)[0]
    rows_f = tf.cast(rows, tf.float32)
    top = rand[2] < 0.5
    low, high = augment.cut_levels
    levels_off = low + tf.cast(rand[3] * (high - low + 1), tf.int32)
    edge = level_cut_row(points, tf.minimum(levels_off, high), top, 0.3 + 0.4 * rand[4])
    by_share = rand[0] * augment.cut_share * rows_f
    cut = tf.where(edge >= 0, tf.where(top, edge, rows_f - edge), by_share)
    cut = tf.cast(tf.clip_by_value(cut, 0.0, 0.6 * rows_f), tf.int32)
    cut = tf.where(rand[1] < augment.cut_probability, cut, 0)
    start = tf.where(top, cut, 0)
    return image[start:rows - tf.where(top, 0, cut)], points - tf.stack([0.0, tf.cast(start, tf.float32)])


def on_film(points, image):
    """[24] which points lie on the film (a labelled point off it is known absent: its heatmap stays empty)."""
    shape = tf.cast(tf.shape(image), tf.float32)
    return ((points[:, 0] >= -0.5) & (points[:, 0] <= shape[1] - 0.5) & (points[:, 1] >= -0.5)
            & (points[:, 1] <= shape[0] - 0.5))


def make_sample_fn(input_size, sigma: float, augment: KeypointAugment, seed: int):
    height, width = input_size
    hm_h, hm_w = height // STRIDE, width // STRIDE

    def sample(counter, image, points, weights):
        s = tf.stack([tf.cast(seed, tf.int64), counter])
        if augment.enabled and augment.cut_probability > 0:
            image, points = cut_film(image, points, augment, s + tf.constant([7919, 0], tf.int64))
        seen = on_film(points, image)
        shape = tf.cast(tf.shape(image), tf.float32)
        whole = tf.stack([-0.5, -0.5, shape[1] - 0.5, shape[0] - 0.5])
        has_points = tf.reduce_sum(tf.cast(seen, tf.int32)) >= 2
        if augment.enabled:
            region, intensity, use_clahe = draw_augmentation(augment, s, has_points)
        else:
            region = RegionDraws(use_whole=~has_points)
        box = tf.cond(region.use_whole, lambda: whole,
                      lambda: spine_box(tf.where(seen[:, None], points, float("nan")), region.margin))
        matrix = region_matrix(box, input_size, angle=region.angle, zoom=region.zoom, flip=region.flip,
                               shift=region.shift)
        x = warp(image, matrix, input_size)
        if augment.enabled:
            x = jitter_intensity(x, intensity)
            x = tf.cond(use_clahe, lambda: clahe_float(x), lambda: x)
        hm_points = input_to_heatmap(apply_matrix(matrix, points))
        inside = (hm_points[:, 0] >= -0.5) & (hm_points[:, 0] <= hm_w - 0.5) & (
            hm_points[:, 1] >= -0.5) & (hm_points[:, 1] <= hm_h - 0.5)
        visible = tf.cast(inside & seen, tf.float32)
        targets = gaussian_heatmaps(hm_points, visible, hm_h, hm_w, sigma)
        packed = tf.concat([targets, tf.broadcast_to(weights[None, None, :], tf.shape(targets))], -1)
        return x[..., None], packed

    return sample


def augmented_batches(radiographs: tf.data.Dataset, input_size, batch_size: int, sigma: float,
                      augment: KeypointAugment, seed: int, drop_remainder: bool) -> tf.data.Dataset:
    """(image, points, weights) elements → batches of (image [B, H, W, 1], packed targets)."""
    fn = make_sample_fn(input_size, sigma, augment, seed)
    ds = radiographs.enumerate().map(lambda i, e: fn(i, *e), num_parallel_calls=tf.data.AUTOTUNE,
                                     deterministic=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def prepared_keypoint_dataset(data_dir, split: str, input_size, batch_size: int, sigma: float = 2.0,
                              augment: KeypointAugment = KeypointAugment(), seed: int = 0,
                              repeat: bool = True, workers: int = 1, worker_index: int = 0) -> tf.data.Dataset:
    """The same batches from a prepared folder's radiograph shards (this worker's share)."""
    records = read_records(data_dir, RADIOGRAPHS, split, repeat=repeat, seed=seed, workers=workers,
                           worker_index=worker_index)
    base = records.map(parse_radiograph, num_parallel_calls=tf.data.AUTOTUNE)
    return augmented_batches(base, input_size, batch_size, sigma, augment, seed, drop_remainder=repeat)
