"""What chooses a stage-1 epoch: the real detector on validation films, whole and cut between two disks.

The median point error on whole films hardly moves when a cut film's levels shift by one, or when the
levels under dense shoulders are placed a disk off; either makes scoring grade one level as another,
or the gate refuse the film. So each epoch is also judged by the levels it answers wrong, read as
scoring reads them (:func:`levels_wrong`).
"""

from __future__ import annotations

import math

import numpy as np

from tfmssass.core.anatomy import VIEW_SLICES
from tfmssass.stages.keypoints.detect import KeypointDetector
from tfmssass.stages.keypoints.film_edge import levels_on_film

LEVELS_WRONG = "val_levels_wrong"  # % of validation levels, on whole films and cut ones, answered wrong
POINT_ERROR = "val_point_error"  # median radial error on whole films, % of the image diagonal


def cut_versions(image, points, view: str, index: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """A validation film whole and, when all six of its levels are labelled, cut above and cut below
    halfway between two disks, 1, 2 or 3 levels off in turn by ``index`` (as archives' films are cut);
    each film with its points shifted to it. The cut levels' points lie off the film."""
    versions = [(image, points)]
    centres = points[VIEW_SLICES[view]][0::2]
    if not np.isfinite(centres).all():
        return versions
    above, below = index % 3 + 1, (index + 1) % 3 + 1
    top = int(round((centres[above - 1, 1] + centres[above, 1]) / 2))
    bottom = int(round((centres[5 - below, 1] + centres[6 - below, 1]) / 2))
    versions.append((image[top:], points - np.array([0.0, top], np.float32)))
    versions.append((image[:bottom], points))
    return versions


def levels_wrong(detection, truth, view: str, rows: int, columns: int, step: float) -> tuple[int, int]:
    """(levels answered wrong, levels labelled) on one film of ``rows`` x ``columns``, read as scoring reads it:
    a level is answered when both its points are confident and the film-edge rule (:mod:`.film_edge`)
    keeps it. A level on the film is wrong unless it is answered within a third of a disk ``step`` of
    the truth (graded otherwise, it would be another level's grade); a level off the film is wrong
    when it is answered."""
    span = VIEW_SLICES[view]
    centres = truth[span][0::2]
    labelled = np.all(np.isfinite(centres), axis=1)
    on = labelled & (centres[:, 1] >= -0.5) & (centres[:, 1] <= rows - 0.5)
    if not detection.found or detection.view != view:
        return int(on.sum()), int(labelled.sum())
    found = detection.points[span][0::2]
    low = detection.low_confidence[span]
    confident = ~low[0::2] & ~low[1::2]
    kept = levels_on_film(np.nan_to_num(found, nan=-1e6), confident, rows, columns).numpy()
    answered = confident & kept
    placed = np.linalg.norm(np.nan_to_num(found, nan=1e9) - np.nan_to_num(centres), axis=1) <= step / 3
    return int((on & ~(answered & placed)).sum() + (labelled & ~on & answered).sum()), int(labelled.sum())


def validation_errors(detector: KeypointDetector, images, points, views) -> dict[str, float]:
    """Stage 1 on validation films as scoring runs it: the median radial error of the labelled points on
    whole films, % of each diagonal (a film not found: 100%), and the % of levels answered wrong on the
    films whole and cut (:func:`levels_wrong`): the best epoch is the one that names levels right on
    cut films and under dense shoulders too, which the median on whole films does not see."""
    errors, wrong, labelled = [], 0, 0
    for index, (image, truth, view) in enumerate(zip(images, points, views)):
        span = VIEW_SLICES[view]
        centres = truth[span][0::2]
        known_centres = centres[np.all(np.isfinite(centres), axis=1)]
        step = float(np.median(np.linalg.norm(np.diff(known_centres, axis=0), axis=1))) if len(known_centres) > 1 \
            else math.hypot(*image.shape) / 20
        for film, film_truth in cut_versions(image, truth, view, index):
            det = detector.detect(film)
            w, n = levels_wrong(det, film_truth, view, film.shape[0], film.shape[1], step)
            wrong, labelled = wrong + w, labelled + n
            if film is image:
                errors += _point_errors(det, truth, view, math.hypot(*image.shape))
    return {POINT_ERROR: float(np.median(errors)) if errors else float("nan"),
            LEVELS_WRONG: 100.0 * wrong / labelled if labelled else float("nan")}


def _point_errors(detection, truth, view: str, diagonal: float) -> list[float]:
    span = VIEW_SLICES[view]
    known = np.all(np.isfinite(truth[span]), axis=1)
    if not detection.found or detection.view != view:
        return [100.0] * int(known.sum())
    return (np.linalg.norm(detection.points[span][known] - truth[span][known], axis=1) / diagonal * 100).tolist()
