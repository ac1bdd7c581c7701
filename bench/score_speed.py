"""Speed of ``tfmssass score``: seconds per radiograph, and the whole run against the bare model
forward passes on the same inputs, measured in the same process.

With the paper-size presets (HRNet-W32 at 256x192, ResNet152 at 224; untrained weights, which
cost the same time) the detector cannot find a spine, so stage 1 runs its real forward passes but
answers with the phantoms' labelled points (as the tests' stand-in does); every corner is then
cropped and graded by the real grader. With ``--keypoints/--grader`` trained run folders are used
unchanged.

    python bench/score_speed.py --phantoms DIR [--radiographs 16] [--keypoints RUN --grader RUN]

Prints a table: radiographs, run seconds, seconds per radiograph, bare forward seconds, ratio.
Goal: ratio <= 1.15 (reading, cropping and writing hide behind the model work). "Bare forward" is
the traced networks alone on inputs of the run's shapes: two stage-1 passes per radiograph and
the grader on as many crops, in the same batch sizes.
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


def grader_forward_seconds(module, crops: int, batch_size: int) -> float:
    """Bare stage-2 forward passes over as many crops as the run graded, in the same batches."""
    import numpy as np
    import tensorflow as tf

    size = module.crop.size
    batches = [min(batch_size, crops - i) for i in range(0, crops, batch_size)]
    inputs = {b: tf.constant(np.random.default_rng(0).random((b, size, size, 1)).astype("float32"))
              for b in set(batches)}
    for x in inputs.values():
        module.grade(x)
    start = time.perf_counter()
    for b in batches:
        module.grade(inputs[b])["grade_probabilities"].numpy()
    return time.perf_counter() - start


def paper_models(labels_csv, batch_size: int):
    """The paper-size networks (untrained) in the scoring module; stage 1 runs its real two
    passes, then answers with the labelled points."""
    import tensorflow as tf
    from score_doubles import LabelledPoints

    from tfmssass.core.config import grader_config, keypoint_config
    from tfmssass.serving.module import ScoringModule
    from tfmssass.serving.predictors import ModulePredictor
    from tfmssass.stages.grader.model import build_grader
    from tfmssass.stages.keypoints.detect import Stage1, Stage1Result
    from tfmssass.stages.keypoints.model import build_hrnet

    kp, gr = keypoint_config("paper"), grader_config("paper")
    real = Stage1(build_hrnet(kp), kp.input_size, kp.cache_long_side, kp.confidence_threshold, kp.min_points)
    truth = LabelledPoints(labels_csv)

    class TimedStage1:
        model, input_size = real.model, real.input_size
        long_side = truth.long_side  # the film reaches detect_shrunk as stored: the labels know those pixels
        orient = truth.orient

        def detect_shrunk(self, image, scale, view_index):
            ran = real.detect(image, view_index)  # the real shrink and two passes, for their time
            with tf.control_dependencies([ran.points, ran.confidence]):
                return Stage1Result(*(tf.identity(x) for x in truth.detect(image, view_index)))

    metadata = {"note": "", "phantom_trained": False, "keypoints": {"confidence_threshold": kp.confidence_threshold},
                "grader": {"extent": gr.extent}}
    module = ScoringModule(TimedStage1(), build_grader(gr), gr.crop, kp.confidence_threshold, metadata)
    return ModulePredictor(module, batch_size), "paper presets (untrained)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phantoms", required=True, help="a phantom folder with labels.csv")
    parser.add_argument("--radiographs", type=int, default=16)
    parser.add_argument("--keypoints"), parser.add_argument("--grader")
    parser.add_argument("--model", help="an exported model folder: seconds per radiograph only")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import pandas as pd

    from tfmssass.scoring.run import run_scoring
    from tfmssass.scoring.settings import Settings
    from tfmssass.serving.predictors import ModulePredictor, open_predictor

    phantoms = Path(args.phantoms)
    labels = pd.read_csv(phantoms / "labels.csv").head(args.radiographs)
    work = Path(tempfile.mkdtemp(prefix="score_speed_"))
    folder = work / "in"
    for rel in labels["image"]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(phantoms / rel, folder / rel)

    if args.keypoints or args.model:
        predictor, text, phantom = open_predictor(args.model, args.keypoints, args.grader, batch_size=args.batch_size)
    else:
        (predictor, text), phantom = paper_models(phantoms / "labels.csv", args.batch_size), False
    settings = Settings(models=text, phantom=phantom)
    # warm-up: graph tracing and first-call costs are not per-radiograph costs
    warm = work / "warm"
    warm.mkdir()
    first = labels["image"].iloc[0]
    shutil.copy(folder / first, warm / Path(first).name)
    run_scoring(warm, work / "warm_out", predictor, settings, batch_size=args.batch_size, progress=False)
    start = time.perf_counter()
    counts = run_scoring(folder, work / "out", predictor, settings, batch_size=args.batch_size, progress=False)
    run_seconds = time.perf_counter() - start
    n = counts["scored"] + counts["failed"]
    bare = ratio = crops = "-"
    if isinstance(predictor, ModulePredictor):
        module = predictor.module
        per_call = max(1, args.batch_size // 12)
        crops = 12 * n
        grader = sum(grader_forward_seconds(module, 12 * min(per_call, n - i), args.batch_size)
                     for i in range(0, n, per_call))
        stage1 = module.stage1
        seconds = stage1_forward_seconds(stage1.model, stage1.input_size, 2 * n) + grader
        bare, ratio = f"{seconds:.1f}", f"{run_seconds / seconds:.2f}"
    print("| models | radiographs | corner crops | score run s | s / radiograph | bare forward s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {text} | {n} | {crops} | {run_seconds:.1f} | {run_seconds / n:.2f} | {bare} | {ratio} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
