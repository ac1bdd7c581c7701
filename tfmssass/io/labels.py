"""``labels.csv``: one row per radiograph with key points and per-corner grades (docs/architecture.md).

A corner cell holds a grade 0-3, ``NG`` (a reader's "not gradable") or nothing (not read). Reading
never turns either into 0: both are missing grades (pandas ``Int64`` NA), so every sum treats them as
the mSASSS rules do, and a ``NG`` is kept apart in a companion flag column (:func:`ng_column`) that the
code which must tell the two apart reads (training, exports, the workstation). Files written before
``NG`` existed read as before. Validation collects every problem with its CSV line instead of stopping
at the first.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tfmssass.core import anatomy
from tfmssass.core.atomic import atomic_path
from tfmssass.core.errors import TfmssassError

ID_COLUMNS = ("image", "patient_id", "visit_date", "view")
LABEL_COLUMNS = ID_COLUMNS + anatomy.ALL_KEYPOINT_COLUMNS + anatomy.ALL_CORNERS
#: What a reader writes in a corner cell for a corner that cannot be graded (hidden, covered, blurred).
NOT_GRADABLE = "NG"


def ng_column(corner: str) -> str:
    """The in-memory flag column of a corner: true where the file says ``NG`` (never written as such)."""
    return f"{corner}__ng"


NG_COLUMNS = tuple(ng_column(c) for c in anatomy.ALL_CORNERS)


def is_not_gradable(value) -> bool:
    """Whether a raw cell or value says "not gradable" (``NG`` in any case)."""
    return isinstance(value, str) and value.strip().upper() == NOT_GRADABLE


def corner_label(row, corner: str):
    """A label row's corner as a reader said it: a grade 0-3, :data:`NOT_GRADABLE`, or None (not read)."""
    if bool(row.get(ng_column(corner), False)) or is_not_gradable(row.get(corner)):
        return NOT_GRADABLE
    value = row.get(corner)
    return None if value is None or pd.isna(value) else int(value)


class LabelError(TfmssassError):
    """A label file that cannot be used; the message names the file and its problems."""

    def __init__(self, path, problems: list[str]):
        self.path, self.problems = str(path), list(problems)
        shown = "; ".join(self.problems[:5])
        more = f" (+{len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"{self.path}: {len(self.problems)} problem(s): {shown}{more}")


@dataclass
class LabelReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: images that could not be read: errors for ``labels check``; ``prepare`` prepares the rest, names
    #: them and exits 1, as it does for every bad input
    unreadable: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """Every error ``labels check`` reports (exit 1)."""
        return self.errors + self.unreadable


def empty_labels(n: int = 0) -> pd.DataFrame:
    """A label table with every contract column, typed, and ``n`` blank rows."""
    frame = pd.DataFrame(index=range(n))
    for col in ID_COLUMNS:
        frame[col] = pd.Series([None] * n, dtype="object")
    for col in anatomy.ALL_KEYPOINT_COLUMNS:
        frame[col] = np.nan
    for col in anatomy.ALL_CORNERS:
        frame[col] = pd.array([pd.NA] * n, dtype="Int64")
    for col in NG_COLUMNS:
        frame[col] = False
    return frame


def _csv_line(index: int) -> str:
    return f"line {index + 2}"  # header is line 1


def read_labels(path: str | Path) -> pd.DataFrame:
    """Read a label CSV as typed columns (missing contract columns are added blank).

    Grades that are not whole numbers are left as text here so :func:`validate_labels` can name
    them; call :func:`load_labels` for a checked table.
    """
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise LabelError(path, ["file not found"]) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise LabelError(path, [f"not a readable CSV ({str(exc).splitlines()[0]})"]) from None
    missing = [c for c in ("image", "view") if c not in raw.columns]
    if missing:
        raise LabelError(path, [f"missing required column(s): {', '.join(missing)}"])
    frame = raw.copy()
    for col in ID_COLUMNS:
        if col not in frame:
            frame[col] = None
        frame[col] = frame[col].astype("object").where(frame[col].notna(), None)
        frame[col] = frame[col].map(lambda v: v.strip() if isinstance(v, str) else v)
    for col in anatomy.ALL_KEYPOINT_COLUMNS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce") if col in frame else np.nan
    for col in anatomy.ALL_CORNERS:
        if col not in frame:
            frame[col] = pd.array([pd.NA] * len(frame), dtype="Int64")
            frame[ng_column(col)] = False
            continue
        frame[ng_column(col)] = frame[col].map(is_not_gradable).astype(bool)
        frame[col] = frame[col].where(~frame[ng_column(col)], None)
        numeric = pd.to_numeric(frame[col], errors="coerce")
        whole = numeric.notna() & (numeric == numeric.round())
        if whole.sum() == frame[col].notna().sum():
            frame[col] = numeric.astype("Int64")
        # else: keep text; validation reports the offending cells.
    for col in frame.columns:
        if col not in LABEL_COLUMNS and col not in NG_COLUMNS:  # extra columns: numbers when they all are, else text
            numeric = pd.to_numeric(frame[col], errors="coerce")
            if numeric.notna().sum() == frame[col].notna().sum():
                frame[col] = numeric
    ordered = list(LABEL_COLUMNS) + [c for c in frame.columns if c not in LABEL_COLUMNS]
    frame = frame[ordered]
    frame.attrs["source"] = str(path)
    return frame


def resolve_image(frame: pd.DataFrame, row) -> Path:
    """The image path of a label row: absolute, or relative to the label file's folder."""
    image = Path(str(row["image"]))
    if image.is_absolute():
        return image
    return Path(frame.attrs.get("source", ".")).parent / image


#: What ``tfmssass synth`` writes beside the labels and images it draws.
SYNTH_MANIFEST = "synth.json"


def drawn_by_synth(frame: pd.DataFrame) -> bool:
    """Whether every image of a label table is a phantom: a synth manifest beside the label file, or
    in a folder above each image (label files merged from several phantom sets keep their images in
    the sets' folders). A model trained on it must say it is phantom-trained in every output."""
    if (Path(frame.attrs.get("source", ".")).parent / SYNTH_MANIFEST).is_file():
        return True
    marked: dict[Path, bool] = {}

    def under_a_set(folder: Path) -> bool:
        if folder not in marked:
            marked[folder] = (folder / SYNTH_MANIFEST).is_file() or (
                folder.parent != folder and under_a_set(folder.parent))
        return marked[folder]

    return not frame.empty and all(under_a_set(resolve_image(frame, row).absolute().parent)
                                   for _, row in frame.iterrows())


def validate_labels(frame: pd.DataFrame, check_images: bool = True) -> LabelReport:
    """Every problem a trainer would trip over, each as 'line N: reason' (warnings separately)."""
    from tfmssass.io import RadiographError, image_size

    report = LabelReport()
    seen: dict[str, int] = {}
    for index, row in frame.iterrows():
        where = _csv_line(index)
        image = row["image"]
        if not isinstance(image, str) or not image.strip():
            report.errors.append(f"{where}: image is blank")
            continue
        controls = [f"{column} has a control character ({_control(row[column])!r})" for column in ID_COLUMNS
                    if isinstance(row[column], str) and _control(row[column])]
        if controls:  # a NUL in an id would make a new patient that prints like an old one
            report.errors.extend(f"{where}: {text}" for text in controls)
            continue
        if image in seen:
            report.errors.append(f"{where}: duplicate image {image} (first on {_csv_line(seen[image])})")
        seen.setdefault(image, index)
        view = row["view"]
        if view not in anatomy.LEVELS:
            report.errors.append(f"{where}: unknown view {view!r} (expected cervical or lumbar)")
            continue
        if not row["patient_id"]:
            report.errors.append(f"{where}: empty patient_id")
        date = row["visit_date"]
        try:
            _dt.date.fromisoformat(str(date))
            if len(str(date)) != 10:
                raise ValueError
        except ValueError:
            report.errors.append(f"{where}: visit_date {date!r} is not YYYY-MM-DD")

        grades = {corner: row[corner] for corner in anatomy.CORNERS[view]}
        for corner, value in grades.items():
            if not pd.isna(value) and _as_grade(value) is None:
                report.errors.append(f"{where}: grade {corner}={value} is not an integer 0-3 or {NOT_GRADABLE}")
        for level in anatomy.LEVELS[view]:
            upper, lower = anatomy.level_corners(level)
            pair = (_as_grade(grades[upper]), _as_grade(grades[lower]))
            if anatomy.BRIDGE_GRADE in pair and pair != (anatomy.BRIDGE_GRADE,) * 2:
                report.warnings.append(
                    f"{where}: {level} is bridged on one corner only ({upper}={_show(row, upper)}, "
                    f"{lower}={_show(row, lower)}); a bridge grades both corners 3"
                )

        size = None
        if check_images:
            path = resolve_image(frame, row)
            try:
                size = image_size(path)
            except RadiographError as exc:
                report.unreadable.append(f"{where}: image {path}: {exc.reason}")
        if "image_height" in frame and "image_width" in frame and size is None:
            if not pd.isna(row["image_height"]) and not pd.isna(row["image_width"]):
                size = (float(row["image_height"]), float(row["image_width"]))
        for level in anatomy.LEVELS[view]:
            cx, cy, ax, ay = (row[c] for c in anatomy.keypoint_columns(level))
            for name, x, y in (("centre", cx, cy), ("anterior", ax, ay)):
                if pd.isna(x) != pd.isna(y):
                    report.errors.append(f"{where}: {level} {name} point has only one coordinate")
                elif size is not None and not pd.isna(x):
                    height, width = size
                    if not (0 <= x < width and 0 <= y < height):
                        report.errors.append(
                            f"{where}: {level} {name} point ({x:.1f}, {y:.1f}) is outside the "
                            f"{int(width)}x{int(height)} image"
                        )
    return report


def _control(text: str) -> str:
    """The first control character in ``text`` (tab and the like included), or ''."""
    return next((c for c in text if ord(c) < 32 or 127 <= ord(c) < 160), "")


def _as_grade(value) -> int | None:
    """A valid grade 0-3 as int, else None (blank, text, fractions and out-of-range alike)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number != number or number != int(number) or not 0 <= number <= 3:
        return None
    return int(number)


def _show(row, corner: str) -> str:
    value = corner_label(row, corner) if pd.isna(row[corner]) else row[corner]
    return "blank" if value is None else str(value)


def count_corners(frame: pd.DataFrame) -> tuple[int, int]:
    """(graded corners, corners a reader called not gradable) of a label table."""
    graded = int(frame[list(anatomy.ALL_CORNERS)].notna().sum().sum())
    ng = int(frame[[c for c in NG_COLUMNS if c in frame]].sum().sum())
    return graded, ng


def load_labels(path: str | Path, check_images: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Read and validate as ``labels check`` does; raise :class:`LabelError` on its errors, return (table,
    warnings). Images that cannot be read are left to the caller, which reads each one and reports it."""
    frame = read_labels(path)
    report = validate_labels(frame, check_images=check_images)
    if report.errors:
        raise LabelError(path, report.errors)
    for corner in anatomy.ALL_CORNERS:
        frame[corner] = pd.to_numeric(frame[corner]).astype("Int64")
    return frame, report.warnings


def write_labels(frame: pd.DataFrame, path: str | Path) -> None:
    """Write atomically: contract columns in contract order, then any extra columns as they came."""
    out = frame.copy()
    for col in LABEL_COLUMNS:
        if col not in out:
            out[col] = pd.NA
    for corner in anatomy.ALL_CORNERS:  # a grade 0-3, NG (flag column or the cell itself), or blank
        flag = out[ng_column(corner)].fillna(False).astype(bool) if ng_column(corner) in out else False
        ng = out[corner].map(is_not_gradable) | flag
        numbers = pd.to_numeric(out[corner].where(~ng, None), errors="coerce").astype("Int64")
        out[corner] = [NOT_GRADABLE if n else ("" if pd.isna(v) else str(int(v))) for n, v in zip(ng, numbers)]
    out = out.drop(columns=[c for c in NG_COLUMNS if c in out])
    # points to 0.01 px; extra columns (e.g. a phantom's pixel spacing) keep their precision
    points = list(anatomy.ALL_KEYPOINT_COLUMNS)
    out[points] = out[points].apply(lambda col: col.map(lambda v: "" if pd.isna(v) else f"{float(v):.2f}"))
    columns = list(LABEL_COLUMNS) + [c for c in out.columns if c not in LABEL_COLUMNS]
    with atomic_path(path) as tmp:
        out[columns].to_csv(tmp, index=False, lineterminator="\n")
