"""``tfmssass score --dicomweb URL``: find lateral spine radiographs in a PACS, fetch them into a
local cache, score the cache as a folder, write the DICOM objects and (``--store``) send them back.

Every step can be stopped and resumed: fetched files stay in ``OUT/.pacs-cache`` (written
atomically), scored radiographs in the run's records, stored objects in the folder's list of them. A
PACS that stops answering stops the run with the resume hint; nothing done is lost.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pydicom
from tqdm import tqdm

from tfmssass.core.atomic import atomic_path, keep_settings
from tfmssass.core.config import RADIOGRAPH_MODALITIES
from tfmssass.io.dicom import dicom_date
from tfmssass.pacs.dicomweb import Pacs, Selection, qido_value
from tfmssass.pacs.errors import PacsError, PacsUnavailable
from tfmssass.pacs.objects import write_dicom_objects
from tfmssass.scoring.film import Status
from tfmssass.scoring.folder import FolderError, ScoredFolder
from tfmssass.scoring.run import score_files, write_outputs
from tfmssass.scoring.settings import Settings
from tfmssass.serving.predictors import Predictor

#: The fetched radiographs, as ``<study UID>/<series UID>/<SOP instance UID>.dcm`` (hidden: inputs, not results).
CACHE = ".pacs-cache"
#: Images fetched at once: a PACS answers several requests in parallel.
FETCH_THREADS = 4
#: The server and selection a cache was fetched for; ``--resume`` must ask for the same.
QUERY_FILE = "query.json"


def _check_cache(cache: Path, pacs: Pacs, selection: Selection, resume: bool) -> None:
    wanted = {"url": pacs.url, "studies": list(selection.studies), "patients": list(selection.patients),
              "since": selection.since}
    if not resume:
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    if not keep_settings(cache / QUERY_FILE, wanted):
        raise FolderError(f"{cache.parent}: --resume with another server or selection than the first run "
                          "(use another --out, or --overwrite to start again)")


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
                notes.append({"file": f"{study_uid}/{series_uid}", "status": Status.SKIPPED,
                              "reason": f"skipped: series {number} of the {found[study_uid]} is {modality}, "
                                        "not a radiograph"})
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
            return {"file": "/".join(uids) + ".dcm", "status": Status.FAILED, "reason": str(exc)}
        with atomic_path(cache / uids[0] / uids[1] / f"{uids[2]}.dcm") as tmp:
            dataset.save_as(tmp, enforce_file_format=True)
        return None

    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:  # most of a fetch is waiting for the server
        for failed in tqdm(pool.map(one, missing), total=len(missing), desc="fetching", unit="image",
                           disable=not progress):
            if failed:
                notes.append(failed)
    return found, notes


def _studies_without_radiograph(folder: ScoredFolder, studies: dict[str, str]) -> list[dict]:
    scored = {f.file.split("/")[0] for f in folder.records() if f.scored}
    return [{"file": uid, "status": Status.SKIPPED, "reason": f"{label}: no usable lateral spine radiograph"}
            for uid, label in studies.items() if uid not in scored]


def store(pacs: Pacs, folder: ScoredFolder, progress: bool) -> int:
    """Send ``OUT/dicom``'s objects that are not yet stored; returns how many."""
    index = pd.read_csv(folder.root / "dicom" / "index.csv", dtype=str)
    stored = folder.stored()
    sent = 0
    for row in tqdm(index.itertuples(), total=len(index), desc="storing", unit="object", disable=not progress):
        if row.sop_uid in stored:
            continue
        pacs.store(pydicom.dcmread(folder.root / row.path))
        stored.add(row.sop_uid)
        folder.mark_stored(stored)
        sent += 1
    return sent


def score_from_pacs(pacs: Pacs, selection: Selection, out, predictor: Predictor, settings: Settings,
                    send: bool = False, resume: bool = False, overwrite: bool = False, progress: bool = True,
                    batch_size: int = 64) -> dict:
    """Fetch, score, write the DICOM objects, and with ``send`` store them; returns the scoring counts
    with ``objects`` (written), ``stored`` (sent this time) and ``not_made`` (films without objects)."""
    folder = ScoredFolder(out)
    cache = folder.root / CACHE
    with folder.writing():
        done = folder.begin(settings, resume, overwrite)  # refuses another run's results before anything is fetched
        _check_cache(cache, pacs, selection, resume)
        studies, notes = fetch(pacs, selection, cache, progress)
        files, passed_over = score_files(cache, folder, done, predictor, settings, batch_size=batch_size,
                                         progress=progress, notes=notes)
        folder.save_notes(_studies_without_radiograph(folder, studies))
        counts = write_outputs(folder, files, settings, passed_over)
        written = write_dicom_objects(folder.root, settings)
        counts.update(studies=len(studies), objects=len(written.rows), not_made=written.not_made,
                      stored=store(pacs, folder, progress) if send else 0)
    return counts
