"""One retry policy for every server tfmssass talks to (TF Serving over REST and gRPC, a PACS over
DICOMweb): a fault that waiting may mend (5xx, a dropped connection, a timeout) is tried again after
a pause that doubles each time; any other error propagates at once; after the last try the caller's
"unavailable" error names the server and the last fault, so the run stops with its resume hint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

#: Tries per request, and the first pause in seconds (doubled after each failed try).
TRIES = 5
BACKOFF_S = 1.0


@dataclass(frozen=True)
class RetryPolicy:
    tries: int = TRIES
    backoff_s: float = BACKOFF_S

    def call(self, function: Callable, transient: Callable[[Exception], str | None], where: str,
             unavailable: type[Exception]):
        """``function()`` until it answers. ``transient(exc)`` describes a fault worth another try
        (returns its text) or returns None for one that is not, which is raised as it is (or
        ``transient`` raises the caller's own error)."""
        last = ""
        for attempt in range(self.tries):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return function()
            except Exception as exc:  # noqa: BLE001 - transient decides; everything else is re-raised
                last = transient(exc)
                if last is None:
                    raise
        raise unavailable(f"{where}: no answer after {self.tries} tries ({last})")
