"""Speed of ``tfmssass score``: seconds per radiograph, and the whole run against the bare model
forward passes on the same inputs, measured in the same process.

With the paper-size presets (HRNet-W32 at 256x192, ResNet152 at 224; untrained weights, which
cost the same time) the detector cannot find a spine, so stage 1 runs its real forward passes but
answers with the phantoms' labelled points (as the tests' stand-in does); every corner is then
cropped and graded by the real grader. With ``--keypoints/--grader`` trained run folders are used
unchanged.

    python bench/score_speed.py --phantoms DIR [--radiographs 16] [--keypoints RUN --grader RUN]

Prints a table: radiographs, run seconds, seconds per radiograph, bare forward seconds, ratio.
Goal: ratio <= 1.2 (reading, cropping and writing hide behind the model work).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


class Recorded:
    """Calls a model, keeping a copy of every input so the same calls can be replayed bare."""

    def __init__(self, model):
        self.model, self.inputs = model, []

    def predict_on_batch(self, x):
        import numpy as np

        self.inputs.append(np.array(x, copy=True))
        return self.model.predict_on_batch(x)

    def replay(self) -> float:
        start = time.perf_counter()
        for x in self.inputs:
            self.model.predict_on_batch(x)
        return time.perf_counter() - start


def stage1_forward_seconds(model, input_size, calls: int) -> float:
    """Bare stage-1 forward passes: the detector's two per radiograph, on inputs of its shape."""
    import numpy as np
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).random((1, *input_size, 1)).astype("float32"))
    forward = tf.function(lambda t: model(t, training=False))  # as inside the detector's graph
    forward(x)
    start = time.perf_counter()
    for _ in range(calls):
        forward(x).numpy()
    return time.perf_counter() - start


def paper_models(labels_csv):
    from score_doubles import LabelledPoints
    from tfmssass.config import grader_config, keypoint_config
    from tfmssass.scorers import ScoringModels
    from tfmssass.train_grader import build_model as build_grader
    from tfmssass.train_keypoints import build_model as build_hrnet, make_detector

    kp, gr = keypoint_config("paper"), grader_config("paper")
    detector = make_detector(build_hrnet(kp), kp)
    truth = LabelledPoints(labels_csv)

    class TimedDetector:
        threshold, inner = detector.threshold, detector

        def detect(self, image, view=None):
            detector.detect(image, view)  # the real two passes, for their time
            return truth.detect(image, view)

    return ScoringModels(TimedDetector(), build_grader(gr), gr.input_size, gr.extent, gr.patch_depth_px,
                         gr.clahe, gr.clahe_clip, detector.threshold), "paper presets (untrained)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phantoms", required=True, help="a phantom folder with labels.csv")
    parser.add_argument("--radiographs", type=int, default=16)
    parser.add_argument("--keypoints"), parser.add_argument("--grader")
    parser.add_argument("--model", help="an exported model folder: seconds per radiograph only")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import pandas as pd

    from tfmssass.score import run_scoring
    from tfmssass.scorers import Settings, load_models

    phantoms = Path(args.phantoms)
    labels = pd.read_csv(phantoms / "labels.csv").head(args.radiographs)
    work = Path(tempfile.mkdtemp(prefix="score_speed_"))
    folder = work / "in"
    for rel in labels["image"]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(phantoms / rel, folder / rel)

    if args.keypoints or args.model:
        models, text, phantom = load_models(args.model, args.keypoints, args.grader)
    else:
        (models, text), phantom = paper_models(phantoms / "labels.csv"), False
    recording = hasattr(models, "grader")
    if recording:
        models.grader = Recorded(models.grader)
    settings = Settings(models=text, phantom=phantom)
    # warm-up: graph tracing and first-call costs are not per-radiograph costs
    warm = work / "warm"
    warm.mkdir()
    first = labels["image"].iloc[0]
    shutil.copy(folder / first, warm / Path(first).name)
    run_scoring(warm, work / "warm_out", models, settings, batch_size=args.batch_size, progress=False)
    if recording:
        models.grader.inputs.clear()
    start = time.perf_counter()
    counts = run_scoring(folder, work / "out", models, settings, batch_size=args.batch_size, progress=False)
    run_seconds = time.perf_counter() - start
    n = counts["scored"] + counts["failed"]
    bare = ratio = crops = "-"
    if recording:
        stage1 = (models.detector.stage1 if hasattr(models.detector, "stage1")
                  else models.detector.inner.stage1)
        seconds = stage1_forward_seconds(stage1.model, stage1.input_size, 2 * n) + models.grader.replay()
        bare, ratio = f"{seconds:.1f}", f"{run_seconds / seconds:.2f}"
        crops = sum(len(x) for x in models.grader.inputs)
    print("| models | radiographs | corner crops | score run s | s / radiograph | bare forward s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {text} | {n} | {crops} | {run_seconds:.1f} | {run_seconds / n:.2f} | {bare} | {ratio} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
