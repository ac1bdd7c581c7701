"""``tfmssass score DIR``: every radiograph in a folder → per-corner grades, per-visit mSASSS,
progression between visits, overlays and a report.

Flow: files are read by a small thread pool a few radiographs ahead of the model work (reading
and decoding DICOM hides behind the networks). Per radiograph, stage 1 finds the disk points, the
levels are cut and turned into canonical corner crops, and the crops of several radiographs go
through the grader in one batch. Each finished radiograph is written as one small record
(``OUT/.work/records/<content hash>.json``, atomically); the CSVs and the report are rebuilt from
the records at the end. So a run killed at any moment and started again with ``--resume`` skips
what is done and ends with the same files as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from tfmssass.core.atomic import atomic_path, write_text
from tfmssass.io import RadiographError, read_radiograph
from tfmssass.scoring.cohort import decide
from tfmssass.scoring.inputs import (
    Skipped,
    as_stored,
    check_dicom_header,
    discover,
    header_upright,
    identify,
    is_dicom,
    read_meta_table,
)
from tfmssass.scoring.records import Item, RecordMaker, Settings, base_record, corner_table
from tfmssass.scoring.report import write_report
from tfmssass.scoring.totals import progression, visit_totals
from tfmssass.serving.predictors import Predictor, ServingError

IMAGE_COLUMNS = ["file", "patient_id", "visit_date", "view", "orientation", "score", "corners_graded", "status"]
ERROR_COLUMNS = ["file", "reason"]


def pseudonym(value: str, salt: str, prefix: str = "P") -> str:
    return prefix + hashlib.sha256(f"{salt}\0{value}".encode()).hexdigest()[:12]


def content_key(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- the run --------------------------------------------------------------------------------------

def _prepare_work(out: Path, settings: Settings, resume: bool) -> tuple[Path, dict[str, str]]:
    """The records folder, and {content key: file} of the radiographs already scored there."""
    work = out / ".work"
    records = work / "records"
    wanted = json.dumps(asdict(settings), sort_keys=True)
    if resume and (work / "settings.json").is_file():
        if (work / "settings.json").read_text() != wanted:
            raise ValueError(f"{out}: --resume with different models or settings than the first run "
                             "(use a new --out, or drop --resume to start again)")
    elif work.exists():
        shutil.rmtree(work)
        shutil.rmtree(out / "overlays", ignore_errors=True)
        shutil.rmtree(out / "crops", ignore_errors=True)
    records.mkdir(parents=True, exist_ok=True)
    write_text(work / "settings.json", wanted)
    done = {}
    for path in records.glob("*.json"):  # inputs that were not scored are tried again
        record = json.loads(path.read_text())
        if record["status"] == "scored":
            done[record["key"]] = record["file"]
        else:
            path.unlink()
    return records, done


def _write_source(out: Path, root: Path, metadata: dict, pseudonymised: bool) -> None:
    """Where the radiographs were and how the grader cuts its crops, for ``tfmssass review``, and the
    model's calibration, for ``evaluate agreement``. A pseudonymised run does not keep the folder
    (its path may name patients)."""
    source = {"root": None if pseudonymised else str(root.resolve()), "grader": metadata.get("grader", {}),
              "calibration": metadata.get("calibration")}
    write_text(out / ".work" / "source.json", json.dumps(source, indent=1, sort_keys=True))


def _file_key(item: Item) -> str:
    """Record name of an input that is not scored: unique per file (empty files share content)."""
    return f"{item.key or 'unread'}-{hashlib.sha1(item.file.encode()).hexdigest()[:12]}"


def _save_record(records: Path, record: dict) -> None:
    write_text(records / f"{record['key']}.json", json.dumps(record, sort_keys=True))


def save_notes(out, notes: list[dict]) -> None:
    """Inputs that were not files to read (a PACS series that is no radiograph, a study without one),
    as records of their own: ``{"file", "status": "skipped" or "failed", "reason"}``. They appear in
    ``errors.csv`` and, like every input not scored, are tried again on ``--resume``."""
    records = Path(out) / ".work" / "records"
    for note in notes:
        key = "note-" + hashlib.sha1(note["file"].encode()).hexdigest()[:12]
        _save_record(records, {"key": key, "file": note["file"], "status": note["status"], "reason": note["reason"]})


def salt_id(salt: str) -> str:
    return hashlib.sha256(f"tfmssass-salt\0{salt}".encode()).hexdigest()[:16]


def _predict(predictor: Predictor, maker: RecordMaker, items: list[Item], view: str | None) -> list[dict]:
    """Records of several radiographs from one predictor call; an input the server refuses fails
    alone (the others are asked again one by one)."""
    try:
        outputs = predictor.predict([header_upright(i.image, i.stored_turns) for i in items],
                                    [view or i.ident.get("view") for i in items])
    except ServingError as exc:
        if len(items) > 1:
            return [r for i in items for r in _predict(predictor, maker, [i], view)]
        return [{**base_record(items[0]), "status": "failed", "reason": str(exc)}]
    return [maker.make(item, as_stored(out, item.stored_turns, item.image.shape)) for item, out in zip(items, outputs)]


def run_scoring(root, out, predictor: Predictor, settings: Settings, meta_csv=None, batch_size: int = 64,
                resume: bool = False, progress: bool = True, lookahead: int = 4, salt: str | None = None,
                notes: list[dict] = ()) -> dict:
    """Score every radiograph under ``root`` into ``out``; returns counts (scored, failed, skipped).

    ``predictor``: any :mod:`tfmssass.serving.predictors` predictor. Radiographs are handed to it
    ``batch_size // 12`` at a time, so their crops share grader batches. A
    :class:`~tfmssass.serving.predictors.ServingUnavailable` stops the run; ``--resume`` continues it.

    With ``salt`` patient ids and file names are replaced by salted hashes everywhere. ``notes``: inputs
    found elsewhere that were not scored (:func:`save_notes`)."""
    if (salt is None) != (settings.salt_id is None) or (salt is not None and salt_id(salt) != settings.salt_id):
        raise ValueError("settings.salt_id must be salt_id(salt)")
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records, done = _prepare_work(out, settings, resume)
    _write_source(out, root, predictor.metadata, pseudonymised=salt is not None)
    save_notes(out, notes)
    sidecar = read_meta_table(meta_csv) if meta_csv else None
    files, passed_over = discover(root)
    maker = RecordMaker(predictor.metadata, settings, out)
    per_call = max(1, batch_size // 12)
    pending: list[Item] = []

    def display_name(path: Path) -> str:
        rel = path.relative_to(root).as_posix() if path != root else path.name
        return pseudonym(rel, salt, prefix="F") if salt is not None else rel

    def load(path: Path) -> Item:
        item = Item(path, display_name(path))
        try:
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
            item.error = RadiographError(path, exc.strerror or str(exc))
        return item

    seen = dict(done)
    bar = tqdm(total=len(files), desc="scoring", unit="file", disable=not progress)
    with ThreadPoolExecutor(max_workers=2) as pool:
        queue = deque()
        for path in files[:lookahead]:
            queue.append(pool.submit(load, path))
        next_file = lookahead
        while queue:
            item = queue.popleft().result()
            if next_file < len(files):
                queue.append(pool.submit(load, files[next_file]))
                next_file += 1
            bar.update(1)
            if item.done:
                continue
            if item.error is not None:
                status = "skipped" if isinstance(item.error, Skipped) else "failed"
                _save_record(records, {"key": _file_key(item), "file": item.file, "status": status,
                                       "reason": item.error.reason})
                continue
            if item.key in seen:  # a copy of a file already scored in this run
                _save_record(records, {"key": _file_key(item), "file": item.file, "status": "skipped",
                                       "reason": f"skipped: same content as {seen[item.key]}"})
                continue
            seen[item.key] = item.file
            pending.append(item)
            if len(pending) >= per_call:
                for record in _predict(predictor, maker, pending, settings.view):
                    _save_record(records, record)
                pending.clear()
        if pending:
            for record in _predict(predictor, maker, pending, settings.view):
                _save_record(records, record)
    bar.close()
    return write_outputs(out, len(files), settings, passed_over)


# ---- outputs from records -----------------------------------------------------------------------

def load_records(out) -> list[dict]:
    """The per-radiograph records of a scoring run (points, probabilities, reasons), by file."""
    return _load_records(Path(out) / ".work" / "records")


def _load_records(records: Path) -> list[dict]:
    loaded = [json.loads(p.read_text()) for p in sorted(records.glob("*.json"))]
    return sorted(loaded, key=lambda r: r["file"])


def choose_radiographs(records: list[dict]) -> dict[str, str]:
    """For two or more scored radiographs of one view at one visit: keep the one with the most
    graded corners, then the most confident ones; returns {file: why not used} for the others."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r["status"] == "scored":
            groups.setdefault((r["patient_id"], r["visit_date"], r["view"]), []).append(r)
    not_used = {}
    for group in groups.values():
        if len(group) < 2:
            continue

        def merit(r):
            conf = [c["confidence"] for c in r["corners"] if c["confidence"] is not None]
            return (r["corners_graded"], float(np.mean(conf)) if conf else 0.0, r["file"])

        best = max(group, key=merit)
        for r in group:
            if r is not best:
                not_used[r["file"]] = (f"not used: {best['file']} is the {r['view']} radiograph "
                                       "of this visit with more confidently graded corners")
    return not_used


def _write_csv(path: Path, frame: pd.DataFrame, note: str) -> None:
    frame = frame.copy()
    frame["models"] = note
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, encoding="utf-8")


def decided_records(out, settings: Settings | None = None):
    """A scoring run's records with the cohort's decisions applied (prior, longitudinal grades), as
    its tables show them; also which radiographs were not used, and the decoding."""
    records = load_records(out)
    not_used = choose_radiographs(records)
    return records, not_used, decide(records, not_used, settings or Settings.of_run(out))


def used_corners(corners: pd.DataFrame, not_used: dict) -> pd.DataFrame:
    """The corners of the radiographs that count towards the visit totals (grade as float, NaN = blank)."""
    return corners[~corners["file"].isin(set(not_used))].astype({"grade": "float"})


def _orientation_text(degrees) -> str:
    """images.csv's orientation: how far the film was turned clockwise to be read; blank when not checked."""
    if degrees is None or degrees < 0:
        return ""
    return "upright" if degrees == 0 else f"turned {degrees}° clockwise"


def write_outputs(out: Path, files: int, settings: Settings, passed_over: int = 0) -> dict:
    """corners.csv, images.csv, visits.csv, progression.csv, errors.csv and report.html from the records."""
    records, not_used, decoded = decided_records(out, settings)
    image_rows, error_rows = [], []
    for r in records:
        if r["status"] != "scored":
            error_rows.append({"file": r["file"], "reason": r["reason"]})
            if r["status"] == "failed" and r.get("patient_id"):
                image_rows.append({"file": r["file"], "patient_id": r["patient_id"],
                                   "visit_date": r["visit_date"], "view": r.get("view"),
                                   "orientation": _orientation_text(r.get("orientation")), "score": None,
                                   "corners_graded": 0, "status": r["reason"]})
            continue
        image_rows.append({"file": r["file"], "patient_id": r["patient_id"], "visit_date": r["visit_date"],
                           "view": r["view"], "orientation": _orientation_text(r.get("orientation")),
                           "score": r["score"], "corners_graded": r["corners_graded"],
                           "status": not_used.get(r["file"], "scored")})
    corners, _ = corner_table(records)
    images = pd.DataFrame(image_rows, columns=IMAGE_COLUMNS)
    errors = pd.DataFrame(error_rows, columns=ERROR_COLUMNS)
    used = used_corners(corners, not_used)
    visits = visit_totals(used, settings.impute)
    changes = progression(visits, used, decoded.chance_of_rise)
    note = settings.models_note
    _write_csv(out / "corners.csv", corners.astype({"grade": "Int64", "grade_independent": "Int64"}), note)
    _write_csv(out / "images.csv", images.astype({"score": "Int64"}), note)
    _write_csv(out / "visits.csv", visits.round({"cervical": 2, "lumbar": 2, "msasss": 2}), note)
    _write_csv(out / "progression.csv", changes.round({"delta": 2, "p_progressed": 4}), note)
    _write_csv(out / "errors.csv", errors, note)
    write_report(out / "report.html", records, visits, changes, not_used, settings)
    failed = sum(r["status"] == "failed" for r in records)
    skipped = sum(r["status"] == "skipped" for r in records)
    return {"scored": len(records) - failed - skipped, "failed": failed, "skipped": skipped,
            "files": files, "passed_over": passed_over, "not_used": len(not_used)}
