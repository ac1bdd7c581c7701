"""Writes small DICOM files in the variants the reader must handle (used by the tests only)."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX = "1.2.840.10008.5.1.4.1.1.1.1"
SC = "1.2.840.10008.5.1.4.1.1.7"


def phantom_pixels(rows=64, cols=48, bits=12, seed=0) -> np.ndarray:
    """A smooth ramp plus a bright 'bone' block and noise: values span most of the range."""
    rng = np.random.default_rng(seed)
    top = 2**bits - 1
    y, x = np.mgrid[0:rows, 0:cols]
    img = 0.15 + 0.5 * x / cols + 0.1 * y / rows
    img[rows // 4: rows // 2, cols // 3: 2 * cols // 3] += 0.3
    img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    return np.rint(img * top).astype(np.uint16 if bits > 8 else np.uint8)


def make_dataset(pixels: np.ndarray, bits_stored: int | None = None, photometric="MONOCHROME2",
                 sop_class=DX, signed=False, **tags) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.Modality = "DX"
    ds.PatientID = "P001"
    ds.StudyDate = "20200131"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.BodyPartExamined = "LSPINE"
    ds.ViewPosition = "LL"
    allocated = pixels.dtype.itemsize * 8
    colour = photometric.startswith(("RGB", "YBR"))
    frames = pixels.shape[0] if pixels.ndim == (4 if colour else 3) else 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored or allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes()
    return ds


def voi_lut_item(first: int, data: np.ndarray, bits: int) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(data), first, bits]
    item.add_new(0x00283006, "US", [int(v) for v in data])  # LUTData, US or OW: say which
    return item


def with_voi_lut(ds: Dataset, first: int, data: np.ndarray, bits: int) -> Dataset:
    ds.VOILUTSequence = Sequence([voi_lut_item(first, data, bits)])
    return ds


def transcode_with_gdcm(src: str, dst: str, syntax_name: str) -> None:
    """Re-encode with GDCM (pydicom has no JPEG Lossless encoder)."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(src)
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax_name)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(dst)
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
