"""What the model benches share: a phantom folder and the model to run (an exported model, or the two
training runs, or the shipped demo when neither is named)."""

from __future__ import annotations

import argparse


def parser(doc: str, phantoms_help: str) -> argparse.ArgumentParser:
    """An argument parser with ``--phantoms`` and the model options; the script adds its own."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--phantoms", required=True, help=phantoms_help)
    p.add_argument("--model", default=None, help="An exported model folder (default: the shipped demo).")
    p.add_argument("--keypoints", default=None, help="A stage-1 run folder (with --grader).")
    p.add_argument("--grader", default=None, help="A stage-2 run folder (with --keypoints).")
    return p


def open_model(args):
    """(predictor, its name in words) of the parsed options."""
    from tfmssass.serving.predictors import open_predictor

    predictor, text, _ = open_predictor(args.model, args.keypoints, args.grader)
    return predictor, text


def print_table(columns: list[str], rows: list[list]) -> None:
    """A Markdown table, as RESULTS.md holds them."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")
