"""A scored folder → DICOM objects a PACS viewer shows: one structured report (Comprehensive 3D SR,
TID 1500) per visit and one presentation state (GSPS) per radiograph, in ``OUT/dicom/``.

They are built from the same decided records as ``corners.csv`` and ``visits.csv``, so the SR says
exactly what the tables say. Both go into the study of their source radiographs, in new series,
with the patient and study modules copied from the source (highdicom does this), so they can only
be made from the original DICOM files, never from a pseudonymised run.

UIDs are derived from the content and the source UIDs: scoring the same films again with the same
models writes the same objects, so a resumed or repeated ``--store`` adds nothing twice to a PACS.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
from highdicom.color import CIELabColor
from highdicom.sr import (
    ContainerContentItem,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    SourceImageForMeasurementGroup,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from tfmssass import __version__
from tfmssass.core import anatomy
from tfmssass.core.atomic import atomic_path
from tfmssass.core.config import PHANTOM_WARNING
from tfmssass.core.errors import UsageError
from tfmssass.core.geometry import corner_marks, cranial_directions
from tfmssass.io import RadiographError
from tfmssass.io.dicom import read_dataset
from tfmssass.pacs import codes as local
from tfmssass.scoring.film import CornerRecord, FilmRecord, LevelRecord, corner_table
from tfmssass.scoring.folder import ScoredFolder
from tfmssass.scoring.run import used_corners
from tfmssass.scoring.settings import Settings
from tfmssass.scoring.totals import for_output, visit_totals

#: Series numbers of the new series (one SR series and one presentation-state series per study).
SR_SERIES_NUMBER, PR_SERIES_NUMBER = 9901, 9902
INDEX_COLUMNS = ["kind", "path", "file", "patient_id", "visit_date", "study_uid", "series_uid", "sop_uid"]
#: Patient and study attributes the new objects copy that DICOM lets be empty (type 2) but not absent.
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "StudyID", "AccessionNumber")
#: What highdicom raises for a source header it cannot reference (an attribute missing or malformed).
HEADER_ERRORS = (AttributeError, KeyError, TypeError, ValueError)
#: A DICOM LO value holds at most 64 characters.
LO = 64

_WHITE, _YELLOW, _MAGENTA = CIELabColor(100, 0, 0), CIELabColor(97, -21, 94), CIELabColor(60, 98, -60)


@dataclass
class Written:
    """What ``write_dicom_objects`` made: ``OUT/dicom/index.csv``'s rows, and films it could not use."""

    rows: list[dict] = field(default_factory=list)
    not_made: list[dict] = field(default_factory=list)  # {"file", "reason"}


def _uid(*parts) -> str:
    return generate_uid(entropy_srcs=["tfmssass-dicom-output", *map(str, parts)])


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _lo(text: str) -> str:
    return text if len(text) <= LO else text[:LO - 1] + "…"


def _described(settings: Settings, text: str) -> str:
    """A series or content description, which says first when the models are phantom-trained."""
    return _lo(("PHANTOM-TRAINED " if settings.phantom else "") + text)


def _why(exc: Exception) -> str:
    """One line on why highdicom refused a source header."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"the source header cannot be referenced ({type(exc).__name__}: {text[:150]})"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _stamp(ds: Dataset, when: _dt.datetime) -> None:
    """Every creation date and time of an object: when the folder's DICOM output was first made."""
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    ds.SeriesDate, ds.SeriesTime = date, time  # viewers sort and group series by it
    for prefix in ("Content", "InstanceCreation", "PresentationCreation"):
        if f"{prefix}Date" in ds:
            setattr(ds, f"{prefix}Date", date)
            setattr(ds, f"{prefix}Time", time)
    for equipment in ds.get("ContributingEquipmentSequence", []):  # highdicom names itself, with a time
        equipment.ContributionDateTime = when.strftime("%Y%m%d%H%M%S")


def _deidentification(ds: Dataset, source: Dataset) -> None:
    """A de-identified source makes a de-identified object, which must say how (PS3.3 C.7.1.1): the
    source's method, or that the source does not record one."""
    if str(source.get("PatientIdentityRemoved", "")).upper() != "YES":
        return
    ds.PatientIdentityRemoved = "YES"
    for keyword in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        if keyword in source:
            setattr(ds, keyword, source[keyword].value)
    if "DeidentificationMethod" not in ds and "DeidentificationMethodCodeSequence" not in ds:
        ds.DeidentificationMethod = "as the source radiograph (its method is not recorded there)"


def _declare_scheme(ds: Dataset) -> None:
    item = Dataset()
    item.CodingSchemeDesignator = local.DESIGNATOR
    item.CodingSchemeName = local.SCHEME_NAME
    item.CodingSchemeVersion = local.SCHEME_VERSION
    item.CodingSchemeResponsibleOrganization = "tfmssass project"
    ds.CodingSchemeIdentificationSequence = [item]


# ---- presentation state: one per radiograph -------------------------------------------------------

def _pixel(point) -> np.ndarray:
    """Record pixels (pixel (0, 0) centred at (0, 0)) → DICOM PIXEL units (its top-left corner at 0)."""
    return np.asarray(point, float) + 0.5


def _corner_text(corner: CornerRecord) -> str:
    vertebra, side = corner.corner.split("_")
    grade = "-" if corner.grade is None else str(corner.grade)
    return f"{vertebra} {side} {grade}{'?' if corner.review else ''}"


def _lut_shape(source: Dataset) -> str:
    """The state's presentation LUT replaces the image's, so it must keep the image's way up: INVERSE for
    a MONOCHROME1 film (bone bright at low values), else what the image says, else IDENTITY. An IDENTITY
    state over a MONOCHROME1 film shows it as a negative."""
    shape = str(source.get("PresentationLUTShape", "")).upper()
    if shape in ("IDENTITY", "INVERSE"):
        return shape
    return "INVERSE" if source.get("PhotometricInterpretation") == "MONOCHROME1" else "IDENTITY"


def presentation_state(source: Dataset, film: FilmRecord, settings: Settings, note: str, when: _dt.datetime) -> Dataset:
    """The radiograph's disk points, each graded corner's grade beside it, review corners ringed and a
    caption, as a GSPS over the stored pixels (nothing burnt in)."""
    names = anatomy.LEVELS[film.view]
    levels = film.levels
    cut = [lv for lv in names if levels[lv].cut]
    centres = np.array([levels[lv].c if lv in cut else [np.nan, np.nan] for lv in names], float)
    ups = dict(zip(names, cranial_directions(centres)))
    corners = {c.corner: c for c in film.corners}
    layers = {name: hd.pr.GraphicLayer(name, order, description, colour) for order, (name, description, colour)
              in enumerate([("POINTS", "disk points (centre, anterior)", _YELLOW),
                            ("GRADES", "mSASSS corner grades", _WHITE),
                            ("REVIEW", "corners to review", _MAGENTA),
                            ("NOTE", "models and subtotal", _WHITE)], start=1)}
    points, texts, rings = [], [], []
    for lv in cut:
        c, a = levels[lv].c, levels[lv].a
        for p in (c, a):
            points.append(hd.pr.GraphicObject("POINT", _pixel(p)[None], "PIXEL"))
        inf_at, sup_at, depth = corner_marks(c, a, ups[lv])
        for corner, at in zip(anatomy.level_corners(lv), (inf_at, sup_at)):
            texts.append(hd.pr.TextObject(_corner_text(corners[corner]), "PIXEL",
                                          anchor_point=tuple(_pixel(at)), anchor_point_visible=False))
            if corners[corner].review:
                radius = 0.3 * depth + 2
                rings.append(hd.pr.GraphicObject("CIRCLE", np.array([_pixel(at), _pixel(at) + (radius, 0)]), "PIXEL"))
    review = sum(c.review for c in film.corners)
    caption = (f"tfmssass {film.view} subtotal {film.score} of 36, {film.corners_graded}/12 "
               f"corners graded, {review} to review ({note})")
    rows, columns = int(source.Rows), int(source.Columns)
    band = max(8, rows // 25)  # a line of text at the top (caption) and at the bottom (warning)
    boxes = [hd.pr.TextObject(caption, "PIXEL", bounding_box=(4, 4, columns - 4, 4 + band))]
    if settings.phantom:
        boxes.append(hd.pr.TextObject(PHANTOM_WARNING, "PIXEL",
                                      bounding_box=(4, rows - 4 - band, columns - 4, rows - 4)))
    annotations = [hd.pr.GraphicAnnotation([source], layers[name], graphic_objects=graphics or None,
                                           text_objects=text or None)
                   for name, graphics, text in (("POINTS", points, []), ("GRADES", [], texts),
                                                ("REVIEW", rings, []), ("NOTE", [], boxes))
                   if graphics or text]
    record = film.to_dict()
    content = {"record": {k: record[k] for k in ("view", "levels", "corners", "score")}, "note": note}
    study = str(source.StudyInstanceUID)
    ds = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[source],
        series_instance_uid=_uid(study, "presentation states", note),
        series_number=PR_SERIES_NUMBER,
        sop_instance_uid=_uid(source.SOPInstanceUID, "presentation state", _digest(content)),
        instance_number=anatomy.VIEWS.index(film.view) + 1,
        manufacturer="tfmssass",
        manufacturer_model_name=_lo(settings.models),
        software_versions=__version__,
        device_serial_number="none",
        content_label="MSASSS",
        content_description=_described(settings, "tfmssass mSASSS grades"),
        graphic_layers=list(layers.values()),
        graphic_annotations=annotations,
        content_creator_name="tfmssass^",
        presentation_lut_transformation=hd.PresentationLUTTransformation(presentation_lut_shape=_lut_shape(source)),
    )
    ds.SeriesDescription = _described(settings, "tfmssass mSASSS grades")
    ds.Laterality = ""  # the spine is not a paired structure (type 2C: present, empty)
    _deidentification(ds, source)
    _stamp(ds, when)
    return ds


# ---- structured report: one per visit -------------------------------------------------------------

def _missing_grade(corner: CornerRecord, level: LevelRecord | None):
    """Why a corner has no grade, as a coded value: judged not gradable, not on the film, or not graded."""
    if corner.not_gradable:
        return local.NOT_GRADABLE
    if level is not None and not level.on_film:
        return local.NOT_ON_FILM
    return local.NOT_GRADED


def _corner_group(corner: CornerRecord, level: LevelRecord | None, source: Dataset,
                  imputed: bool) -> MeasurementsAndQualitativeEvaluations:
    graded = corner.grade is not None
    evaluations = [QualitativeEvaluation(local.GRADE, local.GRADES[corner.grade] if graded else
                                         _missing_grade(corner, level)),
                   QualitativeEvaluation(local.NEEDS_REVIEW, local.YES if corner.review else local.NO)]
    if not graded:
        evaluations.append(QualitativeEvaluation(local.IMPUTED, local.YES if imputed else local.NO))
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=_uid(source.SOPInstanceUID, corner.corner),
                                               identifier=corner.corner),
        finding_type=local.CORNER_FINDING,
        finding_sites=[FindingSite(local.CORNERS[corner.corner])],
        source_images=[SourceImageForMeasurementGroup.from_source_image(source)],
        measurements=[Measurement(local.CONFIDENCE, float(corner.confidence), local.RATIO_UNIT)] if graded else None,
        qualitative_evaluations=evaluations,
    )


def _totals_group(visit: pd.Series | None, sources: list[Dataset], key: str) -> MeasurementsAndQualitativeEvaluations:
    """The visit's subtotals and mSASSS as numbers; one that cannot be computed (a view missing, or more
    than 3 corners of a segment not graded) is said to be so, in a coded item, never written as a number."""
    get = (lambda name: None) if visit is None else visit.get
    measurements, not_computed = [], []
    for name, column, unit in [*((local.SUBTOTALS[v], v, local.SCORE_UNIT) for v in anatomy.VIEWS),
                               (local.TOTAL, "msasss", local.SCORE_UNIT),
                               (local.CORNERS_GRADED, "corners_graded", local.RATIO_UNIT),
                               (local.CORNERS_IMPUTED, "imputed", local.RATIO_UNIT)]:
        value = get(column)
        if value is not None and pd.notna(value):
            measurements.append(Measurement(name, float(value), unit))
        else:
            not_computed.append(QualitativeEvaluation(name, local.NOT_COMPUTED))
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=_uid(key, "visit totals"), identifier="visit totals"),
        finding_type=local.VISIT_TOTALS,
        source_images=[SourceImageForMeasurementGroup.from_source_image(s) for s in sources],
        measurements=measurements or None,
        qualitative_evaluations=not_computed or None,
    )


def _describable(source: Dataset) -> bool:
    """Whether highdicom can describe a radiograph in the report's image library (optional in TID 1500;
    it needs the orientation and detector pitch, which older films often lack)."""
    return "PatientOrientation" in source and "ImagerPixelSpacing" in source and len(source.PatientOrientation) == 2


def _imputed_corners(visit: pd.Series | None, view: str, corners: list[CornerRecord]) -> set[str]:
    """The ungraded corners that the visit's segment total imputes (:mod:`tfmssass.scoring.totals`)."""
    if visit is None or pd.isna(visit.get(view)):
        return set()
    return {c.corner for c in corners if c.grade is None}


def structured_report(films: list[tuple[FilmRecord, Dataset]], visit: pd.Series | None, settings: Settings, note: str,
                      when: _dt.datetime) -> Dataset:
    """TID 1500 measurement report of one visit: a group per corner of each film used (grade or "not
    graded", review, imputed), a group with the visit's subtotals and mSASSS, the models as the device
    observer and a note on them. It goes into the study of the visit's first film."""
    groups = []
    for film, source in films:
        imputed = _imputed_corners(visit, film.view, film.corners)
        groups += [_corner_group(c, film.levels.get(c.level), source, c.corner in imputed) for c in film.corners]
    sources = [source for _, source in films]
    key = "|".join(str(s.SOPInstanceUID) for s in sources)
    groups.append(_totals_group(visit, sources, key))
    device = ObserverContext(observer_type=codes.DCM.Device,
                             observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
                                 uid=_uid("device", settings.models), name="tfmssass",
                                 manufacturer_name="tfmssass", model_name=_lo(settings.models)))
    report = MeasurementReport(observation_context=ObservationContext(observer_device_context=device),
                               procedure_reported=local.PROCEDURE, imaging_measurements=groups,
                               title=codes.DCM.ImagingMeasurementReport,
                               referenced_images=sources if all(map(_describable, sources)) else None)
    notes = ContainerContentItem(name=hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations"),
                                 relationship_type="CONTAINS")
    notes.ContentSequence = [TextContentItem(local.MODEL_NOTE, note, relationship_type="CONTAINS")]
    report[0].ContentSequence.append(notes)
    content = {"films": [{k: d[k] for k in ("view", "corners")} for d in (f.to_dict() for f, _ in films)], "note": note,
               "visit": None if visit is None else visit.to_dict()}
    study = str(sources[0].StudyInstanceUID)
    ds = hd.sr.Comprehensive3DSR(
        evidence=sources, content=report,
        series_instance_uid=_uid(study, "structured reports", note), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_uid(key, "structured report", _digest(content)), instance_number=1,
        manufacturer="tfmssass", is_complete=True,
        series_description=_described(settings, "tfmssass mSASSS report"),
    )
    _declare_scheme(ds)
    _deidentification(ds, sources[0])
    ds.SoftwareVersions = __version__
    _stamp(ds, when)
    return ds


# ---- the folder -----------------------------------------------------------------------------------

def _source_root(folder: ScoredFolder) -> Path:
    root = folder.source().get("root")
    if root is None:
        raise UsageError(f"{folder.root}: a pseudonymised run cannot write DICOM objects (they must reference "
                         "the originals)")
    return Path(root)


def _read_source(root: Path, film: FilmRecord) -> Dataset | str:
    """The source radiograph's header, or why there is none to reference."""
    path = root / film.file if root.is_dir() else root
    try:
        ds = read_dataset(path, stop_before_pixels=True)
    except RadiographError as exc:
        return f"no DICOM objects: {exc.reason}"
    except OSError as exc:
        return f"no DICOM objects: {exc.strerror or exc}"
    if "SOPInstanceUID" not in ds or "StudyInstanceUID" not in ds:
        return "no DICOM objects: the source is not a DICOM radiograph with UIDs"
    for keyword in TYPE2_COPIED:  # present but empty where the source leaves them out, as DICOM allows
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _save(ds: Dataset, path: Path) -> None:
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _presentation_name(film: FilmRecord) -> str:
    """``<patient>_<date>_<view>_<8 hex of the file>.pr.dcm``: readable, and unique per input file."""
    tag = hashlib.sha1(film.file.encode()).hexdigest()[:8]
    return f"{_safe(film.patient_id)}_{film.visit_date}_{film.view}_{tag}.pr.dcm"


def write_dicom_objects(out, settings: Settings | None = None) -> Written:
    """``OUT/dicom/``: an SR per visit and a GSPS per scored radiograph, and ``index.csv`` listing them.
    Objects left from an earlier content are removed; films without a DICOM source are listed in
    ``Written.not_made``."""
    scored = ScoredFolder(out)
    out = scored.root
    settings = settings or scored.settings()
    root = _source_root(scored)
    note = settings.models_note
    with scored.writing():
        when = scored.dicom_created()
        films, not_used, _ = scored.decided_records(settings)
        return _write_objects(out, root, films, not_used, settings, note, when)


def _write_objects(out: Path, root: Path, films: list[FilmRecord], not_used: dict, settings: Settings, note: str,
                   when: _dt.datetime) -> Written:
    corners, _ = corner_table(films)
    # rounded as visits.csv rounds them (totals.for_output), so the report and the table say the same number
    visits = for_output(visit_totals(used_corners(corners, not_used), settings.impute)).set_index(
        ["patient_id", "visit_date"])
    folder = out / "dicom"
    written = Written()
    by_visit: dict[tuple, list] = {}
    unreferenced: dict[tuple, list] = {}  # films a visit's totals count that no object can cite
    for film in films:
        if not film.scored:
            continue
        source = _read_source(root, film)
        visit_key = (film.patient_id, film.visit_date)
        if isinstance(source, str):
            written.not_made.append({"file": film.file, "reason": source})
            unreferenced.setdefault(visit_key, []).append(film.file)
            continue
        try:
            ds = presentation_state(source, film, settings, note, when)
        except HEADER_ERRORS as exc:
            written.not_made.append({"file": film.file, "reason": f"no DICOM objects: {_why(exc)}"})
            unreferenced.setdefault(visit_key, []).append(film.file)
            continue
        path = folder / _presentation_name(film)
        _save(ds, path)
        written.rows.append(_row("presentation state", path, out, film.file, film.patient_id, film.visit_date, ds))
        if film.file not in not_used:
            by_visit.setdefault(visit_key, []).append((film, source))
    for (patient, date), visit_films in sorted(by_visit.items()):
        if missing := [f for f in unreferenced.get((patient, date), []) if f not in not_used]:
            written.not_made.append({"file": "; ".join(f.file for f, _ in visit_films),
                                     "reason": f"no structured report for {patient} on {date}: its totals count "
                                               f"{', '.join(missing)}, which it cannot cite"})
            continue
        visit_films.sort(key=lambda fs: anatomy.VIEWS.index(fs[0].view))
        visit = visits.loc[(patient, date)] if (patient, date) in visits.index else None
        try:
            ds = structured_report(visit_films, visit, settings, note, when)
        except HEADER_ERRORS as exc:
            written.not_made.append({"file": "; ".join(f.file for f, _ in visit_films),
                                     "reason": f"no structured report for {patient} on {date}: {_why(exc)}"})
            continue
        path = folder / f"{_safe(patient)}_{date}.sr.dcm"
        _save(ds, path)
        written.rows.append(_row("structured report", path, out, "; ".join(f.file for f, _ in visit_films),
                                 patient, date, ds))
    keep = {Path(r["path"]).name for r in written.rows}
    for stale in folder.glob("*.dcm"):
        if stale.name not in keep:
            stale.unlink()
    with atomic_path(folder / "index.csv") as tmp:
        pd.DataFrame(written.rows, columns=INDEX_COLUMNS).to_csv(tmp, index=False)
    return written


def _row(kind: str, path: Path, out: Path, file: str, patient_id: str, visit_date: str, ds: Dataset) -> dict:
    return {"kind": kind, "path": path.relative_to(out).as_posix(), "file": file, "patient_id": patient_id,
            "visit_date": visit_date, "study_uid": str(ds.StudyInstanceUID),
            "series_uid": str(ds.SeriesInstanceUID), "sop_uid": str(ds.SOPInstanceUID)}
