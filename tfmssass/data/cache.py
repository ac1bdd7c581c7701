"""Decode each radiograph once into a 16-bit PNG at a working size, so epochs do not re-read DICOM.

The cache is keyed by the image's path and its file size and modification time. Entries already
there are reused (resumable), and files that cannot be read are listed with their reason,
not fatal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from tfmssass.core.atomic import write_bytes
from tfmssass.io import RadiographError, read_radiograph
from tfmssass.io.images import encode_png16
from tfmssass.io.labels import resolve_image

DEFAULT_LONG_SIDE = 1024


def shrink_to_long_side(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float, float]:
    """Area-resize so the long side is at most ``long_side``; return (image, sx, sy) scales."""
    height, width = image.shape[:2]
    factor = min(1.0, long_side / max(height, width))
    if factor >= 1.0:
        return image, 1.0, 1.0
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return small, size[0] / width, size[1] / height


def calibrated_spacing_mm(radiograph) -> float:
    """Pixel spacing in mm where the file calibrates it; NaN otherwise (never detector size)."""
    spacing = radiograph.meta.get("pixel_spacing_mm")
    return spacing[0] if spacing and radiograph.meta.get("spacing_calibrated") else np.nan


def cache_key(path: Path, long_side: int) -> str:
    """Names a cached file after the source's path, size, modification time and working size."""
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{long_side}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def build_cache(frame: pd.DataFrame, cache_dir: str | Path, long_side: int = DEFAULT_LONG_SIDE,
                progress: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """One row per readable label row: cache_path, scale_x, scale_y, original height/width, spacing.

    Returns (index, errors); errors are one line each, 'file: reason'.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    rows, errors = [], []
    for index, row in tqdm(list(frame.iterrows()), desc="decoding radiographs", unit="image",
                           disable=not progress):
        path = resolve_image(frame, row)
        try:
            if not path.is_file():
                raise RadiographError(path, "no such file")
            key = cache_key(path, long_side)
            target = cache_dir / f"{key}.png"
            meta_path = cache_dir / f"{key}.csv"
            if target.is_file() and meta_path.is_file():
                meta = pd.read_csv(meta_path).iloc[0].to_dict()
            else:
                radiograph = read_radiograph(path)
                small, sx, sy = shrink_to_long_side(radiograph.image, long_side)
                meta = {"scale_x": sx, "scale_y": sy, "height": radiograph.height,
                        "width": radiograph.width, "spacing_mm": calibrated_spacing_mm(radiograph)}
                write_bytes(target, encode_png16(small))
                write_bytes(meta_path, pd.DataFrame([meta]).to_csv(index=False).encode())
            rows.append({"row": index, "cache_path": str(target), **meta})
        except RadiographError as exc:
            errors.append(str(exc))
    return pd.DataFrame(rows, columns=["row", "cache_path", "scale_x", "scale_y", "height",
                                       "width", "spacing_mm"]), errors
