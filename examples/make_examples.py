"""Rebuild ``examples/``: 3 phantom patients, 2 visits each, both views, small enough for git.

    python examples/make_examples.py [OUT]     (default: the folder of this script; needs pyjpegls,
                                                installed by the [dev] extra)

Phantoms are rendered by ``tfmssass synth`` at 0.10-0.19 mm pixels (1500-3000 px a side, about
7 MB each uncompressed). Here each is reduced 2x (area average of the stored values; pixel
spacings, labelled points and sizes updated to match) and stored as JPEG-LS near-lossless
(at most 2 grey levels of error out of 4096 or more), which the shipped pylibjpeg decoders read.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
from pydicom.uid import JPEGLSNearLossless

from tfmssass.core import anatomy
from tfmssass.io.labels import SYNTH_MANIFEST, write_labels
from tfmssass.synth.sets import synthesize

FACTOR = 2
SEED, PATIENTS, VISITS = 7, 3, 2


def shrink_dataset(path: Path, target: Path) -> None:
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.astype(np.float32)
    rows, cols = pixels.shape[0] // FACTOR, pixels.shape[1] // FACTOR
    small = cv2.resize(pixels[: rows * FACTOR, : cols * FACTOR], (cols, rows), interpolation=cv2.INTER_AREA)
    ds.PixelData = np.rint(small).astype(ds.pixel_array.dtype).tobytes()
    ds.Rows, ds.Columns = rows, cols
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        if keyword in ds:
            setattr(ds, keyword, [f"{float(v) * FACTOR:.6f}" for v in getattr(ds, keyword)])
    ds.ImageComments = f"{ds.get('ImageComments', '')}; reduced {FACTOR}x for the examples folder"
    ds.compress(JPEGLSNearLossless, jls_error=2)
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, enforce_file_format=True)


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        labels = synthesize(Path(tmp) / "ph", PATIENTS, VISITS, seed=SEED, progress=False)
        for image in labels["image"]:
            shrink_dataset(Path(tmp) / "ph" / image, out / image)
        shutil.copy(Path(tmp) / "ph" / SYNTH_MANIFEST, out / SYNTH_MANIFEST)
    points = [c for lv in anatomy.ALL_LEVELS for c in anatomy.keypoint_columns(lv)]
    labels[points] = (labels[points] + 0.5) / FACTOR - 0.5  # pixel centres of the reduced image
    labels["image_height"] //= FACTOR
    labels["image_width"] //= FACTOR
    labels["pixel_spacing_mm"] *= FACTOR
    write_labels(labels, out / "labels.csv")  # the label contract: grades, NG, blank
    size = sum(p.stat().st_size for p in out.rglob("*.dcm")) / 1e6
    print(f"{out}: {len(labels)} radiographs, {size:.1f} MB of DICOM")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
