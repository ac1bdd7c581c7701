"""tfmssass score: totals and imputation, progression, the batch that must not die on a bad file,
kill-and-resume, pseudonymisation and the report."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from click.testing import CliRunner
from dicom_factory import make_dataset, phantom_pixels
from review_helpers import CHROMIUM
from score_doubles import scoring_models, settings

from tfmssass.cli import main
from tfmssass.core import anatomy
from tfmssass.scoring.film import CornerRecord, FilmRecord, Status, choose_radiographs
from tfmssass.scoring.cohort import tempered
from tfmssass.scoring.options import ScoreOptions
from tfmssass.scoring.run import run_scoring
from tfmssass.scoring.totals import progression, segment_total, visit_totals

OUTPUT_CSVS = ("corners.csv", "images.csv", "visits.csv", "progression.csv", "errors.csv")


# ---- arithmetic on hand-made tables ----------------------------------------------------------------

def test_segment_total_imputes_up_to_three_missing_corners():
    full = [0, 1, 2, 3] * 3
    assert segment_total(full) == (18.0, 12, 0)
    three_missing = [np.nan] * 3 + [2] * 9  # mean of the graded 9 is 2 → 18 + 3 × 2
    assert segment_total(three_missing) == (24.0, 9, 3)
    assert segment_total([np.nan] * 4 + [2] * 8) == (None, 8, 0)  # 4 missing: blank, never 0-filled
    assert segment_total([np.nan] + [1] * 11, impute="none") == (None, 11, 0)
    assert segment_total([np.nan] * 12) == (None, 0, 0)
    assert segment_total([np.nan, np.nan] + [0] * 5 + [3] * 5) == (pytest.approx(15 + 2 * 1.5), 10, 2)


def _corner_table(patient, date, grades: dict, view_grades: dict[str, list] | None = None):
    """Rows for both views; ``view_grades`` gives the 12 grades of a view in corner order."""
    rows = []
    for view in anatomy.VIEWS:
        values = (view_grades or {}).get(view)
        if values is None:
            continue
        for corner, g in zip(anatomy.CORNERS[view], values):
            rows.append({"patient_id": patient, "visit_date": date, "view": view, "corner": corner,
                         "grade": grades.get(corner, g)})
    return rows


def test_visit_totals_missing_view_and_imputation():
    rows = _corner_table("A", "2020-01-01", {}, {"cervical": [1] * 12, "lumbar": [np.nan, 2] + [0] * 10})
    rows += _corner_table("B", "2020-01-01", {}, {"cervical": [3] * 12})  # no lumbar radiograph
    visits = visit_totals(pd.DataFrame(rows)).set_index("patient_id")
    a, b = visits.loc["A"], visits.loc["B"]
    assert a["cervical"] == 12 and a["lumbar"] == pytest.approx(2 + 2 / 11)
    assert a["msasss"] == pytest.approx(14 + 2 / 11) and a["imputed"] == 1 and a["corners_graded"] == 23
    assert bool(a["complete"])
    assert b["cervical"] == 36 and pd.isna(b["lumbar"]) and pd.isna(b["msasss"]) and not b["complete"]
    none = visit_totals(pd.DataFrame(rows), impute="none").set_index("patient_id")
    assert pd.isna(none.loc["A", "lumbar"]) and pd.isna(none.loc["A", "msasss"])


def test_a_corner_missing_at_one_visit_takes_its_own_grades_at_the_others():
    """A corner hidden at one visit is imputed from the same corner at the patient's visits around it
    (not from the segment's mean, which would add a false change), and the limit of 3 still holds."""
    lumbar = [0] * 12
    dates = ["2016-01-01", "2018-01-01", "2020-01-01", "2022-01-01"]
    rows = _corner_table("A", dates[0], {"C5_inf": 2, "C6_sup": 0}, {"cervical": [3] * 12, "lumbar": lumbar})
    rows += _corner_table("A", dates[1], {"C5_inf": np.nan, "C6_sup": np.nan},  # hidden: between 2 and 3 → 2.5
                          {"cervical": [3] * 12, "lumbar": lumbar})
    rows += _corner_table("A", dates[2], {"C5_inf": 3, "C6_sup": 0}, {"cervical": [3] * 12, "lumbar": lumbar})
    rows += _corner_table("A", dates[3], {"C5_inf": 3, "C6_sup": np.nan}, {"cervical": [3] * 12, "lumbar": lumbar})
    rows += _corner_table("B", dates[0], {}, {"cervical": [np.nan] * 4 + [1] * 8, "lumbar": lumbar})
    rows += _corner_table("B", dates[1], {}, {"cervical": [1] * 12, "lumbar": lumbar})
    corners = pd.DataFrame(rows)
    visits = visit_totals(corners).set_index(["patient_id", "visit_date"])
    cervical = visits.loc["A", "cervical"]
    assert cervical[dates[1]] == pytest.approx(30 + 2.5 + 0)  # C6_sup graded 0 before and after: 0, not 3
    assert cervical[dates[3]] == pytest.approx(33 + 0)  # only an earlier visit: carried forward
    assert visits.loc["A", "imputed"].tolist() == [0, 2, 0, 1]
    assert pd.isna(visits.loc[("B", dates[0]), "cervical"])  # 4 missing: blank, whatever the other visit says
    by_mean = visit_totals(corners, impute="mean").set_index(["patient_id", "visit_date"]).loc["A", "cervical"]
    assert by_mean[dates[1]] == pytest.approx(30 + 2 * 3)
    # the change the hidden corners make: none of their own, where the segment mean invents +3.5 then -3.5
    assert cervical.diff().tolist()[1:] == pytest.approx([0.5, 0.5, 0.0])


def test_progression_between_consecutive_visits():
    zeros = {"cervical": [0] * 12, "lumbar": [0] * 12}
    rows = _corner_table("A", "2018-01-01", {}, zeros)
    rows += _corner_table("A", "2020-01-01", {"C3_inf": 2, "C4_sup": 1}, zeros)  # +3, one new syndesmophyte
    # third visit: C3-C4 bridged (both 3: a new bridge), one corner missing (imputed, still complete)
    rows += _corner_table("A", "2022-01-02", {"C3_inf": 3, "C4_sup": 3, "L5_inf": np.nan}, zeros)
    rows += _corner_table("B", "2019-06-01", {"L1_sup": 1}, zeros)
    rows += _corner_table("B", "2021-06-01", {"L1_sup": 2}, {"cervical": [0] * 12})  # no lumbar: Δ blank
    corners = pd.DataFrame(rows)
    table = progression(visit_totals(corners), corners)
    assert list(table["patient_id"]) == ["A", "A", "B"]
    first, second, third = (table.iloc[i] for i in range(3))
    assert first["years"] == pytest.approx(2.0, abs=0.01) and first["delta"] == 3 and first["progressed"]
    assert first["new_syndesmophytes"] == 1 and first["new_bridges"] == 0
    assert second["delta"] == 3 and second["progressed"] and second["new_bridges"] == 1
    assert second["new_syndesmophytes"] == 1  # C4_sup 1 → 3; C3_inf was already 2
    assert pd.isna(third["delta"]) and pd.isna(third["progressed"])
    assert third["new_syndesmophytes"] == 0  # L1_sup is not graded at the later visit


def test_delta_of_exactly_two_is_progression_and_below_is_not():
    zeros = {"cervical": [0] * 12, "lumbar": [0] * 12}
    rows = _corner_table("A", "2018-01-01", {}, zeros) + _corner_table("A", "2020-01-01", {"C2_inf": 2}, zeros)
    rows += _corner_table("B", "2018-01-01", {}, zeros) + _corner_table("B", "2020-01-01", {"C2_inf": 1}, zeros)
    corners = pd.DataFrame(rows)
    table = progression(visit_totals(corners), corners).set_index("patient_id")
    assert table.loc["A", "progressed"] and not table.loc["B", "progressed"]


def test_the_default_prior_is_tempered_where_the_model_says_its_prior_and_data_where_it_cannot():
    from tfmssass.core.errors import UsageError

    def prior(metadata, chosen=None):
        options = ScoreOptions(out="scored", directory="films", prior=chosen)
        options.check()
        return options.settings("m", True, metadata).prior

    assert prior({"calibration": {"prior": [0.6, 0.2, 0.12, 0.08]}}) == "tempered"
    assert prior({}) == "tempered"  # a server: its answers carry the prior they assume
    assert prior({"phantom_trained": True}) == "data"  # exported before calibration: nothing to flatten
    assert prior({"phantom_trained": True}, "data") == "data"
    with pytest.raises(UsageError, match="--prior tempered: m was exported before calibration"):
        prior({"phantom_trained": True}, "tempered")


def test_the_better_of_two_radiographs_is_used():
    def record(file, graded, confidence):
        corners = [CornerRecord("L1-L2", "L1_inf", 0, [1, 0, 0, 0], confidence, False)] * graded + \
            [CornerRecord("L1-L2", "L1_inf", None, None, None, True)] * (12 - graded)
        return FilmRecord(key=file, file=file, status=Status.SCORED, patient_id="A", visit_date="2020-01-01",
                          view="lumbar", corners_graded=graded, corners=corners)

    chosen = choose_radiographs([record("a.dcm", 10, 0.99), record("b.dcm", 12, 0.6), record("c.dcm", 12, 0.7)])
    assert set(chosen) == {"a.dcm", "b.dcm"} and "c.dcm" in chosen["a.dcm"]


# ---- whole runs with stand-in stages ---------------------------------------------------------------

def _mixed_folder(phantoms: Path, target: Path) -> dict[str, str]:
    """The phantoms plus inputs that must not be scored; returns {file: expected reason fragment}."""
    shutil.copytree(phantoms, target)
    first = sorted(target.glob("PH*/*/lumbar.dcm"))[0]
    bad = target / "bad"
    bad.mkdir()
    (bad / "empty.dcm").write_bytes(b"")
    data = first.read_bytes()
    (bad / "truncated.dcm").write_bytes(data[: len(data) // 2])
    (bad / "notes.bin").write_bytes(b"this is not an image at all\n" * 20)
    sr = make_dataset(phantom_pixels(), sop_class="1.2.840.10008.5.1.4.1.1.88.11")
    for keyword in ("Rows", "Columns", "PixelData", "BitsAllocated", "BitsStored", "HighBit",
                    "SamplesPerPixel", "PhotometricInterpretation", "PixelRepresentation"):
        delattr(sr, keyword)
    sr.Modality = "SR"
    sr.save_as(bad / "report.dcm", enforce_file_format=True)
    mr = make_dataset(phantom_pixels(), Modality="MR", sop_class="1.2.840.10008.5.1.4.1.1.4")
    mr.Modality = "MR"
    mr.save_as(bad / "brain.dcm", enforce_file_format=True)
    ap = pydicom.dcmread(first)
    ap.ViewPosition = "AP"
    ap.SOPInstanceUID = pydicom.uid.generate_uid()
    ap.save_as(bad / "frontal.dcm", enforce_file_format=True)
    shutil.copy(first, first.parent / "lumbar_copy.dcm")  # same content, second path
    repeat = pydicom.dcmread(first)  # a second, different file of the same view and visit
    repeat.SOPInstanceUID = pydicom.uid.generate_uid()
    repeat.save_as(first.parent / "lumbar_repeat.dcm", enforce_file_format=True)
    rel = lambda p: p.relative_to(target).as_posix()  # noqa: E731
    return {"bad/empty.dcm": "empty file", "bad/truncated.dcm": "", "bad/notes.bin": "skipped: not an image",
            "bad/report.dcm": "skipped: not an image", "bad/brain.dcm": "skipped: not a radiograph (modality MR)",
            "bad/frontal.dcm": "skipped: AP view",
            rel(first.parent / "lumbar_copy.dcm"): f"skipped: same content as {rel(first)}"}


def test_a_film_whose_header_says_it_is_stored_turned_is_read_upright_and_answered_in_its_own_pixels(
        phantoms, tmp_path):
    # the stage-1 double knows only the upright pixels: it finds the spine only if the header's turn is undone
    from tfmssass.core.geometry import turn_points

    labels = pd.read_csv(phantoms / "labels.csv")
    row = labels[labels["view"] == "cervical"].iloc[0]
    folder = tmp_path / "in" / row["patient_id"] / row["visit_date"]
    folder.mkdir(parents=True)
    for turns in (1, 2, 3):
        ds = pydicom.dcmread(phantoms / row["image"])
        assert ds.PatientOrientation[1] == "F"  # the phantoms say they are stored upright
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        pixels = np.ascontiguousarray(np.rot90(ds.pixel_array, turns))
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.tobytes()
        front = ds.PatientOrientation[0]
        ds.PatientOrientation = {1: ["F", front], 2: [front, "H"], 3: ["H", front]}[turns]
        ds.save_as(folder / f"turned{turns}.dcm", enforce_file_format=True)

    models = scoring_models(phantoms / "labels.csv")
    counts = run_scoring(tmp_path / "in", tmp_path / "out", models, settings(), progress=False)
    assert counts["scored"] == 3
    images = pd.read_csv(tmp_path / "out" / "images.csv").sort_values("file")
    assert images["orientation"].tolist() == [f"turned {90 * t}° clockwise" for t in (1, 2, 3)]
    for record in (json.loads(p.read_text()) for p in (tmp_path / "out" / ".work" / "records").glob("*.json")):
        turns = int(record["file"][-5])
        for level in anatomy.LEVELS["cervical"]:
            upright = row[list(anatomy.keypoint_columns(level))].to_numpy(float).reshape(2, 2)
            stored = turn_points(upright, turns, int(row["image_height"]), int(row["image_width"]))
            found = np.array([record["levels"][level]["c"], record["levels"][level]["a"]])
            assert np.abs(found - stored).max() < 1e-3


def test_a_batch_with_broken_files_scores_everything_else(phantoms, tmp_path):
    folder = tmp_path / "in"
    expected = _mixed_folder(phantoms, folder)
    counts = run_scoring(folder, tmp_path / "out", scoring_models(phantoms / "labels.csv"), settings(),
                         batch_size=16, progress=False)
    assert counts["failed"] == 2 and counts["skipped"] == 5  # empty and truncated fail: exit 1

    errors = pd.read_csv(tmp_path / "out" / "errors.csv")
    assert sorted(errors["file"]) == sorted(expected)
    for _, row in errors.iterrows():
        assert expected[row["file"]] in row["reason"] and "\n" not in row["reason"]
    images = pd.read_csv(tmp_path / "out" / "images.csv")
    labels = pd.read_csv(phantoms / "labels.csv")
    assert len(images) == len(labels) + 1  # every phantom plus the repeated lumbar radiograph
    assert (images["corners_graded"] > 0).all()
    not_used = images[images["status"].str.startswith("not used")]
    assert len(not_used) == 1 and not_used["file"].iloc[0].endswith(("lumbar.dcm", "lumbar_repeat.dcm"))
    assert counts["not_used"] == 1 and counts["first_not_used"] == [(not_used["file"].iloc[0], not_used["status"].iloc[0])]

    corners = pd.read_csv(tmp_path / "out" / "corners.csv")
    assert set(corners["corner"]) <= set(anatomy.ALL_CORNERS)
    assert corners["grade"].dropna().isin([0, 1, 2, 3]).all()
    visits = pd.read_csv(tmp_path / "out" / "visits.csv")
    assert len(visits) == labels.groupby(["patient_id", "visit_date"]).ngroups
    assert len(pd.read_csv(tmp_path / "out" / "progression.csv")) == labels["patient_id"].nunique()
    # a visit total is the sum of its two subtotals, from the radiographs used
    scored = images[images["status"] == "scored"]
    checked = 0
    for _, v in visits[visits["complete"]].iterrows():
        subtotal = scored[(scored.patient_id == v.patient_id) & (scored.visit_date == v.visit_date)]
        if (subtotal["corners_graded"] == 12).all():
            assert v["msasss"] == pytest.approx(subtotal["score"].sum())
            checked += 1
    assert checked > 0  # the sums were compared on some visit
    for name in OUTPUT_CSVS:  # every table has rows here, and every row says the models are phantom-trained
        models = pd.read_csv(tmp_path / "out" / name)["models"]
        assert len(models) and models.str.contains("PHANTOM-TRAINED").all(), name
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == len(images)


@pytest.mark.slow
def test_missing_points_are_blank_corners_never_zero(clean_phantoms, tmp_path):
    phantoms = clean_phantoms  # every other corner is graded there: none hidden by the shoulders
    models = scoring_models(phantoms / "labels.csv")
    for det in models.stage1.table.values():  # the detector loses the lowest lumbar/cervical level
        det.confidence[[10, 11, 22, 23]] = 0.05
    run_scoring(phantoms, tmp_path / "out", models, settings(), progress=False)
    corners = pd.read_csv(tmp_path / "out" / "corners.csv")
    lost = corners[corners["level"].isin(["C7-T1", "L5-S1"])]
    assert len(lost) and lost["grade"].isna().all() and lost["review"].all()
    images = pd.read_csv(tmp_path / "out" / "images.csv")
    assert (images["corners_graded"] == 10).all()
    visits = pd.read_csv(tmp_path / "out" / "visits.csv")
    assert (visits["imputed"] == 4).all() and visits["complete"].all()


@pytest.mark.slow
def test_implanted_levels_are_blank_and_films_that_are_not_lateral_spines_are_skipped(tmp_path):
    from score_doubles import image_key

    from tfmssass.io import read_radiograph
    from tfmssass.scoring.record_maker import IMPLANT_REASON
    from tfmssass.synth.sets import synthesize

    folder = tmp_path / "in"
    labels = synthesize(folder, patients=2, visits=1, seed=3, workers=2, progress=False, unusual=1.0, negatives=1,
                        style="geometric")
    models = scoring_models(folder / "labels.csv")
    negatives = pd.read_csv(folder / "negatives.csv")
    for image in negatives["image"]:  # the orientation check calls these no lateral spine
        models.stage1.not_lateral.add(image_key(read_radiograph(folder / image).image))
    counts = run_scoring(folder, tmp_path / "out", models, settings(), progress=False)
    assert counts["skipped"] == 4 and counts["failed"] == 0  # a skip is not a failure: exit code 0

    errors = pd.read_csv(tmp_path / "out" / "errors.csv")
    assert sorted(errors["file"]) == sorted(negatives["image"])
    assert (errors["reason"] == "skipped: not a lateral cervical or lumbar radiograph").all()
    images = pd.read_csv(tmp_path / "out" / "images.csv")
    assert sorted(images["file"]) == sorted(labels["image"])  # nothing of the skipped films is counted
    corners = pd.read_csv(tmp_path / "out" / "corners.csv")
    plated = 0
    for _, row in labels[labels["variant"].str.startswith("implant")].iterrows():
        levels = [lv.strip() for lv in row["variant"].split("over ")[1].split(",")]
        mine = corners[corners["file"] == row["image"]]
        under = mine[mine["level"].isin(levels)]
        assert len(under) == 2 * len(levels) and under["grade"].isna().all() and under["review"].all()
        assert (under["review_reason"] == IMPLANT_REASON).all()
        assert mine.loc[~mine["level"].isin(levels), "review_reason"].ne(IMPLANT_REASON).all()
        plated += len(levels)
    assert plated >= 3
    # a model whose stage 1 learnt a higher limit (bright processed training films) decides with it
    raised = scoring_models(folder / "labels.csv", implants={"min_share": 1.01})
    plated_film = labels.loc[labels["variant"].str.startswith("implant"), "image"].iloc[0]
    out = raised.predict([read_radiograph(folder / plated_film).image.astype(np.float32)], [None])[0]
    assert out["spine_found"] and not out["level_implant"].any()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_outputs(phantoms, tmp_path):
    helper = Path(__file__).with_name("score_doubles.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(helper.parent), os.environ.get("PYTHONPATH", "")])}
    whole = subprocess.run([sys.executable, str(helper), str(phantoms), str(tmp_path / "whole")], env=env,
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(helper), str(phantoms), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / ".work" / "records"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(records.glob("*.json"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(list(records.glob("*.json")))
    assert proc.returncode == -signal.SIGKILL and 2 <= written < 8, "the run was not killed mid-way"
    assert not (out / "corners.csv").exists()

    resumed = subprocess.run([sys.executable, str(helper), str(phantoms), str(out), "--resume"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for name in OUTPUT_CSVS:
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(
        p.name for p in (tmp_path / "whole" / "overlays").iterdir())


@pytest.mark.slow
def test_pseudonymised_outputs_hold_no_original_id(phantoms, tmp_path):
    from tfmssass.scoring.run import salt_id

    salt = "a salt kept elsewhere"
    out = tmp_path / "out"
    run_scoring(phantoms, out, scoring_models(phantoms / "labels.csv"), settings(salt_id=salt_id(salt)),
                progress=False, salt=salt)
    labels = pd.read_csv(phantoms / "labels.csv")
    secrets = set(labels["patient_id"]) | {f"Phantom^{p}" for p in labels["patient_id"]} | {salt}
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        assert not any(s in path.as_posix() for s in secrets)
        data = path.read_bytes()
        assert not any(s.encode() in data for s in secrets), path
    visits = pd.read_csv(out / "visits.csv")
    assert visits["patient_id"].str.match(r"^P[0-9a-f]{12}$").all()
    assert visits["patient_id"].nunique() == labels["patient_id"].nunique()


@pytest.mark.skipif(not CHROMIUM, reason="needs Chromium (.ci/run installs it)")
@pytest.mark.slow
def test_report_renders_in_headless_chromium(phantoms, tmp_path):
    out = tmp_path / "out"
    run_scoring(phantoms, out, scoring_models(phantoms / "labels.csv"), settings(), progress=False)
    html = (out / "report.html").read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    assert "<script" not in html and "PHANTOM-TRAINED" in html
    for src in __import__("re").findall(r'src="([^"]+)"', html):
        assert (out / src).is_file(), src  # every overlay the page shows exists beside it
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "Corners to review" in dom and "Patient PH0001" in dom and "<svg" in dom
    assert "visits with an mSASSS" in dom  # the summary on top
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console  # the page has no scripts: any console message is an error
    shot = tmp_path / "page.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    import cv2

    picture = cv2.imread(str(shot))
    assert picture is not None and picture.std() > 5  # something was drawn, not a blank page


def test_the_report_summary_counts_visits_without_a_total_by_why_and_the_change_between_visits():
    from tfmssass.scoring.film import corner_table
    from tfmssass.scoring.report import run_summary
    from tfmssass.scoring.run import used_corners

    def film(patient, date, view, grades, status=Status.SCORED, file=None):
        corners = [CornerRecord(level="", corner=c, grade=g, p=None, confidence=None, review=False)
                   for c, g in zip(anatomy.CORNERS[view], grades)] if status == Status.SCORED else []
        file = file or f"{patient}/{date}/{view}.dcm"
        return FilmRecord(key=file, file=file, status=status, patient_id=patient, visit_date=date, view=view,
                          corners=corners)

    zeros, one = [0] * 12, [0] * 11 + [1]
    films = [film("A", "2018-01-10", "cervical", zeros), film("A", "2018-01-10", "lumbar", one),  # total 1
             film("A", "2020-01-10", "cervical", [1] * 4 + [0] * 8), film("A", "2020-01-10", "lumbar", one),  # 5
             film("A", "2020-01-10", "lumbar", [3] * 12, file="A/dup.dcm"),  # a second lumbar film, not used
             film("B", "2018-06-01", "cervical", zeros), film("B", "2018-06-01", "lumbar", zeros),  # total 0
             film("B", "2020-06-01", "cervical", zeros), film("B", "2020-06-01", "lumbar", [], Status.FAILED),
             film("C", "2019-03-01", "cervical", [None] * 4 + [0] * 8),  # 4 corners not graded: no segment total
             film("C", "2019-03-01", "lumbar", zeros),
             FilmRecord(key="x", file="broken.dcm", status=Status.FAILED, reason="unreadable")]  # no patient
    not_used = {"A/dup.dcm": "not used"}
    corners = used_corners(corner_table(films)[0], not_used)
    visits = visit_totals(corners)
    summary = dict(run_summary(films, visits, progression(visits, corners), not_used))
    assert summary["patients"] == "3"
    assert summary["visits with an mSASSS"] == "3 of 5 (60%)"  # A twice, B in 2018
    assert summary["visits without: a view not scored (refused, unreadable or not given)"] == "1"  # B in 2020
    assert summary["visits without: a segment with more than 3 corners not graded"] == "1"  # C
    assert summary["intervals between consecutive visits with both totals"] == "1 of 2 (50%)"  # A's; B's has no Δ
    assert summary["Δ mSASSS per interval"] == "mean +4.00, over 2.0 years on average"  # the duplicate's 3s unused
    assert summary["intervals with Δ ≥ 2 (progressed)"] == "1 of 1 (100%)"


# ---- the command line with real (untrained, tiny) run folders ----------------------------------------

def _tiny_runs(tmp_path: Path) -> tuple[Path, Path]:
    from tfmssass.core.config import grader_config, keypoint_config
    from tfmssass.stages.grader.model import build_grader
    from tfmssass.stages.keypoints.model import build_hrnet

    runs = []
    for stage, config, build in (("keypoints", keypoint_config("tiny"), build_hrnet),
                                 ("grader", grader_config("tiny"), build_grader)):
        run = tmp_path / stage
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"stage": stage, stage: config.to_dict(), "labels": None}))
        build(config).save_weights(str(run / "best.weights.h5"))
        runs.append(run)
    return runs[0], runs[1]


@pytest.mark.slow
def test_cli_untrained_models_report_spine_not_found(phantoms, tmp_path):
    from tfmssass.stages.runs import judge_learning

    keypoints, grader = _tiny_runs(tmp_path)
    (grader / "log.csv").write_text("epoch,loss,val_balanced_accuracy\n0,1.2,0.41\n1,1.1,0.52\n")
    assert judge_learning(grader, "grader") is None  # past chance: learnt
    (keypoints / "log.csv").write_text("epoch,loss,val_point_error\n0,0.1,31.5\n1,0.09,22.0\n")
    warning = judge_learning(keypoints, "keypoints")
    assert "learnt little (median point error 22.0% of the diagonal" in warning and "--init demo" in warning
    folder = tmp_path / "in"
    folder.mkdir()
    first = sorted(phantoms.glob("PH*/*/cervical.dcm"))[0]
    shutil.copy(first, folder / "a.dcm")
    (folder / "b.dcm").write_bytes(b"")
    (folder / "labels.csv").write_text("passed over\n")
    runner = CliRunner()
    args = ["score", str(folder), "--out", str(tmp_path / "out"), "--keypoints", str(keypoints),
            "--grader", str(grader), "--quiet"]
    result = runner.invoke(main, args)
    assert result.exit_code == 1, result.output
    errors = pd.read_csv(tmp_path / "out" / "errors.csv").set_index("file")
    assert set(errors.index) == {"a.dcm", "b.dcm"}
    assert errors.loc["a.dcm", "reason"].startswith("spine not found")
    assert errors.loc["b.dcm", "reason"] == "empty file"
    assert "the model may be undertrained" in result.output and "keypoints (best val_point_error 22.0)" in result.output
    assert "hint: the spine was found on no radiograph" in result.output
    assert "PHANTOM" not in (tmp_path / "out" / "report.html").read_text()  # not trained on phantoms

    usage = runner.invoke(main, args + ["--pseudonymize"])
    assert usage.exit_code == 2 and "--salt" in usage.output


# ---- the shipped demo ----------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def test_shipped_demo_model_and_examples_fit_in_git():
    model = REPO / "saved_models" / "phantom-demo" / "1"
    meta = json.loads((model / "metadata.json").read_text())
    assert meta["phantom_trained"] and meta["keypoints"]["training_data"]["phantom"]
    sizes = [p.stat().st_size for p in (REPO / "saved_models").rglob("*") if p.is_file()]
    assert sum(sizes) <= 40e6 and max(sizes) <= 20e6  # the repository's limit for one tracked file
    assert sum(p.stat().st_size for p in (REPO / "examples").rglob("*.dcm")) <= 10e6
    labels = pd.read_csv(REPO / "examples" / "labels.csv")
    assert labels.groupby("patient_id")["visit_date"].nunique().min() == 2
    assert set(labels["view"]) == {"cervical", "lumbar"}


@pytest.mark.slow
def test_score_without_a_model_uses_the_demo_and_says_so(tmp_path):
    folder = tmp_path / "in"
    for rel in ("PH0001/2016-09-26/cervical.dcm", "PH0001/2018-11-24/cervical.dcm"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "examples" / rel, folder / rel)
    result = CliRunner().invoke(main, ["score", str(folder), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "PHANTOM-TRAINED DEMO MODELS" in result.output
    out = tmp_path / "out"
    for name in OUTPUT_CSVS:
        frame = pd.read_csv(out / name)
        assert list(frame.columns)[-1] == "models"
        assert frame.empty or frame["models"].str.startswith("PHANTOM-TRAINED").all(), name
    assert "PHANTOM-TRAINED" in (out / "report.html").read_text()
    corners = pd.read_csv(out / "corners.csv")
    assert len(corners) == 24 and corners["grade"].notna().sum() >= 20  # the demo finds these spines
    assert {"grade_independent", "review_reason"} <= set(corners.columns)
    assert corners["review_reason"].notna().sum() == corners["review"].sum()  # every flag says why (blank: none)
    progression = pd.read_csv(out / "progression.csv")
    # cervical films only: no total, so neither Δ nor its probability
    assert len(progression) == 1 and progression[["delta", "p_progressed"]].isna().all(axis=None)
    # the shipped model is calibrated and says so; its grades never go down between these two visits
    meta = json.loads((REPO / "saved_models" / "phantom-demo" / "1" / "metadata.json").read_text())
    assert meta["calibration"]["fitted"] and len(meta["calibration"]["prior"]) == 4
    by_corner = corners.dropna(subset=["grade"]).sort_values("visit_date").groupby("corner")["grade"]
    assert all(g.is_monotonic_increasing for _, g in by_corner)
    # another prior changes the probabilities by Bayes' rule (from the default, the training cohort's
    # flattened), not the grading
    (tmp_path / "prior.txt").write_text("0.25, 0.25, 0.25, 0.25\n")
    result = CliRunner().invoke(main, ["score", str(folder), "--out", str(tmp_path / "uniform"), "--quiet",
                                       "--prior", str(tmp_path / "prior.txt"), "--longitudinal", "off"])
    assert result.exit_code == 0, result.output
    uniform = pd.read_csv(tmp_path / "uniform" / "corners.csv").dropna(subset=["p0"])
    cols = ["p0", "p1", "p2", "p3"]
    alone = corners.dropna(subset=["p0"])
    expected = alone[cols].to_numpy() / np.array(tempered(meta["calibration"]["prior"]))
    np.testing.assert_allclose(uniform[cols].to_numpy(), expected / expected.sum(axis=1, keepdims=True), atol=2e-3)
    bad = CliRunner().invoke(main, ["score", str(folder), "--out", str(tmp_path / "x"), "--prior", "0.5"])
    assert bad.exit_code == 2 and "--prior 0.5" in bad.output
