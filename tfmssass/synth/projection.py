"""Line integrals of 3-D solids onto a lateral detector, in closed form.

A radiograph records, at each pixel, how much matter the ray from the source to that pixel crossed.
The radiograph style draws its anatomy as solids whose chord along a ray has a formula: ellipsoids
(posterior elements, ribs, humeral heads, soft tissue, gas) and vertebral bodies (elliptic
cross-section, concave endplates, anterior waist, rounded rims). Summing chords × attenuation gives the
same overlap, tangential cortex and doubled contours a real film has, without tracing rays.

Frames: the spine frame is 3-D millimetres, +x anterior, +y caudal, +z towards the detector (the
lateral direction). The source stands at z = -``source_mm``; a point at depth z is magnified by
``source_mm / (source_mm + z)`` relative to the midsagittal plane (z = 0), so paired structures do not
coincide. The patient may be rotated about the long axis and tilted sideways (:class:`Beam`). The
"plane" is the midsagittal plane in mm, where the calibrated spacing holds; one 2×3 affine maps it to
detector pixels (:class:`Raster`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def rotation(axial_deg: float, tilt_deg: float) -> np.ndarray:
    """Rotation about the long axis (y: the patient turned) then about the AP axis (x: tilted sideways)."""
    a, t = math.radians(axial_deg), math.radians(tilt_deg)
    about_y = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    about_x = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
    return about_x @ about_y


@dataclass(frozen=True)
class Beam:
    """How the patient stands in a divergent beam."""

    source_mm: float  # source to the midsagittal plane
    axial_deg: float  # rotation about the long axis: posterior walls and paired structures double
    tilt_deg: float  # sideways tilt: endplates are seen obliquely and double
    pivot: tuple[float, float]  # spine-frame point (x, y) the patient turns about, on the central ray

    @property
    def matrix(self) -> np.ndarray:
        return rotation(self.axial_deg, self.tilt_deg)

    def turned(self, points: np.ndarray) -> np.ndarray:
        """Spine-frame points [N, 3] in the turned patient, relative to the pivot."""
        pts = np.asarray(points, float).reshape(-1, 3) - np.array([*self.pivot, 0.0])
        return pts @ self.matrix.T

    def magnification(self, depth: np.ndarray | float) -> np.ndarray | float:
        """Scale at depth z (turned frame) relative to the midsagittal plane."""
        return self.source_mm / (self.source_mm + depth)

    def to_plane(self, points: np.ndarray) -> np.ndarray:
        """Spine-frame points [N, 3] → where they land on the midsagittal plane (mm) [N, 2]."""
        turned = self.turned(points)
        scale = self.magnification(turned[:, 2])[:, None]
        return turned[:, :2] * scale + np.array(self.pivot)


class Raster:
    """Detector pixels of one film: a 2×3 affine from the plane (mm) to pixels, and the image size."""

    def __init__(self, height: int, width: int, to_px: np.ndarray):
        self.height, self.width, self.to_px = height, width, np.asarray(to_px, float)
        self.from_px = np.linalg.inv(np.vstack([self.to_px, [0, 0, 1]]))[:2]

    @property
    def spacing(self) -> float:
        return 1.0 / float(np.hypot(*self.to_px[:, 0]))

    def px(self, plane: np.ndarray) -> np.ndarray:
        pts = np.asarray(plane, float).reshape(-1, 2)
        return pts @ self.to_px[:, :2].T + self.to_px[:, 2]

    def window(self, plane_centre: np.ndarray, radius_mm: float) -> tuple[slice, slice] | None:
        """The pixel rows and columns within ``radius_mm`` of a plane point; None when off the film."""
        cx, cy = self.px(plane_centre)[0]
        r = radius_mm / self.spacing + 2
        y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, self.height)
        x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, self.width)
        if y0 >= y1 or x0 >= x1:
            return None
        return slice(y0, y1), slice(x0, x1)

    def plane_grid(self, win: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        """Plane coordinates (mm) of the pixel centres in ``win``."""
        ys = np.arange(win[0].start, win[0].stop, dtype=np.float32)
        xs = np.arange(win[1].start, win[1].stop, dtype=np.float32)
        m = self.from_px.astype(np.float32)
        gx = m[0, 0] * xs[None, :] + m[0, 1] * ys[:, None] + m[0, 2]
        gy = m[1, 0] * xs[None, :] + m[1, 1] * ys[:, None] + m[1, 2]
        return gx, gy


# ----------------------------------------------------------------------------------------------
# Ellipsoids
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ellipsoid:
    """A solid ellipsoid: centre [3], axes (3 unit vectors as rows) and their semi-lengths (mm)."""

    centre: tuple[float, float, float]
    axes: tuple[tuple[float, ...], ...]
    radii: tuple[float, float, float]

    @staticmethod
    def make(centre, radii, axes=None) -> "Ellipsoid":
        axes = np.eye(3) if axes is None else np.asarray(axes, float)
        return Ellipsoid(tuple(map(float, centre)), tuple(tuple(map(float, a)) for a in axes),
                         tuple(float(max(r, 1e-3)) for r in radii))

    def chord(self, beam: Beam, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
        """Path length (mm) through the ellipsoid of the rays reaching plane points (qx, qy)."""
        centre = beam.turned(np.array(self.centre))[0]
        scale = beam.magnification(centre[2])
        axes = np.asarray(self.axes) @ beam.matrix.T  # rows: the axes in the turned frame
        q = (axes.T / np.square(self.radii)) @ axes  # quadratic form of the ellipsoid
        dx = (qx - float(beam.pivot[0])) / float(scale) - float(centre[0])
        dy = (qy - float(beam.pivot[1])) / float(scale) - float(centre[1])
        q = [[float(x) for x in r] for r in q]
        a = q[2][2]
        b = q[2][0] * dx + q[2][1] * dy
        c = q[0][0] * dx * dx + 2 * q[0][1] * dx * dy + q[1][1] * dy * dy - 1.0
        return 2.0 * np.sqrt(np.maximum(b * b - a * c, 0.0)) / a

    def plane_extent(self, beam: Beam) -> tuple[np.ndarray, float]:
        """Centre on the plane and a radius (mm) that holds its whole shadow."""
        centre = beam.to_plane(np.array(self.centre))[0]
        scale = beam.magnification(beam.turned(np.array(self.centre))[0, 2])
        return centre, max(self.radii) * scale

    def add_to(self, layer: np.ndarray, raster: "Raster", beam: Beam, mu: float) -> None:
        add_ellipsoid(layer, raster, beam, self, mu)


def add_ellipsoid(layer: np.ndarray, raster: Raster, beam: Beam, solid: Ellipsoid, mu: float) -> None:
    """Add ``mu`` × chord of ``solid`` into ``layer`` (attenuation, per pixel)."""
    centre, radius = solid.plane_extent(beam)
    win = raster.window(centre, radius)
    if win is None:
        return
    gx, gy = raster.plane_grid(win)
    layer[win] += mu * solid.chord(beam, gx, gy)


@dataclass(frozen=True)
class Tube:
    """A bent tube (rib, clavicle, crest, spur) as a chain of overlapping ellipsoids. Its chord is the
    longest of theirs, not their sum, so the overlaps do not show as beads."""

    pieces: tuple[Ellipsoid, ...]

    @property
    def radii(self) -> tuple[float, float, float]:
        thinnest = min(min(p.radii) for p in self.pieces)
        return thinnest, thinnest, max(max(p.radii) for p in self.pieces)

    def chord(self, beam: Beam, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
        return np.maximum.reduce([p.chord(beam, qx, qy) for p in self.pieces])

    def add_to(self, layer: np.ndarray, raster: Raster, beam: Beam, mu: float) -> None:
        wins = []
        for piece in self.pieces:
            centre, radius = piece.plane_extent(beam)
            win = raster.window(centre, radius)
            if win is not None:
                wins.append((piece, win))
        if not wins:
            return
        y0, y1 = min(w[0].start for _, w in wins), max(w[0].stop for _, w in wins)
        x0, x1 = min(w[1].start for _, w in wins), max(w[1].stop for _, w in wins)
        longest = np.zeros((y1 - y0, x1 - x0), np.float32)
        for piece, win in wins:
            gx, gy = raster.plane_grid(win)
            local = (slice(win[0].start - y0, win[0].stop - y0), slice(win[1].start - x0, win[1].stop - x0))
            np.maximum(longest[local], piece.chord(beam, gx, gy), out=longest[local])
        layer[y0:y1, x0:x1] += mu * longest


def tube(path: np.ndarray, radius: float | np.ndarray, flat: float = 1.0) -> Tube:
    """A tube along ``path`` [N, 3] (mm); ``radius`` per point; ``flat`` scales the radius across the path in
    the third direction (a ridge: > 1). The path is resampled to steps of about the radius, and each
    piece reaches half a step past its neighbours' centres, so the union has no waists."""
    path = np.asarray(path, float)
    radius = np.broadcast_to(np.asarray(radius, float), (len(path),))
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    along_path = np.concatenate([[0.0], np.cumsum(steps)])
    count = max(2, int(math.ceil(along_path[-1] / max(float(radius.min()) * 1.2, 0.3))) + 1)
    at = np.linspace(0, along_path[-1], count)
    path = np.stack([np.interp(at, along_path, path[:, k]) for k in range(3)], 1)
    radius = np.interp(at, along_path, radius)
    pieces = []
    for i in range(len(path) - 1):
        a, b = path[i], path[i + 1]
        along = b - a
        length = float(np.linalg.norm(along))
        if length < 1e-6:
            continue
        along /= length
        helper = np.array([0.0, 0.0, 1.0]) if abs(along[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        side = np.cross(along, helper)
        side /= np.linalg.norm(side)
        third = np.cross(along, side)
        r = float((radius[i] + radius[i + 1]) / 2)
        pieces.append(Ellipsoid.make((a + b) / 2, (1.5 * length, r, r * flat), [along, side, third]))
    return Tube(tuple(pieces))


# ----------------------------------------------------------------------------------------------
# Vertebral bodies
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BodySolid:
    """A vertebral body: elliptic cross-section (anterior and posterior half-depths, half-width), concave
    endplates, an anterior waist and a concave posterior wall, rims rounded by a radius per corner.
    Local frame: u anterior, v caudal, w lateral, all mm from the centre."""

    centre: tuple[float, float, float]
    axes: tuple[tuple[float, ...], ...]  # rows: u, v, w directions in the spine frame
    front: float  # anterior half-depth at mid-height
    back: float  # posterior half-depth
    half_width: float
    height: float  # at the centre line
    wedge: float  # anterior height is height × (1 - wedge), posterior height × (1 + wedge)
    cup: tuple[float, float]  # concavity of the superior and inferior endplates (mm)
    waist: float  # anterior concavity at mid-height (mm)
    back_waist: float
    rims: tuple[float, float, float]  # rounding radius: anterior-superior, anterior-inferior, posterior

    def shrunk(self, t: float) -> "BodySolid":
        """The same body with ``t`` mm of cortex taken off every face: the trabecular interior."""
        return BodySolid(self.centre, self.axes, self.front - t, self.back - t, self.half_width - t,
                         self.height - 2 * t, self.wedge, self.cup, self.waist, self.back_waist,
                         tuple(max(r - t, 0.3) for r in self.rims))

    def _local(self, beam: Beam, qx: np.ndarray, qy: np.ndarray):
        """Body-local (u, v) of the plane points at w = 0, and the shift of (u, v) per mm of w."""
        centre = beam.turned(np.array(self.centre))[0]
        scale = beam.magnification(centre[2])
        axes = np.asarray(self.axes) @ beam.matrix.T
        uv = np.array([axes[0, :2], axes[1, :2]]).T  # plane x, y of unit u and v
        inverse = np.linalg.inv(uv)
        dx = (qx - float(beam.pivot[0])) / float(scale) - float(centre[0])
        dy = (qy - float(beam.pivot[1])) / float(scale) - float(centre[1])
        inv = [[float(x) for x in r] for r in inverse]
        u0 = inv[0][0] * dx + inv[0][1] * dy
        v0 = inv[1][0] * dx + inv[1][1] * dy
        shift = [float(x) for x in inverse @ axes[2, :2]]
        return u0, v0, shift

    def _radial(self, u: np.ndarray, v: np.ndarray):
        """At local (u, v): the half-depth a, half-width b and the squared inner radius the endplate
        concavities leave empty (1 or more: nothing of the body on this line)."""
        front = u >= 0
        half_h = np.where(front, 1 - self.wedge * np.minimum(u / self.front, 1),
                          1 + self.wedge * np.minimum(-u / self.back, 1)) * self.height / 2
        top, bottom = v + half_h, half_h - v  # distance below the top rim, above the bottom rim
        rel = np.clip(v / np.maximum(half_h, 1e-3), -1, 1)
        a = np.where(front, self.front - self.waist * (1 - rel**2), self.back - self.back_waist * (1 - rel**2))
        rim = np.where(front, np.where(v < 0, self.rims[0], self.rims[1]), self.rims[2])
        edge = np.minimum(top, bottom)
        lost = np.where(edge < rim, rim - np.sqrt(np.maximum(rim**2 - (rim - np.maximum(edge, 0)) ** 2, 0)), 0)
        shrink = 1 - lost / np.maximum(a, 1e-3)
        a = a * shrink
        b = self.half_width * shrink
        empty = np.maximum(1 - top / self.cup[0], 1 - bottom / self.cup[1])
        empty = np.where((top < 0) | (bottom < 0), 9.0, np.maximum(empty, 0))
        return a, b, empty

    def chord(self, beam: Beam, qx: np.ndarray, qy: np.ndarray, slabs: int = 4) -> np.ndarray:
        """Path length through the body, the lateral extent taken in ``slabs`` slabs, each shifted as the
        turned or tilted patient projects it (which doubles the contours)."""
        u0, v0, shift = self._local(beam, qx, qy)
        total = np.zeros_like(u0)
        edges = np.linspace(-self.half_width, self.half_width, slabs + 1)
        for lo, hi in zip(edges[:-1], edges[1:]):
            w = (lo + hi) / 2
            u, v = u0 - w * shift[0], v0 - w * shift[1]
            a, b, empty = self._radial(u, v)
            x2 = np.square(u / np.maximum(a, 1e-3))
            outer = b * np.sqrt(np.maximum(1 - x2, 0))
            inner = b * np.sqrt(np.maximum(np.minimum(empty, 1) - x2, 0))
            inner = np.where(empty >= 1, outer, inner)
            for s_lo, s_hi in ((lo, hi), (-hi, -lo)):  # the two sides |w| in [inner, outer]
                if s_lo >= 0:
                    total += np.clip(np.minimum(outer, s_hi) - np.maximum(inner, s_lo), 0, None)
            if lo < 0 < hi:  # the slab across the midline: both halves of it
                total += np.clip(np.minimum(outer, hi) - inner, 0, None) + np.clip(np.minimum(outer, -lo) - inner, 0, None)
        return total

    def plane_extent(self, beam: Beam) -> tuple[np.ndarray, float]:
        centre = beam.to_plane(np.array(self.centre))[0]
        scale = beam.magnification(beam.turned(np.array(self.centre))[0, 2])
        reach = math.hypot(max(self.front, self.back) + 0.5, self.height * (1 + abs(self.wedge)) / 2 + 0.5)
        return centre, (reach + self.half_width * 0.15) * scale

    def local_uv(self, beam: Beam, qx: np.ndarray, qy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u0, v0, _ = self._local(beam, qx, qy)
        return u0, v0
