"""From grade probabilities to grades: one answer per disk space about a bridge, a confidence
per corner, and the flags that ask for a human look.

A total bony bridge (grade 3) spans the disk, so its two corners are 3 together or not at all.

Rule: the disk is bridged when the mean of its two corners' P(grade 3) exceeds 0.5; then both
corners are 3. Otherwise each corner takes its most likely grade among 0-2. Averaging lets a
confident corner carry a doubtful partner. The threshold keeps "bridged" the majority reading
of the two crops, the way a reader decides from the whole disk.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def consistent_grades(p_inf: np.ndarray, p_sup: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities [N, 4] of the two corners of N disks → (grade_inf, grade_sup, disagreed).

    ``disagreed`` marks disks whose raw arg-max grades disagreed about the bridge (a reason for
    review).
    """
    p_inf, p_sup = np.asarray(p_inf, float), np.asarray(p_sup, float)
    bridged = (p_inf[:, 3] + p_sup[:, 3]) / 2.0 > 0.5
    inf = np.where(bridged, 3, p_inf[:, :3].argmax(axis=1))
    sup = np.where(bridged, 3, p_sup[:, :3].argmax(axis=1))
    disagreed = (p_inf.argmax(axis=1) == 3) != (p_sup.argmax(axis=1) == 3)
    return inf, sup, disagreed


def grade_corners(probabilities, level_confidence, level_ok, review_threshold, point_review):
    """Bridge rule, per-corner confidence and review flags for [..., 12, 4] probabilities.

    A disk is bridged when its two corners' mean P(3) exceeds 0.5: both are 3; otherwise each
    takes its most likely grade among 0-2 (as :func:`consistent_grades`). ``confidence`` = min(point
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
