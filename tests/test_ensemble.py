"""An ensemble of grader runs answers the mean of its members' calibrated probabilities, and is used
as any grader run (export, scoring); runs that cannot be members are refused with the reason."""

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from tfmssass.cli import main
from tfmssass.core.config import grader_config, keypoint_config
from tfmssass.stages.grader.calibration import (
    Calibration,
    calibrate,
    calibrate_gradable,
    change_prior,
    write_calibration,
)
from tfmssass.stages.grader.combine import combine_graders
from tfmssass.stages.grader.model import build_grader, grader_outputs
from tfmssass.stages.runs import BEST, RunFolderError, initial_weights, load_grader, read_config

# two members calibrated unlike each other: other temperatures, biases, training priors and gradability
CALIBRATIONS = [
    Calibration(1.4, (0.7, -0.1, -0.6, -1.2), (0.60, 0.22, 0.12, 0.06), True, {}, (0.6, 1.7), 0.9),
    Calibration(0.8, (0.2, 0.1, -0.3, -0.5), (0.70, 0.15, 0.10, 0.05), True, {}, (1.3, -0.4), 0.8),
]


def _grader_run(path, seed, calibration=None, **overrides):
    """A grader run folder as training leaves it: config, best weights (seeded), calibration."""
    keras.utils.set_random_seed(seed)
    config = grader_config("tiny", **overrides)
    path.mkdir(parents=True)
    build_grader(config).save_weights(str(path / BEST))
    (path / "config.json").write_text(json.dumps({"stage": "grader", "grader": config.to_dict(),
                                                  "training_data": {"phantom": True, "radiographs": 4}}))
    if calibration is not None:
        write_calibration(path, calibration)
    return path


def _calibrated(run, crops, calibration, prior):
    model, _ = load_grader(run)
    p, g = (np.asarray(t) for t in grader_outputs(model, crops))
    return (change_prior(calibrate(p, calibration), calibration.prior, prior),
            calibrate_gradable(g, calibration))


def test_ensemble_is_the_mean_of_its_calibrated_members(tmp_path):
    runs = [_grader_run(tmp_path / f"m{k}", 10 + k, c) for k, c in enumerate(CALIBRATIONS)]
    out = combine_graders(runs, tmp_path / "ensemble")
    crops = np.random.default_rng(0).random((8, 64, 64, 1)).astype(np.float32)
    prior = tuple(np.mean([c.prior for c in CALIBRATIONS], axis=0))
    members = [_calibrated(r, crops, c, prior) for r, c in zip(runs, CALIBRATIONS)]
    model, config = load_grader(out)
    p, g = (np.asarray(t) for t in grader_outputs(model, crops))
    np.testing.assert_allclose(p, (members[0][0] + members[1][0]) / 2, atol=1e-5)
    np.testing.assert_allclose(g, (members[0][1] + members[1][1]) / 2, atol=1e-5)
    assert not np.allclose(members[0][0], members[1][0], atol=1e-2)  # the members do differ
    # the ensemble's own calibration adds nothing but says which prior its probabilities assume
    ensemble = json.loads((out / "calibration.json").read_text())
    assert ensemble["temperature"] == 1.0 and ensemble["bias"] == [0.0] * 4 and ensemble["gradable"] == [1.0, 0.0]
    np.testing.assert_allclose(ensemble["prior"], prior)
    assert ensemble["gradable_threshold"] == pytest.approx(0.85)
    assert config.input_size == 64
    assert json.loads((out / "config.json").read_text())["training_data"]["phantom"] is True


def test_an_ensemble_exports_and_serves_its_mean(tmp_path):
    """The exported grader signature answers what the ensemble run answers (float16 storage aside)."""
    from tfmssass.serving.module import ScoringModule, build_metadata
    from tfmssass.stages.grader.calibration import read_calibration

    runs = [_grader_run(tmp_path / f"m{k}", 20 + k, c) for k, c in enumerate(CALIBRATIONS)]
    out = combine_graders(runs, tmp_path / "ensemble")
    model, config = load_grader(out)
    # grading crops needs no stage 1
    module = ScoringModule(None, model, config.crop, 0.3, {"note": ""}, calibration=read_calibration(out))
    crops = np.random.default_rng(1).random((5, 64, 64, 1)).astype(np.float32)
    served = module.grade(crops)
    p, g = (np.asarray(t) for t in grader_outputs(model, crops))
    np.testing.assert_allclose(served["grade_probabilities"].numpy(), p, atol=5e-3)
    np.testing.assert_allclose(served["gradable_probability"].numpy(), g, atol=5e-3)
    # metadata.json says which graders are averaged, each with its calibration
    described = build_metadata(keypoint_config("tiny"), config, {}, read_config(out), phantom=True)["grader"]
    assert [Calibration.from_dict(c) for c in described["ensemble"]] == CALIBRATIONS
    assert "ensemble" not in build_metadata(keypoint_config("tiny"), config, {}, read_config(runs[0]), True)["grader"]


def test_runs_that_cannot_be_members_are_refused(tmp_path):
    good = _grader_run(tmp_path / "good", 1, CALIBRATIONS[0])
    uncalibrated = _grader_run(tmp_path / "raw", 2)
    other_crop = _grader_run(tmp_path / "wide", 3, CALIBRATIONS[1], extent=3.5)
    with pytest.raises(RunFolderError, match="not calibrated"):
        combine_graders([good, uncalibrated], tmp_path / "e1")
    with pytest.raises(RunFolderError, match="other crops"):
        combine_graders([good, other_crop], tmp_path / "e2")
    with pytest.raises(RunFolderError, match="two or more"):
        combine_graders([good], tmp_path / "e3")
    ensemble = combine_graders([good, _grader_run(tmp_path / "good2", 4, CALIBRATIONS[1])], tmp_path / "e4")
    with pytest.raises(RunFolderError, match="already an ensemble"):
        combine_graders([good, ensemble], tmp_path / "e5")
    with pytest.raises(RunFolderError, match="already exists"):
        combine_graders([good, good], ensemble)
    with pytest.raises(RunFolderError, match="ensemble of graders"):
        initial_weights(str(ensemble), "grader", grader_config("tiny").to_dict(), tmp_path / "next")
    # from the command line: one line naming the run and the reason, exit 2, and calibrate refuses too
    result = CliRunner().invoke(main, ["combine-graders", str(good), str(uncalibrated), "--out", str(tmp_path / "e6")])
    assert result.exit_code == 2 and "raw: not calibrated" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["calibrate", "--grader", str(ensemble)])
    assert result.exit_code == 2 and "its members are calibrated" in result.output
