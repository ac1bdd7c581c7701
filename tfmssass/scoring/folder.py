"""The scored folder ``OUT/``: the one owner of its layout, its format version, the run that writes
it, its per-radiograph records and the decisions taken from them.

Nobody else spells a path under ``OUT/.work``: review, pacs, stats and the report ask this class.
The layout (docs/outputs.md):

- ``corners.csv``, ``images.csv``, ``visits.csv``, ``progression.csv``, ``errors.csv``,
  ``report.html``: the results, rebuilt from the records at the end of every run;
- ``overlays/``, ``crops/``, ``dicom/``: pictures and DICOM objects;
- ``.tfmssass.lock``: locked (``flock``) by the run writing the folder, with its PID inside;
- ``.work/``: ``format.json`` (:data:`FORMAT_VERSION`), ``run.json`` (the run id), ``settings.json``,
  ``source.json`` (where the radiographs were, the grader's crop, the calibration), ``records/``
  (one JSON per input), ``dicom_created.txt`` and ``stored.txt`` (DICOM output and what was sent).

A folder belongs to one run at a time, and holds one run's results: a fresh run refuses a folder
that holds another's unless told to overwrite it, so partial new records never sit beside old
tables that look complete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path

from tfmssass.core.atomic import keep_settings, write_text
from tfmssass.core.errors import UsageError
from tfmssass.scoring.cohort import decide
from tfmssass.scoring.film import FilmRecord, Status, choose_radiographs
from tfmssass.scoring.settings import Settings

#: 1: folders written before the format was versioned (no ``format.json``); read as they are.
#: 2: adds ``format.json``, ``run.json`` and the lock.
#: 3: typed records (:mod:`tfmssass.scoring.film`): a level's ``on_film`` (was ``off_film``), a corner's
#: ``review_code`` and ``review_reason`` (were ``code`` and ``why``). Formats 1 and 2 are read as they are.
#: 4: a corner's ``p_gradable`` and ``not_gradable`` (corners.csv's ``gradable``, ``p_gradable``); older
#: records read with neither (every graded corner gradable).
FORMAT_VERSION = 4
RESULT_FILES = ("corners.csv", "images.csv", "visits.csv", "progression.csv", "errors.csv", "report.html")
RESULT_FOLDERS = ("overlays", "crops", "dicom")
LOCK_FILE = ".tfmssass.lock"
WORK = ".work"


class FolderError(UsageError):
    """The folder cannot be used as asked (busy, another run's results, a newer format): exit 2."""


#: Folders whose lock this process holds, so that a run's steps (scoring, then DICOM objects) nest.
_HELD: set[Path] = set()


class ScoredFolder:
    """``OUT/`` of ``tfmssass score``."""

    def __init__(self, root):
        self.root = Path(root)
        self.work = self.root / WORK
        self.records_dir = self.work / "records"
        self.settings_file = self.work / "settings.json"

    # ---- what the folder is ------------------------------------------------------------------------

    def is_scored(self) -> bool:
        """Whether a scoring run wrote this folder (its records are there)."""
        return self.records_dir.is_dir()

    def holds_results(self) -> bool:
        """Whether another run's tables, report, pictures or records are here."""
        if any((self.root / name).exists() for name in RESULT_FILES + RESULT_FOLDERS):
            return True
        return self.records_dir.is_dir() and any(self.records_dir.iterdir())

    def format_version(self) -> int:
        """The folder's format; refuses one this version cannot read, in one line."""
        path = self.work / "format.json"
        if not path.is_file():
            return 1
        try:
            version = int(json.loads(path.read_text())["format"])
        except (ValueError, KeyError, TypeError):
            raise FolderError(f"{self.root}: {path.name} is damaged; score into another --out") from None
        if version > FORMAT_VERSION:
            raise FolderError(f"{self.root}: written by a newer tfmssass (folder format {version}; this version "
                              f"reads 1 to {FORMAT_VERSION}); upgrade tfmssass or score into another --out")
        return version

    def run_id(self) -> str | None:
        """The id of the run that made the folder's results (None: an older folder)."""
        path = self.work / "run.json"
        return json.loads(path.read_text())["run_id"] if path.is_file() else None

    # ---- one run at a time -------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self):
        """Hold the folder's lock for the block; a second run on it (another process) is refused with
        the holder's PID. Re-entrant within this process."""
        self.root.mkdir(parents=True, exist_ok=True)
        key = self.root.resolve()
        if key in _HELD:  # an outer block of this process holds it, and releases it
            yield self
            return
        path = self.root / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderError(f"{self.root}: another run (PID {holder}) is writing this folder; wait for it "
                              "to finish or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD.add(key)
        try:
            yield self
        finally:
            _HELD.discard(key)
            os.close(fd)  # closing releases the lock; the file stays (removing it would race)

    def resumable(self, resume: bool) -> bool:
        return resume and self.settings_file.is_file()

    def check_start(self, resume: bool, overwrite: bool) -> None:
        """Refuse, in one line, a folder this run may not write: a newer format, or another run's results
        when neither ``resume`` nor ``overwrite`` is given."""
        self.format_version()
        if not self.resumable(resume) and not overwrite and self.holds_results():
            raise FolderError(f"{self.root}: holds results of another run; use --resume or another --out "
                              "(or --overwrite to replace them)")

    def begin(self, settings: Settings, resume: bool, overwrite: bool = False) -> dict[str, str]:
        """Start or resume a run here (call it holding :meth:`writing`); returns {content key: file} of
        the radiographs already scored, which a resumed run skips.

        ``resume`` with the same settings keeps the records; with others it is refused. A fresh run
        refuses a folder that holds another run's results unless ``overwrite``, which removes them
        before anything new is written. Inputs that were not scored are tried again."""
        wanted = asdict(settings)
        self.check_start(resume, overwrite)
        if self.resumable(resume):
            self._settings_before_fingerprints(wanted)
            if not keep_settings(self.settings_file, wanted):
                raise FolderError(f"{self.root}: --resume with different models (or other weights under the same "
                                  f"name) or settings than the first run{self._differences(wanted)} (use another "
                                  "--out, or --overwrite to start again)")
        else:
            self.clear()
            write_text(self.work / "format.json", json.dumps({"format": FORMAT_VERSION}) + "\n")
            write_text(self.work / "run.json", json.dumps(
                {"run_id": uuid.uuid4().hex[:12], "started": _dt.datetime.now().replace(microsecond=0).isoformat()},
                indent=1) + "\n")
            keep_settings(self.settings_file, wanted)
        self.records_dir.mkdir(parents=True, exist_ok=True)
        done = {}
        for film in self.records():
            if film.scored:
                done[film.key] = film.file
            else:
                (self.records_dir / f"{film.key}.json").unlink()
        return done

    def _differences(self, wanted: dict) -> str:
        """Which settings a resumed run would change, for its refusal (': prior "data", now "tempered"')."""
        try:
            earlier = asdict(Settings.from_dict(json.loads(self.settings_file.read_text())))
        except (ValueError, TypeError):
            return ""  # unreadable or of another version: nothing to name
        # compared as JSON writes them (a prior's tuple and list are the same)
        changed = [f"{key} {json.dumps(earlier[key])}, now {json.dumps(value)}" for key, value in wanted.items()
                   if json.dumps(earlier[key]) != json.dumps(value)]
        return f": {'; '.join(changed)}" if changed else ""

    def _settings_before_fingerprints(self, wanted: dict) -> None:
        """A folder scored before runs kept the models' fingerprint resumes on the models' names alone."""
        path = self.settings_file
        try:
            earlier = json.loads(path.read_text())
        except ValueError:
            return  # unreadable: keep_settings refuses it
        if "model_fingerprint" not in earlier:
            write_text(path, json.dumps({**earlier, "model_fingerprint": wanted["model_fingerprint"]}, indent=1,
                                        sort_keys=True) + "\n")

    def clear(self) -> None:
        """Remove the results and the work folder (never the readers' ``review.sqlite``)."""
        shutil.rmtree(self.work, ignore_errors=True)
        for name in RESULT_FOLDERS:
            shutil.rmtree(self.root / name, ignore_errors=True)
        for name in RESULT_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.root / name).unlink()

    # ---- records -----------------------------------------------------------------------------------

    def save_record(self, film: FilmRecord) -> None:
        write_text(self.records_dir / f"{film.key}.json", json.dumps(film.to_dict(), sort_keys=True))

    def save_notes(self, notes) -> None:
        """Inputs that were not files to read (a PACS series that is no radiograph, a study without one),
        as records of their own: ``{"file", "status", "reason"}``; like every input not scored, they
        are tried again on ``--resume``."""
        for note in notes:
            key = "note-" + hashlib.sha1(note["file"].encode()).hexdigest()[:12]
            self.save_record(FilmRecord(key=key, file=note["file"], status=Status(note["status"]),
                                        reason=note["reason"]))

    def records(self) -> list[FilmRecord]:
        """The per-radiograph records of the run (points, probabilities, reasons), by file."""
        loaded = [FilmRecord.from_dict(json.loads(p.read_text())) for p in sorted(self.records_dir.glob("*.json"))]
        return sorted(loaded, key=lambda f: f.file)

    def settings(self) -> Settings:
        """The settings the run was made with."""
        return Settings.from_dict(json.loads(self.settings_file.read_text()))

    def decide_again_under(self, settings: Settings) -> None:
        """Put ``settings`` (another prior, say) in place of the run's own and keep its records, so that
        the next resumed run decides the same answers of the networks under them (a bench measuring a
        prior on a copy of a scored folder; the networks do not run again)."""
        self.settings_file.unlink(missing_ok=True)
        keep_settings(self.settings_file, asdict(settings))

    def decided_records(self, settings: Settings | None = None):
        """The records with the cohort's decisions applied (prior, longitudinal grades) as the tables show
        them; also {file: why not used} of the radiographs not counted, and the decoding."""
        records = self.records()
        not_used = choose_radiographs(records)
        return records, not_used, decide(records, not_used, settings or self.settings())

    # ---- what the run remembers for later steps ----------------------------------------------------

    def write_source(self, root: Path | None, metadata: dict) -> None:
        """Where the radiographs were (None for a pseudonymised run: the path may name patients) and how
        the grader cuts its crops, for ``review``; the model's calibration, for ``evaluate agreement``."""
        source = {"root": None if root is None else str(Path(root).resolve()), "grader": metadata.get("grader", {}),
                  "calibration": metadata.get("calibration")}
        write_text(self.work / "source.json", json.dumps(source, indent=1, sort_keys=True))

    def source(self) -> dict:
        """What :meth:`write_source` kept ({} for a folder scored before it existed)."""
        path = self.work / "source.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def dicom_created(self) -> _dt.datetime:
        """When the folder's DICOM output was first made, so a resumed run writes the same bytes."""
        path = self.work / "dicom_created.txt"
        if path.is_file():
            return _dt.datetime.fromisoformat(path.read_text().strip())
        when = _dt.datetime.now().replace(microsecond=0)
        write_text(path, when.isoformat())
        return when

    def stored(self) -> set[str]:
        """SOP instance UIDs already sent to the PACS (``--store``)."""
        path = self.work / "stored.txt"
        return set(path.read_text().split()) if path.is_file() else set()

    def mark_stored(self, uids: set[str]) -> None:
        write_text(self.work / "stored.txt", "\n".join(sorted(uids)) + "\n")
