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

#: Why a corner goes to review: the bits of ``review_reason`` (0: not flagged). The graph decides the
#: first four (:func:`grade_corners`); scoring adds the last two from what it sees across the film and
#: the visits. docs/outputs.md carries this table.
BRIDGE_DISAGREES = 1  # the two corners of the disk disagree about a bridge (their arg-max grades)
DOUBTFUL_GRADE = 2  # the probability of the grade given is below the review threshold
POINTS_UNSURE = 4  # a point of the level is below the point-review confidence
NOT_GRADED = 8  # the level was not cut, so its corners have no grade
FILM_EDGE = 16  # the film is cut off near the spine: the levels may be named one off
LONGITUDINAL = 32  # the patient's other visits changed the grade this radiograph alone gives
REVIEW_REASONS = {BRIDGE_DISAGREES: "the two corners of the disk disagree about a bridge",
                  DOUBTFUL_GRADE: "doubtful grade", POINTS_UNSURE: "points not confident",
                  NOT_GRADED: "not graded", FILM_EDGE: "film cut off near the spine",
                  LONGITUDINAL: "changed by the patient's other visits"}


def reasons_of(code: int) -> list[int]:
    """The reason bits set in ``code``, in the table's order."""
    return [bit for bit in REVIEW_REASONS if int(code) & bit]


def grade_corners(probabilities, level_confidence, level_cut, review_threshold, point_review):
    """Bridge rule, per-corner confidence and review reasons for [..., 12, 4] probabilities: the one
    place the grading rule is written (the SavedModel, scoring on the host and ``evaluate`` call it).

    A disk is bridged when its two corners' mean P(3) exceeds 0.5: both are 3; otherwise each
    takes its most likely grade among 0-2. ``confidence`` = min(point confidence, probability of
    the grade given). ``reason`` [..., 12] holds the bits of :data:`REVIEW_REASONS` (a point not
    confident, a doubtful grade, a bridge disagreement, a level not cut); ``review`` is reason > 0.
    Corners of levels not cut (``level_cut`` false) get grade -1. Returns (grades, confidence,
    review, reason).
    """
    import tensorflow as tf  # here, so that the reason table is readable without TensorFlow

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
    cut = tf.convert_to_tensor(level_cut, tf.bool)[..., None]
    confidence = tf.minimum(tf.minimum(point, p_grade), 1.0)

    def bit(flag, value):
        return tf.where(tf.broadcast_to(flag, tf.shape(grades)), value, 0)

    reason = tf.where(tf.broadcast_to(cut, tf.shape(grades)),
                      bit(disagreed, BRIDGE_DISAGREES) + bit(p_grade < review_threshold, DOUBTFUL_GRADE)
                      + bit(point < point_review, POINTS_UNSURE), NOT_GRADED)
    flat = lambda t: tf.reshape(t, tf.concat([shape[:-2], [12]], axis=0))  # noqa: E731
    grades = tf.where(cut, grades, -1)
    return (flat(grades), flat(tf.where(cut, confidence, float("nan"))), flat(reason > 0), flat(reason))


def disk_grades(p_inf, p_sup) -> tuple:
    """The rule of :func:`grade_corners` for any number of disks: probabilities [N, 4] of their upper
    and lower corners → (grade_inf, grade_sup) [N] (``evaluate grader`` grades its corners so)."""
    pairs = np.stack([np.asarray(p_inf, np.float32), np.asarray(p_sup, np.float32)], axis=1)  # [N, 2, 4]
    n, pad = len(pairs), (-len(pairs)) % 6
    films = np.concatenate([pairs, np.full((pad, 2, 4), 0.25, np.float32)]).reshape(-1, 12, 4)
    ones = np.ones((len(films), 6))
    grades = grade_corners(films, ones, ones.astype(bool), 0.0, 0.0)[0].numpy().reshape(-1, 2)[:n]
    return grades[:, 0], grades[:, 1]
