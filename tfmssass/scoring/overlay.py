"""Pictures to check a scoring run: the radiograph with its disk points, corner crops and grades.

A reader should be able to see at a glance whether the points sit on the right disks and which
grades to look at again: each disk space is named behind its centre point, each corner's grade is
written beside it in its grade's colour, corners flagged for review get a magenta ring and a "?",
ungraded corners a grey "-", corners judged not gradable a grey "NG"; a legend under the picture says what
the marks are.
"""

from __future__ import annotations

import cv2
import numpy as np

from tfmssass.core.geometry import corner_marks

#: BGR colour per grade: green, yellow, orange, red.
GRADE_COLOURS = {0: (80, 200, 80), 1: (0, 215, 255), 2: (0, 140, 255), 3: (60, 60, 235)}
MISSING_COLOUR = (160, 160, 160)
REVIEW_COLOUR = (255, 0, 255)
CENTRE_COLOUR = (255, 255, 0)
ANTERIOR_COLOUR = (0, 255, 255)
BOX_COLOUR = (200, 160, 0)
#: Long side of an overlay in pixels.
OVERLAY_LONG_SIDE = 1024


def _unit(v):
    n = float(np.hypot(*v))
    return np.asarray(v, float) / n if n > 0 else np.zeros(2)


def draw_overlay(image: np.ndarray, scale: float, levels: list[dict], corners: dict[str, tuple],
                 caption: list[str], extent: float) -> np.ndarray:
    """BGR overlay of a grey uint8 ``image`` already shrunk by ``scale`` (overlay px / original px).

    ``levels``: dicts with level, c, a, up (original pixels; up points cranially) and the two
    corner names; ``corners``: corner name → (grade, "NG" if judged not gradable, or None if not graded; to
    review).
    """
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    thick = max(1, round(max(image.shape) / 600))
    font = 0.45 * max(image.shape) / 1024 * 1.6
    grade_font = font * 1.4
    for lv in levels:
        c, a = np.asarray(lv["c"], float) * scale, np.asarray(lv["a"], float) * scale
        u = _unit(a - c)
        v = _unit(lv["up"])
        v = v - u * float(np.dot(v, u))  # cranial, perpendicular to the disk
        v = _unit(v)
        depth = float(np.hypot(*(a - c)))
        half = extent * depth / 2.0
        box = np.array([c + half * (su * u + sv * v) for su, sv in ((1, 1), (1, -1), (-1, -1), (-1, 1))])
        cv2.polylines(canvas, [np.round(box).astype(np.int32)], True, BOX_COLOUR, thick, cv2.LINE_AA)
        cv2.circle(canvas, tuple(np.round(c).astype(int)), 2 * thick + 1, CENTRE_COLOUR, -1, cv2.LINE_AA)
        cv2.circle(canvas, tuple(np.round(a).astype(int)), 2 * thick + 1, ANTERIOR_COLOUR, -1, cv2.LINE_AA)
        (w, h), _ = cv2.getTextSize(lv["level"], cv2.FONT_HERSHEY_SIMPLEX, font, thick)
        behind = c - u * (half + 6 * thick) - (w if u[0] > 0 else 0, -h / 2)  # posterior of the box, not on the corners
        _outlined(canvas, lv["level"], behind, font, (255, 255, 255), thick)
        marks = corner_marks(c, a, lv["up"])
        for name, at in ((lv["inf_corner"], marks[0]), (lv["sup_corner"], marks[1])):
            grade, review = corners.get(name, (None, False))
            text = "-" if grade is None else grade if isinstance(grade, str) else str(int(grade))
            colour = MISSING_COLOUR if grade is None or isinstance(grade, str) else GRADE_COLOURS[int(grade)]
            if review:
                cv2.circle(canvas, tuple(np.round(at).astype(int)), int(depth * 0.3) + 2, REVIEW_COLOUR,
                           thick, cv2.LINE_AA)
                text += "?"
            _outlined(canvas, text, at + (-4 * grade_font, 5 * grade_font), grade_font, colour, thick + 1)
    line_h = int(26 * font / 0.7) + 4
    band = np.zeros((line_h * (len(caption) + 1) + 8, canvas.shape[1], 3), np.uint8)
    for i, line in enumerate(caption):
        cv2.putText(band, line, (6, line_h * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, font * 0.8,
                    (255, 255, 255), 1, cv2.LINE_AA)
    _legend(band, line_h * (len(caption) + 1), line_h, font * 0.8)
    return np.concatenate([canvas, band], axis=0)


def _outlined(canvas, text: str, origin, font: float, colour, thick: int) -> None:
    """Text with a black outline, readable on bone and on air."""
    at = tuple(np.round(origin).astype(int))
    cv2.putText(canvas, text, at, cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(canvas, text, at, cv2.FONT_HERSHEY_SIMPLEX, font, colour, thick, cv2.LINE_AA)


def _legend(band: np.ndarray, baseline: int, line_h: int, font: float) -> None:
    """One line saying what the marks are: the two points, the crop the grader saw, the grade colours,
    a corner to review, one not graded and one not gradable."""
    x, r = 6, max(3, line_h // 5)
    mid = baseline - line_h // 3

    def words(text, colour=(255, 255, 255)):
        nonlocal x
        cv2.putText(band, text, (x, baseline), cv2.FONT_HERSHEY_SIMPLEX, font, colour, 1, cv2.LINE_AA)
        x += cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, 1)[0][0] + 4

    def dot(colour):
        nonlocal x
        cv2.circle(band, (x + r, mid), r, colour, -1, cv2.LINE_AA)
        x += 2 * r + 4

    dot(CENTRE_COLOUR), words("disk centre  ")
    dot(ANTERIOR_COLOUR), words("anterior point  ")
    cv2.rectangle(band, (x, mid - r), (x + 2 * r, mid + r), BOX_COLOUR, 1)
    x += 2 * r + 4
    words("crops graded  grades")
    for g, colour in GRADE_COLOURS.items():
        words(str(g), colour)
    cv2.circle(band, (x + 2 * r, mid), 2 * r, REVIEW_COLOUR, 1, cv2.LINE_AA)
    x += 4 * r + 4
    words("? to review  ")
    words("-", MISSING_COLOUR), words("not graded  ")
    words("NG", MISSING_COLOUR), words("not gradable")


def shrink_for_overlay(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Display image [H, W] in [0, 1] → uint8 with long side ≤ OVERLAY_LONG_SIDE, and the scale."""
    scale = min(1.0, OVERLAY_LONG_SIDE / max(image.shape))
    small = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.rint(np.clip(small, 0, 1) * 255).astype(np.uint8), scale
