"""What archives send that is not a good radiograph: every such input is one row of errors.csv
(``failed`` when it claims to be an image and is damaged, ``skipped`` when it is honestly something
else), never the end of the run, and the good films' results do not change."""

from __future__ import annotations

import io
import os
import shutil
import signal
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_factory import make_dataset, phantom_pixels
from score_doubles import scoring_models, settings

from tfmssass.scoring.run import run_scoring


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` × ``height`` and which holds no pixels at all."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def _dicom_bytes(**values) -> bytes:
    ds = make_dataset(phantom_pixels(rows=96, cols=72))
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _hostile(folder: Path, good: Path) -> dict[str, tuple[str, str]]:
    """Damaged and foreign inputs under ``folder``; returns {file: (status, reason fragment)}."""
    folder.mkdir(parents=True)
    expected = {}

    def put(name, data, status, reason):
        (folder / name).write_bytes(data)
        expected[f"hostile/{name}"] = (status, reason)

    put("huge.png", _png_claiming(100_000, 100_000), "failed", "image too large")
    ok, png = cv2.imencode(".png", (np.random.default_rng(0).random((300, 200)) * 255).astype(np.uint8))
    put("cut.png", png.tobytes()[: len(png) // 3], "failed", "damaged")
    put("flat.png", cv2.imencode(".png", np.full((300, 200), 128, np.uint8))[1].tobytes(), "failed", "same value")
    put("huge.dcm", _dicom_bytes(Rows=60000, Columns=60000), "failed", "image too large")
    put("slope.dcm", _dicom_bytes(RescaleSlope="3.333333").replace(b"3.333333", b"inf     "), "failed",
        "RescaleSlope is not a finite number")
    put("spacing.dcm", _dicom_bytes(PixelSpacing=["7.777777", "7.777777"]).replace(b"7.777777\\", b"abcdefgh\\"),
        "failed", "PixelSpacing is not a number")
    put("flat.dcm", _dicom_bytes(PixelData=np.full((96, 72), 700, np.uint16).tobytes()), "failed", "same value")
    film = next(good.rglob("lumbar.dcm")).read_bytes()
    put("preamble_only.dcm", film[:132], "failed", "damaged")
    put("letter.docx", b"PK\x03\x04" + bytes(range(256)) * 8, "skipped", "not an image")
    put("notes", b"nothing to see here\n" * 50, "skipped", "not an image")
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "pipe.dcm")
        expected["hostile/pipe.dcm"] = ("skipped", "not a regular file (a FIFO)")
    if Path("/dev/zero").exists():
        (folder / "zero.dcm").symlink_to("/dev/zero")
        expected["hostile/zero.dcm"] = ("skipped", "not a regular file (a character device)")
    return expected


class _TooLong(Exception):
    pass


def test_hostile_inputs_are_one_row_each_and_the_good_films_do_not_change(phantoms, tmp_path, capfd):
    clean = tmp_path / "clean"
    run_scoring(phantoms, clean, scoring_models(phantoms / "labels.csv"), settings(), progress=False)

    folder = tmp_path / "in"
    shutil.copytree(phantoms, folder)
    expected = _hostile(folder / "hostile", phantoms)

    def too_long(*_):
        raise _TooLong("the run did not finish: an input blocked it")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(300)
    try:
        counts = run_scoring(folder, tmp_path / "out", scoring_models(phantoms / "labels.csv"), settings(),
                             progress=False)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

    assert counts["failed"] == sum(s == "failed" for s, _ in expected.values())  # the command exits 1
    errors = pd.read_csv(tmp_path / "out" / "errors.csv").set_index("file")
    assert sorted(errors.index) == sorted(expected)
    for file, (status, reason) in expected.items():
        assert errors.loc[file, "status"] == status, (file, errors.loc[file, "reason"])
        assert reason in errors.loc[file, "reason"] and "\n" not in errors.loc[file, "reason"], file
    assert "Traceback" not in capfd.readouterr().err

    for table in ("corners.csv", "visits.csv", "images.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / table), pd.read_csv(clean / table),
                                      obj=table)


def test_a_header_value_that_is_not_a_number_names_the_tag(tmp_path):
    from tfmssass.io import RadiographError, read_radiograph

    path = tmp_path / "window.dcm"
    path.write_bytes(_dicom_bytes(WindowCenter="123.4567").replace(b"123.4567", b"nan     "))
    with pytest.raises(RadiographError, match="WindowCenter is not a finite number"):
        read_radiograph(path)
    assert pydicom.dcmread(path).Rows == 96  # the file itself is a readable data set
