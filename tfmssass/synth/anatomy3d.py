"""The 3-D patient behind a radiograph-style phantom: vertebrae as solids, their posterior elements,
the neighbours that make real lateral films hard, and the lesions and distractors readers see.

Everything is a list of :class:`Part`: a solid, an attenuation (per mm, relative to soft tissue, since
every solid sits inside the neck or abdomen) and a group. Groups: ``tissue`` (water-like, drawn
smooth), ``bone``, ``carve`` (bone taken away: erosions, Schmorl nodes), ``trabecular`` (vertebral
interiors, textured), ``cover`` (structures that can hide a corner: shoulders, humeral heads,
clavicles, ribs, iliac wings). Millimetres in the spine frame (+x anterior, +y caudal, +z lateral).

The spine's midsagittal geometry (centres, heights, depths, disks, lordosis) is the geometric style's
:func:`~tfmssass.synth.phantoms.build_spine`, so both styles label the same points from the same draws;
this module adds width, shape, rotation and everything around it, from streams of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tfmssass.synth.phantoms import Body
from tfmssass.synth.projection import BodySolid, Ellipsoid, tube

#: Attenuation per mm relative to soft tissue (about 60 keV effective): soft tissue itself, cortical
#: bone, marrow-filled trabecular bone (scaled by the patient's bone density), fat, gas, enamel.
SOFT, CORTEX, TRABECULAR, FAT, GAS, ENAMEL = 0.020, 0.032, 0.006, -0.003, -0.020, 0.060
#: Cortical shell of a vertebral body (mm).
SHELL_MM = {"cervical": 0.8, "lumbar": 1.1}
#: Lateral half-width against the anterior-posterior half-depth of a body.
WIDTH_RATIO = {"cervical": 1.35, "lumbar": 1.3}
#: Anterior wedging of a body (share of its height: + shorter in front): T12/L1 wedge, L5 is a trapezoid.
WEDGE = {"T12": 0.06, "L1": 0.04, "L5": -0.07, "S1": -0.05, "C2": 0.0, "T1": 0.03}


@dataclass(frozen=True)
class Part:
    group: str
    solid: Ellipsoid | BodySolid
    mu: float
    name: str = ""


@dataclass
class Patient3D:
    """The drawn patient: parts, the vertebral bodies as solids (by name), and the findings drawn."""

    parts: list[Part] = field(default_factory=list)
    bodies: dict[str, BodySolid] = field(default_factory=dict)
    findings: list[tuple[str, str]] = field(default_factory=list)  # (corner, level, body or 'aorta'; kind)
    frames: list["Frame3"] = field(default_factory=list)  # of the vertebrae, cranial to caudal

    def add(self, group: str, solid, mu: float, name: str = "") -> None:
        self.parts.append(Part(group, solid, mu, name))

    def add_all(self, group: str, solids, mu: float, name: str = "") -> None:
        for solid in solids:
            self.add(group, solid, mu, name)


@dataclass(frozen=True)
class Frame3:
    """A vertebra's local frame in 3-D: centre and axes u (anterior), v (caudal), w (lateral)."""

    centre: np.ndarray
    axes: np.ndarray  # rows

    def at(self, u: float, v: float, w: float = 0.0) -> np.ndarray:
        return self.centre + u * self.axes[0] + v * self.axes[1] + w * self.axes[2]

    def ellipsoid(self, u, v, w, radii, turn_uv: float = 0.0, turn_uw: float = 0.0) -> Ellipsoid:
        """An ellipsoid at local (u, v, w), its axes the frame's turned by ``turn_uv`` (u towards v) and
        ``turn_uw`` (u towards w), in radians."""
        a, b = math.cos(turn_uv), math.sin(turn_uv)
        axes = np.array([a * self.axes[0] + b * self.axes[1], -b * self.axes[0] + a * self.axes[1], self.axes[2]])
        if turn_uw:
            c, d = math.cos(turn_uw), math.sin(turn_uw)
            axes = np.array([c * axes[0] + d * axes[2], axes[1], -d * axes[0] + c * axes[2]])
        return Ellipsoid.make(self.at(u, v, w), radii, axes)


def frames(bodies: list[Body], shape: "SpineShape") -> list[Frame3]:
    """3-D frames of the bodies: the sagittal tilt of ``build_spine``, plus the mild scoliosis and the
    axial rotation of each level."""
    out = []
    for i, b in enumerate(bodies):
        sag = np.array([[math.cos(b.theta), -math.sin(b.theta), 0.0],
                        [math.sin(b.theta), math.cos(b.theta), 0.0], [0.0, 0.0, 1.0]])
        lean, turn = shape.lean[i], shape.turn[i]
        # lean: v towards w (a scoliotic curve's tilt); turn: u towards w (rotation about the long axis)
        c, s = math.cos(lean), math.sin(lean)
        axes = np.array([sag[0], c * sag[1] + s * sag[2], -s * sag[1] + c * sag[2]])
        c, s = math.cos(turn), math.sin(turn)
        axes = np.array([c * axes[0] + s * axes[2], axes[1], -s * axes[0] + c * axes[2]])
        out.append(Frame3(np.array([b.centre[0], b.centre[1], shape.offset[i]]), axes))
    return out


@dataclass(frozen=True)
class SpineShape:
    """What the midsagittal spine does not say: lateral offsets (mm) and the lean and turn of each level
    (radians), body width, endplate cups, waists, bone density."""

    offset: tuple[float, ...]
    lean: tuple[float, ...]
    turn: tuple[float, ...]
    width: tuple[float, ...]  # lateral half-width factor per body
    cup: tuple[float, ...]  # endplate concavity (mm) per body
    waist: tuple[float, ...]  # anterior concavity (mm) per body
    density: float  # trabecular bone density (1 normal, lower osteoporotic)


def draw_shape(rng: np.random.Generator, view: str, n: int, severity: float) -> SpineShape:
    """A patient's spine beyond its midline: scoliosis within ±5 mm, widths, cups, bone density (advanced
    AS is often osteoporotic)."""
    amp, phase = rng.uniform(0, 5), rng.uniform(0, 2 * math.pi)
    k = np.arange(n)
    offset = amp * np.sin(phase + k * 0.6)
    lean = np.arctan(np.gradient(offset) / (20.0 if view == "cervical" else 35.0))
    turn = np.radians(rng.uniform(-3, 3, n))
    cup_base = 0.9 if view == "cervical" else 1.8
    density = float(np.clip(rng.normal(1.0, 0.12) - 0.45 * severity, 0.35, 1.3))
    return SpineShape(tuple(offset), tuple(lean), tuple(turn), tuple(rng.uniform(0.92, 1.08, n)),
                      tuple(cup_base * rng.uniform(0.7, 1.3, n)), tuple(rng.uniform(0.6, 1.4, n)), density)


def body_solids(view: str, bodies: list[Body], fr: list[Frame3], shape: SpineShape, squared: set[str]
                ) -> dict[str, BodySolid]:
    """The vertebral bodies as solids. A corner in ``squared`` (grade ≥ 1 squaring, or a spur) has lost
    its rim's rounding, and a body with a squared anterior corner its waist."""
    out = {}
    for i, (b, f) in enumerate(zip(bodies, fr)):
        half = b.depth / 2
        rim = (0.18 if view == "cervical" else 0.13) * min(b.depth, b.height)
        sup, inf = f"{b.name}_sup", f"{b.name}_inf"
        waist = 0.05 * b.height * shape.waist[i]
        if sup in squared or inf in squared:
            waist *= 0.25
        out[b.name] = BodySolid(
            tuple(f.centre), tuple(map(tuple, f.axes)), half, half, half * WIDTH_RATIO[view] * shape.width[i],
            b.height, b.wedge, (shape.cup[i], shape.cup[i] * 1.1), waist, 0.03 * b.height,
            (rim * (0.2 if sup in squared else 1), rim * (0.2 if inf in squared else 1), rim))
    return out


def corner3(body: Body, frame: Frame3, which: str) -> np.ndarray:
    """A body's geometric corner in 3-D (the labelled points come from these): ``which`` as Body.corner."""
    u = body.depth / 2 if which[1] == "a" else -body.depth / 2
    scale = (1 - body.wedge) if which[1] == "a" else (1 + body.wedge)
    v = (-1 if which[0] == "s" else 1) * body.height / 2 * scale
    return frame.at(u, v)


# ----------------------------------------------------------------------------------------------
# Posterior elements
# ----------------------------------------------------------------------------------------------

#: Length of each spinous process (mm): C2 large and bifid, C7 the vertebra prominens.
SPINOUS_MM = {"C2": 16, "C3": 11, "C4": 11, "C5": 12, "C6": 15, "C7": 21, "T1": 22,
              "T12": 26, "L1": 28, "L2": 30, "L3": 30, "L4": 28, "L5": 24, "S1": 0}


def posterior_elements(p: Patient3D, view: str, bodies: list[Body], fr: list[Frame3], rng) -> None:
    """Pedicles, articular pillars or processes, laminae, spinous and (lumbar) transverse processes.
    Paired ones sit left and right of the midline, so the beam's divergence draws them twice."""
    bone = 0.5 * CORTEX  # thin cortex round marrow: less dense than a body's tangential shell
    for b, f in zip(bodies, fr):
        d, h, half_w = b.depth, b.height, p.bodies[b.name].half_width
        back = -d / 2
        if b.name == "S1":
            continue
        for side in (-1, 1):
            if view == "cervical":
                p.add("bone", tube([f.at(back + 1, -0.2 * h, side * 0.7 * half_w),
                                    f.at(back - 8, -0.1 * h, side * 0.85 * half_w)], 2.4), bone)
                p.add("bone", f.ellipsoid(back - 10, 0.05 * h, side * 0.9 * half_w, (5.0, 0.72 * h, 4.5), turn_uv=0.55),
                      bone)
                p.add("bone", tube([f.at(back - 13, 0.2 * h, side * 0.8 * half_w), f.at(back - 20, 0.25 * h, 0)],
                                   1.6, flat=2.5), bone)
            else:
                p.add("bone", tube([f.at(back + 2, -0.22 * h, side * 0.55 * half_w),
                                    f.at(back - 12, -0.15 * h, side * 0.6 * half_w)], 5.0), bone)
                reach = (14 if b.name in ("L2", "L3") else 10) * rng.uniform(0.9, 1.1)
                p.add("bone", tube([f.at(back - 10, -0.05 * h, side * 0.6 * half_w),
                                    f.at(back - 14, 0.0, side * (0.6 * half_w + reach))], [3.5, 2.5]), bone)
                p.add("bone", f.ellipsoid(back - 16, -0.45 * h, side * 0.55 * half_w, (6, 0.28 * h, 5)), bone)
                p.add("bone", f.ellipsoid(back - 22, 0.45 * h, side * 0.45 * half_w, (5.5, 0.28 * h, 5)), bone)
                p.add("bone", f.ellipsoid(back - 22, 0.05 * h, side * 0.3 * half_w, (6, 0.4 * h, 3), turn_uw=side * 0.4),
                      bone)
        length = SPINOUS_MM[b.name] * rng.uniform(0.85, 1.15)
        if view == "cervical":
            droop = 0.45 + 0.2 * (b.name in ("C7", "T1"))
            base = np.array([back - 19, 0.22 * h])
            tip = base + length * np.array([-math.cos(droop), math.sin(droop)])
            p.add("bone", tube([f.at(*base), f.at(*tip)], [3.2, 2.2], flat=1.2), bone * 1.2)
        else:
            p.add("bone", f.ellipsoid(back - 30 - length / 2, 0.1 * h, 0, (length / 2, 0.28 * h, 3.5)), bone * 1.2)


# ----------------------------------------------------------------------------------------------
# Neighbours
# ----------------------------------------------------------------------------------------------


def _axis_frame(bodies: list[Body], fr: list[Frame3]) -> Frame3:
    """A frame along the spine's mean axis, centred between its first and last body."""
    theta = float(np.mean([b.theta for b in bodies]))
    axes = np.array([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1.0]])
    return Frame3((fr[0].centre + fr[-1].centre) / 2 * np.array([1, 1, 0]), axes)


def cervical_neighbours(p: Patient3D, bodies: list[Body], fr: list[Frame3], rng, shoulder_drop: float) -> None:
    """Neck and head soft tissue, airway, C1, dens, skull base, mandible with teeth, hyoid, and the
    shoulders (soft tissue, humeral heads, clavicles) ``shoulder_drop`` mm below T1's centre."""
    c2, c2f = bodies[0], fr[0]
    axis = _axis_frame(bodies, fr)
    neck_depth, neck_width = rng.uniform(52, 64), rng.uniform(55, 68)
    p.add("tissue", axis.ellipsoid(22, 0, 0, (neck_depth, 150, neck_width)), SOFT)
    head = c2f.at(-15, -150)
    p.add("tissue", Ellipsoid.make(head + np.array([10, -10, 0]), (100, 85, 75)), SOFT)
    # skull: occipital shell behind and above C1, the petrous and mastoid parts paired beside it
    skull = head + np.array([-5, -10, 0])
    p.add("bone", Ellipsoid.make(skull, (96, 80, 70)), CORTEX * 0.9, "skull")
    p.add("bone", Ellipsoid.make(skull, (91, 75, 65)), -CORTEX * 0.9, "skull")
    for side in (-1, 1):
        p.add("bone", Ellipsoid.make(c2f.at(-8, -45, side * 42), (14, 9, 22)), CORTEX * 1.2, "petrous")
        p.add("bone", Ellipsoid.make(c2f.at(-14, -33, side * 48), (9, 12, 8)), CORTEX * 0.6, "mastoid")
    p.add("bone", tube([c2f.at(25, -70), c2f.at(5, -40)], 5), CORTEX * 0.9, "clivus")
    # C1 and the dens: the dens rises from C2 behind C1's anterior arch
    dens_top = -c2.height * 0.5 - c2.height * 0.95
    p.add("bone", c2f.ellipsoid(-0.12 * c2.depth, -c2.height * 0.5 - 0.45 * c2.height, 0,
                                (0.21 * c2.depth, 0.5 * c2.height, 0.22 * c2.depth)), CORTEX * 0.9, "dens")
    arch_u = 0.09 * c2.depth + 2.5 + 3.5
    p.add("bone", c2f.ellipsoid(arch_u, dens_top * 0.62, 0, (3.2, 5.5, 9)), CORTEX, "C1 anterior arch")
    for side in (-1, 1):
        p.add("bone", c2f.ellipsoid(-0.1 * c2.depth, dens_top * 0.62, side * 13, (8, 7, 6)), CORTEX * 0.8, "C1")
    ring = [c2f.at(-c2.depth / 2 - 4 - 20 * (1 - math.cos(t)), dens_top * 0.58, 20 * math.sin(t))
            for t in np.linspace(-1.4, 1.4, 9)]
    p.add("bone", tube(np.array(ring), 3.2), CORTEX * 0.9, "C1 posterior arch")
    # mandible: ramus from the condyle to the angle, body forward to the chin, each half at its own depth
    half_span = rng.uniform(42, 50)
    angle_v = rng.uniform(5, 25)
    for side in (-1, 1):
        condyle = c2f.at(18, -38, side * half_span)
        angle = c2f.at(rng.uniform(8, 16), angle_v, side * half_span * 0.95)
        chin = c2f.at(rng.uniform(75, 88), angle_v + rng.uniform(-8, 4), side * 4)
        p.add("bone", tube(np.array([condyle, (condyle + angle) / 2, angle]), 4.5, flat=0.6), CORTEX, "mandible")
        p.add("bone", tube(np.array([angle, (angle * 0.6 + chin * 0.4), chin]), 6.0, flat=0.6), CORTEX, "mandible")
        for k in np.linspace(0.45, 0.9, 6):  # lower and upper molars and premolars, crowns meeting
            tooth = angle * (1 - k) + chin * k + rng.normal(0, 0.8, 3)
            p.add("bone", Ellipsoid.make(tooth + np.array([0, -8, 0]), (3.4, 6.0, 4)), ENAMEL * 0.4, "teeth")
            p.add("bone", Ellipsoid.make(tooth + np.array([1.5, -20, 0]), (3.4, 6.0, 4)), ENAMEL * 0.4, "teeth")
    p.add("bone", tube([c2f.at(20, -48), c2f.at(80, -50)], 2.0, flat=6), CORTEX * 0.5, "hard palate")
    # hyoid near C3-C4, in front of the airway
    level = fr[2].at(bodies[2].depth / 2 + rng.uniform(22, 30), bodies[2].height * 0.6)
    p.add("bone", Ellipsoid.make(level, (3.5, 4.5, 11)), CORTEX, "hyoid")
    for side in (-1, 1):
        p.add("bone", tube([level, level + np.array([-18, -8, side * 16])], 1.6), CORTEX, "hyoid")
    # airway: pharynx behind the tongue, larynx and trachea, a flat column of gas in front of the bodies
    path = [f.at(b.depth / 2 + rng.uniform(7, 12) + 3 * (i > 3), 0) for i, (b, f) in enumerate(zip(bodies, fr))]
    path = [c2f.at(c2.depth / 2 + 12, -40)] + path
    p.add("tissue", tube(np.array(path), rng.uniform(5, 8), flat=2.2), GAS - 0.0, "airway")
    shoulders(p, bodies, fr, rng, shoulder_drop)


def shoulders(p: Patient3D, bodies: list[Body], fr: list[Frame3], rng, drop: float) -> None:
    """Both shoulders in the beam: soft tissue, humeral heads, clavicles and scapular spines, left and
    right at their own depth (so the two humeral heads differ in size)."""
    t1, f = bodies[-1], fr[-1]
    top = f.at(0, drop)
    spread = rng.uniform(150, 180)
    for side in (-1, 1):
        centre = top + np.array([rng.uniform(-15, 5), 25, side * spread * 0.75])
        p.add("cover", Ellipsoid.make(centre, (62, 55, 90)), SOFT, "shoulders")
        head = top + np.array([rng.uniform(-10, 10), rng.uniform(25, 40), side * spread])
        p.add("cover", Ellipsoid.make(head, (24, 24, 24)), CORTEX * 0.55, "humeral heads")
        p.add("cover", Ellipsoid.make(head, (22.5, 22.5, 22.5)), -CORTEX * 0.35, "humeral heads")
        sternal = f.at(t1.depth / 2 + rng.uniform(35, 55), t1.height * 0.9 + drop * 0.5, side * 22)
        acromion = head + np.array([rng.uniform(-5, 10), -28, -side * 8])
        bow = (sternal + acromion) / 2 + np.array([15, -5, 0])
        p.add("cover", tube(np.array([sternal, bow, acromion]), 5.5), CORTEX * 0.9, "clavicles")
        blade = head + np.array([-55, -10, -side * 30])
        p.add("cover", tube(np.array([acromion, blade, blade + np.array([-15, 10, -side * 35])]), 4.5),
                  CORTEX * 0.8, "scapulae")


def lumbar_neighbours(p: Patient3D, bodies: list[Body], fr: list[Frame3], rng, crest_high: bool, bowel_rng) -> None:
    """Abdomen with its fat planes and psoas, the lower lungs, T10-T12 ribs, the sacrum below S1, iliac
    wings and crests (over L4-S1 when ``crest_high``), sacral alae, femoral heads, bowel gas and content."""
    axis = _axis_frame(bodies, fr)
    half_depth, half_width = rng.uniform(110, 150), rng.uniform(140, 185)
    p.add("tissue", axis.ellipsoid(45, 0, 0, (half_depth, 320, half_width)), SOFT)
    p.add("tissue", axis.ellipsoid(45, 0, 0, (half_depth - 12, 320, half_width - 12)), FAT * 0.8, "fat")
    for side in (-1, 1):  # psoas: muscle lying in fat on each side of the bodies
        p.add("tissue", axis.ellipsoid(-5, 40, side * 42, (22, 150, 18), turn_uv=0.12), -FAT * 1.5, "psoas")
    t12, f12 = bodies[0], fr[0]
    for side in (-1, 1):  # lung bases behind the diaphragm's domes
        p.add("tissue", Ellipsoid.make(f12.centre + np.array([-45, -75, side * 80]), (60, 45, 55)), GAS * 0.8, "lungs")
    for k, rib_v in enumerate((-2 * t12.height - 12, -t12.height - 6, -0.2 * t12.height)):  # T10, T11, T12 ribs
        reach = (150, 110, 80)[k] * rng.uniform(0.8, 1.1)
        for side in (-1, 1):  # from the spine backwards and out, round the flank, forwards and down
            pts = []
            for s in np.linspace(0, 1, 9):
                t = math.pi * (0.9 - 0.6 * s)
                pts.append(f12.at(-t12.depth / 2 - 5 + 45 * (math.cos(t) + 0.95) * (s > 0) * 0.8,
                                  rib_v + reach * 0.45 * s**1.3, side * (12 + reach * 0.55 * math.sin(math.pi * s * 0.8))))
            p.add("cover", tube(np.array(pts), np.linspace(4.5, 3.0, 9)), CORTEX * 0.45, "ribs")
    s1, fs = bodies[-1], fr[-1]
    # sacrum: S2-S5 fused, shrinking and curving backwards below S1
    here, direction, depth = fs.at(0, s1.height / 2 + 1.5), fs.axes[1].copy(), s1.depth
    path, radii = [here], [depth * 0.42]
    for seg in range(4):
        turn = math.radians(7 + 3 * seg)
        direction = math.cos(turn) * direction - math.sin(turn) * fs.axes[0]
        here = here + direction * (18 - 2.5 * seg)
        depth *= 0.78
        path.append(here)
        radii.append(depth * 0.42)
    p.add("bone", tube(np.array(path), np.array(radii), flat=2.0), CORTEX * 0.3, "sacrum")
    for side in (-1, 1):
        p.add("bone", fs.ellipsoid(-s1.depth * 0.2, 0.1 * s1.height, side * 38, (20, 16, 18)), CORTEX * 0.5, "sacral alae")
    # iliac wings: thin plates seen obliquely, with a thick crest along the top
    lift = rng.uniform(25, 45) if crest_high else rng.uniform(-5, 15)
    for side in (-1, 1):
        spread = rng.uniform(60, 85)
        mid = fs.centre + np.array([-15, -lift + 10, side * spread])
        p.add("cover", Ellipsoid.make(mid, (70, 55, 5), [[1, 0, 0.3 * side], [0, 1, 0], [-0.3 * side, 0, 1]]),
              CORTEX * 0.8, "iliac wings")
        crest = [mid + np.array([70 * math.cos(t), -55 * math.sin(t) * 0.95, side * 12 * math.cos(t)])
                 for t in np.linspace(0.15, math.pi - 0.3, 10)]
        p.add("cover", tube(np.array(crest), rng.uniform(5, 7)), CORTEX * 0.9, "iliac crests")
        head = fs.centre + np.array([rng.uniform(40, 70), rng.uniform(110, 140), side * rng.uniform(80, 95)])
        p.add("bone", Ellipsoid.make(head, (24, 24, 24)), CORTEX * 0.25, "femoral heads")
    # bowel: gas pockets and stool (mottled, many small bubbles) in front of the spine, new at each visit
    rng = bowel_rng
    for _ in range(int(rng.integers(4, 10))):
        b = fr[int(rng.integers(0, len(fr)))]
        centre = b.at(rng.uniform(30, 130), rng.uniform(-40, 40), rng.uniform(-110, 110))
        for _ in range(int(rng.integers(2, 5))):  # a loop of bowel: a few pockets run together
            radii = rng.uniform(5, 18, 3) * np.array([1, 0.7, 1.2])
            p.add("tissue", Ellipsoid.make(centre + rng.normal(0, 10, 3), radii), GAS * 0.7, "bowel gas")
    for _ in range(int(rng.integers(1, 4))):
        b = fr[int(rng.integers(0, len(fr)))]
        blob = b.at(rng.uniform(40, 120), rng.uniform(-30, 60), rng.uniform(-100, 100))
        for _ in range(25):
            p.add("tissue", Ellipsoid.make(blob + rng.normal(0, 12, 3), rng.uniform(1.5, 4, 3)), GAS, "stool")
