"""What ``tfmssass score`` reads: finding the files in a folder, telling radiographs from other
DICOM objects, and naming each radiograph's patient and visit.

DICOM files are recognised by content, whatever their name. Patient and visit come from the DICOM
header (PatientID, StudyDate); for PNG/JPEG/TIFF, and DICOM files without them, from a sidecar CSV
(``--meta``: columns file, patient_id, visit_date, optional view) or from the folder names
``<patient>/<YYYY-MM-DD>/<file>``.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np
import pandas as pd

from tfmssass.core.config import RADIOGRAPH_MODALITIES
from tfmssass.core.errors import UsageError
from tfmssass.core.geometry import turn_points
from tfmssass.io import RadiographError, Skipped, sniff_format

#: Files with these endings are never radiographs (labels, notes, our own outputs); they are
#: passed over silently instead of being reported as "not DICOM".
TEXT_SUFFIXES = {".csv", ".json", ".txt", ".md", ".html", ".htm", ".xml", ".log", ".py", ".yaml",
                 ".yml", ".pdf", ".sqlite", ".sqlite-wal", ".sqlite-shm"}
#: ViewPosition values that are not lateral: such radiographs are reported, not graded.
FRONTAL_VIEWS = {"AP", "PA"}


def discover(root) -> tuple[list[Path], int]:
    """Every candidate file under ``root`` (sorted, hidden entries and text files left out),
    and how many text files were passed over."""
    root = Path(root)
    if root.is_file():
        return [root], 0
    found, passed_over = [], 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            if Path(name).suffix.lower() in TEXT_SUFFIXES:
                passed_over += 1
                continue
            found.append(Path(folder) / name)
    return found, passed_over


def check_dicom_header(path) -> None:
    """Raise :class:`Skipped` for DICOM objects that are not lateral radiographs (a report, a frontal
    film), and :class:`RadiographError` for one that claims to be an image and is damaged."""
    from tfmssass.io.dicom import claims_image, read_dataset, sop_class

    ds = read_dataset(path, stop_before_pixels=True)
    if "Rows" not in ds:
        sop = sop_class(ds)
        name = getattr(sop, "name", "") or str(sop or "")
        if claims_image(ds):  # an image object without its size, or no object at all: damaged
            raise RadiographError(path, f"damaged: {name or 'a DICOM file'} without Rows/Columns (truncated or "
                                        "corrupt header)")
        raise Skipped(path, f"skipped: not an image ({name})")
    modality = str(ds.get("Modality", "")).upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        raise Skipped(path, f"skipped: not a radiograph (modality {modality})")
    position = str(ds.get("ViewPosition", "")).upper()
    if position in FRONTAL_VIEWS:
        raise Skipped(path, f"skipped: {position} view; mSASSS is scored on lateral radiographs")


def _iso_date(text) -> str | None:
    try:
        return _dt.date.fromisoformat(str(text).strip()).isoformat()
    except ValueError:
        return None


def read_meta_table(csv) -> dict[str, dict]:
    """The sidecar table, keyed by the file's path as written (relative to the scored folder)."""
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    missing = {"file", "patient_id", "visit_date"} - set(table.columns)
    if missing:
        raise UsageError(f"--meta {csv}: missing column(s) {', '.join(sorted(missing))}")
    return {Path(row["file"]).as_posix(): dict(row) for _, row in table.iterrows()}


def identify(path: Path, root: Path, meta: dict, sidecar: dict | None = None) -> dict:
    """patient_id, visit_date and (if given) view of one radiograph; raise when unknown."""
    relative = path.relative_to(root).as_posix() if path != root else path.name
    entry = (sidecar or {}).get(relative) or {}
    patient = entry.get("patient_id") or meta.get("patient_id")
    date = _iso_date(entry.get("visit_date", "")) or meta.get("study_date")
    view = entry.get("view") or None
    parts = Path(relative).parts
    if (not patient or not date) and len(parts) >= 3 and _iso_date(parts[-2]):
        patient, date = patient or parts[-3], date or _iso_date(parts[-2])
    if not patient or not date:
        missing = " and no ".join(what for what, value in (("patient id", patient), ("visit date", date)) if not value)
        raise RadiographError(path, f"no {missing}: {_layout_hint(parts)} (or give them in the DICOM header "
                                    "or a --meta row)")
    if view and view not in ("cervical", "lumbar"):
        raise RadiographError(path, f"--meta view {view!r} is not cervical or lumbar")
    return {"patient_id": str(patient), "visit_date": date, "view": view}


def _layout_hint(parts: tuple[str, ...]) -> str:
    """What the folder layout <patient>/<YYYY-MM-DD>/FILE lacks for the file at ``parts``."""
    layout = f"the layout is <patient>/<YYYY-MM-DD>/{parts[-1]}"
    if len(parts) >= 3:
        return f"its folder {parts[-2]!r} is not a date YYYY-MM-DD; {layout}"
    if len(parts) == 2:
        return f"it lies in {parts[0]}/ without a date folder; {layout}"
    return f"it lies at the top of the folder; {layout}"


def is_dicom(path) -> bool:
    return sniff_format(path).startswith("DICOM")


def header_upright(image, stored_turns: int):
    """The film turned upright as its DICOM header says it is stored (unchanged when it says nothing).
    The model still checks the orientation from the image: a wrong header costs nothing but the turn."""
    return image if not stored_turns else np.ascontiguousarray(np.rot90(image, -stored_turns))


def as_stored(out: dict, stored_turns: int, shape) -> dict:
    """A prediction for :func:`header_upright`'s film, in the stored film's pixels: the points turned
    back, and the orientation the sum of the header's turn and the model's."""
    if not stored_turns:
        return out
    height, width = shape[:2]
    upright_shape = (width, height) if stored_turns % 2 else (height, width)
    model = int(out.get("orientation", -1))
    return {**out, "keypoints": turn_points(out["keypoints"], stored_turns, *upright_shape).astype(np.float32),
            "orientation": 90 * ((stored_turns + max(model, 0) // 90) % 4)}
