"""``report.html``: one self-contained page to check a scoring run (no scripts, no network).

Corners that need a human look come first, then per patient the visits with their totals, a
progression plot (inline SVG), a strip of crops across the visits for every corner whose grade
changes, the overlays (PNG files beside the page) and every corner's grade with its probabilities;
inputs that were not scored close the page.
"""

from __future__ import annotations

import datetime as _dt
from html import escape

import pandas as pd

from tfmssass.core.atomic import write_text
from tfmssass.scoring.records import CROP_PX

STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:2px 6px;font-size:13px;text-align:left}
th{background:#eee}
.warn{background:#fde2e2;border:2px solid #c00;padding:.6em;font-weight:bold}
.review{background:#fff3cd}
.g0{color:#2e7d32}.g1{color:#b38f00}.g2{color:#e65100}.g3{color:#c62828;font-weight:bold}
img.overlay{max-width:480px;border:1px solid #999;margin:4px}
details{margin:.3em 0}
.strip{display:flex;gap:6px;align-items:flex-start;margin:4px 0 10px}
.strip .name{width:6em;font-size:13px;font-weight:bold}
.crop{width:96px;height:96px;border:1px solid #999;background-repeat:no-repeat}
figure{margin:0;font-size:12px;text-align:center}
"""


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "<td></td>"
    if isinstance(value, float):
        return f"<td>{value:g}</td>"
    return f"<td>{escape(str(value))}</td>"


def _table(frame: pd.DataFrame, columns: list[str]) -> str:
    """A plain table by pandas (escaped; a blank value is a blank cell, never "None" or "nan"). The
    corner tables below are written by hand: they mark single rows and cells (review, grade colour),
    which ``to_html`` cannot."""
    shown = frame[columns].astype(object)
    return shown.where(shown.notna(), "").to_html(index=False, float_format="{:g}".format, border=0)


def progression_svg(visits: pd.DataFrame, width: int = 360, height: int = 180) -> str:
    """mSASSS over time as an inline SVG line plot (visits without a total are left out)."""
    known = visits.dropna(subset=["msasss"])
    if known.empty:
        return "<p>No visit has a complete mSASSS to plot.</p>"
    dates = pd.to_datetime(known["visit_date"])
    years = ((dates - dates.min()).dt.days / 365.25).to_numpy()
    values = known["msasss"].astype(float).to_numpy()
    span_x = max(years.max(), 1.0)
    top = max(10.0, float(values.max()) + 2)
    left, bottom, pad = 40, height - 30, 12

    def xy(t, v):
        return left + (width - left - pad) * t / span_x, bottom - (bottom - pad) * v / top

    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(t, v) for t, v in zip(years, values)))
    marks = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"><title>{escape(d)}: {v:g}</title></circle>'
                    for (x, y), d, v in zip((xy(t, v) for t, v in zip(years, values)), known["visit_date"], values))
    ticks = "".join(f'<text x="4" y="{xy(0, v)[1] + 4:.1f}" font-size="10">{v:g}</text>'
                    for v in (0, round(top / 2), round(top)))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="mSASSS over time">'
            f'<line x1="{left}" y1="{bottom}" x2="{width - pad}" y2="{bottom}" stroke="#444"/>'
            f'<line x1="{left}" y1="{pad}" x2="{left}" y2="{bottom}" stroke="#444"/>{ticks}'
            f'<text x="{left}" y="{height - 8}" font-size="11">years since {escape(known["visit_date"].iloc[0])}'
            f' (span {years.max():.1f})</text>'
            f'<polyline points="{points}" fill="none" stroke="#1565c0" stroke-width="2"/>{marks}</svg>')


def _corner_table(record: dict) -> str:
    rows = []
    for c in record["corners"]:
        p = c["p"] or [None] * 4
        grade = "&ndash;" if c["grade"] is None else str(c["grade"])
        css = ' class="review"' if c["review"] else ""
        cls = "" if c["grade"] is None else f' class="g{c["grade"]}"'
        why = c.get("why") or ""
        rows.append(f"<tr{css}><td>{escape(c['level'])}</td><td>{escape(c['corner'])}</td><td{cls}>{grade}</td>"
                    + _cell(c.get("grade_independent")) + "".join(_cell(v) for v in p) + _cell(c["confidence"])
                    + f"<td>{'yes' if c['review'] else ''} {escape(why)}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("level", "corner", "grade", "alone", "p0", "p1", "p2", "p3",
                                               "confidence", "review"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _changing_corners(records: list[dict]) -> str:
    """Per corner whose grade changes over the patient's visits (or that the joint decoding
    changed), its crops side by side in visit order, each with its grade (and its grade alone)."""
    by_corner: dict[str, list] = {}
    for r in sorted(records, key=lambda r: r["visit_date"]):
        for k, c in enumerate(r["corners"]):
            by_corner.setdefault(c["corner"], []).append((r, k, c))
    strips = []
    for corner, course in by_corner.items():
        grades = [c["grade"] for _, _, c in course if c["grade"] is not None]
        repaired = any(c.get("grade_independent") != c["grade"] for _, _, c in course)
        if len(set(grades)) < 2 and not repaired:
            continue
        cells = []
        for r, k, c in course:
            grade = "&ndash;" if c["grade"] is None else str(c["grade"])
            alone = c.get("grade_independent")
            note = f" (alone {alone})" if alone is not None and alone != c["grade"] else ""
            picture = (f'<div class="crop" role="img" aria-label="{escape(corner)} on {escape(r["visit_date"])}" '
                       f'style="background-image:url(\'{escape(r["crops"])}\');background-position:-{k * CROP_PX}px 0">'
                       "</div>" if r.get("crops") else '<div class="crop"></div>')
            cells.append(f"<figure>{picture}<figcaption>{escape(r['visit_date'])}: "
                         f'<span class="g{c["grade"]}">{grade}</span>{note}</figcaption></figure>')
        strips.append(f'<div class="strip"><div class="name">{escape(corner)}</div>{"".join(cells)}</div>')
    if not strips:
        return ""
    return f"<h3>Corners that change ({len(strips)})</h3>" + "".join(strips)


def render_report(records: list[dict], visits: pd.DataFrame, changes: pd.DataFrame,
                  not_used: dict[str, str], settings, run_id: str | None = None) -> str:
    scored = [r for r in records if r["status"] == "scored"]
    problems = [r for r in records if r["status"] != "scored"]
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mSASSS report</title>"
             f"<style>{STYLE}</style></head><body><h1>mSASSS scoring report</h1>"]
    if settings.phantom:
        parts.append(f'<p class="warn">{escape(settings.models_note)}</p>')
    parts.append(
        f"<p>Models: {escape(settings.models)}. {len(scored)} radiographs scored, {len(problems)} inputs "
        f"not scored. Missing corners: {'up to 3 per segment imputed with the mean of the segment' if settings.impute == 'mean' else 'not imputed'}"
        f"; a segment with more missing corners is left blank. Generated {_dt.date.today().isoformat()}"
        + (f" by run {escape(run_id)}" if run_id else "") + ".</p>")
    longitudinal = {"monotone": "graded together: a corner's grade never goes down between visits",
                    "soft": f"graded together: a corner's grade may go down at a cost of {settings.decrease_cost:g}",
                    "off": "each graded alone"}[settings.longitudinal]
    parts.append(f"<p>Grade probabilities are calibrated and assume {escape(settings.prior_text)}. A patient's "
                 f"visits are {longitudinal}; &ldquo;alone&rdquo; is a corner's grade from its radiograph alone, "
                 "and a grade the visits changed is flagged for review. p_progressed is the probability that "
                 "the mSASSS rose by 2 or more.</p>")

    review = [(c["confidence"] if c["confidence"] is not None else -1.0, r["file"], r, c)
              for r in scored for c in r["corners"] if c["review"]]
    review.sort(key=lambda t: (t[0], t[1]))
    parts.append(f"<h2>Corners to review ({len(review)})</h2>")
    if review:
        rows = "".join(
            f"<tr class=\"review\"><td>{escape(r['file'])}</td><td>{escape(r['patient_id'])}</td>"
            f"<td>{escape(r['visit_date'])}</td><td>{escape(c['corner'])}</td>"
            f"<td>{'&ndash;' if c['grade'] is None else c['grade']}</td>{_cell(c['confidence'])}"
            f"<td>{escape(c.get('why') or '')}</td></tr>" for _, _, r, c in review)
        parts.append("<table><tr><th>file</th><th>patient</th><th>visit</th><th>corner</th><th>grade</th>"
                     f"<th>confidence</th><th>note</th></tr>{rows}</table>")
    else:
        parts.append("<p>None.</p>")

    for patient, pv in visits.groupby("patient_id", sort=True):
        parts.append(f"<h2>Patient {escape(str(patient))}</h2>")
        parts.append(_table(pv, ["visit_date", "cervical", "lumbar", "msasss", "corners_graded", "imputed",
                                 "complete"]))
        pc = changes[changes["patient_id"] == patient]
        if not pc.empty:
            parts.append(_table(pc, ["from_date", "to_date", "years", "delta", "progressed", "p_progressed",
                                     "new_syndesmophytes", "new_bridges"]))
        parts.append(progression_svg(pv))
        counted = [r for r in scored if r["patient_id"] == patient and r["file"] not in not_used]
        parts.append(_changing_corners(counted))
        for r in (r for r in scored if r["patient_id"] == patient):
            used = not_used.get(r["file"], "")
            parts.append(f"<h3>{escape(r['visit_date'])} &middot; {escape(r['view'])} &middot; "
                         f"{escape(r['file'])}: subtotal {r['score']} ({r['corners_graded']}/12 graded)</h3>")
            if used:
                parts.append(f"<p>{escape(used)}</p>")
            if r.get("overlay"):
                parts.append(f'<a href="{escape(r["overlay"])}" title="full size"><img class="overlay" loading="lazy" '
                             f'src="{escape(r["overlay"])}" alt="overlay of {escape(r["file"])}"></a>')
            parts.append(f"<details><summary>corner grades</summary>{_corner_table(r)}</details>")

    parts.append(f"<h2>Inputs not scored ({len(problems)})</h2>")
    if problems:
        parts.append(_table(pd.DataFrame(problems), ["file", "reason"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path, records, visits, changes, not_used, settings, run_id: str | None = None) -> None:
    write_text(path, render_report(records, visits, changes, not_used, settings, run_id))
