"""What every reader returns: a display-ready grey image (bone bright) plus its metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfmssass.core.config import MAX_PIXELS
from tfmssass.core.errors import TfmssassError


class RadiographError(TfmssassError):
    """An input that cannot be read as a radiograph. ``str()`` is one line: file and reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}")


class Skipped(RadiographError):
    """An input that is honestly something else (not an image, not a radiograph, a frontal view, not a
    regular file): reported as ``skipped``, not a failure."""


def too_large(path, rows: int, columns: int, frames: int = 1) -> None:
    """Refuse, before decoding, a header declaring more pixels than :data:`MAX_PIXELS`."""
    pixels = int(rows) * int(columns) * max(1, int(frames))
    if pixels > MAX_PIXELS:
        frames_text = f" × {frames} frames" if frames > 1 else ""
        raise RadiographError(path, f"image too large ({rows} × {columns}{frames_text} pixels declared; the limit "
                                    f"is {MAX_PIXELS // 1_000_000} megapixels)")


def check_pixels(path, image: np.ndarray) -> np.ndarray:
    """A decoded display image that is all finite and not one constant value, else why not."""
    if not np.isfinite(image).all():
        raise RadiographError(path, "damaged: pixel values are not finite (check RescaleSlope/RescaleIntercept)")
    if image.size == 0 or float(image.max()) - float(image.min()) < 1e-6:
        raise RadiographError(path, "damaged: every pixel has the same value (blank or undecodable image)")
    return image


@dataclass
class Radiograph:
    """``image`` is float32 [H, W] in [0, 1], bone bright, as a reader would see it on screen."""

    path: str
    image: np.ndarray
    meta: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def calibrated_spacing_mm(self) -> float:
        """Pixel spacing in mm where the file calibrates it at the patient; NaN otherwise (never the
        detector pitch)."""
        spacing = self.meta.get("pixel_spacing_mm")
        return float(spacing[0]) if spacing and self.meta.get("spacing_calibrated") else float("nan")

    def to_uint(self, bits: int = 8) -> np.ndarray:
        """The display image as uint8 (bits=8) or uint16 (bits=16), full range."""
        if bits not in (8, 16):
            raise ValueError("bits must be 8 or 16")
        top = 255 if bits == 8 else 65535
        scaled = np.rint(np.clip(self.image, 0.0, 1.0) * top)
        return scaled.astype(np.uint8 if bits == 8 else np.uint16)
