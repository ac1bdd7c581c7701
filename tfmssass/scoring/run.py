"""``tfmssass score DIR``: every radiograph in a folder → per-corner grades, per-visit mSASSS,
progression between visits, overlays and a report.

Flow: files are read by a small thread pool a few radiographs ahead of the model work (reading
and decoding DICOM hides behind the networks). Per radiograph, stage 1 finds the disk points, the
levels are cut and turned into canonical corner crops, and the crops of several radiographs go
through the grader in one batch. Each finished radiograph is written as one small record
(atomically, :class:`~tfmssass.scoring.folder.ScoredFolder`); the CSVs and the report are rebuilt
from the records at the end. So a run killed at any moment and started again with ``--resume`` skips
what is done and ends with the same files as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from tfmssass.core.atomic import atomic_path
from tfmssass.core.config import DECODE_SECONDS, PENDING_PIXELS, READ_PIXELS
from tfmssass.io import RadiographError, Skipped, check_file, declared_pixels, read_radiograph
from tfmssass.scoring.film import FilmRecord, Status, corner_table
from tfmssass.scoring.folder import ScoredFolder
from tfmssass.scoring.inputs import (
    as_stored,
    check_dicom_header,
    discover,
    header_upright,
    identify,
    is_dicom,
    read_meta_table,
)
from tfmssass.scoring.read_ahead import read_ahead
from tfmssass.scoring.record_maker import Item, RecordMaker, base_film
from tfmssass.scoring.report import write_report
from tfmssass.scoring.settings import Settings
from tfmssass.scoring.totals import for_output, progression, visit_totals
from tfmssass.serving.predictors import Predictor, ServingError

IMAGE_COLUMNS = ["file", "patient_id", "visit_date", "view", "orientation", "score", "corners_graded", "status"]
ERROR_COLUMNS = ["file", "status", "reason"]


def pseudonym(value: str, salt: str, prefix: str = "P") -> str:
    return prefix + hashlib.sha256(f"{salt}\0{value}".encode()).hexdigest()[:12]


def content_key(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- the run --------------------------------------------------------------------------------------

def _file_key(item: Item) -> str:
    """Record name of an input that is not scored: unique per file (empty files share content)."""
    return f"{item.key or 'unread'}-{hashlib.sha1(item.file.encode()).hexdigest()[:12]}"


def _not_scored(item: Item, status: Status, reason: str) -> FilmRecord:
    """The record of an input that was not read into a radiograph (failed or skipped)."""
    return FilmRecord(key=_file_key(item), file=item.file, status=status, reason=reason)


def salt_id(salt: str) -> str:
    return hashlib.sha256(f"tfmssass-salt\0{salt}".encode()).hexdigest()[:16]


def _predict(predictor: Predictor, maker: RecordMaker, items: list[Item], view: str | None) -> list[FilmRecord]:
    """Records of several radiographs from one predictor call; an input the server refuses fails
    alone (the others are asked again one by one)."""
    try:
        outputs = predictor.predict([header_upright(i.image, i.stored_turns) for i in items],
                                    [view or i.ident.get("view") for i in items])
    except ServingError as exc:
        if len(items) > 1:
            return [r for i in items for r in _predict(predictor, maker, [i], view)]
        return [base_film(items[0], Status.FAILED, str(exc))]
    return [_make(maker, item, out) for item, out in zip(items, outputs)]


def _make(maker: RecordMaker, item: Item, out: dict) -> FilmRecord:
    """One radiograph's record; a fault in it fails that radiograph alone."""
    try:
        return maker.make(item, as_stored(out, item.stored_turns, item.image.shape))
    except OSError:
        raise  # the output folder (disk full, read-only): the run stops and says so
    except Exception as exc:  # noqa: BLE001
        return base_film(item, Status.FAILED, f"could not be scored ({type(exc).__name__}: {exc})")


def run_scoring(root, out, predictor: Predictor, settings: Settings, meta_csv=None, batch_size: int = 64,
                resume: bool = False, overwrite: bool = False, progress: bool = True, lookahead: int = 4,
                salt: str | None = None, notes: list[dict] = ()) -> dict:
    """Score every radiograph under ``root`` into ``out`` and write the tables and the report; returns
    the counts (:func:`write_outputs`). The folder is locked for the run (:class:`ScoredFolder`)."""
    folder = ScoredFolder(out)
    with folder.writing():
        done = folder.begin(settings, resume, overwrite)
        files, passed_over = score_files(root, folder, done, predictor, settings, meta_csv, batch_size, progress,
                                         lookahead, salt, notes)
        return write_outputs(folder, files, settings, passed_over)


def score_files(root, folder: ScoredFolder, done: dict[str, str], predictor: Predictor, settings: Settings,
                meta_csv=None, batch_size: int = 64, progress: bool = True, lookahead: int = 4,
                salt: str | None = None, notes=()) -> tuple[int, int]:
    """Every radiograph under ``root`` into the records of a begun run (:meth:`ScoredFolder.begin`), except
    those ``done`` already names; returns (files found, passed over).

    ``predictor``: any :mod:`tfmssass.serving.predictors` predictor. Radiographs are handed to it
    ``batch_size // 12`` at a time, so their crops share grader batches. A
    :class:`~tfmssass.serving.predictors.ServingUnavailable` stops the run; ``--resume`` continues it.

    With ``salt`` patient ids and file names are replaced by salted hashes everywhere. ``notes``: inputs
    found elsewhere that were not scored (:meth:`ScoredFolder.save_notes`)."""
    if (salt is None) != (settings.salt_id is None) or (salt is not None and salt_id(salt) != settings.salt_id):
        raise ValueError("settings.salt_id must be salt_id(salt)")
    root = Path(root)
    folder.write_source(None if salt is not None else root, predictor.metadata)
    folder.save_notes(notes)
    sidecar = read_meta_table(meta_csv) if meta_csv else None
    files, passed_over = discover(root)
    maker = RecordMaker(predictor.metadata, settings, folder.root)
    per_call = max(1, batch_size // 12)
    pending: list[Item] = []

    def display_name(path: Path) -> str:
        rel = path.relative_to(root).as_posix() if path != root else path.name
        return pseudonym(rel, salt, prefix="F") if salt is not None else rel

    def load(path: Path) -> Item:
        item = Item(path, display_name(path))
        try:
            check_file(path)  # before anything opens it: a FIFO or a device would block or flood
            item.key = content_key(path)
            if done.get(item.key) == item.file:
                item.done = True
                return item
            if is_dicom(path):
                check_dicom_header(path)
            radiograph = read_radiograph(path)
            item.ident = identify(path, root, radiograph.meta, sidecar)
            if salt is not None:
                item.ident["patient_id"] = pseudonym(item.ident["patient_id"], salt)
            item.image = radiograph.image
            item.stored_turns = radiograph.meta.get("stored_turns") or 0
        except RadiographError as exc:
            item.error = exc
        except OSError as exc:
            item.error = RadiographError(path, f"cannot be read ({exc.strerror or exc})")
        except Exception as exc:  # noqa: BLE001 - one input's fault never ends the batch
            item.error = RadiographError(path, f"could not be read ({type(exc).__name__}: {exc})")
        return item

    def grade(items: list[Item]) -> None:
        for record in _predict(predictor, maker, items, settings.view):
            folder.save_record(record)
        items.clear()

    def too_slow(path: Path, seconds: float) -> Item:
        return Item(path, display_name(path), error=RadiographError(
            path, f"given up: reading and decoding took longer than {seconds:g} s"))

    seen = dict(done)
    bar = tqdm(total=len(files), desc="scoring", unit="file", disable=not progress)
    for item in read_ahead(load, files, too_slow, lookahead, timeout=DECODE_SECONDS, weigh=declared_pixels,
                           budget=READ_PIXELS):
        bar.update(1)
        if item.done:
            continue
        if item.error is not None:
            status = Status.SKIPPED if isinstance(item.error, Skipped) else Status.FAILED
            folder.save_record(_not_scored(item, status, item.error.reason))
            continue
        if item.key in seen:  # a copy of a file already scored in this run
            folder.save_record(_not_scored(item, Status.SKIPPED, f"skipped: same content as {seen[item.key]}"))
            continue
        seen[item.key] = item.file
        pending.append(item)
        if len(pending) >= per_call or sum(i.image.size for i in pending) >= PENDING_PIXELS:
            grade(pending)  # a few films, or fewer large ones: the images waiting stay bounded in bytes
    if pending:
        grade(pending)
    bar.close()
    return len(files), passed_over


# ---- outputs from records -----------------------------------------------------------------------

def _write_csv(path: Path, frame: pd.DataFrame, note: str) -> None:
    frame = frame.copy()
    frame["models"] = note
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, encoding="utf-8")


def used_corners(corners: pd.DataFrame, not_used: dict) -> pd.DataFrame:
    """The corners of the radiographs that count towards the visit totals (grade as float, NaN = blank)."""
    return corners[~corners["file"].isin(set(not_used))].astype({"grade": "float"})


def _orientation_text(degrees) -> str:
    """images.csv's orientation: how far the film was turned clockwise to be read; blank when not checked."""
    if degrees is None or degrees < 0:
        return ""
    return "upright" if degrees == 0 else f"turned {degrees}° clockwise"


#: How many failed inputs ``score`` names on the terminal (all are in errors.csv).
FIRST_FAILURES = 5


def write_outputs(out, files: int, settings: Settings, passed_over: int = 0) -> dict:
    """corners.csv, images.csv, visits.csv, progression.csv, errors.csv and report.html from the records;
    returns the counts, with the first failed inputs and the first radiographs not used, and why."""
    folder = out if isinstance(out, ScoredFolder) else ScoredFolder(out)
    out = folder.root
    films, not_used, decoded = folder.decided_records(settings)
    image_rows, error_rows = [], []
    for f in films:
        if not f.scored:
            error_rows.append({"file": f.file, "status": str(f.status), "reason": f.reason})
            if f.status == Status.FAILED and f.patient_id:
                image_rows.append({"file": f.file, "patient_id": f.patient_id, "visit_date": f.visit_date,
                                   "view": f.view, "orientation": _orientation_text(f.orientation), "score": None,
                                   "corners_graded": 0, "status": f.reason})
            continue
        image_rows.append({"file": f.file, "patient_id": f.patient_id, "visit_date": f.visit_date,
                           "view": f.view, "orientation": _orientation_text(f.orientation),
                           "score": f.score, "corners_graded": f.corners_graded,
                           "status": not_used.get(f.file, "scored")})
    corners, _ = corner_table(films)
    images = pd.DataFrame(image_rows, columns=IMAGE_COLUMNS)
    errors = pd.DataFrame(error_rows, columns=ERROR_COLUMNS)
    used = used_corners(corners, not_used)
    visits = visit_totals(used, settings.impute)
    changes = progression(visits, used, decoded.chance_of_rise)
    note = settings.models_note
    _write_csv(out / "corners.csv", corners.astype({"grade": "Int64", "grade_independent": "Int64"}), note)
    _write_csv(out / "images.csv", images.astype({"score": "Int64"}), note)
    visits, changes = for_output(visits), for_output(changes)  # rounded once: the CSVs and the report agree
    _write_csv(out / "visits.csv", visits, note)
    _write_csv(out / "progression.csv", changes, note)
    _write_csv(out / "errors.csv", errors, note)
    write_report(out / "report.html", films, visits, changes, not_used, settings, run_id=folder.run_id())
    failures = [(f.file, f.reason) for f in films if f.status == Status.FAILED]
    skipped = sum(f.status == Status.SKIPPED for f in films)
    return {"scored": len(films) - len(failures) - skipped, "failed": len(failures), "skipped": skipped,
            "files": files, "passed_over": passed_over, "not_used": len(not_used),
            "first_not_used": sorted(not_used.items())[:FIRST_FAILURES],
            "first_failures": failures[:FIRST_FAILURES]}
