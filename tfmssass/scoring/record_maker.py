"""One radiograph's record: a predictor's outputs (:mod:`tfmssass.serving.predictors`) become a
:class:`~tfmssass.scoring.film.FilmRecord` (points, per-corner grades with probabilities and review
reasons), an overlay picture and the corner crops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tfmssass.core import anatomy
from tfmssass.core.anatomy import VIEW_SLICES
from tfmssass.core.atomic import write_bytes
from tfmssass.core.config import PHANTOM_WARNING, POINT_CONFIDENCE, SKIPPED
from tfmssass.core.geometry import DEFAULT_EXTENT, corner_frames, cranial_directions
from tfmssass.io import RadiographError
from tfmssass.scoring.film import CornerRecord, FilmRecord, LevelRecord, Status
from tfmssass.scoring.overlay import draw_overlay, shrink_for_overlay
from tfmssass.scoring.settings import Settings
from tfmssass.stages.grader import grades

#: Side of a corner's picture in ``crops/`` (the report's strips across visits).
CROP_PX = 96


@dataclass
class Item:
    """One input file on its way through the pipeline."""

    path: Path
    file: str  # as written to the outputs (relative path, or a pseudonym)
    key: str | None = None
    error: RadiographError | None = None
    done: bool = False
    ident: dict = field(default_factory=dict)
    image: np.ndarray | None = None
    stored_turns: int = 0  # quarter turns from upright the DICOM header says the image is stored in


def base_film(item: Item, status: Status = Status.SCORED, reason: str = "") -> FilmRecord:
    """The film record of an item, before its levels and corners are known."""
    return FilmRecord(key=item.key, file=item.file, status=status, reason=reason,
                      patient_id=item.ident.get("patient_id"), visit_date=item.ident.get("visit_date"))


#: Why a level under metal-dense material (:mod:`tfmssass.stages.implants`) has no grades.
IMPLANT_REASON = "implant or dense overlap over the level: not graded"
#: Why a level that the film does not reach (:mod:`tfmssass.stages.keypoints.film_edge`) has no grades.
OFF_FILM_REASON = "level not on the film (cut off)"


#: Why a film cut off near the spine is not scored when neither end of its chain is clear.
UNANCHORED_REASON = ("film cut off near the spine, and neither end of the chain ({first} at the top, {last} at "
                     "the bottom) lies clear of the edge with its bone seen: the levels cannot be named for sure; "
                     "a reader must name them")
#: Added to the review reason of every graded corner of a film whose chain ends at the film's edge.
FILM_EDGE_REVIEW = "film cut off near the spine: check that the levels are named right"


def _inside_in_steps(centres: np.ndarray, height: int, width: int) -> np.ndarray:
    """How far each level's disk centre lies inside the film, in steps between the levels found (NaN
    where not found; infinite when fewer than two were found: no step to measure by)."""
    found = np.flatnonzero(np.all(np.isfinite(centres), axis=1))
    if len(found) < 2:
        return np.where(np.all(np.isfinite(centres), axis=1), np.inf, np.nan)
    step = float(np.median(np.linalg.norm(np.diff(centres[found], axis=0), axis=1) / np.diff(found)))
    x, y = centres[:, 0], centres[:, 1]
    return np.minimum(np.minimum(x, y), np.minimum(width - 1 - x, height - 1 - y)) / step


def chain_at_film_edge(centres: np.ndarray, on_film: np.ndarray, height: int, width: int) -> bool:
    """Whether a film is cut off close to the levels read: a level is off the film, or the first or last
    level found lies within one step of the edge. Stage 1 then sometimes names every level one off
    (a lumbar film cut just below T12-L1 read from L1-L2 as T12-L1), which no rule can see; held-out
    uncut phantoms keep both ends at least 1.7 steps inside. ``centres`` [6, 2] pixels, NaN where not found."""
    if not on_film.all():
        return True
    inside = _inside_in_steps(centres, height, width)
    found = np.flatnonzero(~np.isnan(inside))
    return bool(len(found) and (inside[[found[0], found[-1]]] < 1).any())


def clear_chain_ends(film: FilmRecord, centres: np.ndarray, height: int, width: int) -> list[str]:
    """The ends of the film's chain (its first and last level) a reader could count the levels from: on
    the film at least one step inside its edge, with a corner graded (bone seen, not hidden or blank)."""
    inside = _inside_in_steps(centres, height, width)
    clear = []
    for j in (0, 5):
        level = anatomy.LEVELS[film.view][j]
        graded = any(c.grade is not None for c in film.corners if anatomy.CORNER_LEVEL[c.corner] == level)
        if film.levels[level].on_film and inside[j] >= 1 and graded:
            clear.append(level)
    return clear


def flag_film_edge(film: FilmRecord) -> None:
    """Every graded corner of a film whose chain ends at the film's edge goes to review, saying why."""
    if not film.film_edge:
        return
    for corner in film.corners:
        if corner.grade is not None:
            corner.add_review(grades.FILM_EDGE, FILM_EDGE_REVIEW)


def _level_confidence(view: str, confidence: np.ndarray) -> np.ndarray:
    """Per level of the view: the lower confidence of its two points."""
    conf = confidence[VIEW_SLICES[view]]
    return np.minimum(conf[0::2], conf[1::2])


def _levels(view: str, points: np.ndarray, level_conf: np.ndarray, cut: np.ndarray, plausible: np.ndarray,
            implant: np.ndarray, on_film: np.ndarray) -> dict[str, LevelRecord]:
    """The view's 6 levels: both points (NaN off the film), their confidence, whether they were cut,
    whether the plausibility gate let them through, whether metal-dense material lies over them and
    whether the film reaches them."""
    points = points[VIEW_SLICES[view]]
    return {level: LevelRecord(c=points[2 * j].tolist(), a=points[2 * j + 1].tolist(),
                               point_confidence=round(float(level_conf[j]), 4), cut=bool(cut[j]),
                               plausible=bool(plausible[j]), implant=bool(implant[j]), on_film=bool(on_film[j]))
            for j, level in enumerate(anatomy.LEVELS[view])}


def review_text(code: int, point_confidence: float, review_threshold: float, p_gradable: float = 1.0) -> str:
    """The words for the grading rule's review reasons (:data:`~tfmssass.stages.grader.grades.REVIEW_REASONS`)
    of one graded corner; the film-edge and longitudinal reasons are added where they are decided."""
    reasons = []
    if code & grades.POINTS_UNSURE:
        reasons.append(f"points not confident ({point_confidence:.2f})")
    if code & grades.DOUBTFUL_GRADE:
        reasons.append(f"doubtful grade (on this radiograph alone, the probability of its grade is under "
                       f"{review_threshold:g})")
    if code & grades.BRIDGE_DISAGREES:
        reasons.append(grades.REVIEW_REASONS[grades.BRIDGE_DISAGREES])
    if code & grades.GRADABILITY_DOUBTFUL:
        reasons.append(f"gradability doubtful (probability that it can be graded {p_gradable:.2f})")
    return "; ".join(reasons)


def not_gradable_text(code: int, point_confidence: float, p_gradable: float, review_threshold: float) -> str:
    """Why a corner judged not gradable has no grade, then any review reasons it has."""
    first = (f"not gradable: the corner cannot be seen well enough to grade (probability that it can be graded "
             f"{p_gradable:.2f})")
    rest = review_text(code & ~grades.GRADABILITY_DOUBTFUL, point_confidence, review_threshold)
    return "; ".join(filter(None, [first, rest]))


def decide_grades(out: dict, level_conf: np.ndarray, settings: Settings, exported: dict) -> tuple:
    """(grades, confidence, review codes) of a radiograph's corners: the graph's own, when it gives its
    reasons and was exported with this run's thresholds; else decided again here from its probabilities
    by the same rule, keeping the graph's gradability calls (``--review-threshold`` then works with any
    model, TF Serving included)."""
    same = exported.get("review_threshold") == settings.review_threshold and \
        exported.get("point_review") == settings.point_review
    if "review_reason" in out:
        if same:
            return out["grades"], out["corner_confidence"], out["review_reason"]
        graded, confidence, _, reason = grades.grade_again(
            out["grade_probabilities"], level_conf.astype(np.float32), levels_cut(out), settings.review_threshold,
            settings.point_review, out["review_reason"])
        return graded, confidence, reason
    # an export from before the review reasons decided gradability at 0.5, as the rule does by default
    graded, confidence, _, reason = grades.grade_corners(out["grade_probabilities"], level_conf.astype(np.float32),
                                                         levels_cut(out), settings.review_threshold,
                                                         settings.point_review, gradable_of(out))
    return graded.numpy(), confidence.numpy(), reason.numpy()


def levels_cut(out: dict) -> np.ndarray:
    """Which of the view's 6 levels were cut, from the grades (-1 on both corners of a level not cut)."""
    return np.asarray(out["grades"])[0::2] != grades.NOT_CUT_GRADE


def gradable_of(out: dict) -> np.ndarray:
    """P(gradable) [12] of a radiograph's corners; 1 from a model that does not say (exported before NG)."""
    return np.asarray(out.get("gradable_probability", np.ones(12)), np.float32)


def _not_graded_reason(level: LevelRecord, confidence_threshold: float) -> str:
    """Why a level that was not cut has no grades."""
    if not level.on_film:
        return OFF_FILM_REASON
    if level.point_confidence < confidence_threshold:
        return "points not confident"
    if not level.plausible:
        return "level implausible for a lateral spine"
    if level.implant:
        return IMPLANT_REASON
    return "no neighbouring level or disk too small"


def _corners(film: FilmRecord, probabilities, gradable, grade_of, confidence, codes, confidence_threshold: float,
             review_threshold: float) -> list[CornerRecord]:
    """Corners from the decided grades; corners of levels not cut, and corners judged not gradable, stay
    blank, never 0."""
    levels = anatomy.LEVELS[film.view]
    corners = []
    for k, name in enumerate(anatomy.CORNERS[film.view]):
        level = film.levels[levels[k // 2]]
        if not level.cut:
            corners.append(CornerRecord(level=levels[k // 2], corner=name, grade=None, p=None, confidence=None,
                                        review=True, review_code=grades.NOT_GRADED,
                                        review_reason=_not_graded_reason(level, confidence_threshold)))
            continue
        code, p_gradable = int(codes[k]), round(float(gradable[k]), 4)
        if code & grades.NOT_GRADABLE:
            corners.append(CornerRecord(level=levels[k // 2], corner=name, grade=None, p=None, confidence=None,
                                        review=grades.needs_review(code), review_code=code,
                                        review_reason=not_gradable_text(code, level.point_confidence, p_gradable,
                                                                        review_threshold),
                                        p_gradable=p_gradable, not_gradable=True))
            continue
        corners.append(CornerRecord(level=levels[k // 2], corner=name, grade=int(grade_of[k]),
                                    p=[round(float(v), 4) for v in probabilities[k]],
                                    confidence=round(float(confidence[k]), 4), review=code > 0, review_code=code,
                                    review_reason=review_text(code, level.point_confidence, review_threshold,
                                                              p_gradable), p_gradable=p_gradable))
    return corners


def count_graded(film: FilmRecord) -> None:
    """The film's subtotal and number of graded corners, from its corners' grades."""
    graded = [c.grade for c in film.corners if c.grade is not None]
    film.score, film.corners_graded = int(sum(graded)), len(graded)


def _write_overlay(film: FilmRecord, overlay_state, out: Path, settings: Settings, extent: float) -> str:
    small, scale = overlay_state
    names = anatomy.LEVELS[film.view]
    cut = [lv for lv in names if film.levels[lv].cut]
    centres = np.array([film.levels[lv].c if lv in cut else [np.nan, np.nan] for lv in names])
    ups = dict(zip(names, cranial_directions(centres)))
    levels = [{"level": lv, "c": film.levels[lv].c, "a": film.levels[lv].a, "up": ups[lv],
               "inf_corner": anatomy.level_corners(lv)[0], "sup_corner": anatomy.level_corners(lv)[1]} for lv in cut]
    corners = {c.corner: ("NG" if c.not_gradable else c.grade, c.review) for c in film.corners}
    review = sum(c.review for c in film.corners)
    turned = film.orientation or 0
    caption = [f"{film.file}  |  {film.view}  |  subtotal {film.score} of 36 "
               f"({film.corners_graded}/12 corners graded)  |  {review} to review"
               + (f"  |  stored turned: read after turning {turned}° clockwise" if turned > 0 else "")]
    if settings.phantom:
        caption.append(PHANTOM_WARNING)
    picture = draw_overlay(small, scale, levels, corners, caption, extent)
    name = f"overlays/{film.file.replace('/', '__')}.png"
    ok, encoded = cv2.imencode(".png", picture)
    write_bytes(out / name, encoded.tobytes())
    return name


def _write_crops(film: FilmRecord, image: np.ndarray, out: Path, extent: float) -> str:
    """The view's 12 corners side by side, each cut as the grader sees it (graded corner top right),
    in ``crops/`` for the report's strips across visits; black where a level was not cut."""
    points = {name: (*lv.c, *lv.a) for name, lv in film.levels.items() if lv.cut}
    frames = corner_frames(points, film.view, (CROP_PX, CROP_PX), extent)
    grey = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
    strip = np.zeros((CROP_PX, CROP_PX * 12), np.uint8)
    for k, name in enumerate(anatomy.CORNERS[film.view]):
        if name in frames:
            strip[:, k * CROP_PX:(k + 1) * CROP_PX] = frames[name].warp(grey)
    path = f"crops/{film.file.replace('/', '__')}.png"
    ok, encoded = cv2.imencode(".png", strip)
    write_bytes(out / path, encoded.tobytes())
    return path


_TOO_FEW_POINTS = "spine not found: {n} of 12 {view} points confident"


class RecordMaker:
    """A predictor's outputs for one radiograph → its film record, with the overlay drawn.

    The same for every model source: run folders, an exported model, TF Serving. Without ``out``
    no overlay is drawn (the review server keeps the record only).
    """

    def __init__(self, metadata: dict, settings: Settings, out: Path | None):
        self.settings, self.out = settings, out
        self.confidence_threshold = float(metadata.get("keypoints", {}).get("confidence_threshold", POINT_CONFIDENCE))
        self.extent = float(metadata.get("grader", {}).get("extent", DEFAULT_EXTENT))
        self.findings = metadata.get("findings", {})
        self.exported = metadata.get("review", {})  # the thresholds the graph decided with

    def make(self, item: Item, out: dict) -> FilmRecord:
        film = base_film(item)
        film.view = out["view"]
        if self.settings.view and out["view"] != self.settings.view:
            film.status = Status.FAILED
            film.reason = (f"the model reads a {out['view']} view, not {self.settings.view} "
                           "(--view cannot be forced with an exported model)")
            return film
        level_conf = _level_confidence(out["view"], out["keypoint_confidence"])
        if not out["spine_found"]:
            view_conf = out["keypoint_confidence"][VIEW_SLICES[out["view"]]]
            confident = int((view_conf >= self.confidence_threshold).sum())
            # an export from before the checks has no finding: too few points was its only refusal
            text = self.findings.get(str(int(out.get("finding", -1))), _TOO_FEW_POINTS)
            # a film mSASSS does not score (not a lateral spine) is skipped, not failed
            film.status = Status.SKIPPED if text.startswith(SKIPPED) else Status.FAILED
            film.reason = text.format(n=confident, view=out["view"])
            return film
        film.orientation = int(out["orientation"]) if "orientation" in out else None
        cut = levels_cut(out)
        plausible = out.get("level_plausible", np.ones(6, bool))
        implant = out.get("level_implant", np.zeros(6, bool))  # older exports do not check
        on_film = np.asarray(out.get("level_on_film", np.ones(6, bool)), bool)
        film.levels = _levels(out["view"], out["keypoints"], level_conf, cut, plausible, implant, on_film)
        film.corners = _corners(film, out["grade_probabilities"], gradable_of(out),
                                *decide_grades(out, level_conf, self.settings, self.exported),
                                self.confidence_threshold, self.settings.review_threshold)
        count_graded(film)
        centres = out["keypoints"][VIEW_SLICES[out["view"]]][0::2]
        film.film_edge = chain_at_film_edge(centres, on_film, *item.image.shape[:2])
        if film.film_edge and not clear_chain_ends(film, centres, *item.image.shape[:2]):
            first, last = anatomy.LEVELS[film.view][0], anatomy.LEVELS[film.view][-1]
            failed = base_film(item, Status.FAILED, UNANCHORED_REASON.format(first=first, last=last))
            failed.view = film.view
            return failed
        flag_film_edge(film)
        # the prior the probabilities assume: from the model, or (a server of an older export) its training's
        film.prior = [float(v) for v in out["grade_prior"]] if "grade_prior" in out else None
        if self.out is not None:
            film.overlay = _write_overlay(film, shrink_for_overlay(item.image), self.out, self.settings, self.extent)
            film.crops = _write_crops(film, item.image, self.out, self.extent)
        return film
