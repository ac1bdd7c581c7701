"""Lesions and distractors of the radiograph style, as 3-D parts at the corners they belong to.

mSASSS grades (Creemers 2005): 1 erosion, sclerosis or squaring; 2 a syndesmophyte, a delicate
outgrowth of the vertebral margin running vertically in the line of the annulus; 3 a bridge, bone
continuous across the disk. Advanced patients ossify their facet joints and interspinous ligaments too
(bamboo spine). The distractors are what readers must not score as AS: degenerative claw and traction
osteophytes (horizontal, a few mm from the corner), DISH (thick flowing ossification in front of four
or more bodies with the disks preserved), disk narrowing with vacuum, Schmorl nodes, a wedge fracture,
aortic calcification. A distractor never changes a grade.

Each part is named ``kind@where`` (a corner such as ``C5_inf``, a level ``L3-L4``, a body, or
``aorta``) and every finding is listed, so tests can check that each is drawn where it is labelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tfmssass.core import anatomy
from tfmssass.synth.anatomy3d import CORTEX, GAS, TRABECULAR, Frame3, Patient3D
from tfmssass.synth.phantoms import Body
from tfmssass.synth.projection import BodySolid, Ellipsoid, tube


#: The findings as ``labels.csv``'s ``findings`` column names them: AS lesions (the first five grade a
#: corner), and distractors (none changes a grade).
LESION_KINDS = ("erosion", "sclerosis", "squaring", "syndesmophyte", "bridge", "facet_ankylosis",
                "interspinous_ossification")
DISTRACTOR_KINDS = ("claw", "traction", "dish", "narrowing", "vacuum", "schmorl", "wedge_fracture",
                    "aortic_calcification")


#: A spine with this many bridged disks in the view also has its facet joints and interspinous ligaments
#: ossified there (bamboo spine).
BAMBOO_BRIDGES = 3


@dataclass(frozen=True)
class Degeneration:
    """A patient's degenerative findings (the same at every visit): the ones that change the geometry
    (narrowed disks, a wedge fracture) are known before the spine is built."""

    narrowed: dict[int, float] = field(default_factory=dict)  # level index → disk height factor
    vacuum: tuple[int, ...] = ()  # level indices with gas in the disk
    fracture: tuple[int, float] | None = None  # body index, added wedge
    schmorl: tuple[tuple[int, str, float], ...] = ()  # body index, 'sup'/'inf', position (share of depth)
    osteophytes: tuple[tuple[str, str], ...] = ()  # (corner, 'claw' | 'traction')
    dish: int | None = None  # first of four bodies in a row with flowing anterior ossification
    aorta: bool = False


def draw_degeneration(rng: np.random.Generator, view: str, chance: float) -> Degeneration:
    """Degenerative findings with ``chance`` (the difficulty's distractor rate) setting how common."""
    if chance <= 0:
        return Degeneration()
    levels = anatomy.LEVELS[view]
    narrowed, vacuum = {}, []
    for j in range(len(levels)):
        if rng.random() < chance * 1.5:
            narrowed[j] = float(rng.uniform(0.5, 0.75))
            if rng.random() < 0.5:
                vacuum.append(j)
    fracture = (int(rng.integers(1, 6)), float(rng.uniform(0.15, 0.3))) if rng.random() < chance else None
    schmorl = tuple((int(rng.integers(0, 7)), str(rng.choice(["sup", "inf"])), float(rng.uniform(-0.3, 0.1)))
                    for _ in range(int(rng.random() < chance * 2) * int(rng.integers(1, 3))))
    osteophytes = tuple((c, str(rng.choice(["claw", "traction"]))) for c in anatomy.CORNERS[view]
                        if rng.random() < chance)
    dish = int(rng.integers(0, 4)) if rng.random() < chance * 0.5 else None
    aorta = view == "lumbar" and rng.random() < chance * 3
    return Degeneration(narrowed, tuple(vacuum), fracture, schmorl, osteophytes, dish, aorta)


def _corner_place(body: Body, which: str) -> tuple[float, float]:
    """Local (u, v) of a body's anterior corner ('sa' or 'ia') and the sign of v towards its disk."""
    sign = -1.0 if which == "sa" else 1.0
    return body.height / 2 * (1 - body.wedge) * sign, sign


def _surface_u(solid: BodySolid, w: float) -> float:
    """How far forward the anterior surface reaches at lateral position ``w`` (elliptic cross-section)."""
    return solid.front * math.sqrt(max(1 - (w / solid.half_width) ** 2, 0.0))


def _ridge(f: Frame3, solid: BodySolid, v0: float, sign: float, length: float, bow: float, radius: float,
           spread: float, steps: int = 6) -> list[Ellipsoid]:
    """An outgrowth from the anterior margin at height ``v0`` running ``length`` mm towards the disk
    (``sign``) and bowing ``bow`` mm forwards; drawn at three lateral positions ``spread`` mm apart, since
    it follows the annulus round the front of the body."""
    parts = []
    for w in (-spread, 0.0, spread):
        u0 = _surface_u(solid, w) - 0.3
        pts = [f.at(u0 + bow * math.sin(math.pi * t * 0.9), v0 + sign * length * t, w) for t in np.linspace(0, 1, steps)]
        parts.append(tube(np.array(pts), np.linspace(radius, radius * 0.45, steps), flat=3.0))
    return parts


def draw_lesions(p: Patient3D, view: str, bodies: list[Body], fr: list[Frame3], grades: dict[str, int],
                 features: dict[str, set[str]], strength: float, rng: np.random.Generator) -> None:
    """Each anterior corner's grade as readers see it; bridges and, in a bamboo spine, the posterior
    ankylosis. ``features``: a grade-1 corner's erosion, sclerosis and/or squaring."""
    by_name = {b.name: (b, f) for b, f in zip(bodies, fr)}
    bridged = []
    for level in anatomy.LEVELS[view]:
        (ub, uf), (lb, lf) = (by_name[n] for n in level.split("-"))
        upper_c, lower_c = anatomy.level_corners(level)
        gap = float(np.linalg.norm((uf.at(0, ub.height / 2) - lf.at(0, -lb.height / 2))))
        if grades.get(upper_c) == 3:
            bridged.append(level)
            us, ls = p.bodies[ub.name], p.bodies[lb.name]
            radius = rng.uniform(0.9, 1.5) * (0.7 + 0.3 * strength)
            bow = rng.uniform(0.6, 1.6)
            for w in (-6.0, 0.0, 6.0):
                top = uf.at(_surface_u(us, w) - 0.5, ub.height / 2 * (1 - ub.wedge) - 1.5, w)
                bottom = lf.at(_surface_u(ls, w) - 0.5, -lb.height / 2 * (1 - lb.wedge) + 1.5, w)
                out = (uf.axes[0] + lf.axes[0]) / 2
                pts = [top + (bottom - top) * t + out * (bow + 0.6) * math.sin(math.pi * t) for t in np.linspace(0, 1, 7)]
                p.add("bone", tube(np.array(pts), radius, flat=2.5), CORTEX * 1.1, f"bridge@{level}")
            p.findings += [(upper_c, "bridge"), (lower_c, "bridge")]
            continue
        for body, f, corner, which in ((ub, uf, upper_c, "ia"), (lb, lf, lower_c, "sa")):
            grade = grades.get(corner)
            solid = p.bodies[body.name]
            v0, sign = _corner_place(body, which)
            if grade == 2:
                length = max(1.0, gap * rng.uniform(0.35, 0.75))
                radius = rng.uniform(0.5, 0.8) * (0.7 + 0.3 * strength)
                p.add_all("bone", _ridge(f, solid, v0 - sign * 1.2, sign, length + 1.2, rng.uniform(0.3, 1.0), radius,
                                         rng.uniform(4, 7)), CORTEX * 1.2, f"syndesmophyte@{corner}")
                p.findings.append((corner, "syndesmophyte"))
            elif grade == 1:
                feats = features[corner]
                inner = solid.front - 0.13 * body.depth
                if "sclerosis" in feats:
                    r = 0.14 * body.depth
                    for k in (1.0, 0.7, 0.4):  # densest at the corner, fading inwards
                        p.add("bone", f.ellipsoid(inner + (1 - k) * r * 0.5, v0 - sign * r * (1 - (1 - k) * 0.5), 0,
                                                  (r * k, r * k, solid.half_width * 0.55)),
                              (0.02 * strength + 0.008) / 2, f"sclerosis@{corner}")
                if "erosion" in feats:
                    r = rng.uniform(0.08, 0.12) * body.depth * (0.7 + 0.3 * strength)
                    p.add("carve", f.ellipsoid(solid.front - 0.4 * r, v0 - sign * 0.4 * r, 0, (r, r, rng.uniform(5, 9))),
                          CORTEX + TRABECULAR, f"erosion@{corner}")
                for feat in sorted(feats):
                    p.findings.append((corner, feat))
                if "squaring" in feats:
                    p.add("bone", f.ellipsoid(solid.front - 1.2, v0 - sign * 1.2, 0, (1.3, 1.3, solid.half_width * 0.6)),
                          CORTEX * 0.4, f"squaring@{corner}")
    if len(bridged) >= BAMBOO_BRIDGES:
        _bamboo(p, view, bodies, fr, bridged, rng)


def _bamboo(p: Patient3D, view: str, bodies: list[Body], fr: list[Frame3], bridged: list[str], rng) -> None:
    """Facet joints and interspinous ligaments ossified at the bridged levels (a bamboo spine)."""
    index = {b.name: i for i, b in enumerate(bodies)}
    for level in bridged:
        i = index[level.split("-")[0]]
        (ub, uf), (lb, lf) = (bodies[i], fr[i]), (bodies[i + 1], fr[i + 1])
        back = 10 if view == "cervical" else 22
        for side in (-1, 1):
            w = side * p.bodies[ub.name].half_width * (0.9 if view == "cervical" else 0.5)
            p.add("bone", tube([uf.at(-ub.depth / 2 - back, 0.3 * ub.height, w),
                                    lf.at(-lb.depth / 2 - back, -0.3 * lb.height, w)], 2.5), CORTEX * 0.6,
                      f"facet_ankylosis@{level}")
        tip = 22 if view == "cervical" else 35
        p.add("bone", tube([uf.at(-ub.depth / 2 - tip, 0.4 * ub.height), lf.at(-lb.depth / 2 - tip, 0.1 * lb.height)],
                               1.4, flat=2), CORTEX, f"interspinous_ossification@{level}")
        p.findings += [(level, "facet_ankylosis"), (level, "interspinous_ossification")]


def draw_distractors(p: Patient3D, view: str, bodies: list[Body], fr: list[Frame3], grades: dict[str, int],
                     deg: Degeneration, rng: np.random.Generator) -> None:
    """The patient's degenerative findings, each only where it leaves the corners' grades as they are:
    an osteophyte on a corner graded 0 or 1, DISH in front of bodies whose corners are 0 or 1."""
    levels = anatomy.LEVELS[view]
    index = {b.name: i for i, b in enumerate(bodies)}
    for corner, kind in deg.osteophytes:
        if grades.get(corner) not in (0, 1):
            continue
        name, end = corner.split("_")
        i = index[name]
        body, f, solid = bodies[i], fr[i], p.bodies[name]
        v0, sign = _corner_place(body, "sa" if end == "sup" else "ia")
        if kind == "claw":  # from the margin forwards, then hooking towards the disk
            pts = [f.at(solid.front - 1.0 + 3.5 * math.sin(t * math.pi / 2), v0 - sign * 1.0 + sign * 2.8 * (1 - math.cos(t * math.pi / 2)))
                   for t in np.linspace(0, 1, 6)]
            radius = np.linspace(1.3, 0.5, 6)
        else:  # traction: a few mm from the margin, straight forwards
            start = v0 - sign * rng.uniform(2.0, 3.0)
            pts = [f.at(solid.front - 0.8 + t * rng.uniform(3, 5), start + sign * t * 0.8) for t in np.linspace(0, 1, 5)]
            radius = np.linspace(1.4, 0.5, 5)
        for w in (-5.0, 0.0, 5.0):
            shifted = [pt + f.axes[2] * w - f.axes[0] * (solid.front - _surface_u(solid, w)) for pt in pts]
            p.add("bone", tube(np.array(shifted), radius, flat=1.5), CORTEX * 1.1, f"{kind}@{corner}")
        p.findings.append((corner, kind))
    if deg.dish is not None:
        span = range(deg.dish, deg.dish + 4)
        corners = [c for j in range(deg.dish, deg.dish + 3) for c in anatomy.level_corners(levels[j])]
        if all(grades.get(c) in (0, 1) for c in corners):
            pts, radii = [], []
            for i in span:
                b, f, solid = bodies[i], fr[i], p.bodies[bodies[i].name]
                for v in np.linspace(-0.5, 0.5, 3) * b.height:
                    lump = rng.uniform(2.2, 3.5)
                    pts.append(f.at(solid.front + 1.6 + lump + 0.5 * (abs(v) > 0.4 * b.height), v))
                    radii.append(lump * (1.3 if abs(v) > 0.4 * b.height else 1.0))
            p.add("bone", tube(np.array(pts), np.array(radii), flat=2.5), CORTEX * 0.8, "dish@" + bodies[deg.dish].name)
            p.findings += [(levels[j], "dish") for j in range(deg.dish, deg.dish + 3)]
    for j in deg.vacuum:
        (ub, uf), lb = (bodies[j], fr[j]), bodies[j + 1]
        gap_mid = uf.at(0.15 * ub.depth, ub.height / 2 + 0.5 * float(np.linalg.norm(
            fr[j + 1].at(0, -lb.height / 2) - uf.at(0, ub.height / 2))))
        p.add("tissue", Ellipsoid.make(gap_mid, (0.25 * ub.depth, 0.7, p.bodies[ub.name].half_width * 0.4), uf.axes),
              GAS, f"vacuum@{levels[j]}")
        p.findings.append((levels[j], "vacuum"))
    for j in deg.narrowed:
        p.findings.append((levels[j], "narrowing"))
    if deg.fracture is not None:
        p.findings.append((bodies[deg.fracture[0]].name, "wedge_fracture"))
    for i, end, where in deg.schmorl:
        b, f = bodies[i], fr[i]
        sign = -1 if end == "sup" else 1
        u, v = where * b.depth, sign * (b.height / 2 - 2.2)
        r = rng.uniform(2.5, 4.0)
        p.add("bone", f.ellipsoid(u, v, 0, (r + 1.0, r + 0.8, r + 2)), 0.010, f"schmorl@{b.name}_{end}")
        p.add("carve", f.ellipsoid(u, v + sign * 0.6, 0, (r, r, r + 1.5)), TRABECULAR + 0.010, f"schmorl@{b.name}_{end}")
        p.findings.append((f"{b.name}_{end}", "schmorl"))
    if deg.aorta:
        plaques = 0
        for i in range(1, 5):  # plaques on the aortic walls in front of L1-L4, left of the midline
            b, f, solid = bodies[i], fr[i], p.bodies[bodies[i].name]
            for wall in (rng.uniform(3, 6), rng.uniform(22, 27)):
                if rng.random() < 0.6:
                    v = rng.uniform(-0.5, 0.5) * b.height
                    length = rng.uniform(4, 12)
                    p.add("bone", tube([f.at(solid.front + wall, v, -15), f.at(solid.front + wall + 0.8, v + length, -15)],
                                           rng.uniform(0.5, 1.0), flat=3), 0.05, "aortic_calcification@aorta")
                    plaques += 1
        if plaques:
            p.findings.append(("aorta", "aortic_calcification"))
