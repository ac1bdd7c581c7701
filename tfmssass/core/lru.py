"""A small thread-safe cache of the last values made, for things that take seconds to make and are
asked for again in one process (decoded radiographs and pictures for the review page, loaded models)."""

from __future__ import annotations

import threading
from collections import OrderedDict


class LRU:
    """At most ``size`` values, the least recently used dropped first. ``make`` runs outside the lock,
    so a slow one does not hold up answers already cached."""

    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key, make):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = make()
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value
