"""Films cut off at a level: are the levels on the film read, and is a level that is not on it ever graded?

    tfmssass synth DIR --patients 20 --visits 2 --seed 200
    python bench/cut_films.py --phantoms DIR [--model DIR | --keypoints RUN --grader RUN] [--seed 5]

Each upright labelled film is cut twice: once above, once below, between two disks at a random depth
(1, 2 or 3 levels off, one film in three each). The levels wholly below (above) the edge keep their
labels, shifted with the cut. Per cut: films read or refused, the on-film levels graded, **off-film
levels graded** (must stay 0), graded levels whose disk centre lies more than a third of a step from
the truth (a grade on the wrong level), and the exact agreement of the graded corners with the truth,
by view. A film counts as read when scoring keeps it, with its own rules on top of the model's (a cut
film needs a clear end of its chain: docs/scoring.md). The same films uncut are the reference.
"""

from __future__ import annotations

import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import model_args  # beside this script
    import numpy as np
    import pandas as pd

    from tfmssass.core import anatomy
    from tfmssass.io import read_radiograph
    from tfmssass.io.labels import load_labels
    from tfmssass.scoring.record_maker import Item, RecordMaker
    from tfmssass.scoring.settings import Settings

    parser = model_args.parser(__doc__, "Upright labelled films ('tfmssass synth').")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    predictor, text = model_args.open_model(args)
    maker = RecordMaker(predictor.metadata, Settings(text, True), None)
    root = Path(args.phantoms)
    labels, _ = load_labels(root / "labels.csv", check_images=False)  # NG and blank: both missing grades
    rng = np.random.default_rng(args.seed)
    count = defaultdict(Counter)
    refusals = defaultdict(Counter)  # per cut, why films were refused
    findings = predictor.metadata.get("findings", {})
    for _, row in labels.iterrows():
        view, levels = row["view"], anatomy.LEVELS[row["view"]]
        image = read_radiograph(root / row["image"]).image.astype(np.float32)
        centres = np.array([[row[f"{lv}_cx"], row[f"{lv}_cy"]] for lv in levels], float)
        if np.isnan(centres).any():
            continue
        grades = pd.to_numeric(row[list(anatomy.CORNERS[view])], errors="coerce").to_numpy(float)
        off, depth = int(rng.integers(1, 4)), rng.uniform(0.2, 0.8)
        top = int(centres[off - 1, 1] + depth * (centres[off, 1] - centres[off - 1, 1]))
        bottom = int(centres[5 - off, 1] + depth * (centres[6 - off, 1] - centres[5 - off, 1]))
        on = np.ones(6, bool)
        cuts = {"uncut": (image, 0, on)}
        cuts["cut above"] = (image[top:], top, np.arange(6) >= off)
        cuts["cut below"] = (image[:bottom], 0, np.arange(6) < 6 - off)
        for cut, (film, shift, on_film) in cuts.items():
            name = f"{cut}, {view}"  # a cervical film is named from C2 at its top, a lumbar one from the sacrum
            c = count[name]
            c["films"] += 1
            c[f"films, {6 - int(on_film.sum())} off"] += 1
            c["levels on the film"] += int(on_film.sum())
            out = predictor.predict([np.ascontiguousarray(film)], [None])[0]
            # scoring's own decision, which adds the host's rules to the model's (a chain without a clear end)
            record = maker.make(Item(Path(row["image"]), row["image"], image=film), out) if out["spine_found"] else None
            if not out["spine_found"] or out["view"] != view or not record.scored:
                c["refused"] += 1
                why = (findings.get(str(int(out["finding"])), "?") if not out["spine_found"] else
                       "read as the other view" if out["view"] != view else record.reason.split(":")[0])
                refusals[name][why.replace("{view} ", "")] += 1
                continue
            c[f"read, {6 - int(on_film.sum())} off"] += 1
            graded = out["grades"][0::2] != -1  # cut and read (a corner may still be judged not gradable: -2)
            found = out["keypoints"][anatomy.VIEW_SLICES[view]][0::2] + [0.0, shift]
            step = np.median(np.linalg.norm(np.diff(centres, axis=0), axis=1))
            misplaced = np.linalg.norm(np.nan_to_num(found, nan=1e9) - centres, axis=1) > step / 3
            c["read"] += 1
            c["on-film levels graded"] += int((graded & on_film).sum())
            c["off-film levels graded"] += int((graded & ~on_film).sum())
            c["graded on the wrong level"] += int((graded & on_film & misplaced).sum())
            corners = np.repeat(graded & on_film, 2) & ~np.isnan(grades) & (out["grades"] >= 0)
            c["corners"] += int(corners.sum())
            c["exact"] += int((out["grades"][corners] == grades[corners]).sum())
    print(f"model: {text}; films of {root}, cut with seed {args.seed}")
    rows = [[name, c["films"], c["read"], c["refused"], f"{c['on-film levels graded']} of {c['levels on the film']}",
             c["off-film levels graded"], c["graded on the wrong level"],
             f"{c['exact'] / c['corners']:.3f} ({c['corners']})" if c["corners"] else "-"] for name, c in sorted(count.items())]
    model_args.print_table(["films", "n", "read", "refused", "on-film levels graded", "off-film levels graded",
                            "graded on the wrong level", "exact on graded corners"], rows)
    print()
    model_args.print_table(["films", "read with 1 / 2 / 3 levels off", "refused because"], [
        [name, " / ".join(f"{c[f'read, {k} off']} of {c[f'films, {k} off']}" for k in (1, 2, 3)),
         "; ".join(f"{why} ({n})" for why, n in refusals[name].most_common()) or "-"]
        for name, c in sorted(count.items()) if not name.startswith("uncut")])

if __name__ == "__main__":
    main()
