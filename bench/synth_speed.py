"""How long `tfmssass synth` takes for a 1000-radiograph training set (target: < 10 minutes).

Usage: python bench/synth_speed.py [--patients 250] [--visits 2] [--style radiograph] [--out DIR] [--keep]
Prints a table: style, radiographs, workers, seconds, radiographs/s, MB written.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from tfmssass.core.system import usable_cpus
from tfmssass.synth import DEFAULT_STYLE, STYLES
from tfmssass.synth.sets import synthesize


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=250)
    parser.add_argument("--visits", type=int, default=2)
    parser.add_argument("--difficulty", default="realistic")
    parser.add_argument("--style", default=DEFAULT_STYLE, choices=STYLES)
    parser.add_argument("--out", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="tfmssass-bench-"))
    start = time.perf_counter()
    frame = synthesize(out, args.patients, args.visits, seed=1, difficulty=args.difficulty, style=args.style)
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in out.rglob("*.dcm")) / 2**20
    print(f"machine: {platform.processor() or platform.machine()}, {usable_cpus()} cores")
    print("| style | radiographs | workers | seconds | radiographs/s | MB written |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| {args.style} | {len(frame)} | {usable_cpus()} | {seconds:.0f} | {len(frame) / seconds:.2f} | {size:.0f} |")
    if not args.keep and not args.out:
        shutil.rmtree(out, ignore_errors=True)
    os.sys.stdout.flush()


if __name__ == "__main__":
    main()
