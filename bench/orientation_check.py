"""Films stored turned or mirrored, and films that are no spine at all: scored as their upright
selves, refused with a reason, or mis-scored?

    python bench/orientation_check.py --phantoms DIR [--model DIR | --keypoints RUN --grader RUN] [--films 24]

Each labelled film, and its left-right mirror, is read upright and then stored turned 90°, 180°,
270° counter-clockwise. A turned film counts as **right** when it is scored with the orientation
that undoes the turn, at least 11 of its 12 grades equal its upright self's (the mirrored film's,
for a mirrored one), and every grade 2 and 3 sits on the same corner; **refused** when it is not
scored (the reason is counted); **wrong** otherwise: the outcome the issue forbids. How often a
mirrored film reads like the original is the model's own left-right consistency, printed apart.
Upright films that the checks now refuse, and made-up inputs (noise, gradient, checkerboard), are
counted too.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def same_reading(out: dict, reference: dict) -> bool:
    """The same view, at least 11 of 12 grades the same, every grade 2 and 3 on the same corner."""
    import numpy as np

    return (out["view"] == reference["view"] and int((out["grades"] == reference["grades"]).sum()) >= 11
            and np.array_equal(out["grades"] >= 2, reference["grades"] >= 2))


def reason(out: dict, findings: dict) -> str:
    """Why a film was not scored, in the model's words (an export before the checks has none)."""
    return findings.get(str(int(out.get("finding", -1))), "refused").format(n="too few", view=out["view"])


def made_up_inputs(rng):
    import numpy as np

    y, x = np.mgrid[0:1400, 0:1100]
    return {"noise": rng.random((1400, 1100)).astype("float32"),
            "gradient": (y / 1400.0).astype("float32"),
            "checkerboard": (((y // 100) + (x // 100)) % 2).astype("float32")}


def main() -> None:
    import model_args  # beside this script
    import numpy as np
    import pandas as pd

    from tfmssass.io import read_radiograph

    parser = model_args.parser(__doc__, "A folder made by 'tfmssass synth' (labels.csv).")
    parser.add_argument("--films", type=int, default=24, help="Films used (the first of labels.csv).")
    args = parser.parse_args()
    predictor, text = model_args.open_model(args)
    labels = pd.read_csv(Path(args.phantoms) / "labels.csv").head(args.films)
    findings = predictor.metadata.get("findings", {})
    outcome, reasons, upright_refused, mirror = Counter(), Counter(), Counter(), Counter()
    for image_name in labels["image"]:
        image = read_radiograph(Path(args.phantoms) / image_name).image.astype(np.float32)
        original = None
        for mirrored in (False, True):
            film = np.ascontiguousarray(image[:, ::-1]) if mirrored else image
            # a mirrored film's upright self is the mirrored film: a patient facing the other way
            upright = predictor.predict([film], [None])[0]
            if not upright["spine_found"]:
                if not mirrored:
                    upright_refused[reason(upright, findings)] += 1
                continue
            if not mirrored:
                original = upright
            elif original is not None:
                mirror["same" if same_reading(upright, original) else "differs"] += 1
            for turns in (1, 2, 3):
                out = predictor.predict([np.ascontiguousarray(np.rot90(film, turns))], [None])[0]
                key = f"{turns * 90}°{' mirrored' if mirrored else ''}"
                if not out["spine_found"]:
                    outcome[key, "refused"] += 1
                    reasons[reason(out, findings)] += 1
                    continue
                right = out.get("orientation", -1) == turns * 90 and same_reading(out, upright)
                outcome[key, "right" if right else "wrong"] += 1
    made_up = Counter()
    for name, image in made_up_inputs(np.random.default_rng(0)).items():
        made_up["scored" if predictor.predict([image], [None])[0]["spine_found"] else "refused"] += 1

    films = len(labels)
    print(f"model: {text}; {films} films of {args.phantoms}")
    print(f"upright films refused by the checks: {sum(upright_refused.values())} of {films} "
          + "; ".join(f"{n}: {r}" for r, n in upright_refused.items()))
    print("| stored as | right | refused | wrong |\n|---|---|---|---|")
    keys = sorted({k for k, _ in outcome}, key=lambda k: (int(k.split("°")[0]), k))
    for key in keys:
        print(f"| {key} | {outcome[key, 'right']} | {outcome[key, 'refused']} | {outcome[key, 'wrong']} |")
    total = {s: sum(n for (_, o), n in outcome.items() if o == s) for s in ("right", "refused", "wrong")}
    print(f"| all turned | {total['right']} | {total['refused']} | {total['wrong']} |")
    print("refusals: " + "; ".join(f"{n}× {r}" for r, n in reasons.most_common()))
    print(f"made-up inputs (noise, gradient, checkerboard): {made_up['refused']} refused, {made_up['scored']} scored")
    print(f"mirrored upright films read as the original (the model's own left-right consistency, no turn involved): "
          f"{mirror['same']} same, {mirror['differs']} differ")


if __name__ == "__main__":
    main()
