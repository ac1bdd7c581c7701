"""Running the exported whole-pipeline model: in this process (a SavedModel folder), or on TF
Serving through its REST predict API or gRPC.

Every backend takes one display image [H, W] in [0, 1] and returns the SavedModel's named outputs
for it as NumPy arrays (see :mod:`tfmssass.export`). DICOM never leaves the client: for a server
the image is sent as a 16-bit PNG.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .data.cache import encode_png16


#: JSON → NumPy types of the outputs (a JSON null in a float output becomes NaN).
OUTPUT_DTYPES = {"keypoints": float, "keypoint_confidence": float, "grade_probabilities": np.float32,
                 "corner_confidence": float, "grades": np.int32, "review": bool, "spine_found": bool,
                 "view": object, "model_note": object}


class ServingError(Exception):
    """The server refused this request (4xx): a problem with this input, one line."""


class ServingUnavailable(Exception):
    """The server could not be reached, or kept failing, after all retries."""


def read_metadata(model_dir) -> dict:
    path = Path(model_dir) / "metadata.json"
    if not (Path(model_dir) / "saved_model.pb").is_file():
        raise ValueError(f"{model_dir}: not an exported model folder (no saved_model.pb)")
    return json.loads(path.read_text()) if path.is_file() else {}


def _one(outputs: dict) -> dict:
    """Batch-of-one outputs → per-image arrays; the string outputs as str."""
    out = {k: np.asarray(v)[0] for k, v in outputs.items()}
    for key in ("view", "model_note"):
        if key in out:
            out[key] = out[key].decode() if isinstance(out[key], bytes) else str(out[key])
    return out


class SavedModelBackend:
    """The exported model in this process (``tfmssass score --model DIR``)."""

    def __init__(self, model_dir):
        import tensorflow as tf

        self.metadata = read_metadata(model_dir)
        self._fn = tf.saved_model.load(str(model_dir)).signatures["image_tensor"]
        self._tf = tf

    def predict(self, image: np.ndarray) -> dict:
        tensor = self._tf.constant(np.asarray(image, np.float32)[None, :, :, None])
        return _one({k: v.numpy() for k, v in self._fn(images=tensor).items()})


class RestBackend:
    """TF Serving's REST predict API: POST {url}/v1/models/{name}:predict, row format."""

    def __init__(self, url: str, model_name: str, retries: int = 5, backoff: float = 1.0, timeout: float = 300.0):
        self.endpoint = f"{url.rstrip('/')}/v1/models/{model_name}:predict"
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.metadata = {}

    def _post(self, body: bytes) -> dict:
        last = ""
        for attempt in range(self.retries):
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
                last = f"HTTP {exc.code}: {text}"
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last = str(getattr(exc, "reason", exc))
            if attempt + 1 < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise ServingUnavailable(f"{self.endpoint}: no answer after {self.retries} tries ({last})")

    def predict(self, image: np.ndarray) -> dict:
        png = base64.b64encode(encode_png16(image)).decode("ascii")
        body = json.dumps({"signature_name": "serving_default", "instances": [{"b64": png}]}).encode()
        answer = self._post(body)
        if "predictions" not in answer:
            raise ServingError(f"unexpected answer from {self.endpoint}: no 'predictions'")
        row = answer["predictions"][0]
        return _one({k: np.asarray([v], dtype=OUTPUT_DTYPES.get(k)) for k, v in row.items()})


class GrpcBackend:
    """TF Serving's gRPC PredictionService (``--grpc HOST:8500``), via tensorflow-serving-api."""

    def __init__(self, target: str, model_name: str, retries: int = 5, backoff: float = 1.0, timeout: float = 300.0):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self._grpc = grpc
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target, options))
        self.target, self.model_name = target, model_name
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.metadata = {}

    def predict(self, image: np.ndarray) -> dict:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = "serving_default"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto([encode_png16(image)]))
        transient = {self._grpc.StatusCode.UNAVAILABLE, self._grpc.StatusCode.DEADLINE_EXCEEDED,
                     self._grpc.StatusCode.INTERNAL, self._grpc.StatusCode.RESOURCE_EXHAUSTED}
        last = ""
        for attempt in range(self.retries):
            try:
                reply = self._stub.Predict(request, timeout=self.timeout)
                return _one({k: tf.make_ndarray(v) for k, v in reply.outputs.items()})
            except self._grpc.RpcError as exc:
                detail = " ".join(str(exc.details()).split())
                if exc.code() not in transient:
                    raise ServingError(f"server refused the request ({exc.code().name}): {detail}") from None
                last = f"{exc.code().name}: {detail}"
            if attempt + 1 < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise ServingUnavailable(f"{self.target}: no answer after {self.retries} tries ({last})")
