"""``tfmssass review export``: one reader's readings, or the adjudicated ones, as a label file.

The file has the README's label format, so ``labels check`` accepts it and ``train`` reads it.
What was never read stays blank: a point nobody placed, a corner nobody graded, a disagreement the
adjudicator has not decided. 'Not gradable' is blank too, as the label format says.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tfmssass.core import anatomy
from tfmssass.core.errors import UsageError
from tfmssass.io.labels import empty_labels, write_labels
from tfmssass.review.session import agreed, disagreements
from tfmssass.review.store import ReviewStore
from tfmssass.review.worklist import Film, Worklist


def _start(film: Film, store: ReviewStore) -> dict:
    cached = store.prefill(film.key)  # a model's reading, computed when the film was opened
    return cached["reading"] if cached else film.reading or {}


def readings(worklist: Worklist, store: ReviewStore, reader: str | None) -> tuple[dict[str, dict], list[str]]:
    """{film key: reading} of one reader, or adjudicated (``reader=None``); and warnings."""
    out, warnings = {}, []
    if reader is not None:
        if reader not in store.readers("reader"):
            raise UsageError(f"{store.path}: no reader {reader!r} (readers: {', '.join(store.readers()) or 'none'})")
        values = store.values(reader)
        return {f.key: {**_start(f, store), **values.get(f.key, {})} for f in worklist.films}, warnings
    pair, judges = store.readers("reader"), store.readers("adjudicator")
    if len(pair) != 2 or len(judges) != 1:
        raise UsageError(f"{store.path}: an adjudicated export needs two readers and one adjudicator "
                         f"(found readers {pair}, adjudicators {judges})")
    a_values, b_values, decided = store.values(pair[0]), store.values(pair[1]), store.values(judges[0])
    undecided = 0
    for film in worklist.films:
        a = {**_start(film, store), **a_values.get(film.key, {})}
        b = {**_start(film, store), **b_values.get(film.key, {})}
        own = decided.get(film.key, {})
        undecided += len(set(disagreements(a, b)) - set(own))
        out[film.key] = {**agreed(a, b), **own}
    if undecided:
        warnings.append(f"{undecided} disagreements not adjudicated yet: left blank")
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
        row[corner] = grade if isinstance(grade, int) else None
        read_any |= grade is not None
    return row if read_any else None


def export_labels(worklist: Worklist, store: ReviewStore, out, reader: str | None = None) -> tuple[int, list[str]]:
    """Write the label file atomically; returns (rows written, warnings)."""
    out = Path(out)
    found, warnings = readings(worklist, store, reader)
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
