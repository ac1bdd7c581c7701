"""What is decided from the whole scored cohort, after every radiograph has its record: the prior of
grades (``score --prior``) and the joint decoding of each patient's visits (``score
--longitudinal``).

The records on disk keep what the model said of each radiograph alone; these decisions are made
again from them whenever the tables are written, so a resumed run and a fresh one agree.

- ``--prior data`` (default): the model's probabilities as they are, under its training cohort's
  grade frequencies. ``uniform``: as if every grade were equally common (what balanced training
  assumed). A FILE of four frequencies: a cohort known to be different. ``em``: the scored cohort's
  own frequencies, estimated from its probabilities (Saerens et al. 2002); for a large cohort
  (hundreds of radiographs) whose stage of disease differs from the training data.
- The per-corner grades are then made again by the model's own rule (bridge, review flags), and
  decoded over visits (:mod:`tfmssass.scoring.longitudinal`).
"""

from __future__ import annotations

import numpy as np

from tfmssass.core import anatomy
from tfmssass.core.errors import UsageError
from tfmssass.scoring.longitudinal import Decoded, decode_cohort
from tfmssass.scoring.records import (
    Status,
    add_review_reason,
    corner_table,
    flag_film_edge,
    review_text,
)
from tfmssass.stages.grader.calibration import UNIFORM, change_prior, em_prior
from tfmssass.stages.grader.grades import LONGITUDINAL, grade_corners

PRIOR_CHOICES = ("data", "uniform", "em")


def read_prior_file(path) -> tuple:
    """Four grade frequencies (grades 0-3) from a text file: numbers separated by commas, spaces or
    lines (a JSON list works too). They are normalised to sum to 1."""
    text = open(path, encoding="utf-8").read().replace("[", " ").replace("]", " ")
    try:
        values = [float(v) for v in text.replace(",", " ").replace(";", " ").split()]
    except ValueError:
        raise UsageError(f"{path}: a prior is four numbers, the frequencies of grades 0-3") from None
    if len(values) != 4 or min(values) <= 0:
        raise UsageError(f"{path}: a prior is four positive numbers (grades 0-3), got {len(values)} values")
    return tuple(v / sum(values) for v in values)


def _graded(record: dict) -> list[dict]:
    return [c for c in record["corners"] if c["p"] is not None]


def target_prior(choice, records: list[dict]) -> tuple | None:
    """The prior the cohort's probabilities should assume (None: keep the model's own)."""
    if choice == "data":
        return None
    if choice == "uniform":
        return UNIFORM
    if choice == "em":  # every record of a run comes from one model, so one assumed prior
        known = [r for r in records if r.get("prior") is not None]
        probabilities = [c["p"] for r in known for c in _graded(r)]
        return em_prior(np.array(probabilities), np.array(known[0]["prior"])) if probabilities else None
    return tuple(choice)


def regrade(record: dict, prior: tuple, review_threshold: float, point_review: float) -> None:
    """The record's corner probabilities under ``prior``, and its grades, confidences and review
    reasons made again by the pipeline's rule (:func:`tfmssass.stages.grader.grades.grade_corners`)."""
    levels = anatomy.LEVELS[record["view"]]
    corners = record["corners"]
    p = np.array([change_prior(c["p"], record["prior"], prior) if c["p"] is not None else np.full(4, 0.25)
                  for c in corners], np.float32)
    point = np.array([record["levels"][lv]["point_confidence"] for lv in levels], np.float32)
    cut = np.array([record["levels"][lv]["cut"] for lv in levels], bool)
    grades, confidence, _, reason = (t.numpy() for t in grade_corners(p, point, cut, review_threshold, point_review))
    for k, c in enumerate(corners):
        if c["p"] is None:
            continue
        c.update(p=[round(float(v), 4) for v in p[k]], grade=int(grades[k]), confidence=round(float(confidence[k]), 4),
                 review=bool(reason[k]), code=int(reason[k]),
                 why=review_text(int(reason[k]), record["levels"][levels[k // 2]]["point_confidence"],
                                 review_threshold))
    flag_film_edge(record)
    record["prior"] = list(prior)


def decide(records: list[dict], not_used: dict, settings) -> Decoded:
    """Apply ``settings.prior`` and ``settings.longitudinal`` to the scored records in place.

    Every graded corner gets ``grade_independent`` (its grade from its radiograph alone); ``grade``
    becomes the longitudinal grade of the radiographs used, and ``p_grade`` the probability of that grade
    (the patient's visits together where they were decoded together, else this radiograph's). A corner
    whose grade the joint decoding changed is flagged for review, with the reason. Returns the decoding (change distributions).
    """
    scored = [r for r in records if r["status"] == Status.SCORED]
    prior = target_prior(settings.prior, [r for r in scored if r["file"] not in not_used])
    for r in scored:
        if prior is not None and r.get("prior") is not None:
            regrade(r, prior, settings.review_threshold, settings.point_review)
        for c in r["corners"]:
            c["grade_independent"] = c["grade"]
            c["p_grade"] = None if c["grade"] is None else c["p"][c["grade"]]
    table, entries = corner_table(scored)
    used = ~table["file"].isin(set(not_used)).to_numpy()
    frame = table[used].astype({"grade": float, "p0": float, "p1": float, "p2": float, "p3": float})
    decoded = decode_cohort(frame, settings.longitudinal, settings.decrease_cost)
    out = decoded.corners
    points = {(r["file"], lv): info["point_confidence"] for r in scored for lv, info in r["levels"].items()}
    for c, file, grade, chance, joint in zip((e for e, u in zip(entries, used) if u), frame["file"],
                                             out["grade_longitudinal"], out["p_longitudinal"], out["decoded"]):
        if c["grade"] is None or not joint:
            continue
        point = points[(file, c["level"])]
        c["p_grade"] = round(float(chance), 4)
        c["confidence"] = round(min(float(point), float(chance)), 4)
        if int(grade) != c["grade"]:
            c["grade"] = int(grade)
            add_review_reason(c, LONGITUDINAL, f"longitudinal: {c['grade_independent']} from this radiograph alone, "
                                               f"{int(grade)} with the patient's other visits")
    for r in scored:
        r["score"] = int(sum(c["grade"] for c in r["corners"] if c["grade"] is not None))
    return decoded
