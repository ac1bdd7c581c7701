"""Stage 2: CLAHE parity, label-true augmentation, grader, paper's tables."""

import json
import math

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from click.testing import CliRunner

from tfmssass.cli import main
from tfmssass.core import anatomy
from tfmssass.core.geometry import CropSpec, level_frame
from tfmssass.data.tfrecords import NOT_GRADABLE_RECORD
from tfmssass.io.labels import load_labels
from tfmssass.ops.image import canonical_matrix, clahe
from tfmssass.stages.grader.data import (
    CornerAugment,
    corner_dataset,
    corner_samples,
    extract_patches,
)
from tfmssass.stages.grader.calibration import choose_gradable_threshold
from tfmssass.stages.grader.grades import (
    GRADABILITY_DOUBTFUL,
    NOT_GRADABLE,
    NOT_GRADABLE_GRADE,
    disk_grades,
    grade_again,
    grade_corners,
    gradability_band,
)
from tfmssass.stages.grader.metrics import (
    per_grade_table,
    quadratic_weighted_kappa,
    read_confusion_csv,
    summary,
)
from tfmssass.stages.grader.model import (
    CornerGrader,
    grade_loss,
    gradability_loss,
    grader_outputs,
)
from tfmssass.synth.phantoms import Case, make_case
from tfmssass.synth.sets import synthesize

PAPER_CM = np.array([[2250, 295, 54, 19], [502, 2169, 75, 46], [96, 147, 700, 153], [25, 58, 96, 2641]])


@pytest.fixture(scope="module")
def radiograph():
    image, row, _ = make_case(Case(3, 5, 0, "lumbar", "realistic"))
    return image, row


@pytest.mark.parametrize("size", [(256, 256), (224, 224), (301, 257), (97, 131), (512, 384)])
@pytest.mark.parametrize("clip,grid", [(2.0, (8, 8)), (3.0, (4, 6))])
def test_clahe_matches_opencv(radiograph, size, clip, grid):
    image, _ = radiograph
    h, w = size
    rng = np.random.default_rng(h * w)
    y0, x0 = rng.integers(0, image.shape[0] - h), rng.integers(0, image.shape[1] - w)
    crop = np.rint(image[y0:y0 + h, x0:x0 + w] * 255).astype(np.uint8)
    expected = cv2.createCLAHE(clip, grid).apply(crop)
    got = clahe(crop, clip, grid).numpy()
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert got.dtype == np.uint8 and got.shape == crop.shape
    assert diff.mean() <= 1.0 and diff.max() <= 4
    assert np.abs(got.astype(int) - crop.astype(int)).mean() > 1  # it did change the image


def test_clahe_batched_channel_and_in_a_graph(radiograph):
    image, _ = radiograph
    crops = np.stack([np.rint(image[i * 100: i * 100 + 120, 300:400] * 255).astype(np.uint8) for i in range(3)])
    expected = np.stack([cv2.createCLAHE(2.0, (8, 8)).apply(c) for c in crops])
    graph = tf.function(lambda x: clahe(x, 2.0, (8, 8)),
                        input_signature=[tf.TensorSpec([None, None, None, 1], tf.uint8)])
    got = graph(crops[..., None]).numpy()[..., 0]
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def _marked_level(mark: str, angle_deg=25.0, facing=-1):
    """A tilted disk level (patient facing left) with a bright mark at one anterior corner."""
    image = np.zeros((400, 400), np.float32)
    t = math.radians(angle_deg)
    axis = np.array([math.sin(t), math.cos(t)])  # cranial → caudal
    anterior = facing * np.array([math.cos(t), -math.sin(t)])
    c = np.array([200.0, 200.0])
    a = c + anterior * 60
    spot = a - axis * 24 if mark == "inf" else a + axis * 24  # the upper body's corner is cranial
    cv2.circle(image, tuple(int(v) for v in spot), 5, 1.0, -1)
    return image, c, a, -axis


def test_augmentation_keeps_the_graded_corner_in_place(tmp_path):
    """Under every augmentation a corner's own mark is top-right and its partner's bottom-right."""
    rows = []
    for mark in ("inf", "sup"):
        image, c, a, up = _marked_level(mark)
        ok, png = cv2.imencode(".png", np.rint(image * 65535).astype(np.uint16))
        (tmp_path / f"{mark}.png").write_bytes(png.tobytes())
        for sup in (False, True):
            rows.append({"patch_path": str(tmp_path / f"{mark}.png"), "cx": c[0], "cy": c[1],
                         "ax": a[0], "ay": a[1], "upx": up[0], "upy": up[1], "sup": sup,
                         "grade": 2 if sup else 1, "own": (mark == "sup") == sup})
    samples = pd.DataFrame(rows)
    idx = np.repeat(np.arange(4), 8)
    x, y = next(iter(corner_dataset(samples, idx, CropSpec(size=64, clahe=False), 32, augment=CornerAugment(), seed=9)))
    for crop, label, i in zip(x.numpy()[..., 0], y.numpy(), idx):
        ys, xs = np.nonzero(crop > 0.5)
        assert len(xs) and xs.mean() > 40, "mark not on the anterior (right) side"
        if samples.own[i]:
            assert ys.mean() < 32, "the graded corner is not top-right"
        else:
            assert ys.mean() > 32, "the partner corner is not bottom-right"
        assert label == samples.grade[i]


def test_tf_crop_equals_geometry_module():
    for c, a, up, flip in [((100, 200), (150, 190), (5, -40), False), ((10, 20), (10, 80), (1, 0), True)]:
        np.testing.assert_allclose(canonical_matrix(c, a, up, 128, 2.8, flip).numpy(),
                                   level_frame(c, a, up, (128, 128), 2.8, flip).matrix, atol=1e-4)


def test_phantom_crops_show_the_spur_on_the_graded_side(tmp_path):
    """On phantoms, a syndesmophyte (grade 2) leaves bone in the disk gap next to *its* corner."""
    synthesize(tmp_path, patients=8, visits=1, seed=42, views=("lumbar",), difficulty="easy",
               workers=2, progress=False, style="geometric")
    frame, _ = load_labels(tmp_path / "labels.csv", check_images=False)
    patches, errors = extract_patches(frame, tmp_path / "patches", 64, progress=False)
    samples = corner_samples(patches)
    partner = samples.groupby("patch_path")["grade"].transform(lambda g: g.iloc[::-1].to_numpy())
    chosen = samples[(samples["grade"] == 2) & (partner <= 1)].reset_index(drop=True)
    assert errors == [] and len(chosen) >= 3
    x, _ = next(iter(corner_dataset(chosen, np.arange(len(chosen)), CropSpec(size=96, clahe=False), len(chosen),
                                    augment=CornerAugment(enabled=False), drop_remainder=False)))
    wins = 0
    for crop in x.numpy()[..., 0]:
        near = crop[38:48, 80:92].mean()  # disk gap just below the graded corner, anterior
        far = crop[48:58, 80:92].mean()   # disk gap just above the partner corner
        wins += near > far
    assert wins >= 0.8 * len(chosen)


def test_paper_confusion_matrix_reproduces_table_2():
    table = per_grade_table(PAPER_CM).set_index("grade")
    g2 = table.loc[2]
    assert (g2.tp, g2.tn, g2.fp, g2.fn) == (700, 8005, 225, 396)
    assert round(g2.sensitivity, 3) == 0.639 and round(g2.specificity, 3) == 0.973
    assert round(g2.ppv, 3) == 0.757 and round(g2.f1, 3) == 0.693 and round(g2.accuracy, 3) == 0.933
    expected = {0: (0.859, 0.907, 0.783, 0.820, 0.894), 1: (0.777, 0.923, 0.813, 0.794, 0.880),
                3: (0.937, 0.966, 0.924, 0.930, 0.957)}
    for g, values in expected.items():
        row = table.loc[g]
        assert tuple(round(v, 3) for v in (row.sensitivity, row.specificity, row.ppv, row.f1, row.accuracy)) == values
    s = summary(PAPER_CM)
    assert round(s["mean_one_vs_rest_accuracy"], 5) == 0.91604
    assert round(s["mean_sensitivity"], 5) == 0.80288
    assert round(s["mean_specificity"], 5) == 0.94244
    assert s["exact_correct"] == 7760 and s["corners"] == 9326 and round(s["exact_accuracy"], 4) == 0.8321


def test_qwk_agrees_with_sklearn():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    actual = rng.integers(0, 4, 500)
    predicted = np.clip(actual + rng.integers(-1, 2, 500) * (rng.random(500) < 0.3), 0, 3)
    cm = np.zeros((4, 4), int)
    np.add.at(cm, (actual, predicted), 1)
    assert quadratic_weighted_kappa(cm) == pytest.approx(cohen_kappa_score(actual, predicted, weights="quadratic"))
    assert np.isnan(quadratic_weighted_kappa(np.zeros((4, 4), int)))  # nothing graded
    assert np.isnan(quadratic_weighted_kappa(np.diag([7, 0, 0, 0])))  # one grade on both sides: undefined
    # by hand: actual (0, 0, 1, 3), predicted (0, 1, 1, 2); weights (i - j)^2 / 9
    # observed 1/9 + 1/9 = 2/9 per 4 corners; expected from the margins (2, 1, 0, 1) x (1, 2, 1, 0)
    by_hand = np.zeros((4, 4), int)
    np.add.at(by_hand, ([0, 0, 1, 3], [0, 1, 1, 2]), 1)
    expected = sum(a * p * (i - j) ** 2 / 9 for i, a in enumerate([2, 1, 0, 1]) for j, p in enumerate([1, 2, 1, 0])) / 4
    assert quadratic_weighted_kappa(by_hand) == pytest.approx(1 - (2 / 9) / expected)


def test_confusion_matrix_cli(tmp_path):
    plain = tmp_path / "cm.csv"
    plain.write_text("\n".join(",".join(map(str, r)) for r in PAPER_CM))
    labelled = tmp_path / "cm_labelled.csv"
    labelled.write_text("actual,p0,p1,p2,p3\n" + "\n".join(f"{g}," + ",".join(map(str, r)) for g, r in enumerate(PAPER_CM)))
    assert (read_confusion_csv(plain) == PAPER_CM).all() and (read_confusion_csv(labelled) == PAPER_CM).all()
    result = CliRunner().invoke(main, ["evaluate", "--confusion-matrix", str(labelled), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "7760/9326 = 0.8321" in result.output and "0.91604" in result.output
    assert (tmp_path / "o" / "grades_per_grade.csv").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,5,6\n")
    result = CliRunner().invoke(main, ["evaluate", "--confusion-matrix", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "bad.csv" in result.output and "Traceback" not in result.output


def test_bridge_rule_gives_one_answer_per_disk():
    p_inf = np.array([[0.1, 0.1, 0.1, 0.7], [0.1, 0.1, 0.5, 0.3], [0.6, 0.2, 0.1, 0.1]])
    p_sup = np.array([[0.4, 0.2, 0.05, 0.35], [0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]])
    inf, sup = disk_grades(p_inf, p_sup)
    assert list(inf) == [3, 2, 0] and list(sup) == [3, 0, 0]
    assert all((i == 3) == (s == 3) for i, s in zip(inf, sup))


def test_the_gradable_threshold_weighs_a_hidden_corner_graded_against_visible_ones_left():
    """Calibration sets the threshold where grading costs as much as not grading, a hidden corner
    graded counting ``cost`` visible ones left, and reports both errors there on its corners; with
    no NG corners (a head not calibrated) it keeps 0.5."""
    rng = np.random.default_rng(3)
    hidden, visible = rng.uniform(0.05, 0.95, 200), rng.uniform(0.6, 1.0, 2000)
    p, truth = np.concatenate([hidden, visible]), np.r_[np.zeros(200, bool), np.ones(2000, bool)]
    threshold, said = choose_gradable_threshold(p, truth, cost=9.0)
    assert threshold == pytest.approx(0.9)
    assert said["not_gradable_graded"] == pytest.approx(np.mean(hidden >= 0.9))
    assert said["gradable_called_not_gradable"] == pytest.approx(np.mean(visible < 0.9))
    assert choose_gradable_threshold(p, truth, cost=1.0)[0] == pytest.approx(0.5)
    assert choose_gradable_threshold(visible, np.ones(2000, bool))[0] == 0.5


def test_the_model_threshold_decides_and_host_regrading_keeps_its_calls():
    """A corner at P(gradable) 0.6 is NG for a model calibrated to 0.9, graded at 0.5; the borderline
    band follows the threshold; grading again on the host (other review thresholds, another prior)
    keeps the model's NG and borderline calls without knowing its threshold."""
    assert gradability_band(0.5) == pytest.approx((0.2, 0.8))
    low, high = gradability_band(0.9)
    assert low < 0.9 < high and high > 0.97
    p = np.tile(np.array([0.7, 0.1, 0.1, 0.1], np.float32), (1, 12, 1))
    gradable = np.full((1, 12), 0.99, np.float32)
    gradable[0, 10], gradable[0, 3] = 0.6, 0.95  # C7_inf-like under the shoulder; a borderline one at 0.9
    point, cut = np.ones((1, 6), np.float32), np.ones((1, 6), bool)
    at_half = grade_corners(p, point, cut, 0.6, 0.5, gradable)[0].numpy()
    grades, _, _, reason = (t.numpy() for t in grade_corners(p, point, cut, 0.6, 0.5, gradable, 0.9))
    assert at_half[0, 10] == 0 and grades[0, 10] == NOT_GRADABLE_GRADE and reason[0, 10] & NOT_GRADABLE
    assert reason[0, 3] & GRADABILITY_DOUBTFUL and not reason[0, 0] & GRADABILITY_DOUBTFUL
    again, _, review, again_reason = grade_again(p, point, cut, 0.8, 0.5, reason)
    assert again[0, 10] == NOT_GRADABLE_GRADE and list(again[0, :10]) == list(grades[0, :10])
    assert again_reason[0, 3] & GRADABILITY_DOUBTFUL and review[0, 3] and not review[0, 10]


@pytest.mark.slow
def test_grader_training_lowers_the_loss_of_both_heads():
    """The grades and the gradability head learn from one label (0-3, or 4 for NG); an NG corner adds
    nothing to the grade loss, so a batch of NG corners alone leaves it at 0."""
    keras.utils.set_random_seed(1)
    model = CornerGrader("tiny", 64)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss={"grades": grade_loss, "gradable": gradability_loss})
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 40)
    x = rng.random((40, 64, 64, 1)).astype("float32") * 0.2
    for i, g in enumerate(y):  # learnable cues: a dense band hides an NG corner; brightness by grade
        if g == NOT_GRADABLE_RECORD:
            x[i, 16:48, :] += 0.5
        else:
            x[i, :16, 48:] += 0.25 * g
    first = model.train_on_batch(x, {"grades": y, "gradable": y})
    for _ in range(25):
        last = model.train_on_batch(x, {"grades": y, "gradable": y})
    assert last[1] < 0.3 * first[1] and last[2] < 0.3 * first[2]  # [total, grades, gradable]
    _, gradable = grader_outputs(model, x, training=True)
    assert np.all((np.asarray(gradable) < 0.5) == (y == NOT_GRADABLE_RECORD))
    ng_only = np.full(4, NOT_GRADABLE_RECORD)
    assert float(np.sum(grade_loss(ng_only, np.full((4, 4), 0.25, "float32")))) == 0.0


def test_grader_without_the_head_answers_gradable_and_gives_its_weights(tmp_path):
    """A grader from before NG (no head) says every corner is gradable, and fine-tuning one with the
    head takes all its weights but the head's."""
    old = CornerGrader("tiny", 64, gradability=False)
    x = np.random.default_rng(2).random((3, 64, 64, 1)).astype("float32")
    p, gradable = grader_outputs(old, x)
    assert np.asarray(p).shape == (3, 4) and np.all(np.asarray(gradable) == 1.0)
    old.save_weights(str(tmp_path / "old.weights.h5"))
    new = CornerGrader("tiny", 64)
    new.load_grader_weights(str(tmp_path / "old.weights.h5"))
    np.testing.assert_allclose(np.asarray(grader_outputs(new, x)[0]), np.asarray(p), atol=1e-6)


def test_grader_config_round_trip(tmp_path):
    tiny = CornerGrader("tiny", 64)
    x = np.random.default_rng(0).random((2, 64, 64, 1)).astype("float32")
    tiny.save(tmp_path / "g.keras")
    again, now = keras.models.load_model(tmp_path / "g.keras")(x), tiny(x)
    for name in ("grades", "gradable"):
        np.testing.assert_allclose(again[name], now[name], atol=1e-5)
    # the dtype policy travels with the config: a mixed-precision grader stays one when reloaded
    mixed = CornerGrader("tiny", 64, dtype="mixed_float16")
    assert keras.config.dtype_policy().name == "float32"  # building under it left the global policy alone
    again = CornerGrader.from_config(mixed.get_config())
    assert mixed.get_config()["dtype"] == "mixed_float16"
    heads = ("grades", "gradable")
    assert {layer.dtype_policy.name for layer in again.layers if layer.name not in ("crop", *heads)} == {"mixed_float16"}
    assert {again.get_layer(h).dtype_policy.name for h in heads} == {"float32"}  # outputs stay float32


@pytest.mark.slow
def test_resnet152_paper_size_builds_and_runs():
    paper = CornerGrader("resnet152", 224)
    p, gradable = (np.asarray(t) for t in grader_outputs(paper, np.zeros((1, 224, 224, 1), "float32")))
    assert p.shape == (1, 4) and abs(p.sum() - 1) < 1e-4 and gradable.shape == (1,) and 0 < gradable[0] < 1
    assert 58e6 < paper.count_params() < 59e6


@pytest.mark.slow
def test_cli_train_and_evaluate_grader(phantoms, tmp_path):
    """NG from the label file to the SavedModel: readers' NG corners are prepared, teach the gradability
    head, calibrate it, stay out of the grade metrics, and the export answers gradable_probability."""
    labels = pd.read_csv(phantoms / "labels.csv", dtype=str, keep_default_na=False)
    labels["image"] = [str(phantoms / image) for image in labels["image"]]
    for i, row in labels.iterrows():  # a reader could not grade the lowest level of every film
        for corner in anatomy.level_corners(anatomy.LEVELS[row["view"]][-1]):
            labels.loc[i, corner] = "NG"
    labels.to_csv(tmp_path / "labels.csv", index=False)
    labels_csv = tmp_path / "labels.csv"
    runner = CliRunner()
    result = runner.invoke(main, ["labels", "check", str(labels_csv), "--no-images"])
    assert result.exit_code == 0 and f"{2 * len(labels)} not gradable (NG)" in result.output
    result = runner.invoke(main, ["train", "grader", "--labels", str(labels_csv),
                                  "--out", str(tmp_path / "run"), "--preset", "tiny", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert f"NG: " in result.output  # the training counts name the NG corners
    # --labels trains from records prepared into the run folder, at the preset's patch scale
    index = json.loads((tmp_path / "run" / "data" / "index.json").read_text())
    assert index["settings"]["patch_depth_px"] == 48 and index["settings"]["corners_from"] == "labels"
    grades = labels[list(anatomy.ALL_CORNERS)]
    graded = int(grades.isin(["0", "1", "2", "3"]).sum().sum())
    ng = sum(int(split["grades"].get("4", 0)) for split in index["splits"].values())
    assert ng == 2 * len(labels)  # every NG corner became a record of its own (label 4), never a 0
    assert sum(n for split in index["splits"].values() for n in split["grades"].values()) == graded + ng
    # the run is calibrated on its validation corners, under its training cohort's prior
    calibration = json.loads((tmp_path / "run" / "calibration.json").read_text())
    val = index["splits"]["val"]["grades"]
    assert calibration["fitted"] and calibration["validation"]["corners"] == sum(val.values()) - val["4"]
    gradability = calibration["validation"]["gradability"]  # the head is calibrated on graded and NG corners
    assert gradability["fitted"] and gradability["not_gradable"] == val["4"]
    assert gradability["nll_after"] <= gradability["nll_before"] + 1e-9
    train = index["splits"]["train"]["grades"]
    expected = np.array([train.get(str(g), 0) + 1 for g in range(4)], float)
    np.testing.assert_allclose(calibration["prior"], expected / expected.sum())
    assert 0.05 < calibration["temperature"] < 20
    result = runner.invoke(main, ["evaluate", "grader", "--model", str(tmp_path / "run"),
                                  "--labels", str(labels_csv), "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert "ECE" in result.output
    corners = pd.read_csv(tmp_path / "ev" / "corners.csv")
    assert len(corners) == graded  # every graded corner, and no blank one turned into a 0
    assert (tmp_path / "ev" / "roc.png").exists() and (tmp_path / "ev" / "calibration.png").exists()
    # refitting by the command gives the same calibration
    (tmp_path / "run" / "calibration.json").unlink()
    result = runner.invoke(main, ["calibrate", "--grader", str(tmp_path / "run")])
    assert result.exit_code == 0 and "not gradable under P(gradable) 0.90" in result.output
    again = json.loads((tmp_path / "run" / "calibration.json").read_text())
    assert again["temperature"] == pytest.approx(calibration["temperature"], rel=1e-3)
    assert again["gradable"] == pytest.approx(calibration["gradable"], rel=1e-3)
    decided = gradability["threshold"]  # the NG threshold is decided with the calibration, and goes with the model
    assert calibration["gradable_threshold"] == pytest.approx(0.9) and decided["not_gradable_corners"] == val["4"]
    assert 0 <= decided["not_gradable_graded"] <= 1
    # exported with a stage-1 run: the SavedModel serves the calibrated gradability as a named output
    result = runner.invoke(main, ["train", "keypoints", "--labels", str(labels_csv), "--out", str(tmp_path / "kp"),
                                  "--preset", "tiny", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["export", "--keypoints", str(tmp_path / "kp"), "--grader", str(tmp_path / "run"),
                                  "--out", str(tmp_path / "model" / "1")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "model" / "1" / "metadata.json").read_text())
    assert meta["grader"]["gradability"] and "gradable_probability" in meta["outputs"]
    assert meta["calibration"]["gradable"] == pytest.approx(calibration["gradable"], rel=1e-3)
    assert meta["review"]["gradable_threshold"] == pytest.approx(again["gradable_threshold"])
    loaded = tf.saved_model.load(str(tmp_path / "model" / "1"))
    crops = np.random.default_rng(1).random((3, 64, 64, 1)).astype("float32")
    answer = loaded.signatures["grader"](crops=tf.constant(crops))
    assert answer["gradable_probability"].shape == (3,)


def test_init_imagenet_takes_the_backbone_weights_keras_downloads(tmp_path, monkeypatch):
    # nothing is fetched here: Keras' download is replaced by a file of known, non-default weights
    from keras.src.utils import file_utils

    from tfmssass.stages.runs import RunFolderError, initial_weights

    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    rng = np.random.default_rng(0)
    source.set_weights([rng.normal(size=w.shape).astype("float32") for w in source.get_weights()])
    fake = tmp_path / "resnet50_notop.weights.h5"
    source.save_weights(str(fake))
    asked = []
    monkeypatch.setattr(file_utils, "get_file", lambda name, *a, **k: asked.append(name) or str(fake))

    assert initial_weights("imagenet", "grader", {}, tmp_path) == ("imagenet", False)
    grader = CornerGrader("resnet50", 32)
    grader.load_imagenet()
    assert asked and "notop" in asked[0]
    for mine, theirs in zip(grader.get_layer("backbone").get_weights(), source.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    with pytest.raises(ValueError, match="no ImageNet weights"):
        CornerGrader("tiny", 32).load_imagenet()
    with pytest.raises(RunFolderError, match="HRNet"):
        initial_weights("imagenet", "keypoints", {}, tmp_path)
