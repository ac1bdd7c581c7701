"""``SOURCE/review.sqlite``: every reader's values and an audit trail of every change.

One SQLite database in WAL mode, opened by every review server on the same folder (two readers may
work at once). A change is one transaction (read the old value, write the new one, append the
audit row) committed with ``synchronous=FULL`` before the page is told it was saved, so a killed
browser or server loses nothing that was acknowledged on screen.

Values are JSON: a grade is 0-3 or ``"not gradable"``; a point is ``[x, y]`` in original-image
pixels or ``"not visible"``; the view is ``"cervical"`` or ``"lumbar"``.

Every stored value knows how it got there (``how``): the reader **set** it (a value other than the one
shown), or **confirmed** the pre-filled value shown (a model's or a label file's). A value with no row
here is still a pre-fill: nobody has decided it, and ``review export`` leaves it out.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
import threading
from pathlib import Path

from tfmssass.core.errors import UsageError

DATABASE = "review.sqlite"
NOT_GRADABLE = "not gradable"
NOT_VISIBLE = "not visible"
#: How a stored value got there (a pre-fill has no stored value).
SET, CONFIRMED = "set", "confirmed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readers (name TEXT PRIMARY KEY, role TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS value (reader TEXT NOT NULL, item TEXT NOT NULL, field TEXT NOT NULL,
                                  value TEXT NOT NULL, time TEXT NOT NULL, how TEXT NOT NULL DEFAULT 'set',
                                  PRIMARY KEY (reader, item, field));
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, reader TEXT NOT NULL, time TEXT NOT NULL,
                                  item TEXT NOT NULL, field TEXT NOT NULL, old TEXT, new TEXT);
CREATE TABLE IF NOT EXISTS prefill (item TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS setting (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StoreError(UsageError):
    """The database cannot be used (another role under this name, a locked or damaged file)."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class ReviewStore:
    """The review database of one folder; safe to share between a server's threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            # readers' grades are about patients: 0600, like the tables; SQLite gives its -wal and -shm
            # files the database's own permissions
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(value)")]
            if "how" not in columns:  # a database from before provenance: every value was a reader's
                self._db.execute("ALTER TABLE value ADD COLUMN how TEXT NOT NULL DEFAULT 'set'")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the review database ({exc})") from None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open the review database ({exc.strerror or exc})") from None

    def close(self) -> None:
        self._db.close()

    def register(self, reader: str, role: str) -> None:
        """Record a reader's role ('reader' or 'adjudicator'); one name keeps one role."""
        with self._lock:
            row = self._db.execute("SELECT role FROM readers WHERE name = ?", (reader,)).fetchone()
            if row is None:
                self._db.execute("INSERT INTO readers VALUES (?, ?)", (reader, role))
            elif row[0] != role:
                raise StoreError(f"{self.path}: {reader!r} is already a{'n' if row[0][0] == 'a' else ''} "
                                 f"{row[0]} here; an adjudicator needs a name of their own")

    def readers(self, role: str = "reader") -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT name FROM readers WHERE role = ? ORDER BY name", (role,))]

    def set(self, reader: str, item: str, field: str, value, how: str = SET) -> str:
        """Save one value, with how it got there (:data:`SET` or :data:`CONFIRMED`); returns the time it
        was saved. Unchanged values still leave an audit row (a reader confirming the model's reading is
        a decision)."""
        if how not in (SET, CONFIRMED):
            raise ValueError(f"how must be {SET!r} or {CONFIRMED!r}")
        new, time = json.dumps(value), _now()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT value FROM value WHERE reader = ? AND item = ? AND field = ?",
                                       (reader, item, field)).fetchone()
                self._db.execute("INSERT INTO value VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (reader, item, field) "
                                 "DO UPDATE SET value = excluded.value, time = excluded.time, how = excluded.how",
                                 (reader, item, field, new, time, how))
                self._db.execute("INSERT INTO audit (reader, time, item, field, old, new) VALUES (?, ?, ?, ?, ?, ?)",
                                 (reader, time, item, field, row[0] if row else None, new))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return time

    def values(self, reader: str, item: str | None = None) -> dict:
        """{item: {field: value}} of one reader (one item's only, when given)."""
        query, args = "SELECT item, field, value FROM value WHERE reader = ?", [reader]
        if item is not None:
            query, args = query + " AND item = ?", args + [item]
        out: dict[str, dict] = {}
        with self._lock:
            for it, field, value in self._db.execute(query, args):
                out.setdefault(it, {})[field] = json.loads(value)
        return out

    def item_values(self, reader: str, item: str) -> dict:
        """{field: value} of one reader on one item."""
        return self.values(reader, item).get(item, {})

    def provenance(self, reader: str, item: str) -> dict:
        """{field: how} of one reader's stored values on one item (:data:`SET` or :data:`CONFIRMED`)."""
        with self._lock:
            return dict(self._db.execute("SELECT field, how FROM value WHERE reader = ? AND item = ?", (reader, item)))

    def audit(self, item: str | None = None) -> list[dict]:
        query = "SELECT reader, time, item, field, old, new FROM audit"
        args = []
        if item is not None:
            query, args = query + " WHERE item = ?", [item]
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [{"reader": r, "time": t, "item": i, "field": f, "old": None if o is None else json.loads(o),
                 "new": json.loads(n)} for r, t, i, f, o, n in rows]

    def prefill(self, item: str) -> dict | None:
        """A model's reading of an item computed earlier (``--model`` on a folder), or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM prefill WHERE item = ?", (item,)).fetchone()
        return json.loads(row[0]) if row else None

    def keep_prefill(self, item: str, reading: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO prefill VALUES (?, ?)", (item, json.dumps(reading)))

    def setting(self, name: str):
        """A session option kept for later commands (the label file, the images folder)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM setting WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def keep_setting(self, name: str, value) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO setting VALUES (?, ?)", (name, json.dumps(value)))
