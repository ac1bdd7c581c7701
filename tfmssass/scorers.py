"""Scoring one radiograph at a time: where the models come from (training runs, an exported
model, TF Serving) and how their outputs become a record with points, grades and review flags.

:class:`Scorer` runs the two stages' Keras models and grades the crops of several radiographs in
one batch; :class:`ServedScorer` asks the exported whole-pipeline model. Both use the TF
functions of :mod:`tfmssass.pipeline`, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import anatomy
from .atomic import write_bytes
from .geometry import cranial_directions
from .io import RadiographError
from .models.heatmaps import VIEW_SLICES
from .overlay import draw_overlay, shrink_for_overlay

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
    crop_function: object = None  # the traced crop function, kept between runs


#: The shipped phantom demo model: next to the package in a source checkout, else under the
#: current folder (the README's commands run from the repository root).
DEMO_MODEL = Path("saved_models") / "phantom-demo" / "1"


def demo_model_dir() -> Path:
    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        if (base / DEMO_MODEL / "saved_model.pb").is_file():
            return base / DEMO_MODEL
    raise ValueError(f"no model given and the shipped demo model ({DEMO_MODEL}) was not found; "
                     "run from the repository root or pass --model/--keypoints/--grader")


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


def load_models(model_dir=None, keypoints_run=None, grader_run=None, server=None, grpc_target=None,
                model_name=None):
    """Exactly one model source → (models or backend, description, phantom-trained?).

    Raises ValueError (a usage error) for a wrong combination or an unusable folder.
    """
    from .serving import GrpcBackend, RestBackend, SavedModelBackend
    from .train import RunFolderError

    sources = [bool(model_dir), bool(keypoints_run or grader_run), bool(server), bool(grpc_target)]
    if sum(sources) > 1:
        raise ValueError("give one model source: --model, --keypoints/--grader, --server or --grpc")
    if keypoints_run or grader_run:
        if not (keypoints_run and grader_run):
            raise ValueError("--keypoints and --grader go together")
        try:
            return load_run_models(keypoints_run, grader_run)
        except (RunFolderError, OSError) as exc:
            raise ValueError(str(exc)) from None
    if server or grpc_target:
        if not model_name:
            raise ValueError("--server/--grpc need --model-name")
        backend = RestBackend(server, model_name) if server else GrpcBackend(grpc_target, model_name)
        # one small request up front: fails fast when the server is away, and tells the model's note
        note = str(backend.predict(np.zeros((64, 64), np.float32)).get("model_note", ""))
        return backend, f"TF Serving model {model_name} at {server or grpc_target}", "PHANTOM" in note
    model_dir = Path(model_dir) if model_dir else demo_model_dir()
    backend = SavedModelBackend(model_dir)
    meta = backend.metadata
    return backend, f"{model_dir.parent.name} v{model_dir.name}", bool(meta.get("phantom_trained"))


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


def _base_record(item: Item) -> dict:
    return {"key": item.key, "file": item.file, **item.ident, "view": None, "status": "scored",
            "reason": "", "levels": {}, "corners": []}


def _level_confidence(view: str, confidence: np.ndarray) -> np.ndarray:
    """Per level of the view: the lower confidence of its two points."""
    conf = confidence[VIEW_SLICES[view]]
    return np.minimum(conf[0::2], conf[1::2])


def _fill_levels(record: dict, view: str, points: np.ndarray, level_conf: np.ndarray, cut: np.ndarray) -> None:
    """The view's 6 levels into the record: both points, their confidence, whether they were cut."""
    points = points[VIEW_SLICES[view]]
    for j, level in enumerate(anatomy.LEVELS[view]):
        record["levels"][level] = {"c": points[2 * j].tolist(), "a": points[2 * j + 1].tolist(),
                                   "point_confidence": round(float(level_conf[j]), 4), "cut": bool(cut[j])}


def _fill_corners(record: dict, probabilities, grades, confidence, review, point_threshold: float) -> None:
    """Corner rows from the pipeline's outputs; corners of levels not cut stay blank, never 0."""
    levels = anatomy.LEVELS[record["view"]]
    corners = []
    for k, name in enumerate(anatomy.CORNERS[record["view"]]):
        info = record["levels"][levels[k // 2]]
        if not info["cut"]:
            why = ("points not confident" if info["point_confidence"] < point_threshold
                   else "no neighbouring level or disk too small")
            corners.append({"level": levels[k // 2], "corner": name, "grade": None, "p": None, "confidence": None,
                            "review": True, "why": why})
            continue
        corners.append({"level": levels[k // 2], "corner": name, "grade": int(grades[k]),
                        "p": [round(float(v), 4) for v in probabilities[k]],
                        "confidence": round(float(confidence[k]), 4), "review": bool(review[k]), "why": ""})
    record["corners"] = corners
    graded = [c["grade"] for c in corners if c["grade"] is not None]
    record["score"], record["corners_graded"] = int(sum(graded)), len(graded)


def _write_overlay(record: dict, overlay_state, out: Path, settings: Settings, extent: float) -> str:
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
    if settings.phantom:
        caption.append(PHANTOM_WARNING)
    picture = draw_overlay(small, scale, levels, corners, caption, extent)
    name = f"overlays/{record['file'].replace('/', '__')}.png"
    ok, encoded = cv2.imencode(".png", picture)
    write_bytes(out / name, encoded.tobytes())
    return name


class Scorer:
    """Scoring with the two stages' Keras models: stage 1 per radiograph, the corner crops of
    several radiographs through the grader in one batch.

    Crops, bridge rule and review flags are :mod:`tfmssass.pipeline`'s TF functions, the same
    ones the exported SavedModel runs.
    """

    def __init__(self, models: ScoringModels, settings: Settings, out: Path, batch_size: int = 64):
        import tensorflow as tf

        from .pipeline import corner_crops, grade_corners

        self.models, self.settings, self.out, self.batch_size = models, settings, out, batch_size
        self.pending: list[tuple[dict, np.ndarray, np.ndarray, object]] = []
        m = models
        if m.crop_function is None:  # traced once per set of models, not once per run
            m.crop_function = tf.function(
                lambda image, points, ok: corner_crops(image, points, ok, m.input_size, m.extent, m.patch_depth_px,
                                                       m.clahe, m.clahe_clip),
                input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([12, 2], tf.float32),
                                 tf.TensorSpec([6], tf.bool)], autograph=False)
        self._crops = m.crop_function
        self._grade = lambda p, conf, ok: [t.numpy() for t in grade_corners(
            p, conf, ok, settings.review_threshold, settings.point_review)]

    def add(self, item: Item) -> list[dict]:
        """Stage 1 and the crops of one radiograph; returns the records finished by now."""
        det = self.models.detector.detect(item.image, view=self.settings.view or item.ident.get("view"))
        record = _base_record(item)
        record["view"] = det.view
        if not det.found:
            record.update(status="failed", reason=det.reason)
            return [record]
        level_conf = _level_confidence(det.view, det.confidence)
        confident = level_conf >= self.models.point_threshold
        points = det.points[VIEW_SLICES[det.view]]
        crops, cut = (t.numpy() for t in self._crops(item.image, points, confident))
        _fill_levels(record, det.view, det.points, level_conf, cut)
        self.pending.append((record, crops, level_conf, shrink_for_overlay(item.image)))
        return self.flush() if len(self.pending) * 12 >= self.batch_size else []

    def flush(self) -> list[dict]:
        """Grade all waiting crops in batches; finish their records."""
        if not self.pending:
            return []
        crops = np.concatenate([c for _, c, _, _ in self.pending])[..., None]
        probs = np.concatenate([np.asarray(self.models.grader.predict_on_batch(crops[i:i + self.batch_size]))
                                for i in range(0, len(crops), self.batch_size)]).reshape(-1, 12, 4)
        done = []
        for (record, _, level_conf, overlay_state), p in zip(self.pending, probs):
            cut = np.array([record["levels"][lv]["cut"] for lv in anatomy.LEVELS[record["view"]]])
            grades, confidence, review = self._grade(p, level_conf, cut)
            _fill_corners(record, p, grades, confidence, review, self.models.point_threshold)
            record["overlay"] = _write_overlay(record, overlay_state, self.out, self.settings, self.models.extent)
            done.append(record)
        self.pending.clear()
        return done


class ServedScorer:
    """Scoring with the exported whole-pipeline model, in process or on TF Serving
    (:mod:`tfmssass.serving`): one radiograph per request, everything computed by the model."""

    def __init__(self, backend, settings: Settings, out: Path):
        meta = backend.metadata or {}
        self.backend, self.settings, self.out = backend, settings, out
        self.point_threshold = float(meta.get("keypoints", {}).get("confidence_threshold", 0.3))
        self.extent = float(meta.get("grader", {}).get("extent", 2.8))

    def add(self, item: Item) -> list[dict]:
        from .serving import ServingError

        record = _base_record(item)
        try:
            out = self.backend.predict(item.image)
        except ServingError as exc:
            record.update(status="failed", reason=str(exc))
            return [record]
        record["view"] = out["view"]
        if self.settings.view and out["view"] != self.settings.view:
            record.update(status="failed", reason=f"the model reads a {out['view']} view, not {self.settings.view} "
                                                   "(--view cannot be forced with an exported model)")
            return [record]
        if not out["spine_found"]:
            record.update(status="failed", reason="spine not found")
            return [record]
        cut = out["grades"][0::2] >= 0
        _fill_levels(record, out["view"], out["keypoints"], _level_confidence(out["view"], out["keypoint_confidence"]),
                     cut)
        _fill_corners(record, out["grade_probabilities"], out["grades"], out["corner_confidence"], out["review"],
                      self.point_threshold)
        record["overlay"] = _write_overlay(record, shrink_for_overlay(item.image), self.out, self.settings,
                                           self.extent)
        return [record]

    def flush(self) -> list[dict]:
        return []
