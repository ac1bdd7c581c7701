"""Prepared data (``tfmssass prepare``), training from it, multi-worker training and kill-resume."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from click.testing import CliRunner

from tfmssass.cli import main
from tfmssass.core import anatomy
from tfmssass.core.geometry import CropSpec
from tfmssass.data.tfrecords import (
    CORNER_SPEC,
    CORNERS,
    RADIOGRAPH_SPEC,
    LABEL_CLASSES,
    NOT_GRADABLE_RECORD,
    RADIOGRAPHS,
    PrepareError,
    decode_png16,
    load_index,
    read_records,
    shard_files,
)
from tfmssass.io import read_radiograph
from tfmssass.io.labels import NOT_GRADABLE, corner_label, load_labels, resolve_image
from tfmssass.ops.image import shrink_to_long_side
from tfmssass.stages.grader.data import (
    CornerAugment,
    corner_samples,
    extract_patches,
    prepared_balanced_dataset,
)
from tfmssass.stages.prepare import prepare
from tfmssass.synth.sets import synthesize

LONG_SIDE, DEPTH = 512, 48  # the tiny presets' working sizes


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    """Four phantom patients, one visit, both views, plus a label row whose file is not a DICOM."""
    out = tmp_path_factory.mktemp("prep_phantoms")
    synthesize(out, patients=4, visits=1, seed=7, workers=2, progress=False, style="geometric")
    (out / "broken.dcm").write_bytes(b"not a radiograph")
    frame = pd.read_csv(out / "labels.csv")
    bad = frame.iloc[[0]].copy()
    bad["image"] = "broken.dcm"
    pd.concat([frame, bad]).to_csv(out / "labels.csv", index=False)
    return out / "labels.csv"


@pytest.fixture(scope="module")
def prepared(labels, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare(labels, out, LONG_SIDE, DEPTH, per_shard=3, workers=1, progress=False)
    return out


def _parse(path, spec):
    return [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(path)]


def _text(tensor) -> str:
    return tensor.numpy().decode()


def test_index_counts_match_the_labels(labels, prepared):
    frame, _ = load_labels(labels, check_images=False)
    split = dict(pd.read_csv(prepared / "split.csv")[["patient_id", "split"]].values)
    readable = frame[frame["image"] != "broken.dcm"]
    index = load_index(prepared)
    # Corners evaluation cuts from the labels (croppable, graded) are exactly the prepared ones.
    patches, _ = extract_patches(readable, prepared.parent / "patches", DEPTH, progress=False)
    samples = corner_samples(patches, include_ng=True)  # NG corners are prepared too, as label 4
    assert (samples["grade"] == NOT_GRADABLE_RECORD).any()  # the phantoms hide C7-T1 behind shoulders
    for name in ("train", "val"):
        part = readable[readable["patient_id"].map(split) == name]
        counts = index["splits"][name]
        assert counts["radiographs"] == len(part) and counts["patients"] == part["patient_id"].nunique()
        assert counts["views"] == {v: int((part["view"] == v).sum()) for v in anatomy.VIEWS}
        expected = samples[samples["patient_id"].map(split) == name]["grade"].value_counts()
        assert counts["grades"] == {str(g): int(expected.get(g, 0)) for g in LABEL_CLASSES}
        in_files = sum(n for f, n in index["files"].items() if f.startswith(f"{CORNERS}/{name}-"))
        assert in_files == sum(counts["grades"].values())
    assert index["splits"]["train"]["patients"] >= 1 and index["splits"]["val"]["patients"] >= 1
    assert index["training_data"]["phantom"] is True
    patients = pd.read_csv(prepared / "patients.csv")
    assert patients["radiographs"].sum() == len(readable)
    assert patients["corners"].sum() == len(samples)
    errors = pd.read_csv(prepared / "errors.csv")
    assert len(errors) == 1 and "broken.dcm" in errors["error"][0] and index["errors"] == 1
    for name, n in index["files"].items():  # every listed shard holds what the index says
        assert sum(1 for _ in tf.data.TFRecordDataset(str(prepared / name))) == n


def test_radiograph_records_hold_the_labelled_points_grades_and_image(labels, prepared):
    frame, _ = load_labels(labels, check_images=False)
    frame = frame[frame["image"] != "broken.dcm"]
    seen = 0
    for path in shard_files(prepared, RADIOGRAPHS, "train") + shard_files(prepared, RADIOGRAPHS, "val"):
        for r in _parse(path, RADIOGRAPH_SPEC):
            row = frame[frame["image"] == _text(r["image"])].iloc[0]
            assert _text(r["patient_id"]) == row["patient_id"] and _text(r["view"]) == row["view"]
            height, width = r["size"].numpy()
            image = decode_png16(r["image_png"]).numpy()
            assert max(image.shape) == LONG_SIDE and abs(image.shape[0] / image.shape[1] - height / width) < 0.01
            # the display image shrunk as inference shrinks it, stored in 16 bits
            small, _ = shrink_to_long_side(read_radiograph(resolve_image(frame, row)).image, LONG_SIDE)
            np.testing.assert_array_equal(image, np.rint(np.clip(small.numpy(), 0, 1) * 65535) / 65535)
            sx, sy = r["scale"].numpy()
            points = r["points"].numpy().reshape(24, 2)
            offset = 0 if row["view"] == "cervical" else 12
            for j, level in enumerate(anatomy.LEVELS[row["view"]]):
                cx, cy, ax, ay = (row[c] for c in anatomy.keypoint_columns(level))
                expected = [((cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5), ((ax + 0.5) * sx - 0.5, (ay + 0.5) * sy - 0.5)]
                np.testing.assert_allclose(points[offset + 2 * j: offset + 2 * j + 2], expected, atol=1e-3)
            other = slice(12, 24) if offset == 0 else slice(0, 12)
            assert np.isnan(points[other]).all() and (r["weights"].numpy()[other] == 1).all()
            grades = r["grades"].numpy()
            for k, corner in enumerate(anatomy.ALL_CORNERS):  # 0-3, 4 for NG, -1 blank
                label = corner_label(row, corner)
                assert grades[k] == (-1 if label is None else NOT_GRADABLE_RECORD if label == NOT_GRADABLE
                                     else label), corner
            seen += 1
    assert seen == len(frame)


def test_corner_records_equal_the_labelled_crops(labels, prepared):
    frame, _ = load_labels(labels, check_images=False)
    frame = frame[frame["image"] != "broken.dcm"]
    patches, _ = extract_patches(frame, prepared.parent / "patches", DEPTH, progress=False)
    samples = corner_samples(patches, include_ng=True).set_index(["image", "corner"])
    records = [r for g in LABEL_CLASSES for split in ("train", "val")
               for path in shard_files(prepared, CORNERS, split, g) for r in _parse(path, CORNER_SPEC)]
    assert len(records) == len(samples)
    for r in records[::5]:
        sample = samples.loc[(_text(r["image"]), _text(r["corner"]))]
        assert int(r["grade"][0]) == sample["grade"] and bool(r["sup"][0]) == sample["sup"]
        np.testing.assert_allclose(r["c"].numpy(), sample[["cx", "cy"]].to_numpy(float), atol=1e-3)
        np.testing.assert_allclose(r["a"].numpy(), sample[["ax", "ay"]].to_numpy(float), atol=1e-3)
        np.testing.assert_allclose(r["up"].numpy(), sample[["upx", "upy"]].to_numpy(float), atol=1e-5)
        np.testing.assert_array_equal(decode_png16(r["patch_png"]).numpy(),
                                      decode_png16(tf.io.read_file(sample["patch_path"])).numpy())


def test_corners_can_be_cut_at_other_points(labels, tmp_path):
    """Corner patches at given points (a stage-1 run's predictions in ``train grader --keypoints``)
    are the patches cut there, not at the labelled points."""
    frame, _ = load_labels(labels, check_images=False)
    readable = frame[frame["image"] != "broken.dcm"]
    moved = {}
    for i, row in readable.iterrows():
        points = {}
        for level in anatomy.LEVELS[row["view"]]:
            cx, cy, ax, ay = (row[c] for c in anatomy.keypoint_columns(level))
            points[level] = (cx + 6.0, cy - 4.0, ax + 6.0, ay - 4.0)
        moved[i] = points
    data = tmp_path / "data"
    index = prepare(labels, data, LONG_SIDE, DEPTH, per_shard=50, workers=1, progress=False, corner_points=moved,
                    corners_from="shifted")
    assert index["settings"]["corners_from"] == "shifted"
    there = corner_samples(extract_patches(readable, tmp_path / "there", DEPTH, points_from=moved,
                                           progress=False)[0], include_ng=True).set_index(["image", "corner"])
    labelled = corner_samples(extract_patches(readable, tmp_path / "labelled", DEPTH, progress=False)[0],
                              include_ng=True).set_index(["image", "corner"])
    records = [r for path in sorted((data / CORNERS).glob("*.tfrecord")) for r in _parse(path, CORNER_SPEC)]
    assert len(records) == len(there)
    for r in records[::7]:
        key = (_text(r["image"]), _text(r["corner"]))
        patch = decode_png16(r["patch_png"]).numpy()
        np.testing.assert_array_equal(patch, decode_png16(tf.io.read_file(there.loc[key, "patch_path"])).numpy())
        assert not np.array_equal(patch, decode_png16(tf.io.read_file(labelled.loc[key, "patch_path"])).numpy())


def test_training_stream_draws_the_grades_equally(prepared):
    counts = {int(g): n for g, n in load_index(prepared)["splits"]["train"]["grades"].items()}
    present = [g for g, n in counts.items() if n]
    assert len(present) >= 3 and max(counts.values()) >= 4 * min(n for n in counts.values() if n)  # skewed
    stream = prepared_balanced_dataset(prepared, counts, 0, CropSpec(size=32, depth_px=DEPTH), 40, seed=1,
                                       augment=CornerAugment(enabled=False))
    grades = np.concatenate([y.numpy() for _, y in stream.take(12)])
    shares = np.bincount(grades, minlength=len(LABEL_CLASSES))[present] / len(grades)
    # 480 draws: a share's standard error is about 0.02 around 1 / (grades present)
    assert np.abs(shares - 1 / len(present)).max() < 0.08, shares


def test_each_worker_reads_its_own_share(prepared):
    def ids(kind, split, grade, worker, n):
        ds = read_records(prepared, kind, split, grade, repeat=True, workers=2, worker_index=worker,
                          shuffle_buffer=1)
        spec = RADIOGRAPH_SPEC if kind == RADIOGRAPHS else CORNER_SPEC
        out = []
        for r in ds.take(n):
            parsed = tf.io.parse_single_example(r, spec)
            out.append(_text(parsed["image"]) + (("/" + _text(parsed["corner"])) if kind == CORNERS else ""))
        return out

    # two radiograph shards, two workers: one shard each
    index = load_index(prepared)
    n = index["splits"]["train"]["radiographs"]
    a, b = ids(RADIOGRAPHS, "train", None, 0, n // 2), ids(RADIOGRAPHS, "train", None, 1, n - n // 2)
    assert len(shard_files(prepared, RADIOGRAPHS, "train")) == 2
    assert not set(a) & set(b) and len(set(a) | set(b)) == n
    # one shard for two workers: every other record each
    files = shard_files(prepared, CORNERS, "val", 0)
    assert len(files) == 1
    total = sum(1 for _ in tf.data.TFRecordDataset(files))
    a, b = ids(CORNERS, "val", 0, 0, total // 2), ids(CORNERS, "val", 0, 1, total // 2)
    assert not set(a) & set(b) and len(set(a) | set(b)) == 2 * (total // 2)


def test_rerun_skips_complete_shards_and_redoes_an_interrupted_one(labels, prepared, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    index = json.loads((data / "index.json").read_text())
    # as if killed while writing the second training unit: its marker and one shard never landed
    (data / ".units" / "train-00001.json").unlink()
    (data / RADIOGRAPHS / "train-00001.tfrecord").unlink()
    kept = {p: p.stat().st_mtime_ns for p in data.rglob("*.tfrecord")}
    again = prepare(labels, data, LONG_SIDE, DEPTH, per_shard=3, workers=1, progress=False)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items() if "-00001" not in p.name)
    assert (data / RADIOGRAPHS / "train-00001.tfrecord").is_file()
    assert again["splits"] == index["splits"] and again["files"] == index["files"]
    with pytest.raises(PrepareError, match="other labels or settings"):
        prepare(labels, data, LONG_SIDE, 64, per_shard=3, workers=1, progress=False)


def test_cli_prepare_in_parallel_lists_the_bad_file(labels, tmp_path):
    result = CliRunner().invoke(main, ["prepare", "--labels", str(labels), "--out", str(tmp_path / "d"),
                                       "--long-side", str(LONG_SIDE), "--patch-depth", str(DEPTH),
                                       "--workers", "2"])
    assert result.exit_code == 1, result.output  # one unreadable file: the rest is prepared
    assert "broken.dcm: skipped: not an image" in result.output
    assert "1 radiographs could not be read" in result.output
    assert load_index(tmp_path / "d")["training_data"]["radiographs"] == 8


def test_cli_training_source_errors(labels, prepared, tmp_path):
    runner = CliRunner()
    both = runner.invoke(main, ["train", "keypoints", "--labels", str(labels), "--data", str(prepared),
                                "--out", str(tmp_path / "r")])
    assert both.exit_code == 2 and "either --labels" in both.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(main, ["train", "grader", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")])
    assert empty.exit_code == 1 and "not a prepared data folder" in empty.output
    assert "Traceback" not in empty.output


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _weights(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, np.asarray(obj)) if isinstance(obj, h5py.Dataset) else None)
    return out


def _quiet_env(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **extra}


@pytest.mark.slow
def test_two_workers_train_to_identical_weights(prepared, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run = tmp_path / "run"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tfmssass.cli", "train", "keypoints", "--data", str(prepared), "--out", str(run),
         "--preset", "tiny", "--epochs", "2", "--steps-per-epoch", "2", "--strategy", "multiworker"],
        env=_quiet_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
    chief, other = _weights(run / "last.weights.h5"), _weights(run / "workers" / "1" / "last.weights.h5")
    assert chief.keys() == other.keys() and len(chief) > 100
    for name in chief:  # weights and BatchNorm statistics alike
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    # the chief alone wrote the checkpoint, the log and the done marker
    assert (run / "best.weights.h5").is_file() and (run / "done").is_file()
    assert list(pd.read_csv(run / "log.csv")["epoch"]) == [0, 1]
    assert sorted(p.name for p in (run / "workers" / "1").iterdir()) == ["last.weights.h5"]
    assert json.loads((run / "config.json").read_text())["data"] == str(prepared.resolve())


@pytest.mark.slow
def test_killed_training_resumes_from_its_backup(prepared, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "tfmssass.cli", "train", "grader", "--data", str(prepared), "--out", str(run),
               "--preset", "tiny", "--epochs", "4", "--per-class", "60"]
    proc = subprocess.Popen(command, env=_quiet_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run / "log.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = len(pd.read_csv(log))
    assert 1 <= done_before < 4 and not (run / "done").exists(), "not killed mid-run"
    assert (run / "backup" / "training_metadata.json").is_file()

    resumed = subprocess.run(command, env=_quiet_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert list(pd.read_csv(log)["epoch"]) == [0, 1, 2, 3]  # continued, nothing repeated or lost
    assert (run / "done").is_file() and (run / "best.weights.h5").is_file()
    assert not (run / "backup").exists()  # removed once the run finished
