"""What a hospital export holds besides textbook lateral films: films that are not lateral spines,
films cut off at a level, implants, flexion and extension, a transitional lumbosacral junction.
Scored right, refused with a reason, or mis-scored?

    tfmssass synth DIR --patients 40 --visits 1 --seed 410 --unusual 1 --negatives 20
    python bench/archive_check.py --phantoms DIR [--model DIR | --keypoints RUN --grader RUN]

Per kind of film: how many were scored, refused (the reasons are counted) or skipped as not a
lateral spine; on the scored ones, **corners graded that are not gradable** (on a level off the film,
or under an implant: the outcome that must not happen), how many implanted levels were left ungraded as
such, and the exact agreement of the grades with the truth on the gradable corners. Films that are
not lateral spines must all be skipped or refused: any scored one is a failure.
"""

from __future__ import annotations

import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def kind_of(variant) -> str:
    text = "" if not isinstance(variant, str) else variant
    return {"cut": "cut off at a level", "implant": "implant", "transitional": "transitional"}.get(
        text.split(" ")[0], text or "ordinary")


def main() -> None:
    import model_args  # beside this script
    import numpy as np
    import pandas as pd
    from orientation_check import reason  # beside this script: the model's words for a refusal

    from tfmssass.core import anatomy
    from tfmssass.io import read_radiograph
    from tfmssass.io.labels import load_labels

    parser = model_args.parser(__doc__, "A folder made by 'tfmssass synth --unusual --negatives'.")
    args = parser.parse_args()
    predictor, text = model_args.open_model(args)
    findings = predictor.metadata.get("findings", {})
    root = Path(args.phantoms)
    labels, _ = load_labels(root / "labels.csv", check_images=False)  # NG and blank: both missing grades
    count = defaultdict(Counter)
    reasons = Counter()
    for _, row in labels.iterrows():
        kind = kind_of(row.get("variant"))
        c = count[kind]
        c["films"] += 1
        out = predictor.predict([read_radiograph(root / row["image"]).image.astype(np.float32)], [None])[0]
        if not out["spine_found"]:
            why = reason(out, findings)
            c["skipped" if why.startswith("skipped") else "refused"] += 1
            reasons[f"{kind}: {why}"] += 1
            continue
        c["scored"] += 1
        if out["view"] != row["view"]:
            c["wrong view"] += 1
            continue
        truth = pd.to_numeric(row[list(anatomy.CORNERS[row["view"]])], errors="coerce").to_numpy(float)
        graded = out["grades"] >= 0
        levels = anatomy.LEVELS[row["view"]]
        plated = [lv.strip() for lv in row["variant"].split("over ")[1].split(",")] if kind == "implant" else []
        # not gradable because of what the film is: a level off it (no labelled points) or under metal
        # (corners hidden by the shoulders are NG in the labels too, but are not counted here)
        off = np.array([np.isnan(row[anatomy.keypoint_columns(lv)[0]]) or lv in plated for lv in levels]).repeat(2)
        c["graded not gradable"] += int((graded & off).sum())
        both = graded & ~np.isnan(truth)
        c["gradable graded"] += int(both.sum())
        c["exact"] += int((out["grades"][both] == truth[both]).sum())
        if plated:
            flagged = np.asarray(out.get("level_implant", np.zeros(6, bool)))
            c["implant levels"] += len(plated)
            c["implant levels flagged"] += sum(bool(flagged[anatomy.LEVELS[row["view"]].index(lv)]) for lv in plated)
        elif "level_implant" in out:
            c["other levels flagged"] += int(np.asarray(out["level_implant"]).sum())
    if (root / "negatives.csv").is_file():
        for _, row in pd.read_csv(root / "negatives.csv").iterrows():
            c = count[row["kind"]]
            c["films"] += 1
            out = predictor.predict([read_radiograph(root / row["image"]).image.astype(np.float32)], [None])[0]
            if out["spine_found"]:
                c["scored"] += 1
                continue
            why = reason(out, findings)
            c["skipped" if why.startswith("skipped") else "refused"] += 1
            reasons[f"{row['kind']}: {why}"] += 1

    print(f"model: {text}; films of {root}")
    rows = []
    for kind, c in count.items():
        negative = "ap_" in kind or "lateral_" in kind
        rows.append([kind, c["films"], c["scored"], c["refused"], c["skipped"],
                     "-" if negative else c["graded not gradable"],
                     f"{c['implant levels flagged']} of {c['implant levels']}" if c["implant levels"] else "-",
                     c["other levels flagged"],
                     f"{c['exact'] / c['gradable graded']:.3f} ({c['gradable graded']})" if c["gradable graded"] else "-"])
    model_args.print_table(["film", "n", "scored", "refused", "skipped (not lateral)",
                            "corners graded that are not gradable", "implanted levels left ungraded",
                            "other levels called implant", "exact on gradable corners"], rows)
    print("reasons: " + "; ".join(f"{n}× {r}" for r, n in sorted(reasons.items())))


if __name__ == "__main__":
    main()
