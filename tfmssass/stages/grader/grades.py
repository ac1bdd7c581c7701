"""From grade probabilities to grades: one answer per disk space about a bridge, a confidence
per corner, and the flags that ask for a human look.

A total bony bridge (grade 3) spans the disk, so its two corners are 3 together or not at all.

A corner whose probability of being gradable is below the gradability threshold is not gradable
(``NG``): it gets no grade (-2), as a reader would leave it, and it has no say in its disk's bridge.

Rule: the disk is bridged when the mean of its two corners' P(grade 3) exceeds 0.5; then both
corners are 3. Otherwise each corner takes its most likely grade among 0-2. Averaging lets a
confident corner carry a doubtful partner. The threshold keeps "bridged" the majority reading
of the two crops, the way a reader decides from the whole disk.
"""

from __future__ import annotations

import numpy as np

from tfmssass.core.config import GRADABILITY_REVIEW_ODDS, GRADABLE_THRESHOLD

#: Why a corner goes to review: the bits of ``review_reason`` (0: not flagged). The graph decides the
#: first four (:func:`grade_corners`); scoring adds 16, 32 and 256 from what it sees across the film
#: and the visits. docs/outputs.md carries this table.
BRIDGE_DISAGREES = 1  # the two corners of the disk disagree about a bridge (their arg-max grades)
DOUBTFUL_GRADE = 2  # the probability of the grade given is below the review threshold
POINTS_UNSURE = 4  # a point of the level is below the point-review confidence
NOT_GRADED = 8  # the level was not cut, so its corners have no grade
FILM_EDGE = 16  # the film is cut off near the spine: the levels may be named one off
LONGITUDINAL = 32  # the patient's other visits changed the grade this radiograph alone gives
NOT_GRADABLE = 64  # the grader judged the corner not gradable (NG): an outcome, not by itself a review
GRADABILITY_DOUBTFUL = 128  # P(gradable) is between the gradability review bounds
CONTRADICTS_VISITS = 256  # the radiograph contradicts the patient's other visits: its levels may be misplaced
REVIEW_REASONS = {BRIDGE_DISAGREES: "the two corners of the disk disagree about a bridge",
                  DOUBTFUL_GRADE: "doubtful grade", POINTS_UNSURE: "points not confident",
                  NOT_GRADED: "not graded", FILM_EDGE: "film cut off near the spine",
                  LONGITUDINAL: "changed by the patient's other visits",
                  NOT_GRADABLE: "not gradable: the corner cannot be seen well enough to grade",
                  GRADABILITY_DOUBTFUL: "gradability doubtful",
                  CONTRADICTS_VISITS: "the radiograph contradicts the patient's other visits"}
#: Grades of corners with none: their level was not cut (-1), or the corner was judged not gradable (-2).
NOT_CUT_GRADE, NOT_GRADABLE_GRADE = -1, -2


def reasons_of(code: int) -> list[int]:
    """The reason bits set in ``code``, in the table's order."""
    return [bit for bit in REVIEW_REASONS if int(code) & bit]


def gradability_band(threshold: float = GRADABLE_THRESHOLD) -> tuple[float, float]:
    """The P(gradable) a call is borderline between (review): odds within
    :data:`~tfmssass.core.config.GRADABILITY_REVIEW_ODDS` of the threshold's, 0.2-0.8 around 0.5."""
    odds = threshold / (1.0 - threshold)
    low, high = odds / GRADABILITY_REVIEW_ODDS, odds * GRADABILITY_REVIEW_ODDS
    return low / (1.0 + low), high / (1.0 + high)


def needs_review(code: int) -> bool:
    """Whether a corner with these reason bits asks for a human look: any reason but a confident NG."""
    return bool(int(code) & ~NOT_GRADABLE)


def grade_corners(probabilities, level_confidence, level_cut, review_threshold, point_review, gradable=None,
                  gradable_threshold=GRADABLE_THRESHOLD):
    """Bridge rule, gradability, per-corner confidence and review reasons for [..., 12, 4] probabilities:
    the one place the grading rule is written (the SavedModel, scoring on the host and ``evaluate`` call it).

    A corner whose P(gradable) (``gradable`` [..., 12]; None: all gradable) is below
    ``gradable_threshold`` (the model's, from its calibration) is not gradable: grade -2, reason
    :data:`NOT_GRADABLE`; one within :func:`gradability_band` is borderline. A disk is bridged
    when its gradable corners' mean P(3) exceeds 0.5: both are 3; otherwise each takes its most likely
    grade among 0-2. ``confidence`` = min(point confidence, probability of the grade given).
    ``reason`` [..., 12] holds the bits of :data:`REVIEW_REASONS` (a point not confident, a doubtful
    grade, a bridge disagreement, a level not cut, not gradable, gradability borderline); ``review``
    is any reason but a confident NG (:func:`needs_review`). Corners of levels not cut (``level_cut``
    false) get grade -1. Returns (grades, confidence, review, reason).
    """
    import tensorflow as tf  # here, so that the reason table is readable without TensorFlow

    p = tf.convert_to_tensor(probabilities, tf.float32)
    shape = tf.shape(p)
    pairs = tf.reshape(p, tf.concat([shape[:-2], [6, 2, 4]], axis=0))
    g = tf.ones(shape[:-1], tf.float32) if gradable is None else tf.convert_to_tensor(gradable, tf.float32)
    g = tf.reshape(g, tf.concat([shape[:-2], [6, 2]], axis=0))
    can = tf.cast(g >= gradable_threshold, tf.float32)
    # the bridge is the gradable corners' call; a disk with neither gradable keeps the plain mean (unused)
    weight = tf.where(tf.reduce_sum(can, axis=-1, keepdims=True) > 0, can, tf.ones_like(can))
    p3 = tf.reduce_sum(pairs[..., 3] * weight, axis=-1, keepdims=True) / tf.reduce_sum(weight, axis=-1, keepdims=True)
    bridged = p3 > 0.5
    below3 = tf.argmax(pairs[..., :3], axis=-1, output_type=tf.int32)
    grades = tf.where(bridged, 3, below3)
    raw3 = tf.equal(tf.argmax(pairs, axis=-1, output_type=tf.int32), 3)
    both_gradable = tf.reduce_all(can > 0, axis=-1)
    disagreed = (tf.not_equal(raw3[..., 0], raw3[..., 1]) & both_gradable)[..., None]
    p_grade = tf.where(bridged, p3, tf.reduce_sum(pairs * tf.one_hot(grades, 4), axis=-1))
    point = tf.convert_to_tensor(level_confidence, tf.float32)[..., None]
    cut = tf.convert_to_tensor(level_cut, tf.bool)[..., None]
    confidence = tf.minimum(tf.minimum(point, p_grade), 1.0)

    def bit(flag, value):
        return tf.where(tf.broadcast_to(flag, tf.shape(grades)), value, 0)

    not_gradable = g < gradable_threshold
    band = gradability_band(gradable_threshold)
    borderline = bit((g >= band[0]) & (g < band[1]), GRADABILITY_DOUBTFUL)
    graded_reason = (bit(disagreed, BRIDGE_DISAGREES) + bit(p_grade < review_threshold, DOUBTFUL_GRADE)
                     + bit(point < point_review, POINTS_UNSURE) + borderline)
    ng_reason = NOT_GRADABLE + bit(point < point_review, POINTS_UNSURE) + borderline
    everywhere = lambda t: tf.broadcast_to(t, tf.shape(grades))  # noqa: E731
    reason = tf.where(everywhere(cut), tf.where(not_gradable, ng_reason, graded_reason), NOT_GRADED)
    flat = lambda t: tf.reshape(t, tf.concat([shape[:-2], [12]], axis=0))  # noqa: E731
    graded = everywhere(cut) & ~not_gradable
    grades = tf.where(everywhere(cut), tf.where(not_gradable, NOT_GRADABLE_GRADE, grades), NOT_CUT_GRADE)
    review = tf.not_equal(tf.bitwise.bitwise_and(reason, ~NOT_GRADABLE), 0)
    return (flat(grades), flat(tf.where(graded, confidence, float("nan"))), flat(review), flat(reason))


def grade_again(probabilities, level_confidence, level_cut, review_threshold, point_review, reason_before):
    """:func:`grade_corners` on the host with other review thresholds or another prior, keeping the
    model's gradability calls (``reason_before`` [..., 12]: the reason bits it gave): its NG corners stay
    NG and its borderline calls borderline, whatever threshold it decided them with (TF Serving does not
    tell). Returns numpy (grades, confidence, review, reason)."""
    before = np.asarray(reason_before, np.int32)
    gradable = np.where(before & NOT_GRADABLE, 0.0, 1.0).astype(np.float32)
    graded, confidence, _, reason = grade_corners(probabilities, level_confidence, level_cut, review_threshold,
                                                  point_review, gradable)
    reason = reason.numpy() | (before & GRADABILITY_DOUBTFUL)
    return graded.numpy(), confidence.numpy(), (reason & ~NOT_GRADABLE) != 0, reason


def disk_grades(p_inf, p_sup) -> tuple:
    """The rule of :func:`grade_corners` for any number of disks: probabilities [N, 4] of their upper
    and lower corners → (grade_inf, grade_sup) [N] (``evaluate grader`` grades its corners so)."""
    pairs = np.stack([np.asarray(p_inf, np.float32), np.asarray(p_sup, np.float32)], axis=1)  # [N, 2, 4]
    n, pad = len(pairs), (-len(pairs)) % 6
    films = np.concatenate([pairs, np.full((pad, 2, 4), 0.25, np.float32)]).reshape(-1, 12, 4)
    ones = np.ones((len(films), 6))
    grades = grade_corners(films, ones, ones.astype(bool), 0.0, 0.0)[0].numpy().reshape(-1, 2)[:n]
    return grades[:, 0], grades[:, 1]
