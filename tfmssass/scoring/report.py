"""``report.html``: one self-contained page to check a scoring run (no scripts, no network).

Corners that need a human look come first, then per patient the visits with their totals, a
progression plot (inline SVG), a strip of crops across the visits for every corner whose grade
changes, the overlays (PNG files beside the page, each a link to itself at full size) and every
corner's grade with the probability of that grade and why it is flagged; inputs that were not
scored close the page. The page is the Jinja2 template ``templates/report.html.j2``, autoescaped.
A summary on top says what a trial needs first: how many visits have an mSASSS, why the others have
none, and the change between visits.
"""

from __future__ import annotations

import datetime as _dt
import math

import jinja2
import pandas as pd

from tfmssass.core import anatomy
from tfmssass.core.atomic import write_text
from tfmssass.scoring.film import FilmRecord
from tfmssass.scoring.record_maker import CROP_PX
from tfmssass.scoring.totals import PROGRESSION_DELTA

VISIT_COLUMNS = ["visit_date", "cervical", "lumbar", "msasss", "corners_graded", "imputed", "complete"]
CHANGE_COLUMNS = ["from_date", "to_date", "years", "delta", "progressed", "p_progressed", "new_syndesmophytes",
                  "new_bridges"]
LONGITUDINAL_TEXT = {"monotone": "graded together: a corner's grade never goes down between visits",
                     "soft": "graded together: a corner's grade may go down at a cost of {cost:g}",
                     "off": "each graded alone"}


def number(value) -> str:
    """A table cell: blank for a missing value (never "None" or "nan"), yes/no, numbers as the tables hold them."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """"1 radiograph", "2 radiographs": the report's words and the terminal's."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


_ENVIRONMENT = jinja2.Environment(loader=jinja2.PackageLoader("tfmssass.scoring", "templates"),
                                  autoescape=True, trim_blocks=True,
                                  lstrip_blocks=True)
_ENVIRONMENT.filters.update(number=number, count=count)


def _rows(frame: pd.DataFrame) -> list[dict]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def progression_plot(visits: pd.DataFrame, width: int = 360, height: int = 180) -> dict | None:
    """Coordinates of the mSASSS-over-time plot (visits without a total left out); None without any."""
    known = visits.dropna(subset=["msasss"])
    if known.empty:
        return None
    dates = pd.to_datetime(known["visit_date"])
    years = ((dates - dates.min()).dt.days / 365.25).to_numpy()
    values = known["msasss"].astype(float).to_numpy()
    span_x = max(years.max(), 1.0)
    top = max(10.0, float(values.max()) + 2)
    left, bottom, pad = 40, height - 30, 12

    def xy(t, v):
        return round(left + (width - left - pad) * t / span_x, 1), round(bottom - (bottom - pad) * v / top, 1)

    marks = [(*xy(t, v), d, v) for t, v, d in zip(years, values, known["visit_date"])]
    return {"width": width, "height": height, "left": left, "right": width - pad, "top": pad, "bottom": bottom,
            "ticks": [(round(xy(0, v)[1] + 4, 1), v) for v in (0, round(top / 2), round(top))],
            "points": " ".join(f"{x},{y}" for x, y, _, _ in marks), "marks": marks,
            "first": known["visit_date"].iloc[0], "span": f"{years.max():.1f}"}


def changing_corners(films: list[FilmRecord]) -> list[dict]:
    """Per corner whose grade changes between the patient's visits: its course in visit order as
    (film, index in the crop strip, corner). A corner whose grade stays the same is not listed, even
    where the visits together changed its grade alone (that corner is flagged for review)."""
    by_corner: dict[str, list] = {}
    for f in sorted(films, key=lambda f: f.visit_date):
        for k, c in enumerate(f.corners):
            by_corner.setdefault(c.corner, []).append((f, k, c))
    return [{"corner": corner, "course": course} for corner, course in by_corner.items()
            if len({c.grade for _, _, c in course if c.grade is not None}) >= 2]


def _percent(part: int, whole: int) -> str:
    return f"{part} of {whole} ({100 * part / whole:.0f}%)" if whole else "0"


def run_summary(films: list[FilmRecord], visits: pd.DataFrame, changes: pd.DataFrame,
                not_used: dict[str, str]) -> list[tuple[str, str]]:
    """(what, how many) rows: the visits with an mSASSS and why the others have none, then the change
    between consecutive visits. A visit counts once any of its inputs names its patient and date."""
    read = {(f.patient_id, f.visit_date, f.view) for f in films if f.scored and f.file not in not_used}
    known = {(f.patient_id, f.visit_date) for f in films if f.patient_id and f.visit_date}
    total_of = {(r["patient_id"], r["visit_date"]): r["msasss"] for r in visits.to_dict("records")}
    with_total = {v for v in known if pd.notna(total_of.get(v))}
    view_missing = {v for v in known - with_total if any((*v, view) not in read for view in anatomy.VIEWS)}
    rows = [("patients", str(len({patient for patient, _ in known}))),
            ("visits with an mSASSS", _percent(len(with_total), len(known))),
            ("visits without: a view not scored (refused, unreadable or not given)", str(len(view_missing))),
            ("visits without: a segment with more than 3 corners not graded",
             str(len(known) - len(with_total) - len(view_missing)))]
    delta = pd.to_numeric(changes["delta"], errors="coerce").dropna()
    rows.append(("intervals between consecutive visits with both totals", _percent(len(delta), len(changes))))
    if len(delta):
        years = pd.to_numeric(changes.loc[delta.index, "years"], errors="coerce").mean()
        spread = f", SD {delta.std(ddof=1):.2f}" if len(delta) > 1 else ""
        rows += [("Δ mSASSS per interval", f"mean {delta.mean():+.2f}{spread}, over {years:.1f} years on average"),
                 (f"intervals with Δ ≥ {PROGRESSION_DELTA:g} (progressed)",
                  _percent(int((delta >= PROGRESSION_DELTA).sum()), len(delta)))]
    return rows


def render_report(films: list[FilmRecord], visits: pd.DataFrame, changes: pd.DataFrame,
                  not_used: dict[str, str], settings, run_id: str | None = None) -> str:
    scored = [f for f in films if f.scored]
    problems = [f for f in films if not f.scored]
    review = sorted(((f, c) for f in scored for c in f.corners if c.review),
                    key=lambda fc: (-1.0 if fc[1].p_grade is None else fc[1].p_grade, fc[0].file))
    patients = []
    for patient, pv in visits.groupby("patient_id", sort=True):
        mine = [f for f in scored if f.patient_id == patient]
        patients.append({"id": patient, "visits": _rows(pv), "plot": progression_plot(pv),
                         "changes": _rows(changes[changes["patient_id"] == patient]),
                         "strips": changing_corners([f for f in mine if f.file not in not_used]),
                         "films": mine})
    together = settings.longitudinal != "off"
    return _ENVIRONMENT.get_template("report.html.j2").render(
        settings=settings, scored=scored, problems=problems, review=review, patients=patients, not_used=not_used,
        summary=run_summary(films, visits, changes, not_used),
        run_id=run_id, today=_dt.date.today().isoformat(), crop_px=CROP_PX, progression_delta=PROGRESSION_DELTA,
        longitudinal=LONGITUDINAL_TEXT[settings.longitudinal].format(cost=settings.decrease_cost),
        probability_name="probability of this grade" + (", visits together" if together else ""),
        visit_columns=VISIT_COLUMNS, change_columns=CHANGE_COLUMNS)


def write_report(path, films, visits, changes, not_used, settings, run_id: str | None = None) -> None:
    write_text(path, render_report(films, visits, changes, not_used, settings, run_id))
