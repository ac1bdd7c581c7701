"""Reading inputs a few files ahead of the model work, within a memory budget and a wall-clock bound
per file.

Each file is read on a daemon thread, at most ``workers`` at a time and in order. Before it is read,
its header's pixel count is taken from a budget: a read waits while the films being read and read
but not yet handed on would exceed it (a film larger than the whole budget is read alone). So the
decoded images in flight are bounded in bytes, not only in number, whatever the film sizes.

A decoder that never returns (a hostile or damaged file) must not hold the run: a read that takes
longer than ``timeout`` seconds is given up (its slot and budget freed for the next file, its thread
left to end on its own: a daemon never keeps the process alive) and answered by ``give_up(path)``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path


class PixelBudget:
    """Pixels of images alive at once, handed out in the order asked for (first come, first served, so
    an earlier file is never starved by later ones)."""

    def __init__(self, limit: int):
        self.limit, self.held = int(limit), 0
        self._turn = itertools.count()
        self._serving = 0
        self._cond = threading.Condition()

    def ticket(self) -> int:
        """A place in the queue (taken in file order, before the file's thread starts)."""
        return next(self._turn)

    def take(self, ticket: int, pixels: int) -> None:
        with self._cond:
            while ticket != self._serving or (self.held and self.held + pixels > self.limit):
                self._cond.wait()
            self.held += pixels
            self._serving += 1
            self._cond.notify_all()

    def give(self, pixels: int) -> None:
        with self._cond:
            self.held -= pixels
            self._cond.notify_all()


class _Job:
    """One file's read: its weight and result, and who frees its slot and budget (the reader, or the
    waiter that gave up on it)."""

    def __init__(self, path: Path):
        self.path = path
        self.done = threading.Event()
        self.started: float | None = None
        self.result = None
        self.pixels = 0
        self.abandoned = False
        self.lock = threading.Lock()


def read_ahead(read: Callable[[Path], object], files: list[Path], give_up: Callable[[Path, float], object],
               lookahead: int = 4, workers: int = 2, timeout: float = 120.0,
               weigh: Callable[[Path], int] = lambda path: 0, budget: int = 0) -> Iterator[object]:
    """``read(path)`` of every file, in order; ``give_up(path, timeout)`` for one not read in time.
    ``read`` must not raise (it turns faults into its own answer). ``weigh(path)``: the pixels a file
    will take, held from before its read until it is handed on; ``budget`` their limit (0: none)."""
    slots = threading.Semaphore(workers)
    pixels = PixelBudget(budget or 1 << 62)

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
        ticket = pixels.ticket()

        def run():
            job.pixels = weigh(path)
            pixels.take(ticket, job.pixels)
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
        pixels.give(job.pixels)  # the consumer asks for the next: it has taken this one over
