"""COCO-keypoints JSON ↔ labels.csv, so annotations made in CVAT or Label Studio can be used.

One COCO category per view (``cervical_spine``, ``lumbar_spine``) whose keypoint names are
``<level>_c`` and ``<level>_a`` (e.g. ``C2-C3_c``). Coordinates are pixel indices, as COCO and
labels.csv both use them. Grades travel as annotation ``attributes`` named after the corners
(CVAT exports attributes there), each a grade 0-3 or ``NG`` (not gradable); patient and visit as image
fields ``patient_id``/``visit_date``.
Visibility 0 means the point was not placed: it stays blank, never (0, 0).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from tfmssass.core import anatomy
from tfmssass.core.atomic import write_text
from tfmssass.core.errors import TfmssassError
from tfmssass.io.labels import corner_label, empty_labels, is_not_gradable, ng_column, resolve_image

CATEGORY_NAMES = {"cervical": "cervical_spine", "lumbar": "lumbar_spine"}
_PATIENT_DATE = re.compile(r"(?:^|/)([^/]+)/(\d{4}-\d{2}-\d{2})/[^/]+$")


class CocoError(TfmssassError):
    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")


def _skeleton(view: str) -> list[list[int]]:
    """1-based point pairs: each level's centre–anterior, and centre to the next level's centre."""
    n = len(anatomy.LEVELS[view])
    pairs = [[2 * i + 1, 2 * i + 2] for i in range(n)]
    pairs += [[2 * i + 1, 2 * i + 3] for i in range(n - 1)]
    return pairs


def labels_to_coco(frame: pd.DataFrame) -> dict:
    """Convert a label table (with ``attrs['source']`` for relative paths) to a COCO dict."""
    from tfmssass.io import image_size

    categories = [
        {
            "id": i + 1,
            "name": CATEGORY_NAMES[view],
            "supercategory": "spine",
            "keypoints": list(anatomy.point_names(view)),
            "skeleton": _skeleton(view),
        }
        for i, view in enumerate(anatomy.VIEWS)
    ]
    cat_id = {view: i + 1 for i, view in enumerate(anatomy.VIEWS)}
    images, annotations = [], []
    for n, (_, row) in enumerate(frame.iterrows(), start=1):
        view = row["view"]
        try:
            height, width = image_size(resolve_image(frame, row))
        except Exception:  # noqa: BLE001 - size is informative only
            height = width = None
        images.append(
            {
                "id": n,
                "file_name": str(row["image"]),
                "width": width,
                "height": height,
                "patient_id": row["patient_id"],
                "visit_date": row["visit_date"],
                "view": view,
            }
        )
        keypoints, xs, ys = [], [], []
        for level in anatomy.LEVELS[view]:
            cx, cy, ax, ay = (row[c] for c in anatomy.keypoint_columns(level))
            for x, y in ((cx, cy), (ax, ay)):
                if pd.isna(x) or pd.isna(y):
                    keypoints += [0.0, 0.0, 0]
                else:
                    keypoints += [round(float(x), 2), round(float(y), 2), 2]
                    xs.append(float(x))
                    ys.append(float(y))
        bbox = [0.0, 0.0, 0.0, 0.0]
        if xs:
            bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        attributes = {corner: corner_label(row, corner) for corner in anatomy.CORNERS[view]
                      if corner_label(row, corner) is not None}  # a grade 0-3 or "NG"
        annotations.append(
            {
                "id": n,
                "image_id": n,
                "category_id": cat_id[view],
                "keypoints": keypoints,
                "num_keypoints": len(xs),
                "bbox": [round(v, 2) for v in bbox],
                "area": round(bbox[2] * bbox[3], 2),
                "iscrowd": 0,
                "attributes": attributes,
            }
        )
    return {
        "info": {"description": "tfmssass mSASSS disk points and corner grades"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def write_coco(frame: pd.DataFrame, path: str | Path) -> None:
    write_text(path, json.dumps(labels_to_coco(frame), indent=1) + "\n")


def _point_index(category: dict, path) -> tuple[str, dict[int, tuple[str, str]]]:
    """The view of a COCO category and, per keypoint index, (level, 'c'|'a')."""
    names = category.get("keypoints") or []
    mapping: dict[int, tuple[str, str]] = {}
    views = set()
    unknown = []
    for i, name in enumerate(names):
        level, _, point = str(name).rpartition("_")
        if level in anatomy.LEVEL_VIEW and point in anatomy.POINTS:
            mapping[i] = (level, point)
            views.add(anatomy.LEVEL_VIEW[level])
        else:
            unknown.append(str(name))
    if unknown or len(views) != 1:
        raise CocoError(
            path,
            f"category {category.get('name')!r}: keypoint names must be <level>_c / <level>_a of one "
            f"view (e.g. C2-C3_c); not understood: {', '.join(unknown) or 'mixed views'}",
        )
    return views.pop(), mapping


def coco_to_labels(path: str | Path, images_root: str | Path | None = None,
                   labels_dir: str | Path | None = None) -> pd.DataFrame:
    """Read a COCO-keypoints file into a label table.

    ``file_name`` is taken relative to ``images_root`` (default: the JSON's folder) and written
    relative to ``labels_dir`` (where labels.csv will live) when possible, else absolute.
    """
    path = Path(path)
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CocoError(path, f"not a readable JSON file ({exc})") from None
    if not isinstance(coco, dict) or not {"images", "annotations", "categories"} <= set(coco):
        raise CocoError(path, "not a COCO file (needs images, annotations and categories)")
    root = Path(images_root) if images_root else path.parent
    out_dir = Path(labels_dir).resolve() if labels_dir else None
    cats = {c["id"]: _point_index(c, path) for c in coco["categories"] if c.get("keypoints")}
    if not cats:
        raise CocoError(path, "no keypoint category")

    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        if ann.get("category_id") in cats:
            by_image.setdefault(ann["image_id"], []).append(ann)

    frame = empty_labels(len(coco["images"]))
    for i, image in enumerate(coco["images"]):
        file_path = Path(image["file_name"])
        full = file_path if file_path.is_absolute() else root / file_path
        shown = str(full)
        if out_dir is not None:
            try:
                shown = str(full.resolve().relative_to(out_dir))
            except ValueError:
                shown = str(full.resolve())
        frame.at[i, "image"] = shown
        views = set()
        for ann in by_image.get(image["id"], []):
            view, mapping = cats[ann["category_id"]]
            views.add(view)
            values = ann.get("keypoints") or []
            for k, (level, point) in mapping.items():
                x, y, v = (values[3 * k: 3 * k + 3] + [0, 0, 0])[:3]
                if v and v > 0:
                    frame.at[i, f"{level}_{point}x"] = float(x)
                    frame.at[i, f"{level}_{point}y"] = float(y)
            for corner, grade in (ann.get("attributes") or {}).items():
                if corner in anatomy.CORNER_VIEW and is_not_gradable(grade):
                    frame.at[i, ng_column(corner)] = True
                elif corner in anatomy.CORNER_VIEW and grade not in (None, ""):
                    frame.at[i, corner] = int(grade)
        view = image.get("view") or (views.pop() if len(views) == 1 else None)
        frame.at[i, "view"] = view
        patient, date = image.get("patient_id"), image.get("visit_date")
        match = _PATIENT_DATE.search(file_path.as_posix())
        if (not patient or not date) and match:
            patient, date = patient or match.group(1), date or match.group(2)
        if (not patient or not date) and full.is_file():
            patient, date = _from_dicom_header(full, patient, date)
        frame.at[i, "patient_id"] = patient
        frame.at[i, "visit_date"] = date
    frame.attrs["source"] = str((out_dir or Path.cwd()) / "labels.csv")
    return frame


def _from_dicom_header(path: Path, patient, date):
    from tfmssass.io import RadiographError
    from tfmssass.io.dicom import header_metadata

    try:
        meta = header_metadata(path)
    except RadiographError:
        return patient, date
    return patient or meta["patient_id"], date or meta["study_date"]


__all__ = ["CocoError", "coco_to_labels", "labels_to_coco", "write_coco"]
