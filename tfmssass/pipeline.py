"""One radiograph's inference chain in TensorFlow ops only.

``tfmssass score`` calls these functions (through ``tf.function``) and the exported SavedModel is
built from the very same functions, so the served model and the Python pipeline cannot drift
apart: shrink → stage-1 coarse pass → spine region → fine pass → points in original pixels →
level patches → canonical corner crops (CLAHE) → [grader] → bridge rule and review flags.
Nothing here calls back into Python, so it runs inside TF Serving.
"""

from __future__ import annotations

import tensorflow as tf

from .augment import apply_matrix, canonical_matrix, clahe_float, invert_matrix, region_matrix, warp
from .models.heatmaps import heatmap_to_input

#: Patch side in centre→anterior distances: the 2.8 crop, rotated 15°, shifted and zoomed, fits.
PATCH_EXTENT = 4.6
VIEWS = ("cervical", "lumbar")
#: Detection outcome codes (``reason`` in :func:`detect`).
FOUND, NO_RESPONSE, TOO_FEW_POINTS = 0, 1, 2


def shrink_to_long_side(image, long_side: int):
    """Area-resize [H, W] so the long side is at most ``long_side``; returns (image, (sx, sy))."""
    image = tf.convert_to_tensor(image, tf.float32)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    factor = tf.minimum(1.0, float(long_side) / tf.reduce_max(shape))
    size = tf.maximum(tf.cast(tf.round(shape * factor), tf.int32), 1)
    small = tf.cond(factor < 1.0, lambda: tf.image.resize(image[..., None], size, method="area")[..., 0],
                    lambda: image)
    scale = tf.cast(tf.shape(small)[:2], tf.float32) / shape
    return small, tf.stack([scale[1], scale[0]])


def decode_heatmaps(heatmaps):
    """[h, w, K] → (points [K, 2] in heatmap coordinates, peak values [K]).

    Arg-max, then a quarter pixel towards the larger neighbour in x and in y, as in HRNet.
    """
    hm = tf.convert_to_tensor(heatmaps, tf.float32)
    width = tf.shape(hm)[1]
    height = tf.shape(hm)[0]
    flat = tf.reshape(tf.transpose(hm, [2, 0, 1]), [tf.shape(hm)[2], -1])
    index = tf.argmax(flat, axis=1, output_type=tf.int32)
    peak = tf.reduce_max(flat, axis=1)
    y, x = index // width, index % width

    def value(yy, xx):
        yy, xx = tf.clip_by_value(yy, 0, height - 1), tf.clip_by_value(xx, 0, width - 1)
        return tf.gather(flat, yy * width + xx, batch_dims=1)

    inside_x = (x > 0) & (x < width - 1)
    inside_y = (y > 0) & (y < height - 1)
    dx = tf.where(inside_x, tf.sign(value(y, x + 1) - value(y, x - 1)) * 0.25, 0.0)
    dy = tf.where(inside_y, tf.sign(value(y + 1, x) - value(y - 1, x)) * 0.25, 0.0)
    points = tf.stack([tf.cast(x, tf.float32) + dx, tf.cast(y, tf.float32) + dy], axis=-1)
    return points, peak


def strongest_region(summed):
    """Box [x0, y0, x1, y1] (heatmap px edges) of the 8-connected region ≥ 20% of the peak that
    carries the most response mass: a stray response cannot outweigh a whole spine."""
    summed = tf.convert_to_tensor(summed, tf.float32)
    height, width = tf.shape(summed)[0], tf.shape(summed)[1]
    mask = summed >= 0.2 * tf.reduce_max(summed)
    ids = tf.reshape(tf.range(1, height * width + 1, dtype=tf.float32), [height, width])
    labels = tf.where(mask, ids, 0.0)

    def grow(labels, _):
        spread = tf.nn.max_pool2d(labels[None, :, :, None], 3, 1, "SAME")[0, :, :, 0]
        spread = tf.where(mask, spread, 0.0)
        return spread, tf.reduce_any(tf.not_equal(spread, labels))

    labels, _ = tf.while_loop(lambda _, changed: changed, grow, (labels, tf.constant(True)))
    segment = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    mass = tf.math.unsorted_segment_sum(tf.reshape(summed, [-1]), segment, height * width + 1)
    best = tf.cast(tf.argmax(mass[1:], output_type=tf.int32) + 1, tf.float32)
    ys, xs = tf.unstack(tf.cast(tf.where(tf.equal(labels, best)), tf.float32), axis=1)
    return tf.stack([tf.reduce_min(xs) - 0.5, tf.reduce_min(ys) - 0.5,
                     tf.reduce_max(xs) + 0.5, tf.reduce_max(ys) + 0.5])


class Stage1:
    """Coarse-to-fine detection with a stage-1 model (see :mod:`tfmssass.detector`)."""

    def __init__(self, model, input_size=(256, 192), long_side: int = 1024, threshold: float = 0.3,
                 min_points: int = 8, margin: float = 0.2, flip_test: bool = False):
        self.model, self.input_size, self.long_side = model, tuple(int(v) for v in input_size), long_side
        self.threshold, self.min_points, self.margin, self.flip_test = threshold, min_points, margin, flip_test
        # one traced forward pass, called by both passes (and every exported signature)
        self.forward = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32), autograph=False,
                                   input_signature=[tf.TensorSpec([None, *self.input_size, 1], tf.float32)])

    def heatmaps(self, image, box):
        """Heatmaps [h, w, 24] of ``box`` fitted into the model input, and the image→input matrix."""
        matrix = region_matrix(box, self.input_size)
        x = warp(image, matrix, self.input_size)[None, :, :, None]
        out = self.forward(x)
        if self.flip_test:
            # A lateral view has no left/right point pairs: the flipped heatmaps only mirror back.
            flipped = self.forward(x[:, :, ::-1])
            out = (out + flipped[:, :, ::-1]) / 2.0
        return out[0], matrix

    def detect(self, image, view_index):
        """``image`` [H, W] in [0, 1]; ``view_index`` 0 cervical, 1 lumbar, -1 let the model tell.

        Returns points [24, 2] in original pixels (NaN outside the view), confidence [24], view
        index, outcome code, confident point count and the fine-pass box in original pixels.
        """
        small, scale = shrink_to_long_side(image, self.long_side)
        height = tf.cast(tf.shape(small)[0], tf.float32)
        width = tf.cast(tf.shape(small)[1], tf.float32)
        whole = tf.stack([-0.5, -0.5, width - 0.5, height - 0.5])
        coarse, matrix = self.heatmaps(small, whole)
        _, conf1 = decode_heatmaps(coarse)
        by_view = tf.reduce_mean(tf.reshape(conf1, [2, 12]), axis=1)
        view = tf.where(view_index >= 0, tf.cast(view_index, tf.int32),
                        tf.argmax(by_view, output_type=tf.int32))
        span = view * 12 + tf.range(12)
        summed = tf.reduce_sum(tf.maximum(tf.gather(coarse, span, axis=2), 0.0), axis=2)
        responded = tf.reduce_max(summed) > 1e-3
        edges = heatmap_to_input(tf.reshape(strongest_region(summed), [2, 2]))
        rough = tf.reshape(apply_matrix(invert_matrix(matrix), edges), [-1])
        rough = tf.where(responded, rough, whole)  # nothing responded: look at everything, then give up
        lo, hi = rough[:2], rough[2:]
        size = tf.maximum(hi - lo, tf.maximum(height, width) / 8.0)  # never zoom in absurdly
        centre = (lo + hi) / 2.0
        half = size * (0.5 + self.margin)
        box = tf.concat([centre - half, centre + half], axis=0)
        fine, fine_matrix = self.heatmaps(small, box)
        points, conf2 = decode_heatmaps(fine)
        back = apply_matrix(invert_matrix(fine_matrix), heatmap_to_input(points))
        confident = tf.reduce_sum(tf.cast(tf.gather(conf2, span) >= self.threshold, tf.int32))
        found = responded & (confident >= self.min_points)
        in_view = tf.reduce_any(tf.equal(tf.range(24)[:, None], span[None, :]), axis=1)
        original = (back + 0.5) / scale - 0.5
        points = tf.where(in_view[:, None] & found, original, float("nan"))
        region = tf.reshape((tf.reshape(box, [2, 2]) + 0.5) / scale - 0.5, [-1])
        reason = tf.where(responded, tf.where(found, FOUND, TOO_FEW_POINTS), NO_RESPONSE)
        confidence = tf.where(responded, conf2, conf1)
        return points, confidence, view, reason, confident, region


def cranial_directions(centres, valid):
    """TF twin of :func:`tfmssass.geometry.cranial_directions` for 6 levels: per level, the
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
    first when it shrinks a lot (:func:`tfmssass.augment.warp`).
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


def canonical_crop(patch, c, a, up, sup, size: int, extent: float, use_clahe: bool, clip: float,
                   angle=0.0, zoom=1.0, shift=(0.0, 0.0)):
    """The grader's input [S, S] from a level patch: anterior right, cranial up, ``_sup`` flipped
    vertically so the graded corner is always top-right; CLAHE if the grader was trained with it."""
    matrix = canonical_matrix(c, a, up, size, extent, flip_vertical=sup, angle=angle, zoom=zoom, shift=shift)
    x = warp(patch, matrix, (size, size))
    return clahe_float(x, clip) if use_clahe else x


def corner_crops(image, points, level_ok, size: int, extent: float, depth_px: int, use_clahe: bool,
                 clip: float):
    """Crops [12, S, S] of one radiograph (inf, sup per level) and which of the 6 levels were cut.

    ``points`` [12, 2]: the view's (centre, anterior) per level in original pixels; ``level_ok``
    [6]: levels with confident points. A level also needs a valid neighbour (to tell up from
    down) and a depth of at least 2 px; its crops are zeros otherwise, and never graded.
    """
    points = tf.convert_to_tensor(points, tf.float32)
    c, a = points[0::2], points[1::2]
    depth = tf.norm(a - c, axis=1)
    finite = tf.reduce_all(tf.math.is_finite(points), axis=1)
    valid = level_ok & finite[0::2] & finite[1::2]
    up, has_up = cranial_directions(tf.where(valid[:, None], c, 0.0), valid)
    ok = valid & has_up & (tf.where(valid, depth, 0.0) >= 2.0)
    crops = []
    for j in range(6):
        # a level that cannot be cut gets harmless stand-in geometry and a zero crop
        cj = tf.where(ok[j], c[j], 0.0)
        aj = tf.where(ok[j], a[j], tf.constant([float(depth_px), 0.0]))
        uj = tf.where(ok[j], up[j], tf.constant([0.0, -1.0]))
        dj = tf.where(ok[j], depth[j], float(depth_px))

        def cut(cj=cj, aj=aj, uj=uj, dj=dj):
            patch, origin, factor = level_patch(image, cj, dj, depth_px)
            to_patch = lambda p: (p + 0.5 - origin) * factor - 0.5  # noqa: E731
            return tf.stack([canonical_crop(patch, to_patch(cj), to_patch(aj), uj, sup, size, extent,
                                            use_clahe, clip) for sup in (False, True)])

        crops.append(tf.cond(ok[j], cut, lambda: tf.zeros([2, size, size])))
    return tf.concat(crops, axis=0), ok


def grade_corners(probabilities, level_confidence, level_ok, review_threshold, point_review):
    """Bridge rule, per-corner confidence and review flags for [..., 12, 4] probabilities.

    A disk is bridged when its two corners' mean P(3) exceeds 0.5: both are 3; otherwise each
    takes its most likely grade among 0-2 (:mod:`tfmssass.bridge`). ``confidence`` = min(point
    confidence, probability of the grade given). ``review`` when a point is not confident, the
    grade is doubtful or the two corners disagree about a bridge. Levels not cut get grade -1.
    """
    p = tf.convert_to_tensor(probabilities, tf.float32)
    shape = tf.shape(p)
    pairs = tf.reshape(p, tf.concat([shape[:-2], [6, 2, 4]], axis=0))
    p3 = tf.reduce_mean(pairs[..., 3], axis=-1, keepdims=True)  # [..., 6, 1]
    bridged = p3 > 0.5
    below3 = tf.argmax(pairs[..., :3], axis=-1, output_type=tf.int32)
    grades = tf.where(bridged, 3, below3)
    raw3 = tf.equal(tf.argmax(pairs, axis=-1, output_type=tf.int32), 3)
    disagreed = tf.not_equal(raw3[..., 0], raw3[..., 1])[..., None]
    p_grade = tf.where(bridged, p3, tf.reduce_sum(pairs * tf.one_hot(grades, 4), axis=-1))
    point = tf.convert_to_tensor(level_confidence, tf.float32)[..., None]
    ok = tf.convert_to_tensor(level_ok, tf.bool)[..., None]
    confidence = tf.minimum(tf.minimum(point, p_grade), 1.0)
    review = disagreed | (p_grade < review_threshold) | (point < point_review) | ~ok
    flat = lambda t: tf.reshape(t, tf.concat([shape[:-2], [12]], axis=0))  # noqa: E731
    grades = tf.where(ok, grades, -1)
    return flat(grades), flat(tf.where(ok, confidence, float("nan"))), flat(tf.broadcast_to(review, tf.shape(grades)))

