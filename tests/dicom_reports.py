"""Reading tfmssass's DICOM objects back the way others would: highdicom for the SR's measurement
groups, dcmtk's ``dsrdump`` as an independent parser, dicom3tools' ``dciodvfy`` as the validator;
and comparing what they say with the scoring tables."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pandas as pd
import pydicom

from tfmssass.pacs import codes as local
from tfmssass.scoring.record_maker import OFF_FILM_REASON

DSRDUMP, DCIODVFY, DCMP2PGM = shutil.which("dsrdump"), shutil.which("dciodvfy"), shutil.which("dcmp2pgm")
MISSING_TOOLS = None if DSRDUMP and DCIODVFY and DCMP2PGM else "dcmtk or dicom3tools (dciodvfy) not installed"


def validation_errors(path) -> list[str]:
    """dciodvfy's error lines for one object (its warnings are allowed)."""
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def _named(items, concept) -> list:
    return [i for i in items if i.name.value == concept.value and i.name.scheme_designator == concept.scheme_designator]


#: How a report says a corner has no grade: the code's value → the words the tests use.
MISSING = {local.NOT_GRADED.value: "not graded", local.NOT_GRADABLE.value: "not gradable",
           local.NOT_ON_FILM.value: "not on the film"}


def read_report(path) -> dict:
    """The SR through highdicom: {"corners": {(sop uid, corner): {grade, review, imputed}}, "totals": {...},
    "note": text}. A grade is an int, "not graded", "not gradable" or "not on the film"; a total with no
    value is None."""
    sr = hd.sr.srread(path)
    corners, totals = {}, {}
    for group in sr.content.get_image_measurement_groups():
        finding = group.finding_type.value
        if finding == local.CORNER_FINDING.value:
            sop = group.source_images[0].referenced_sop_instance_uid
            evaluations = group.get_qualitative_evaluations()
            grade = _named(evaluations, local.GRADE)[0].value.value
            imputed = _named(evaluations, local.IMPUTED)
            corners[(sop, group.tracking_identifier)] = {
                "grade": MISSING.get(grade) or int(grade[1:]),
                "review": _named(evaluations, local.NEEDS_REVIEW)[0].value.value == local.YES.value,
                "imputed": bool(imputed) and imputed[0].value.value == local.YES.value}
        elif finding == local.VISIT_TOTALS.value:
            for measurement in group.get_measurements():
                totals[measurement.name.value] = measurement.value
            for evaluation in group.get_qualitative_evaluations():
                assert evaluation.value.value == local.NOT_COMPUTED.value
                totals[evaluation.name.value] = None
    root = sr.ContentSequence
    note = [item.ContentSequence[0].TextValue for item in root
            if item.ConceptNameCodeSequence[0].CodeValue == "C0034375"]
    return {"corners": corners, "totals": totals, "note": note[0] if note else None, "dataset": sr}


def dump_report(path) -> dict:
    """The SR through dcmtk's dsrdump (not highdicom): corner grades in order and the numeric totals."""
    text = subprocess.run([DSRDUMP, str(path)], capture_output=True, text=True, timeout=60, check=True).stdout
    grades = re.findall(r'"mSASSS corner grade"\)=\((\w+),99TFMSASSS', text)
    totals = {}
    for name in ("mSASSS cervical subtotal", "mSASSS lumbar subtotal", "mSASSS"):
        number = re.search(rf'NUM:\(,,"{name}"\)="([\d.]+)"', text)
        missing = re.search(rf'CODE:\(,,"{name}"\)=\(NOTCOMPUTED,99TFMSASSS', text)
        assert bool(number) != bool(missing), name
        totals[name] = float(number.group(1)) if number else None
    return {"grades": grades, "totals": totals, "text": text}


def sop_uids(root: Path, files) -> dict[str, str]:
    """{SOP instance UID: file as the outputs name it} of the scored source files."""
    return {str(pydicom.dcmread(root / f, stop_before_pixels=True).SOPInstanceUID): f for f in files}


def check_reports_match_tables(out: Path, root: Path) -> list[dict]:
    """Every SR of ``out/dicom`` says what corners.csv and visits.csv say; returns the reports read."""
    corners = pd.read_csv(out / "corners.csv")
    visits = pd.read_csv(out / "visits.csv").set_index(["patient_id", "visit_date"])
    images = pd.read_csv(out / "images.csv")
    used = images[images["status"] == "scored"]
    by_sop = sop_uids(root, used["file"])
    index = pd.read_csv(out / "dicom" / "index.csv")
    reports = []
    for row in index[index["kind"] == "structured report"].itertuples():
        report = read_report(out / row.path)
        visit = visits.loc[(row.patient_id, row.visit_date)]
        expected = used[(used.patient_id == row.patient_id) & (used.visit_date == row.visit_date)]
        mine = corners[corners["file"].isin(expected["file"])]
        assert len(report["corners"]) == len(mine) == 12 * len(expected)
        for (sop, corner), said in report["corners"].items():
            line = mine[(mine["file"] == by_sop[sop]) & (mine["corner"] == corner)].iloc[0]
            if pd.isna(line["grade"]):  # the reason it has none, as corners.csv tells it
                assert said["grade"] == ("not gradable" if line["gradable"] == "NG" else
                                         "not on the film" if line["review_reason"] == OFF_FILM_REASON else "not graded")
                assert said["imputed"] == (not math.isnan(visit[line["view"]]))
            else:
                assert said["grade"] == int(line["grade"]) and not said["imputed"]
            assert said["review"] == bool(line["review"])
        for code, column in (("CERVICAL", "cervical"), ("LUMBAR", "lumbar"), ("TOTAL", "msasss")):
            value = report["totals"][code]
            assert (value is None) if pd.isna(visit[column]) else value == visit[column], (row.path, column)
        dumped = dump_report(out / row.path)
        assert len(dumped["grades"]) == len(mine)
        graded = mine["grade"].dropna().astype(int)
        assert sorted(g for g in dumped["grades"] if g not in MISSING) == sorted(f"G{g}" for g in graded)
        for name, column in (("mSASSS cervical subtotal", "cervical"), ("mSASSS lumbar subtotal", "lumbar"),
                             ("mSASSS", "msasss")):
            value = dumped["totals"][name]
            assert (value is None) if pd.isna(visit[column]) else value == visit[column]
        reports.append(report)
    return reports


def rendered(image, presentation_state, folder: Path):
    """The grey picture a viewer shows of ``image`` under ``presentation_state`` (dcmtk's dcmp2pgm
    applies the state's modality, VOI and presentation LUTs; it does not draw the annotations)."""
    import cv2

    out = folder / "rendered.pgm"
    subprocess.run([DCMP2PGM, "-q", "-p", str(presentation_state), str(image), str(out)], check=True, timeout=120)
    return cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
