"""Stage 1: HRNet, heatmaps, the tf.data pipeline, coarse-to-fine detection, training, evaluation."""

import json
import math

import keras
import numpy as np
import pandas as pd
import pytest

from tfmssass.core import anatomy
from tfmssass.core.config import keypoint_config
from tfmssass.ops.image import apply_matrix, region_matrix, warp
from tfmssass.stages.keypoints.data import KeypointAugment, prepared_keypoint_dataset
from tfmssass.stages.keypoints.detect import Detection, KeypointDetector, decode_heatmaps
from tfmssass.stages.keypoints.evaluate import point_records, summarise
from tfmssass.stages.keypoints.heatmaps import (
    WeightedHeatmapLoss,
    gaussian_heatmaps,
    heatmap_to_input,
    input_to_heatmap,
)
from tfmssass.stages.keypoints.model import HRNet
from tfmssass.stages.keypoints.train import train_keypoints
from tfmssass.stages.prepare import prepare


def decode(heatmaps):
    return tuple(t.numpy() for t in decode_heatmaps(heatmaps))


def test_hrnet_tiny_shapes_and_config_round_trip(tmp_path):
    model = HRNet.from_preset("w8", input_size=(128, 96))
    x = np.random.default_rng(0).random((2, 128, 96, 1)).astype("float32")
    y = model(x)
    assert tuple(y.shape) == (2, 32, 24, 24)
    clone = HRNet.from_config(json.loads(json.dumps(model.get_config())))
    assert clone.count_params() == model.count_params()
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(x), y, atol=1e-5)


@pytest.mark.slow
def test_hrnet_w32_paper_size_builds_and_runs():
    model = HRNet.from_preset("w32")
    assert 28.0e6 < model.count_params() < 29.2e6  # HRNet-W32 pose is about 28.5M
    out = model(np.zeros((1, 256, 192, 1), "float32"))
    assert tuple(out.shape) == (1, 64, 48, 24)


def test_heatmap_encode_decode_recovers_points():
    rng = np.random.default_rng(1)
    points = np.column_stack([rng.uniform(2, 45, 24), rng.uniform(2, 61, 24)]).astype("float32")
    maps = np.asarray(gaussian_heatmaps(points, np.ones(24), 64, 48, sigma=2.0))
    decoded, peak = decode(maps)
    assert np.abs(decoded - points).max() <= 0.5
    assert np.all(peak > 0.6)
    hidden = np.asarray(gaussian_heatmaps(points, np.r_[np.zeros(12), np.ones(12)], 64, 48, 2.0))
    assert hidden[..., :12].max() == 0.0  # not visible → empty heatmap
    x = np.array([[10.0, 20.0]])
    np.testing.assert_allclose(heatmap_to_input(input_to_heatmap(x)), x)


def test_loss_ignores_unweighted_points():
    target = np.zeros((1, 8, 8, 2), "float32")
    pred = np.zeros((1, 8, 8, 2), "float32")
    pred[..., 1] = 5.0  # wrong everywhere, but weight 0
    weights = np.zeros((1, 8, 8, 2), "float32")
    weights[..., 0] = 1.0
    loss = WeightedHeatmapLoss()(np.concatenate([target, weights], -1), pred)
    assert float(loss) == 0.0
    weights[..., 1] = 1.0
    assert float(WeightedHeatmapLoss()(np.concatenate([target, weights], -1), pred)) > 1.0


@pytest.mark.parametrize("flip,angle", [(False, 0.0), (True, 0.0), (True, 0.4), (False, -0.3)])
def test_affine_moves_image_and_points_together(flip, angle):
    image = np.zeros((900, 700), np.float32)
    image[400:406, 250:256] = 1.0  # dot centred at (252.5, 402.5)
    matrix = region_matrix((100, 200, 600, 800), (256, 192), angle=angle, flip=flip)
    out = warp(image, matrix, (256, 192)).numpy()
    ys, xs = np.mgrid[0:256, 0:192]
    centroid = np.array([(xs * out).sum(), (ys * out).sum()]) / out.sum()
    np.testing.assert_allclose(centroid, apply_matrix(matrix, [252.5, 402.5]).numpy(), atol=0.3)


@pytest.fixture(scope="module")
def prepared(clean_phantoms, tmp_path_factory):
    """The geometric-style phantoms prepared at the tiny preset's working size (long side 512): every disk
    is darker than its bodies there, which the target check below relies on. (On radiograph-style films,
    with their processing and overlap, 71-86% of the centres of a batch are, so that check would pass or
    fail with the batch the global seed picks.)"""
    data = tmp_path_factory.mktemp("kp") / "data"
    prepare(clean_phantoms / "labels.csv", data, long_side=512, patch_depth_px=48, workers=2, progress=False)
    return data


def test_pipeline_targets_follow_the_augmented_image(prepared):
    """In the augmented samples the decoded targets sit on the disks: darker than the bodies.

    Checked per disk centre against the points halfway to its neighbours; a bridged disk is
    bone and need not be darker, so most centres, not all, must be (targets that missed the
    image's movement would be right about half the time)."""
    ds = prepared_keypoint_dataset(prepared, "train", (128, 96), 6, sigma=1.5, seed=3)
    x, y = next(iter(ds))
    assert tuple(x.shape) == (6, 128, 96, 1) and tuple(y.shape) == (6, 32, 24, 48)
    again, _ = next(iter(prepared_keypoint_dataset(prepared, "train", (128, 96), 6, sigma=1.5, seed=3)))
    np.testing.assert_array_equal(x.numpy(), again.numpy())  # stateless: reproducible
    y = y.numpy()
    darker = []
    for b in range(6):
        view = "cervical" if y[b, ..., :12].max() > y[b, ..., 12:24].max() else "lumbar"
        other = slice(12, 24) if view == "cervical" else slice(0, 12)
        assert y[b, ..., other].max() == 0.0 and np.all(y[b, 0, 0, 24:][other] == 1.0)
        pts, peak = decode(y[b, ..., :24])
        pts = heatmap_to_input(pts)
        img = x[b, ..., 0].numpy()
        centres = [pts[k] for k in range(0, 24, 2) if peak[k] > 0.5]
        assert len(centres) >= 4
        for k in range(1, len(centres) - 1):  # each centre darker than halfway to its neighbours
            c, up, down = centres[k], centres[k - 1], centres[k + 1]
            sample = lambda p: img[int(round(p[1])), int(round(p[0]))]
            darker.append(sample(c) < max(sample((c + up) / 2), sample((c + down) / 2)))
    assert len(darker) >= 20 and np.mean(darker) >= 0.85, darker


def _pooling_model(input_size):
    """Stands in for a trained HRNet: heatmaps = the image average-pooled 4×, in all 24 channels."""
    inputs = keras.Input((*input_size, 1))
    pooled = keras.layers.AveragePooling2D(4)(inputs)
    return keras.Model(inputs, keras.layers.Concatenate()([pooled] * 24))


def _blob(shape, centre, sigma):
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    return np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def test_flip_test_mirrors_heatmaps_back_exactly():
    """For a model that only pools, flip-averaged heatmaps equal plain ones; an off-by-one would not."""
    x = _blob((128, 96), (30.3, 70.8), 3.0)[None, :, :, None]
    x += 0.5 * _blob((128, 96), (70.0, 20.0), 6.0)[None, :, :, None]  # asymmetric content
    model = _pooling_model((128, 96))
    box = [-0.5, -0.5, 95.5, 127.5]
    plain, _ = KeypointDetector(model, (128, 96)).stage1.heatmaps(x[0, :, :, 0], box)
    flipped, _ = KeypointDetector(model, (128, 96), flip_test=True).stage1.heatmaps(x[0, :, :, 0], box)
    np.testing.assert_allclose(flipped.numpy(), plain.numpy(), atol=1e-6)


@pytest.mark.parametrize("flip_test", [False, True])
def test_detector_coarse_to_fine_maps_back_to_original_pixels(flip_test):
    image = _blob((1500, 1100), (307.5, 707.5), 25.0)
    detector = KeypointDetector(_pooling_model((128, 96)), (128, 96), long_side=1024,
                                flip_test=flip_test)
    det = detector.detect(image)
    assert det.found and det.view == "cervical"
    np.testing.assert_allclose(det.points[:12], np.tile([307.5, 707.5], (12, 1)), atol=2.5)
    assert det.region[0] < 307.5 < det.region[2] and det.region[1] < 707.5 < det.region[3]
    assert np.isnan(det.points[12:]).all()  # the other view is not reported
    empty = detector.detect(np.zeros((800, 600), np.float32))
    assert not empty.found and "spine not found" in empty.finding


@pytest.mark.slow
def test_training_lowers_the_loss(prepared):
    x, y = next(iter(prepared_keypoint_dataset(prepared, "train", (128, 96), 6, 1.5,
                                               KeypointAugment(enabled=False), repeat=False)))
    keras.utils.set_random_seed(0)
    model = HRNet.from_preset("w8", input_size=(128, 96))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=WeightedHeatmapLoss())
    losses = [float(model.train_on_batch(x, y)) for _ in range(12)]
    assert losses[-1] < 0.5 * losses[0]


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, in_first_epoch: bool = False):
        super().__init__()
        self.in_first_epoch = in_first_epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.in_first_epoch:
            raise KeyboardInterrupt  # killed before any epoch ended: log.csv exists, empty

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt  # as if the process was killed after the epoch-1 backup


@pytest.mark.slow
def test_training_resumes_after_interruption_in_mixed_precision(phantoms, tmp_path):
    # mixed precision (the GPU setting) rides along: the whole story runs under mixed_float16
    config = keypoint_config("tiny", epochs=3, steps_per_epoch=1, batch_size=2)
    run = tmp_path / "run"
    try:
        with pytest.raises(KeyboardInterrupt):
            train_keypoints(phantoms / "labels.csv", run, config, mixed_precision=True, verbose=0,
                            extra_callbacks=[_Interrupt(True)])
        assert (run / "log.csv").stat().st_size == 0
        with pytest.raises(KeyboardInterrupt):
            train_keypoints(phantoms / "labels.csv", run, config, mixed_precision=True, verbose=0,
                            extra_callbacks=[_Interrupt()])
        assert not (run / "done").exists() and (run / "backup").exists()
        train_keypoints(phantoms / "labels.csv", run, config, mixed_precision=True, verbose=0)
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        model = HRNet.from_preset("w8", input_size=(128, 96))
        assert model.get_layer("stem1_conv").compute_dtype == "float16"
        assert model.output.dtype == "float32"  # heatmaps stay float32 for the loss and decoding
    finally:
        keras.mixed_precision.set_global_policy("float32")
    log = pd.read_csv(run / "log.csv")
    assert list(log["epoch"]) == [0, 1, 2]  # continued at epoch 2, nothing repeated
    assert (run / "done").exists() and (run / "best.weights.h5").exists()
    split = pd.read_csv(run / "split.csv")
    assert set(split["split"]) == {"train", "val"}
    with pytest.raises(Exception, match="another configuration"):
        train_keypoints(phantoms / "labels.csv", run, keypoint_config("tiny", epochs=4), mixed_precision=True,
                        verbose=0)


def test_evaluation_numbers_match_hand_computation():
    levels = anatomy.LEVELS["lumbar"]
    row = {"patient_id": "P1", "visit_date": "2020-01-01", "view": "lumbar"}
    for j, level in enumerate(levels):
        row.update(dict(zip(anatomy.keypoint_columns(level), (100.0, 100.0 + 50 * j, 130.0, 100.0 + 50 * j))))
    row["L5-S1_ax"] = row["L5-S1_ay"] = np.nan  # one point not labelled
    pred = np.full((24, 2), np.nan)
    for j in range(6):
        pred[12 + 2 * j] = (103.0, 104.0 + 50 * j)  # centres off by (3, 4): 5 px
        pred[13 + 2 * j] = (130.0, 100.0 + 50 * j)  # anterior points exact
    pred[12] = (100.0, 100.0 + 300.0)  # one centre off by 300 px: a failure (> 5% of 5000)
    det = Detection(pred, np.ones(24), "lumbar", True)
    records = point_records(pd.Series(row), (4000, 3000), 0.1, det, "f.dcm")
    assert len(records) == 11
    stats = summarise(pd.DataFrame(records))
    errors = np.array([300.0] + [5.0] * 5 + [0.0] * 5)
    assert stats["mean_error_px"] == pytest.approx(errors.mean())
    assert stats["median_error_px"] == pytest.approx(5.0)
    assert stats["median_error_mm"] == pytest.approx(0.5)
    assert stats["median_error_pct_diagonal"] == pytest.approx(5.0 / 5000 * 100)
    assert stats["failure_rate"] == pytest.approx(1 / 11)
    assert stats["pck_2mm"] == pytest.approx(10 / 11)  # 0.5 mm ok, 30 mm not
    assert stats["pck_1pct_diagonal"] == pytest.approx(10 / 11)
    missed = point_records(pd.Series(row), (4000, 3000), None,
                           Detection(pred, np.zeros(24), "lumbar", False, "spine not found"), "g.dcm")
    stats = summarise(pd.DataFrame(missed))
    assert stats["failure_rate"] == 1.0 and math.isinf(stats["median_error_px"])
    assert stats["points_calibrated"] == 0 and math.isnan(stats["median_error_mm"])


@pytest.mark.slow
def test_cli_train_and_evaluate_keypoints(phantoms, tmp_path):
    from click.testing import CliRunner

    from tfmssass.cli import main
    from tfmssass.stages.keypoints.orientation import NETWORK

    runner = CliRunner()
    result = runner.invoke(main, ["train", "keypoints", "--labels", str(phantoms / "labels.csv"),
                                  "--out", str(tmp_path / "run"), "--preset", "tiny", "--epochs", "1",
                                  "--steps-per-epoch", "1"])
    assert result.exit_code == 0, result.output
    data = tmp_path / "run" / "data"  # --labels trains from records prepared into the run folder
    assert json.loads((data / "index.json").read_text())["settings"]["long_side"] == 512
    # stage 1 ends with its checks; a finished run that lacks them (stopped in between) gets them on the rerun
    limits = json.loads((tmp_path / "run" / "plausibility.json").read_text())
    assert set(limits) == {"cervical", "lumbar"} and limits["cervical"]["films"] > 0
    (tmp_path / "run" / "orientation.weights.h5").unlink()
    again = ["train", "keypoints", "--labels", str(phantoms / "labels.csv"), "--out", str(tmp_path / "run"),
             "--preset", "tiny", "--epochs", "1", "--steps-per-epoch", "1"]
    assert runner.invoke(main, again).exit_code == 0
    assert (tmp_path / "run" / "orientation.weights.h5").is_file()
    # the checks learnt again, the classifier fine-tuned from the run's own
    before = json.loads((tmp_path / "run" / "orientation.json").read_text())
    result = runner.invoke(main, ["train", "checks", "--keypoints", str(tmp_path / "run"), "--init",
                                  str(tmp_path / "run"), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    after = json.loads((tmp_path / "run" / "orientation.json").read_text())
    assert after["init"] == str((tmp_path / "run").resolve()) and "init" not in before
    assert before["network"] == after["network"] == NETWORK  # the design loads with it (orientation.json)
    result = runner.invoke(main, ["evaluate", "keypoints", "--model", str(tmp_path / "run"),
                                  "--labels", str(phantoms / "labels.csv"), "--out", str(tmp_path / "ev"),
                                  "--worst", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    points = pd.read_csv(tmp_path / "ev" / "points.csv")
    labels = pd.read_csv(phantoms / "labels.csv")
    labelled = sum(labels[f"{level}_{p}x"].notna().sum() for level in anatomy.ALL_LEVELS for p in "ca")
    assert summary["radiographs"] == len(labels) == 12 and len(points) == labelled
    assert summary["overall"]["failure_rate"] == pytest.approx(points["failed"].mean())
    assert (tmp_path / "ev" / "levels.csv").exists()
    result = runner.invoke(main, ["train", "keypoints", "--labels", str(phantoms / "labels.csv"),
                                  "--out", str(tmp_path / "run2"), "--preset", "tiny", "--epochs", "1",
                                  "--steps-per-epoch", "1", "--lr", "1e-9",
                                  "--init", str(tmp_path / "run" / "best.weights.h5")])
    assert result.exit_code == 0, result.output
    a = HRNet.from_preset("w8", input_size=(128, 96))
    a.load_weights(str(tmp_path / "run" / "best.weights.h5"))
    b = HRNet.from_preset("w8", input_size=(128, 96))
    b.load_weights(str(tmp_path / "run2" / "best.weights.h5"))
    stem_a, stem_b = a.get_layer("stem1_conv").get_weights()[0], b.get_layer("stem1_conv").get_weights()[0]
    np.testing.assert_allclose(stem_a, stem_b, atol=1e-5)  # started from --init, barely moved at lr 1e-9
    result = runner.invoke(main, ["train", "keypoints", "--labels", str(tmp_path / "nope.csv"),
                                  "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "Traceback" not in result.output


def _lumbar_chain(step=50.0):
    """A lumbar film's points [24, 2] (centres down x=100, anterior points 30 px in front)."""
    points = np.full((24, 2), np.nan, np.float32)
    for j in range(6):
        points[12 + 2 * j] = (100.0, 100.0 + step * j)
        points[13 + 2 * j] = (130.0, 100.0 + step * j)
    return points


def test_validation_cuts_films_between_disks_and_counts_levels_named_wrong():
    """The best stage-1 epoch is chosen by levels answered wrong on validation films whole and cut, read
    as scoring reads them (the film-edge rule drops levels piled at the edge): a chain found one disk off
    on a cut film, or a level cut away that is still answered, is wrong; the median point error on
    whole films would not see either."""
    from tfmssass.stages.keypoints.validation import cut_versions, levels_wrong

    truth, image = _lumbar_chain(), np.zeros((500, 300), np.float32)
    for index, (above, below) in enumerate([(1, 2), (2, 3), (3, 1)]):
        whole, cut_above, cut_below = cut_versions(image, truth, "lumbar", index)
        assert whole[0] is image
        film, moved = cut_above
        top = truth[12, 1] - moved[12, 1]  # the rows cut away, between two disks
        assert truth[12 + 2 * (above - 1), 1] < top < truth[12 + 2 * above, 1] and film.shape[0] == 500 - top
        assert (moved[12::2, 1] < 0).tolist() == [j < above for j in range(6)]
        film, moved = cut_below
        assert (moved[12::2, 1] > film.shape[0]).tolist() == [j >= 6 - below for j in range(6)]
    film, moved = cut_versions(image, truth, "lumbar", 1)[1]  # two levels cut away above
    rows, columns, step = film.shape[0], film.shape[1], 50.0
    right = Detection(moved.copy(), np.ones(24), "lumbar", True)
    right.points[12:16] = np.nan  # the levels cut away: not answered
    right.low_confidence[12:16] = True
    assert levels_wrong(right, moved, "lumbar", rows, columns, step) == (0, 6)
    up = Detection(moved.copy(), np.ones(24), "lumbar", True)
    up.points[12:24] = moved[12:24] - [0.0, step]  # every level placed on the disk above it
    up.low_confidence[12:16] = True
    assert levels_wrong(up, moved, "lumbar", rows, columns, step) == (4, 6)  # the four on the film, named wrong
    down = Detection(moved.copy(), np.ones(24), "lumbar", True)
    down.points[14:24] = moved[14:24] + [0.0, step]  # named as if one level fewer were cut: all on the film
    down.low_confidence[12:14] = True
    assert levels_wrong(down, moved, "lumbar", rows, columns, step) == (5, 6)  # four misnamed, one cut away answered
    piled = Detection(right.points.copy(), np.ones(24), "lumbar", True)
    piled.points[12:16] = np.tile(moved[16:18], (2, 1)) + [0.0, 3.0]  # the cut levels piled on the first kept
    assert levels_wrong(piled, moved, "lumbar", rows, columns, step) == (0, 6)  # the film-edge rule drops them
    missed = Detection(moved, np.zeros(24), "lumbar", False, "spine not found")
    assert levels_wrong(missed, moved, "lumbar", rows, columns, step) == (4, 6)
    assert levels_wrong(right, moved, "cervical", rows, columns, step) == (0, 0)  # no cervical level labelled
