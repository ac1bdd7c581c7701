"""mSASSS arithmetic: radiograph subtotals, visit totals with the missing-corner rule, progression.

A missing corner is never a 0. The usual convention (Creemers et al. 2005, used in the trials that
report mSASSS) imputes up to 3 missing corners of a segment (cervical or lumbar, 12 corners) with
the mean of that segment's graded corners at the same visit (``impute="mean"``); with more missing,
the segment and the total are left blank. ``impute="none"`` leaves any segment with a missing
corner blank.

``impute="visits"`` (the default) first looks at the same corner at the patient's other visits, as
longitudinal cohorts do: a corner hidden at one visit takes its grade from the nearest visits
before and after (their mean when they differ: lesions do not heal, so the truth lies between), or
from the one side graded. A segment-mean guess differs from visit to visit and so shows up in the
change between visits, which is what trials measure; a corner's own grades do not. Corners no
other visit graded fall back to the segment mean; the limit of 3 imputed corners counts both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfmssass.core import anatomy
from tfmssass.core.config import DEFAULT_IMPUTE, IMPUTE_CHOICES

#: At most this many corners of a segment may be imputed.
MAX_IMPUTED = 3
#: Smallest detectable change of mSASSS between two visits (the "progressed" threshold).
PROGRESSION_DELTA = 2.0
#: Decimals of what is shown: totals and changes are computed exactly and rounded once, on the way out
#: (:func:`for_output`), so every table and the report show the same numbers.
OUTPUT_DECIMALS = {"cervical": 2, "lumbar": 2, "msasss": 2, "delta": 2, "p_progressed": 4}

VISIT_COLUMNS = ["patient_id", "visit_date", "cervical", "lumbar", "msasss", "corners_graded",
                 "imputed", "complete"]
PROGRESSION_COLUMNS = ["patient_id", "from_date", "to_date", "years", "delta", "progressed", "p_progressed",
                       "new_syndesmophytes", "new_bridges"]


def segment_total(grades, impute: str = DEFAULT_IMPUTE, own=None) -> tuple[float | None, int, int]:
    """12 grades of one view (NaN = missing) → (total or None, graded, imputed). ``own``: each corner's
    grade from the patient's other visits (NaN where none), used first by ``impute="visits"``."""
    if impute not in IMPUTE_CHOICES:
        raise ValueError(f"impute must be one of {IMPUTE_CHOICES}")
    grades = np.asarray(grades, float)
    known = np.isfinite(grades)
    graded, missing = int(known.sum()), int((~known).sum())
    if missing == 0:
        return float(grades.sum()), graded, 0
    if impute == "none" or missing > MAX_IMPUTED or graded == 0:
        return None, graded, 0
    filled = grades[known].sum()
    if impute == "visits" and own is not None:
        own = np.asarray(own, float)
        from_visits = ~known & np.isfinite(own)
        filled, missing = filled + own[from_visits].sum(), missing - int(from_visits.sum())
    return float(filled + missing * grades[known].mean()), graded, int((~known).sum())


def grades_from_other_visits(corners: pd.DataFrame) -> pd.Series:
    """For each row: the same corner's grade at the patient's nearest graded visits before and after
    (their mean), or at the one side graded; NaN where no other visit graded it. Graded rows get
    their own grade (unused)."""
    ordered = corners.sort_values("visit_date", kind="stable")
    by_corner = ordered.groupby(["patient_id", "view", "corner"], sort=False)["grade"]
    before, after = by_corner.ffill(), by_corner.bfill()
    return pd.concat([before, after], axis=1).astype(float).mean(axis=1).reindex(corners.index)


def visit_totals(corners: pd.DataFrame, impute: str = DEFAULT_IMPUTE) -> pd.DataFrame:
    """Per patient and visit: cervical, lumbar and total mSASSS from the corners of the radiographs used.

    ``corners``: rows with patient_id, visit_date, view, corner, grade (NaN when not graded); one
    radiograph per view and visit (the caller chooses). A view without a radiograph is missing.
    """
    corners = corners.assign(own=grades_from_other_visits(corners) if impute == "visits" and len(corners) else np.nan)
    rows = []
    for (patient, date), visit in corners.groupby(["patient_id", "visit_date"], sort=True):
        out = {"patient_id": patient, "visit_date": date, "corners_graded": 0, "imputed": 0}
        for view in anatomy.VIEWS:
            in_view = visit[visit["view"] == view]
            grade_of = dict(zip(in_view["corner"], in_view["grade"]))
            own_of = dict(zip(in_view["corner"], in_view["own"]))
            grades = [grade_of.get(c, np.nan) for c in anatomy.CORNERS[view]]
            own = [own_of.get(c, np.nan) for c in anatomy.CORNERS[view]]
            total, graded, imputed = segment_total(grades, impute, own)
            out[view] = total
            out["corners_graded"] += graded
            out["imputed"] += imputed if total is not None else 0
        complete = out["cervical"] is not None and out["lumbar"] is not None
        out["msasss"] = out["cervical"] + out["lumbar"] if complete else None
        out["complete"] = complete
        rows.append(out)
    return pd.DataFrame(rows, columns=VISIT_COLUMNS)


def for_output(frame: pd.DataFrame) -> pd.DataFrame:
    """A visits or progression table rounded as every output shows it (:data:`OUTPUT_DECIMALS`)."""
    columns = {c: d for c, d in OUTPUT_DECIMALS.items() if c in frame.columns}
    rounded = frame.copy()
    for column, decimals in columns.items():
        rounded[column] = [None if pd.isna(v) else round(float(v), decimals) for v in frame[column]]
    return rounded


def _bridged_levels(grades: dict) -> set[str]:
    return {level for level in anatomy.ALL_LEVELS
            if all(grades.get(c) == 3 for c in anatomy.level_corners(level))}


def progression(visits: pd.DataFrame, corners: pd.DataFrame | None = None, chance=None) -> pd.DataFrame:
    """Between consecutive visits of each patient: interval, Δ mSASSS and new lesions.

    ``new_syndesmophytes``: corners graded at both visits that go from < 2 to ≥ 2.
    ``new_bridges``: disk spaces whose two corners are 3 at the later visit and were not both 3 at
    the earlier one. Δ and ``progressed`` are blank when either total is blank; the lesion counts
    are blank without ``corners`` (visit totals alone). ``p_progressed``: the probability that Δ ≥
    2, from ``chance(patient, from_date, to_date, delta, threshold)`` (blank without it).
    """
    rows = []
    grade_maps = {key: dict(zip(g["corner"], g["grade"]))
                  for key, g in corners.groupby(["patient_id", "visit_date"], sort=True)} if corners is not None else {}
    for patient, series in visits.sort_values("visit_date").groupby("patient_id", sort=True):
        series = series.reset_index(drop=True)
        for i in range(1, len(series)):
            before, after = series.iloc[i - 1], series.iloc[i]
            days = (pd.Timestamp(after["visit_date"]) - pd.Timestamp(before["visit_date"])).days
            delta = None
            if pd.notna(before["msasss"]) and pd.notna(after["msasss"]):
                delta = float(after["msasss"]) - float(before["msasss"])
            new_synd = new_bridges = None
            if corners is not None:
                g0 = grade_maps.get((patient, before["visit_date"]), {})
                g1 = grade_maps.get((patient, after["visit_date"]), {})
                both = [c for c in anatomy.ALL_CORNERS if pd.notna(g0.get(c)) and pd.notna(g1.get(c))]
                new_synd = sum(1 for c in both if g0[c] < 2 <= g1[c])
                new_bridges = len(_bridged_levels(g1) - _bridged_levels(g0))
            rows.append({
                "patient_id": patient, "from_date": before["visit_date"], "to_date": after["visit_date"],
                "years": round(days / 365.25, 2), "delta": delta,
                "progressed": None if delta is None else bool(delta >= PROGRESSION_DELTA),
                "p_progressed": None if chance is None else chance(patient, before["visit_date"], after["visit_date"],
                                                                   delta, PROGRESSION_DELTA),
                "new_syndesmophytes": new_synd, "new_bridges": new_bridges,
            })
    return pd.DataFrame(rows, columns=PROGRESSION_COLUMNS)
