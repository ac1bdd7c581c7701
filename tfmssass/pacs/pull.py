"""``tfmssass score --dicomweb URL``: find lateral spine radiographs in a PACS, fetch them into a
local cache, score the cache as a folder, write the DICOM objects and (``--store``) send them back.

Every step can be stopped and resumed: fetched files stay in ``OUT/.pacs-cache`` (written
atomically), scored radiographs in the run's records, stored objects in ``.work/stored.txt``. A
PACS that stops answering stops the run with the resume hint; nothing done is lost.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pydicom
from tqdm import tqdm

from tfmssass.core.atomic import atomic_path, write_text
from tfmssass.io.dicom import dicom_date
from tfmssass.pacs.dicomweb import RADIOGRAPH_MODALITIES, Pacs, Selection, qido_value
from tfmssass.pacs.errors import PacsError, PacsUnavailable
from tfmssass.pacs.objects import write_dicom_objects
from tfmssass.scoring.records import Settings
from tfmssass.scoring.run import load_records, run_scoring, save_notes, write_outputs
from tfmssass.serving.predictors import Predictor

#: The fetched radiographs, as ``<study UID>/<series UID>/<SOP instance UID>.dcm`` (hidden: inputs, not results).
CACHE = ".pacs-cache"
#: Images fetched at once: a PACS answers several requests in parallel.
FETCH_THREADS = 4
#: The server and selection a cache was fetched for; ``--resume`` must ask for the same.
QUERY_FILE = "query.json"


def _check_cache(cache: Path, pacs: Pacs, selection: Selection, resume: bool) -> None:
    wanted = json.dumps({"url": pacs.url, "studies": selection.studies, "patients": selection.patients,
                         "since": selection.since}, sort_keys=True)
    query = cache / QUERY_FILE
    if resume and query.is_file() and query.read_text() != wanted:
        raise PacsError(f"{cache.parent}: --resume with another server or selection than the first run "
                        "(use a new --out, or drop --resume to start again)", 2)
    if not resume:
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    write_text(query, wanted)


def _label(study: dict) -> str:
    patient = qido_value(study, "PatientID", "no patient id")
    date = dicom_date(qido_value(study, "StudyDate"))
    return f"study of {patient} on {date}" if date else f"study of {patient}"


def fetch(pacs: Pacs, selection: Selection, cache: Path, progress: bool) -> tuple[dict[str, str], list[dict]]:
    """Fetch every CR/DX image of the selected studies not yet in ``cache``; returns {study UID: label}
    of the studies found, and notes for the series that are not radiographs and the images the PACS
    would not give."""
    studies = pacs.studies(selection)
    found, notes, wanted = {}, [], []
    for study in studies:
        study_uid = qido_value(study, "StudyInstanceUID")
        found[study_uid] = _label(study)
        for series in pacs.series(study_uid):
            series_uid = qido_value(series, "SeriesInstanceUID")
            modality = qido_value(series, "Modality", "no modality")
            if modality in RADIOGRAPH_MODALITIES:
                wanted += [(study_uid, series_uid, sop) for sop in pacs.instances(study_uid, series_uid)]
            elif "tfmssass" not in str(qido_value(series, "SeriesDescription", "")):  # our own results
                number = qido_value(series, "SeriesNumber", "?")
                notes.append({"file": f"{study_uid}/{series_uid}", "status": "skipped",
                              "reason": f"skipped: series {number} of the {found[study_uid]} is {modality}, "
                                        "not a radiograph (CR or DX)"})
    missing = [w for w in wanted if not (cache / w[0] / w[1] / f"{w[2]}.dcm").is_file()]

    def one(uids) -> dict | None:
        """Fetch one image; one the PACS refuses (4xx) fails alone, a PACS that stops answering stops the run."""
        try:
            dataset = pacs.retrieve(*uids)
        except PacsUnavailable:
            raise
        except PacsError as exc:
            if exc.code == 2:
                raise
            return {"file": "/".join(uids) + ".dcm", "status": "failed", "reason": str(exc)}
        with atomic_path(cache / uids[0] / uids[1] / f"{uids[2]}.dcm") as tmp:
            dataset.save_as(tmp, enforce_file_format=True)
        return None

    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:  # most of a fetch is waiting for the server
        for failed in tqdm(pool.map(one, missing), total=len(missing), desc="fetching", unit="image",
                           disable=not progress):
            if failed:
                notes.append(failed)
    return found, notes


def _studies_without_radiograph(out: Path, studies: dict[str, str]) -> list[dict]:
    scored = {r["file"].split("/")[0] for r in load_records(out) if r["status"] == "scored"}
    return [{"file": uid, "status": "skipped", "reason": f"{label}: no usable lateral spine radiograph"}
            for uid, label in studies.items() if uid not in scored]


def store(pacs: Pacs, out: Path, progress: bool) -> int:
    """Send ``OUT/dicom``'s objects that are not yet stored (``.work/stored.txt``); returns how many."""
    index = pd.read_csv(out / "dicom" / "index.csv", dtype=str)
    log = out / ".work" / "stored.txt"
    stored = set(log.read_text().split()) if log.is_file() else set()
    sent = 0
    for row in tqdm(index.itertuples(), total=len(index), desc="storing", unit="object", disable=not progress):
        if row.sop_uid in stored:
            continue
        pacs.store(pydicom.dcmread(out / row.path))
        stored.add(row.sop_uid)
        write_text(log, "\n".join(sorted(stored)) + "\n")
        sent += 1
    return sent


def score_from_pacs(pacs: Pacs, selection: Selection, out, predictor: Predictor, settings: Settings,
                    send: bool = False, resume: bool = False, progress: bool = True, batch_size: int = 64) -> dict:
    """Fetch, score, write the DICOM objects, and with ``send`` store them; returns the scoring counts
    with ``objects`` (written), ``stored`` (sent this time) and ``not_made`` (films without objects)."""
    out = Path(out)
    cache = out / CACHE
    _check_cache(cache, pacs, selection, resume)
    studies, notes = fetch(pacs, selection, cache, progress)
    counts = run_scoring(cache, out, predictor, settings, batch_size=batch_size, resume=resume, progress=progress,
                         notes=notes)
    empty = _studies_without_radiograph(out, studies)
    if empty:
        save_notes(out, empty)
        counts = write_outputs(out, counts["files"], settings, counts["passed_over"])
    written = write_dicom_objects(out, settings)
    counts.update(studies=len(studies), objects=len(written.rows), not_made=written.not_made,
                  stored=store(pacs, out, progress) if send else 0)
    return counts
