"""Reading radiographs: DICOM (recognised by content) and PNG/JPEG/TIFF, through one interface."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tfmssass.core.config import MAX_FILE_BYTES
from tfmssass.io.radiograph import Radiograph, RadiographError, Skipped

__all__ = ["Radiograph", "RadiographError", "Skipped", "check_file", "declared_pixels", "declared_shape",
           "read_radiograph", "sniff_format", "image_size"]

_KINDS = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device",
          stat.S_ISBLK: "a block device", stat.S_ISDIR: "a folder"}


def check_file(path: str | Path) -> int:
    """Look before reading: only a regular file (links followed) of at most :data:`MAX_FILE_BYTES` is
    opened, so a FIFO, a device or a link to one never blocks or floods a run. Returns its size."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise RadiographError(path, "no such file (or a broken link)") from None
    except OSError as exc:
        raise RadiographError(path, f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS.items() if test(info.st_mode)), "not a file")
        raise Skipped(path, f"skipped: not a regular file ({kind})")
    if info.st_size > MAX_FILE_BYTES:
        raise RadiographError(path, f"image too large ({info.st_size} bytes; the limit is {MAX_FILE_BYTES >> 20} MiB)")
    return info.st_size


def sniff_format(path: str | Path) -> str:
    """'DICOM', 'PNG', 'JPEG', 'TIFF' by the file's first bytes; 'DICOM?' for a possible raw data set."""
    from tfmssass.io.images import sniff_image_format

    path = Path(path)
    check_file(path)
    with open(path, "rb") as fh:
        head = fh.read(132)
    if not head:
        raise RadiographError(path, "empty file")
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "DICOM"
    image = sniff_image_format(head)
    if image:
        return image
    return "DICOM?"  # maybe a data set without preamble/file meta; the DICOM reader decides


def read_radiograph(path: str | Path) -> Radiograph:
    """Read any supported input; raise :class:`RadiographError` (one line) when it cannot be used."""
    fmt = sniff_format(path)
    if fmt.startswith("DICOM"):
        from tfmssass.io.dicom import read_dicom

        return read_dicom(path)
    from tfmssass.io.images import read_image

    return read_image(path, fmt)


def declared_shape(path: str | Path) -> tuple[int, int, int]:
    """(height, width, frames) as a radiograph's header declares them, without decoding its pixels."""
    fmt = sniff_format(path)
    if fmt.startswith("DICOM"):
        from tfmssass.io.dicom import declared_shape as dicom_shape
        from tfmssass.io.dicom import read_dataset

        return dicom_shape(path, read_dataset(path, stop_before_pixels=True))
    from tfmssass.io.images import declared_size

    return declared_size(path, fmt)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of a radiograph, reading only the header."""
    height, width, _ = declared_shape(path)
    return height, width


def declared_pixels(path: str | Path) -> int:
    """How many pixels a file's header declares (rows × columns × frames), read without decoding;
    0 where it cannot tell (the read that follows says why)."""
    try:
        height, width, frames = declared_shape(path)
    except Exception:  # noqa: BLE001 - a damaged header weighs nothing; reading it reports the damage
        return 0
    return height * width * frames
