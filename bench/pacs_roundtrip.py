"""What scoring through a PACS costs: the phantoms scored as a folder, then uploaded to a local Orthanc
(Debian ``orthanc`` + ``orthanc-dicomweb``, started on a free loopback port with its storage in a
temporary folder) and scored through DICOMweb, step by step, with the DICOM objects stored back.

    python bench/pacs_roundtrip.py --phantoms bench_work/pacs17   # drawn there first if missing

Prints one table: seconds per step and per radiograph, the objects written and their checks.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from model_args import open_model, parser, print_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' Orthanc and dciodvfy helpers

from dicom_reports import validation_errors  # noqa: E402
from orthanc import PASSWORD, USER, Orthanc  # noqa: E402


def main():
    p = parser(__doc__, "Phantom folder (drawn with --patients patients, 2 visits, if it has no labels.csv).")
    p.add_argument("--patients", type=int, default=10)
    args = p.parse_args()
    from tfmssass.pacs.dicomweb import Pacs, Selection
    from tfmssass.pacs.objects import write_dicom_objects
    from tfmssass.pacs.pull import CACHE, fetch, store
    from tfmssass.scoring.folder import ScoredFolder
    from tfmssass.scoring.run import run_scoring
    from tfmssass.scoring.settings import Settings
    from tfmssass.synth.sets import synthesize

    phantoms = Path(args.phantoms)
    if not (phantoms / "labels.csv").is_file():
        synthesize(phantoms, patients=args.patients, visits=2, seed=17, workers=2, progress=False)
    films = sorted(phantoms.rglob("*.dcm"))
    predictor, text = open_model(args)
    settings = Settings(models=text, phantom=True)
    rows = []

    def step(name, function):
        start = time.perf_counter()
        result = function()
        seconds = time.perf_counter() - start
        rows.append([name, f"{seconds:.1f}", f"{seconds / len(films):.3f}"])
        return result

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        step("score the folder (baseline)", lambda: run_scoring(phantoms, tmp / "folder", predictor, settings,
                                                                 progress=False))
        written = step("write SR and presentation states", lambda: write_dicom_objects(tmp / "folder", settings))
        orthanc = Orthanc(tmp / "orthanc").start()
        try:
            step("upload to Orthanc (its REST API; not ours)", lambda: orthanc.upload(films))
            pacs = Pacs(orthanc.dicomweb, (USER, PASSWORD))
            out = tmp / "pacs"
            (out / CACHE).mkdir(parents=True)
            selection = Selection(patients=tuple(sorted({f.parts[-3] for f in films})))
            _, notes = step("find and fetch (QIDO-RS, WADO-RS)", lambda: fetch(pacs, selection, out / CACHE, False))
            step("score the fetched films", lambda: run_scoring(out / CACHE, out, predictor, settings, progress=False,
                                                                notes=notes))
            step("write SR and presentation states", lambda: write_dicom_objects(out, settings))
            sent = step("store back (STOW-RS)", lambda: store(pacs, ScoredFolder(out), False))
        finally:
            orthanc.stop()
        errors = sum(bool(validation_errors(path)) for path in (out / "dicom").glob("*.dcm"))
    print(f"{len(films)} radiographs; {len(written.rows)} objects from the folder, {sent} stored from the PACS run; "
          f"objects with dciodvfy errors: {errors}; model: {text}; the first scoring includes the model's warm-up")
    print_table(["step", "seconds", "per radiograph"], rows)


if __name__ == "__main__":
    main()
