"""The paper's canonical corner crop, as one affine matrix, and its inverse.

For a disk level with centre ``c`` and anterior point ``a``: rotate about ``c`` so that c→a points
to +x (anterior right), then, if needed, mirror vertically so that the cranial side is up (-y).
The paper only rotates. But rotation alone turns a radiograph of a patient facing the other way
upside down, and the graded corner would then change places. The cranial direction comes from the
neighbouring levels.
The upper corner of the level (``X_inf``) then sits top-right of the crop centre. For the lower
corner (``Y_sup``) the crop is flipped vertically as well, so every corner crop shows the graded
corner in the same place and one grader serves both.

Coordinates are pixel indices (pixel (0, 0) is centred at (0, 0)), as in OpenCV and labels.csv.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tfmssass.core import anatomy

#: Crop side in units of the centre→anterior distance (about half a vertebral body's depth):
#: 2.8 reaches 0.4 of that distance beyond the anterior margin, where spurs and bridges grow.
DEFAULT_EXTENT = 2.8


@dataclass(frozen=True)
class CropSpec:
    """How a grader's input is cut: one object for training, scoring and export.

    ``size``: crop side in pixels; ``extent``: crop side in centre→anterior distances; ``clahe``
    and ``clip``: contrast-limited equalisation of the crop; ``depth_px``: the centre→anterior
    distance in level-patch pixels (the resolution crops are cut from).
    """

    size: int = 128
    extent: float = DEFAULT_EXTENT
    clahe: bool = True
    clip: float = 2.0
    depth_px: int = 96


@dataclass(frozen=True)
class CropJitter:
    """A random change of a crop's geometry (training only): turn about the disk centre
    (radians), zoom, and shift by a fraction of the crop side. The defaults change nothing."""

    angle: object = 0.0
    zoom: object = 1.0
    shift: tuple = (0.0, 0.0)


@dataclass(frozen=True)
class CropFrame:
    """An affine map from original pixels to a crop of ``size`` = (height, width)."""

    matrix: np.ndarray  # 2x3, original → crop
    size: tuple[int, int]

    @property
    def inverse_matrix(self) -> np.ndarray:
        return cv2.invertAffineTransform(self.matrix)

    def forward(self, points) -> np.ndarray:
        """Original-image points [N, 2] → crop points."""
        return _apply(self.matrix, points)

    def inverse(self, points) -> np.ndarray:
        """Crop points [N, 2] → original-image points (to draw results on the radiograph)."""
        return _apply(self.inverse_matrix, points)

    def warp(self, image: np.ndarray, border_value: float = 0.0) -> np.ndarray:
        height, width = self.size
        return cv2.warpAffine(
            image, self.matrix, (width, height), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=border_value,
        )

    def outline(self) -> np.ndarray:
        """The crop's four corners in original pixels (for drawing the crop box)."""
        height, width = self.size
        box = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]])
        return self.inverse(box)


def _apply(matrix: np.ndarray, points) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def disk_angle(centre, anterior) -> float:
    """Angle in degrees of the centre→anterior line against the image's +x axis (y points down)."""
    dx, dy = np.asarray(anterior, float) - np.asarray(centre, float)
    return float(np.degrees(np.arctan2(dy, dx)))


def level_frame(centre, anterior, cranial, size=(224, 224), extent: float = DEFAULT_EXTENT,
                flip_vertical: bool = False) -> CropFrame:
    """Crop around the disk centre, anterior to +x, cranial up; optionally flipped vertically.

    ``cranial`` is any vector pointing towards the head (e.g. centre of the level above minus
    centre of the level below). The crop spans ``extent`` × |centre→anterior| across its width.
    """
    c, a = np.asarray(centre, float), np.asarray(anterior, float)
    along = a - c
    depth = float(np.hypot(*along))
    if not np.isfinite(depth) or depth < 1e-6:
        raise ValueError("centre and anterior points coincide or are missing")
    u = along / depth  # anterior, becomes +x
    v = np.array([-u[1], u[0]])  # perpendicular, becomes +y (down in the crop)
    if float(np.dot(v, np.asarray(cranial, float))) > 0:
        v = -v  # cranial must map to -y (up)
    height, width = size
    scale = width / (extent * depth)
    rows = np.stack([u, v]) * scale
    if flip_vertical:
        rows[1] = -rows[1]
    target = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    matrix = np.hstack([rows, (target - rows @ c)[:, None]])
    return CropFrame(matrix, (int(height), int(width)))


def cranial_directions(centres: np.ndarray) -> np.ndarray:
    """Per level (cranial→caudal order), a vector towards the head from the neighbouring centres.

    Missing levels (NaN) are skipped over; a level with no finite neighbour gets NaN.
    """
    centres = np.asarray(centres, dtype=float)
    out = np.full_like(centres, np.nan)
    valid = [i for i in range(len(centres)) if np.all(np.isfinite(centres[i]))]
    for i in valid:
        above = [j for j in valid if j < i]
        below = [j for j in valid if j > i]
        upper = centres[above[-1]] if above else centres[i]
        lower = centres[below[0]] if below else centres[i]
        if above or below:
            out[i] = upper - lower
    return out


def corner_marks(centre, anterior, cranial) -> tuple[np.ndarray, np.ndarray, float]:
    """Where pictures mark a level's two corners: beside its anterior point, ``X_inf`` on the cranial
    side and ``Y_sup`` on the caudal one, in the points' own pixels; and the disk's depth (c→a),
    which sets how big a mark may be. ``cranial`` is made perpendicular to the disk first."""
    c, a = np.asarray(centre, float), np.asarray(anterior, float)
    depth = float(np.hypot(*(a - c)))
    u = (a - c) / depth if depth > 0 else np.zeros(2)
    v = np.asarray(cranial, float)
    v = v - u * float(np.dot(v, u))
    norm = float(np.hypot(*v))
    v = v / norm if norm > 0 else np.zeros(2)
    forward = a + u * depth * 0.35
    return forward + v * depth * 0.45, forward - v * depth * 0.45, depth


def corner_frames(points: dict[str, tuple], view: str, size=(224, 224),
                  extent: float = DEFAULT_EXTENT) -> dict[str, CropFrame]:
    """Crop frames of every corner of a view whose level has both points.

    ``points`` maps level → (cx, cy, ax, ay). ``X_inf`` gets the level frame, ``Y_sup`` the same
    frame flipped vertically. Corners of levels without points (or without a neighbour to tell
    cranial from caudal) are left out, never guessed.
    """
    levels = anatomy.LEVELS[view]
    table = np.array([points.get(level, (np.nan,) * 4) for level in levels], dtype=float)
    cranial = cranial_directions(table[:, :2])
    frames: dict[str, CropFrame] = {}
    for level, row, up in zip(levels, table, cranial):
        if not (np.all(np.isfinite(row)) and np.all(np.isfinite(up))):
            continue
        upper, lower = anatomy.level_corners(level)
        frames[upper] = level_frame(row[:2], row[2:], up, size, extent)
        frames[lower] = level_frame(row[:2], row[2:], up, size, extent, flip_vertical=True)
    return frames


def turn_points(points, turns: int, height: int, width: int) -> np.ndarray:
    """Pixel coordinates [..., 2] (x, y) of an [height, width] image → the same points in
    ``np.rot90(image, turns)`` (quarter turns counter-clockwise); NaN stays NaN."""
    p = np.asarray(points, np.float64)
    for _ in range(turns % 4):
        p = np.stack([p[..., 1], width - 1 - p[..., 0]], axis=-1)
        height, width = width, height
    return p
