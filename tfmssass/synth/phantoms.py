"""Spine phantoms: lateral cervical and lumbar radiographs with known disk points and corner grades.

No real radiographs exist here, so this generator is the test bed. It is meant to be hard
enough that a broken pipeline fails on it. Anatomy is built in millimetres in a spine frame
(+x anterior, +y caudal). Vertebral bodies are rounded quadrilaterals stacked through wedged disks
(lordosis). Attenuation is additive, so overlapping structures sum as they do in an X-ray. One
affine places everything on the detector: spacing, rotation, facing left/right, position.

Grades follow a skewed cohort distribution and never decrease between a patient's visits; a bridge
(grade 3) always takes both corners of its disk. Corners hidden behind the shoulders or under an
implant are labelled ``NG`` (not gradable), corners of levels off a cut film blank (not read), never 0.
Every random draw comes from a generator seeded by (seed, patient, visit, view), so the same seed gives
byte-identical files in any order or process.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tfmssass import __version__
from tfmssass.core import anatomy
from tfmssass.core.atomic import atomic_path
from tfmssass.io.labels import NOT_GRADABLE
from tfmssass.synth.variants import EDGE_MARGIN_MM, Variant, cut_rows, draw_metal, draw_variant, level_on_film

VERTEBRAE = {
    "cervical": ("C2", "C3", "C4", "C5", "C6", "C7", "T1"),
    "lumbar": ("T12", "L1", "L2", "L3", "L4", "L5", "S1"),
    "thoracic": ("T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11"),  # for films we do not grade
}

# Typical adult sizes in mm: body height, body depth (anterior-posterior), disk height.
BODY_HEIGHT = {
    "C2": 16, "C3": 13, "C4": 13, "C5": 13, "C6": 13.5, "C7": 14.5, "T1": 16,
    "T12": 24, "L1": 25.5, "L2": 27, "L3": 28, "L4": 28, "L5": 27, "S1": 30,
    "T4": 17, "T5": 17.5, "T6": 18, "T7": 19, "T8": 20, "T9": 21, "T10": 22, "T11": 23,
}
BODY_DEPTH = {
    "C2": 15, "C3": 15.5, "C4": 16, "C5": 16.5, "C6": 17, "C7": 17.5, "T1": 18.5,
    "T12": 31, "L1": 33, "L2": 35, "L3": 36.5, "L4": 37.5, "L5": 38, "S1": 40,
    "T4": 22, "T5": 23, "T6": 24, "T7": 25, "T8": 26, "T9": 27, "T10": 28, "T11": 29.5,
}
DISK_HEIGHT = {"cervical": (4.5, 4.8, 5.0, 5.2, 5.0, 4.6), "lumbar": (7.5, 8.5, 9.5, 10.5, 11.0, 10.0),
               "thoracic": (4.0, 4.0, 4.5, 4.5, 5.0, 5.0, 5.5)}
#: Share of the total lordosis taken by each disk's wedge (L5-S1 carries most of the lumbar curve).
WEDGE_SHARE = {"cervical": (0.14, 0.17, 0.19, 0.19, 0.17, 0.14), "lumbar": (0.06, 0.1, 0.15, 0.2, 0.22, 0.27),
               "thoracic": (1 / 7,) * 7}
LORDOSIS_DEG = {"cervical": (15.0, 40.0), "lumbar": (40.0, 65.0), "thoracic": (-55.0, -30.0)}  # <0: kyphosis
#: Height and width of the field, and detector pixel spacing, per kind of film (the other kinds:
#: :mod:`tfmssass.synth.others`).
FIELD_MM = {"cervical": (230.0, 190.0), "lumbar": (400.0, 320.0), "ap_cervical": (230.0, 190.0),
            "ap_lumbar": (400.0, 320.0), "lateral_thoracic": (400.0, 260.0), "lateral_chest": (420.0, 380.0)}
SPACING_MM = {"cervical": (0.10, 0.15), "lumbar": (0.14, 0.19), "ap_cervical": (0.10, 0.15),
              "ap_lumbar": (0.14, 0.19), "lateral_thoracic": (0.14, 0.19), "lateral_chest": (0.15, 0.2)}


@dataclass(frozen=True)
class Difficulty:
    """How far acquisitions and lesions stray from textbook ones."""

    rotation_deg: float  # global rotation, uniform ±
    noise: tuple[float, float]  # quantum noise level range
    blur_mm: tuple[float, float]  # unsharpness (Gaussian sigma) range
    lesion_strength: tuple[float, float]  # 1 = clear lesion; lower is subtler
    distractors: float  # probability of a degenerative osteophyte on a grade 0/1 corner
    overlap: float  # probability that shoulders / iliac crests overlap the lowest levels
    collimation: float  # probability of visible collimator edges


DIFFICULTIES = {
    "easy": Difficulty(5.0, (0.004, 0.008), (0.15, 0.3), (1.0, 1.2), 0.0, 0.0, 0.3),
    "realistic": Difficulty(15.0, (0.008, 0.02), (0.25, 0.55), (0.7, 1.1), 0.06, 0.35, 0.6),
    "hard": Difficulty(15.0, (0.015, 0.035), (0.4, 0.8), (0.5, 0.9), 0.15, 0.6, 0.8),
}


# ----------------------------------------------------------------------------------------------
# Grades: patients, visits, progression
# ----------------------------------------------------------------------------------------------


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


def first_visit_grades(rng: np.random.Generator, severity: float) -> dict[str, int]:
    """A cohort-like baseline: mostly 0, some 1, few 2, bridges in severe patients (both corners)."""
    grades: dict[str, int] = {}
    for level in anatomy.ALL_LEVELS:
        upper, lower = anatomy.level_corners(level)
        if rng.random() < 0.45 * severity**2:
            grades[upper] = grades[lower] = 3
            continue
        for corner in (upper, lower):
            p2 = 0.03 + 0.32 * severity
            p1 = 0.12 + 0.33 * severity
            grades[corner] = int(rng.choice(4, p=[1 - p1 - p2, p1, p2, 0.0]))
    return grades


def progress_grades(rng: np.random.Generator, grades: dict[str, int], severity: float) -> dict[str, int]:
    """Two years on: some corners move up one grade; a disk with a syndesmophyte may bridge."""
    new = dict(grades)
    rate = 0.04 + 0.3 * severity
    for level in anatomy.ALL_LEVELS:
        upper, lower = anatomy.level_corners(level)
        if new[upper] == 3:
            continue
        if max(new[upper], new[lower]) == 2 and rng.random() < 0.5 * rate:
            new[upper] = new[lower] = 3
            continue
        for corner in (upper, lower):
            if new[corner] < 2 and rng.random() < rate:
                new[corner] += 1
    return new


def patient_course(seed: int, patient: int, visits: int) -> list[dict[str, int]]:
    rng = _rng(seed, patient, 0)
    severity = float(rng.beta(0.8, 2.2))
    course = [first_visit_grades(rng, severity)]
    for _ in range(visits - 1):
        course.append(progress_grades(rng, course[-1], severity))
    return course


def visit_dates(seed: int, patient: int, visits: int) -> list[str]:
    rng = _rng(seed, patient, 1)
    day = _dt.date(2008, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 12 * 365)))
    dates = []
    for _ in range(visits):
        dates.append(day.isoformat())
        day += _dt.timedelta(days=int(rng.integers(640, 820)))  # about every two years
    return dates


# ----------------------------------------------------------------------------------------------
# Anatomy in millimetres (spine frame: +x anterior, +y caudal)
# ----------------------------------------------------------------------------------------------


@dataclass
class Body:
    name: str
    centre: np.ndarray  # mm
    theta: float  # tilt of the caudal axis towards anterior, radians
    height: float
    depth: float
    wedge: float = 0.0  # anterior height is height × (1 - wedge), posterior height × (1 + wedge)

    @property
    def axis(self) -> np.ndarray:  # unit vector cranial → caudal
        return np.array([math.sin(self.theta), math.cos(self.theta)])

    @property
    def anterior(self) -> np.ndarray:  # unit vector posterior → anterior
        return np.array([math.cos(self.theta), -math.sin(self.theta)])

    def point(self, x: float, y: float) -> np.ndarray:
        """Local (x anterior, y caudal, mm from the body centre) → spine frame."""
        return self.centre + x * self.anterior + y * self.axis

    def corner(self, which: str) -> np.ndarray:
        """Geometric corner: 'sa' superior-anterior, 'sp', 'ia' inferior-anterior, 'ip'."""
        x = self.depth / 2 if which[1] == "a" else -self.depth / 2
        half = self.height / 2 * ((1 - self.wedge) if which[1] == "a" else (1 + self.wedge))
        return self.point(x, -half if which[0] == "s" else half)


def build_spine(view: str, rng: np.random.Generator, size: float, posture_deg: float = 0.0,
                last_disk_scale: float = 1.0, curve_deg: float | None = None,
                disk_scales: dict[int, float] | None = None) -> list[Body]:
    """Vertebral bodies from cranial to caudal, stacked through wedged disks. ``posture_deg`` is added to
    the drawn lordosis (flexion, extension); ``last_disk_scale`` scales the lowest disk (transitional);
    ``curve_deg`` replaces the lordosis (a frontal view's slight scoliosis); ``disk_scales`` scales the
    disks it names by level index (degenerate narrowing)."""
    names = VERTEBRAE[view]
    lordosis = math.radians(rng.uniform(*LORDOSIS_DEG[view]) + posture_deg)
    if curve_deg is not None:
        lordosis = math.radians(curve_deg)
    theta = lordosis * rng.uniform(0.35, 0.55)
    bodies: list[Body] = []
    bottom = np.zeros(2)  # centre of the previous inferior endplate
    for i, name in enumerate(names):
        height = BODY_HEIGHT[name] * size * rng.uniform(0.95, 1.05)
        depth = BODY_DEPTH[name] * size * rng.uniform(0.95, 1.05)
        if i == 0:
            centre = np.zeros(2)
        else:
            disk = DISK_HEIGHT[view][i - 1] * size * rng.uniform(0.85, 1.15)
            disk *= last_disk_scale if i == len(names) - 1 else 1.0
            disk *= (disk_scales or {}).get(i - 1, 1.0)
            prev_theta = theta
            theta -= lordosis * WEDGE_SHARE[view][i - 1] * rng.uniform(0.8, 1.2)
            mean_axis = np.array([math.sin((theta + prev_theta) / 2), math.cos((theta + prev_theta) / 2)])
            top = bottom + disk * mean_axis
            centre = top + height / 2 * np.array([math.sin(theta), math.cos(theta)])
        body = Body(name, centre, theta, height, depth)
        bottom = body.point(0, height / 2)
        bodies.append(body)
    return bodies


def level_points(upper: Body, lower: Body) -> tuple[np.ndarray, np.ndarray]:
    """Disk centre (centroid of the four endplate corners) and anterior disk point (mm)."""
    ia, ip, sa, sp = upper.corner("ia"), upper.corner("ip"), lower.corner("sa"), lower.corner("sp")
    return (ia + ip + sa + sp) / 4.0, (ia + sa) / 2.0


# ----------------------------------------------------------------------------------------------
# Shapes (local body coordinates, mm)
# ----------------------------------------------------------------------------------------------


def body_outline(depth: float, height: float, radii: dict[str, float], sag: dict[str, float],
                 n_arc: int = 8, n_edge: int = 10) -> np.ndarray:
    """Closed outline of a body: rounded corners, slightly concave edges. Local coords [N, 2].

    Corners are quadratic Bézier curves with the geometric corner as control point; ``radii``
    (per corner 'sa', 'ia', 'ip', 'sp') says how far from the corner the rounding starts.
    """
    order = ("sa", "ia", "ip", "sp")  # around the body: front top, front bottom, back bottom, back top
    pos = {"sa": (depth / 2, -height / 2), "ia": (depth / 2, height / 2),
           "ip": (-depth / 2, height / 2), "sp": (-depth / 2, -height / 2)}
    edge_after = {"sa": "anterior", "ia": "inferior", "ip": "posterior", "sp": "superior"}
    limit = 0.45 * min(depth, height)

    def towards(frm: np.ndarray, to: np.ndarray, dist: float) -> np.ndarray:
        step = to - frm
        return frm + step * (dist / max(np.linalg.norm(step), 1e-9))

    pieces = []
    for k, name in enumerate(order):
        here, before = np.array(pos[name]), np.array(pos[order[k - 1]])
        nxt_name = order[(k + 1) % 4]
        nxt = np.array(pos[nxt_name])
        r = min(radii[name], limit)
        start, end = towards(here, before, r), towards(here, nxt, r)
        t = np.linspace(0, 1, n_arc)[:, None]
        pieces.append((1 - t) ** 2 * start + 2 * (1 - t) * t * here + t**2 * end)
        edge_end = towards(nxt, here, min(radii[nxt_name], limit))
        t = np.linspace(0, 1, n_edge + 2)[1:-1, None]
        line = end + (edge_end - end) * t
        outward = (here + nxt) / 2
        outward = outward / max(np.linalg.norm(outward), 1e-9)
        pieces.append(line - outward * sag[edge_after[name]] * 4 * t * (1 - t))
    return np.concatenate(pieces, axis=0)


def spur(base: np.ndarray, direction: np.ndarray, outward: np.ndarray, length: float,
         thickness: float, bow: float, n: int = 12) -> np.ndarray:
    """A thin tapering bony spur from ``base`` along ``direction``, bowing towards ``outward``."""
    t = np.linspace(0, 1, n)
    centre = base[None] + np.outer(t * length, direction) + np.outer(bow * np.sin(np.pi * t), outward)
    half = thickness / 2 * (1 - 0.6 * t)
    left = centre + np.outer(half, outward)
    right = centre - np.outer(half, outward)
    return np.concatenate([left, right[::-1]], axis=0)


def bridge(top: np.ndarray, bottom: np.ndarray, outward: np.ndarray, thickness: float,
           bow: float, n: int = 16) -> np.ndarray:
    """A continuous bony band joining two corners, bowing anteriorly."""
    t = np.linspace(0, 1, n)
    centre = top[None] + np.outer(t, bottom - top) + np.outer(bow * np.sin(np.pi * t), outward)
    half = thickness / 2 * (0.8 + 0.2 * np.cos(np.pi * (t - 0.5)))
    left, right = centre + np.outer(half, outward), centre - np.outer(half, outward)
    return np.concatenate([left, right[::-1]], axis=0)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


class Canvas:
    """Float layers at detector resolution; shapes arrive in mm and are placed by one affine."""

    def __init__(self, height: int, width: int, to_px: np.ndarray):
        self.height, self.width, self.to_px = height, width, to_px

    def px(self, pts_mm: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts_mm, float).reshape(-1, 2)
        return pts @ self.to_px[:, :2].T + self.to_px[:, 2]

    @property
    def spacing(self) -> float:
        """mm per pixel of the placement."""
        return 1.0 / float(np.hypot(*self.to_px[:, 0]))

    def layer(self) -> np.ndarray:
        return np.zeros((self.height, self.width), np.float32)

    def fill(self, layer: np.ndarray, pts_mm: np.ndarray, value: float) -> None:
        poly = np.round(self.px(pts_mm) * 16).astype(np.int32)  # 4 bits of sub-pixel precision
        cv2.fillPoly(layer, [poly], float(value), lineType=cv2.LINE_AA, shift=4)

    def line(self, layer: np.ndarray, pts_mm: np.ndarray, value: float, width_px: int) -> None:
        poly = np.round(self.px(pts_mm) * 16).astype(np.int32)
        cv2.polylines(layer, [poly], False, float(value), max(1, width_px), cv2.LINE_AA, shift=4)


def _smooth_noise(rng, shape, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] at ``shape`` from a coarse random grid."""
    h, w = shape
    gh, gw = max(2, h * cells // max(h, w)), max(2, w * cells // max(h, w))
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) / 2.5, -1, 1)


def _blur(layer: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px < 0.3:
        return layer
    return cv2.GaussianBlur(layer, (0, 0), sigma_px)


def _blur_coarse(layer: np.ndarray, sigma_px: float) -> np.ndarray:
    """Wide blur done at 1/8 scale: soft tissue needs smooth edges, not detail."""
    h, w = layer.shape
    small = cv2.resize(layer, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(sigma_px / 8, 0.5))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass
class Acquisition:
    """Everything about one exposure that is not anatomy."""

    spacing: float
    height: int
    width: int
    rotation: float  # degrees
    facing: str  # 'right' (anterior to +x) or 'left'
    offset: tuple[float, float]  # px, position of the spine's top body centre
    noise: float
    blur_mm: float
    gamma: float
    exposure: float
    lesion_strength: float
    monochrome: str
    bits_stored: int
    collimation: bool
    overlap: bool


def plan_acquisition(view: str, rng: np.random.Generator, diff: Difficulty) -> Acquisition:
    """Detector, exposure and positioning of one film (``view`` is any key of :data:`FIELD_MM`)."""
    spacing = rng.uniform(*SPACING_MM[view])
    fh, fw = FIELD_MM[view]
    height = int(np.clip(fh * rng.uniform(0.9, 1.1) / spacing, 1500, 3000))
    width = int(np.clip(fw * rng.uniform(0.9, 1.1) / spacing, 1500, 3000))
    return Acquisition(
        spacing=spacing, height=height, width=width,
        rotation=float(rng.uniform(-diff.rotation_deg, diff.rotation_deg)),
        facing="right" if rng.random() < 0.5 else "left",
        offset=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.0, 1.0))),  # fractions of free room
        noise=float(rng.uniform(*diff.noise)), blur_mm=float(rng.uniform(*diff.blur_mm)),
        gamma=float(rng.uniform(0.8, 1.25)), exposure=float(rng.uniform(0.85, 1.2)),
        lesion_strength=float(rng.uniform(*diff.lesion_strength)),
        monochrome="MONOCHROME1" if rng.random() < 0.25 else "MONOCHROME2",
        bits_stored=int(rng.choice([12, 14, 16])),
        collimation=bool(rng.random() < diff.collimation),
        overlap=bool(rng.random() < diff.overlap),
    )


def _placement(bodies: list[Body], acq: Acquisition) -> np.ndarray:
    """2x3 affine mm → px: scale by spacing, mirror for facing, rotate, and place in the field."""
    scale = 1.0 / acq.spacing
    mirror = -1.0 if acq.facing == "left" else 1.0
    angle = math.radians(acq.rotation)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    linear = rot @ np.diag([mirror * scale, scale])
    # the spine's extent (bodies, posterior elements, anterior margin) decides where it can go
    extent = []
    for b in bodies:
        for x in (-b.depth * 1.9, b.depth * 0.8):
            for y in (-b.height * 0.8, b.height * 0.8):
                extent.append(b.point(x, y))
    pts = np.array(extent) @ linear.T
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    margin = 0.06 * np.array([acq.width, acq.height])
    room_lo = margin - lo
    room_hi = np.array([acq.width, acq.height]) - margin - hi
    frac = np.array(acq.offset)
    shift = room_lo + np.clip(room_hi - room_lo, 0, None) * frac
    if np.any(room_hi < room_lo):  # too big for the field: centre it
        shift = np.where(room_hi < room_lo, (room_lo + room_hi) / 2, shift)
    return np.hstack([linear, shift[:, None]])


#: Attenuation of the shoulders drawn below the cervical spine, and of shoulders raised over C6-T1 (both
#: sides' soft tissue and the humeral heads in the beam: they wash out what lies beneath).
SHOULDER_DENSITY, SHOULDER_OVER_SPINE_DENSITY = 0.6, 2.4
#: A corner under at least this much of the raised shoulders' attenuation cannot be seen: labelled NG.
SHOULDER_HIDES = 1.2


def render(view: str, bodies: list[Body], grades: dict[str, int], acq: Acquisition,
           rng: np.random.Generator, diff: Difficulty, variant: Variant = Variant()
           ) -> tuple[np.ndarray, np.ndarray, set[str]]:
    """Display image (float32, bone bright, [0, 1]), the affine mm → px used, and the corners the
    shoulders hide (their drawn attenuation at the corner decides, not which level it is)."""
    to_px = _placement(bodies, acq)
    cv = Canvas(acq.height, acq.width, to_px)
    px_per_mm = 1.0 / acq.spacing
    s = acq.lesion_strength

    tissue, bone, posterior = cv.layer(), cv.layer(), cv.layer()
    hidden: set[str] = set()
    top, bottom = bodies[0], bodies[-1]
    axis_mid = (top.axis + bottom.axis) / 2

    # soft tissue: neck column or abdomen, generous and smooth
    if view == "cervical":
        depth_ant, depth_post = 38.0, 75.0
    else:
        depth_ant, depth_post = 150.0, 90.0
    length = np.linalg.norm(bottom.centre - top.centre) + 400
    mid = (top.centre + bottom.centre) / 2
    ant = (top.anterior + bottom.anterior) / 2
    body_poly = np.array([
        mid + ant * depth_ant * 1.0 - axis_mid * length / 2,
        mid + ant * depth_ant * 1.15 + axis_mid * length / 2,
        mid - ant * depth_post * 1.1 + axis_mid * length / 2,
        mid - ant * depth_post - axis_mid * length / 2,
    ])
    cv.fill(tissue, body_poly, 1.0)
    tissue = _blur_coarse(tissue, 25 * px_per_mm)
    tissue *= 0.55 + 0.12 * _smooth_noise(rng, tissue.shape, 6)
    if view == "cervical":  # airway anterior to the bodies
        air = cv.layer()
        path = [b.point(b.depth / 2 + rng.uniform(9, 14), 0) for b in bodies[1:6]]
        cv.line(air, np.array(path), 1.0, int(rng.uniform(10, 16) * px_per_mm))
        tissue -= 0.18 * _blur_coarse(air, 4 * px_per_mm)
    else:  # bowel gas, anterior, random blobs
        gas = cv.layer()
        for _ in range(int(rng.integers(3, 9))):
            b = bodies[int(rng.integers(0, len(bodies)))]
            c = b.point(b.depth / 2 + rng.uniform(15, 120), rng.uniform(-30, 30))
            ang = np.linspace(0, 2 * np.pi, 24)
            r = rng.uniform(8, 25) * (1 + 0.25 * np.sin(3 * ang + rng.uniform(0, 6)))
            cv.fill(gas, c + np.stack([np.cos(ang) * r, np.sin(ang) * r * 0.7], 1), 1.0)
        tissue -= 0.2 * _blur(gas, 2 * px_per_mm)

    features = {c: _grade1_features(rng) for c in anatomy.CORNERS[view] if grades[c] == 1}
    draw_bodies(cv, bone, posterior, bodies, grades, features, view, rng)
    _draw_lesions(cv, bone, bodies, grades, features, view, s, rng, diff)
    bone *= 1.0 + 0.12 * _smooth_noise(rng, bone.shape, 60)  # trabecular texture
    extra = cv.layer()
    if view == "lumbar":
        for _ in range(2):  # ribs near T12-L1
            c = bodies[0].point(-bodies[0].depth * rng.uniform(0.2, 1.2), rng.uniform(-30, 10))
            path = [c + np.array([math.cos(a) * 140, math.sin(a) * 60]) for a in np.linspace(2.6, 3.6, 10)]
            cv.line(extra, np.array(path), 0.35, int(7 * px_per_mm))
    if view == "cervical":  # the shoulders: over C7-T1 when they overlap, else below it (always on a real film)
        # an overlap draws from the film's stream; shoulders clear of the spine from their own, so a
        # film drawn before they were added keeps every other pixel
        drop = rng.uniform(-15, 15) if acq.overlap else np.random.default_rng(
            [acq.height, acq.width, int(acq.rotation * 1e3) % 100000]).uniform(25, 40)
        c = bodies[-1].point(0, drop)
        ang = np.linspace(0, 2 * np.pi, 40)
        density = SHOULDER_OVER_SPINE_DENSITY if acq.overlap else SHOULDER_DENSITY
        cv.fill(extra, c + np.stack([np.cos(ang) * 130, np.sin(ang) * 30 + 20], 1), density)
        extra = _blur_coarse(extra, 8 * px_per_mm)
        if acq.overlap:
            hidden = _hidden_corners(cv, extra, bodies)
    if acq.overlap and view == "lumbar":  # iliac crest over L4-S1
        c = bodies[-2].point(-rng.uniform(0, 30), rng.uniform(0, 20))
        path = [c + np.array([math.cos(a) * 90, math.sin(a) * 70]) for a in np.linspace(3.6, 5.8, 16)]
        cv.line(extra, np.array(path), 0.4, int(9 * px_per_mm))

    metal = None
    if variant.plated:
        metal = cv.layer()
        draw_metal(cv, metal, bodies, variant, rng)
    return expose(tissue, bone + 0.45 * _blur(posterior, 1.0 * px_per_mm) + extra, acq, rng, metal), to_px, hidden


def _hidden_corners(cv: Canvas, shoulders: np.ndarray, bodies: list[Body]) -> set[str]:
    """The corners of a cervical spine under at least :data:`SHOULDER_HIDES` of the shoulders' attenuation."""
    hidden = set()
    for j, level in enumerate(anatomy.LEVELS["cervical"]):  # level j: body j's lower corner, body j+1's upper
        for name, corner in zip(anatomy.level_corners(level), (bodies[j].corner("ia"), bodies[j + 1].corner("sa"))):
            x, y = np.rint(cv.px(corner[None])[0]).astype(int)
            inside = 0 <= y < shoulders.shape[0] and 0 <= x < shoulders.shape[1]
            if inside and shoulders[y, x] >= SHOULDER_HIDES:
                hidden.add(name)
    return hidden


def expose(tissue: np.ndarray, dense: np.ndarray, acq: Acquisition, rng, metal: np.ndarray | None = None
           ) -> np.ndarray:
    """Attenuation layers → the display image (float32, [0, 1]) a detector's processing gives: unsharpness,
    exposure, a window set on the patient (so metal saturates), gamma, quantum noise, heel effect,
    collimator edges and the side marker."""
    blur_px = acq.blur_mm * (1.0 / acq.spacing)
    atten = tissue + _blur(dense if metal is None else dense + metal, blur_px)
    display = 1.0 - np.exp(-1.3 * acq.exposure * np.clip(atten, 0, None))
    patient = display if metal is None else display[metal < 0.01]
    display = display / max(float(np.percentile(patient, 99.8)), 1e-3)
    display = np.clip(display, 0, 1) ** acq.gamma
    # quantum noise is stronger where fewer photons arrive (bright = attenuating)
    noise = rng.standard_normal(display.shape, dtype=np.float32)
    display += acq.noise * (0.6 + display) * _blur(noise, 0.7)
    display += 0.03 * ((np.arange(acq.height, dtype=np.float32) / acq.height) - 0.5)[:, None]  # heel effect
    if acq.collimation:
        display = _collimate(display, rng)
    _side_marker(display, acq, rng)
    return np.clip(display, 0, 1).astype(np.float32)



def draw_bodies(cv: Canvas, bone: np.ndarray, posterior: np.ndarray | None, bodies: list[Body], grades: dict,
                features: dict, view: str, rng) -> None:
    """Each body's cortex and marrow, its posterior elements (into ``posterior``; None for a frontal view),
    the dens on C2, the sacrum on S1."""
    cortical, cancellous = 0.6, 0.28  # attenuation: cortex clearly brighter than the marrow
    for b in bodies:
        radii, sag = _body_shape(b, grades, features, view, rng)
        outline = body_outline(b.depth, b.height, radii, sag)
        cv.fill(bone, np.array([b.point(*p) for p in outline]), cortical)
        t = max(0.7, 0.06 * min(b.depth, b.height))
        inner = body_outline(b.depth - 2 * t, b.height - 2 * t,
                             {n: max(r - t, 0.2) for n, r in radii.items()}, sag)
        cv.fill(bone, np.array([b.point(*p) for p in inner]), cancellous * rng.uniform(0.9, 1.1))
        if posterior is not None:
            _posterior_elements(cv, posterior, b, view, rng)
        if b.name == "C2":  # the dens rises from the C2 body: what makes C2 recognisable
            dens = body_outline(b.depth * 0.42, b.height * 0.95,
                                {n: b.depth * 0.16 for n in ("sa", "sp")} | {"ia": 0.5, "ip": 0.5},
                                {"anterior": 0, "posterior": 0, "superior": 0, "inferior": 0})
            shift = np.array([-b.depth * 0.12, -b.height * 0.9])
            cv.fill(bone, np.array([b.point(*(p + shift)) for p in dens]), 0.65)
        if b.name == "S1":  # sacrum continues caudally and posteriorly
            sac = [b.point(-b.depth / 2, b.height / 2), b.point(b.depth / 2, b.height / 2),
                   b.point(b.depth * 0.15, b.height * 2.6), b.point(-b.depth * 0.55, b.height * 2.4)]
            cv.fill(bone, np.array(sac), 0.55)


def _body_shape(b: Body, grades: dict[str, int], features: dict[str, set[str]], view: str, rng):
    """Corner radii and edge concavity: normal corners are rounded, AS corners squared."""
    base = 0.14 * min(b.depth, b.height) if view == "cervical" else 0.11 * min(b.depth, b.height)
    radii = {n: base * rng.uniform(0.85, 1.15) for n in ("sa", "ia", "ip", "sp")}
    sag = {"anterior": 0.05 * b.height * rng.uniform(0.7, 1.3), "posterior": 0.03 * b.height,
           "superior": 0.03 * b.depth, "inferior": 0.03 * b.depth}
    for which, corner in (("ia", f"{b.name}_inf"), ("sa", f"{b.name}_sup")):
        grade = grades.get(corner)
        if grade is None:
            continue
        if grade >= 2 or "squaring" in features.get(corner, ()):
            radii[which] = base * 0.2
            sag["anterior"] *= 0.4  # squaring: the anterior waist straightens
    return radii, sag


def _posterior_elements(cv: Canvas, layer: np.ndarray, b: Body, view: str, rng) -> None:
    """Pedicle, articular pillar and spinous process behind the body, drawn faint."""
    d, h = b.depth, b.height
    pedicle = [(-d / 2, -h * 0.3), (-d * 0.85, -h * 0.35), (-d * 0.85, h * 0.15), (-d / 2, h * 0.1)]
    cv.fill(layer, np.array([b.point(*p) for p in pedicle]), 0.7)
    pillar_c = (-d * 1.05, 0.0)
    ang = np.linspace(0, 2 * np.pi, 20)
    pillar = [(pillar_c[0] + np.cos(a) * d * 0.25, pillar_c[1] + np.sin(a) * h * 0.55) for a in ang]
    cv.fill(layer, np.array([b.point(*p) for p in pillar]), 0.8)
    tip_len = d * (1.7 if view == "cervical" else 1.0)
    spinous = [(-d * 1.15, -h * 0.15), (-d * 1.15 - tip_len, h * 0.25 + rng.uniform(-1, 1)),
               (-d * 1.15 - tip_len, h * 0.45), (-d * 1.15, h * 0.3)]
    cv.fill(layer, np.array([b.point(*p) for p in spinous]), 0.6)


def _draw_lesions(cv: Canvas, bone: np.ndarray, bodies: list[Body], grades: dict[str, int],
                  features: dict[str, set[str]], view: str, s: float, rng, diff: Difficulty) -> None:
    """Draw each anterior corner's grade; degenerative osteophytes as distractors (not scored)."""
    by_name = {b.name: b for b in bodies}
    for level in anatomy.LEVELS[view]:
        upper_name, lower_name = level.split("-")
        upper, lower = by_name[upper_name], by_name[lower_name]
        inf_corner, sup_corner = anatomy.level_corners(level)
        gap = np.linalg.norm(lower.corner("sa") - upper.corner("ia"))
        if grades[inf_corner] == 3:
            top = upper.point(upper.depth / 2 - 0.3, upper.height / 2 - 1.5)
            bot = lower.point(lower.depth / 2 - 0.3, -lower.height / 2 + 1.5)
            out = (upper.anterior + lower.anterior) / 2
            thick = rng.uniform(1.3, 2.4) * (0.6 + 0.4 * s)
            cv.fill(bone, bridge(top, bot, out, thick, rng.uniform(0.6, 1.8)), 0.6)
            continue
        for body, which, corner, towards in ((upper, "ia", inf_corner, upper.axis),
                                             (lower, "sa", sup_corner, -lower.axis)):
            grade = grades[corner]
            sign = 1.0 if which == "ia" else -1.0
            corner_pt = body.corner(which)
            if grade == 2:
                base = body.point(body.depth / 2 - 0.4, sign * (body.height / 2 - 1.0))
                length = 1.0 + gap * rng.uniform(0.35, 0.75)
                thick = rng.uniform(0.8, 1.6) * (0.6 + 0.4 * s)
                cv.fill(bone, spur(base, towards, body.anterior, length, thick, rng.uniform(0.3, 1.0)), 0.6)
            elif grade == 1:
                feats = features[corner]
                if "sclerosis" in feats:
                    c = body.point(body.depth / 2 - 0.12 * body.depth, sign * (body.height / 2 - 0.12 * body.depth))
                    ang = np.linspace(0, 2 * np.pi, 20)
                    r = 0.13 * body.depth
                    blob = c + np.stack([np.cos(ang) * r, np.sin(ang) * r], 1)
                    tmp = cv.layer()
                    cv.fill(tmp, blob, 0.25 * s)
                    bone += _blur(tmp, 0.04 * body.depth / cv.spacing)
                if "erosion" in feats:
                    r = rng.uniform(0.06, 0.09) * body.depth * (0.7 + 0.3 * s)
                    ang = np.linspace(0, 2 * np.pi, 16)
                    notch = corner_pt + np.stack([np.cos(ang) * r, np.sin(ang) * r], 1)
                    cv.fill(bone, notch, 0.0)
            if grade in (0, 1) and rng.random() < diff.distractors:
                # degenerative osteophyte: a short beak pointing anteriorly, not across the disk
                base = body.point(body.depth / 2 - 0.5, sign * (body.height / 2 - 0.8))
                direction = body.anterior * 0.8 + towards * 0.6
                direction /= np.linalg.norm(direction)
                cv.fill(bone, spur(base, direction, towards, rng.uniform(2.0, 4.0), 1.4, 0.4), 0.55)


def _grade1_features(rng) -> set[str]:
    """Grade 1 is erosion, sclerosis and/or squaring: at least one, often several."""
    feats = {f for f in ("squaring", "sclerosis", "erosion") if rng.random() < 0.5}
    return feats or {("squaring", "sclerosis", "erosion")[int(rng.integers(0, 3))]}


def _collimate(display: np.ndarray, rng) -> np.ndarray:
    h, w = display.shape
    x0, x1 = int(w * rng.uniform(0.0, 0.05)), int(w * rng.uniform(0.95, 1.0))
    y0, y1 = int(h * rng.uniform(0.0, 0.04)), int(h * rng.uniform(0.96, 1.0))
    mask = np.zeros_like(display)
    mask[y0:y1, x0:x1] = 1.0
    level = rng.uniform(0.85, 0.97)  # unexposed film looks like dense bone
    return display * mask + level * (1 - mask)


def side_marker_alpha(shape: tuple[int, int], facing: str, rng) -> np.ndarray:
    """Where the burned-in lead letter lies ([0, 1] per pixel), as technologists place it: L or R near a
    field corner."""
    h, w = shape
    letter = "L" if facing == "left" else "R"
    scale = max(h, w) / 500
    x = int(w * (0.08 if rng.random() < 0.5 else 0.85))
    y = int(h * (0.12 if rng.random() < 0.5 else 0.92))
    mask = np.zeros(shape, np.uint8)  # OpenCV draws text on 8-bit images only
    cv2.putText(mask, letter, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                thickness=max(2, int(scale * 2.5)), lineType=cv2.LINE_AA)
    return mask.astype(np.float32) / 255.0


def _side_marker(display: np.ndarray, acq: Acquisition, rng) -> None:
    """The lead letter on a display image: as bright as unexposed film."""
    alpha = side_marker_alpha(display.shape, acq.facing, rng)
    display *= 1.0 - alpha
    display += alpha * 0.98


# ----------------------------------------------------------------------------------------------
# Cases, DICOM files, labels
# ----------------------------------------------------------------------------------------------

PHANTOM_NOTE = "tfmssass synthetic spine phantom - not a patient"
#: The drawing's revision, in every set's synth.json: raised whenever the same seed draws other films or
#: headers, so a folder made before is not taken for the same set (2: shoulders on cervical films, and
#: PatientOrientation in the header; 3: headers complete for a DX image, as dciodvfy checks them; 4: shoulders
#: raised over the spine dense enough to wash out what they cover, and the labels say NG for the corners
#: they cover (their drawn attenuation decides) and for implant-covered ones, where they were blank).
RENDERING = 4
#: What each kind of film's header says: body part, whether it is lateral (a frontal film's ViewPosition
#: is left out, as in many exports) and the study description. Series are numbered in this order.
FILM_HEADERS = {
    "cervical": ("CSPINE", True, "CERVICAL SPINE LATERAL"), "lumbar": ("LSPINE", True, "LUMBAR SPINE LATERAL"),
    "ap_cervical": ("CSPINE", False, "CERVICAL SPINE AP"), "ap_lumbar": ("LSPINE", False, "LUMBAR SPINE AP"),
    "lateral_thoracic": ("TSPINE", True, "THORACIC SPINE LATERAL"), "lateral_chest": ("CHEST", True, "CHEST LATERAL"),
}
#: The anatomic region of each body part (``pydicom.sr.codedict.codes.SCT`` names, from DICOM's CID 4031).
BODY_PART_REGIONS = {"CSPINE": "CervicalSpine", "LSPINE": "LumbarSpine", "TSPINE": "ThoracicSpine", "CHEST": "Chest"}


@dataclass(frozen=True)
class Case:
    seed: int
    patient: int  # 0-based index
    visit: int
    view: str
    difficulty: str
    unusual: float = 0.0  # chance of an unusual film (:mod:`tfmssass.synth.variants`)
    style: str = "geometric"  # or 'radiograph' (:mod:`tfmssass.synth.radiograph`)

    @property
    def patient_id(self) -> str:
        return f"PH{self.patient + 1:04d}"

    def relative_path(self, date: str) -> str:
        return f"{self.patient_id}/{date}/{self.view}.dcm"


@dataclass
class Plan:
    """Everything about a case but its pixels."""

    row: dict  # the label row without the image path
    bodies: list[Body]
    grades: dict[str, int]
    acq: Acquisition
    rng: np.random.Generator  # the stream the renderer continues to draw from
    variant: Variant
    rows: tuple[int, int]  # the rendered rows the film keeps (a cut film keeps fewer)


def plan_case(case: Case) -> Plan:
    diff = DIFFICULTIES[case.difficulty]
    view_index = anatomy.VIEWS.index(case.view)
    grades = patient_course(case.seed, case.patient, case.visit + 1)[case.visit]
    date = visit_dates(case.seed, case.patient, case.visit + 1)[case.visit]
    variant = draw_variant(_rng(case.seed, case.patient, 7, case.visit, view_index), case.view, case.unusual)
    anatomy_rng = _rng(case.seed, case.patient, 2, view_index)  # same spine at every visit
    size = float(_rng(case.seed, case.patient, 3).uniform(0.9, 1.1))
    bodies = build_spine(case.view, anatomy_rng, size, variant.posture_deg, variant.last_disk_scale)
    acq_rng = _rng(case.seed, case.patient, 4, case.visit, view_index)
    acq = plan_acquisition(case.view, acq_rng, diff)
    to_px = _placement(bodies, acq)
    rows = cut_rows(variant, bodies, to_px, acq.height)

    row: dict = {"patient_id": case.patient_id, "visit_date": date, "view": case.view}
    hidden, off_film = set(), set()  # not gradable (NG, as a reader says it), and not labelled at all
    for j, level in enumerate(anatomy.LEVELS[case.view]):
        upper, lower = bodies[j], bodies[j + 1]
        centre, anterior = level_points(upper, lower)
        outline = np.array([centre, anterior, upper.corner("ia"), lower.corner("sa")]) @ to_px[:, :2].T + to_px[:, 2]
        on_film = level_on_film(outline, rows, acq.width, EDGE_MARGIN_MM / acq.spacing)
        (cx, cy), (ax, ay) = outline[:2] - np.array([0.0, rows[0]])
        for col, value in zip(anatomy.keypoint_columns(level), (cx, cy, ax, ay)):
            row[col] = round(float(value), 2) if on_film else None  # a level off the film is not labelled
        if not on_film:  # off the film: nothing to read there, so nothing is said (blank)
            off_film.update(anatomy.level_corners(level))
        elif j in variant.plated:  # under metal: on the film, and a reader calls it not gradable
            hidden.update(anatomy.level_corners(level))
    for corner in anatomy.CORNERS[case.view]:
        row[corner] = None if corner in off_film else NOT_GRADABLE if corner in hidden else grades[corner]
    row.update(image_height=rows[1] - rows[0], image_width=acq.width,
               pixel_spacing_mm=round(acq.spacing, 4), facing=acq.facing,
               photometric=acq.monochrome, difficulty=case.difficulty)
    if case.unusual > 0:
        row["variant"] = variant.describe(anatomy.LEVELS[case.view])
    return Plan(row, bodies, grades, acq, acq_rng, variant, rows)


def make_case(case: Case) -> tuple[np.ndarray, dict, Acquisition]:
    """Render one radiograph; return (display image, label row without the image path, acquisition)."""
    plan = plan_case(case)
    display, _, hidden = render(case.view, plan.bodies, plan.grades, plan.acq, plan.rng,
                                DIFFICULTIES[case.difficulty], plan.variant)
    for corner in hidden:  # under the shoulders, on the film: a reader cannot grade it
        if plan.row[corner] is not None:
            plan.row[corner] = NOT_GRADABLE
    return display[plan.rows[0]:plan.rows[1]], plan.row, plan.acq


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["tfmssass-phantom", *map(str, parts)])


def _sct(name: str):
    """A code sequence item of the SNOMED CT concept pydicom names ``name``."""
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    code = getattr(codes.SCT, name)
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def _stored_pixels(case: Case, display: np.ndarray, acq: Acquisition) -> tuple[np.ndarray, float, float]:
    """The detector's raw values of a display image [0, 1], and the window (centre, width) that shows it."""
    top = 2**acq.bits_stored - 1
    kind = list(FILM_HEADERS).index(case.view)
    rng = _rng(case.seed, case.patient, 5, case.visit, kind)
    lo, hi = top * rng.uniform(0.02, 0.12), top * rng.uniform(0.8, 0.97)
    raw = lo + display.astype(np.float64) * (hi - lo)
    centre, width = (lo + hi) / 2, (hi - lo)
    if acq.monochrome == "MONOCHROME1":
        raw, centre = top - raw, top - centre
    return np.clip(np.rint(raw), 0, top).astype(np.uint16), centre, width


def _add_patient_and_study(ds, case: Case, visit_date: str) -> None:
    """UIDs, dates and the phantom patient (de-identified: no patient was ever imaged)."""
    date = visit_date.replace("-", "")
    ds.StudyInstanceUID = _uid(case.seed, case.patient, case.visit, "study")
    ds.SeriesInstanceUID = _uid(case.seed, case.patient, case.visit, case.view, "series")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "090000"
    ds.ReferringPhysicianName = ""
    ds.PatientBirthDate = ""
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = str(case.visit + 1), 1 + list(FILM_HEADERS).index(case.view), 1
    ds.AccessionNumber = f"{case.patient_id}V{case.visit + 1}"
    ds.PatientID = case.patient_id
    ds.PatientName = f"Phantom^{case.patient_id}"
    ds.PatientSex = "M" if _rng(case.seed, case.patient, 6).random() < 0.7 else "F"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = PHANTOM_NOTE


def _add_view(ds, case: Case, acq: Acquisition) -> None:
    """Body part, view and the way the film is stored, as a lateral (or frontal) film states them."""
    body_part, lateral, description = FILM_HEADERS[case.view]
    ds.BodyPartExamined = body_part
    ds.AnatomicRegionSequence = [_sct(BODY_PART_REGIONS[body_part])]
    ds.ImageLaterality = "U"  # the spine is not a paired structure
    ds.PatientOrientation = ["L", "F"]  # a frontal (AP) film: the patient's left to the right
    if lateral:
        ds.ViewPosition = "LL" if acq.facing == "left" else "RL"
        ds.PatientOrientation = ["A" if acq.facing == "right" else "P", "F"]  # stored upright
        ds.ViewCodeSequence = [_sct("LeftLateral" if acq.facing == "left" else "RightLateral")]
    ds.StudyDescription = description


def _add_pixels(ds, pixels: np.ndarray, centre: float, width: float, acq: Acquisition) -> None:
    """The image pixel module, the window and the calibrated spacing."""
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = acq.monochrome
    ds.PresentationLUTShape = "INVERSE" if acq.monochrome == "MONOCHROME1" else "IDENTITY"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, acq.bits_stored, acq.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    # the stored values rise with bone in MONOCHROME2, fall in MONOCHROME1: with the beam reaching the detector
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = -1 if acq.monochrome == "MONOCHROME2" else 1
    ds.WindowCenter, ds.WindowWidth = f"{centre:.1f}", f"{width:.1f}"
    ds.VOILUTFunction = "LINEAR"
    magnification = 1.1
    detector = acq.spacing * magnification
    ds.ImagerPixelSpacing = [f"{detector:.6f}", f"{detector:.6f}"]
    ds.PixelSpacing = [f"{acq.spacing:.6f}", f"{acq.spacing:.6f}"]  # calibrated at the spine
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = f"detector pitch / magnification {magnification:.3f} at the spine"
    ds.EstimatedRadiographicMagnificationFactor = f"{magnification:.3f}"
    ds.PixelData = pixels.tobytes()


def phantom_dataset(case: Case, display: np.ndarray, row: dict, acq: Acquisition):
    """A DX 'for presentation' data set as a detector would send it: raw values, window, spacing."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    sop = _uid(case.seed, case.patient, case.visit, case.view, "sop")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # DX for presentation
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, sop
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    _add_patient_and_study(ds, case, row["visit_date"])
    _add_view(ds, case, acq)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.LossyImageCompression = "00"
    ds.DetectorType = "SCINTILLATOR"
    ds.PositionerType = "NONE"
    ds.AcquisitionContextSequence = []
    ds.ImageComments = PHANTOM_NOTE
    ds.BurnedInAnnotation = "YES"  # the side marker
    ds.Manufacturer = "tfmssass"
    ds.ManufacturerModelName = f"phantom {__version__} ({case.difficulty})"
    pixels, centre, width = _stored_pixels(case, display, acq)
    _add_pixels(ds, pixels, centre, width, acq)
    return ds


def write_case(case: Case, out: Path, make=make_case) -> dict:
    """Render ``case`` with ``make`` (a lateral film by default) into its DICOM file; its label row."""
    display, row, acq = make(case)
    rel = case.relative_path(row["visit_date"])
    ds = phantom_dataset(case, display, row, acq)
    with atomic_path(out / rel) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return {"image": rel, **row}
