"""Reading inputs a few files ahead of the model work, with a wall-clock bound per file.

A decoder that never returns (a hostile or damaged file) must not hold the run: each file is read
on a daemon thread, at most ``workers`` at a time; one that takes longer than ``timeout`` seconds
is given up (its slot freed for the next file, its thread left to end on its own: a daemon never
keeps the process alive) and answered by ``give_up(path)``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path


class _Job:
    """One file's read: its result, and who frees its slot (the reader, or the waiter that gave up)."""

    def __init__(self, path: Path):
        self.path = path
        self.done = threading.Event()
        self.started: float | None = None
        self.result = None
        self.abandoned = False
        self.lock = threading.Lock()


def read_ahead(read: Callable[[Path], object], files: list[Path], give_up: Callable[[Path, float], object],
               lookahead: int = 4, workers: int = 2, timeout: float = 120.0) -> Iterator[object]:
    """``read(path)`` of every file, in order; ``give_up(path, timeout)`` for one not read in time.
    ``read`` must not raise (it turns faults into its own answer)."""
    slots = threading.Semaphore(workers)

    def work(job: _Job) -> None:
        with job.lock:
            job.started = time.monotonic()
        try:
            job.result = read(job.path)
        finally:
            with job.lock:
                if not job.abandoned:
                    slots.release()
                job.done.set()

    def start(path: Path) -> _Job:
        job = _Job(path)

        def run():
            slots.acquire()
            work(job)

        threading.Thread(target=run, name=f"read {path.name}", daemon=True).start()
        return job

    pending = deque(start(p) for p in files[:lookahead])
    following = iter(files[lookahead:])
    while pending:
        job = pending.popleft()
        while not job.done.wait(0.5):
            with job.lock:
                late = job.started is not None and time.monotonic() - job.started > timeout
                if late:
                    job.abandoned = True
                    slots.release()  # the stuck reader keeps running, without its slot
            if late:
                break
        if (following_path := next(following, None)) is not None:
            pending.append(start(following_path))
        yield job.result if job.done.is_set() and not job.abandoned else give_up(job.path, timeout)
