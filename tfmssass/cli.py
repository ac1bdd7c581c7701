"""Command line: thin Click commands; heavy imports (pydicom, OpenCV, TensorFlow) stay inside them
so ``tfmssass --help`` is instant."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import click

from tfmssass.core.config import DEFAULT_IMPUTE, IMPUTE_CHOICES
from tfmssass.core.errors import TfmssassError
from tfmssass.synth import DEFAULT_STYLE, STYLES


def _fail(message: str, code: int = 1):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class _Commands(click.Group):
    """The command group; an error meant for the user (:class:`~tfmssass.core.errors.TfmssassError`)
    becomes one line and its exit code, here and nowhere else."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TfmssassError as exc:
            _fail(str(exc), exc.exit_code)
        except OSError as exc:  # an output that cannot be written: one line, never a traceback
            _fail(*_output_fault(exc))


def _output_fault(exc: OSError) -> tuple[str, int]:
    """(message, exit code) of a file-system fault the per-input boundaries let through: the output
    folder. Outputs are written atomically, so what exists is complete and a later run may trust it."""
    where = exc.filename or "an output file"
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}: {reason}; what was written is complete: free space and run again with --resume", 1
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}: {reason}: cannot write there; give an --out this user can write", 2
    return f"{where}: {reason}", 1


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tfmssass")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own start-up and device messages.")
def main(verbose):
    """Automated mSASSS scoring of lateral cervical and lumbar spine radiographs.

    Start with `tfmssass score examples/ --out scored` (the shipped phantom-trained demo model),
    then open scored/report.html. The demo model has never seen a patient: train your own (README).
    """
    if not verbose:
        from tfmssass.core.system import quiet_tensorflow

        quiet_tensorflow()


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
def inspect(files):
    """Print one JSON object per FILE: its metadata, or why it cannot be read."""
    from tfmssass.io import RadiographError, read_radiograph

    failed = 0
    for path in files:
        try:
            radiograph = read_radiograph(path)
            record = {"file": path, **radiograph.meta, "warnings": radiograph.warnings}
        except RadiographError as exc:
            failed += 1
            record = {"file": path, "error": exc.reason}
        click.echo(json.dumps(record))
    sys.exit(1 if failed else 0)


@main.command()
@click.argument("source", type=click.Path())
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--bits", type=click.Choice(["8", "16"]), default="16", show_default=True,
              help="Bit depth of the PNG written.")
def convert(source, target, bits):
    """Write SOURCE's display-ready grey image (bone bright) as a PNG at TARGET."""
    import cv2

    from tfmssass.core.atomic import write_bytes
    from tfmssass.io import read_radiograph

    radiograph = read_radiograph(source)
    ok, encoded = cv2.imencode(".png", radiograph.to_uint(int(bits)))
    if not ok:
        _fail(f"{target}: PNG encoding failed")
    write_bytes(target, encoded.tobytes())
    for warning in radiograph.warnings:
        click.echo(f"warning: {source}: {warning}", err=True)
    click.echo(f"{target}: {radiograph.width}x{radiograph.height}, {bits}-bit")


@main.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--patients", default=10, show_default=True, type=click.IntRange(1))
@click.option("--visits", default=2, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--difficulty", type=click.Choice(["easy", "realistic", "hard"]), default="realistic",
              show_default=True)
@click.option("--view", "views", type=click.Choice(["cervical", "lumbar"]), multiple=True,
              help="Only these views (default both).")
@click.option("--workers", type=click.IntRange(1), default=None, help="Processes (default: all cores).")
@click.option("--resume", is_flag=True, help="Keep files already written by the same settings.")
@click.option("--unusual", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Each film's chance of being unusual: cut off at a level, a plate and screws, flexion, "
                   "extension, a transitional lumbosacral vertebra (labels.csv column 'variant').")
@click.option("--negatives", type=click.IntRange(0), default=0, show_default=True,
              help="Films of each kind that is not graded (AP cervical, AP lumbar, lateral thoracic, lateral "
                   "chest) under OUT/other/, listed in OUT/negatives.csv.")
@click.option("--style", type=click.Choice(STYLES), default=DEFAULT_STYLE, show_default=True,
              help="radiograph: 3-D anatomy projected through a physical image chain and a vendor's processing, "
                   "the films the shipped demo is trained on; geometric: flat shapes, clean films for tests "
                   "(docs/phantoms.md).")
def synth(out, patients, visits, seed, difficulty, views, workers, resume, unusual, negatives, style):
    """Write spine phantoms (DICOM under OUT/<patient>/<date>/ and OUT/labels.csv).

    Synthetic radiographs, not patients: they exist to test and demonstrate the pipeline.
    """
    from tfmssass.synth.sets import synthesize

    try:
        frame = synthesize(out, patients, visits, seed=seed, difficulty=difficulty,
                           views=tuple(views) or ("cervical", "lumbar"), workers=workers,
                           resume=resume, unusual=unusual, negatives=negatives, style=style)
    except ValueError as exc:
        _fail(str(exc), 2)
    extra = f" and {4 * negatives} negatives (negatives.csv)" if negatives else ""
    click.echo(f"{len(frame)} phantom radiographs and labels.csv{extra} written to {out}")


@main.group()
def labels():
    """Check, split and convert label files (labels.csv)."""


@labels.command("check")
@click.argument("csv", type=click.Path())
@click.option("--no-images", is_flag=True, help="Do not open the images (skip size checks).")
def labels_check(csv, no_images):
    """Report every problem in CSV, one line each; exit 1 if there are errors."""
    from tfmssass.io.labels import count_corners, read_labels, validate_labels

    frame = read_labels(csv)
    report = validate_labels(frame, check_images=not no_images)
    for line in report.failed:
        click.echo(f"error: {csv}: {line}")
    for line in report.warnings:
        click.echo(f"warning: {csv}: {line}")
    graded, not_gradable = count_corners(frame)
    click.echo(f"{csv}: {len(frame)} radiographs, {frame['patient_id'].nunique()} patients, "
               f"{graded} graded corners, {not_gradable} not gradable (NG), {len(report.failed)} errors, "
               f"{len(report.warnings)} warnings")
    sys.exit(1 if report.failed else 0)


@labels.command("split")
@click.argument("csv", type=click.Path())
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True)
@click.option("--val-fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--seed", default=0, show_default=True, type=int)
def labels_split(csv, out, val_fraction, seed):
    """Patient-level train/validation split, stratified by each patient's highest grade."""
    from tfmssass.io.labels import read_labels
    from tfmssass.io.split import split_patients, write_split

    frame = read_labels(csv)
    table = split_patients(frame, val_fraction, seed)
    write_split(table, out)
    counts = table["split"].value_counts()
    click.echo(f"{out}: {counts.get('train', 0)} train / {counts.get('val', 0)} validation patients")


@labels.command("to-coco")
@click.argument("csv", type=click.Path())
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True)
def labels_to_coco_cmd(csv, out):
    """Export labels as COCO keypoints (for correcting points in CVAT or Label Studio)."""
    from tfmssass.io.coco import write_coco
    from tfmssass.io.labels import read_labels

    frame = read_labels(csv)
    write_coco(frame, out)
    click.echo(f"{out}: {len(frame)} images")


@labels.command("from-coco")
@click.argument("coco_json", type=click.Path())
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="labels.csv to write.")
@click.option("--images-root", type=click.Path(file_okay=False), default=None,
              help="Folder that COCO file_name paths are relative to (default: the JSON's folder).")
def labels_from_coco(coco_json, out, images_root):
    """Import COCO keypoints (CVAT / Label Studio export) as labels.csv."""
    from pathlib import Path

    from tfmssass.io.coco import coco_to_labels
    from tfmssass.io.labels import validate_labels, write_labels

    frame = coco_to_labels(coco_json, images_root=images_root, labels_dir=Path(out).parent)
    write_labels(frame, out)
    frame.attrs["source"] = str(out)
    report = validate_labels(frame, check_images=False)
    for line in report.errors + report.warnings:
        click.echo(f"check: {out}: {line}")
    click.echo(f"{out}: {len(frame)} radiographs written; run 'tfmssass labels check {out}'")


@main.command()
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Prepared data folder.")
@click.option("--long-side", type=click.IntRange(64), default=1024, show_default=True,
              help="Stage-1 working size: the display image's long side, in pixels.")
@click.option("--patch-depth", "patch_depth_px", type=click.IntRange(8), default=96, show_default=True,
              help="Stage-2 patch scale: centre-to-anterior distance in patch pixels.")
@click.option("--val-fraction", type=float, default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the patient split.")
@click.option("--per-shard", type=click.IntRange(1), default=64, show_default=True,
              help="Radiographs per shard unit (64: shards of about 80-150 MB).")
@click.option("--workers", type=click.IntRange(1), default=None, help="Decoding processes (default: all cores).")
@click.option("--negatives", "negatives_csv", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV (column image) of films that are not lateral cervical or lumbar radiographs (AP views, "
                   "thoracic spine, chest): stage 1 learns to refuse them.")
def prepare(labels_csv, out, long_side, patch_depth_px, val_fraction, seed, per_shard, workers, negatives_csv):
    """Decode every labelled radiograph once into TFRecord shards for 'train --data'. Rerun to resume."""
    from tfmssass.data.tfrecords import label_counts_text
    from tfmssass.stages.prepare import prepare as run_prepare

    index = run_prepare(labels_csv, out, long_side, patch_depth_px, val_fraction, seed, per_shard, workers,
                        negatives_csv=negatives_csv)
    for name in ("train", "val"):
        part = index["splits"][name]
        grades = label_counts_text(part["grades"])
        others = part["views"].get("other", 0)
        click.echo(f"{out}: {name}: {part['radiographs'] - others} radiographs of {part['patients']} patients; "
                   f"corners per grade {grades}" + (f"; {others} negatives" if others else ""))
    if index["errors"]:
        click.echo(f"{out}: {index['errors']} radiographs could not be read (listed in {Path(out) / 'errors.csv'})")
    sys.exit(1 if index["errors"] else 0)


@main.group()
def train():
    """Train a stage on labelled radiographs (writes a run folder)."""


def _training_source(labels_csv, data_dir) -> str:
    """Exactly one of --labels and --data."""
    if bool(labels_csv) == bool(data_dir):
        raise click.UsageError("give either --labels labels.csv or --data DIR (made by 'tfmssass prepare')")
    return labels_csv or data_dir


_LABELS_OPTION = click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False), default=None,
                              help="Labelled radiographs (decoded into a cache in the run folder).")
_DATA_OPTION = click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False), default=None,
                            help="A folder made by 'tfmssass prepare' (TFRecord shards; for large archives).")
_STRATEGY_OPTION = click.option(
    "--strategy", type=click.Choice(["auto", "mirrored", "multiworker", "default"]), default="auto",
    show_default=True, help="auto: all GPUs of this machine; multiworker: the machines in TF_CONFIG "
                            "(README, Training on a cluster); default: one device.")


def _run_training(train_fn, source, out, config, **kwargs) -> None:
    """Run a trainer; its known failures become one line (a lost worker included: resume hint)."""
    import tensorflow as tf


    try:
        run = train_fn(source, out, config, **kwargs)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    except tf.errors.OpError as exc:  # e.g. another worker of the cluster died
        _fail(f"{out}: training stopped: {exc.message.strip().splitlines()[0]}. Run the same command "
              f"again (on every worker) to resume from the last finished epoch")
    if (Path(run) / "done").is_file():
        click.echo(f"{run}: best weights in {run / 'best.weights.h5'}, log in {run / 'log.csv'}")
    else:
        click.echo(f"{run}: this worker finished; the chief writes the checkpoint and the log")


@train.command("keypoints")
@_LABELS_OPTION
@_DATA_OPTION
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder.")
@click.option("--preset", type=click.Choice(["paper", "small", "tiny"]), default="small", show_default=True,
              help="paper: HRNet-W32, batch 32 (GPU); small: HRNet-W16 for a CPU; tiny: tests.")
@click.option("--epochs", type=click.IntRange(1), default=None)
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option("--lr", "learning_rate", type=float, default=None, help="Adam learning rate.")
@click.option("--seed", type=int, default=None)
@click.option("--val-fraction", type=float, default=None)
@click.option("--steps-per-epoch", type=click.IntRange(1), default=None)
@click.option("--init", default=None,
              help="Fine-tune 'demo' (the shipped demo model; --preset small), an exported model folder or an "
                   "earlier keypoints run folder (same preset), or start from a .weights.h5 file; nothing is "
                   "downloaded.")
@click.option("--mixed-precision", is_flag=True, help="mixed_float16 (GPUs with tensor cores).")
@_STRATEGY_OPTION
def train_keypoints_cmd(labels_csv, data_dir, out, preset, epochs, batch_size, learning_rate, seed, val_fraction,
                        steps_per_epoch, init, mixed_precision, strategy):
    """Stage 1: HRNet disk-point detector. Run the same command again to resume."""
    source = _training_source(labels_csv, data_dir)
    from tfmssass.core.config import keypoint_config
    from tfmssass.stages.keypoints.train import train_keypoints

    config = keypoint_config(preset, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                             seed=seed, val_fraction=val_fraction, steps_per_epoch=steps_per_epoch)
    _run_training(train_keypoints, source, out, config, init=init, mixed_precision=mixed_precision,
                  strategy=strategy)


@train.command("checks")
@click.option("--keypoints", "keypoints_run", type=click.Path(exists=True, file_okay=False), required=True,
              help="Stage-1 training run folder (trained before it learnt these itself).")
@click.option("--epochs", type=click.IntRange(1), default=40, show_default=True,
              help="Epochs of the orientation classifier (60 steps of 16 films each).")
@click.option("--init", "init_run", type=click.Path(exists=True, file_okay=False), default=None,
              help="An earlier stage-1 run folder whose orientation classifier is fine-tuned (instead of "
                   "training one from scratch).")
def train_checks_cmd(keypoints_run, epochs, init_run):
    """What stage 1 checks before a film is graded: which way up it was stored (a small classifier)
    and whether its chain of points is a plausible lateral spine (limits from the training labels).
    'train keypoints' learns both at its end; this adds them to a run trained before, or learns
    them again."""
    from tfmssass.stages.keypoints.train import learn_checks

    try:
        learn_checks(keypoints_run, epochs, init=init_run)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc), 2)


@train.command("grader")
@_LABELS_OPTION
@_DATA_OPTION
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder.")
@click.option("--preset", type=click.Choice(["paper", "small", "tiny"]), default="small", show_default=True,
              help="paper: ResNet152 at 224, Adam 1e-6, batch 3; small: small residual net at 192, "
                   "Adam 1e-3, batch 32 (CPU); tiny: tests.")
@click.option("--backbone", default=None, help="resnet50/101/152(v2), efficientnetv2b0/s/m or tiny.")
@click.option("--epochs", type=click.IntRange(1), default=None)
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option("--lr", "learning_rate", type=float, default=None)
@click.option("--per-class", type=click.IntRange(1), default=None,
              help="Samples per grade and epoch (default: the rarest grade's count).")
@click.option("--seed", type=int, default=None)
@click.option("--val-fraction", type=float, default=None)
@click.option("--init", default=None,
              help="Fine-tune 'demo' (the shipped demo model; --preset small), an exported model folder or an "
                   "earlier grader run folder (same preset and backbone); backbone weights from a "
                   "local file (e.g. an ImageNet notop .h5); or 'imagenet': Keras downloads the backbone's "
                   "ImageNet weights once into ~/.keras/models (keras.applications backbones, e.g. --preset paper).")
@click.option("--keypoints", "keypoints_run", type=click.Path(exists=True, file_okay=False), default=None,
              help="Crop at a stage-1 run's predicted points instead of the labelled ones.")
@click.option("--mixed-precision", is_flag=True, help="mixed_float16 (GPUs with tensor cores).")
@_STRATEGY_OPTION
def train_grader_cmd(labels_csv, data_dir, out, preset, backbone, epochs, batch_size, learning_rate, per_class, seed,
                     val_fraction, init, keypoints_run, mixed_precision, strategy):
    """Stage 2: corner grader on canonical crops (labelled or --keypoints points). Rerun to resume."""
    source = _training_source(labels_csv, data_dir)
    from tfmssass.core.config import grader_config
    from tfmssass.stages.grader.train import train_grader

    config = grader_config(preset, backbone=backbone, epochs=epochs, batch_size=batch_size,
                           learning_rate=learning_rate, per_class=per_class, seed=seed,
                           val_fraction=val_fraction)
    _run_training(train_grader, source, out, config, init=init, mixed_precision=mixed_precision,
                  strategy=strategy, keypoints_run=keypoints_run)


@main.group(invoke_without_command=True)
@click.option("--confusion-matrix", "cm_csv", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A 4x4 CSV (rows actual 0-3, columns predicted 0-3): print the paper's tables for it.")
@click.option("--out", type=click.Path(file_okay=False), default=None)
@click.pass_context
def evaluate(ctx, cm_csv, out):
    """Measure a trained stage against labels (or tabulate a confusion matrix)."""
    if ctx.invoked_subcommand is not None:
        return
    if not cm_csv or not out:
        click.echo(ctx.get_help())
        sys.exit(2)
    from tfmssass.stages.grader.evaluate import write_confusion_report
    from tfmssass.stages.grader.metrics import markdown, read_confusion_csv

    try:
        cm = read_confusion_csv(cm_csv)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    write_confusion_report(cm, out)
    click.echo(markdown(cm))


@evaluate.command("grader")
@click.option("--model", "run_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="Stage-2 run folder.")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--keypoints", "keypoints_run", type=click.Path(exists=True, file_okay=False), default=None,
              help="Crop at a stage-1 run's predicted points instead of the labelled ones.")
def evaluate_grader_cmd(run_dir, labels_csv, out, keypoints_run):
    """Confusion matrix, per-grade table, QWK, per level/view, ROC curves."""
    from tfmssass.stages.grader.evaluate import evaluate_grader
    from tfmssass.stages.grader.metrics import markdown

    report = evaluate_grader(run_dir, labels_csv, out, keypoints_run)
    click.echo(markdown(report["confusion_matrix"]))
    consistent = report["bridge_consistent"]
    click.echo(f"with bridge consistency: exact accuracy {consistent['exact_accuracy']:.4f}, "
               f"QWK {consistent['quadratic_weighted_kappa']:.4f}")
    c = report["calibration"]
    click.echo(f"calibration ({'temperature %.3f' % c['temperature'] if c['fitted'] else 'none: run tfmssass calibrate'}): "
               f"ECE {c['ece_before']:.3f} before, {c['ece_after']:.3f} after; {Path(out) / 'calibration.png'}")


@evaluate.command("agreement")
@click.option("--scores", "scores_csv", type=click.Path(exists=True), required=True,
              help="A scored folder (also compares its visits graded alone and together), its visits.csv, "
                   "or a second reader's labels.csv (e.g. from 'review export').")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False), required=True,
              help="labels.csv with the reference (reader or phantom) corner grades.")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--impute", type=click.Choice(IMPUTE_CHOICES), default=None,
              help="Missing-corner rule for the reference totals. Default: a scored folder's own rule "
                   f"(its settings), else {DEFAULT_IMPUTE}.")
def evaluate_agreement_cmd(scores_csv, labels_csv, out, impute):
    """Visit-level agreement with reference scores: ICC(2,1)/ICC(3,1) with 95% CI for total and
    change, MAE, Bland-Altman, smallest detectable change, progression sensitivity/specificity/kappa;
    for a scored folder also new syndesmophytes and calibration, visits alone against together."""
    from tfmssass.stats.agreement import evaluate_agreement

    result = evaluate_agreement(scores_csv, labels_csv, out, impute)
    click.echo(result.pop("text"))
    if result["visits_paired"] < 2:
        _fail("fewer than 2 visits with a complete total on both sides: nothing to compare "
              "(pseudonymised scores do not match the labels' patient ids)")


@evaluate.command("keypoints")
@click.option("--model", "run_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="Stage-1 run folder.")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--flip-test", is_flag=True, help="Average with the left-right flipped radiograph.")
@click.option("--worst", type=click.IntRange(0), default=6, show_default=True,
              help="How many worst radiographs to draw.")
def evaluate_keypoints_cmd(run_dir, labels_csv, out, flip_test, worst):
    """Point errors (px, mm where calibrated, % diagonal), PCK, view accuracy, failures."""
    from tfmssass.stages.keypoints.evaluate import evaluate_keypoints

    summary = evaluate_keypoints(run_dir, labels_csv, out, flip_test=flip_test, worst=worst)
    overall = summary["overall"]
    click.echo(f"{out}: {summary['radiographs']} radiographs; median error "
               f"{overall['median_error_pct_diagonal']:.2f}% of the diagonal; failure rate "
               f"{overall['failure_rate']:.1%}; view accuracy {overall['view_accuracy']:.1%}")
    sys.exit(1 if summary["unreadable"] else 0)


@main.command()
@click.argument("directory", type=click.Path(exists=True), required=False)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="An exported model folder (tfmssass export). Default: the shipped phantom demo model.")
@click.option("--keypoints", "keypoints_run", type=click.Path(exists=True, file_okay=False), default=None,
              help="Stage-1 training run folder (with --grader, instead of --model).")
@click.option("--grader", "grader_run", type=click.Path(exists=True, file_okay=False), default=None,
              help="Stage-2 training run folder (with --keypoints).")
@click.option("--server", default=None, help="TF Serving REST address, e.g. http://HOST:8501 (with --model-name).")
@click.option("--grpc", "grpc_target", default=None, help="TF Serving gRPC address HOST:8500 (with --model-name).")
@click.option("--model-name", default=None, help="The model's name on TF Serving.")
@click.option("--view", type=click.Choice(["cervical", "lumbar"]), default=None,
              help="Treat every radiograph as this view (default: the model tells).")
@click.option("--meta", "meta_csv", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV with file, patient_id, visit_date[, view] for PNG/JPEG/TIFF inputs.")
@click.option("--impute", type=click.Choice(IMPUTE_CHOICES), default=DEFAULT_IMPUTE, show_default=True,
              help="Missing corners, up to 3 per segment: from the same corner at the patient's other visits, "
                   "then the segment's mean (visits); the segment's mean alone (mean); none imputed (none).")
@click.option("--review-threshold", type=click.FloatRange(0, 1), default=0.6, show_default=True,
              help="Corners whose grade probability is below this are flagged for review.")
@click.option("--prior", default=None,
              help="Grade frequencies the probabilities assume: tempered (the training cohort's, flattened: "
                   "visit totals read low less often), data (the training cohort's), uniform, em (estimated "
                   "from the scored cohort) or a FILE of four numbers (grades 0-3).  [default: tempered; data "
                   "for a model that does not say its prior]")
@click.option("--longitudinal", type=click.Choice(["monotone", "soft", "off"]), default="monotone",
              show_default=True, help="Grade each patient's visits together: grades never go down (monotone), "
                                      "may go down at a cost (soft), or each visit alone (off). Together, a radiograph "
                                      "the patient's other visits contradict is not used and goes to review.")
@click.option("--decrease-cost", type=click.FloatRange(0, min_open=True), default=None,
              help="--longitudinal soft: evidence (natural log units) a one-grade decrease must overcome "
                   "[default: 3.0].")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True,
              help="Corner crops per grader batch.")
@click.option("--resume", is_flag=True, help="Keep radiographs already scored into OUT.")
@click.option("--overwrite", is_flag=True,
              help="OUT holds another run's results: remove them first (the readers' review.sqlite is kept).")
@click.option("--pseudonymize", is_flag=True,
              help="Replace patient ids and file names in every output by salted hashes.")
@click.option("--salt", default=None, help="Salt for --pseudonymize.")
@click.option("--salt-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File whose content is the salt for --pseudonymize.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--dicom", "dicom_out", is_flag=True,
              help="Also write OUT/dicom/: a structured report (TID 1500) per visit and a presentation state "
                   "per radiograph, in the radiographs' studies.")
@click.option("--dicomweb", "dicomweb_url", default=None, metavar="URL",
              help="Score from a PACS instead of DIRECTORY: its DICOMweb root, e.g. https://HOST/dicom-web "
                   "(implies --dicom).")
@click.option("--study", "study_uids", multiple=True, metavar="UID", help="--dicomweb: a Study Instance UID (repeat).")
@click.option("--patient", "patient_ids", multiple=True, metavar="ID", help="--dicomweb: a Patient ID (repeat).")
@click.option("--since", default=None, metavar="YYYY-MM-DD", help="--dicomweb: studies from this date on.")
@click.option("--auth-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help='--dicomweb: JSON file with {"username": ..., "password": ...} or {"token": ...}.')
@click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False), default=None,
              help="--dicomweb: CA certificates to verify the server with (default: the system's).")
@click.option("--store", "send", is_flag=True, help="--dicomweb: send the DICOM objects back by STOW-RS.")
def score(**given):
    """Score every radiograph under DIRECTORY (or, with --dicomweb, in a PACS): corners.csv,
    images.csv, visits.csv, progression.csv, errors.csv, overlays/ and report.html in OUT.

    Models: --model DIR (exported), --keypoints RUN --grader RUN (training runs), --server URL or
    --grpc HOST:PORT with --model-name (TF Serving), or by default the shipped phantom demo model.

    Exit code 0 when every radiograph was scored (non-radiograph DICOM objects and frontal views
    are skipped with a reason and do not count as failures), 1 when some inputs failed (listed in
    errors.csv; everything else is written) or the PACS stopped answering (run again with --resume),
    2 on a usage error, including credentials the PACS refuses.
    """
    from tfmssass.pacs.errors import PacsUnavailable
    from tfmssass.scoring.folder import ScoredFolder
    from tfmssass.scoring.options import ScoreOptions
    from tfmssass.serving.predictors import ServingUnavailable, open_predictor

    options = ScoreOptions(**given)
    options.check()
    pacs = _open_pacs(options)
    folder = ScoredFolder(options.out)
    with folder.writing():  # one run at a time, checked before the models load
        folder.check_start(options.resume, options.overwrite)
        predictor, text, phantom = open_predictor(**options.model_source)
        settings = options.settings(text, phantom, predictor.metadata, predictor.fingerprint)
        if phantom:
            click.echo(f"note: {settings.models_note}", err=True)
        if undertrained := predictor.metadata.get("undertrained"):
            click.echo(f"warning: the model may be undertrained: its training's validation says it learnt little "
                       f"({'; '.join(undertrained)}); check its results before using them", err=True)
        try:
            counts = _score(options, predictor, settings, pacs)
        except PacsUnavailable as exc:
            _fail(f"{exc}; what was fetched and scored is kept: run again with --resume")
        except ServingUnavailable as exc:
            _fail(f"{exc}; what was scored is kept: run again with --resume")
    _summary(options, counts)
    sys.exit(1 if counts["failed"] or counts.get("not_made") else 0)


def _score(options, predictor, settings, pacs) -> dict:
    """The scoring run itself, from a folder or a PACS, holding OUT's lock; returns the counts."""
    common = {"batch_size": options.batch_size, "resume": options.resume, "overwrite": options.overwrite,
              "progress": not options.quiet}
    if pacs:
        from tfmssass.pacs.pull import score_from_pacs

        return score_from_pacs(*pacs, options.out, predictor, settings, send=options.send, **common)
    from tfmssass.scoring.run import run_scoring

    counts = run_scoring(options.directory, options.out, predictor, settings, meta_csv=options.meta_csv,
                         salt=options.salt, **common)
    if options.dicom_out:
        from tfmssass.pacs.objects import write_dicom_objects

        written = write_dicom_objects(options.out, settings)
        counts.update(objects=len(written.rows), not_made=written.not_made)
    return counts


def _summary(options, counts: dict) -> None:
    """What the run did, on the terminal: counts, the first failures with their reasons, where to look."""
    from tfmssass.scoring.report import count as _count

    out = Path(options.out)
    if options.dicomweb_url:
        click.echo(f"{options.dicomweb_url}: {_count(counts['studies'], 'study', 'studies')} found")
    for file, reason in counts["first_failures"]:
        click.echo(f"failed: {file}: {reason}", err=True)
    if counts["failed"] > len(counts["first_failures"]):
        click.echo(f"... and {counts['failed'] - len(counts['first_failures'])} more failed (see errors.csv)", err=True)
    listed = " (see errors.csv)" if counts["failed"] or counts["skipped"] else ""
    click.echo(f"{out}: {_count(counts['scored'], 'radiograph')} scored, {counts['failed']} failed, "
               f"{counts['skipped']} skipped{listed}; open {out / 'report.html'}")
    if "objects" in counts:
        click.echo(f"{out / 'dicom'}: {_count(counts['objects'], 'DICOM object')} (structured reports and "
                   "presentation states; see index.csv)" + (f", {counts['stored']} stored in the PACS"
                                                             if options.send else ""))
        for missing in counts["not_made"]:
            click.echo(f"{missing['file']}: {missing['reason']}", err=True)
    if not counts["scored"] and any(r.startswith("spine not found") for _, r in counts["first_failures"]):
        click.echo("hint: the spine was found on no radiograph: the keypoint model may be undertrained "
                   "(see docs/training.md for a quick recipe), or these are not lateral spine films", err=True)
    if counts["not_used"]:
        click.echo(f"{_count(counts['not_used'], 'radiograph')} not used in the totals (images.csv says why):")
        for file, why in counts["first_not_used"]:
            click.echo(f"{file}: {why}")
        if counts["not_used"] > len(counts["first_not_used"]):
            click.echo(f"... and {counts['not_used'] - len(counts['first_not_used'])} more (see images.csv)")


def _open_pacs(options):
    """(the PACS, the selection) for ``score --dicomweb`` (options already checked), or None for a folder."""
    if not options.dicomweb_url:
        return None
    from tfmssass.pacs.dicomweb import (
        Pacs,
        Selection,
        auth_file_warning,
        read_auth_file,
    )
    from tfmssass.pacs.errors import PacsUnavailable

    try:
        auth = read_auth_file(options.auth_file) if options.auth_file else None
        if options.auth_file and (warning := auth_file_warning(options.auth_file)):
            click.echo(warning, err=True)
        pacs = Pacs(options.dicomweb_url, auth, options.ca_bundle)
        pacs.check()
        return pacs, Selection(tuple(options.study_uids), tuple(options.patient_ids), options.since)
    except PacsUnavailable as exc:
        _fail(f"{exc}; nothing was fetched yet")


class _ServeByDefault(click.Group):
    """``review SOURCE …`` serves; ``review export SOURCE …`` exports (a first word that is not a
    subcommand is the SOURCE of ``serve``)."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["serve", *args]
        return super().parse_args(ctx, args)


@main.group(cls=_ServeByDefault)
def review():
    """Reader workstation in the browser: `review SOURCE --reader NAME`, then `review export`."""


def _open_review(source, labels_csv=None, images=None, predictor=None, note=""):
    """The worklist and database of SOURCE; the label file and images folder are remembered there."""
    from tfmssass.review.store import DATABASE, ReviewStore
    from tfmssass.review.worklist import open_worklist

    if not Path(source).is_dir():
        _fail(f"{source}: not a folder", 2)
    store = ReviewStore(Path(source) / DATABASE)
    labels_csv = str(Path(labels_csv).resolve()) if labels_csv else store.setting("labels")
    images = str(Path(images).resolve()) if images else store.setting("images")
    worklist = open_worklist(source, labels_csv, images, predictor, note)
    store.keep_setting("labels", labels_csv)
    store.keep_setting("images", images)
    for line in worklist.skipped:
        click.echo(f"warning: {line}", err=True)
    return worklist, store


@review.command("serve")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--reader", required=True, help="Your name or initials: your readings are kept apart from others'.")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Pre-fill a folder of radiographs from this label file.")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Pre-fill a folder of radiographs with this exported model's reading.")
@click.option("--keypoints", "keypoints_run", type=click.Path(exists=True, file_okay=False), default=None,
              help="Pre-fill with training runs (with --grader), instead of --model.")
@click.option("--grader", "grader_run", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Where a scored folder's radiographs are (needed when it was pseudonymised).")
@click.option("--order", type=click.Choice(["known", "blinded"]), default="known", show_default=True,
              help="known: each patient's visits in time order; blinded: a seeded random order, dates hidden.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the blinded order.")
@click.option("--adjudicate", is_flag=True, help="Show only where the two readers disagree; record your decisions.")
@click.option("--tolerance", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
              help="Points of two readers farther apart than this (pixels) disagree.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback shows radiographs to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="0: any free port.")
def review_serve(source, reader, labels_csv, model_dir, keypoints_run, grader_run, images, order, seed, adjudicate,
                 tolerance, host, port):
    """Serve the review page for SOURCE (a scored folder or a folder of radiographs) and print its
    address, token included. Every change is saved at once in SOURCE/review.sqlite."""
    from tfmssass.review.server import serve
    from tfmssass.review.session import ReviewSession

    predictor, note = None, ""
    if model_dir or keypoints_run or grader_run:
        from tfmssass.scoring.settings import Settings
        from tfmssass.serving.predictors import open_predictor

        predictor, text, phantom = open_predictor(model_dir, keypoints_run, grader_run, None, None, None)
        note = f"pre-filled by {Settings(models=text, phantom=phantom).models_note}"
    worklist, store = _open_review(source, labels_csv, images, predictor, note)
    try:
        session = ReviewSession(worklist, store, reader, order, seed, adjudicate, tolerance)
    except ValueError as exc:
        _fail(str(exc), 2)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {host}: anyone who can reach this machine and has the token "
                   "can see these radiographs", err=True)
    # the crop graph is traced before the address is shown (server.serve says why): tell the reader
    # what the wait of several seconds is
    click.echo(f"{source}: {len(session.films)} radiographs for {reader} ({worklist.note}); "
               "preparing the grader's corner crops (TensorFlow, several seconds), then open the address "
               "below (Ctrl+C stops):", err=True)
    try:
        serve(session, host, port, announce=lambda url: click.echo(url))
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port} ({exc.strerror})", 2)


@review.command("export")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--reader", default=None, help="Export this reader's readings.")
@click.option("--adjudicated", is_flag=True, help="Export what the readers agree on plus the adjudicator's decisions.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="labels.csv to write.")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Where a scored folder's radiographs are (as for review).")
@click.option("--include-prefill", is_flag=True,
              help="Also write pre-filled values (model or label file) that no reader set or confirmed.")
def review_export(source, reader, adjudicated, out, images, include_prefill):
    """Write a reader's (or the adjudicated) readings of SOURCE as a label file for train: only the values a
    reader set or confirmed, unless --include-prefill."""
    from tfmssass.review.export import export_labels

    if bool(reader) == adjudicated:
        _fail("give exactly one of --reader NAME and --adjudicated", 2)
    from tfmssass.review.store import DATABASE

    if not (Path(source) / DATABASE).is_file():
        _fail(f"{source}: nothing reviewed here yet (no {DATABASE}; start with 'tfmssass review {source}')", 2)
    worklist, store = _open_review(source, images=images)
    rows, warnings = export_labels(worklist, store, out, reader, include_prefill)
    for line in warnings:
        click.echo(f"warning: {out}: {line}", err=True)
    click.echo(f"{out}: {rows} radiographs ({reader or 'adjudicated'}); check with 'tfmssass labels check {out}'")


@main.command()
@click.option("--grader", "grader_run", type=click.Path(exists=True, file_okay=False), required=True,
              help="Stage-2 training run folder.")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Calibrate on these radiographs instead (the run's training patients are left out).")
@click.option("--keypoints", "keypoints_run", type=click.Path(exists=True, file_okay=False), default=None,
              help="With --labels: cut the corners at this stage-1 run's predicted points, as scoring does.")
def calibrate(grader_run, labels_csv, keypoints_run):
    """Fit a grader run's temperature and record its training cohort's grade prior (calibration.json).

    By default on the run's validation corners ('train grader' does this itself). With --labels
    and --keypoints, on corners cut where stage 1 puts the points: the confidence scoring earns."""
    from tfmssass.stages.grader.train import calibrate_run

    if keypoints_run and not labels_csv:
        _fail("--keypoints needs --labels (the prepared validation corners are cut at the labelled points)", 2)
    try:
        calibrate_run(grader_run, labels_csv, keypoints_run)
    except (ValueError, OSError) as exc:
        _fail(str(exc), 2)


@main.command("combine-graders")
@click.argument("grader_runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="New folder for the ensemble run.")
def combine_graders_cmd(grader_runs, out):
    """Average two or more calibrated grader runs into one ensemble grader run (export it as any grader).

    Each member's calibrated probabilities are averaged, so members trained apart (other films,
    another seed) correct each other's misreadings; scoring's grader time grows with their number."""
    from tfmssass.stages.grader.combine import combine_graders

    path = combine_graders(list(grader_runs), out)
    click.echo(f"{path}: an ensemble of {len(grader_runs)} graders; export it with 'tfmssass export --grader {path}'")


@main.command()
@click.option("--keypoints", "keypoints_run", type=click.Path(exists=True, file_okay=False), required=True,
              help="Stage-1 training run folder.")
@click.option("--grader", "grader_run", type=click.Path(exists=True, file_okay=False), required=True,
              help="Stage-2 training run folder.")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="saved_models/<name>/<version>: a new numeric version folder (TF Serving layout).")
def export(keypoints_run, grader_run, out):
    """Export both stages as one SavedModel for TF Serving (plus metadata.json)."""
    from tfmssass.serving.export import export_runs

    try:
        path = export_runs(keypoints_run, grader_run, out)
    except (ValueError, OSError) as exc:
        _fail(str(exc), 2)
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6
    click.echo(f"{path}: SavedModel ({size:.1f} MB) with signatures serving_default, image_tensor, "
               "keypoints, grader; metadata.json beside it")


if __name__ == "__main__":
    main()
