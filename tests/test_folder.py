"""The scored folder: one run at a time, one run's results, a format this version can read, and
nobody but scoring/folder.py spelling its work paths."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from score_doubles import scoring_models, settings

from tfmssass.cli import main
from tfmssass.scoring.folder import FORMAT_VERSION, LOCK_FILE, FolderError, ScoredFolder
from tfmssass.scoring.run import run_scoring
from tfmssass.serving.predictors import ServingUnavailable

PACKAGE = Path(__file__).resolve().parents[1] / "tfmssass"
HOLD = """
import sys, time
from tfmssass.scoring.folder import ScoredFolder
with ScoredFolder(sys.argv[1]).writing():
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def films(phantoms, tmp_path) -> Path:
    """One patient's first visit (both views): a scoring run in seconds."""
    visit = sorted((phantoms / "PH0001").iterdir())[0]
    shutil.copytree(visit, tmp_path / "in" / "PH0001" / visit.name)
    return tmp_path / "in"


def _models(phantoms):
    return scoring_models(phantoms / "labels.csv")


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_second_run_on_a_folder_in_use_exits_2_naming_the_holder_and_writes_nothing(phantoms, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _snapshot(out)
        result = CliRunner().invoke(main, ["score", str(phantoms), "--out", str(out), "--quiet"])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and f"PID {holder.pid}" in lines[0] and str(out) in lines[0]
        assert "Traceback" not in result.output
        assert _snapshot(out) == before  # the lock file with the holder's PID, nothing else
        assert list(before) == [LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()
    with ScoredFolder(out).writing():  # the lock goes with the process that held it
        pass


def test_the_lock_nests_within_a_process_and_is_released_after(tmp_path):
    folder = ScoredFolder(tmp_path / "out")
    with folder.writing():
        with ScoredFolder(tmp_path / "out").writing():
            pass
        probe = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(60)", "pass"), str(folder.root)],
                               capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "another run" in probe.stderr  # still held by the outer block
    probe = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(60)", "pass"), str(folder.root)],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr


class _Dies:
    """A predictor whose server goes away at the first radiograph."""

    metadata = {}

    def predict(self, images, views):
        raise ServingUnavailable("the server went away")


def test_a_fresh_run_refuses_another_runs_results_and_overwrite_removes_them_first(phantoms, films, tmp_path):
    out = tmp_path / "out"
    first = run_scoring(films, out, _models(phantoms), settings(), progress=False)
    assert first["scored"] == 2
    run_id = ScoredFolder(out).run_id()
    assert run_id and f"by run {run_id}" in (out / "report.html").read_text()
    tables = {name: (out / name).read_bytes() for name in ("corners.csv", "visits.csv", "report.html")}

    with pytest.raises(FolderError, match="holds results of another run; use --resume or another --out"):
        run_scoring(films, out, _Dies(), settings(), progress=False)
    # the command line says the same in one line, before any model loads
    result = CliRunner().invoke(main, ["score", str(films), "--out", str(out), "--quiet"])
    assert result.exit_code == 2 and "holds results of another run" in result.output, result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["score", str(films), "--out", str(out), "--resume", "--overwrite"])
    assert result.exit_code == 2 and "give one" in result.output
    assert {name: (out / name).read_bytes() for name in tables} == tables  # refused: nothing touched

    with pytest.raises(ServingUnavailable):  # overwrite, and the run dies before its first record
        run_scoring(films, out, _Dies(), settings(), overwrite=True, progress=False)
    assert not any((out / name).exists() for name in ("corners.csv", "visits.csv", "report.html", "overlays"))
    assert ScoredFolder(out).records() == [] and ScoredFolder(out).run_id() != run_id


def test_the_readers_store_survives_overwrite(phantoms, films, tmp_path):
    out = tmp_path / "out"
    run_scoring(films, out, _models(phantoms), settings(), progress=False)
    (out / "review.sqlite").write_bytes(b"readers' work")
    run_scoring(films, out, _models(phantoms), settings(impute="none"), overwrite=True, progress=False)
    assert (out / "review.sqlite").read_bytes() == b"readers' work"
    assert ScoredFolder(out).settings().impute == "none"


def test_a_folder_of_a_newer_format_is_refused_in_one_line(phantoms, films, tmp_path):
    out = tmp_path / "out"
    run_scoring(films, out, _models(phantoms), settings(), progress=False)
    assert json.loads((out / ".work" / "format.json").read_text()) == {"format": FORMAT_VERSION}
    (out / ".work" / "format.json").write_text(json.dumps({"format": FORMAT_VERSION + 1}))
    for args in (["score", str(films), "--out", str(out), "--resume", "--quiet"],
                 ["evaluate", "agreement", "--scores", str(out), "--labels", str(phantoms / "labels.csv"),
                  "--out", str(tmp_path / "agreement")],
                 ["review", str(out), "--reader", "A"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        error = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and f"folder format {FORMAT_VERSION + 1}" in error[0], result.output
        assert "Traceback" not in result.output


def test_a_folder_from_before_the_format_is_read_as_format_1(phantoms, films, tmp_path):
    out = tmp_path / "out"
    run_scoring(films, out, _models(phantoms), settings(), progress=False)
    before = pd.read_csv(out / "corners.csv")
    (out / ".work" / "format.json").unlink()
    (out / ".work" / "run.json").unlink()
    folder = ScoredFolder(out)
    assert folder.format_version() == 1 and folder.run_id() is None
    counts = run_scoring(films, out, _models(phantoms), settings(), resume=True, progress=False)
    assert counts["scored"] == 2
    pd.testing.assert_frame_equal(pd.read_csv(out / "corners.csv"), before)


def test_records_of_format_2_read_with_todays_names(phantoms, films, tmp_path):
    # format 2 kept a level's "off_film" (the inverse of on_film) and a corner's "code" and "why"
    out = tmp_path / "out"
    run_scoring(films, out, _models(phantoms), settings(), progress=False)
    before = pd.read_csv(out / "corners.csv")
    now = {f.key: f for f in ScoredFolder(out).records()}
    for path in (out / ".work" / "records").glob("*.json"):
        record = json.loads(path.read_text())
        for level in record["levels"].values():
            level["off_film"] = not level.pop("on_film")
        for corner in record["corners"]:
            corner["code"], corner["why"] = corner.pop("review_code"), corner.pop("review_reason")
        path.write_text(json.dumps(record))
    (out / ".work" / "format.json").write_text(json.dumps({"format": 2}))
    assert {f.key: f for f in ScoredFolder(out).records()} == now
    run_scoring(films, out, _models(phantoms), settings(), resume=True, progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(out / "corners.csv"), before)
    assert before["review_reason"].notna().any()


def test_no_module_but_the_folder_spells_a_work_path():
    spelled = [f"{path.relative_to(PACKAGE)}:{n}" for path in PACKAGE.rglob("*.py") if path.name != "folder.py"
               for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               if re.search(r"""["'/]\.work\b""", line)]
    assert not spelled, spelled


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    time.sleep(0.1)
    with ScoredFolder(out).writing():
        pass


def test_resuming_with_other_weights_under_the_same_name_is_refused(phantoms, films, tmp_path):
    """A model exported again under the same name and version, or a run trained further, is not the
    model that scored the folder: its answers must not be mixed in by --resume."""
    out = tmp_path / "out"
    run_scoring(films, out, _models(phantoms), settings(model_fingerprint="aaaa"), progress=False)
    with pytest.raises(FolderError, match="other weights under the same name"):
        run_scoring(films, out, _models(phantoms), settings(model_fingerprint="bbbb"), resume=True, progress=False)
    # a folder scored before fingerprints were kept resumes on the names alone, and keeps one from then on
    kept = out / ".work" / "settings.json"
    earlier = json.loads(kept.read_text())
    del earlier["model_fingerprint"]
    kept.write_text(json.dumps(earlier))
    run_scoring(films, out, _models(phantoms), settings(model_fingerprint="bbbb"), resume=True, progress=False)
    assert json.loads(kept.read_text())["model_fingerprint"] == "bbbb"
    with pytest.raises(FolderError, match="other weights"):
        run_scoring(films, out, _models(phantoms), settings(model_fingerprint="cccc"), resume=True, progress=False)
    # the refusal names what changed: here the prior, as when the default changed between the runs
    with pytest.raises(FolderError, match='prior "tempered", now "data"'):
        run_scoring(films, out, _models(phantoms), settings(model_fingerprint="bbbb", prior="data"), resume=True,
                    progress=False)


def test_the_fingerprint_follows_the_files_not_their_names(tmp_path):
    from tfmssass.core.config import demo_model_dir
    from tfmssass.serving.predictors import SavedModelPredictor, files_fingerprint

    copy = tmp_path / "phantom-demo" / "1"
    shutil.copytree(demo_model_dir(), copy)
    files = lambda folder: [p for p in folder.rglob("*") if p.is_file()]  # noqa: E731
    assert SavedModelPredictor(copy).fingerprint == files_fingerprint(files(demo_model_dir()))
    metadata = json.loads((copy / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps({**metadata, "calibration": None}))  # exported again, other calibration
    assert files_fingerprint(files(copy)) != files_fingerprint(files(demo_model_dir()))
