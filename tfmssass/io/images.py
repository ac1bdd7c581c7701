"""PNG, JPEG and TIFF radiographs (8- or 16-bit), already display-ready: no spacing is known."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tfmssass.io.radiograph import Radiograph, RadiographError, check_pixels, too_large

#: Magic numbers by which non-DICOM image files are recognised (content, not extension).
IMAGE_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
}


def sniff_image_format(head: bytes) -> str | None:
    for name, signatures in IMAGE_SIGNATURES.items():
        if any(head.startswith(sig) for sig in signatures):
            return name
    return None


def _to_grey(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        return pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        code = cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        return cv2.cvtColor(pixels, code)
    raise ValueError(f"unsupported image shape {pixels.shape}")


def declared_size(path: str | Path, fmt: str) -> tuple[int, int, int]:
    """(height, width, frames) as the file's header declares them, read without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            frames = int(getattr(img, "n_frames", 1) or 1)
    except Image.DecompressionBombError as exc:
        raise RadiographError(path, f"image too large ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on damaged headers
        raise RadiographError(path, f"damaged: the {fmt} header could not be read ({exc})") from None
    return height, width, frames


def read_image(path: str | Path, fmt: str) -> Radiograph:
    """Read an image file; integers are scaled by their type's range (8-bit /255, 16-bit /65535). The
    header's size is checked before the pixels are decoded."""
    too_large(path, *declared_size(path, fmt))
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if pixels is None:
        raise RadiographError(path, f"damaged: the {fmt} file could not be decoded (truncated or corrupt)")
    try:
        grey = _to_grey(pixels)
    except ValueError as exc:
        raise RadiographError(path, str(exc)) from None
    warnings = []
    if pixels.ndim == 3 and pixels.shape[2] >= 3:
        warnings.append("colour image converted to grey")
    if grey.dtype == np.uint8:
        image, bits = grey.astype(np.float32) / 255.0, 8
    elif grey.dtype == np.uint16:
        image, bits = grey.astype(np.float32) / 65535.0, 16
    elif np.issubdtype(grey.dtype, np.floating):
        lo, hi = float(np.nanmin(grey)), float(np.nanmax(grey))
        image, bits = ((grey - lo) / max(hi - lo, 1e-12)).astype(np.float32), 32
        warnings.append("floating-point image rescaled to its own min/max")
    else:
        raise RadiographError(path, f"unsupported pixel type {grey.dtype}")
    check_pixels(path, image)
    meta = {
        "format": fmt,
        "rows": int(image.shape[0]),
        "columns": int(image.shape[1]),
        "bits_stored": bits,
        "photometric_interpretation": "MONOCHROME2",
        "pixel_spacing_mm": None,
        "spacing_calibrated": False,
        "spacing_source": None,
    }
    return Radiograph(str(path), image, meta, warnings)


def encode_png16(image: np.ndarray) -> bytes:
    """A float image in [0, 1] as 16-bit grey PNG bytes (what the pipelines read back)."""
    ok, png = cv2.imencode(".png", np.rint(np.clip(image, 0, 1) * 65535).astype(np.uint16))
    if not ok:
        raise ValueError("PNG encoding failed")
    return png.tobytes()
