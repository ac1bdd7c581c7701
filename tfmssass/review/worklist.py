"""What a review session reads: the radiographs of SOURCE, each with the reading it starts from.

SOURCE is either a scored folder (``score --out``: points and grades come from its records) or a
folder of radiographs (a label file, a model, or nothing pre-fills it). Every film keeps its path on
disk to itself; the page only ever names films by their place in the session, so no path a
browser sends can reach a file.

A reading is a dict of field → value (see :mod:`tfmssass.review.store`): ``view``, the points
``C2-C3_c``/``C2-C3_a``…, the corners ``C2_inf``…. A model's reading holds only what the model was
sure of: points of levels it cut, grades of corners it graded; the rest is left to the reader.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tfmssass.core import anatomy
from tfmssass.core.errors import UsageError
from tfmssass.core.geometry import CropSpec
from tfmssass.io import RadiographError, Skipped
from tfmssass.io.labels import NOT_GRADABLE as NG_CELL
from tfmssass.io.labels import corner_label, load_labels, resolve_image
from tfmssass.scoring.film import FilmRecord, Status
from tfmssass.scoring.folder import ScoredFolder
from tfmssass.scoring.inputs import (
    check_dicom_header,
    discover,
    identify,
    is_dicom,
)
from tfmssass.review.store import NOT_GRADABLE
from tfmssass.scoring.run import content_key


class SourceError(UsageError):
    """SOURCE cannot be reviewed; the message says why and what to do."""


@dataclass
class Film:
    """One radiograph of the session."""

    key: str  # its name in the review database and in exports: the file as the outputs wrote it
    path: Path  # on disk; never sent to the page
    patient_id: str
    visit_date: str | None
    view: str | None
    reading: dict | None = None  # the reading it starts from (None: not computed yet, see Worklist.reading)
    model: dict = field(default_factory=dict)  # per field: the model's confidence, review flag, probabilities


@dataclass
class Worklist:
    films: list[Film]
    roots: list[Path]  # the folders files may be served from
    crop: CropSpec
    note: str  # what pre-filled the readings (says when a model is phantom-trained)
    scored: bool
    pseudonymised: bool = False
    skipped: list[str] = field(default_factory=list)  # 'file: reason' of inputs left out
    predictor: object = None  # pre-fills films of a folder lazily (--model)


def view_fields(view: str) -> tuple[str, ...]:
    return anatomy.point_names(view) + anatomy.CORNERS[view]


def reading_from_record(record: FilmRecord) -> tuple[dict, dict]:
    """A scoring record → (reading, model details). Points only of levels the model cut, grades
    only of corners it graded, "not gradable" where it judged a corner so: a corner it could not grade
    stays open, never 0."""
    reading, model = {}, {}
    if record.view:
        reading["view"] = record.view
    for level, info in record.levels.items():
        for p in anatomy.POINTS:
            model[f"{level}_{p}"] = {"confidence": info.point_confidence}
            if info.cut:
                reading[f"{level}_{p}"] = [round(float(v), 2) for v in getattr(info, p)]
    for c in record.corners:
        model[c.corner] = {"confidence": c.confidence, "p_grade": c.p_grade, "review": bool(c.review),
                           "review_reason": c.review_reason, "p": c.p, "p_gradable": c.p_gradable}
        if c.grade is not None:
            reading[c.corner] = int(c.grade)
        elif c.not_gradable:
            reading[c.corner] = NOT_GRADABLE
    return reading, model


def reading_from_labels(row) -> dict:
    """A label row → reading. ``NG`` is 'not gradable'; a blank grade is left open (the reader decides)."""
    reading = {}
    view = row.get("view")
    if view in anatomy.VIEWS:
        reading["view"] = view
        for level in anatomy.LEVELS[view]:
            cx, cy, ax, ay = (row.get(col) for col in anatomy.keypoint_columns(level))
            if pd.notna(cx) and pd.notna(cy):
                reading[f"{level}_c"] = [float(cx), float(cy)]
            if pd.notna(ax) and pd.notna(ay):
                reading[f"{level}_a"] = [float(ax), float(ay)]
        for corner in anatomy.CORNERS[view]:
            label = corner_label(row, corner)
            if label is not None:
                reading[corner] = NOT_GRADABLE if label == NG_CELL else label
    return reading


def within(path: Path, roots: list[Path]) -> bool:
    """Whether ``path``, symbolic links followed, lies inside one of ``roots``."""
    real = Path(os.path.realpath(path))
    return any(real.is_relative_to(Path(os.path.realpath(root))) for root in roots)


def grader_crop(grader: dict) -> CropSpec:
    """The crops a grader sees, from its metadata (``metadata.json``'s ``grader``); defaults where
    it does not say."""
    return CropSpec(size=int(grader.get("input_size", CropSpec.size)),
                    extent=float(grader.get("extent", CropSpec.extent)),
                    clahe=bool(grader.get("clahe", CropSpec.clahe)),
                    depth_px=int(grader.get("patch_depth_px", CropSpec.depth_px)))


# ---- a scored folder ------------------------------------------------------------------------------

def _scored(source: Path, images: Path | None) -> Worklist:
    folder = ScoredFolder(source)
    folder.format_version()  # a folder written by a newer version is refused in one line
    settings = folder.settings()
    info = folder.source()
    pseudonymised = settings.salt_id is not None
    root = Path(images) if images else Path(info["root"]) if info.get("root") else None
    if root is None:
        why = "it is pseudonymised" if pseudonymised else "it was scored by an older version"
        raise SourceError(f"{source}: {why}, so it does not say where its radiographs are: "
                          "give the scored folder with --images DIR")
    by_content = {}
    if pseudonymised:  # file names are hashes: find each record's radiograph by its content
        files, _ = discover(root)
        by_content = {content_key(p): p for p in files}
    films, skipped = [], []
    records, _, _ = folder.decided_records(settings)  # the grades the tables show (prior, longitudinal)
    for record in records:
        if record.status == Status.SKIPPED or not record.patient_id:
            continue
        path = by_content.get(record.key) if pseudonymised else root / record.file
        if path is None or not path.is_file():
            skipped.append(f"{record.file}: radiograph not found under {root}")
            continue
        if not within(path, [root]):
            skipped.append(f"{record.file}: outside {root} (a link out?)")
            continue
        reading, model = reading_from_record(record)
        films.append(Film(record.file, path, record.patient_id, record.visit_date, record.view, reading, model))
    return Worklist(films, [source, root], grader_crop(info.get("grader", {})),
                    f"pre-filled by {settings.models_note}", True, pseudonymised, skipped)


# ---- a folder of radiographs ----------------------------------------------------------------------

def _header(path: Path) -> dict:
    """Patient, date and view hints from a file's header (DICOM), without decoding its pixels."""
    if not is_dicom(path):
        return {}
    from tfmssass.io.dicom import header_metadata

    check_dicom_header(path)
    return header_metadata(path)


def _folder(source: Path, labels_csv: Path | None, predictor, note: str) -> Worklist:
    roots = [source]
    rows = {}
    if labels_csv is not None:
        frame, _ = load_labels(labels_csv, check_images=False)
        roots.append(Path(labels_csv).resolve().parent)
        for _, row in frame.iterrows():
            rows[os.path.realpath(resolve_image(frame, row))] = row
    files, _ = discover(source)
    known = {os.path.realpath(p) for p in files}
    files += [Path(p) for p in rows if p not in known]
    films, skipped = [], []
    for path in files:
        name = path.relative_to(source).as_posix() if path.is_relative_to(source) else str(path)
        if not within(path, roots):
            skipped.append(f"{name}: outside {source} and the label file's folder (a link out?)")
            continue
        row = rows.get(os.path.realpath(path))
        try:
            meta = _header(path)
            if row is not None and row.get("patient_id") and row.get("visit_date"):
                ident = {"patient_id": str(row["patient_id"]), "visit_date": str(row["visit_date"]), "view": None}
            else:
                ident = identify(path, source, meta) if path.is_relative_to(source) else {}
        except Skipped:
            continue
        except (RadiographError, OSError) as exc:
            skipped.append(f"{name}: {getattr(exc, 'reason', exc)}")
            continue
        if row is not None:
            reading = reading_from_labels(row)
        else:  # None: the model reads it when it is first opened; {}: the reader starts from nothing
            reading = None if predictor is not None else {}
        view = (reading or {}).get("view") or ident.get("view")
        if reading is not None and view and "view" not in reading:
            reading["view"] = view
        films.append(Film(name, path, ident.get("patient_id", "?"), ident.get("visit_date"), view, reading))
    note = note or (f"pre-filled from {labels_csv}" if labels_csv else "labelled from scratch")
    return Worklist(films, roots, CropSpec(), note, False, skipped=skipped, predictor=predictor)


def open_worklist(source, labels_csv=None, images=None, predictor=None, note: str = "") -> Worklist:
    """The films of SOURCE with the readings they start from (see the module's docstring)."""
    source = Path(source).resolve()
    if not source.is_dir():
        raise SourceError(f"{source}: not a folder")
    if ScoredFolder(source).is_scored():
        if labels_csv or predictor is not None:
            raise SourceError(f"{source}: a scored folder is pre-filled by its own records "
                              "(--labels and models are for a folder of radiographs)")
        worklist = _scored(source, images)
    else:
        worklist = _folder(source, Path(labels_csv) if labels_csv else None, predictor, note)
        if predictor is not None:
            worklist.crop = grader_crop(predictor.metadata.get("grader", {}))
    if not worklist.films:
        raise SourceError(f"{source}: no radiographs to review" + (
            f" ({'; '.join(worklist.skipped[:3])})" if worklist.skipped else ""))
    return worklist


def ordered(films: list[Film], order: str, seed: int) -> list[Film]:
    """``known``: each patient's visits in time order; ``blinded``: a seeded shuffle (dates hidden
    by the page), the same for every reader of the folder."""
    films = sorted(films, key=lambda f: (f.patient_id, f.visit_date or "", f.view or "", f.key))
    if order == "blinded":
        random.Random(seed).shuffle(films)
    elif order != "known":
        raise UsageError(f"unknown reading order {order!r} (known or blinded)")
    return films
