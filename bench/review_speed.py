"""How the review page feels: time to first image, keystroke → saved, key presses for a session.

    python bench/review_speed.py [--work bench_work/review]

1. Time to first image of a 3000 × 2500 16-bit DICOM (a phantom resampled to that size): the
   server's first answer for the preview (decode + display pipeline + JPEG), the browser's time
   from opening the address to the picture drawn, and the full-resolution PNG.
2. Keystroke → saved: from the key's timestamp in the page to the server's acknowledgement (the
   change committed to SQLite), over the keyboard-only session below and then 60 grades typed at
   one key every 150 ms without waiting for the page.
3. That session: the 12 example radiographs scored by the shipped demo model, reviewed by keyboard
   only; for every corner the page asks about, the reader types the phantom's reference grade. The
   table counts key presses until every radiograph is done.

Needs Debian's chromium and Playwright for Python (the test dependencies).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from review_helpers import base, browser_page, review_server  # noqa: E402


def big_dicom(folder: Path) -> Path:
    """A phantom radiograph resampled to 2500 rows × 3000 columns, 16-bit, uncompressed."""
    source = next((ROOT / "examples").rglob("lumbar.dcm"))
    ds = pydicom.dcmread(source)
    pixels = cv2.resize(ds.pixel_array.astype(np.float32), (3000, 2500), interpolation=cv2.INTER_CUBIC)
    ds.PixelData = np.clip(pixels / pixels.max() * 65535, 0, 65535).astype(np.uint16).tobytes()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 2500, 3000, 16, 16, 15
    ds.PixelRepresentation = 0
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    for tag in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
        if tag in ds:
            delattr(ds, tag)
    out = folder / "P1" / "2024-01-01" / "big.dcm"
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def first_image(folder: Path) -> dict:
    result = {}
    with review_server(folder, "--reader", "bench") as (url, _):
        root, token = base(url)
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{root}/api/films/0/image?size=preview&token={token}") as r:
            size = len(r.read())
        result["server: first preview (s)"] = time.perf_counter() - t0
        result["preview size (kB)"] = size / 1e3
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{root}/api/films/0/image?size=full&token={token}") as r:
            size = len(r.read())
        result["server: full resolution PNG (s)"] = time.perf_counter() - t0
        result["full PNG size (MB)"] = size / 1e6
    t0 = time.perf_counter()
    with review_server(folder, "--reader", "bench2") as (url, _), browser_page() as (page, _errors):
        result["command started → address printed (s)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("body[data-shown='0 preview']", state="attached", timeout=60000)
        result["browser: address opened → picture drawn, cold (s)"] = time.perf_counter() - t0
    return result


def settled(page, read: str) -> dict:
    """The page's state once every key pressed so far has been handled (its CSP forbids
    wait_for_function, so poll)."""
    page.wait_for_timeout(5)
    while page.evaluate("() => window.reviewState.pending"):
        page.wait_for_timeout(5)
    return page.evaluate(read)


def keyboard_session(scored: Path, labels: pd.DataFrame) -> dict:
    """Film by film in the page's order: `j` until an open corner is selected (the page selects one
    itself after every grade), then the reference grade; `n` only where the page did not move on."""
    reference = {row["image"]: row for _, row in labels.iterrows()}
    presses = corrections = points_left = 0
    read = ("() => ({index: window.reviewState.index, field: window.reviewState.field, "
            "film: window.reviewState.film.film, open: window.reviewState.film.open, "
            "value: window.reviewState.film.reading[window.reviewState.field]})")
    with review_server(scored, "--reader", "bench") as (url, _), browser_page() as (page, errors):
        page.goto(url)
        page.wait_for_selector("#status:has-text('ready')", timeout=60000)
        films = len(page.evaluate("() => window.reviewState.summary.films"))
        for index in range(films):
            state = page.evaluate(read)
            if state["index"] > index:
                continue  # the page skipped it: nothing open there
            while state["index"] < index:
                page.keyboard.press("n")
                presses += 1
                state = settled(page, read)
            points_left += sum("-" in f for f in state["open"])  # a point to place needs the mouse
            while state["index"] == index and any("-" not in f for f in state["open"]):
                if state["field"] not in state["open"] or "-" in state["field"]:
                    page.keyboard.press("j")
                    presses += 1
                    state = settled(page, read)
                    continue
                grade = reference[state["film"]][state["field"]]
                key = "x" if pd.isna(grade) else str(int(grade))
                corrections += key != str(state["value"])
                page.keyboard.press(key)
                presses += 1
                state = settled(page, read)
        left = page.evaluate("() => window.reviewState.summary.items_open")
        # typing fast: 60 grades, one key every 150 ms without waiting for the page, on one corner
        page.click("#films button >> nth=0")
        settled(page, read)
        page.click("#corners tbody tr >> nth=3")
        for i in range(60):
            page.keyboard.press(str(i % 4))
            page.wait_for_timeout(150)
        settled(page, read)
        times = page.evaluate("() => window.reviewState.saveTimes")
        assert not errors, errors
    return {"key presses": presses, "corners changed to the reference grade": corrections,
            "points left for the mouse": points_left, "items still open at the end": left,
            "saves timed": len(times), "keystroke → saved p50 (ms)": statistics.median(times),
            "keystroke → saved p95 (ms)": float(np.percentile(times, 95)),
            "keystroke → saved max (ms)": max(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench_work" / "review")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    big = big_dicom(args.work / "big")
    rows = {"DICOM": f"{big.stat().st_size / 1e6:.1f} MB, 3000 × 2500, 16-bit"}
    rows.update(first_image(args.work / "big"))
    scored = args.work / "scored"
    done = subprocess.run([sys.executable, "-m", "tfmssass.cli", "score", str(ROOT / "examples"), "--out", str(scored),
                           "--quiet"], capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: some films refused (the examples' two lumbar films), the rest scored
        raise SystemExit(f"score failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    rows.update(keyboard_session(scored, pd.read_csv(ROOT / "examples" / "labels.csv")))
    print("| measure | value |\n| --- | ---: |")
    for name, value in rows.items():
        print(f"| {name} | {value:.3f} |" if isinstance(value, float) else f"| {name} | {value} |")


if __name__ == "__main__":
    main()
