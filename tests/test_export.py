"""Export for TF Serving: the TF-only pipeline pieces, the SavedModel's signatures and its parity
with the in-memory scoring module (batched across radiographs), and the predictors for TF Serving
(REST and gRPC) against stand-in servers."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from click.testing import CliRunner

from tfmssass.cli import main
from tfmssass.core import anatomy, geometry
from tfmssass.core.config import demo_model_dir, grader_config, keypoint_config
from tfmssass.core.errors import UsageError
from tfmssass.io import read_radiograph
from tfmssass.io.images import encode_png16
from tfmssass.serving.export import export_module
from tfmssass.serving.module import OUTPUT_NAMES, ScoringModule, build_metadata
from tfmssass.serving.predictors import (
    ModulePredictor,
    RestPredictor,
    SavedModelPredictor,
    ServingError,
    ServingUnavailable,
)
from tfmssass.serving.weights import HALF_FROM, stored_value
from tfmssass.stages.grader.calibration import Calibration, calibrate, calibrate_gradable, change_prior
from tfmssass.stages.grader.crops import cranial_directions, level_patch
from tfmssass.stages.grader.grades import grade_corners
from tfmssass.stages.grader.model import build_grader, grader_outputs
from tfmssass.stages.keypoints.detect import KeypointDetector, strongest_region
from tfmssass.stages.keypoints.model import build_hrnet
from tfmssass.stages.runs import EXPORT_INIT, RunFolderError, initial_weights

# ---- the TF pieces against their references -------------------------------------------------------

def test_strongest_region_is_the_heaviest_connected_component():
    rng = np.random.default_rng(0)
    for _ in range(20):
        summed = np.zeros((40, 30), np.float32)
        for _ in range(rng.integers(1, 5)):
            y, x = rng.integers(0, 40), rng.integers(0, 30)
            h, w = rng.integers(1, 10), rng.integers(1, 8)
            summed[y:y + h, x:x + w] += rng.uniform(0.3, 1.0)
        mask = (summed >= 0.2 * summed.max()).astype(np.uint8)
        count, labels = cv2.connectedComponents(mask, connectivity=8)
        masses = [summed[labels == k].sum() for k in range(1, count)]
        ys, xs = np.nonzero(labels == 1 + int(np.argmax(masses)))
        expected = [xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5]
        np.testing.assert_allclose(strongest_region(summed).numpy(), expected)


def test_cranial_directions_match_the_numpy_geometry():
    rng = np.random.default_rng(1)
    for _ in range(30):
        centres = rng.uniform(0, 500, (6, 2)).astype(np.float32)
        valid = rng.random(6) > 0.35
        reference = geometry.cranial_directions(np.where(valid[:, None], centres, np.nan))
        got, has = (t.numpy() for t in cranial_directions(tf.constant(centres), tf.constant(valid)))
        np.testing.assert_array_equal(has, np.isfinite(reference[:, 0]))
        np.testing.assert_allclose(got[has], reference[has], atol=1e-4)


def _reference_rule(p_inf, p_sup):
    """The bridge rule as the docs state it, in plain NumPy: (grade_inf, grade_sup, disagreed)."""
    bridged = (p_inf[:, 3] + p_sup[:, 3]) / 2.0 > 0.5
    inf = np.where(bridged, 3, p_inf[:, :3].argmax(axis=1))
    sup = np.where(bridged, 3, p_sup[:, :3].argmax(axis=1))
    return inf, sup, (p_inf.argmax(axis=1) == 3) != (p_sup.argmax(axis=1) == 3)


def test_grade_corners_applies_the_bridge_rule_like_the_reference():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(4) * 0.6, size=(5, 12)).astype(np.float32)
    conf = rng.uniform(0, 1, (5, 6)).astype(np.float32)
    ok = rng.random((5, 6)) > 0.2
    grades, confidence, review, reason = (t.numpy() for t in grade_corners(p, conf, ok, 0.6, 0.5))
    codes = set()
    for b in range(5):
        inf, sup, disagreed = _reference_rule(p[b, 0::2], p[b, 1::2])
        expected = np.stack([inf, sup], axis=1).reshape(-1)
        np.testing.assert_array_equal(grades[b], np.where(np.repeat(ok[b], 2), expected, -1))
        for k in range(12):
            if not ok[b, k // 2]:
                assert review[b, k] and np.isnan(confidence[b, k]) and reason[b, k] == 8
                continue
            g = expected[k]
            pg = (p[b, k & ~1, 3] + p[b, k | 1, 3]) / 2 if g == 3 else p[b, k, g]
            assert confidence[b, k] == pytest.approx(min(conf[b, k // 2], pg), abs=1e-6)
            want = 1 * disagreed[k // 2] + 2 * (pg < 0.6) + 4 * (conf[b, k // 2] < 0.5)
            assert reason[b, k] == want and review[b, k] == (want > 0)
            codes.add(int(want))
    assert 0 in codes and all(any(c & bit for c in codes) for bit in (1, 2, 4))  # every reason is exercised


def test_level_patch_puts_a_point_where_its_mapping_says():
    image = np.zeros((900, 700), np.float32)
    cv2.circle(image, (412, 303), 4, 1.0, -1)  # a bright dot at (412, 303)
    for depth in (40.0, 150.0):  # enlarging and (anti-aliased) shrinking
        patch, origin, factor = (np.asarray(t) for t in level_patch(image, tf.constant([400.0, 310.0]), depth, 48))
        expected = (np.array([412.0, 303.0]) + 0.5 - origin) * factor - 0.5
        y, x = np.unravel_index(np.argmax(cv2.GaussianBlur(patch, (0, 0), 2)), patch.shape)
        assert abs(x - expected[0]) <= 1.0 and abs(y - expected[1]) <= 1.0


# ---- the exported model ------------------------------------------------------------------------------

def _tiny_models():
    """Untrained tiny presets that always 'find' a spine (thresholds 0), so every step of the chain
    runs: the points are arbitrary but the same on both sides, which is what parity needs. The weights
    the module keeps in float16 are rounded to it here, so these Keras networks (the references) compute
    with the module's values: an untrained network's flat heatmaps would move a point for any rounding."""
    keras.utils.set_random_seed(3)
    kp = keypoint_config("tiny", confidence_threshold=0.0, min_points=0)
    gr = grader_config("tiny")
    networks = build_hrnet(kp), build_grader(gr)
    for weight in (w for network in networks for w in network.weights):
        weight.assign(tf.cast(stored_value(weight), weight.dtype))
    return networks[0], kp, networks[1], gr


#: A calibration far from the identity, so that an export that dropped it would be seen.
CALIBRATION = Calibration(temperature=1.7, bias=(0.0, -1.2, -1.8, -2.6), prior=(0.7, 0.15, 0.1, 0.05), fitted=True,
                          gradable=(0.8, 0.4))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, phantoms):
    base = tmp_path_factory.mktemp("export")
    model, kp, grader, gr = _tiny_models()
    metadata = build_metadata(kp, gr, {}, {}, phantom=True, calibration=CALIBRATION)
    module = ScoringModule.from_models(model, kp, grader, gr, metadata, CALIBRATION)
    path = export_module(module, base / "saved_models" / "tiny" / "1")
    first_visits = base / "ph"  # two patients' first visits, both views: 4 radiographs
    for patient in ("PH0001", "PH0002"):
        visit = sorted((phantoms / patient).iterdir())[0]
        shutil.copytree(visit, first_visits / patient / visit.name)
    return {"path": path, "models": (model, kp, grader, gr), "module": module, "phantoms": first_visits,
            "loaded": tf.saved_model.load(str(path))}


def test_export_layout_and_metadata(exported):
    path = exported["path"]
    assert path.name == "1" and (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["phantom_trained"] and "PHANTOM" in meta["note"]
    assert meta["classes"]["3"] == "total bony bridge" and len(meta["corners"]["lumbar"]) == 12
    assert meta["grader"]["clahe"] is True and meta["keypoints"]["input_size"] == [128, 96]
    assert meta["calibration"]["temperature"] == 1.7 and meta["calibration"]["prior"] == [0.7, 0.15, 0.1, 0.05]
    with pytest.raises(UsageError, match="numeric version"):
        export_module(exported["module"], path.parent / "latest")


def test_a_model_opened_again_in_one_process_is_loaded_once(exported, tmp_path):
    """Loading an exported model and its first run take seconds each: a second predictor on the same
    files reuses them; a folder whose files differ is loaded afresh and answers from its own files."""
    first, again = SavedModelPredictor(exported["path"]), SavedModelPredictor(exported["path"])
    assert again._fn is first._fn and again.fingerprint == first.fingerprint
    copy = tmp_path / "tiny" / "1"
    shutil.copytree(exported["path"], copy)
    meta = json.loads((copy / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps({**meta, "copied": True}))
    other = SavedModelPredictor(copy)
    assert other._fn is not first._fn and other.fingerprint != first.fingerprint
    assert other.metadata["copied"] and "copied" not in first.metadata
    image = read_radiograph(sorted(exported["phantoms"].glob("*/*/*.dcm"))[0]).image
    a, b = first.predict([image], [None])[0], other.predict([image], [None])[0]
    np.testing.assert_array_equal(a["grades"], b["grades"])


def test_the_export_keeps_large_weights_in_half_precision(exported):
    """The shipped demo is a tracked file under a size limit: kernels are stored float16, biases and
    normalisation statistics float32, and every path reads the same stored values."""
    saved = exported["loaded"].model_variables
    model, _, grader, _ = exported["models"]
    assert len(saved) == len(model.weights) + len(grader.weights)
    halved = [v for v in saved if v.shape.num_elements() >= HALF_FROM]
    assert halved and all(v.dtype == tf.float16 for v in halved)
    assert all(v.dtype == tf.float32 for v in saved if v.shape.num_elements() < HALF_FROM)
    values = sum(v.shape.num_elements() for v in saved)
    stored_bytes = sum(f.stat().st_size for f in (exported["path"] / "variables").glob("variables.data*"))
    assert stored_bytes < 0.6 * 4 * values  # float32 everywhere would be 4 bytes a value
    for weight, variable in zip(model.weights + grader.weights, saved):
        np.testing.assert_array_equal(np.asarray(weight), variable.numpy().astype(np.float32))
    in_memory = exported["module"].model_variables
    assert [v.dtype for v in in_memory] == [v.dtype for v in saved]


@pytest.mark.slow
def test_saved_model_cli_shows_and_runs_the_signatures(exported, tmp_path):
    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run([str(cli), "show", "--dir", str(exported["path"]), "--all"], capture_output=True,
                           text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for signature in ("serving_default", "image_tensor", "keypoints", "grader"):
        assert f"signature_def['{signature}']" in shown.stdout
    serving = shown.stdout.split("signature_def['serving_default']")[1]
    for name in OUTPUT_NAMES:
        assert f"outputs['{name}']" in serving
    image = read_radiograph(sorted(exported["phantoms"].glob("*/*/lumbar.dcm"))[0]).image
    np.save(tmp_path / "in.npy", np.array([encode_png16(image)], dtype=object))
    ran = subprocess.run([str(cli), "run", "--dir", str(exported["path"]), "--tag_set", "serve",
                          "--signature_def", "serving_default", "--inputs", f"images={tmp_path / 'in.npy'}"],
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "Result for output key grades" in ran.stdout and "Result for output key view" in ran.stdout


@pytest.mark.slow
def test_batched_scoring_path_matches_the_saved_model(exported):
    """Scoring with run folders grades the crops of several radiographs in one grader batch; the
    SavedModel (and so TF Serving) runs one radiograph at a time. Both must give the same answer."""
    files = sorted(exported["phantoms"].glob("*/*/*.dcm"))
    assert len(files) == 4
    images = [read_radiograph(path).image for path in files]
    batched = ModulePredictor(exported["module"], batch_size=40).predict(images, [None] * len(images))
    model, kp, _, _ = exported["models"]
    detector = KeypointDetector.from_config(model, kp)
    saved = SavedModelPredictor(exported["path"])
    for image, ours in zip(images, batched):
        theirs = saved.predict([image], [None])[0]
        assert ours["view"] == theirs["view"] and ours["spine_found"] and theirs["spine_found"]
        cut = ours["grades"][0::2] >= 0
        assert cut.any()  # the chain really ran to the grader
        assert np.nanmax(np.abs(ours["keypoints"] - theirs["keypoints"])) <= 0.5
        np.testing.assert_array_equal(np.isnan(ours["keypoints"]), np.isnan(theirs["keypoints"]))
        np.testing.assert_array_equal(ours["grades"], theirs["grades"])
        graded = np.repeat(cut, 2)
        assert np.abs(ours["grade_probabilities"][graded] - theirs["grade_probabilities"][graded]).max() <= 1e-4
        np.testing.assert_array_equal(ours["review"], theirs["review"])
        assert ours["model_note"] == theirs["model_note"] and ours["model_note"].startswith("PHANTOM-TRAINED")
        # the detector that training and evaluation use finds the same points
        assert np.nanmax(np.abs(detector.detect(image).points - ours["keypoints"])) <= 0.5

    # the PNG signature decodes what a client sends: a 16-bit PNG of the display image
    quantised = np.rint(images[0] * 65535).astype(np.float32) / 65535
    ours = ModulePredictor(exported["module"]).predict([quantised], [None])[0]
    served = exported["loaded"].signatures["serving_default"](images=tf.constant([encode_png16(images[0])]))
    np.testing.assert_array_equal(served["grades"].numpy()[0], ours["grades"])
    assert np.nanmax(np.abs(served["keypoints"].numpy()[0] - ours["keypoints"])) <= 0.5


def test_stage_signatures_alone(exported):
    loaded = exported["loaded"]
    model, kp, grader, gr = exported["models"]
    image = read_radiograph(sorted(exported["phantoms"].glob("*/*/*.dcm"))[0]).image
    points = loaded.signatures["keypoints"](images=tf.constant(image[None, :, :, None]))
    det = KeypointDetector(model, kp.input_size, kp.cache_long_side, 0.0, 0).detect(image)
    assert np.nanmax(np.abs(points["keypoints"].numpy()[0] - det.points)) <= 0.5
    crops = np.random.default_rng(0).random((5, gr.input_size, gr.input_size, 1)).astype(np.float32)
    answer = loaded.signatures["grader"](crops=tf.constant(crops))
    probs, gradable = answer["grade_probabilities"].numpy(), answer["gradable_probability"].numpy()
    raw, raw_gradable = (np.asarray(t) for t in grader_outputs(grader, crops))
    np.testing.assert_allclose(probs, calibrate(raw, CALIBRATION), atol=1e-5)  # the calibration is in the graph
    np.testing.assert_allclose(gradable, calibrate_gradable(raw_gradable, CALIBRATION), atol=1e-5)
    assert np.abs(probs - raw).max() > 0.01 and np.abs(gradable - raw_gradable).max() > 0.01
    whole = loaded.signatures["image_tensor"](images=tf.constant(image[None, :, :, None]))
    np.testing.assert_allclose(whole["grade_prior"].numpy()[0], CALIBRATION.prior, atol=1e-6)


@pytest.mark.slow
def test_paper_size_presets_export_and_load(tmp_path):
    kp, gr = keypoint_config("paper"), grader_config("paper")
    module = ScoringModule.from_models(build_hrnet(kp), kp, build_grader(gr), gr,
                                       build_metadata(kp, gr, {}, {}, phantom=False))
    path = export_module(module, tmp_path / "paper" / "1")
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["image_tensor"](images=tf.zeros([1, 600, 500, 1]))
    assert out["grade_probabilities"].shape == (1, 12, 4) and out["keypoints"].shape == (1, 24, 2)


@pytest.mark.slow
def test_init_demo_fine_tunes_from_the_shipped_models_weights(tmp_path):
    # the quick recipe's start: the shipped grader is an ensemble of two, and --init demo takes the
    # last; with the first (the weights before it), each calibrated as the metadata says, they answer
    # as the export does
    path, whole = initial_weights("demo", "grader", grader_config("small").to_dict(), tmp_path)
    assert whole and Path(path) == (tmp_path / EXPORT_INIT).resolve()
    last, first = build_grader(grader_config("small")), build_grader(grader_config("small"))
    last.load_grader_weights(path)
    demo = demo_model_dir()
    loaded = tf.saved_model.load(str(demo))  # held: its functions need their variables alive
    before = loaded.model_variables[-2 * len(first.weights):-len(first.weights)]
    for weight, variable in zip(first.weights, before):
        weight.assign(np.asarray(variable.numpy(), weight.dtype))
    metadata = json.loads((demo / "metadata.json").read_text())
    members = [Calibration.from_dict(c) for c in metadata["grader"]["ensemble"]]
    prior = np.asarray(metadata["calibration"]["prior"])
    side = grader_config("small").input_size  # the demo's crop
    crops = np.random.default_rng(0).random((3, side, side, 1)).astype(np.float32)
    theirs = loaded.grade(crops)["grade_probabilities"].numpy()
    ours = [change_prior(calibrate(np.asarray(grader_outputs(g, crops)[0]), c), c.prior, prior)
            for g, c in zip((first, last), members)]
    np.testing.assert_allclose((ours[0] + ours[1]) / 2, theirs, atol=1e-4)
    assert np.abs(ours[0] - ours[1]).max() > 1e-3  # two graders, not one twice
    assert initial_weights("demo", "keypoints", keypoint_config("small").to_dict(), tmp_path / "kp")[1]
    with pytest.raises(RunFolderError, match="trained with --preset small"):
        initial_weights("demo", "grader", grader_config("tiny").to_dict(), tmp_path)


# ---- serving clients ----------------------------------------------------------------------------------

class _StandInServing:
    """Stands in for TF Serving's REST predict API (POST /v1/models/<name>:predict, row format),
    answering with the exported SavedModel's serving_default. ``failures`` lists HTTP codes to
    answer with first, one per request ("cut": an answer broken off half-way)."""

    def __init__(self, loaded, name="tiny"):
        fn = loaded.signatures["serving_default"]
        self.failures, self.requests = [], 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                outer.requests += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.failures:
                    code = outer.failures.pop(0)
                    if code == "cut":  # the server stops while sending its answer
                        self.send_response(200)
                        self.send_header("Content-Length", "100")
                        self.end_headers()
                        self.wfile.write(b'{"pred')
                        self.close_connection = True
                        return None
                    return self._send(code, {"error": f"stand-in failure {code}"})
                if self.path != f"/v1/models/{name}:predict":
                    return self._send(404, {"error": f"Servable not found for request: {self.path}"})
                try:
                    instances = json.loads(body)["instances"]
                    images = [base64.b64decode(i["b64"]) for i in instances]
                    out = fn(images=tf.constant(images))
                except Exception as exc:  # noqa: BLE001 - answer like TF Serving: 400 with the reason
                    return self._send(400, {"error": str(exc).splitlines()[0]})
                rows = [{k: (v.numpy()[i].decode() if v.dtype == tf.string else v.numpy()[i].tolist())
                         for k, v in out.items()} for i in range(len(images))]
                self._send(200, {"predictions": rows})

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def stand_in(exported):
    server = _StandInServing(exported["loaded"])
    yield server
    server.close()


def test_rest_client_retries_transient_errors_and_reports_refusals(exported, stand_in):
    image = read_radiograph(sorted(exported["phantoms"].glob("*/*/*.dcm"))[0]).image
    client = RestPredictor(stand_in.url, "tiny", retries=4, backoff=0.01)
    stand_in.failures[:] = [503, "cut", 502]
    before = stand_in.requests
    out = client.predict([image], [None])[0]
    assert stand_in.requests - before == 4 and out["grades"].shape == (12,) and out["view"] in ("cervical", "lumbar")

    stand_in.failures[:] = [400]
    with pytest.raises(ServingError, match=r"HTTP 400\): stand-in failure 400"):
        client.predict([image], [None])[0]
    with pytest.raises(ServingError, match="HTTP 404"):
        RestPredictor(stand_in.url, "other", retries=2, backoff=0.01).predict([image], [None])[0]
    stand_in.failures[:] = [500] * 3
    with pytest.raises(ServingUnavailable, match="3 tries"):
        RestPredictor(stand_in.url, "tiny", retries=3, backoff=0.01).predict([image], [None])[0]
    with pytest.raises(ServingUnavailable):
        RestPredictor("http://127.0.0.1:9", "tiny", retries=2, backoff=0.01).predict([image], [None])[0]  # nobody listens


def test_grpc_client_against_a_stand_in_prediction_service(exported):
    """A gRPC PredictionService running the SavedModel stands in for TF Serving's gRPC port."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tfmssass.serving.predictors import GrpcPredictor

    fn = exported["loaded"].signatures["serving_default"]

    class Service(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            if request.model_spec.name != "tiny":
                context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found")
            out = fn(images=tf.constant(tf.make_ndarray(request.inputs["images"])))
            reply = predict_pb2.PredictResponse()
            for k, v in out.items():
                reply.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy()))
            return reply

    # a radiograph's 16-bit PNG is over gRPC's default 4 MB (TF Serving takes large messages)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        image = read_radiograph(sorted(exported["phantoms"].glob("*/*/*.dcm"))[0]).image
        out = GrpcPredictor(f"127.0.0.1:{port}", "tiny", retries=2, backoff=0.01).predict([image], [None])[0]
        expected = fn(images=tf.constant([encode_png16(image)]))
        np.testing.assert_array_equal(out["grades"], expected["grades"].numpy()[0])
        with pytest.raises(ServingError, match="NOT_FOUND"):
            GrpcPredictor(f"127.0.0.1:{port}", "other", retries=2, backoff=0.01).predict([image], [None])[0]
    finally:
        server.stop(0)


@pytest.fixture(scope="module")
def demo_served():
    """The shipped demo behind the stand-in: scoring compares grades on films whose spine a model
    finds (the untrained tiny export places its points off the film, and scoring refuses such films:
    no end of their chain is clear)."""
    loaded = tf.saved_model.load(str(demo_model_dir()))
    server = _StandInServing(loaded, name="demo")
    yield server
    server.close()


def test_score_through_the_server_equals_scoring_the_exported_model(exported, demo_served, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(exported["phantoms"], folder)
    runner = CliRunner()
    local = runner.invoke(main, ["score", str(folder), "--out", str(tmp_path / "local"), "--model",
                                 str(demo_model_dir()), "--quiet"])
    remote = runner.invoke(main, ["score", str(folder), "--out", str(tmp_path / "remote"), "--server",
                                  demo_served.url, "--model-name", "demo", "--quiet"])
    assert local.exit_code == 0, local.output
    assert remote.exit_code == 0, remote.output
    a = pd.read_csv(tmp_path / "local" / "corners.csv")
    b = pd.read_csv(tmp_path / "remote" / "corners.csv")
    assert len(a) == 48 and a["grade"].notna().any()  # 2 phantoms x 2 views x 12 corners
    np.testing.assert_array_equal(a["grade"].fillna(-1), b["grade"].fillna(-1))
    # REST carries the film as a 16-bit PNG (steps of 1.5e-5 of the grey range), the local model takes it as
    # float32: a borderline corner's probabilities move by about 1e-3 with that, a grade never
    assert np.nanmax(np.abs(a[["p0", "p1", "p2", "p3"]].to_numpy() - b[["p0", "p1", "p2", "p3"]].to_numpy())) <= 5e-3
    assert b["models"].str.contains("PHANTOM-TRAINED").all()  # the served model says it is a demo
    assert "PHANTOM-TRAINED" in remote.output


def test_review_reasons_come_from_the_saved_model(exported):
    meta = json.loads((exported["path"] / "metadata.json").read_text())
    assert "review_reason" in meta["outputs"] and meta["review"]["review_threshold"] == 0.6
    assert meta["review"]["reasons"]["2"] == "doubtful grade"
    image = np.random.default_rng(4).uniform(0, 1, (1, 300, 240, 1)).astype(np.float32)
    out = {k: v.numpy() for k, v in exported["loaded"].signatures["image_tensor"](images=tf.constant(image)).items()}
    cut = out["grades"][0, 0::2] != -1
    assert cut.any()
    view = 12 * list(anatomy.VIEWS).index(out["view"][0].decode())
    conf = out["keypoint_confidence"][0, view:view + 12]
    level_conf = np.minimum(conf[0::2], conf[1::2])
    _, _, review, reason = (t.numpy() for t in grade_corners(out["grade_probabilities"][0], level_conf, cut, 0.6, 0.5,
                                                             out["gradable_probability"][0]))
    np.testing.assert_array_equal(out["review_reason"][0], reason)
    np.testing.assert_array_equal(out["review"][0], review)
    assert (out["review_reason"][0][np.repeat(~cut, 2)] == 8).all()  # levels not cut: "not graded"


def _p_of_grade(row) -> float:
    return row[f"p{int(row['grade_independent'])}"]


@pytest.mark.slow
def test_review_threshold_works_with_an_exported_model(exported, tmp_path):
    """The graph decided at 0.6 (used as it is); at other thresholds scoring decides again from the
    probabilities, and in each case exactly the corners under the threshold are doubtful. (The shipped
    demo: the tiny export's films are refused, see ``demo_served``.)"""
    folder = tmp_path / "in"
    shutil.copytree(exported["phantoms"], folder)
    tables = {}
    for threshold in ("0.05", "0.6", "0.99"):
        result = CliRunner().invoke(main, ["score", str(folder), "--out", str(tmp_path / threshold), "--model",
                                           str(demo_model_dir()), "--quiet", "--review-threshold", threshold])
        assert result.exit_code == 0, result.output
        tables[threshold] = pd.read_csv(tmp_path / threshold / "corners.csv")
    counts = {}
    for threshold, corners in tables.items():
        graded = corners[corners["grade_independent"].notna() & (corners["grade_independent"] < 3)]
        assert len(graded) > 10
        doubtful = graded["review_reason"].fillna("").str.contains("doubtful grade")
        below = graded.apply(_p_of_grade, axis=1) < float(threshold)
        np.testing.assert_array_equal(doubtful.to_numpy(), below.to_numpy())
        assert graded.loc[below, "review"].all()
        counts[threshold] = int(doubtful.sum())
    assert counts["0.05"] < counts["0.99"], counts
