"""The radiograph style of ``tfmssass synth``: a lateral film drawn as the projection of a 3-D patient
through a physical image chain, with exact labels.

Plan and render are apart, as in the geometric style: :func:`plan_film` decides everything that the
labels need (the patient, the beam, the exposure, which corners are on the film and which are hidden);
:func:`render_film` turns the plan into pixels. A corner is ``NG`` when what covers it leaves too few
photons to see it: its contrast-to-noise over a 2 × 2 mm patch, from the drawn attenuation, the exposure
and the scatter, is below the Rose criterion (:data:`ROSE`). The structure that covers it is named in
the ``findings`` column (``C7_inf:hidden by shoulders``).

Streams: the spine's midline comes from the same seeded draws as the geometric style; everything this
style adds comes from streams of its own, patient-level (the same at every visit) or visit-level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tfmssass.core import anatomy
from tfmssass.core.atomic import atomic_path
from tfmssass.io.labels import NOT_GRADABLE
from tfmssass.synth import anatomy3d as a3
from tfmssass.synth.detector import Exposure, detect, draw_exposure, log_image, photons_at, present
from tfmssass.synth.lesions3d import Degeneration, draw_degeneration, draw_distractors, draw_lesions
from tfmssass.synth.phantoms import (
    DIFFICULTIES,
    Acquisition,
    Body,
    Canvas,
    Case,
    _grade1_features,
    _placement,
    _rng,
    build_spine,
    patient_course,
    phantom_dataset,
    plan_acquisition,
    side_marker_alpha,
    visit_dates,
)
from tfmssass.synth.projection import Beam, BodySolid, Raster
from tfmssass.synth.variants import EDGE_MARGIN_MM, Variant, cut_rows, draw_metal, draw_variant, level_on_film

#: Revision of this style's drawing, in synth.json (the geometric style keeps its own).
RENDERING = 5
#: Patient rotation about the long axis and sideways tilt (degrees, uniform ±) by difficulty.
TURN_DEG = {"easy": (1.5, 1.0), "realistic": (4.0, 3.0), "hard": (7.0, 5.0)}
#: Source to midsagittal plane (mm): lateral cervical films are taken from 1.5-1.8 m, lumbar from about 1 m.
SOURCE_MM = {"cervical": (1500.0, 1830.0), "lumbar": (1000.0, 1150.0)}
#: A corner whose contrast-to-noise over a 2 × 2 mm patch is below this cannot be seen (Rose criterion).
ROSE = 5.0
#: Attenuation per unit of the metal layer :func:`~tfmssass.synth.variants.draw_metal` draws (opaque).
METAL_SCALE = 2.0


@dataclass
class FilmPlan:
    """Everything about a radiograph-style film but its pixels."""

    case: Case
    row: dict
    bodies: list[Body]
    patient: a3.Patient3D
    density: float  # trabecular bone density
    beam: Beam
    acq: Acquisition
    exposure: Exposure
    variant: Variant
    rows: tuple[int, int]
    raster: Raster  # the detector's pixels (the whole film, before a cut)
    reference: float  # attenuation behind the spine the exposure control aimed at


def _view_index(case: Case) -> int:
    return anatomy.VIEWS.index(case.view)


def build_patient(case: Case, grades: dict[str, int], acq: Acquisition, deg: Degeneration
                  ) -> tuple[list[Body], a3.Patient3D, float, Variant]:
    """The 3-D patient of one visit (``grades``: its corners'): spine, posterior elements, neighbours,
    lesions and distractors."""
    vi = _view_index(case)
    severity = float(_rng(case.seed, case.patient, 0).beta(0.8, 2.2))  # patient_course's first draw
    variant = draw_variant(_rng(case.seed, case.patient, 7, case.visit, vi), case.view, case.unusual)
    size = float(_rng(case.seed, case.patient, 3).uniform(0.9, 1.1))
    bodies = build_spine(case.view, _rng(case.seed, case.patient, 2, vi), size, variant.posture_deg,
                         variant.last_disk_scale, disk_scales=deg.narrowed)
    for i, b in enumerate(bodies):
        b.wedge = a3.WEDGE.get(b.name, 0.0) + (deg.fracture[1] if deg.fracture and deg.fracture[0] == i else 0.0)
    shape = a3.draw_shape(_rng(case.seed, case.patient, 10, vi), case.view, len(bodies), severity)
    fr = a3.frames(bodies, shape)
    corners = anatomy.CORNERS[case.view]
    features = {c: _grade1_features(_rng(case.seed, case.patient, 11, vi, k))
                for k, c in enumerate(corners) if grades[c] == 1}
    squared = {c for c in corners if grades[c] >= 2 or "squaring" in features.get(c, ())}
    patient = a3.Patient3D(bodies=a3.body_solids(case.view, bodies, fr, shape, squared))
    a3.posterior_elements(patient, case.view, bodies, fr, _rng(case.seed, case.patient, 13, vi))
    visit_rng = _rng(case.seed, case.patient, 14, case.visit, vi)
    if case.view == "cervical":
        drop = visit_rng.uniform(-15, 15) if acq.overlap else visit_rng.uniform(28, 50)
        a3.cervical_neighbours(patient, bodies, fr, _rng(case.seed, case.patient, 15, vi), drop)
    else:
        a3.lumbar_neighbours(patient, bodies, fr, _rng(case.seed, case.patient, 15, vi), acq.overlap, visit_rng)
    draw_lesions(patient, case.view, bodies, fr, grades, features, acq.lesion_strength,
                 _rng(case.seed, case.patient, 16, case.visit, vi))
    draw_distractors(patient, case.view, bodies, fr, grades, deg, _rng(case.seed, case.patient, 17, vi))
    patient.frames = fr
    return bodies, patient, shape.density, variant


def attenuation_at(patient: a3.Patient3D, beam: Beam, density: float, plane: np.ndarray) -> np.ndarray:
    """Total attenuation of the rays through plane points [N, 2]: what a label needs, without rendering."""
    pts = np.asarray(plane, float).reshape(-1, 2)
    qx, qy = pts[:, 0], pts[:, 1]
    total = np.zeros(len(pts))
    carve = np.zeros(len(pts))
    for part in patient.parts:
        value = part.mu * part.solid.chord(beam, qx, qy)
        if part.group == "carve":
            carve += value
        else:
            total += value
    for solid in patient.bodies.values():
        total += _body_attenuation(solid, beam, density, qx, qy)
    return total - carve


def _body_attenuation(solid: BodySolid, beam: Beam, density: float, qx, qy, texture=None) -> np.ndarray:
    """Cortex (the shell between the body and its interior) plus trabecular bone (textured when given)."""
    outer = solid.chord(beam, qx, qy)
    inner = solid.shrunk(_shell(solid)).chord(beam, qx, qy)
    trabecular = a3.TRABECULAR * density * inner
    if texture is not None:
        trabecular = trabecular * texture
    return a3.CORTEX * (outer - inner) + trabecular


def _shell(solid: BodySolid) -> float:
    return a3.SHELL_MM["cervical"] if solid.front < 12 else a3.SHELL_MM["lumbar"]


def hidden_corners(patient: a3.Patient3D, beam: Beam, density: float, exposure: Exposure, reference: float,
                   spacing: float, corners_on_film: dict[str, tuple[np.ndarray, np.ndarray, str]]) -> dict[str, str]:
    """Corners too starved of photons to see, and what covers each (the named part that adds most there).

    A corner's signal is its own body's contrast: the photons its bone takes out a quarter of the way from
    the corner to the body's centre, against a tenth of that distance outside. Its noise is the quantum
    noise of what arrives there through everything else, plus the scatter, over a 2 × 2 mm patch.
    ``corners_on_film``: corner → (plane point, vector to the body's centre, body name)."""
    hidden: dict[str, str] = {}
    if not corners_on_film:
        return hidden
    scatter = exposure.scatter * float(photons_at(reference, reference, exposure))
    outside = np.array([point - 0.1 * into for point, into, _ in corners_on_film.values()])
    arrivals = photons_at(attenuation_at(patient, beam, density, outside), reference, exposure)
    for arriving, (corner, (point, into, body)) in zip(arrivals, corners_on_film.items()):
        pts = np.array([point + 0.25 * into, point - 0.1 * into])
        own = _body_attenuation(patient.bodies[body], beam, density, pts[:, 0], pts[:, 1])
        signal = float(arriving) * (1 - math.exp(-abs(float(own[0] - own[1]))))
        if signal * (2.0 / spacing) / math.sqrt(arriving + scatter) >= ROSE:
            continue
        cover: dict[str, float] = {}
        for part in patient.parts:
            if part.name and part.mu > 0 and part.group in ("cover", "bone"):
                cover[part.name] = cover.get(part.name, 0.0) + part.mu * float(part.solid.chord(beam, *point[:, None])[0])
        what, amount = max(cover.items(), key=lambda kv: kv[1], default=("", 0.0))
        hidden[corner] = what if amount > 0.3 else "underexposure"
    return hidden


def plan_film(case: Case) -> FilmPlan:
    diff = DIFFICULTIES[case.difficulty]
    vi = _view_index(case)
    date = visit_dates(case.seed, case.patient, case.visit + 1)[case.visit]
    acq = plan_acquisition(case.view, _rng(case.seed, case.patient, 4, case.visit, vi), diff)
    deg = draw_degeneration(_rng(case.seed, case.patient, 12, vi), case.view, diff.distractors)
    grades = patient_course(case.seed, case.patient, case.visit + 1)[case.visit]
    bodies, patient, density, variant = build_patient(case, grades, acq, deg)
    extra = _rng(case.seed, case.patient, 9, case.visit, vi)
    turn, tilt = TURN_DEG[case.difficulty]
    pivot = np.mean([b.centre for b in bodies], axis=0)
    beam = Beam(float(extra.uniform(*SOURCE_MM[case.view])), float(extra.uniform(-turn, turn)),
                float(extra.uniform(-tilt, tilt)), (float(pivot[0]), float(pivot[1])))
    exposure = draw_exposure(extra, case.view, float(extra.uniform(*diff.noise)), acq.blur_mm, acq.spacing)
    raster = Raster(acq.height, acq.width, _placement(bodies, acq))
    rows = cut_rows(variant, bodies, raster.to_px, acq.height)
    middle = bodies[len(bodies) // 2]
    reference = float(attenuation_at(patient, beam, density, np.array([middle.centre]))[0])

    row: dict = {"patient_id": case.patient_id, "visit_date": date, "view": case.view}
    off_film, plated, visible = set(), set(), {}
    for j, level in enumerate(anatomy.LEVELS[case.view]):
        up, low = bodies[j], bodies[j + 1]
        c3 = {w: a3.corner3(b, patient.frames[k], w) for b, k, w in
              ((up, j, "ia"), (up, j, "ip"), (low, j + 1, "sa"), (low, j + 1, "sp"))}
        plane = {w: beam.to_plane(p)[0] for w, p in c3.items()}
        centre = (plane["ia"] + plane["ip"] + plane["sa"] + plane["sp"]) / 4
        front = (plane["ia"] + plane["sa"]) / 2
        outline = raster.px(np.array([centre, front, plane["ia"], plane["sa"]]))
        on_film = level_on_film(outline, rows, acq.width, EDGE_MARGIN_MM / acq.spacing)
        (cx, cy), (ax, ay) = outline[:2] - np.array([0.0, rows[0]])
        for col, value in zip(anatomy.keypoint_columns(level), (cx, cy, ax, ay)):
            row[col] = round(float(value), 2) if on_film else None
        names = anatomy.level_corners(level)
        if not on_film:
            off_film.update(names)
        elif j in variant.plated:
            plated.update(names)
        else:
            for name, w, body in ((names[0], "ia", up), (names[1], "sa", low)):
                k = j if w == "ia" else j + 1
                visible[name] = (plane[w], beam.to_plane(patient.frames[k].centre)[0] - plane[w], body.name)
    hidden = hidden_corners(patient, beam, density, exposure, reference, acq.spacing, visible)
    for corner in anatomy.CORNERS[case.view]:
        unseen = corner in plated or corner in hidden
        row[corner] = None if corner in off_film else NOT_GRADABLE if unseen else grades[corner]
    findings = [f"{where}:{kind}" for where, kind in patient.findings]
    findings += [f"{corner}:hidden by {what}" for corner, what in sorted(hidden.items())]
    photometric = {"film": "MONOCHROME2", "for_processing": "MONOCHROME1"}.get(exposure.look, acq.monochrome)
    row.update(image_height=rows[1] - rows[0], image_width=acq.width, pixel_spacing_mm=round(acq.spacing, 4),
               facing=acq.facing, photometric=photometric, difficulty=case.difficulty)
    if case.unusual > 0:
        row["variant"] = variant.describe(anatomy.LEVELS[case.view])
    row.update(look=exposure.look, findings=";".join(findings))
    return FilmPlan(case, row, bodies, patient, density, beam, acq, exposure, variant, rows, raster, reference)


# ----------------------------------------------------------------------------------------------
# Pixels
# ----------------------------------------------------------------------------------------------


def _scaled(raster: Raster, factor: int) -> Raster:
    """The same film at 1/``factor`` resolution (pixel centres kept aligned)."""
    m = raster.to_px.copy() / factor
    m[:, 2] += 0.5 / factor - 0.5
    return Raster(math.ceil(raster.height / factor), math.ceil(raster.width / factor), m)


def _tier(part: a3.Part) -> int:
    """Resolution factor a part is drawn at: soft tissue and gas are smooth, large thin bones nearly so."""
    radii = part.solid.radii
    if part.group == "tissue" or (part.group == "cover" and part.mu == a3.SOFT):
        return 4 if min(radii) >= 5 else 1
    return 2 if max(radii) > 40 else 1


def _texture(rng: np.random.Generator, size: int = 320) -> np.ndarray:
    """Trabecular texture: vertical plates and struts (anisotropic noise), mean 1."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), sigmaX=0.8, sigmaY=2.6)
    tex += 0.5 * cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 2.0)
    tex /= float(tex.std()) + 1e-6
    return 1.0 + 0.22 * np.clip(tex, -2.5, 2.5)


def attenuation_image(plan: FilmPlan, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The line integral at each detector pixel (everything) and of the soft tissue alone."""
    fine = plan.raster
    coarse, medium = _scaled(fine, 4), _scaled(fine, 2)
    layers = {1: fine, 2: medium, 4: coarse}
    drawn = {k: np.zeros((r.height, r.width), np.float32) for k, r in layers.items()}
    carve = np.zeros_like(drawn[1])
    for part in plan.patient.parts:
        tier = 1 if part.group == "carve" else _tier(part)
        part.solid.add_to(carve if part.group == "carve" else drawn[tier], layers[tier], plan.beam, part.mu)
    texture = _texture(rng)
    bone = drawn[1]
    for k, solid in enumerate(plan.patient.bodies.values()):
        centre, radius = solid.plane_extent(plan.beam)
        win = fine.window(centre, radius)
        if win is None:
            continue
        gx, gy = fine.plane_grid(win)
        u, v = solid.local_uv(plan.beam, gx, gy)
        step = 0.3  # mm per texel
        offset = 40 + 23 * k
        tex = cv2.remap(texture, (u / step + offset).astype(np.float32), (v / step + offset + 11 * k).astype(np.float32),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        bone[win] += _body_attenuation(solid, plan.beam, plan.density, gx, gy, tex).astype(np.float32)
    size = (fine.width, fine.height)
    soft = cv2.resize(drawn[4], size, interpolation=cv2.INTER_LINEAR)
    total = soft + np.maximum(bone + cv2.resize(drawn[2], size, interpolation=cv2.INTER_LINEAR) - carve, 0)
    if plan.variant.plated:
        metal = np.zeros_like(total)
        draw_metal(Canvas(fine.height, fine.width, fine.to_px), metal, plan.bodies, plan.variant, rng)
        total += METAL_SCALE * metal
    return total, soft


def _field_and_marks(detected: np.ndarray, plan: FilmPlan, rng: np.random.Generator) -> np.ndarray:
    """Collimation (outside the field almost no photons arrive) and the lead side marker; returns the
    mask of the exposed field."""
    h, w = detected.shape
    field = np.zeros((h, w), bool)
    if plan.acq.collimation:
        x0, x1 = int(w * rng.uniform(0.0, 0.06)), int(w * rng.uniform(0.94, 1.0))
        y0, y1 = int(h * rng.uniform(0.0, 0.05)), int(h * rng.uniform(0.95, 1.0))
        field[y0:y1, x0:x1] = True
        detected[~field] *= 0.02
    else:
        field[:] = True
    detected *= 1.0 - 0.97 * side_marker_alpha((h, w), plan.acq.facing, rng)
    return field


def _burn_text(image: np.ndarray, plan: FilmPlan, rng: np.random.Generator) -> None:
    """Burned-in annotation as consoles print it: phantom id, date, view, technique."""
    h, w = image.shape
    scale = max(h, w) / 1800
    lines = [plan.case.patient_id, plan.row["visit_date"], f"{plan.case.view.upper()} LAT",
             f"{plan.exposure.kvp:.0f} kV  PHANTOM"]
    x = int(w * (0.04 if rng.random() < 0.5 else 0.62))
    y0 = int(h * (0.04 if rng.random() < 0.5 else 0.86))
    mask = np.zeros((h, w), np.uint8)
    for k, text in enumerate(lines):
        cv2.putText(mask, text, (x, y0 + int(k * 34 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                    max(1, int(scale * 2)), cv2.LINE_AA)
    alpha = mask.astype(np.float32) / 255.0
    image *= 1 - alpha
    image += alpha * 0.97


def _near_spine(plan: FilmPlan, reach_mm: float) -> np.ndarray:
    """Pixels within ``reach_mm`` of the line through the body centres: where processing sets its
    window, as a console's region-of-interest detection would."""
    centres = plan.raster.px(plan.beam.to_plane(np.array([[*b.centre, 0.0] for b in plan.bodies])))
    mask = np.zeros((plan.acq.height, plan.acq.width), np.uint8)
    cv2.polylines(mask, [np.round(centres).astype(np.int32)], False, 1, int(2 * reach_mm / plan.acq.spacing))
    return mask.astype(bool)


#: Attenuation of the geometric style's layers in this chain's units: its soft tissue layer (about 0.55
#: across a neck or abdomen) and its dense layer (cortex 0.6).
GEOMETRIC_SOFT, GEOMETRIC_DENSE = 8.0, 0.8
PRESENTATION_LOOKS = ("multiscale", "unsharp", "plain")


def process_layers(tissue: np.ndarray, dense: np.ndarray, acq: Acquisition, case: Case) -> np.ndarray:
    """A geometric-style drawing (the negatives' AP, thoracic and chest films) through this style's image
    chain and one of its presentation looks: display image in [0, 1]."""
    rng = _rng(case.seed, case.patient, 19, case.visit)
    diff = DIFFICULTIES[case.difficulty]
    exposure = draw_exposure(rng, "lumbar", float(rng.uniform(*diff.noise)), acq.blur_mm, acq.spacing,
                             looks=PRESENTATION_LOOKS)
    soft = GEOMETRIC_SOFT * tissue
    total = soft + GEOMETRIC_DENSE * dense
    h, w = total.shape
    centre = total[h // 3:2 * h // 3, w // 3:2 * w // 3]
    reference = float(np.median(centre))
    log = log_image(detect(total, reference, exposure, acq.spacing, rng), exposure)
    mask = np.zeros((h, w), bool)
    mask[h // 6:5 * h // 6, w // 6:5 * w // 6] = True
    return present(log, exposure, mask & (soft > 1.0), acq.spacing, rng)


def render_film(plan: FilmPlan) -> tuple[np.ndarray, np.ndarray]:
    """(the processed image in [0, 1], bone bright; the log exposure before processing), cut to the rows
    the film keeps."""
    case = plan.case
    rng = _rng(case.seed, case.patient, 18, case.visit, _view_index(case))
    total, soft = attenuation_image(plan, rng)
    detected = detect(total, plan.reference, plan.exposure, plan.acq.spacing, rng)
    field = _field_and_marks(detected, plan, rng)
    log = log_image(detected, plan.exposure)
    anatomy_mask = field & _near_spine(plan, 45.0 if case.view == "cervical" else 70.0)
    if plan.exposure.look == "for_processing":
        image = log
    else:
        image = present(log, plan.exposure, anatomy_mask, plan.acq.spacing, rng)
        if plan.exposure.text:
            _burn_text(image, plan, rng)
    return image[plan.rows[0]:plan.rows[1]], log[plan.rows[0]:plan.rows[1]]


# ----------------------------------------------------------------------------------------------
# DICOM
# ----------------------------------------------------------------------------------------------

DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: Detector air kerma (µGy) per photon per pixel behind the patient, for the exposure index (IEC 62494-1:
#: EI = 100 × kerma in µGy); the target is what the exposure control aims at.
KERMA_PER_PHOTON, TARGET_EI = 0.0025, 250.0


def _exposure_tags(ds, plan: FilmPlan, log: np.ndarray) -> None:
    """Technique and dose indicators as a console writes them."""
    exp = plan.exposure
    detected = float(np.exp(-np.median(log))) * exp.photons * exp.error
    ei = 100 * KERMA_PER_PHOTON * detected
    ds.KVP = f"{exp.kvp:.0f}"
    ds.ExposureIndex = f"{ei:.0f}"
    ds.TargetExposureIndex = f"{TARGET_EI:.0f}"
    ds.DeviationIndex = f"{10 * math.log10(max(ei, 1e-3) / TARGET_EI):.2f}"
    ds.Grid = "FOCUSED" if exp.grid else "NONE"
    ds.Manufacturer = exp.manufacturer
    ds.ManufacturerModelName = f"{exp.model} (tfmssass phantom {plan.case.difficulty})"
    ds.BurnedInAnnotation = "YES"  # the lead side marker, and often the console's text


def film_dataset(plan: FilmPlan, image: np.ndarray, log: np.ndarray):
    """The data set of a radiograph-style film in its look: DX for presentation, DX for processing, or a
    secondary capture of a digitised film."""
    import dataclasses

    case, exp = plan.case, plan.exposure
    if exp.look == "film":
        return _digitised_film(plan, image)
    if exp.look == "for_processing":  # raw: values rise with exposure; MONOCHROME1 shows bone white
        lo, hi = np.percentile(log[:: 7, :: 7], [0.05, 99.95])
        acq = dataclasses.replace(plan.acq, monochrome="MONOCHROME1")
        ds = phantom_dataset(case, np.clip((log - lo) / max(hi - lo, 1e-6), 0, 1), plan.row, acq)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DX_FOR_PROCESSING
        ds.PresentationIntentType = "FOR PROCESSING"
        for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction"):
            delattr(ds, keyword)
        ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LOG", 1
    else:
        ds = phantom_dataset(case, image, plan.row, plan.acq)
    _exposure_tags(ds, plan, log)
    return ds


def _digitised_film(plan: FilmPlan, image: np.ndarray):
    """A film scanned to 12 bits: secondary capture, Modality OT, no calibrated spacing (only the
    scanner's pitch at the film)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from tfmssass.synth.phantoms import FILM_HEADERS, PHANTOM_NOTE, _add_patient_and_study, _uid

    case = plan.case
    sop = _uid(case.seed, case.patient, case.visit, case.view, "sop")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, sop
    ds.Modality = "OT"
    ds.ConversionType = "DF"
    _add_patient_and_study(ds, case, plan.row["visit_date"])
    body_part, _, description = FILM_HEADERS[case.view]
    ds.BodyPartExamined = body_part
    ds.StudyDescription = description
    ds.SeriesDescription = "digitised film"
    ds.PatientOrientation = ["A" if plan.acq.facing == "right" else "P", "F"]
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ImageComments = PHANTOM_NOTE
    ds.BurnedInAnnotation = "YES"
    ds.Manufacturer = plan.exposure.manufacturer
    ds.SecondaryCaptureDeviceManufacturer = plan.exposure.manufacturer
    ds.SecondaryCaptureDeviceManufacturerModelName = plan.exposure.model
    pitch = plan.acq.spacing * 1.1  # the film lies at the detector: magnified, not calibrated
    ds.NominalScannedPixelSpacing = [f"{pitch:.6f}", f"{pitch:.6f}"]
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.clip(np.rint(image * 4095), 0, 4095).astype(np.uint16).tobytes()
    return ds


def write_film(case: Case, out: Path) -> dict:
    """Plan, render and write one radiograph-style film; its label row (with the image path)."""
    plan = plan_film(case)
    image, log = render_film(plan)
    ds = film_dataset(plan, image, log)
    rel = case.relative_path(plan.row["visit_date"])
    with atomic_path(out / rel) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return {"image": rel, **plan.row}
