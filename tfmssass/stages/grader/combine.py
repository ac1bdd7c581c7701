"""``tfmssass combine-graders``: calibrated grader runs into one ensemble run folder
(:mod:`tfmssass.stages.grader.ensemble` says why and how they are averaged).

The folder is a grader run like any other for export, scoring and evaluation: ``config.json`` (the
first member's grader settings, and under ``ensemble`` every member's settings and calibration),
``best.weights.h5`` (all members' weights), ``calibration.json`` and ``done``. It cannot be trained
or calibrated further; train or calibrate its members and combine them again.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tfmssass.core.atomic import write_text
from tfmssass.core.config import GraderConfig
from tfmssass.stages.grader.calibration import CALIBRATION, Calibration, read_calibration, write_calibration
from tfmssass.stages.grader.ensemble import build_ensemble, ensemble_calibration
from tfmssass.stages.runs import BEST, ENSEMBLE, LEARNED, RunFolderError, read_config, trained_on_phantoms


def _member(run_dir) -> tuple[dict, GraderConfig, Calibration]:
    """A run that can be a member (a finished, calibrated grader run, not itself an ensemble): its
    config, grader settings and calibration."""
    run = read_config(run_dir)
    if run.get("stage") != "grader":
        raise RunFolderError(f"{run_dir}: a {run.get('stage')} run; only grader runs are combined")
    if ENSEMBLE in run:
        raise RunFolderError(f"{run_dir}: already an ensemble; combine its members instead")
    if not (Path(run_dir) / BEST).is_file():
        raise RunFolderError(f"{run_dir}: no {BEST} yet (train it first)")
    calibration = read_calibration(run_dir)
    if not calibration.fitted:
        raise RunFolderError(f"{run_dir}: not calibrated (no {CALIBRATION}); run 'tfmssass calibrate' on it first")
    return run, GraderConfig.from_dict(run["grader"]), calibration


def combine_graders(run_dirs: list, out) -> Path:
    """Write the ensemble of ``run_dirs`` (two or more calibrated grader runs that cut the same crops) to
    the new folder ``out``."""
    if len(run_dirs) < 2:
        raise RunFolderError("combine-graders: give two or more grader runs")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise RunFolderError(f"{out}: already exists; choose a new folder")
    runs, configs, calibrations = zip(*(_member(r) for r in run_dirs))
    different = [str(r) for r, c in zip(run_dirs[1:], configs[1:]) if c.crop != configs[0].crop]
    if different:
        raise RunFolderError(f"{', '.join(different)}: cut other crops than {run_dirs[0]} (size, extent, CLAHE); "
                             "members must read the same crops")
    model = build_ensemble(list(configs), list(calibrations))
    for k, run_dir in enumerate(run_dirs):
        model.get_layer(f"member_{k}").load_weights(str(Path(run_dir) / BEST))
    learned = [json.loads((Path(r) / LEARNED).read_text()) for r in run_dirs if (Path(r) / LEARNED).is_file()]
    out.mkdir(parents=True, exist_ok=True)
    config = {"stage": "grader", "grader": runs[0]["grader"],
              "training_data": {"phantom": all(trained_on_phantoms(r) for r in runs),
                                "members": [r.get("training_data") for r in runs]},
              ENSEMBLE: {"members": [{"run": str(Path(r).resolve()), "grader": c["grader"],
                                      "calibration": {**cal.to_dict(), "validation": {}}}
                                     for r, c, cal in zip(run_dirs, runs, calibrations)]}}
    write_text(out / "config.json", json.dumps(config, indent=1) + "\n")
    with tempfile.TemporaryDirectory(dir=out) as tmp:  # the weights appear whole or not at all
        staged = Path(tmp) / BEST
        model.save_weights(str(staged))
        staged.replace(out / BEST)
    write_calibration(out, ensemble_calibration(list(calibrations)))
    if learned:
        worst = min(learned, key=lambda v: bool(v["learned"]))
        write_text(out / LEARNED, json.dumps(worst, indent=1) + "\n")
    write_text(out / "done", "")
    return out
