"""``tfmssass synth``: a phantom set on disk (DICOM files, labels.csv, negatives.csv, synth.json), made
in parallel and resumable; the same settings give byte-identical files in any order or process."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from tfmssass import __version__
from tfmssass.core import anatomy
from tfmssass.core.atomic import write_text
from tfmssass.core.system import usable_cpus
from tfmssass.synth import DEFAULT_STYLE, STYLES, radiograph
from tfmssass.synth.others import OTHER_KINDS, OtherCase, other_case, plan_other, write_other
from tfmssass.synth.phantoms import DIFFICULTIES, PHANTOM_NOTE, RENDERING, Case, make_case, plan_case, write_case

#: The list of negative films beside labels.csv: image, patient_id, visit_date, kind, ...
NEGATIVES = "negatives.csv"


def _row(case) -> dict:
    """A case's label row for a file that already exists: from its plan, except on a geometric cervical
    film with the shoulders over the spine, whose NG corners only its pixels decide."""
    if isinstance(case, OtherCase):
        return plan_other(case)[0]
    if case.style == "radiograph":
        return radiograph.plan_film(case).row
    plan = plan_case(case)
    if case.view == "cervical" and plan.acq.overlap:  # which corners the shoulders hide takes the pixels
        return make_case(case)[1]
    return plan.row


def _work(args) -> dict:
    case, out, resume = args
    if resume:  # a file that exists is complete (atomic writes): only its row is needed
        row = _row(case)
        rel = case.relative_path(row["visit_date"])
        if (out / rel).is_file():
            return {"image": rel, **row}
    if isinstance(case, OtherCase):
        return write_other(case, out)
    return radiograph.write_film(case, out) if case.style == "radiograph" else write_case(case, out)


def synthesize(out: str | Path, patients: int, visits: int, seed: int = 0,
               difficulty: str = "realistic", views=anatomy.VIEWS, workers: int | None = None,
               resume: bool = False, progress: bool = True, unusual: float = 0.0,
               negatives: int = 0, style: str = DEFAULT_STYLE) -> pd.DataFrame:
    """Write a phantom set under ``out`` and return its labels. ``unusual``: each lateral film's chance
    of being cut, plated, flexed, extended or transitional (:mod:`.variants`); ``negatives``: films of
    each kind that is not graded (:mod:`.others`), listed in ``negatives.csv``; ``style``: one of
    :data:`STYLES`."""
    from tqdm import tqdm

    from tfmssass.io.labels import SYNTH_MANIFEST, empty_labels, write_labels

    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r} (expected {', '.join(DIFFICULTIES)})")
    if patients < 1 or visits < 1:
        raise ValueError("patients and visits must be at least 1")
    if not 0 <= unusual <= 1 or negatives < 0:
        raise ValueError("unusual must be within 0-1 and negatives at least 0")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r} (expected {', '.join(STYLES)})")
    out = Path(out)
    manifest = {"generator": "tfmssass synth", "version": __version__, "rendering": RENDERING, "seed": seed,
                "patients": patients, "visits": visits, "difficulty": difficulty,
                "views": list(views), "note": PHANTOM_NOTE,
                "difficulty_settings": asdict(DIFFICULTIES[difficulty])}
    if unusual or negatives:  # absent otherwise, so sets made before them still resume
        manifest.update(unusual=unusual, negatives=negatives)
    if style != "geometric":  # likewise
        manifest.update(style=style, rendering=radiograph.RENDERING)
    manifest = json.loads(json.dumps(manifest))  # as it reads back: lists, not tuples
    manifest_path = out / SYNTH_MANIFEST
    if resume and manifest_path.is_file():
        previous = json.loads(manifest_path.read_text())
        if previous != manifest:
            raise ValueError(f"{manifest_path}: this folder was made with other settings; "
                             "use a new folder or the same settings to resume")
    out.mkdir(parents=True, exist_ok=True)
    write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    cases = [Case(seed, p, v, view, difficulty, unusual, style)
             for p in range(patients) for v in range(visits) for view in views]
    cases += [other_case(seed, i, kind, difficulty, style) for i in range(negatives) for kind in OTHER_KINDS]
    jobs = [(case, out, resume) for case in cases]
    workers = workers or min(len(jobs), usable_cpus())
    bar = tqdm(total=len(jobs), desc="phantoms", unit="radiograph", disable=not progress)
    rows = []
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            for row in pool.imap(_work, jobs):  # imap keeps case order: labels are deterministic
                rows.append(row)
                bar.update()
    else:
        for job in jobs:
            rows.append(_work(job))
            bar.update()
    bar.close()
    lateral = [row for row in rows if "kind" not in row]
    frame = pd.concat([empty_labels(0), pd.DataFrame(lateral)], ignore_index=True)
    write_labels(frame, out / "labels.csv")
    if negatives:
        write_text(out / NEGATIVES, pd.DataFrame([row for row in rows if "kind" in row]).to_csv(index=False))
    return frame
