"""Metal over a level: a plate, screws or a rod, through which no grade can be read.

An implant is the densest thing on a radiograph: in the display image it is saturated white. A level
whose square around its anterior point (1.4 centre→anterior distances wide: both corners and the
front of the disk) holds at least a model's share limit saturated is not graded; the reader is told
to look. Dense overlap (shoulders over C7-T1, a lumbar spine burnt out by the exposure) can saturate
as much, so the words name both; such a level is rarely gradable either. The share is measured on a
32 x 32 grid of the square, averaged 2 x 2, so single noisy pixels do not count.

The limit is :data:`MIN_SHARE` (measured on phantoms whose processing keeps plates saturated,
``bench/archive_check.py``), raised for a stage-1 run whose training films saturate more of their
gradable levels than that (:func:`share_limit`): on processed films a bright but gradable square would
otherwise be blanked as metal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmssass.core import anatomy
from tfmssass.core.atomic import write_text
from tfmssass.data.tfrecords import RADIOGRAPH_SPEC, RADIOGRAPHS, decode_png16, read_records

#: Display value from which a pixel counts as saturated.
SATURATED = 0.98
#: Share of a level's square that must be saturated to leave it ungraded, at the least.
MIN_SHARE = 0.10
#: At most this share of the gradable levels of a run's training films may be blanked by the rule.
GRADABLE_BLANKED = 0.01
#: A stage-1 run's limit, beside its plausibility limits.
LIMIT_FILE = "implants.json"
GRID = 64
#: Half the side of a level's square, in centre→anterior distances.
HALF_SIZE = 0.7


def dense_levels(image, points, min_share: float = MIN_SHARE):
    """[6] bool: the levels of ``points`` [12, 2] (centre, anterior per level; NaN where not found) that
    lie under metal-dense material in ``image`` [H, W] (display values in [0, 1])."""
    return saturated_share(image, points) >= min_share


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


def share_limit(gradable_shares) -> float:
    """The rule's limit for a model, from the saturated shares of its training films' gradable levels:
    :data:`MIN_SHARE`, or above the share that more than :data:`GRADABLE_BLANKED` of them reach."""
    shares = np.asarray(gradable_shares, np.float64)
    if shares.size == 0:
        return MIN_SHARE
    return round(max(MIN_SHARE, float(np.quantile(shares, 1 - GRADABLE_BLANKED)) + 1e-3), 4)


def share_limit_from_data(data_dir) -> dict:
    """:func:`share_limit` over the training split of a prepared folder, at the labelled points of the
    levels whose two corners are graded 0-3 (plated and hidden corners are labelled not gradable)."""
    shares = []
    for serialized in read_records(data_dir, RADIOGRAPHS, "train", repeat=False):
        r = tf.io.parse_single_example(serialized, RADIOGRAPH_SPEC)
        view = r["view"].numpy().decode()
        if view not in anatomy.VIEW_SLICES:
            continue
        span = anatomy.VIEW_SLICES[view]
        points = tf.reshape(r["points"], [24, 2])[span]
        grades = r["grades"].numpy()[span].reshape(6, 2)
        gradable = ((grades >= 0) & (grades <= 3)).all(axis=1)
        if gradable.any():
            shares.extend(saturated_share(decode_png16(r["image_png"]), points).numpy()[gradable].tolist())
    return {"min_share": share_limit(shares), "gradable_levels": len(shares),
            "meaning": f"saturated share of a level's square from which it is not graded: {MIN_SHARE:g}, or above "
                       f"the share reached by {GRADABLE_BLANKED:.0%} of the training films' gradable levels"}


def write_share_limit(run_dir, limit: dict) -> None:
    write_text(Path(run_dir) / LIMIT_FILE, json.dumps(limit, indent=1) + "\n")


def read_share_limit(run_dir) -> float:
    """A stage-1 run's limit; :data:`MIN_SHARE` for a run made before it was measured."""
    path = Path(run_dir) / LIMIT_FILE
    return float(json.loads(path.read_text())["min_share"]) if path.is_file() else MIN_SHARE
