"""Metal over a level: a plate, screws or a rod, through which no grade can be read.

An implant is the densest thing on a radiograph: in the display image it is saturated white. A level
whose square around its anterior point (1.4 centre→anterior distances wide: both corners and the
front of the disk) holds at least :data:`MIN_SHARE` saturated is not graded; the reader is told to
look. Dense
overlap (shoulders over C7-T1) can saturate as much, so the words name both; such a level is
rarely gradable either. The share is measured on a 32 x 32 grid of the square, averaged 2 x 2, so
single noisy pixels do not count. Limits measured on phantoms (``bench/implant_check.py``).
"""

from __future__ import annotations

import tensorflow as tf

#: Display value from which a pixel counts as saturated.
SATURATED = 0.98
#: Share of a level's square that must be saturated to leave it ungraded.
MIN_SHARE = 0.10
GRID = 64
#: Half the side of a level's square, in centre→anterior distances.
HALF_SIZE = 0.7


def dense_levels(image, points):
    """[6] bool: the levels of ``points`` [12, 2] (centre, anterior per level; NaN where not found) that
    lie under metal-dense material in ``image`` [H, W] (display values in [0, 1])."""
    return saturated_share(image, points) >= MIN_SHARE


def saturated_share(image, points):
    """[6] the saturated share of each level's square; 0 for a level without both points."""
    points = tf.convert_to_tensor(points, tf.float32)
    c, a = points[0::2], points[1::2]
    found = tf.reduce_all(tf.math.is_finite(points[0::2]) & tf.math.is_finite(points[1::2]), axis=1)
    c, a = tf.where(found[:, None], c, 0.0), tf.where(found[:, None], a, 1.0)
    half = HALF_SIZE * tf.norm(a - c, axis=1, keepdims=True)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    lo, hi = a - half, a + half  # x, y in pixels
    boxes = tf.stack([lo[:, 1] / (height - 1), lo[:, 0] / (width - 1), hi[:, 1] / (height - 1),
                      hi[:, 0] / (width - 1)], axis=1)
    samples = tf.image.crop_and_resize(tf.convert_to_tensor(image, tf.float32)[None, :, :, None], boxes,
                                       tf.zeros([6], tf.int32), [GRID, GRID], extrapolation_value=0.0)
    averaged = tf.nn.avg_pool2d(samples, 4, 4, "VALID")
    share = tf.reduce_mean(tf.cast(averaged >= SATURATED, tf.float32), axis=[1, 2, 3])
    return tf.where(found, share, 0.0)
