"""labels.csv round-trips, validation errors by line, COCO import/export, patient-level split."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tfmssass.cli import main
from tfmssass.core import anatomy
from tfmssass.io.coco import CocoError, coco_to_labels, write_coco
from tfmssass.io.labels import (
    NOT_GRADABLE,
    LabelError,
    corner_label,
    drawn_by_synth,
    load_labels,
    ng_column,
    read_labels,
    validate_labels,
    write_labels,
)
from tfmssass.io.split import split_patients


def make_table(n_patients=3, rng=None) -> pd.DataFrame:
    """A valid label table: each patient two visits, cervical and lumbar, some blank grades."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for p in range(n_patients):
        for v, date in enumerate(("2019-03-01", "2021-03-04")):
            for view in anatomy.VIEWS:
                row = {"image": f"P{p}/{date}/{view}.png", "patient_id": f"P{p}",
                       "visit_date": date, "view": view, "image_height": 2000, "image_width": 1600,
                       "reader": "AB"}
                for i, level in enumerate(anatomy.LEVELS[view]):
                    x, y = 800 + 10 * i, 300 + 200 * i
                    row.update(dict(zip(anatomy.keypoint_columns(level), (x - 60, y, x + 0.25, y + 3.5))))
                for corner in anatomy.CORNERS[view]:
                    row[corner] = int(rng.choice([0, 0, 1, 2]))
                row[anatomy.CORNERS[view][3]] = None  # not gradable
                rows.append(row)
    return pd.DataFrame(rows)


def test_round_trip_keeps_blanks_extras_and_values(tmp_path):
    table = make_table()
    path = tmp_path / "labels.csv"
    write_labels(table, path)
    back, warnings = load_labels(path, check_images=False)
    assert warnings == []
    assert list(back.columns[:4]) == ["image", "patient_id", "visit_date", "view"]
    assert "reader" in back.columns and (back["reader"] == "AB").all()  # unknown columns kept
    for corner in anatomy.ALL_CORNERS:
        assert str(back[corner].dtype) == "Int64"
    # a blank grade stays blank (never 0); the other view's columns are blank too
    cervical = back[back["view"] == "cervical"]
    assert cervical[anatomy.CORNERS["cervical"][3]].isna().all()
    assert cervical[list(anatomy.CORNERS["lumbar"])].isna().all().all()
    assert (back[anatomy.CORNERS["cervical"][0]].fillna(-1) == table[anatomy.CORNERS["cervical"][0]].fillna(-1)).all()
    np.testing.assert_allclose(back["C2-C3_ax"].dropna(), table["C2-C3_ax"].dropna())
    write_labels(back, tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text() == path.read_text()


def test_ng_is_kept_apart_from_blank_and_never_counts_as_a_grade(tmp_path):
    """A corner cell holds 0-3, NG (a reader's "not gradable") or blank (not read): the file keeps the
    three apart through every read and write, and NG is missing in any sum, never a 0."""
    table = make_table(1).astype({"C2_inf": object, "L5_sup": object})
    table.loc[0, "C2_inf"], table.loc[1, "L5_sup"] = "NG", "ng"  # any case on the way in
    path = tmp_path / "labels.csv"
    write_labels(table, path)
    assert path.read_text().count(",NG,") + path.read_text().count(",NG\n") == 2
    back, _ = load_labels(path, check_images=False)
    assert pd.isna(back.loc[0, "C2_inf"]) and back.loc[0, ng_column("C2_inf")]
    assert corner_label(back.loc[0], "C2_inf") == NOT_GRADABLE
    blank = anatomy.CORNERS["cervical"][3]
    assert corner_label(back.loc[0], blank) is None and not back.loc[0, ng_column(blank)]  # blank stays blank
    assert corner_label(back.loc[0], "C3_sup") == int(table.loc[0, "C3_sup"])
    graded_before = int(pd.to_numeric(table["C2_inf"], errors="coerce").iloc[1:].sum())
    assert int(back["C2_inf"].sum()) == graded_before  # NG adds nothing to a sum
    write_labels(back, tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text() == path.read_text()
    result = CliRunner().invoke(main, ["labels", "check", str(path), "--no-images"])
    assert result.exit_code == 0 and "2 not gradable (NG)" in result.output
    bad = tmp_path / "bad.csv"
    text = path.read_text().replace(",NG,", ",NA,", 1)
    bad.write_text(text)
    report = validate_labels(read_labels(bad), check_images=False)  # a cell neither a grade nor NG is named
    assert any("is not an integer 0-3 or NG" in e for e in report.errors)


def test_validation_names_every_problem_by_line(tmp_path):
    table = make_table(2)
    table.loc[0, "view"] = "thoracic"
    table.loc[1, "L1_sup"] = 5
    table.loc[2, "C3_inf"] = 1.5
    table.loc[3, "image"] = table.loc[4, "image"]
    table.loc[5, "T12-L1_cx"] = 5000  # outside a 1600-wide image
    table.loc[6, "visit_date"] = "01/03/2019"
    table.loc[7, ["L4_inf", "L5_sup"]] = [3, 1]  # half a bridge: a warning
    path = tmp_path / "labels.csv"
    table.to_csv(path, index=False)
    report = validate_labels(read_labels(path), check_images=False)
    text = "\n".join(report.errors)
    assert "line 2: unknown view 'thoracic'" in text
    assert "line 3: grade L1_sup=5 is not an integer 0-3" in text
    assert "line 4: grade C3_inf=1.5 is not an integer 0-3" in text
    assert "line 6: duplicate image" in text and "first on line 5" in text
    assert "line 7: T12-L1 centre point (5000.0" in text and "outside the 1600x2000 image" in text
    assert "line 8: visit_date '01/03/2019' is not YYYY-MM-DD" in text
    assert len(report.errors) == 6
    assert report.warnings == [
        "line 9: L4-L5 is bridged on one corner only (L4_inf=3, L5_sup=1); a bridge grades both corners 3"
    ]
    with pytest.raises(LabelError) as info:
        load_labels(path, check_images=False)
    assert str(path) in str(info.value) and "6 problem(s)" in str(info.value)


def test_missing_image_files_are_errors(tmp_path):
    table = make_table(1).drop(columns=["image_height", "image_width"])
    write_labels(table, tmp_path / "labels.csv")
    report = validate_labels(read_labels(tmp_path / "labels.csv"), check_images=True)
    assert len(report.failed) == len(report.unreadable) == len(table) and not report.errors
    assert all("no such file" in e and ".png" in e for e in report.failed)


def test_cli_labels_check_exit_codes(tmp_path):
    table = make_table(1)
    write_labels(table, tmp_path / "ok.csv")
    result = CliRunner().invoke(main, ["labels", "check", str(tmp_path / "ok.csv"), "--no-images"])
    assert result.exit_code == 0 and "0 errors" in result.output
    table.loc[0, "C2_inf"] = 7
    write_labels(table, tmp_path / "bad.csv")
    result = CliRunner().invoke(main, ["labels", "check", str(tmp_path / "bad.csv"), "--no-images"])
    assert result.exit_code == 1 and "C2_inf=7" in result.output and "Traceback" not in result.output


def test_coco_round_trip(tmp_path):
    table = make_table(2)
    write_labels(table, tmp_path / "labels.csv")
    frame = read_labels(tmp_path / "labels.csv")
    write_coco(frame, tmp_path / "coco.json")
    coco = json.loads((tmp_path / "coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["cervical_spine", "lumbar_spine"]
    assert coco["categories"][0]["keypoints"][:2] == ["C2-C3_c", "C2-C3_a"]
    ann = coco["annotations"][0]
    assert len(ann["keypoints"]) == 3 * 12 and ann["num_keypoints"] == 12
    assert anatomy.CORNERS["cervical"][3] not in ann["attributes"]  # blank grade is not exported as 0

    table = table.astype({anatomy.CORNERS["cervical"][0]: object})
    table.loc[0, anatomy.CORNERS["cervical"][0]] = NOT_GRADABLE  # NG travels as an attribute value
    write_labels(table, tmp_path / "labels.csv")
    frame = read_labels(tmp_path / "labels.csv")
    write_coco(frame, tmp_path / "coco.json")
    assert json.loads((tmp_path / "coco.json").read_text())["annotations"][0]["attributes"][
        anatomy.CORNERS["cervical"][0]] == "NG"
    back = coco_to_labels(tmp_path / "coco.json", labels_dir=tmp_path)
    assert corner_label(back.loc[0], anatomy.CORNERS["cervical"][0]) == NOT_GRADABLE
    for col in ("image", "patient_id", "visit_date", "view"):
        assert list(back[col]) == list(frame[col])
    for col in anatomy.ALL_KEYPOINT_COLUMNS + anatomy.ALL_CORNERS:
        a = pd.to_numeric(frame[col]).astype(float).fillna(-1).to_numpy()
        b = pd.to_numeric(back[col]).astype(float).fillna(-1).to_numpy()
        np.testing.assert_allclose(a, b, atol=0.01, err_msg=col)


def test_coco_from_an_annotation_tool(tmp_path):
    """A CVAT-style export: points not placed have v=0, patient/date only in the folder names."""
    names = list(anatomy.point_names("lumbar"))
    keypoints = []
    for i in range(12):
        keypoints += [100.0 + i, 200.0 + 10 * i, 2] if i != 5 else [0, 0, 0]
    coco = {
        "images": [{"id": 7, "file_name": "images/PX9/2020-05-06/lat.png", "width": 900, "height": 1200}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "keypoints": keypoints,
                         "attributes": {"L1_sup": 2, "L5_sup": "", "occluded": False}}],
        "categories": [{"id": 3, "name": "spine", "keypoints": names, "skeleton": []}],
    }
    (tmp_path / "export.json").write_text(json.dumps(coco))
    frame = coco_to_labels(tmp_path / "export.json", labels_dir=tmp_path)
    row = frame.iloc[0]
    assert row["image"] == "images/PX9/2020-05-06/lat.png"
    assert (row["patient_id"], row["visit_date"], row["view"]) == ("PX9", "2020-05-06", "lumbar")
    assert row["L1_sup"] == 2 and pd.isna(row["L5_sup"]) and pd.isna(row["T12_inf"])
    hidden = names[5]  # L1-L2_a, not placed: blank, not (0, 0)
    level = hidden[:-2]
    assert pd.isna(row[f"{level}_ax"]) and pd.isna(row[f"{level}_ay"])
    assert row["T12-L1_cx"] == 100.0

    coco["categories"][0]["keypoints"][0] = "disk1_centre"
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    with pytest.raises(CocoError, match="not understood: disk1_centre"):
        coco_to_labels(tmp_path / "bad.json")


def test_split_is_patient_level_stratified_and_seeded():
    rng = np.random.default_rng(1)
    table = make_table(60, rng)
    severe = [f"P{p}" for p in range(0, 60, 6)]  # 10 patients with a bridge
    for corner in ("L4_inf", "L5_sup"):
        table.loc[table["patient_id"].isin(severe) & (table["view"] == "lumbar"), corner] = 3
    split = split_patients(table, 0.2, seed=3)
    assert split["patient_id"].is_unique  # one row, one side per patient
    assert set(split["split"]) == {"train", "val"}
    assert (split["split"] == "val").sum() == 12  # 20% of 60
    val_severe = split[(split["max_grade"] == 3) & (split["split"] == "val")]
    assert len(val_severe) == 2  # 20% of the 10 bridged patients, not left to chance
    assert split.equals(split_patients(table, 0.2, seed=3))
    assert not split["split"].equals(split_patients(table, 0.2, seed=4)["split"])
    # the radiographs of one patient all land on the patient's side
    for n in (2, 3, 4):  # small sets still get one validation patient
        assert (split_patients(make_table(n), 0.2, seed=0)["split"] == "val").sum() == 1
    sides = table.merge(split, on="patient_id").groupby("patient_id")["split"].nunique()
    assert (sides == 1).all()


def test_control_characters_and_blank_images_are_errors_by_line(tmp_path):
    table = make_table(1)
    table.loc[0, "patient_id"] = "P0\x00"  # would be a new patient that prints like P0
    table.loc[1, "visit_date"] = "2019-03-01\x1b"
    table.loc[2, "image"] = None
    write_labels(table, tmp_path / "labels.csv")
    report = validate_labels(read_labels(tmp_path / "labels.csv"), check_images=False)
    assert report.errors == ["line 2: patient_id has a control character ('\\x00')",
                             "line 3: visit_date has a control character ('\\x1b')",
                             "line 4: image is blank"]


def test_prepare_refuses_what_labels_check_fails(phantoms, tmp_path):
    # no image sizes in the file: only the images tell that a point lies outside
    table = pd.read_csv(phantoms / "labels.csv").drop(columns=["image_height", "image_width"])
    table.loc[3, f"{anatomy.LEVELS[table.loc[3, 'view']][0]}_cx"] = 99_999
    table["image"] = [str(phantoms / image) for image in table["image"]]
    path = tmp_path / "outside.csv"
    table.to_csv(path, index=False)
    check = CliRunner().invoke(main, ["labels", "check", str(path)])
    assert check.exit_code == 1 and "line 5:" in check.output and "is outside the" in check.output
    assert "1 errors" in check.output
    prepared = CliRunner().invoke(main, ["prepare", "--labels", str(path), "--out", str(tmp_path / "d")])
    assert prepared.exit_code == check.exit_code
    assert "line 5:" in prepared.output and "is outside the" in prepared.output
    assert not (tmp_path / "d").exists() or not list((tmp_path / "d").rglob("*.tfrecord*"))


def test_labels_merged_from_phantom_sets_are_still_phantoms_and_one_real_film_makes_them_not(tmp_path):
    """A model must say it is phantom-trained: label files merged from two synth sets (their
    synth.json in the sets' folders, not beside the merged file) count as phantoms; a film from
    anywhere else makes the table not all phantoms."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "synth.json").write_text("{}")
    (tmp_path / "archive").mkdir()

    def table(*images):
        frame = pd.DataFrame({"image": list(images)})
        frame.attrs["source"] = str(tmp_path / "labels.csv")
        return frame

    assert drawn_by_synth(table("a/PH0001/2014-06-13/cervical.dcm", "b/PH0001/2010-01-01/lumbar.dcm"))
    assert drawn_by_synth(table(str(tmp_path / "b" / "PH0002" / "x.dcm")))  # absolute paths too
    assert not drawn_by_synth(table("a/PH0001/2014-06-13/cervical.dcm", "archive/P17/2019-01-01/lumbar.dcm"))
    assert not drawn_by_synth(table())
    beside = pd.DataFrame({"image": ["PH0001/2014-06-13/cervical.dcm"]})
    beside.attrs["source"] = str(tmp_path / "a" / "labels.csv")  # synth's own labels.csv
    assert drawn_by_synth(beside)
