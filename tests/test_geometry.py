"""The canonical corner crop: anterior to +x, cranial up, graded corner in one place; invertible."""

import numpy as np
import pytest

from tfmssass.core import anatomy
from tfmssass.core.geometry import corner_frames, cranial_directions, disk_angle, level_frame


def test_disk_angle():
    assert disk_angle((0, 0), (10, 0)) == pytest.approx(0)
    assert disk_angle((0, 0), (0, 10)) == pytest.approx(90)  # y points down in images
    assert disk_angle((5, 5), (0, 0)) == pytest.approx(-135)


@pytest.mark.parametrize("angle", [0, 17, 90, 160, -120])
@pytest.mark.parametrize("facing", [1, -1])
def test_round_trip_and_orientation(angle, facing):
    rng = np.random.default_rng(angle + 200 + 1000 * (facing > 0))
    c = np.array([812.3, 1405.7])
    t = np.radians(angle)
    u = np.array([np.cos(t), np.sin(t)]) * facing  # centre → anterior direction
    a = c + 55.0 * u
    perp = np.array([-u[1], u[0]])
    cranial = perp if rng.random() < 0.5 else -perp
    frame = level_frame(c, a, cranial, size=(224, 224))
    pts = rng.uniform(0, 3000, size=(50, 2))
    np.testing.assert_allclose(frame.inverse(frame.forward(pts)), pts, atol=0.5)
    centre, anterior, up = frame.forward([c, a, c + 20 * cranial])
    np.testing.assert_allclose(centre, [111.5, 111.5], atol=1e-6)
    assert anterior[0] > centre[0] + 50 and abs(anterior[1] - centre[1]) < 1e-6  # anterior → +x
    assert up[1] < centre[1] - 10  # cranial → up
    flipped = level_frame(c, a, cranial, size=(224, 224), flip_vertical=True)
    assert flipped.forward([c + 20 * cranial])[0][1] > 111.5 + 10  # cranial now down


def test_warp_puts_each_graded_corner_top_right():
    """Draw two labelled dots on a tilted image: every corner's crop shows its own dot top-right."""
    import cv2

    view = "lumbar"
    image = np.zeros((1200, 1000), np.float32)
    angle = np.radians(25)
    axis = np.array([np.sin(angle), np.cos(angle)])  # cranial→caudal
    anterior_dir = -np.array([np.cos(angle), -np.sin(angle)])  # patient faces left
    points = {}
    dots = {}
    for i, level in enumerate(anatomy.LEVELS[view]):
        c = np.array([500, 150]) + axis * 140 * i
        a = c + anterior_dir * 40
        points[level] = (*c, *a)
        upper, lower = anatomy.level_corners(level)
        dots[upper] = a - axis * 12  # upper vertebra's lower corner: cranial of the disk
        dots[lower] = a + axis * 12
    frames = corner_frames(points, view, size=(64, 64))
    assert set(frames) == set(anatomy.CORNERS[view])
    for corner, frame in frames.items():
        canvas = image.copy()
        cv2.circle(canvas, tuple(int(round(v)) for v in dots[corner]), 4, 1.0, -1)
        crop = frame.warp(canvas)
        y, x = np.unravel_index(np.argmax(crop), crop.shape)
        assert x > 31.5 + 15 and y < 31.5 - 4, (corner, x, y)  # right of and above the centre, for _inf and _sup alike


def test_missing_levels_are_left_out_not_guessed():
    points = {"C2-C3": (100, 100, 140, 100), "C3-C4": (100, 150, 140, 150),
              "C5-C6": (np.nan, np.nan, np.nan, np.nan)}
    frames = corner_frames(points, "cervical")
    assert set(frames) == {"C2_inf", "C3_sup", "C3_inf", "C4_sup"}
    alone = corner_frames({"C4-C5": (100, 100, 140, 100)}, "cervical")
    assert alone == {}  # one level cannot tell cranial from caudal
    dirs = cranial_directions(np.array([[0, 0], [np.nan, np.nan], [0, 20.0]]))
    np.testing.assert_allclose(dirs[0], [0, -20]) and np.testing.assert_allclose(dirs[2], [0, -20])
