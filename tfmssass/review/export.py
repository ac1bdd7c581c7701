"""``tfmssass review export``: one reader's readings, or the adjudicated ones, as a label file.

The file has the README's label format, so ``labels check`` accepts it and ``train`` reads it.
It holds only what a reader decided: a value the reader set, or a pre-filled value the reader
confirmed (:mod:`tfmssass.review.store`). A pre-fill nobody looked at (the model's grades, a label
file's points) is left out, so a model's guesses never come back as a reader's labels; with
``include_prefill`` they are written too, and counted. What was never read stays blank: a point
nobody placed, a corner nobody graded, a disagreement the adjudicator has not decided. A corner a
reader called not gradable is ``NG``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tfmssass.core import anatomy
from tfmssass.core.errors import UsageError
from tfmssass.io.labels import NOT_GRADABLE as NOT_GRADABLE_CELL
from tfmssass.io.labels import empty_labels, write_labels
from tfmssass.review.session import agreed, disagreements, undecided
from tfmssass.review.store import NOT_GRADABLE, ReviewStore
from tfmssass.review.worklist import Film, Worklist


def _start(film: Film, store: ReviewStore) -> dict:
    cached = store.prefill(film.key)  # a model's reading, computed when the film was opened
    return cached["reading"] if cached else film.reading or {}


class _Readings:
    """What goes into the export of a film: values a reader set or confirmed; the pre-fills nobody decided
    only when asked (and counted); the view always (it places the columns; the page shows it as the film's)."""

    def __init__(self, store: ReviewStore, include_prefill: bool):
        self.store, self.include_prefill, self.prefills = store, include_prefill, 0

    def keep(self, reading: dict, decided) -> dict:
        """``reading`` without the fields nobody decided (``decided``: the fields someone set or confirmed)."""
        prefills = undecided(reading, decided)
        if self.include_prefill:
            self.prefills += len(prefills)
            return reading
        return {name: value for name, value in reading.items() if name not in prefills}

    def of(self, film: Film, own: dict) -> dict:
        return self.keep({**_start(film, self.store), **own}, own)


def readings(worklist: Worklist, store: ReviewStore, reader: str | None,
             include_prefill: bool = False) -> tuple[dict[str, dict], list[str]]:
    """{film key: reading} of one reader, or adjudicated (``reader=None``); and warnings."""
    out, warnings = {}, []
    seen = _Readings(store, include_prefill)
    if reader is not None:
        if reader not in store.readers("reader"):
            raise UsageError(f"{store.path}: no reader {reader!r} (readers: {', '.join(store.readers()) or 'none'})")
        values = store.values(reader)
        out = {f.key: seen.of(f, values.get(f.key, {})) for f in worklist.films}
    else:
        pair, judges = store.readers("reader"), store.readers("adjudicator")
        if len(pair) != 2 or len(judges) != 1:
            raise UsageError(f"{store.path}: an adjudicated export needs two readers and one adjudicator "
                             f"(found readers {pair}, adjudicators {judges})")
        a_values, b_values, decided = store.values(pair[0]), store.values(pair[1]), store.values(judges[0])
        not_adjudicated = 0
        for film in worklist.films:  # agreement as the adjudicator saw it: each reader's reading on the page
            a_own, b_own = a_values.get(film.key, {}), b_values.get(film.key, {})
            a, b = ({**_start(film, store), **values} for values in (a_own, b_own))
            own = decided.get(film.key, {})
            not_adjudicated += len(set(disagreements(a, b)) - set(own))
            out[film.key] = {**seen.keep(agreed(a, b), set(a_own) | set(b_own)), **own}
        if not_adjudicated:
            warnings.append(f"{not_adjudicated} disagreements not adjudicated yet: left blank")
    if include_prefill:
        warnings.append(f"--include-prefill: {seen.prefills} pre-filled values nobody confirmed are written "
                        "as if read (model or label-file values)")
    return out, warnings


def _row(film: Film, reading: dict, image: str) -> dict | None:
    view = reading.get("view")
    if view not in anatomy.VIEWS:
        return None
    row = {"image": image, "patient_id": film.patient_id, "visit_date": film.visit_date, "view": view}
    read_any = False
    for level in anatomy.LEVELS[view]:
        cx, cy, ax, ay = anatomy.keypoint_columns(level)
        for (col_x, col_y), name in (((cx, cy), f"{level}_c"), ((ax, ay), f"{level}_a")):
            point = reading.get(name)
            ok = isinstance(point, list)
            row[col_x], row[col_y] = (point[0], point[1]) if ok else (np.nan, np.nan)
            read_any |= ok
    for corner in anatomy.CORNERS[view]:
        grade = reading.get(corner)
        row[corner] = NOT_GRADABLE_CELL if grade == NOT_GRADABLE else grade if isinstance(grade, int) else None
        read_any |= grade is not None
    return row if read_any else None


def export_labels(worklist: Worklist, store: ReviewStore, out, reader: str | None = None,
                  include_prefill: bool = False) -> tuple[int, list[str]]:
    """Write the label file atomically; returns (rows written, warnings)."""
    out = Path(out)
    found, warnings = readings(worklist, store, reader, include_prefill)
    frame = empty_labels(0)
    rows = []
    for film in worklist.films:
        if worklist.pseudonymised:
            image = film.key  # the pseudonym: the export must not name the file
        else:
            image = os.path.relpath(film.path.resolve(), out.resolve().parent)
        row = _row(film, found.get(film.key, {}), image)
        if row is not None:
            row["reader"] = reader or "adjudicated"
            rows.append(row)
    if rows:
        import pandas as pd

        frame = pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)
    if worklist.pseudonymised:
        warnings.append("pseudonymised: the image column holds pseudonyms, not paths")
    write_labels(frame, out)
    return len(rows), warnings
