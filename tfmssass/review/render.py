"""Pictures for the review page, from the same display image that scoring reads (:mod:`tfmssass.io`).

A 3000 × 2500 radiograph is sent first as a small JPEG (the page can draw it at once) and as a
lossless full-resolution PNG only when the reader zooms in. Corner crops are cut by the grader's own
TensorFlow function, so the reader sees exactly what the grader sees.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from tfmssass.core import anatomy
from tfmssass.core.geometry import CropSpec
from tfmssass.core.lru import LRU
from tfmssass.io import Radiograph, read_radiograph

PREVIEW_LONG_SIDE = 1024

# one traced crop graph per crop setting, shared by every review session of the process and never
# evicted: tracing it takes seconds
_CUTTERS: dict = {}
_CUTTERS_LOCK = threading.Lock()


def _encode(image: np.ndarray, ext: str, params=()) -> bytes:
    ok, data = cv2.imencode(ext, image, list(params))
    if not ok:
        raise ValueError(f"{ext} encoding failed")
    return data.tobytes()


class Pictures:
    """Decoded radiographs (a few, they are large) and their encoded pictures, cached."""

    def __init__(self, radiographs: int = 4, pictures: int = 64):
        self._radiographs = LRU(radiographs)
        self._pictures = LRU(pictures)

    def radiograph(self, path: Path) -> Radiograph:
        return self._radiographs.get(str(path), lambda: read_radiograph(path))

    def preview(self, path: Path) -> bytes:
        def make():
            image = self.radiograph(path).to_uint(8)
            scale = PREVIEW_LONG_SIDE / max(image.shape)
            if scale < 1:
                size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            return _encode(image, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 92))

        return self._pictures.get(("preview", str(path)), make)

    def full(self, path: Path) -> bytes:
        def make():
            return _encode(self.radiograph(path).to_uint(8), ".png", (cv2.IMWRITE_PNG_COMPRESSION, 1))

        return self._pictures.get(("full", str(path)), make)

    def crops(self, path: Path, view: str, reading: dict, spec: CropSpec) -> dict[str, bytes | None]:
        """Corner → PNG of its canonical crop at the reading's points (None where the level cannot be
        cut: a point missing, no neighbouring level, or a disk too small)."""
        names = anatomy.point_names(view)
        points = np.array([reading.get(n) if isinstance(reading.get(n), list) else [np.nan, np.nan] for n in names],
                          np.float32)
        key = ("crops", str(path), view, points.tobytes(), spec)
        return self._pictures.get(key, lambda: self._cut(path, view, points, spec))

    @staticmethod
    def _cutter(spec: CropSpec):
        """The grader's crop function as a traced graph: it runs without holding Python's lock, so
        a change being saved does not wait behind a crop being cut."""
        def make():
            import tensorflow as tf  # only when a crop is asked for: the page opens without it

            from tfmssass.stages.grader.crops import corner_crops

            return tf.function(lambda image, points, to_cut: corner_crops(image, points, to_cut, spec),
                               input_signature=[tf.TensorSpec([None, None], tf.float32),
                                                tf.TensorSpec([12, 2], tf.float32), tf.TensorSpec([6], tf.bool)])

        with _CUTTERS_LOCK:
            if spec not in _CUTTERS:
                _CUTTERS[spec] = make()
            return _CUTTERS[spec]

    def warm(self, spec: CropSpec) -> None:
        """Trace and run the crop graph once now (seconds: tracing, then graph optimisation on the
        first run), so the first corner a reader opens does not wait."""
        points = np.array([[40.0 + 10 * (j % 2), 20.0 + 12 * (j // 2)] for j in range(12)], np.float32)
        self._cutter(spec)(np.zeros((128, 128), np.float32), points, np.ones(6, bool))

    def _cut(self, path: Path, view: str, points: np.ndarray, spec: CropSpec) -> dict[str, bytes | None]:
        finite = np.all(np.isfinite(points), axis=1)
        to_cut = finite[0::2] & finite[1::2]
        crops, cut = self._cutter(spec)(self.radiograph(path).image, np.nan_to_num(points), to_cut)
        crops, cut = crops.numpy(), cut.numpy()
        out = {}
        for k, corner in enumerate(anatomy.CORNERS[view]):
            if not cut[k // 2]:
                out[corner] = None
                continue
            out[corner] = _encode(np.rint(np.clip(crops[k], 0, 1) * 255).astype(np.uint8), ".png")
        return out
