"""DICOM radiographs → display image (bone bright) + metadata, the way a viewer shows them.

Order follows the standard's grey-scale pipeline: stored values → modality LUT (rescale, signed
pixels) → VOI (first window, or VOI LUT sequence; if neither: robust percentiles, like the paper's
automatic DICOM→PNG conversion) → presentation (MONOCHROME1 or INVERSE shape → invert).
"""

from __future__ import annotations

import datetime as _dt
import math
import warnings as _warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tfmssass.io.radiograph import Radiograph, RadiographError, Skipped, check_pixels, too_large

GREY = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")

#: Percentiles used for automatic contrast when the file carries no window and no VOI LUT.
AUTO_PERCENTILES = (0.5, 99.5)

#: Tags a real DICOM data set has; a file forced open without any of them is not DICOM.
_PLAUSIBLE = ("SOPClassUID", "Modality", "Rows", "PatientID", "StudyInstanceUID", "PixelData")


#: A file with no image signature that does not parse as a DICOM data set either: honestly something else.
NOT_AN_IMAGE = "skipped: not an image (no DICOM, PNG, JPEG or TIFF signature)"


class HeaderValueError(ValueError):
    """A header value that should be a number and is not (or is not finite)."""


def read_dataset(path: str | Path, stop_before_pixels: bool = False) -> pydicom.Dataset:
    """Open a DICOM file, also one without the 128-byte preamble and file meta (raw data set)."""
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        pass
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt headers
        raise RadiographError(path, f"unreadable DICOM header ({exc})") from None
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), force=True, stop_before_pixels=stop_before_pixels)
    except Exception:  # noqa: BLE001
        raise Skipped(path, NOT_AN_IMAGE) from None
    if not any(keyword in ds for keyword in _PLAUSIBLE):
        raise Skipped(path, NOT_AN_IMAGE)
    if "TransferSyntaxUID" not in ds.file_meta:
        # No file meta: the encoding pydicom detected while parsing tells the transfer syntax.
        implicit, little = getattr(ds, "original_encoding", (True, True))
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit
            else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )
    return ds


def dicom_date(value) -> str | None:
    """A DICOM date (DA, ``YYYYMMDD``) as ``YYYY-MM-DD``; None when it is not one."""
    text = str(value or "").strip()
    try:
        return _dt.datetime.strptime(text[:8], "%Y%m%d").date().isoformat()
    except ValueError:
        return None


def _floats(ds: pydicom.Dataset, keyword: str) -> list[float] | None:
    """A numeric header value as floats (None when absent or empty); :class:`HeaderValueError` when it is
    not a finite number, so a damaged header is a reason, never a NaN image."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise HeaderValueError(f"damaged header: {keyword} is not a number ({str(value)[:40]!r})") from None
    if not all(math.isfinite(v) for v in numbers):
        raise HeaderValueError(f"damaged header: {keyword} is not a finite number ({str(value)[:40]!r})")
    return numbers


def _spacing(ds: pydicom.Dataset) -> tuple[list[float] | None, bool, str | None]:
    """Millimetres per pixel (row, column), whether calibrated at the patient, and the source tag.

    ``PixelSpacing`` is calibrated; ``ImagerPixelSpacing`` alone is the detector's pitch, which
    overstates anatomy by the geometric magnification, so it is reported as uncalibrated.
    """
    for keyword, calibrated in (("PixelSpacing", True), ("ImagerPixelSpacing", False)):
        values = _floats(ds, keyword)
        if values and len(values) == 2 and all(v > 0 for v in values):
            return values, calibrated, keyword
    return None, False, None


def stored_turns(patient_orientation) -> int | None:
    """Quarter turns counter-clockwise (``np.rot90``) from upright that a radiograph's
    ``PatientOrientation`` (0020,0020) says it was stored in, or None where it does not say.

    The two values name the patient directions of increasing column and increasing row; upright, the
    rows run towards the feet (``F``) and the columns to the front or the back (``A``/``P``, either way:
    the facing does not matter). Only plain single letters are trusted (``HP``, an oblique, is not)."""
    values = [str(v).strip().upper() for v in (patient_orientation or [])]
    if len(values) != 2:
        return None
    columns, rows = values
    if columns in ("A", "P"):  # the spine runs down (upright) or up (stored upside down)
        return {"F": 0, "H": 2}.get(rows)
    if rows in ("A", "P"):  # the spine runs across: feet to the right after a left turn
        return {"F": 1, "H": 3}.get(columns)
    return None


def dataset_metadata(ds: pydicom.Dataset) -> dict:
    spacing, calibrated, source = _spacing(ds)
    ts = ds.file_meta.get("TransferSyntaxUID")
    return {
        "format": "DICOM",
        "patient_id": str(ds.get("PatientID", "")) or None,
        "study_date": dicom_date(ds.get("StudyDate")) or dicom_date(ds.get("AcquisitionDate")),
        "study_uid": str(ds.get("StudyInstanceUID", "")) or None,
        "series_uid": str(ds.get("SeriesInstanceUID", "")) or None,
        "sop_uid": str(ds.get("SOPInstanceUID", "")) or None,
        "sop_class_uid": str(ds.get("SOPClassUID", "")) or None,
        "modality": str(ds.get("Modality", "")) or None,
        "body_part": str(ds.get("BodyPartExamined", "")) or None,
        "view_position": str(ds.get("ViewPosition", "")) or None,
        "stored_turns": stored_turns(ds.get("PatientOrientation")),
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")) or None,
        "bits_allocated": int(ds.BitsAllocated) if "BitsAllocated" in ds else None,
        "bits_stored": int(ds.BitsStored) if "BitsStored" in ds else None,
        "rows": int(ds.Rows) if "Rows" in ds else None,
        "columns": int(ds.Columns) if "Columns" in ds else None,
        "frames": int(ds.get("NumberOfFrames", 1) or 1),
        "pixel_spacing_mm": spacing,
        "spacing_calibrated": calibrated,
        "spacing_source": source,
        "transfer_syntax": ts.name if ts is not None else None,
    }


def sop_class(ds: pydicom.Dataset):
    """The object's SOP class, from the data set or else its file meta (None when neither says)."""
    return ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")


def claims_image(ds: pydicom.Dataset) -> bool:
    """Whether a data set says it is an image (an image SOP class), or says nothing at all of what it is
    (a header cut short): then missing pixels or size are damage, not a different kind of object."""
    sop = sop_class(ds)
    return sop is None or "Image" in getattr(sop, "name", "")


def header_metadata(path: str | Path) -> dict:
    """:func:`dataset_metadata` of a file's header, without its pixels; a damaged value is a reason."""
    try:
        return dataset_metadata(read_dataset(path, stop_before_pixels=True))
    except HeaderValueError as exc:
        raise RadiographError(path, str(exc)) from None


def _window(values: np.ndarray, centre: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing onto [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - centre) / width + 0.5, 0.0, 1.0)
    width = max(width, 1.0)
    return np.clip((values - (centre - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _auto_contrast(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    sample = values[mask] if mask is not None and mask.any() else values
    lo, hi = np.percentile(sample, AUTO_PERCENTILES)
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def _voi_lut(values: np.ndarray, item: pydicom.Dataset) -> np.ndarray:
    """PS3.3 C.11.2.1.1: a table look-up on the modality output; entries past the ends clamp."""
    count, first, bits = (int(v) for v in item.LUTDescriptor)
    count = count or 65536
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):
        dtype = "<u1" if len(data) == count else "<u2"
        data = np.frombuffer(data, dtype=dtype)
    table = np.asarray(data, dtype=np.float64)[:count]
    index = np.clip(np.rint(values).astype(np.int64) - first, 0, len(table) - 1)
    return np.clip(table[index] / (2**bits - 1), 0.0, 1.0)


def _voi(stored: np.ndarray, values: np.ndarray, ds: pydicom.Dataset) -> tuple[np.ndarray, str]:
    """The VOI step onto [0, 1]: the VOI LUT sequence, else the first window, else automatic contrast.

    Not pydicom's ``apply_voi_lut``, for two reasons found on this module's tests (pydicom 3.0):
    an 8-bit VOI LUT whose LUT Data has VR US (one entry per value) is read as packed bytes, so
    stored 857 with first mapped 500 gives 46 instead of the table's 88
    (``test_voi_lut_sequence_is_applied``); and its windows return values in the stored range, so
    mapping them to [0, 1] would re-derive that range from BitsStored, PixelRepresentation and the
    rescale.
    """
    seq = ds.get("VOILUTSequence")
    if seq:
        return _voi_lut(values, seq[0]), "voi_lut"
    centres, widths = _floats(ds, "WindowCenter"), _floats(ds, "WindowWidth")
    if centres and widths and widths[0] > 0:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        return _window(values, centres[0], widths[0], function), "window"
    mask = None
    if "PixelPaddingValue" in ds:
        mask = stored != ds.PixelPaddingValue
    return _auto_contrast(values, mask), "auto"


def _frame(ds: pydicom.Dataset, path, warnings: list[str]) -> np.ndarray:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        ds.pixel_array_options(index=0)
        warnings.append(f"multi-frame object ({frames} frames): only the first frame is used")
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            return ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder errors come in many types
        text = str(exc).split(" - ")[0]
        if "less than expected" in text or "shorter" in text:
            raise RadiographError(path, f"pixel data is shorter than the header says ({text})")
        raise RadiographError(path, f"pixel data could not be decoded ({text})") from None


def read_dicom(path: str | Path) -> Radiograph:
    """A DICOM radiograph as a viewer shows it; a damaged header or pixel data is a one-line reason."""
    ds = read_dataset(path)
    try:
        return _read_dicom(path, ds)
    except HeaderValueError as exc:
        raise RadiographError(path, str(exc)) from None


def declared_shape(path, ds: pydicom.Dataset) -> tuple[int, int, int]:
    """(rows, columns, frames) as the header declares them; a size missing or not a positive number is
    a one-line reason."""
    if "Rows" not in ds or "Columns" not in ds:
        raise RadiographError(path, "no image size (Rows/Columns) in the header")
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise RadiographError(path, "damaged header: Rows, Columns or NumberOfFrames is not a number") from None
    if rows <= 0 or columns <= 0:
        raise RadiographError(path, f"damaged header: image size {rows} × {columns}")
    return rows, columns, frames


def _read_dicom(path, ds: pydicom.Dataset) -> Radiograph:
    meta = dataset_metadata(ds)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if claims_image(ds):  # an image whose pixels are gone: the file was cut short
            raise RadiographError(path, "damaged: the header describes an image but its pixel data is missing "
                                        "or cut short (truncated file?)")
        sop = ds.get("SOPClassUID")
        what = f" ({sop.name})" if sop is not None and hasattr(sop, "name") else ""
        raise RadiographError(path, f"no pixel data{what}")
    photometric = meta["photometric_interpretation"] or ""
    if photometric not in GREY + COLOUR:
        raise RadiographError(path, f"unsupported photometric interpretation {photometric or '(none)'}")
    too_large(path, *declared_shape(path, ds))  # before decoding
    _floats(ds, "RescaleSlope"), _floats(ds, "RescaleIntercept")  # numbers, finite: else a reason, not NaN
    warnings: list[str] = []
    stored = _frame(ds, path, warnings)
    if photometric in COLOUR:
        if stored.ndim != 3 or stored.shape[-1] != 3:
            raise RadiographError(path, f"{photometric} pixel data does not have 3 samples")
        # pydicom returns RGB for every colour interpretation; ITU-R BT.601 luma to grey.
        stored = stored.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        warnings.append(f"{photometric} secondary capture converted to grey")
        values = stored
    else:
        if stored.ndim != 2:
            raise RadiographError(path, f"unexpected pixel array shape {stored.shape}")
        values = apply_modality_lut(stored, ds).astype(np.float64)
    display, voi = _voi(stored, values, ds) if photometric in GREY else (_auto_contrast(values, None), "auto")
    inverted = photometric == "MONOCHROME1" or str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
    # In the DX IOD a MONOCHROME1 image carries PresentationLUTShape INVERSE: one fact, stated
    # twice. So either one inverts, once.
    if inverted:
        display = 1.0 - display
    meta.update(voi=voi, inverted=inverted)
    return Radiograph(str(path), check_pixels(path, display.astype(np.float32)), meta, warnings)
