"""Patient-level train/validation split, stratified by each patient's highest grade.

The paper split by radiograph and warned that this may leak one patient's anatomy into both sides;
we never put a patient on both sides. Stratifying by the highest grade keeps the rare severe
patients (bridges, syndesmophytes) in both sets.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfmssass.core import anatomy
from tfmssass.core.atomic import atomic_path


def patient_strata(frame: pd.DataFrame) -> pd.Series:
    """Highest grade of each patient over all radiographs and corners; -1 if never graded."""
    grades = frame[list(anatomy.ALL_CORNERS)].apply(pd.to_numeric, errors="coerce")
    highest = grades.max(axis=1).groupby(frame["patient_id"]).max()
    return highest.fillna(-1).astype(int)


def split_patients(frame: pd.DataFrame, val_fraction: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Columns patient_id, split ('train'|'val'), max_grade, radiographs; one row per patient.

    Patients are ordered by stratum then a seeded random key, and every 1/val_fraction-th one goes
    to validation (systematic sampling): each stratum gets its share, rounded, and the whole split
    hits the fraction to within one patient.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("val_fraction must be between 0 and 1")
    strata = patient_strata(frame)
    counts = frame.groupby("patient_id").size()
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {"patient_id": strata.index, "max_grade": strata.values, "key": rng.random(len(strata))}
    )
    table = table.sort_values(["max_grade", "key"], kind="stable").reset_index(drop=True)
    position = np.arange(len(table))
    offset = rng.random()  # where the sampling grid starts, so small sets vary with the seed
    is_val = np.floor((position + 1) * val_fraction + offset) > np.floor(position * val_fraction + offset)
    if len(table) >= 2 and not is_val.any():  # tiny sets: still one patient to validate on
        is_val[int(offset * len(table))] = True
    table["split"] = np.where(is_val, "val", "train")
    table["radiographs"] = table["patient_id"].map(counts).astype(int)
    return table[["patient_id", "split", "max_grade", "radiographs"]].sort_values(
        "patient_id", kind="stable"
    ).reset_index(drop=True)


def write_split(table: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")


def read_split(path) -> dict[str, str]:
    table = pd.read_csv(path, dtype={"patient_id": str})
    return dict(zip(table["patient_id"], table["split"]))
