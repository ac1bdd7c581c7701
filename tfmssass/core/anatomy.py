"""The mSASSS anatomy contract: views, disk levels, corners, key-point and grade columns.

Everything else names levels and corners through this module, so the spelling lives in one place
(see docs/architecture.md: a disk level ``X-Y`` owns the corners ``X_inf`` and ``Y_sup``).
"""

from __future__ import annotations

VIEWS: tuple[str, ...] = ("cervical", "lumbar")

LEVELS: dict[str, tuple[str, ...]] = {
    "cervical": ("C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7", "C7-T1"),
    "lumbar": ("T12-L1", "L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"),
}

#: mSASSS grades and what a reader means by them.
GRADES: dict[int, str] = {
    0: "normal",
    1: "erosion, sclerosis or squaring",
    2: "syndesmophyte",
    3: "total bony bridge",
}

#: The two key points of every disk level: disk-space centre and anterior disk point.
POINTS: tuple[str, ...] = ("c", "a")


def level_corners(level: str) -> tuple[str, str]:
    """The two corners a disk level owns: lower corner of the upper vertebra, upper of the lower."""
    upper, lower = level.split("-")
    return f"{upper}_inf", f"{lower}_sup"


CORNERS: dict[str, tuple[str, ...]] = {
    view: tuple(corner for level in levels for corner in level_corners(level))
    for view, levels in LEVELS.items()
}

ALL_LEVELS: tuple[str, ...] = LEVELS["cervical"] + LEVELS["lumbar"]
ALL_CORNERS: tuple[str, ...] = CORNERS["cervical"] + CORNERS["lumbar"]

#: Which level owns a corner, and which view a level or corner belongs to.
CORNER_LEVEL: dict[str, str] = {
    corner: level for level in ALL_LEVELS for corner in level_corners(level)
}
LEVEL_VIEW: dict[str, str] = {level: view for view, levels in LEVELS.items() for level in levels}
CORNER_VIEW: dict[str, str] = {corner: LEVEL_VIEW[level] for corner, level in CORNER_LEVEL.items()}

#: Grade 3 spans a disk space, so it belongs to both corners of a level at once.
BRIDGE_GRADE = 3


def keypoint_columns(level: str) -> tuple[str, str, str, str]:
    """Label-file columns of one level's two points: centre x/y, anterior x/y (original pixels)."""
    return f"{level}_cx", f"{level}_cy", f"{level}_ax", f"{level}_ay"


def view_keypoint_columns(view: str) -> tuple[str, ...]:
    return tuple(col for level in LEVELS[view] for col in keypoint_columns(level))


ALL_KEYPOINT_COLUMNS: tuple[str, ...] = view_keypoint_columns("cervical") + view_keypoint_columns(
    "lumbar"
)

#: Point names as a key-point model (and COCO) lists them: ``C2-C3_c``, ``C2-C3_a``, ...
def point_names(view: str) -> tuple[str, ...]:
    return tuple(f"{level}_{p}" for level in LEVELS[view] for p in POINTS)


def check_view(view: str) -> str:
    if view not in LEVELS:
        raise ValueError(f"unknown view {view!r} (expected one of {', '.join(VIEWS)})")
    return view


#: Point order of every 24-point array (network outputs, records, detections): cervical then
#: lumbar, per level centre then anterior. ``VIEW_SLICES`` picks one view's 12.
POINT_NAMES: tuple[str, ...] = point_names("cervical") + point_names("lumbar")
NUM_POINTS = len(POINT_NAMES)
VIEW_SLICES = {"cervical": slice(0, 12), "lumbar": slice(12, 24)}
