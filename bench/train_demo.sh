#!/usr/bin/env bash
# Trains the shipped phantom demo models from nothing, on the 2-core CPU machine (about 1.5 h).
# Usage: bench/train_demo.sh WORKDIR   (phantoms and run folders go there)
# Seeds, sizes, presets and epochs are fixed here; the held-out check uses other seeds (bench/).
set -euo pipefail
work=${1:?usage: bench/train_demo.sh WORKDIR}
mkdir -p "$work"
tfmssass synth "$work/train_ph" --patients 120 --visits 2 --seed 100 --difficulty realistic --resume
tfmssass train keypoints --labels "$work/train_ph/labels.csv" --out "$work/keypoints" --preset small --epochs 20
tfmssass train grader --labels "$work/train_ph/labels.csv" --out "$work/grader" --preset small --epochs 60
