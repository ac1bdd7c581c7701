"""``tfmssass score DIR``: every radiograph in a folder → per-corner grades, per-visit mSASSS,
progression between visits, overlays and a report.

Flow: files are read by a small thread pool a few radiographs ahead of the model work (reading
and decoding DICOM hides behind the networks). Per radiograph, stage 1 finds the disk points, the
levels are cut and turned into canonical corner crops, and the crops of several radiographs go
through the grader in one batch. Each finished radiograph is written as one small record
(``OUT/.work/records/<content hash>.json``, atomically); the CSVs and the report are rebuilt from
the records at the end. So a run killed at any moment and started again with ``--resume`` skips
what is done and ends with the same files as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from . import anatomy
from .atomic import atomic_path, write_bytes, write_text
from .geometry import cranial_directions
from .inputs import Skipped, check_dicom_header, discover, identify, is_dicom, read_meta_table
from .io import RadiographError, read_radiograph
from .overlay import draw_overlay, shrink_for_overlay

CORNER_COLUMNS = ["file", "patient_id", "visit_date", "view", "level", "corner", "grade", "p0", "p1",
                  "p2", "p3", "confidence", "review"]
IMAGE_COLUMNS = ["file", "patient_id", "visit_date", "view", "score", "corners_graded", "status"]
ERROR_COLUMNS = ["file", "reason"]
PHANTOM_WARNING = ("PHANTOM-TRAINED DEMO MODELS: trained on synthetic phantoms only; "
                   "not for clinical or research use")


@dataclass(frozen=True)
class Settings:
    """Everything that changes the results; a resumed run must use the same."""

    models: str  # what scored (run folders or model name), written into every output
    phantom: bool  # whether the models were trained on phantoms only
    view: str | None = None
    impute: str = "mean"
    review_threshold: float = 0.6  # grade probability below this → review
    point_review: float = 0.5  # key-point confidence below this → review
    salt_id: str | None = None  # a hash of the pseudonymisation salt (the salt itself is never written)

    @property
    def models_note(self) -> str:
        return f"{PHANTOM_WARNING} ({self.models})" if self.phantom else self.models


@dataclass
class ScoringModels:
    """Stage 1 detector, stage 2 grader and how the grader's crops are made."""

    detector: object
    grader: object
    input_size: int
    extent: float
    patch_depth_px: int
    clahe: bool
    clahe_clip: float
    point_threshold: float  # below this a level is not graded at all


def load_run_models(keypoints_run, grader_run) -> tuple[ScoringModels, str, bool]:
    """Models from two training run folders, their description, and whether both are phantom-trained."""
    from .train import read_config, trained_on_phantoms
    from .train_grader import load_grader
    from .train_keypoints import load_detector

    detector = load_detector(keypoints_run)
    grader, config = load_grader(grader_run)
    models = ScoringModels(detector, grader, config.input_size, config.extent, config.patch_depth_px,
                           config.clahe, config.clahe_clip, detector.threshold)
    phantom = all(trained_on_phantoms(read_config(run)) for run in (keypoints_run, grader_run))
    text = f"keypoints {Path(keypoints_run).resolve().name}, grader {Path(grader_run).resolve().name}"
    return models, text, phantom


def pseudonym(value: str, salt: str, prefix: str = "P") -> str:
    return prefix + hashlib.sha256(f"{salt}\0{value}".encode()).hexdigest()[:12]


def content_key(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Item:
    """One input file on its way through the pipeline."""

    path: Path
    file: str  # as written to the outputs (relative path, or a pseudonym)
    key: str | None = None
    error: RadiographError | None = None
    done: bool = False
    ident: dict = field(default_factory=dict)
    image: np.ndarray | None = None


class Scorer:
    """Per radiograph: stage 1, the corner crops, and (after batched grading) the corner rows.

    Crops, bridge rule and review flags are :mod:`tfmssass.pipeline`'s TF functions, the same
    ones the exported SavedModel runs.
    """

    def __init__(self, models: ScoringModels, settings: Settings, batch_size: int = 64):
        import tensorflow as tf

        from .pipeline import corner_crops, grade_corners

        self.models, self.settings, self.batch_size = models, settings, batch_size
        m = models
        self._crops = tf.function(
            lambda image, points, ok: corner_crops(image, points, ok, m.input_size, m.extent, m.patch_depth_px,
                                                   m.clahe, m.clahe_clip),
            input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([12, 2], tf.float32),
                             tf.TensorSpec([6], tf.bool)])
        self._grade = lambda p, conf, ok: [t.numpy() for t in grade_corners(
            p, conf, ok, settings.review_threshold, settings.point_review)]

    def detect_and_cut(self, item: Item):
        """Stage 1 and the 12 corner crops; returns (record, crops [12, S, S] or None, overlay state)."""
        from .models.heatmaps import VIEW_SLICES

        view = self.settings.view or item.ident.get("view")
        det = self.models.detector.detect(item.image, view=view)
        record = self._base_record(item)
        record["view"] = det.view
        if not det.found:
            record.update(status="failed", reason=det.reason)
            return record, None, None
        span = VIEW_SLICES[det.view]
        points, conf = det.points[span], det.confidence[span]
        level_conf = np.minimum(conf[0::2], conf[1::2])
        crops, cut = (t.numpy() for t in self._crops(item.image, points, level_conf >= self.models.point_threshold))
        for j, level in enumerate(anatomy.LEVELS[det.view]):
            record["levels"][level] = {"c": points[2 * j].tolist(), "a": points[2 * j + 1].tolist(),
                                       "point_confidence": round(float(level_conf[j]), 4), "cut": bool(cut[j])}
        return record, crops, shrink_for_overlay(item.image)

    def _base_record(self, item: Item) -> dict:
        return {"key": item.key, "file": item.file, **item.ident, "view": None, "status": "scored",
                "reason": "", "levels": {}, "corners": []}

    def finish(self, record: dict, probabilities: np.ndarray, overlay_state, out: Path) -> dict:
        """Bridge rule, confidence and review per corner; draw the overlay; return the record."""
        levels = anatomy.LEVELS[record["view"]]
        conf = np.array([record["levels"][lv]["point_confidence"] for lv in levels], np.float32)
        cut = np.array([record["levels"][lv]["cut"] for lv in levels])
        grades, confidence, review = self._grade(probabilities, conf, cut)
        corners = []
        for k, name in enumerate(anatomy.CORNERS[record["view"]]):
            level = levels[k // 2]
            if not cut[k // 2]:
                why = ("points not confident" if conf[k // 2] < self.models.point_threshold
                       else "no neighbouring level or disk too small")
                corners.append({"level": level, "corner": name, "grade": None, "p": None, "confidence": None,
                                "review": True, "why": why})
                continue
            corners.append({"level": level, "corner": name, "grade": int(grades[k]),
                            "p": [round(float(v), 4) for v in probabilities[k]],
                            "confidence": round(float(confidence[k]), 4), "review": bool(review[k]), "why": ""})
        record["corners"] = corners
        graded = [c["grade"] for c in corners if c["grade"] is not None]
        record["score"], record["corners_graded"] = int(sum(graded)), len(graded)
        if overlay_state is not None:
            record["overlay"] = self._write_overlay(record, overlay_state, out)
        return record

    def _write_overlay(self, record, overlay_state, out: Path) -> str:
        small, scale = overlay_state
        names = anatomy.LEVELS[record["view"]]
        cut = [lv for lv in names if record["levels"][lv]["cut"]]
        centres = np.array([record["levels"][lv]["c"] if lv in cut else [np.nan, np.nan] for lv in names])
        ups = dict(zip(names, cranial_directions(centres)))
        levels = [{"level": lv, **record["levels"][lv], "up": ups[lv], "inf_corner": anatomy.level_corners(lv)[0],
                   "sup_corner": anatomy.level_corners(lv)[1]} for lv in cut]
        corners = {c["corner"]: c for c in record["corners"]}
        review = sum(c["review"] for c in record["corners"])
        caption = [f"{record['file']}  |  {record['view']}  |  subtotal {record['score']} of 36 "
                   f"({record['corners_graded']}/12 corners graded)  |  {review} to review"]
        if self.settings.phantom:
            caption.append(PHANTOM_WARNING)
        picture = draw_overlay(small, scale, levels, corners, caption, self.models.extent)
        name = f"overlays/{record['file'].replace('/', '__')}.png"
        ok, encoded = cv2.imencode(".png", picture)
        write_bytes(out / name, encoded.tobytes())
        return name


# ---- the run --------------------------------------------------------------------------------------

def _prepare_work(out: Path, settings: Settings, resume: bool) -> Path:
    work = out / ".work"
    records = work / "records"
    wanted = json.dumps(asdict(settings), sort_keys=True)
    if resume and (work / "settings.json").is_file():
        if (work / "settings.json").read_text() != wanted:
            raise ValueError(f"{out}: --resume with different models or settings than the first run "
                             "(use a new --out, or drop --resume to start again)")
    elif work.exists():
        shutil.rmtree(work)
        shutil.rmtree(out / "overlays", ignore_errors=True)
    records.mkdir(parents=True, exist_ok=True)
    write_text(work / "settings.json", wanted)
    for path in records.glob("*.json"):  # inputs that were not scored are tried again
        if json.loads(path.read_text())["status"] != "scored":
            path.unlink()
    return records


def _file_key(item: Item) -> str:
    """Record name of an input that is not scored: unique per file (empty files share content)."""
    return f"{item.key or 'unread'}-{hashlib.sha1(item.file.encode()).hexdigest()[:12]}"


def _save_record(records: Path, record: dict) -> None:
    write_text(records / f"{record['key']}.json", json.dumps(record, sort_keys=True))


def salt_id(salt: str) -> str:
    return hashlib.sha256(f"tfmssass-salt\0{salt}".encode()).hexdigest()[:16]


def run_scoring(root, out, models: ScoringModels, settings: Settings, meta_csv=None, batch_size: int = 64,
                resume: bool = False, progress: bool = True, lookahead: int = 4, salt: str | None = None) -> dict:
    """Score every radiograph under ``root`` into ``out``; returns counts (scored, failed, skipped).

    With ``salt`` patient ids and file names are replaced by salted hashes everywhere."""
    if (salt is None) != (settings.salt_id is None) or (salt is not None and salt_id(salt) != settings.salt_id):
        raise ValueError("settings.salt_id must be salt_id(salt)")
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = _prepare_work(out, settings, resume)
    done = {r["key"]: r["file"] for r in _load_records(records)}  # scored radiographs only
    sidecar = read_meta_table(meta_csv) if meta_csv else None
    files, passed_over = discover(root)
    scorer = Scorer(models, settings, batch_size)

    def display_name(path: Path) -> str:
        rel = path.relative_to(root).as_posix() if path != root else path.name
        return pseudonym(rel, salt, prefix="F") if salt is not None else rel

    def load(path: Path) -> Item:
        item = Item(path, display_name(path))
        try:
            item.key = content_key(path)
            if done.get(item.key) == item.file:
                item.done = True
                return item
            if is_dicom(path):
                check_dicom_header(path)
            radiograph = read_radiograph(path)
            item.ident = identify(path, root, radiograph.meta, sidecar)
            if salt is not None:
                item.ident["patient_id"] = pseudonym(item.ident["patient_id"], salt)
            item.image = radiograph.image
        except RadiographError as exc:
            item.error = exc
        except OSError as exc:
            item.error = RadiographError(path, exc.strerror or str(exc))
        return item

    pending: list[tuple[dict, np.ndarray, object]] = []

    def flush():
        if not pending:
            return
        crops = np.concatenate([c for _, c, _ in pending], axis=0)
        probs = (np.concatenate([np.asarray(models.grader(crops[i:i + batch_size, ..., None], training=False))
                                 for i in range(0, len(crops), batch_size)], axis=0)
                 if len(crops) else np.zeros((0, 4), np.float32))
        start = 0
        for record, c, overlay_state in pending:
            n = len(c)
            _save_record(records, scorer.finish(record, probs[start:start + n], overlay_state, out))
            start += n
        pending.clear()

    seen = dict(done)
    bar = tqdm(total=len(files), desc="scoring", unit="file", disable=not progress)
    with ThreadPoolExecutor(max_workers=2) as pool:
        queue = deque()
        for path in files[:lookahead]:
            queue.append(pool.submit(load, path))
        next_file = lookahead
        while queue:
            item = queue.popleft().result()
            if next_file < len(files):
                queue.append(pool.submit(load, files[next_file]))
                next_file += 1
            bar.update(1)
            if item.done:
                continue
            if item.error is not None:
                status = "skipped" if isinstance(item.error, Skipped) else "failed"
                _save_record(records, {"key": _file_key(item), "file": item.file, "status": status,
                                       "reason": item.error.reason})
                continue
            if item.key in seen:  # a copy of a file already scored in this run
                _save_record(records, {"key": _file_key(item), "file": item.file, "status": "skipped",
                                       "reason": f"skipped: same content as {seen[item.key]}"})
                continue
            seen[item.key] = item.file
            record, crops, overlay_state = scorer.detect_and_cut(item)
            item.image = None
            if crops is None:
                _save_record(records, record)
                continue
            pending.append((record, crops, overlay_state))
            if sum(len(c) for _, c, _ in pending) >= batch_size:
                flush()
        flush()
    bar.close()
    return write_outputs(out, records, files, root, settings, passed_over)


# ---- outputs from records -----------------------------------------------------------------------

def _load_records(records: Path) -> list[dict]:
    loaded = [json.loads(p.read_text()) for p in sorted(records.glob("*.json"))]
    return sorted(loaded, key=lambda r: r["file"])


def choose_radiographs(records: list[dict]) -> dict[str, str]:
    """For two or more scored radiographs of one view at one visit: keep the one with the most
    graded corners, then the most confident ones; returns {file: why not used} for the others."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r["status"] == "scored":
            groups.setdefault((r["patient_id"], r["visit_date"], r["view"]), []).append(r)
    not_used = {}
    for group in groups.values():
        if len(group) < 2:
            continue

        def merit(r):
            conf = [c["confidence"] for c in r["corners"] if c["confidence"] is not None]
            return (r["corners_graded"], float(np.mean(conf)) if conf else 0.0, r["file"])

        best = max(group, key=merit)
        for r in group:
            if r is not best:
                not_used[r["file"]] = (f"not used: {best['file']} is the {r['view']} radiograph "
                                       "of this visit with more confidently graded corners")
    return not_used


def _write_csv(path: Path, frame: pd.DataFrame, note: str) -> None:
    frame = frame.copy()
    frame["models"] = note
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, encoding="utf-8")


def write_outputs(out: Path, records_dir: Path, files, root, settings: Settings, passed_over: int = 0) -> dict:
    from .report import write_report
    from .totals import progression, visit_totals

    records = _load_records(records_dir)
    not_used = choose_radiographs(records)
    corner_rows, image_rows, error_rows = [], [], []
    for r in records:
        if r["status"] != "scored":
            error_rows.append({"file": r["file"], "reason": r["reason"]})
            if r["status"] == "failed" and r.get("patient_id"):
                image_rows.append({"file": r["file"], "patient_id": r["patient_id"],
                                   "visit_date": r["visit_date"], "view": r.get("view"), "score": None,
                                   "corners_graded": 0, "status": r["reason"]})
            continue
        image_rows.append({"file": r["file"], "patient_id": r["patient_id"], "visit_date": r["visit_date"],
                           "view": r["view"], "score": r["score"], "corners_graded": r["corners_graded"],
                           "status": not_used.get(r["file"], "scored")})
        for c in r["corners"]:
            p = c["p"] or [None] * 4
            corner_rows.append({"file": r["file"], "patient_id": r["patient_id"], "visit_date": r["visit_date"],
                                "view": r["view"], "level": c["level"], "corner": c["corner"],
                                "grade": c["grade"], "p0": p[0], "p1": p[1], "p2": p[2], "p3": p[3],
                                "confidence": c["confidence"], "review": c["review"]})
    corners = pd.DataFrame(corner_rows, columns=CORNER_COLUMNS)
    images = pd.DataFrame(image_rows, columns=IMAGE_COLUMNS)
    errors = pd.DataFrame(error_rows, columns=ERROR_COLUMNS)
    used = corners[~corners["file"].isin(set(not_used))].astype({"grade": "float"})
    visits = visit_totals(used, settings.impute)
    changes = progression(visits, used)
    note = settings.models_note
    _write_csv(out / "corners.csv", corners.astype({"grade": "Int64"}), note)
    _write_csv(out / "images.csv", images.astype({"score": "Int64"}), note)
    _write_csv(out / "visits.csv", visits.round({"cervical": 2, "lumbar": 2, "msasss": 2}), note)
    _write_csv(out / "progression.csv", changes.round({"delta": 2}), note)
    _write_csv(out / "errors.csv", errors, note)
    write_report(out / "report.html", records, visits, changes, not_used, settings)
    failed = sum(r["status"] == "failed" for r in records)
    skipped = sum(r["status"] == "skipped" for r in records)
    return {"scored": len(records) - failed - skipped, "failed": failed, "skipped": skipped,
            "files": len(files), "passed_over": passed_over, "not_used": len(not_used)}
