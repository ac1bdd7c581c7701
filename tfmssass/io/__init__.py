"""Reading radiographs: DICOM (recognised by content) and PNG/JPEG/TIFF, through one interface."""

from __future__ import annotations

from pathlib import Path

from tfmssass.io.radiograph import Radiograph, RadiographError

__all__ = ["Radiograph", "RadiographError", "read_radiograph", "sniff_format", "image_size"]


def sniff_format(path: str | Path) -> str:
    """'DICOM', 'PNG', 'JPEG', 'TIFF' by the file's first bytes; 'DICOM?' for a possible raw data set."""
    from tfmssass.io.images import sniff_image_format

    path = Path(path)
    if not path.is_file():
        raise RadiographError(path, "no such file")
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


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of a radiograph, reading only the header where the format allows."""
    fmt = sniff_format(path)
    if fmt.startswith("DICOM"):
        from tfmssass.io.dicom import read_dataset

        ds = read_dataset(path, stop_before_pixels=True)
        if "Rows" not in ds or "Columns" not in ds:
            raise RadiographError(path, "no image size (Rows/Columns) in the header")
        return int(ds.Rows), int(ds.Columns)
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception as exc:  # noqa: BLE001
        raise RadiographError(path, f"{fmt} header could not be read ({exc})") from None
    return height, width
