"""One radiograph's record: a predictor's outputs (:mod:`tfmssass.serving.predictors`) become
points, per-corner grades with probabilities and review flags, and an overlay picture.

A record is the unit a scoring run writes and resumes from (:class:`tfmssass.scoring.folder.ScoredFolder`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from tfmssass.core import anatomy
from tfmssass.core.anatomy import VIEW_SLICES
from tfmssass.core.atomic import write_bytes
from tfmssass.core.config import POINT_CONFIDENCE, POINT_REVIEW, REVIEW_THRESHOLD
from tfmssass.core.geometry import DEFAULT_EXTENT, corner_frames, cranial_directions
from tfmssass.io import RadiographError
from tfmssass.scoring.longitudinal import DECREASE_COST
from tfmssass.scoring.overlay import draw_overlay, shrink_for_overlay
from tfmssass.stages.grader import grades
from tfmssass.stages.keypoints.detect import SKIPPED
from tfmssass.stages.runs import PHANTOM_WARNING

#: Side of a corner's picture in ``crops/`` (the report's strips across visits).
CROP_PX = 96
#: corners.csv: every corner of every scored radiograph.
CORNER_COLUMNS = ["file", "patient_id", "visit_date", "view", "level", "corner", "grade", "grade_independent",
                  "p0", "p1", "p2", "p3", "confidence", "review", "review_reason"]


class Status(enum.StrEnum):
    """What became of one input (a record's ``status``)."""

    SCORED = "scored"
    FAILED = "failed"  # it should have been scored and could not be: exit 1, listed in errors.csv
    SKIPPED = "skipped"  # honestly something else (a report, a frontal film): listed, not a failure


@dataclass(frozen=True)
class Settings:
    """Everything that changes the results; a resumed run must use the same."""

    models: str  # what scored (run folders or model name), written into every output
    phantom: bool  # whether the models were trained on phantoms only
    view: str | None = None
    impute: str = "mean"
    review_threshold: float = REVIEW_THRESHOLD
    point_review: float = POINT_REVIEW
    salt_id: str | None = None  # a hash of the pseudonymisation salt (the salt itself is never written)
    prior: str | tuple = "data"  # data, uniform, em, or four grade frequencies (tfmssass.scoring.cohort)
    longitudinal: str = "monotone"  # monotone, soft or off (tfmssass.scoring.longitudinal)
    decrease_cost: float = DECREASE_COST  # soft: the cost of a grade going down

    @classmethod
    def from_dict(cls, data: dict) -> "Settings":
        """As a scored folder keeps them; a run scored before longitudinal decoding keeps "off"."""
        prior = data.get("prior", "data")
        return cls(**{"longitudinal": "off", **data, "prior": tuple(prior) if isinstance(prior, list) else prior})

    @property
    def prior_text(self) -> str:
        if isinstance(self.prior, str):
            return {"data": "the training cohort's grade frequencies", "uniform": "every grade equally likely",
                    "em": "the scored cohort's own grade frequencies (EM)"}[self.prior]
        return "grade frequencies " + ", ".join(f"{p:.3f}" for p in self.prior)

    @property
    def models_note(self) -> str:
        return f"{PHANTOM_WARNING} ({self.models})" if self.phantom else self.models


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


def base_record(item: Item) -> dict:
    return {"key": item.key, "file": item.file, **item.ident, "view": None, "status": Status.SCORED,
            "reason": "", "levels": {}, "corners": []}


def corner_table(records: list[dict]) -> tuple[pd.DataFrame, list[dict]]:
    """corners.csv's rows (:data:`CORNER_COLUMNS`) of the scored records, and each row's corner dict."""
    rows, entries = [], []
    for r in records:
        if r["status"] != Status.SCORED:
            continue
        for c in r["corners"]:
            p = c["p"] or [None] * 4
            rows.append({"file": r["file"], "patient_id": r["patient_id"], "visit_date": r["visit_date"],
                         "view": r["view"], "level": c["level"], "corner": c["corner"], "grade": c["grade"],
                         "grade_independent": c.get("grade_independent"), "p0": p[0], "p1": p[1], "p2": p[2],
                         "p3": p[3], "confidence": c["confidence"], "review": c["review"], "review_reason": c["why"]})
            entries.append(c)
    return pd.DataFrame(rows, columns=CORNER_COLUMNS), entries


def choose_radiographs(records: list[dict]) -> dict[str, str]:
    """For two or more scored radiographs of one view at one visit: keep the one with the most
    graded corners, then the most confident ones; returns {file: why not used} for the others."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r["status"] == Status.SCORED:
            groups.setdefault((r["patient_id"], r["visit_date"], r["view"]), []).append(r)
    not_used = {}
    for group in groups.values():
        if len(group) < 2:
            continue

        def merit(r):
            conf = [c["confidence"] for c in r["corners"] if c["confidence"] is not None]
            return (r["corners_graded"], float(np.mean(conf)) if conf else 0.0, r["file"])

        best = max(group, key=merit)
        for r in group:
            if r is not best:
                not_used[r["file"]] = (f"not used: {best['file']} is the {r['view']} radiograph "
                                       "of this visit with more confidently graded corners")
    return not_used


#: Why a level under metal-dense material (:mod:`tfmssass.stages.implants`) has no grades.
IMPLANT_REASON = "implant or dense overlap over the level: not graded"
#: Why a level that the film does not reach (:mod:`tfmssass.stages.keypoints.film_edge`) has no grades.
OFF_FILM_REASON = "level not on the film (cut off)"


#: Added to the review reason of every graded corner of a film whose chain ends at the film's edge.
FILM_EDGE_REVIEW = "film cut off near the spine: check that the levels are named right"


def chain_at_film_edge(centres: np.ndarray, on_film: np.ndarray, height: int, width: int) -> bool:
    """Whether a film is cut off close to the levels read: a level is off the film, or the first or last
    level found lies within one step of the edge. Stage 1 then sometimes names every level one off
    (a lumbar film cut just below T12-L1 read from L1-L2 as T12-L1), which no rule can see; held-out
    uncut phantoms keep both ends at least 1.7 steps inside. ``centres`` [6, 2] pixels, NaN where not found."""
    if not on_film.all():
        return True
    found = np.flatnonzero(np.all(np.isfinite(centres), axis=1))
    if len(found) < 2:
        return False
    step = float(np.median(np.linalg.norm(np.diff(centres[found], axis=0), axis=1) / np.diff(found)))
    ends = centres[[found[0], found[-1]]]
    inside = np.minimum(np.minimum(ends[:, 0], ends[:, 1]), np.minimum(width - 1 - ends[:, 0], height - 1 - ends[:, 1]))
    return bool((inside < step).any())


def flag_film_edge(record: dict) -> None:
    """Every graded corner of a record whose chain ends at the film's edge goes to review, saying why."""
    if not record.get("film_edge"):
        return
    for corner in record["corners"]:
        if corner["grade"] is not None:
            add_review_reason(corner, grades.FILM_EDGE, FILM_EDGE_REVIEW)


def _level_confidence(view: str, confidence: np.ndarray) -> np.ndarray:
    """Per level of the view: the lower confidence of its two points."""
    conf = confidence[VIEW_SLICES[view]]
    return np.minimum(conf[0::2], conf[1::2])


def _fill_levels(record: dict, view: str, points: np.ndarray, level_conf: np.ndarray, cut: np.ndarray,
                 plausible: np.ndarray, implant: np.ndarray, on_film: np.ndarray) -> None:
    """The view's 6 levels into the record: both points (NaN off the film), their confidence, whether
    they were cut, whether the plausibility gate let them through, whether metal-dense material lies
    over them and whether the film reaches them."""
    points = points[VIEW_SLICES[view]]
    for j, level in enumerate(anatomy.LEVELS[view]):
        record["levels"][level] = {"c": points[2 * j].tolist(), "a": points[2 * j + 1].tolist(),
                                   "point_confidence": round(float(level_conf[j]), 4), "cut": bool(cut[j]),
                                   "plausible": bool(plausible[j]), "implant": bool(implant[j]),
                                   "off_film": not bool(on_film[j])}


def review_text(code: int, point_confidence: float, review_threshold: float) -> str:
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
    return "; ".join(reasons)


def add_review_reason(corner: dict, code: int, text: str) -> None:
    """Flag a corner for one more reason, keeping the ones it has."""
    corner["review"] = True
    corner["code"] = int(corner.get("code", 0)) | code
    corner["why"] = "; ".join(filter(None, [corner["why"], text]))


def decide_grades(out: dict, level_conf: np.ndarray, settings: Settings, exported: dict) -> tuple:
    """(grades, confidence, review reasons) of a radiograph's corners: the graph's own, when it gives its
    reasons and was exported with this run's thresholds; else decided again here from its probabilities
    by the same rule (``--review-threshold`` then works with any model, TF Serving included)."""
    same = exported.get("review_threshold") == settings.review_threshold and \
        exported.get("point_review") == settings.point_review
    if "review_reason" in out and same:
        return out["grades"], out["corner_confidence"], out["review_reason"]
    cut = np.asarray(out["grades"])[0::2] >= 0
    graded, confidence, _, reason = grades.grade_corners(out["grade_probabilities"], level_conf.astype(np.float32),
                                                         cut, settings.review_threshold, settings.point_review)
    return graded.numpy(), confidence.numpy(), reason.numpy()


def _fill_corners(record: dict, probabilities, grade_of, confidence, reason, point_threshold: float,
                  settings: Settings) -> None:
    """Corner rows from the decided grades; corners of levels not cut stay blank, never 0."""
    levels = anatomy.LEVELS[record["view"]]
    corners = []
    for k, name in enumerate(anatomy.CORNERS[record["view"]]):
        info = record["levels"][levels[k // 2]]
        if not info["cut"]:
            why = (OFF_FILM_REASON if info.get("off_film", False)
                   else "points not confident" if info["point_confidence"] < point_threshold
                   else "level implausible for a lateral spine" if not info.get("plausible", True)
                   else IMPLANT_REASON if info.get("implant", False)
                   else "no neighbouring level or disk too small")
            corners.append({"level": levels[k // 2], "corner": name, "grade": None, "p": None, "confidence": None,
                            "review": True, "code": grades.NOT_GRADED, "why": why})
            continue
        code = int(reason[k])
        corners.append({"level": levels[k // 2], "corner": name, "grade": int(grade_of[k]),
                        "p": [round(float(v), 4) for v in probabilities[k]],
                        "confidence": round(float(confidence[k]), 4), "review": code > 0, "code": code,
                        "why": review_text(code, info["point_confidence"], settings.review_threshold)})
    record["corners"] = corners
    graded = [c["grade"] for c in corners if c["grade"] is not None]
    record["score"], record["corners_graded"] = int(sum(graded)), len(graded)


def _write_overlay(record: dict, overlay_state, out: Path, settings: Settings, extent: float) -> str:
    small, scale = overlay_state
    names = anatomy.LEVELS[record["view"]]
    cut = [lv for lv in names if record["levels"][lv]["cut"]]
    centres = np.array([record["levels"][lv]["c"] if lv in cut else [np.nan, np.nan] for lv in names])
    ups = dict(zip(names, cranial_directions(centres)))
    levels = [{"level": lv, **record["levels"][lv], "up": ups[lv], "inf_corner": anatomy.level_corners(lv)[0],
               "sup_corner": anatomy.level_corners(lv)[1]} for lv in cut]
    corners = {c["corner"]: c for c in record["corners"]}
    review = sum(c["review"] for c in record["corners"])
    turned = record.get("orientation") or 0
    caption = [f"{record['file']}  |  {record['view']}  |  subtotal {record['score']} of 36 "
               f"({record['corners_graded']}/12 corners graded)  |  {review} to review"
               + (f"  |  stored turned: read after turning {turned}° clockwise" if turned > 0 else "")]
    if settings.phantom:
        caption.append(PHANTOM_WARNING)
    picture = draw_overlay(small, scale, levels, corners, caption, extent)
    name = f"overlays/{record['file'].replace('/', '__')}.png"
    ok, encoded = cv2.imencode(".png", picture)
    write_bytes(out / name, encoded.tobytes())
    return name


def _write_crops(record: dict, image: np.ndarray, out: Path, extent: float) -> str:
    """The view's 12 corners side by side, each cut as the grader sees it (graded corner top right),
    in ``crops/`` for the report's strips across visits; black where a level was not cut."""
    points = {lv: (*info["c"], *info["a"]) for lv, info in record["levels"].items() if info["cut"]}
    frames = corner_frames(points, record["view"], (CROP_PX, CROP_PX), extent)
    grey = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
    strip = np.zeros((CROP_PX, CROP_PX * 12), np.uint8)
    for k, name in enumerate(anatomy.CORNERS[record["view"]]):
        if name in frames:
            strip[:, k * CROP_PX:(k + 1) * CROP_PX] = frames[name].warp(grey)
    path = f"crops/{record['file'].replace('/', '__')}.png"
    ok, encoded = cv2.imencode(".png", strip)
    write_bytes(out / path, encoded.tobytes())
    return path


_TOO_FEW_POINTS = "spine not found: {n} of 12 {view} points confident"


class RecordMaker:
    """A predictor's outputs for one radiograph → its record, with the overlay drawn.

    The same for every model source: run folders, an exported model, TF Serving. Without ``out``
    no overlay is drawn (the review server keeps the record only).
    """

    def __init__(self, metadata: dict, settings: Settings, out: Path | None):
        self.settings, self.out = settings, out
        self.point_threshold = float(metadata.get("keypoints", {}).get("confidence_threshold", POINT_CONFIDENCE))
        self.extent = float(metadata.get("grader", {}).get("extent", DEFAULT_EXTENT))
        self.findings = metadata.get("findings", {})
        self.exported = metadata.get("review", {})  # the thresholds the graph decided with

    def make(self, item: Item, out: dict) -> dict:
        record = base_record(item)
        record["view"] = out["view"]
        if self.settings.view and out["view"] != self.settings.view:
            record.update(status=Status.FAILED, reason=f"the model reads a {out['view']} view, not {self.settings.view} "
                                                   "(--view cannot be forced with an exported model)")
            return record
        level_conf = _level_confidence(out["view"], out["keypoint_confidence"])
        if not out["spine_found"]:
            view_conf = out["keypoint_confidence"][VIEW_SLICES[out["view"]]]
            confident = int((view_conf >= self.point_threshold).sum())
            # an export from before the checks has no finding: too few points was its only refusal
            text = self.findings.get(str(int(out.get("finding", -1))), _TOO_FEW_POINTS)
            # a film mSASSS does not score (not a lateral spine) is skipped, not failed
            record.update(status=Status.SKIPPED if text.startswith(SKIPPED) else Status.FAILED,
                          reason=text.format(n=confident, view=out["view"]))
            return record
        record["orientation"] = int(out["orientation"]) if "orientation" in out else None
        cut = out["grades"][0::2] >= 0
        plausible = out.get("level_plausible", np.ones(6, bool))
        implant = out.get("level_implant", np.zeros(6, bool))  # older exports do not check
        on_film = out.get("level_on_film", np.ones(6, bool))
        _fill_levels(record, out["view"], out["keypoints"], level_conf, cut, plausible, implant, on_film)
        _fill_corners(record, out["grade_probabilities"], *decide_grades(out, level_conf, self.settings, self.exported),
                      self.point_threshold, self.settings)
        centres = out["keypoints"][VIEW_SLICES[out["view"]]][0::2]
        record["film_edge"] = chain_at_film_edge(centres, np.asarray(on_film, bool), *item.image.shape[:2])
        flag_film_edge(record)
        # the prior the probabilities assume: from the model, or (a server of an older export) its training's
        record["prior"] = [float(v) for v in out["grade_prior"]] if "grade_prior" in out else None
        if self.out is not None:
            record["overlay"] = _write_overlay(record, shrink_for_overlay(item.image), self.out, self.settings,
                                               self.extent)
            record["crops"] = _write_crops(record, item.image, self.out, self.extent)
        return record
