"""The typed record of one input of a scoring run: a :class:`FilmRecord` with its :class:`LevelRecord` points and
its :class:`CornerRecord` grades, as the scored folder keeps it (one JSON per input in ``.work/records/``).

Words as in the glossary (docs/architecture.md): a level is *on film*, *plausible*, and *cut* when its
corner crops were cut and graded; a corner is *graded* (0-3) or blank, never 0; a *review reason* is
a code (the bits of :data:`~tfmssass.stages.grader.grades.REVIEW_REASONS`) and its words.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd

#: corners.csv: every corner of every scored radiograph.
CORNER_COLUMNS = ["file", "patient_id", "visit_date", "view", "level", "corner", "grade", "grade_independent",
                  "gradable", "p_gradable", "p0", "p1", "p2", "p3", "confidence", "review", "review_reason"]
#: corners.csv's ``gradable``: graded, judged not gradable (the label files' ``NG``), or blank when the
#: level was not cut (off the film, points not confident, implant).
GRADABLE, NOT_GRADABLE = "yes", "NG"


class Status(enum.StrEnum):
    """What became of one input."""

    SCORED = "scored"
    FAILED = "failed"  # it should have been scored and could not be: exit 1, listed in errors.csv
    SKIPPED = "skipped"  # honestly something else (a report, a frontal film): listed, not a failure


@dataclass
class LevelRecord:
    """One disk level of a film: its two points (pixels, NaN when not found) and what was decided of it."""

    c: list[float]  # disk centre
    a: list[float]  # anterior point
    point_confidence: float  # the lower of its two points' confidences
    cut: bool  # its corner crops were cut and graded
    plausible: bool = True  # its points passed the plausibility gate
    implant: bool = False  # metal-dense material lies over it
    on_film: bool = True  # the film reaches it

    @classmethod
    def from_dict(cls, data: dict) -> "LevelRecord":
        data = dict(data)
        if "off_film" in data:  # folder format 2 kept the inverse
            data["on_film"] = not data.pop("off_film")
        return cls(**data)


@dataclass
class CornerRecord:
    """One vertebral corner of a film: its grade (None: not graded), probabilities and review."""

    level: str
    corner: str
    grade: int | None
    p: list[float] | None  # grades 0-3, this radiograph alone
    confidence: float | None
    review: bool
    review_code: int = 0  # bits of REVIEW_REASONS (and NOT_GRADED)
    review_reason: str = ""  # the code's words
    grade_independent: int | None = None  # the grade from this radiograph alone (set by the cohort)
    p_grade: float | None = None  # probability of the final grade, the patient's visits together
    p_gradable: float | None = None  # calibrated probability that the corner can be graded (None: not cut)
    not_gradable: bool = False  # judged not gradable: no grade, missing in the totals, out of the chain

    @classmethod
    def from_dict(cls, data: dict) -> "CornerRecord":
        data = dict(data)
        if "why" in data:  # folder format 2
            data["review_reason"], data["review_code"] = data.pop("why"), data.pop("code", 0)
        return cls(**data)

    def add_review(self, code: int, text: str) -> None:
        """Flag the corner for one more reason, keeping the ones it has."""
        self.review = True
        self.review_code |= code
        self.review_reason = "; ".join(filter(None, [self.review_reason, text]))


@dataclass
class FilmRecord:
    """One input file and what the run made of it."""

    key: str  # the record's name: the file's content hash (with the file name, when not scored)
    file: str  # as written to the outputs (relative path, or a pseudonym)
    status: Status
    reason: str = ""  # why it was not scored (failed or skipped)
    patient_id: str | None = None
    visit_date: str | None = None
    view: str | None = None
    levels: dict[str, LevelRecord] = field(default_factory=dict)
    corners: list[CornerRecord] = field(default_factory=list)
    score: int | None = None  # the subtotal of its graded corners
    corners_graded: int = 0
    orientation: int | None = None  # degrees turned clockwise to be read; None: not checked
    film_edge: bool = False  # its chain of levels ends at the film's edge
    prior: list[float] | None = None  # the grade frequencies its probabilities assume
    overlay: str | None = None  # picture paths, relative to the folder
    crops: str | None = None

    @property
    def scored(self) -> bool:
        return self.status == Status.SCORED

    def graded_corners(self) -> list[CornerRecord]:
        return [c for c in self.corners if c.p is not None]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "FilmRecord":
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["status"] = Status(data["status"])
        data["levels"] = {name: LevelRecord.from_dict(v) for name, v in data.get("levels", {}).items()}
        data["corners"] = [CornerRecord.from_dict(c) for c in data.get("corners", [])]
        return cls(**data)


def corner_table(films: list[FilmRecord]) -> tuple[pd.DataFrame, list[CornerRecord]]:
    """corners.csv's rows (:data:`CORNER_COLUMNS`) of the scored films, and each row's corner."""
    rows, entries = [], []
    for f in films:
        if not f.scored:
            continue
        for c in f.corners:
            p = c.p or [None] * 4
            gradable = NOT_GRADABLE if c.not_gradable else GRADABLE if c.grade is not None else None
            rows.append({"file": f.file, "patient_id": f.patient_id, "visit_date": f.visit_date, "view": f.view,
                         "level": c.level, "corner": c.corner, "grade": c.grade,
                         "grade_independent": c.grade_independent, "gradable": gradable, "p_gradable": c.p_gradable,
                         "p0": p[0], "p1": p[1], "p2": p[2], "p3": p[3],
                         "confidence": c.confidence, "review": c.review, "review_reason": c.review_reason})
            entries.append(c)
    return pd.DataFrame(rows, columns=CORNER_COLUMNS), entries


def choose_radiographs(films: list[FilmRecord]) -> dict[str, str]:
    """For two or more scored radiographs of one view at one visit: keep the one with the most
    graded corners, then the most confident ones; returns {file: why not used} for the others."""
    groups: dict[tuple, list[FilmRecord]] = {}
    for f in films:
        if f.scored:
            groups.setdefault((f.patient_id, f.visit_date, f.view), []).append(f)
    not_used = {}
    for group in groups.values():
        if len(group) < 2:
            continue

        def merit(f: FilmRecord):
            conf = [c.confidence for c in f.corners if c.confidence is not None]
            return (f.corners_graded, float(np.mean(conf)) if conf else 0.0, f.file)

        best = max(group, key=merit)
        for f in group:
            if f is not best:
                not_used[f.file] = (f"not used: {best.file} is the {f.view} radiograph "
                                    "of this visit with more confidently graded corners")
    return not_used
