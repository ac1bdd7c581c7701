"""What every reader returns: a display-ready grey image (bone bright) plus its metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfmssass.core.errors import TfmssassError


class RadiographError(TfmssassError):
    """An input that cannot be read as a radiograph. ``str()`` is one line: file and reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}")


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
