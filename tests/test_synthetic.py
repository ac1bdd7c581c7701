"""Spine phantoms: deterministic, consistent labels, and images whose anatomy matches the labels."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tfmssass.cli import main
from tfmssass.core import anatomy
from tfmssass.io import read_radiograph
from tfmssass.io.labels import NOT_GRADABLE, load_labels, read_labels
from tfmssass.synth.phantoms import Case, make_case, patient_course, plan_case
from tfmssass.synth.sets import synthesize


@pytest.fixture(scope="module")
def generated(clean_phantoms):
    """The geometric-style set (conftest: 3 patients, 2 visits, seed 11) and its label table: this module
    checks that style's drawing (test_radiograph_phantoms the radiograph style's)."""
    return clean_phantoms, read_labels(clean_phantoms / "labels.csv")


def digest(folder):
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_layout_and_labels_validate(generated):
    out, frame = generated
    assert len(frame) == 3 * 2 * 2
    assert (out / "labels.csv").is_file() and (out / "synth.json").is_file()
    labels, warnings = load_labels(out / "labels.csv", check_images=True)  # sizes from the DICOMs
    assert warnings == []  # every bridge is on both corners of its disk
    for _, row in labels.iterrows():
        parts = row["image"].split("/")
        assert parts == [row["patient_id"], row["visit_date"], f"{row['view']}.dcm"]


def test_same_seed_is_byte_identical_whatever_the_workers(generated, tmp_path):
    out, _ = generated
    again = tmp_path / "again"
    synthesize(again, patients=3, visits=2, seed=11, workers=1, progress=False, style="geometric")
    assert digest(again) == digest(out)
    other = tmp_path / "other"
    synthesize(other, patients=1, visits=1, seed=12, workers=1, progress=False, views=("lumbar",), style="geometric")
    assert digest(other)["labels.csv"] != digest(out)["labels.csv"]


def test_resume_skips_existing_files_and_refuses_other_settings(generated, tmp_path):
    out, _ = generated
    part = tmp_path / "part"
    synthesize(part, patients=3, visits=2, seed=11, workers=1, progress=False, style="geometric")
    victim = next(part.rglob("lumbar.dcm"))
    victim.unlink()
    kept = next(part.rglob("cervical.dcm"))
    before = kept.stat().st_mtime_ns
    synthesize(part, patients=3, visits=2, seed=11, workers=1, progress=False, resume=True, style="geometric")
    assert kept.stat().st_mtime_ns == before  # not rewritten
    assert digest(part) == digest(out)  # and the missing one is back, identical
    with pytest.raises(ValueError, match="other settings"):
        synthesize(part, patients=3, visits=2, seed=99, workers=1, progress=False, resume=True, style="geometric")


def test_a_resumed_set_keeps_the_corners_the_shoulders_hide(tmp_path):
    """A kept file's row is planned again on resume; on a film with the shoulders over the spine the NG
    corners come from its pixels, so they must not be lost."""
    from tfmssass.synth.sets import _row

    case = next(Case(7, p, 0, "cervical", "realistic") for p in range(30)
                if plan_case(Case(7, p, 0, "cervical", "realistic")).acq.overlap
                and NOT_GRADABLE in make_case(Case(7, p, 0, "cervical", "realistic"))[1].values())
    assert _row(case) == make_case(case)[1]
    assert NOT_GRADABLE not in plan_case(case).row.values()  # what resume wrote before: the NG corners lost


def test_grades_are_cohort_like_monotone_and_bridged_in_pairs():
    counts = np.zeros(4)
    for patient in range(300):
        course = patient_course(5, patient, 3)
        for before, after in zip(course, course[1:]):
            assert all(after[c] >= before[c] for c in anatomy.ALL_CORNERS)
        for grades in course:
            for level in anatomy.ALL_LEVELS:
                upper, lower = (grades[c] for c in anatomy.level_corners(level))
                assert (upper == 3) == (lower == 3)
            counts += np.bincount(list(grades.values()), minlength=4)
    share = counts / counts.sum()
    assert share[0] > 0.5  # mostly normal, like a cohort
    assert share[0] > share[1] > share[2]
    assert 0.02 < share[3] < share[1]  # bridges exist but are not common
    assert share[2] > 0.03  # enough syndesmophytes to learn from


def test_labels_monotone_between_visits_and_points_inside(generated):
    out, _ = generated
    labels, _ = load_labels(out / "labels.csv", check_images=False)
    for (_, view), group in labels.groupby(["patient_id", "view"]):
        group = group.sort_values("visit_date")
        corners = list(anatomy.CORNERS[view])
        grades = group[corners].to_numpy(dtype=float)
        diffs = np.diff(grades, axis=0)
        assert np.all(np.nan_to_num(diffs, nan=0) >= 0)
    for _, row in labels.iterrows():
        for col in anatomy.view_keypoint_columns(row["view"]):
            limit = row["image_width"] if col.endswith("x") else row["image_height"]
            assert 0 <= row[col] < limit


def test_dicom_reads_back_to_the_rendered_image(generated):
    """MONOCHROME1 and MONOCHROME2 files alike show bone bright after the reader's pipeline."""
    out, frame = generated
    seen = set()
    for _, row in frame.iterrows():
        if row["photometric"] in seen:
            continue
        seen.add(row["photometric"])
        case = Case(11, int(row["patient_id"][2:]) - 1, int(row["visit_date"] != frame[
            frame["patient_id"] == row["patient_id"]]["visit_date"].min()), row["view"], "realistic")
        display, _, _ = make_case(case)
        rad = read_radiograph(out / row["image"])
        assert rad.meta["spacing_calibrated"] is True
        assert rad.meta["pixel_spacing_mm"][0] == pytest.approx(row["pixel_spacing_mm"], abs=1e-4)
        # the window maps the raw range back; quantisation and window clipping stay small
        assert np.abs(rad.image - display).mean() < 0.01


def _profile(image, centre, direction, offsets):
    pts = centre[None] + offsets[:, None] * direction[None]
    xs, ys = np.clip(pts[:, 0].round().astype(int), 0, image.shape[1] - 1), np.clip(
        pts[:, 1].round().astype(int), 0, image.shape[0] - 1)
    return image[ys, xs]


@pytest.mark.parametrize("view", anatomy.VIEWS)
def test_labelled_points_sit_on_the_anatomy(view):
    """The disk centre lies in a dark gap between two bright bodies; bone fills the anterior side."""
    for patient in range(4):
        image, row, _ = make_case(Case(21, patient, 0, view, "easy"))
        image = image.astype(np.float64)
        levels = anatomy.LEVELS[view]
        centres = np.array([[row[f"{lv}_cx"], row[f"{lv}_cy"]] for lv in levels])
        for i, level in enumerate(levels):
            c = centres[i]
            a = np.array([row[f"{level}_ax"], row[f"{level}_ay"]])
            depth = np.linalg.norm(a - c)
            axis = (centres[min(i + 1, 5)] - centres[max(i - 1, 0)])
            axis /= np.linalg.norm(axis)
            gap = _profile(image, c, axis, np.linspace(-0.05, 0.05, 5) * depth).mean()
            above = _profile(image, c, axis, -np.linspace(0.4, 0.7, 5) * depth).mean()
            below = _profile(image, c, axis, np.linspace(0.4, 0.7, 5) * depth).mean()
            assert gap < min(above, below) - 0.02, (view, patient, level)
            if max(row[c] or 0 for c in anatomy.level_corners(level)) < 2:
                # no spur or bridge: the anterior disk margin is darker than the body beside it
                gap_front = _profile(image, a, axis, np.linspace(-0.03, 0.03, 3) * depth).mean()
                body_front = _profile(image, a - 0.25 * (a - c), axis, -np.linspace(0.35, 0.6, 4) * depth).mean()
                assert gap_front < body_front, (view, patient, level)


def test_bridge_is_visible_across_the_anterior_disk_margin():
    """Grade 3 must show bone across the disk at the anterior point; grade 0-2 must not."""
    found = {True: 0, False: 0}
    for patient in range(40):
        image, row, _ = make_case(Case(31, patient, 0, "lumbar", "easy"))
        centres = np.array([[row[f"{lv}_cx"], row[f"{lv}_cy"]] for lv in anatomy.LEVELS["lumbar"]])
        for i, level in enumerate(anatomy.LEVELS["lumbar"][:-1]):
            c, a = centres[i], np.array([row[f"{level}_ax"], row[f"{level}_ay"]])
            axis = centres[i + 1] - centres[max(i - 1, 0)]
            axis /= np.linalg.norm(axis)
            outward = (a - c) / np.linalg.norm(a - c)
            # brightest point across the anterior margin (just in front of the anterior point)
            ahead = [_profile(image, a + outward * k, axis, np.linspace(-1, 1, 5)).min()
                     for k in np.linspace(0, 12, 7)]
            bridged = row[anatomy.level_corners(level)[0]] == 3
            found[bridged] += 1
            if bridged:
                assert max(ahead) > 0.55, (patient, level)
        if found[True] >= 3:
            break
    assert found[True] >= 3 and found[False] > 10


def test_cli_synth(tmp_path):
    result = CliRunner().invoke(main, ["synth", str(tmp_path / "s"), "--patients", "1", "--visits", "1",
                                       "--view", "cervical", "--difficulty", "hard", "--workers", "1"])
    assert result.exit_code == 0, result.output
    labels = pd.read_csv(tmp_path / "s" / "labels.csv")
    assert len(labels) == 1 and labels.loc[0, "difficulty"] == "hard"


def test_corners_labelled_ng_are_the_ones_the_shoulders_wash_out():
    """On cervical films with the shoulders raised over the spine, a level whose two corners are NG shows
    less local contrast than any level whose corners are labelled with grades: the label follows the
    drawn density, so a model can learn it from the film and a reader would agree."""
    import cv2

    hidden, seen = [], []
    for patient in range(30):
        case = Case(7, patient, 0, "cervical", "realistic")
        if not plan_case(case).acq.overlap:
            continue
        image, row, acq = make_case(case)
        smooth = cv2.GaussianBlur(image, (0, 0), 2)
        r = int(9 / acq.spacing)  # 9 mm around the anterior disk point
        for level in anatomy.LEVELS["cervical"]:
            _, _, ax, ay = (row[c] for c in anatomy.keypoint_columns(level))
            labels = [row[c] for c in anatomy.level_corners(level)]
            if ax is None:
                continue
            window = smooth[max(int(ay) - r, 0):int(ay) + r, max(int(ax) - r, 0):int(ax) + r]
            contrast = float(np.percentile(window, 95) - np.percentile(window, 5))
            if labels == [NOT_GRADABLE] * 2:
                hidden.append(contrast)
            elif NOT_GRADABLE not in labels:
                seen.append(contrast)
    assert len(hidden) >= 3 and len(seen) >= 30
    assert max(hidden) < min(seen), (sorted(hidden), sorted(seen)[:5])
