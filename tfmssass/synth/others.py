"""Films that are not lateral cervical or lumbar radiographs, as a hospital export mixes them in: AP
cervical and AP lumbar spine, lateral thoracic spine and lateral chest. Stage 1 learns them as
negatives (``tfmssass synth --negatives N`` writes them, ``tfmssass prepare --negatives`` takes them).

Plausible, not masterpieces. Each has what could pass for a spine at a glance, a column of bodies
and disks, and what a reader tells it apart by: in AP the bodies are wide, with pedicle rings and
midline spinous processes, the mandible and clavicles or the iliac wings; a thoracic spine curves
the other way under ribs and lungs; a lateral chest is mostly lung, heart and diaphragm. Their
headers say what they are, except that the AP films carry no ViewPosition (as many exports do not),
so only the image tells.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from tfmssass.synth.phantoms import (
    DIFFICULTIES,
    Acquisition,
    Body,
    Canvas,
    Case,
    _blur,
    _blur_coarse,
    _placement,
    _rng,
    _smooth_noise,
    build_spine,
    draw_bodies,
    expose,
    plan_acquisition,
    visit_dates,
    write_case,
)

OTHER_KINDS = ("ap_cervical", "ap_lumbar", "lateral_thoracic", "lateral_chest")
#: Negatives are numbered from here in the seeded streams and UIDs, apart from the phantom patients.
NEGATIVE_BASE = 100_000
#: Body width (left to right) against its depth (front to back): what an AP film shows instead.
WIDTH_FACTOR = {"cervical": 1.6, "lumbar": 1.4}


@dataclasses.dataclass(frozen=True)
class OtherCase(Case):
    """One negative film: ``view`` is its kind (:data:`OTHER_KINDS`), ``patient`` counts from NEGATIVE_BASE."""

    @property
    def patient_id(self) -> str:
        return f"PX{self.patient - NEGATIVE_BASE + 1:04d}"

    def relative_path(self, date: str) -> str:
        return f"other/{self.view}/{self.patient_id}.dcm"


def other_case(seed: int, index: int, kind: str, difficulty: str, style: str = "geometric") -> OtherCase:
    return OtherCase(seed, NEGATIVE_BASE + index, 0, kind, difficulty, style=style)


def plan_other(case: OtherCase) -> tuple[dict, Acquisition, np.random.Generator]:
    """(the negatives.csv row without the image path, acquisition, the stream rendering continues)."""
    rng = _rng(case.seed, case.patient, 8, OTHER_KINDS.index(case.view))
    acq = plan_acquisition(case.view, rng, DIFFICULTIES[case.difficulty])
    row = {"patient_id": case.patient_id, "visit_date": visit_dates(case.seed, case.patient, 1)[0],
           "kind": case.view, "image_height": acq.height, "image_width": acq.width,
           "pixel_spacing_mm": round(acq.spacing, 4), "photometric": acq.monochrome, "difficulty": case.difficulty}
    return row, acq, rng


def make_other(case: OtherCase) -> tuple[np.ndarray, dict, Acquisition]:
    """Render one negative film: (display image, row, acquisition), as :func:`~.phantoms.make_case`."""
    row, acq, rng = plan_other(case)
    finish = expose if case.style == "geometric" else _through_the_chain(case)
    if case.view.startswith("ap_"):
        display = _render_ap(case.view[3:], acq, rng, finish)
    else:
        display = _render_thoracic(case.view == "lateral_chest", acq, rng, finish)
    return display, row, acq


def _through_the_chain(case: OtherCase):
    """For the radiograph style: the drawn layers through its image chain and a presentation look, so a
    negative is not told apart from a lateral film by its processing."""
    from tfmssass.synth.radiograph import process_layers

    return lambda tissue, dense, acq, rng: process_layers(tissue, dense, acq, case)


def write_other(case: OtherCase, out: Path) -> dict:
    return write_case(case, out, make=make_other)


def _ellipse(centre, rx: float, ry: float, n: int = 32) -> np.ndarray:
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.asarray(centre) + np.stack([np.cos(ang) * rx, np.sin(ang) * ry], 1)


def _soft_tissue(cv: Canvas, bodies: list[Body], front: float, back: float, value: float, rng) -> np.ndarray:
    """A smooth band of soft tissue from ``back`` mm behind to ``front`` mm before the spine's axis."""
    layer = cv.layer()
    top, bottom = bodies[0], bodies[-1]
    axis = (top.axis + bottom.axis) / 2
    side = (top.anterior + bottom.anterior) / 2
    mid = (top.centre + bottom.centre) / 2
    length = np.linalg.norm(bottom.centre - top.centre) + 500
    cv.fill(layer, np.array([mid + side * front - axis * length / 2, mid + side * front + axis * length / 2,
                             mid - side * back + axis * length / 2, mid - side * back - axis * length / 2]), 1.0)
    layer = _blur_coarse(layer, 20 / cv.spacing)
    return layer * (value + 0.12 * _smooth_noise(rng, layer.shape, 6))


def _render_ap(spine: str, acq: Acquisition, rng, finish=expose) -> np.ndarray:
    """A frontal cervical or lumbar film: wide bodies, pedicle rings, spinous processes in the midline."""
    bodies = build_spine(spine, rng, float(rng.uniform(0.9, 1.1)), curve_deg=float(rng.uniform(-8, 8)))
    bodies = [dataclasses.replace(b, depth=b.depth * WIDTH_FACTOR[spine]) for b in bodies]
    cv = Canvas(acq.height, acq.width, _placement(bodies, acq))
    half_width = 55.0 if spine == "cervical" else 150.0
    tissue = _soft_tissue(cv, bodies, half_width, half_width, 0.55, rng)
    bone, extra = cv.layer(), cv.layer()
    draw_bodies(cv, bone, None, bodies, {}, {}, spine, rng)
    for b in bodies:
        w, h = b.depth, b.height
        for side in (-1, 1):
            ring = [b.point(*p) for p in _ellipse((side * 0.3 * w, -0.1 * h), 0.08 * w, 0.17 * h)]
            cv.line(bone, np.array(ring + ring[:1]), 0.3, max(1, int(1.5 / cv.spacing)))
            if spine == "lumbar":  # transverse processes
                tip = side * (0.5 * w + rng.uniform(12, 22))
                cv.line(extra, np.array([b.point(side * 0.45 * w, -0.1 * h), b.point(tip, -0.05 * h)]), 0.3,
                        max(1, int(0.22 * h / cv.spacing)))
            else:  # lateral masses: a wavy column beside the bodies
                cv.fill(extra, np.array([b.point(*p) for p in _ellipse((side * 0.68 * w, 0.1 * h), 0.14 * w,
                                                                       0.55 * h)]), 0.3)
        cv.fill(extra, np.array([b.point(*p) for p in _ellipse((0, 0.42 * h), 0.07 * w, 0.2 * h)]), 0.3)
    top, bottom = bodies[0], bodies[-1]
    if spine == "cervical":
        air = cv.layer()  # the trachea in the midline
        cv.line(air, np.array([bodies[2].point(0, 0), bottom.point(0, 60)]), 1.0, int(16 / cv.spacing))
        tissue -= 0.2 * _blur(air, 3 / cv.spacing)
        jaw = [top.point(math.cos(a) * 50, -25 + math.sin(a) * 35) for a in np.linspace(0.15, np.pi - 0.15, 20)]
        cv.line(extra, np.array(jaw), 0.5, int(9 / cv.spacing))
        for side in (-1, 1):  # clavicles and first ribs
            c = bottom.point(0, rng.uniform(15, 30))
            clavicle = [c + np.array([side * (12 + t * 110), -8 * math.sin(t * 3) + t * 10]) for t in np.linspace(0, 1, 12)]
            cv.line(extra, np.array(clavicle), 0.5, int(11 / cv.spacing))
            rib = [bottom.point(side * (20 + 70 * math.sin(a)), 5 + 40 * (1 - math.cos(a))) for a in np.linspace(0, 1.6, 12)]
            cv.line(extra, np.array(rib), 0.3, int(7 / cv.spacing))
    else:
        for side in (-1, 1):  # iliac wings over the lowest levels, psoas edges along the spine
            wing = _ellipse(bottom.point(side * rng.uniform(75, 100), rng.uniform(-20, 10)), 55, 70)
            cv.fill(extra, wing, 0.22)
            cv.line(extra, np.vstack([wing, wing[:1]]), 0.3, int(5 / cv.spacing))  # its cortical rim
            psoas = [top.point(side * 0.6 * top.depth, 0), bottom.point(side * (0.6 * bottom.depth + 35), 0)]
            cv.line(extra, np.array(psoas), 0.06, int(6 / cv.spacing))
        gas = cv.layer()
        for _ in range(int(rng.integers(3, 9))):
            b = bodies[int(rng.integers(0, len(bodies)))]
            cv.fill(gas, _ellipse(b.point(rng.uniform(-140, 140), rng.uniform(-30, 30)), rng.uniform(8, 25),
                                  rng.uniform(6, 18)), 1.0)
        tissue -= 0.2 * _blur(gas, 2 / cv.spacing)
    bone *= 1.0 + 0.12 * _smooth_noise(rng, bone.shape, 60)
    return finish(tissue, bone + _blur_coarse(extra, 2 / cv.spacing), acq, rng)


def _render_thoracic(chest: bool, acq: Acquisition, rng, finish=expose) -> np.ndarray:
    """A lateral thoracic spine (kyphotic, under ribs and lungs), or a lateral chest around it."""
    bodies = build_spine("thoracic", rng, float(rng.uniform(0.9, 1.1)))
    cv = Canvas(acq.height, acq.width, _placement(bodies, acq))
    tissue = _soft_tissue(cv, bodies, 190.0, 75.0, 0.6, rng)
    top, bottom = bodies[0], bodies[-1]
    lungs = cv.layer()
    lung = [top.point(-30, -70), top.point(150, -50), bottom.point(170, 10), bottom.point(80, 45),
            bottom.point(10, 60), bottom.point(-35, 50)]  # the lower edge is the diaphragm's domes
    cv.fill(lungs, np.array(lung), 1.0)
    tissue -= 0.38 * _blur_coarse(lungs, 12 / cv.spacing)
    heart = cv.layer()
    cv.fill(heart, _ellipse(bodies[5].point(110, 10), 55, 60), 1.0)
    tissue += 0.22 * _blur_coarse(heart, 10 / cv.spacing)
    bone, posterior, extra = cv.layer(), cv.layer(), cv.layer()
    draw_bodies(cv, bone, posterior, bodies, {}, {}, "thoracic", rng)
    for b in bodies:  # ribs bow backwards, then sweep down and forwards; the two sides nearly superimposed
        for offset in (0.0, rng.uniform(4, 12)):
            start = b.point(-b.depth * 1.1, offset)
            rib = [start + (200 * t - 25 * math.sin(math.pi * t)) * b.anterior + 90 * t**2 * b.axis
                   for t in np.linspace(0, 1, 14)]
            cv.line(extra, np.array(rib), 0.1, int(6 / cv.spacing))
    cv.fill(extra, np.array([top.point(-45, -40), top.point(-15, -30), bodies[4].point(-25, 30)]), 0.15)  # scapula
    if chest:  # the sternum in front
        cv.line(extra, np.array([top.point(185, -30), bodies[6].point(175, 20)]), 0.3, int(9 / cv.spacing))
    bone *= 1.0 + 0.12 * _smooth_noise(rng, bone.shape, 60)
    dense = bone + 0.45 * _blur(posterior, 1 / cv.spacing) + _blur_coarse(extra, 1.5 / cv.spacing)
    return finish(tissue, dense, acq, rng)
