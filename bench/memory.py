"""Peak memory of ``tfmssass score`` on a folder mixing very large films with ordinary ones.

Builds the folder (large films: an example radiograph upsampled to SIDE × SIDE, 16-bit DICOM;
ordinary ones: copies of the examples with new UIDs), scores it with the shipped demo in a child
process and prints its peak resident memory and time. ``--code DIR`` scores with another checkout
(e.g. an older commit) for comparison.

    python bench/memory.py --large 4 --ordinary 24 --side 12000
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]


def build(folder: Path, large: int, ordinary: int, side: int) -> None:
    examples = sorted((ROOT / "examples").rglob("*.dcm"))
    for i in range(large):
        ds = pydicom.dcmread(examples[i % len(examples)])
        pixels = cv2.resize(ds.pixel_array, (side, side), interpolation=cv2.INTER_LINEAR)
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.astype(np.uint16).tobytes()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian  # stored uncompressed
        ds.BitsAllocated, ds.PixelRepresentation = 16, 0
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID = f"LARGE{i}"
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):  # no longer true of the upsampled pixels
            if keyword in ds:
                delattr(ds, keyword)
        target = folder / f"large{i}" / "film.dcm"
        target.parent.mkdir(parents=True)
        ds.save_as(target, enforce_file_format=True)
    for i in range(ordinary):
        ds = pydicom.dcmread(examples[i % len(examples)])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID = f"ORD{i}"
        target = folder / f"ordinary{i}" / "film.dcm"
        target.parent.mkdir(parents=True)
        ds.save_as(target, enforce_file_format=True)


def score(folder: Path, out: Path, code: Path) -> tuple[float, float, int]:
    """(peak RSS in GB, seconds, exit code) of one scoring run in a child process."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "tfmssass.cli", "score", str(folder), "--out", str(out)],
                          cwd=code, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2  # KiB on Linux
    if done.returncode not in (0, 1):
        print(done.stderr[-2000:], file=sys.stderr)
    return peak, seconds, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--ordinary", type=int, default=24)
    parser.add_argument("--side", type=int, default=12000)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose tfmssass scores")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tfmssass-memory-"))
    try:
        build(work / "in", args.large, args.ordinary, args.side)
        peak, seconds, code = score(work / "in", work / "out", args.code.resolve())
        print("| films | large films | peak RSS | time | exit |")
        print("| --- | --- | --- | --- | --- |")
        films = args.large + args.ordinary
        print(f"| {films} | {args.large} × {args.side}² | {peak:.2f} GB | {seconds:.0f} s | {code} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
