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
    for syntax in (pydicom.uid.JPEG2000Lossless, pydicom.uid.JPEGLSLossless):  # a compressed stream cut short
        ds = make_dataset(phantom_pixels(rows=256, cols=192))
        ds.compress(syntax)
        stream = io.BytesIO()
        ds.save_as(stream, enforce_file_format=True)
        put(f"cut_{syntax.keyword}.dcm", stream.getvalue()[: len(stream.getvalue()) * 3 // 4], "failed", "cut short")
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


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root only: skipped where mounting is not allowed); unmounted after the test."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_stops_the_run_and_resume_after_freeing_space_gives_the_same_tables(phantoms, tmp_path,
                                                                                        small_disk):
    import errno
    import subprocess

    clean = tmp_path / "clean"
    run_scoring(phantoms, clean, scoring_models(phantoms / "labels.csv"), settings(), progress=False)
    out = small_disk / "out"
    with pytest.raises(OSError) as info:
        run_scoring(phantoms, out, scoring_models(phantoms / "labels.csv"), settings(), progress=False)
    assert info.value.errno == errno.ENOSPC
    assert not list(out.rglob("*.tmp")), "a torn temporary file was left behind"
    if subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], capture_output=True).returncode:
        pytest.skip("cannot grow the tmpfs here")
    run_scoring(phantoms, out, scoring_models(phantoms / "labels.csv"), settings(), resume=True, progress=False)
    for table in ("corners.csv", "visits.csv", "images.csv", "errors.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(out / table), pd.read_csv(clean / table), obj=table)


def test_an_out_that_cannot_be_written_is_one_line_and_exit_2(phantoms, small_disk):
    import subprocess

    from click.testing import CliRunner

    from tfmssass.cli import main

    if subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True).returncode:
        pytest.skip("cannot remount the tmpfs read-only here")
    result = CliRunner().invoke(main, ["score", str(phantoms), "--out", str(small_disk / "out")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Read-only file system" in lines[0] and str(small_disk / "out") in lines[0]


def test_a_read_that_never_returns_is_given_up_and_the_rest_go_on():
    import threading

    from tfmssass.scoring.read_ahead import read_ahead

    never = threading.Event()

    def read(path):
        if path.name == "stuck":
            never.wait()  # a decoder that hangs
        return f"read {path.name}"

    files = [Path(n) for n in ("a", "stuck", "b", "c", "d")]
    answers = list(read_ahead(read, files, lambda path, s: f"gave up {path.name}", lookahead=2, workers=1,
                              timeout=0.5))
    assert answers == ["read a", "gave up stuck", "read b", "read c", "read d"]  # in order, one slot freed


def test_large_films_are_read_one_at_a_time_within_the_pixel_budget():
    import threading
    import time

    from tfmssass.scoring.read_ahead import read_ahead

    sizes = {"big1": 120, "small1": 10, "big2": 120, "small2": 10, "big3": 120}
    alive, most, lock = [0], [0], threading.Lock()

    def read(path):
        with lock:
            alive[0] += sizes[path.name]
            most[0] = max(most[0], alive[0])
        time.sleep(0.05)
        return path.name

    out = []
    for name in read_ahead(read, [Path(n) for n in sizes], lambda p, s: None, lookahead=4, workers=2,
                           weigh=lambda p: sizes[p.name], budget=150):
        out.append(name)
        with lock:
            alive[0] -= sizes[name]  # handed on: no longer held by the reader
    assert out == list(sizes) and most[0] <= 150  # never two large films at once, order kept
