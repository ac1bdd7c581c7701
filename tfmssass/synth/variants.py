"""Unusual lateral films, as real archives hold them: cut off above or below the graded levels, an
anterior plate and screws over one or two levels, flexion and extension, a transitional lumbosacral
junction.

``tfmssass synth --unusual P`` gives each lateral film the chance P of one of them. The draws come
from a stream of their own, so a set made with P = 0 is byte-identical to one made before they
existed. Labels stay honest: a level not wholly on the film or under metal is blank (not gradable),
never 0; the ``variant`` column of labels.csv says what each film is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KINDS = {"cervical": ("cut", "plate", "flexion", "extension"),
         "lumbar": ("cut", "plate", "flexion", "extension", "transitional")}
#: Added to the drawn lordosis (degrees): flexion straightens or reverses the curve, extension deepens it.
POSTURE_DEG = {("cervical", "flexion"): (-50.0, -30.0), ("cervical", "extension"): (15.0, 30.0),
               ("lumbar", "flexion"): (-40.0, -25.0), ("lumbar", "extension"): (10.0, 20.0)}
#: A sacralised L5: the L5-S1 disk is rudimentary (this share of its usual height).
TRANSITIONAL_DISK = (0.25, 0.45)
#: Attenuation of steel and titanium against cortical bone's 0.6: far past anything anatomical.
METAL = 4.0
#: A level counts as on a cut film only with its points and anterior corners this far inside (mm).
EDGE_MARGIN_MM = 3.0


@dataclass(frozen=True)
class Variant:
    """What is unusual about one film ('' kind: nothing)."""

    kind: str = ""
    posture_deg: float = 0.0  # added to the lordosis
    last_disk_scale: float = 1.0  # height factor of the lowest disk
    cut_side: str = ""  # 'top' or 'bottom'
    cut_levels: int = 0  # levels off the film on that side
    cut_depth: float = 0.5  # where the edge runs through the next body (share of its height from the cut side)
    plated: tuple[int, ...] = ()  # indices of the levels under metal

    def describe(self, levels: tuple[str, ...]) -> str:
        """The ``variant`` column's words."""
        if self.kind == "cut":
            return f"cut at the {self.cut_side}: {self.cut_levels} level(s) off the film"
        if self.kind == "plate":
            return "implant over " + ", ".join(levels[j] for j in self.plated)
        if self.kind == "transitional":
            return f"transitional lumbosacral vertebra ({levels[-1]} disk rudimentary)"
        return self.kind


def draw_variant(rng: np.random.Generator, view: str, unusual: float) -> Variant:
    """One film's variant: ordinary with probability 1 - ``unusual``."""
    if unusual <= 0 or rng.random() >= unusual:
        return Variant()
    kind = str(rng.choice(KINDS[view]))
    if kind in ("flexion", "extension"):
        return Variant(kind, posture_deg=float(rng.uniform(*POSTURE_DEG[(view, kind)])))
    if kind == "transitional":
        return Variant(kind, last_disk_scale=float(rng.uniform(*TRANSITIONAL_DISK)))
    if kind == "cut":
        return Variant(kind, cut_side=str(rng.choice(["top", "bottom"])), cut_levels=int(rng.integers(1, 4)),
                       cut_depth=float(rng.uniform(0.2, 0.7)))
    span = int(rng.integers(1, 3))
    first = int(rng.integers(1, 6 - span)) if view == "cervical" else int(rng.integers(2, 7 - span))
    return Variant(kind, plated=tuple(range(first, first + span)))


def cut_rows(variant: Variant, bodies, to_px: np.ndarray, height: int) -> tuple[int, int]:
    """The rows [first, last) of the rendered film that a cut film keeps (all of them when not cut)."""
    if variant.kind != "cut":
        return 0, height
    k = variant.cut_levels
    if variant.cut_side == "top":  # levels 0..k-1 off: the edge runs through body k, from its top
        body = bodies[k]
        y_mm = -body.height / 2 + variant.cut_depth * body.height
    else:  # the last k levels off: the edge runs through body 6-k, from its bottom
        body = bodies[len(bodies) - 1 - k]
        y_mm = body.height / 2 - variant.cut_depth * body.height
    row = int(round(float((body.point(0.0, y_mm) @ to_px[:, :2].T + to_px[:, 2])[1])))
    row = min(max(row, 1), height - 1)
    return (row, height) if variant.cut_side == "top" else (0, row)


def level_on_film(points_px: np.ndarray, rows: tuple[int, int], width: int, margin_px: float) -> bool:
    """Whether every one of a level's points [N, 2] (original px) lies on the kept film, with a margin."""
    x, y = points_px[:, 0], points_px[:, 1]
    return bool(np.all((x >= margin_px) & (x <= width - 1 - margin_px)
                       & (y >= rows[0] + margin_px) & (y <= rows[1] - 1 - margin_px)))


def draw_metal(cv, layer: np.ndarray, bodies, variant: Variant, rng) -> None:
    """An anterior plate with screws over the plated levels (as after an anterior fusion), into ``layer``
    at :data:`METAL`. Seen from the side, the plate is a dense band on the front of the bodies and each
    screw a dense bar into its body."""
    if not variant.plated:
        return
    spanned = bodies[variant.plated[0]:variant.plated[-1] + 2]
    top, bottom = spanned[0], spanned[-1]
    scale = top.depth / 16.0  # sizes of a cervical plate, larger on a lumbar spine
    plate = [top.point(top.depth / 2 + 1.2, -top.height * 0.2), bottom.point(bottom.depth / 2 + 1.2, bottom.height * 0.2)]
    cv.line(layer, np.array(plate), METAL, max(1, int(2.2 * scale ** 0.5 / cv.spacing)))
    for k, b in enumerate(spanned):  # the end screws lean towards the fused disks
        y = 0.1 if k == 0 else -0.1 if k == len(spanned) - 1 else 0.0
        tilt = math.radians(rng.uniform(-10, 10))
        head = b.point(b.depth / 2 + 1.2, y * b.height)
        tip = head - 0.85 * b.depth * (math.cos(tilt) * b.anterior + math.sin(tilt) * b.axis)
        cv.line(layer, np.array([head, tip]), METAL, max(1, int(3.5 * scale ** 0.5 / cv.spacing)))
