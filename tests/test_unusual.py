"""What real archives hold besides textbook lateral films: films cut off at a level, implants, flexion
and extension, a transitional lumbosacral junction, and films that are not lateral spines at all. The
phantoms that stand for them, their honest labels, and how stage 1 learns from them."""

import hashlib
import math

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfmssass.core import anatomy
from tfmssass.io.labels import NOT_GRADABLE
from tfmssass.synth.others import OTHER_KINDS, make_other, other_case
from tfmssass.synth.phantoms import LORDOSIS_DEG, Case, build_spine, make_case, plan_case
from tfmssass.synth.sets import synthesize


def first_case(view: str, kind: str, seed: int = 7) -> Case:
    for patient in range(200):
        case = Case(seed, patient, 0, view, "realistic", 1.0)
        if plan_case(case).variant.kind == kind:
            return case
    raise AssertionError(f"no {kind} among 200 patients")


def digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.dcm"))}


@pytest.mark.slow
def test_a_set_without_unusual_films_is_byte_identical_to_one_made_before_them(tmp_path):
    # variants draw from their own stream: asking for none changes nothing, asking for some changes only those
    plain = synthesize(tmp_path / "plain", patients=2, visits=2, seed=5, workers=1, progress=False, style="geometric")
    some = synthesize(tmp_path / "some", patients=2, visits=2, seed=5, workers=1, progress=False, unusual=0.5,
                      style="geometric")
    assert "variant" not in plain.columns
    a, b = digests(tmp_path / "plain"), digests(tmp_path / "some")
    same = [image for image, variant in zip(some["image"], some["variant"]) if variant == ""]
    assert same and all(a[image] == b[image] for image in same)
    assert all(a[image] != b[image] for image in some.loc[some["variant"] != "", "image"])


@pytest.mark.parametrize("view", ["cervical", "lumbar"])
def test_a_film_cut_off_at_a_level_labels_only_the_levels_wholly_on_it(view):
    case = first_case(view, "cut")
    plan = plan_case(case)
    image, row, _ = make_case(case)
    assert image.shape == (row["image_height"], row["image_width"]) == (plan.rows[1] - plan.rows[0], plan.acq.width)
    levels = anatomy.LEVELS[view]
    off = set(levels[:plan.variant.cut_levels] if plan.variant.cut_side == "top" else levels[-plan.variant.cut_levels:])
    for level in levels:
        points = [row[c] for c in anatomy.keypoint_columns(level)]
        grades = [row[c] for c in anatomy.level_corners(level)]
        if level in off:  # off the film: no points, no grades (never 0)
            assert points == [None] * 4 and grades == [None, None]
        elif all(p is not None for p in points):
            x, y = points[0::2], points[1::2]
            assert all(0 <= v < row["image_width"] for v in x) and all(0 <= v < row["image_height"] for v in y)
    assert row["variant"].startswith(f"cut at the {plan.variant.cut_side}")


def test_levels_under_a_plate_are_not_gradable_and_the_metal_is_saturated():
    from tfmssass.stages.implants import dense_levels

    for view in ("cervical", "lumbar"):
        case = first_case(view, "plate")
        plan = plan_case(case)
        image, row, _ = make_case(case)
        plated = [anatomy.LEVELS[view][j] for j in plan.variant.plated]
        for level in plated:  # on the film, and a reader calls them not gradable
            assert [row[c] for c in anatomy.level_corners(level)] == [NOT_GRADABLE, NOT_GRADABLE]
        # the detector of metal-dense levels, on the labelled points, finds exactly the plated levels
        points = np.array([row[c] for level in anatomy.LEVELS[view] for c in anatomy.keypoint_columns(level)],
                          np.float32).reshape(12, 2)
        flagged = dense_levels(image, points).numpy()
        # the plated levels, and a level the shoulders wash out (NG without a plate): dense overlap is dense
        washed = [lv for lv in anatomy.LEVELS[view] if lv not in plated
                  and [row[c] for c in anatomy.level_corners(lv)] == [NOT_GRADABLE] * 2]
        assert [lv for lv, f in zip(anatomy.LEVELS[view], flagged) if f] == sorted(
            plated + washed, key=anatomy.LEVELS[view].index)
        # the same spine without the implant: nothing flagged
        plain, plain_row, _ = make_case(Case(case.seed, case.patient, case.visit, view, "realistic"))
        plain_points = np.array([plain_row[c] for level in anatomy.LEVELS[view]
                                 for c in anatomy.keypoint_columns(level)], np.float32).reshape(12, 2)
        hidden = [j for j, lv in enumerate(anatomy.LEVELS[view])
                  if plain_row[anatomy.level_corners(lv)[0]] in (None, NOT_GRADABLE)]
        assert not dense_levels(plain, plain_points).numpy()[[j for j in range(6) if j not in hidden]].any()


def test_the_implant_limit_rises_only_where_gradable_training_levels_saturate():
    from tfmssass.stages.implants import GRADABLE_BLANKED, MIN_SHARE, dense_levels, share_limit

    # clean films (no gradable level near saturation): the floor that finds plates on them
    assert share_limit(np.zeros(500)) == share_limit([]) == MIN_SHARE
    # processed films where 3% of the gradable levels are three-quarters white: above them
    shares = np.r_[np.zeros(970), np.full(30, 0.75)]
    limit = share_limit(shares)
    assert 0.75 < limit < 0.76 and (shares >= limit).mean() <= GRADABLE_BLANKED
    # the rule decides with the limit it is given: a square 30% white is metal at 0.1, not at the raised one
    image = np.full((200, 200), 0.5, np.float32)
    image[80:110, 100:140] = 1.0  # about 30% of the square around level 0's anterior point
    points = np.full((12, 2), np.nan, np.float32)
    points[0], points[1] = (70.0, 100.0), (120.0, 100.0)
    assert dense_levels(image, points).numpy()[0] and not dense_levels(image, points, limit).numpy()[0]


def test_a_model_decides_with_its_runs_implant_limit(tmp_path):
    from tfmssass.core.config import GraderConfig, KeypointConfig
    from tfmssass.serving.module import build_metadata
    from tfmssass.stages.implants import MIN_SHARE, read_share_limit, write_share_limit

    assert read_share_limit(tmp_path) == MIN_SHARE  # a run made before the limit was learnt
    write_share_limit(tmp_path, {"min_share": 0.62, "gradable_levels": 10})
    assert read_share_limit(tmp_path) == 0.62
    meta = build_metadata(KeypointConfig(), GraderConfig(), {}, {}, True, implant_share=read_share_limit(tmp_path))
    assert meta["implants"]["min_share"] == 0.62


def test_flexion_extension_and_a_transitional_junction_change_the_spine_not_the_labels():
    rng = lambda: np.random.default_rng(3)  # noqa: E731  the same spine drawn each time
    angle = lambda bodies: math.degrees(bodies[0].theta - bodies[-1].theta)  # noqa: E731  the curve, head to feet
    neutral, flexed, extended = (build_spine("cervical", rng(), 1.0, posture) for posture in (0.0, -40.0, 20.0))
    lordosis = rng().uniform(*LORDOSIS_DEG["cervical"])  # the first draw: the neutral curve
    assert angle(neutral) > 0 > angle(flexed)  # flexion reverses a cervical lordosis of at most 40 degrees
    assert angle(flexed) == pytest.approx(angle(neutral) * (lordosis - 40) / lordosis, rel=1e-9)
    assert angle(extended) == pytest.approx(angle(neutral) * (lordosis + 20) / lordosis, rel=1e-9)
    low, normal = build_spine("lumbar", rng(), 1.0, last_disk_scale=0.3), build_spine("lumbar", rng(), 1.0)

    def last_disk(bodies):
        return np.linalg.norm(bodies[-1].point(0, -bodies[-1].height / 2) - bodies[-2].point(0, bodies[-2].height / 2))

    assert last_disk(low) == pytest.approx(0.3 * last_disk(normal), rel=1e-6)
    for view, kind in (("cervical", "flexion"), ("lumbar", "transitional")):
        row = plan_case(first_case(view, kind)).row
        assert all(row[c] is not None for c in anatomy.CORNERS[view][:10])  # every level still labelled


def test_films_that_are_not_lateral_spines_are_written_apart_and_listed(tmp_path):
    frame = synthesize(tmp_path / "set", patients=1, visits=1, seed=2, workers=2, progress=False, negatives=1,
                       style="geometric")
    assert len(frame) == 2  # labels.csv lists the lateral films only
    negatives = pd.read_csv(tmp_path / "set" / "negatives.csv")
    assert sorted(negatives["kind"]) == sorted(OTHER_KINDS)
    from tfmssass.io.dicom import read_dataset

    for _, row in negatives.iterrows():
        ds = read_dataset(tmp_path / "set" / row["image"], stop_before_pixels=True)
        assert ds.PatientID == row["patient_id"] and ds.ImageComments.startswith("tfmssass synthetic")
        # an AP film says nothing of its projection, as many exports do: only the image can tell
        assert ("ViewPosition" in ds) == (not row["kind"].startswith("ap_"))
    image, _, _ = make_other(other_case(2, 0, "ap_lumbar", "realistic"))
    assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1 and image.std() > 0.1


@pytest.mark.slow
def test_negatives_are_prepared_with_every_point_known_absent(tmp_path):
    from tfmssass.data.tfrecords import RADIOGRAPHS, parse_radiograph, parse_radiograph_ids, read_records
    from tfmssass.stages.keypoints.orientation import NOT_LATERAL, _example, has_negatives
    from tfmssass.stages.prepare import prepare

    synthesize(tmp_path / "set", patients=3, visits=1, seed=4, workers=2, progress=False, negatives=2, style="geometric")
    index = prepare(tmp_path / "set" / "labels.csv", tmp_path / "data", negatives_csv=tmp_path / "set" / "negatives.csv",
                    workers=1, progress=False)
    assert sum(index["splits"][s]["views"].get("other", 0) for s in ("train", "val")) == 8
    assert index["training_data"]["patients"] == 3 and has_negatives(tmp_path / "data")
    labels = []
    for split in ("train", "val"):
        for record in read_records(tmp_path / "data", RADIOGRAPHS, split, repeat=False):
            image, points, weights = parse_radiograph(record)
            negative = parse_radiograph_ids(record)["view"].numpy() == b"other"
            if negative:
                assert not np.isfinite(points.numpy()).any() and (weights.numpy() == 1).all()
            _, label = _example(image, points, weights, tf.constant([1, 2]))
            labels.append((negative, int(label)))
    assert {label for negative, label in labels if negative} == {NOT_LATERAL}
    assert all(label < NOT_LATERAL for negative, label in labels if not negative)


def test_stage1_training_cuts_films_and_the_levels_cut_away_must_not_respond():
    from tfmssass.stages.keypoints.data import KeypointAugment, make_sample_fn

    image = tf.random.uniform([400, 300], seed=1)
    points = np.full((24, 2), np.nan, np.float32)
    points[:12] = np.stack([np.full(12, 150.0), np.linspace(40, 360, 12)], 1)  # a cervical chain down the film
    weights = np.ones(24, np.float32)
    augment = KeypointAugment(cut_probability=1.0, cut_share=0.5, whole_image_probability=1.0, rotation_deg=0,
                              zoom=(1, 1), shift=0, flip_probability=0)
    fn = make_sample_fn((256, 192), 2.0, augment, seed=3)
    seen_cut = set()
    for counter in range(12):
        _, packed = fn(tf.constant(counter, tf.int64), image, tf.constant(points), tf.constant(weights))
        targets, w = packed[..., :24].numpy(), packed[0, 0, 24:].numpy()
        peaks = targets[..., :12].max(axis=(0, 1))
        assert (w == 1).all() and (targets[..., 12:] == 0).all()
        on = np.flatnonzero(peaks > 0.5)
        assert len(on) and on[-1] - on[0] + 1 == len(on)  # what is left is one run: the top or the bottom was cut
        assert (np.delete(peaks, on) == 0).all()  # cut away: an empty heatmap, and still supervised
        seen_cut.add((on[0] > 0, on[-1] < 11))
    assert {(True, False), (False, True)} <= seen_cut  # both sides are cut across the draws


def test_stage1_cut_films_lose_one_to_three_whole_levels_and_the_rest_keep_their_names():
    """A cut drawn by level: the edge runs between two disks, 1-3 whole levels (both points) fall off one end,
    and each level left on the film is still supervised at its own channel (its name), at its own place."""
    from tfmssass.stages.keypoints.data import KeypointAugment, cut_film, on_film

    image = tf.zeros([900, 300])
    points = np.full((24, 2), np.nan, np.float32)
    for j in range(6):  # a lumbar chain: disk centre and anterior point 120 px apart
        points[12 + 2 * j] = (140.0, 150.0 + 120 * j)
        points[12 + 2 * j + 1] = (190.0, 145.0 + 120 * j)
    augment = KeypointAugment(cut_probability=1.0)
    lost = set()
    for counter in range(40):
        cut, moved = cut_film(image, tf.constant(points), augment, tf.constant([5, counter], tf.int64))
        seen = on_film(moved, cut).numpy()[12:].reshape(6, 2)
        assert (seen[:, 0] == seen[:, 1]).all()  # a level is on the film whole, or off it whole
        kept = np.flatnonzero(seen[:, 0])
        off = 6 - len(kept)
        assert 1 <= off <= 3 and kept[-1] - kept[0] + 1 == len(kept)  # one end lost 1-3 levels
        shift = float(points[12, 1] - moved.numpy()[12, 1])  # rows cut from the top
        np.testing.assert_allclose(moved.numpy()[12:][np.repeat(seen[:, 0], 2)],
                                   (points[12:] - [0, shift])[np.repeat(seen[:, 0], 2)])  # names and places kept
        edge = 0.0 if kept[0] > 0 else float(cut.shape[0])  # the film's first or last row
        disks = points[12::2, 1] - shift
        assert np.abs(disks - edge).min() > 0.25 * 120  # the edge runs between disks, not through one
        lost.add((kept[0] > 0, off))
    assert {side for side, _ in lost} == {True, False} and {n for _, n in lost} == {1, 2, 3}


def test_levels_the_film_does_not_reach_are_told_by_where_they_would_have_to_be():
    from tfmssass.stages.keypoints.film_edge import levels_on_film

    def on(centres, height, confident=None):
        sure = np.ones(6, bool) if confident is None else confident
        return levels_on_film(np.array(centres, np.float32), sure, height, 300).numpy().tolist()

    chain = [[150.0, y] for y in (100, 200, 300, 400, 500, 600)]  # steps of 100 px down the film
    assert on(chain, 700) == [True] * 6  # a whole chain well inside: nothing changes
    # cut above the third level (the film starts at y=240): stage 1 piles the two missing levels at
    # the edge, over the first level that is there, as confident as the rest
    piled = [[150.0, 250.0], [152.0, 255.0]] + chain[2:]
    assert on(np.subtract(piled, [0, 240]), 460) == [False, False, True, True, True, True]
    # or throws the last missing one back up the spine: cut below the fourth level (the film ends at y=460)
    thrown = chain[:4] + [[150.0, 455.0], [150.0, 150.0]]
    assert on(thrown, 460) == [True, True, True, True, False, False]
    # a level whose centre sits within half a step of the edge cannot have both corners on the film
    assert on(np.subtract(chain, [0, 60]), 640) == [False, True, True, True, True, True]
    # an unsure level inside the film is on it (the gate or the grader decide about it), and a chain
    # with no two sure neighbours is left alone
    assert on(chain, 700, np.array([False, True, True, True, True, False])) == [True] * 6
    assert on(piled, 700, np.eye(6, dtype=bool)[2]) == [True] * 6


def test_a_film_cut_off_near_the_spine_is_scored_only_from_a_clear_end_of_its_chain(phantoms):
    # a reader names the levels of a cut film by counting from an end they can see (C2, or C7-T1 below
    # it; T12-L1, or the sacrum): with one end at the film's edge and the other hidden, nobody can
    from score_doubles import scoring_models, settings

    from tfmssass.io import read_radiograph
    from tfmssass.scoring.record_maker import UNANCHORED_REASON, Item, RecordMaker
    from tfmssass.stages.grader.grades import NOT_GRADABLE as NG_BIT

    predictor = scoring_models(phantoms / "labels.csv")
    maker = RecordMaker(predictor.metadata, settings(), None)
    row = pd.read_csv(phantoms / "labels.csv").query("view == 'cervical'").iloc[0]
    image = read_radiograph(phantoms / row["image"]).image.astype(np.float32)
    whole = predictor.predict([image], ["cervical"])[0]
    item = Item(phantoms / row["image"], row["image"], image=image)
    assert maker.make(item, whole).scored and not maker.make(item, whole).film_edge

    def variant(end, in_steps, bottom_hidden):
        """The chain moved so that its top (or bottom) disk lies ``in_steps`` inside the film's edge."""
        out = {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in whole.items()}
        centres = out["keypoints"][0:12:2]
        step = float(np.median(np.diff(centres[:, 1])))
        edge = in_steps * step if end == "top" else image.shape[0] - 1 - in_steps * step
        out["keypoints"][:12, 1] -= centres[0 if end == "top" else 5, 1] - edge
        if bottom_hidden:  # C7-T1's corners judged not gradable (under the shoulders)
            out["grades"][10:12], out["review_reason"][10:12] = -2, NG_BIT
        return maker.make(item, out)

    seen_below = variant("top", 0.5, bottom_hidden=False)  # C2-C3 at the edge, C7-T1 seen: counted from below
    assert seen_below.scored and seen_below.film_edge
    assert all(c.review for c in seen_below.corners if c.grade is not None)
    refused = variant("top", 0.5, bottom_hidden=True)
    assert not refused.scored and refused.reason == UNANCHORED_REASON.format(first="C2-C3", last="C7-T1")
    assert not refused.corners  # no grade at all, not even on the levels it read
    seen_above = variant("bottom", 0.5, bottom_hidden=True)  # cut below, C2-C3 seen: counted from the top
    assert seen_above.scored and seen_above.film_edge


def test_a_chain_that_ends_at_the_film_edge_sends_its_grades_to_review():
    # stage 1 may name every level one off on a film cut just past a level: no rule sees it, a reader must
    from tfmssass.scoring.record_maker import chain_at_film_edge

    chain = np.array([[150.0, y] for y in (200, 300, 400, 500, 600, 700)])
    whole = np.ones(6, bool)
    assert not chain_at_film_edge(chain, whole, 900, 300)  # both ends two steps inside
    assert chain_at_film_edge(chain - [0, 120], whole, 900, 300)  # the first level 80 px from the top
    assert chain_at_film_edge(chain, whole, 760, 300)  # the last 59 px from the bottom
    assert chain_at_film_edge(chain, np.array([False, True, True, True, True, True]), 900, 300)  # a level cut off
    pointless = chain.copy()
    pointless[0] = np.nan  # a level without points does not count: the next one is two steps inside
    assert not chain_at_film_edge(pointless - [0, 100], whole, 900, 300)
