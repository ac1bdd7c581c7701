"""What is decided from the whole scored cohort, after every radiograph has its record: the prior of
grades (``score --prior``) and the joint decoding of each patient's visits (``score
--longitudinal``).

The records on disk keep what the model said of each radiograph alone; these decisions are made
again from them whenever the tables are written, so a resumed run and a fresh one agree.

- ``--prior tempered`` (default): the training cohort's grade frequencies flattened, each to the
  power :data:`~tfmssass.core.config.PRIOR_POWER` and renormalised. Under the training cohort's own
  frequencies (``data``), where a film says little (noise, the shoulders' density) the most probable
  grade is the commonest, 0, so visit totals read low: by 0.5 on the hard phantom cohorts of
  bench/RESULTS.md. Halfway to uniform in log terms, the totals read within 0.1 of the truth on
  average there and on realistic cohorts, at the same change agreement and corner accuracy.
- ``data``: the model's probabilities as they are, under its training cohort's grade frequencies
  (the default before issue 29's fifteenth pass). ``uniform``: as if every grade were equally
  common (what balanced training assumed). A FILE of four frequencies: a cohort known to be
  different. ``em``: the scored cohort's own frequencies, estimated from its probabilities (Saerens
  et al. 2002); for a large cohort (hundreds of radiographs) whose stage of disease differs from the
  training data.
- The per-corner grades are then made again by the model's own rule (bridge, review flags), and
  decoded over visits (:mod:`tfmssass.scoring.longitudinal`). Read together, a radiograph that
  contradicts the patient's other visits of its view is first left out: its corners lose their grade
  and go to review (its levels may be on the wrong vertebrae).
"""

from __future__ import annotations

import numpy as np

from tfmssass.core import anatomy
from tfmssass.core.config import PRIOR_POWER
from tfmssass.core.errors import UsageError
from tfmssass.scoring.film import FilmRecord, corner_table
from tfmssass.scoring.longitudinal import CONTRADICTION_LIMIT, Decoded, contradicting_films, decode_cohort
from tfmssass.scoring.record_maker import count_graded, flag_film_edge, review_text
from tfmssass.stages.grader.calibration import UNIFORM, change_prior, em_prior
from tfmssass.stages.grader.grades import CONTRADICTS_VISITS, LONGITUDINAL, grade_again

PRIOR_CHOICES = ("tempered", "data", "uniform", "em")


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


def target_prior(choice, films: list[FilmRecord]) -> tuple | None:
    """The prior the cohort's probabilities should assume (None: keep the model's own)."""
    if choice == "data":
        return None
    if choice == "uniform":
        return UNIFORM
    known = [f for f in films if f.prior is not None]  # every record of a run comes from one model
    if choice == "tempered":  # a model that does not say its prior is kept as it is
        return tempered(known[0].prior) if known else None
    if choice == "em":
        probabilities = [c.p for f in known for c in f.graded_corners()]
        return em_prior(np.array(probabilities), np.array(known[0].prior)) if probabilities else None
    return tuple(choice)


def tempered(prior) -> tuple:
    """``prior`` to the power :data:`PRIOR_POWER`, renormalised."""
    flat = np.asarray(prior, float) ** PRIOR_POWER
    return tuple(float(v) for v in flat / flat.sum())


def regrade(film: FilmRecord, prior: tuple, review_threshold: float, point_review: float) -> None:
    """The film's corner probabilities under ``prior``, and its grades, confidences and review
    reasons made again by the pipeline's rule, with the model's gradability calls kept (the prior does
    not change them: :func:`tfmssass.stages.grader.grades.grade_again`)."""
    levels = [film.levels[lv] for lv in anatomy.LEVELS[film.view]]
    p = np.array([change_prior(c.p, film.prior, prior) if c.p is not None else np.full(4, 0.25)
                  for c in film.corners], np.float32)
    point = np.array([lv.point_confidence for lv in levels], np.float32)
    cut = np.array([lv.cut for lv in levels], bool)
    gradable = np.array([1.0 if c.p_gradable is None else c.p_gradable for c in film.corners], np.float32)
    grades, confidence, _, codes = grade_again(p, point, cut, review_threshold, point_review,
                                               [c.review_code for c in film.corners])
    for k, c in enumerate(film.corners):
        if c.p is None:  # not cut, or not gradable: the prior changes nothing
            continue
        code = int(codes[k])
        c.p, c.grade, c.confidence = [round(float(v), 4) for v in p[k]], int(grades[k]), round(float(confidence[k]), 4)
        c.review, c.review_code = bool(code), code
        c.review_reason = review_text(code, levels[k // 2].point_confidence, review_threshold, gradable[k])
    flag_film_edge(film)
    film.prior = list(prior)


def leave_out_contradicting(films: list[FilmRecord], table, not_used: dict) -> None:
    """Add to ``not_used`` the radiographs whose grades contradict the patient's other radiographs of the
    view (:func:`~tfmssass.scoring.longitudinal.contradicting_films`). Their corners lose their grade
    (``grade_independent`` keeps what the radiograph alone says) and go to review: a reader should see
    where the levels were placed before any grade of theirs counts."""
    against = contradicting_films(table)
    for f in films:
        if f.file not in against:
            continue
        why = (f"the {f.view} radiograph contradicts the patient's other visits (log-likelihood ratio "
               f"{against[f.file]:.0f}, limit {CONTRADICTION_LIMIT:.0f}): its levels may be on the wrong vertebrae")
        not_used[f.file] = f"not used: {why}; check where its levels were placed"
        for c in f.corners:
            if c.grade is not None:
                c.grade, c.p_grade = None, None
                c.add_review(CONTRADICTS_VISITS, why)


def decide(films: list[FilmRecord], not_used: dict, settings) -> Decoded:
    """Apply ``settings.prior`` and ``settings.longitudinal`` to the scored films in place.

    Every graded corner gets ``grade_independent`` (its grade from its radiograph alone); ``grade``
    becomes the longitudinal grade of the radiographs used, and ``p_grade`` the probability of that grade
    (the patient's visits together where they were decoded together, else this radiograph's). A corner
    whose grade the joint decoding changed is flagged for review, with the reason. Read together, the
    radiographs that contradict the patient's other visits are added to ``not_used`` first
    (:func:`leave_out_contradicting`). Returns the decoding (change distributions).
    """
    scored = [f for f in films if f.scored]
    prior = target_prior(settings.prior, [f for f in scored if f.file not in not_used])
    for f in scored:
        if prior is not None and f.prior is not None:
            regrade(f, prior, settings.review_threshold, settings.point_review)
        for c in f.corners:
            c.grade_independent = c.grade
            c.p_grade = None if c.grade is None else c.p[c.grade]
    table, entries = corner_table(scored)
    table = table.astype({"grade": float, "p0": float, "p1": float, "p2": float, "p3": float})
    if settings.longitudinal != "off":
        leave_out_contradicting(scored, table[~table["file"].isin(set(not_used))], not_used)
    used = ~table["file"].isin(set(not_used)).to_numpy()
    frame = table[used]
    decoded = decode_cohort(frame, settings.longitudinal, settings.decrease_cost)
    out = decoded.corners
    points = {(f.file, name): lv.point_confidence for f in scored for name, lv in f.levels.items()}
    for c, file, grade, chance, joint in zip((e for e, u in zip(entries, used) if u), frame["file"],
                                             out["grade_longitudinal"], out["p_longitudinal"], out["decoded"]):
        if c.grade is None or not joint:
            continue
        point = points[(file, c.level)]
        c.p_grade = round(float(chance), 4)
        c.confidence = round(min(float(point), float(chance)), 4)
        if int(grade) != c.grade:
            c.grade = int(grade)
            c.add_review(LONGITUDINAL, f"longitudinal: {c.grade_independent} from this radiograph alone, "
                                       f"{int(grade)} with the patient's other visits")
    for f in scored:
        count_graded(f)
    return decoded
