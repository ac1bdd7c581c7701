"""The one model seam: every way of getting grades answers the same call.

A predictor takes display images [H, W] in [0, 1] (and, where known, their views) and returns, per
image, the SavedModel's named outputs as NumPy arrays (:data:`tfmssass.serving.module.OUTPUT_NAMES`).

- :class:`ModulePredictor`: two training run folders in memory (a
  :class:`~tfmssass.serving.module.ScoringModule`); the crops of several radiographs go through
  the grader in one batch.
- :class:`SavedModelPredictor`: an exported model folder in this process.
- :class:`RestPredictor` / :class:`GrpcPredictor`: TF Serving. DICOM never leaves the client: the
  image is sent as a 16-bit PNG.

:func:`open_predictor` turns the user's choice into one of these.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

import numpy as np

from tfmssass.core.config import demo_model_dir
from tfmssass.core.errors import TfmssassError, UsageError
from tfmssass.core.lru import LRU
from tfmssass.core.retry import BACKOFF_S, TRIES, RetryPolicy
from tfmssass.io.images import encode_png16

#: JSON → NumPy types of the outputs (a JSON null in a float output becomes NaN).
OUTPUT_DTYPES = {"keypoints": float, "keypoint_confidence": float, "grade_probabilities": np.float32, "grade_prior": float,
                 "gradable_probability": np.float32,
                 "corner_confidence": float, "grades": np.int32, "review": bool, "review_reason": np.int32,
                 "spine_found": bool,
                 "view": object, "model_note": object, "level_plausible": bool, "level_implant": bool,
                 "level_on_film": bool}

#: The shipped phantom demo model: next to the package in a source checkout, else under the
#: current folder (the README's commands run from the repository root).


class ServingError(TfmssassError):
    """The server refused this request (4xx): a problem with this input, one line."""


class ServingUnavailable(TfmssassError):
    """The server could not be reached, or kept failing, after all retries."""


class Predictor(Protocol):
    metadata: dict  # metadata.json of the model (empty when a server does not tell)
    fingerprint: str  # what the model's answers come from (weights, limits, calibration); "" for a server

    def predict(self, images: list[np.ndarray], views: list[str | None]) -> list[dict]:
        """Per image, the named outputs. ``views`` may force the view (None: the model tells)."""


def _one(outputs: dict, index: int = 0) -> dict:
    """One image's outputs from a batch; the string outputs as str."""
    out = {k: np.asarray(v)[index] for k, v in outputs.items()}
    for key in ("view", "model_note"):
        if key in out:
            out[key] = out[key].decode() if isinstance(out[key], bytes) else str(out[key])
    return out


class ModulePredictor:
    """Both stages in memory: stage 1 and the crops per radiograph, then the crops of all images of
    a call through the grader in batches of ``batch_size``, then the grading rules."""

    def __init__(self, module, batch_size: int = 64):
        self.module, self.batch_size, self.metadata = module, batch_size, module.metadata
        self.fingerprint = ""

    def predict(self, images, views):
        import tensorflow as tf

        from tfmssass.core import anatomy
        from tfmssass.serving.module import Reading

        readings = [self.module.read(tf.convert_to_tensor(image, tf.float32),
                                     tf.constant(-1 if view is None else anatomy.VIEWS.index(view)))
                    for image, view in zip(images, views)]
        batch = Reading(*(tf.stack(parts) for parts in zip(*readings)))
        crops = tf.reshape(batch.crops, [-1, self.module.crop.size, self.module.crop.size, 1])
        parts = [self.module.grade(crops[i:i + self.batch_size]) for i in range(0, int(crops.shape[0]), self.batch_size)]
        graded = {name: tf.reshape(tf.concat([p[name] for p in parts], axis=0), shape) for name, shape in
                  (("grade_probabilities", [-1, 12, 4]), ("gradable_probability", [-1, 12]))}
        outputs = self.module.outputs(batch, graded)
        arrays = {k: v.numpy() for k, v in outputs.items()}
        return [_one(arrays, i) for i in range(len(images))]


def read_metadata(model_dir) -> dict:
    path = Path(model_dir) / "metadata.json"
    if not (Path(model_dir) / "saved_model.pb").is_file():
        raise UsageError(f"{model_dir}: not an exported model folder (no saved_model.pb)")
    return json.loads(path.read_text()) if path.is_file() else {}


class SavedModelPredictor:
    """The exported model in this process (``tfmssass score --model DIR``), one image per call of
    its ``image_tensor`` signature (radiographs differ in size). The view cannot be forced."""

    #: the last two models loaded in this process, by folder and the hash of its files: loading one
    #: and its first run take seconds each, and a process that scores or serves again (the review
    #: server, a test session) need not pay them twice; changed files are a new key, loaded afresh
    _loaded = LRU(2)

    def __init__(self, model_dir):
        import tensorflow as tf

        self.metadata = read_metadata(model_dir)
        self.fingerprint = files_fingerprint(p for p in Path(model_dir).rglob("*") if p.is_file())
        self._fn = self._loaded.get((str(Path(model_dir).resolve()), self.fingerprint),
                                    lambda: tf.saved_model.load(str(model_dir)).signatures["image_tensor"])
        self._tf = tf

    def predict(self, images, views):
        return [_one({k: v.numpy() for k, v in self._fn(
            images=self._tf.constant(np.asarray(image, np.float32)[None, :, :, None])).items()})
            for image in images]


class RestPredictor:
    """TF Serving's REST predict API: POST {url}/v1/models/{name}:predict, row format."""

    def __init__(self, url: str, model_name: str, retries: int = TRIES, backoff: float = BACKOFF_S,
                 timeout: float = 300.0):
        self.endpoint = f"{url.rstrip('/')}/v1/models/{model_name}:predict"
        self.retry, self.timeout = RetryPolicy(retries, backoff), timeout
        self.metadata, self.fingerprint = {}, ""

    def _post(self, body: bytes) -> dict:
        request = urllib.request.Request(self.endpoint, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                text = json.loads(text).get("error", text)
            except ValueError:
                pass
            text = " ".join(str(text).split())
            if exc.code < 500:
                raise ServingError(f"server refused the request (HTTP {exc.code}): {text}") from None
            raise _Transient(f"HTTP {exc.code}: {text}") from None

    @staticmethod
    def _transient(exc: Exception) -> str | None:
        if isinstance(exc, _Transient):
            return str(exc)
        if isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError, http.client.IncompleteRead)):
            return str(getattr(exc, "reason", exc))
        return None

    def predict(self, images, views):
        return [self._predict_one(image) for image in images]

    def _predict_one(self, image: np.ndarray) -> dict:
        png = base64.b64encode(encode_png16(image)).decode("ascii")
        body = json.dumps({"signature_name": "serving_default", "instances": [{"b64": png}]}).encode()
        answer = self.retry.call(lambda: self._post(body), self._transient, self.endpoint, ServingUnavailable)
        if "predictions" not in answer:
            raise ServingError(f"unexpected answer from {self.endpoint}: no 'predictions'")
        row = answer["predictions"][0]
        return _one({k: np.asarray([v], dtype=OUTPUT_DTYPES.get(k)) for k, v in row.items()})


class _Transient(Exception):
    """A server error (5xx) worth another try."""


class GrpcPredictor:
    """TF Serving's gRPC PredictionService (``--grpc HOST:8500``), via tensorflow-serving-api."""

    def __init__(self, target: str, model_name: str, retries: int = TRIES, backoff: float = BACKOFF_S,
                 timeout: float = 300.0):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self._grpc = grpc
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target, options))
        self.target, self.model_name = target, model_name
        self.retry, self.timeout = RetryPolicy(retries, backoff), timeout
        self.metadata, self.fingerprint = {}, ""

    def _transient(self, exc: Exception) -> str | None:
        codes = self._grpc.StatusCode
        if not isinstance(exc, self._grpc.RpcError):
            return None
        detail = " ".join(str(exc.details()).split())
        if exc.code() not in {codes.UNAVAILABLE, codes.DEADLINE_EXCEEDED, codes.INTERNAL, codes.RESOURCE_EXHAUSTED}:
            raise ServingError(f"server refused the request ({exc.code().name}): {detail}") from None
        return f"{exc.code().name}: {detail}"

    def predict(self, images, views):
        return [self._predict_one(image) for image in images]

    def _predict_one(self, image: np.ndarray) -> dict:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = "serving_default"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto([encode_png16(image)]))
        reply = self.retry.call(lambda: self._stub.Predict(request, timeout=self.timeout), self._transient,
                                self.target, ServingUnavailable)
        return _one({k: tf.make_ndarray(v) for k, v in reply.outputs.items()})


#: The files of a training run that make its answers (the rest are logs).
RUN_FILES = ("config.json", "best.weights.h5", "orientation.weights.h5", "plausibility.json", "calibration.json")


def files_fingerprint(paths) -> str:
    """A short hash of the files a model's answers come from: a scored folder resumed with a model of
    the same name but other weights (exported again, a run trained further) is refused, not mixed."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def open_predictor(model_dir=None, keypoints_run=None, grader_run=None, server=None, grpc_target=None,
                   model_name=None, batch_size: int = 64, **thresholds) -> tuple[Predictor, str, bool]:
    """Exactly one model source → (predictor, description, phantom-trained?).

    Raises :class:`~tfmssass.core.errors.UsageError` for a wrong combination or an unusable folder, and
    :class:`ServingUnavailable` when a server does not answer.
    """
    sources = [bool(model_dir), bool(keypoints_run or grader_run), bool(server), bool(grpc_target)]
    if sum(sources) > 1:
        raise UsageError("give one model source: --model, --keypoints/--grader, --server or --grpc")
    if keypoints_run or grader_run:
        if not (keypoints_run and grader_run):
            raise UsageError("--keypoints and --grader go together")
        from tfmssass.serving.module import ScoringModule

        try:
            module = ScoringModule.from_runs(keypoints_run, grader_run, **thresholds)
        except OSError as exc:
            raise UsageError(str(exc)) from None
        text = f"keypoints {Path(keypoints_run).resolve().name}, grader {Path(grader_run).resolve().name}"
        predictor = ModulePredictor(module, batch_size)
        predictor.fingerprint = files_fingerprint(Path(run) / name for run in (keypoints_run, grader_run)
                                                  for name in RUN_FILES if (Path(run) / name).is_file())
        return predictor, text, module.metadata["phantom_trained"]
    if server or grpc_target:
        if not model_name:
            raise UsageError("--server/--grpc need --model-name")
        predictor = RestPredictor(server, model_name) if server else GrpcPredictor(grpc_target, model_name)
        # one small request up front: fails fast when the server is away, and tells the model's note
        note = str(predictor.predict([np.zeros((64, 64), np.float32)], [None])[0].get("model_note", ""))
        return predictor, f"TF Serving model {model_name} at {server or grpc_target}", "PHANTOM" in note
    model_dir = Path(model_dir) if model_dir else demo_model_dir()
    predictor = SavedModelPredictor(model_dir)
    return predictor, f"{model_dir.parent.name} v{model_dir.name}", bool(predictor.metadata.get("phantom_trained"))
