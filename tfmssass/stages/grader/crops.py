"""Stage 2's input: level patches and canonical corner crops, in TensorFlow ops only.

Scoring, training and the exported SavedModel all cut crops with these functions, so the crops a
grader learns on and the crops it grades cannot drift apart. A level is cut once into an
axis-aligned patch at a fixed scale (``level_patch``); each of its two corners is then warped out of
the patch, anterior right and cranial up, the ``_sup`` corner flipped vertically, so the graded
corner always sits top-right (``canonical_crop``). Nothing calls back into Python, so it runs
inside TF Serving.
"""

from __future__ import annotations

import tensorflow as tf

from tfmssass.core.geometry import CropJitter, CropSpec
from tfmssass.ops.image import canonical_matrix, clahe_float, warp

#: Patch side in centre→anterior distances: the 2.8 crop, rotated 15°, shifted and zoomed, fits.
PATCH_EXTENT = 4.6


def cranial_directions(centres, valid):
    """TF twin of :func:`tfmssass.core.geometry.cranial_directions` for 6 levels: per level, the
    vector from the next valid level below to the next valid one above; and whether it exists."""
    index = tf.range(6)
    out, has = [], []
    for i in range(6):
        above = valid & (index < i)
        below = valid & (index > i)
        j_above = tf.argmax(tf.where(above, index, -1), output_type=tf.int32)
        j_below = tf.argmin(tf.where(below, index, 99), output_type=tf.int32)
        upper = tf.where(tf.reduce_any(above), centres[j_above], centres[i])
        lower = tf.where(tf.reduce_any(below), centres[j_below], centres[i])
        out.append(upper - lower)
        has.append(valid[i] & (tf.reduce_any(above) | tf.reduce_any(below)))
    return tf.stack(out), tf.stack(has)


def level_patch(image, centre, depth, depth_px: int):
    """The axis-aligned patch [S, S] around a disk centre, scaled so the disk depth is ``depth_px``
    pixels; returns (patch, origin, factor): patch px = (original px + 0.5 - origin) × factor - 0.5.

    Only the patch's footprint (plus 2 px of interpolation support) is resampled, anti-aliased
    first when it shrinks a lot (:func:`tfmssass.ops.image.warp`).
    """
    image = tf.convert_to_tensor(image, tf.float32)
    side = int(round(PATCH_EXTENT * depth_px))
    factor = float(depth_px) / depth
    origin = centre - side / (2.0 * factor)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    x0 = tf.clip_by_value(tf.cast(tf.floor(origin[0]), tf.int32) - 2, 0, width - 1)
    y0 = tf.clip_by_value(tf.cast(tf.floor(origin[1]), tf.int32) - 2, 0, height - 1)
    x1 = tf.maximum(tf.minimum(tf.cast(tf.math.ceil(origin[0] + side / factor), tf.int32) + 2, width), x0 + 1)
    y1 = tf.maximum(tf.minimum(tf.cast(tf.math.ceil(origin[1] + side / factor), tf.int32) + 2, height), y0 + 1)
    source = image[y0:y1, x0:x1]
    start = origin - tf.cast(tf.stack([x0, y0]), tf.float32)
    matrix = tf.stack([tf.stack([factor, 0.0, (0.5 - start[0]) * factor - 0.5]),
                       tf.stack([0.0, factor, (0.5 - start[1]) * factor - 0.5])])
    return warp(source, matrix, (side, side)), origin, factor


def canonical_crop(patch, c, a, up, sup, spec: CropSpec, jitter: CropJitter = CropJitter()):
    """The grader's input [S, S] from a level patch: anterior right, cranial up, ``_sup`` flipped
    vertically so the graded corner is always top-right; CLAHE if the grader was trained with it."""
    matrix = canonical_matrix(c, a, up, spec.size, spec.extent, flip_vertical=sup, angle=jitter.angle,
                              zoom=jitter.zoom, shift=jitter.shift)
    x = warp(patch, matrix, (spec.size, spec.size))
    return clahe_float(x, spec.clip) if spec.clahe else x


def corner_crops(image, points, to_cut, spec: CropSpec):
    """Crops [12, S, S] of one radiograph (inf, sup per level) and which of the 6 levels were cut.

    ``points`` [12, 2]: the view's (centre, anterior) per level in original pixels; ``to_cut``
    [6]: levels with confident points. A level also needs a valid neighbour (to tell up from
    down) and a depth of at least 2 px; its crops are zeros otherwise, and never graded.
    """
    points = tf.convert_to_tensor(points, tf.float32)
    c, a = points[0::2], points[1::2]
    depth = tf.norm(a - c, axis=1)
    finite = tf.reduce_all(tf.math.is_finite(points), axis=1)
    valid = to_cut & finite[0::2] & finite[1::2]
    up, has_up = cranial_directions(tf.where(valid[:, None], c, 0.0), valid)
    ok = valid & has_up & (tf.where(valid, depth, 0.0) >= 2.0)
    # a level that cannot be cut gets harmless stand-in geometry and a zero crop
    c = tf.where(ok[:, None], c, 0.0)
    a = tf.where(ok[:, None], a, tf.constant([float(spec.depth_px), 0.0]))
    up = tf.where(ok[:, None], up, tf.constant([0.0, -1.0]))
    depth = tf.where(ok, depth, float(spec.depth_px))

    def cut(level):
        cj, aj, uj, dj = level
        patch, origin, factor = level_patch(image, cj, dj, spec.depth_px)
        to_patch = lambda p: (p + 0.5 - origin) * factor - 0.5  # noqa: E731
        return tf.stack([canonical_crop(patch, to_patch(cj), to_patch(aj), uj, sup, spec) for sup in (False, True)])

    # one traced body for the six levels (tracing an unrolled loop took seconds)
    crops = tf.map_fn(cut, (c, a, up, depth), fn_output_signature=tf.TensorSpec([2, spec.size, spec.size], tf.float32))
    crops = tf.where(ok[:, None, None, None], crops, 0.0)
    return tf.reshape(crops, [12, spec.size, spec.size]), ok


