"""Rebuild the two training run folders of an exported model from its SavedModel, so that a run
step that came later (``tfmssass calibrate``) can be done for a model whose run folders are gone, or
the model can be scored from run folders (``score --keypoints RUN --grader RUN``) by changed code.

    python bench/recover_runs.py saved_models/phantom-demo/1 [--data PREPARED] --out WORKDIR

The SavedModel keeps every weight once, stage 1's, then its orientation classifier's (exports since
issue 16), then the grader's, in the networks' own order (:class:`tfmssass.serving.module.ScoringModule`);
the networks are rebuilt from the presets that ``metadata.json`` names and their weights are copied in.
The stage-1 run gets the classifier, the plausibility limits and the implant limit back too, the grader
run the export's calibration. ``--data``, the prepared folder of the training phantoms
(``bench/train_demo.sh`` makes it), is needed only to calibrate or train again: the runs point at it
for their validation patients and their grade counts. Without it the runs score as the export does.
Writes WORKDIR/keypoints and WORKDIR/grader.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--data", help="the training phantoms' prepared folder (to calibrate or train again)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, nargs=2, default=(20, 60), help="as trained (stage 1, stage 2)")
    args = parser.parse_args()

    import tensorflow as tf

    from tfmssass.core.atomic import write_text
    from tfmssass.core.config import grader_config, keypoint_config
    from tfmssass.data.tfrecords import load_index
    from tfmssass.stages.grader.calibration import Calibration, write_calibration
    from tfmssass.stages.grader.model import build_grader
    from tfmssass.stages.implants import write_share_limit
    from tfmssass.stages.keypoints.model import build_hrnet
    from tfmssass.stages.keypoints.orientation import SUMMARY as ORIENTATION_SUMMARY
    from tfmssass.stages.keypoints.orientation import WEIGHTS as ORIENTATION_WEIGHTS
    from tfmssass.stages.keypoints.orientation import build_orientation_model
    from tfmssass.stages.keypoints.plausibility import LIMITS
    from tfmssass.stages.runs import BEST

    meta = json.loads((Path(args.model) / "metadata.json").read_text())
    kp = keypoint_config(meta["keypoints"]["preset"], epochs=args.epochs[0])
    gr = grader_config(meta["grader"]["preset"], epochs=args.epochs[1],
                       gradability=meta["grader"].get("gradability", False))
    networks = {"keypoints": (build_hrnet(kp), kp), "grader": (build_grader(gr), gr)}
    saved = tf.saved_model.load(str(args.model)).model_variables
    classifier = None
    if meta.get("orientation", {}).get("classifier"):
        # five classes once it learnt to tell films that are not lateral spines ("skipped: ...")
        classes = 5 if any(t.startswith("skipped") for t in meta.get("findings", {}).values()) else 4
        network = meta["orientation"].get("network", 1)  # exports before issue 29 do not say: network 1
        classifier = build_orientation_model(classes, network)
    order = [networks["keypoints"][0]] + ([classifier] if classifier else []) + [networks["grader"][0]]
    weights = [w for net in order for w in net.weights]
    if len(weights) != len(saved) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(weights, saved)):
        raise SystemExit(f"{args.model}: its weights do not fit the {kp.preset}/{gr.preset} presets")
    for w, value in zip(weights, saved):
        w.assign(value.numpy().astype(w.dtype))  # large weights are exported float16
    data = Path(args.data).resolve() if args.data else None
    index = load_index(data) if data else None
    for stage, (net, config) in networks.items():
        run = Path(args.out) / stage
        run.mkdir(parents=True, exist_ok=True)
        net.save_weights(str(run / BEST))
        if data:
            shutil.copyfile(data / "split.csv", run / "split.csv")
        training_data = index["training_data"] if index else meta[stage].get("training_data")
        write_text(run / "config.json", json.dumps(
            {"stage": stage, "data": str(data) if data else None, "training_data": training_data,
             stage: config.to_dict(), "init": None, "mixed_precision": False,
             "recovered_from": str(Path(args.model).resolve())},
            indent=1, sort_keys=True))
        write_text(run / "done", "recovered from the exported model\n")
        if stage == "keypoints" and classifier is not None:
            classifier.save_weights(str(run / ORIENTATION_WEIGHTS))
            write_text(run / ORIENTATION_SUMMARY, json.dumps({"classes": classes, "network": network,
                                                                  "recovered_from": args.model}) + "\n")
        if stage == "keypoints" and meta.get("plausibility"):
            write_text(run / LIMITS, json.dumps(meta["plausibility"], indent=1) + "\n")
        if stage == "keypoints" and meta.get("implants"):
            write_share_limit(run, {"min_share": meta["implants"]["min_share"]})
        if stage == "grader" and meta.get("calibration"):
            # the export's calibration, so that scoring from the runs answers as the export does
            write_calibration(run, Calibration.from_dict(meta["calibration"]))
        print(f"{run}: {len(net.weights)} weights from {args.model}")


if __name__ == "__main__":
    main()
