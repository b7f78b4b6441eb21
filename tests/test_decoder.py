"""Decoder: sub-pixel peaks, encode -> decode round trips, assembly, robustness, spec."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bpnet.bench.decode import synthetic_people
from bpnet.config.inference import InferenceSpec
from bpnet.config.loader import load_spec
from bpnet.decode import DecoderParams, People, decode, find_peaks
from bpnet.errors import SpecError
from bpnet.pose import load_pose_config
from bpnet.targets import encode

POSE = load_pose_config()
SIZE = (368, 368)


def encoded(keypoints: np.ndarray, size=SIZE, pose=POSE):
    return encode(keypoints, np.ones(size, np.uint8), pose)


def in_view(keypoints: np.ndarray, size=SIZE) -> np.ndarray:
    """Unlabel joints outside the input (their peaks sit on the border, not at the joint)."""
    out = keypoints.copy()
    outside = (out[..., 0] < 0) | (out[..., 1] < 0)
    outside |= (out[..., 0] > size[1] - 1) | (out[..., 1] > size[0] - 1)
    out[outside] = 0
    return out


def largest_component(labelled: np.ndarray, limbs) -> set[int]:
    """Joints of the biggest connected piece of a person's labelled skeleton."""
    best: set[int] = set()
    seen: set[int] = set()
    for start in np.flatnonzero(labelled):
        if start in seen:
            continue
        piece, todo = set(), [int(start)]
        while todo:
            j = todo.pop()
            if j in piece:
                continue
            piece.add(j)
            todo += [
                b if a == j else a for a, b in limbs if j in (a, b) and labelled[a] & labelled[b]
            ]
        seen |= piece
        best = max(best, piece, key=len)
    return best


def check_round_trip(
    truth: np.ndarray, people: People, pose=POSE, tol: float = 2.0, strict: bool = True
) -> None:
    """Check decoded people against the encoded ones.

    Always: every decoded joint lies within ``tol`` px of a labelled joint of its type, and
    every person whose labelled skeleton has a connected piece of >= 3 joints has that whole
    piece, each joint within ``tol`` px, inside one decoded person. With ``strict`` (no
    fragment merging, so PAFs alone decide): every decoded person is one true person and
    holds all the joints its PAF-connected piece has.
    """
    found = people.found
    labelled = truth[..., 2] > 0
    dist = np.linalg.norm(truth[None, :, :, :2] - people.keypoints[:, None, :, :2], axis=-1)
    close = (dist <= tol) & labelled[None]  # (N, P, J) decoded joint j of n is on person p's
    assert (close.any(1) | ~found).all(), "a decoded joint is on no labelled joint"
    for g, person in enumerate(truth):
        piece = sorted(largest_component(person[:, 2] > 0, pose.limbs))
        if len(piece) < 3:
            continue
        holders = np.flatnonzero((found[:, piece] & close[:, g, piece]).all(1))
        assert len(holders) >= 1, f"person {g}: no decoded person holds its joints {piece}"
    if strict:
        for n in range(len(people)):
            owners = np.flatnonzero(close[n][:, found[n]].all(1))
            assert len(owners) == 1, f"decoded person {n} mixes people {owners}"


@pytest.mark.parametrize("factor", [(8, 8), (4, 4), (1, 1)])
def test_peaks_are_placed_to_a_hundredth_of_a_pixel(factor):
    rng = np.random.default_rng(0)
    truth = rng.uniform(20, 340, (12, 2))
    kp = np.zeros((12, 18, 3), np.float32)
    kp[np.arange(12), np.arange(12) % 18, :2] = truth
    kp[..., 2] = np.where(kp[..., 0] > 0, 2, 0)
    heatmaps = encoded(kp).heatmaps
    peaks = find_peaks(heatmaps[:18], upsampling_factor=factor)
    for p in range(12):
        got = peaks[p % 18]
        err = np.linalg.norm(got[:, :2] - truth[p], axis=1).min()
        assert err < 0.01, (p, err)
        assert got[:, 2].max() == pytest.approx(1.0, abs=1e-3)


def test_peaks_at_the_border_borrow_the_other_axis():
    kp = np.zeros((3, 18, 3), np.float32)
    kp[:, 0] = [[0.4, 100.3, 2], [367.0, 200.6, 2], [150.2, 0.0, 2]]
    peaks = find_peaks(encoded(kp).heatmaps[:18])[0]
    for x, y, _ in kp[:, 0]:
        assert np.linalg.norm(peaks[:, :2] - [x, y], axis=1).min() < 0.05


def test_two_close_joints_of_one_type_are_both_found():
    # 16 px apart (just over 2 sigma): the grid fit would blend them; the upsampled map keeps
    # them apart, and the decoder falls back on it
    rng = np.random.default_rng(14)
    for _ in range(10):
        centre, angle = rng.uniform(100, 250, 2), rng.uniform(0, 2 * np.pi)
        kp = np.zeros((2, 18, 3), np.float32)
        kp[:, 0, :2] = [centre, centre + 16 * np.array([np.cos(angle), np.sin(angle)])]
        kp[:, 0, 2] = 2
        peaks = find_peaks(encoded(kp).heatmaps[:18])[0]
        assert len(peaks) == 2
        dist = np.linalg.norm(kp[:, None, 0, :2] - peaks[None, :, :2], axis=-1)
        assert dist.min(1).max() < 2.0


def test_no_refinement_gives_upsampled_pixel_positions():
    kp = np.zeros((1, 18, 3), np.float32)
    kp[0, 0] = [100.3, 50.6, 2]
    peaks = find_peaks(encoded(kp).heatmaps[:18], refine=False)[0]
    assert len(peaks) == 1
    np.testing.assert_allclose(peaks[0, :2], np.round(peaks[0, :2]))  # pixel u is pixel u
    assert np.abs(peaks[0, :2] - [100.3, 50.6]).max() < 1.0


@pytest.mark.parametrize(
    ("seed", "count", "missing"),
    [(0, 1, 0.0), (1, 5, 0.0), (2, 5, 0.25), (3, 10, 0.15), (4, 20, 0.0), (5, 20, 0.2)],
)
def test_round_trip_recovers_every_person(seed, count, missing):
    rng = np.random.default_rng(seed)
    truth = in_view(synthetic_people(rng, count, SIZE, missing=missing))
    t = encoded(truth)
    people = decode(t.heatmaps, t.pafs, POSE, DecoderParams(min_parts=3))
    check_round_trip(truth, people, strict=missing == 0)
    assert np.all(np.diff(people.scores) <= 0)
    # PAFs alone (no merging across missing joints) never mix people up
    params = DecoderParams(min_parts=3, fragment_merge_ratio=0)
    check_round_trip(truth, decode(t.heatmaps, t.pafs, POSE, params), strict=True)


def test_round_trip_on_the_output_grid_alone():
    rng = np.random.default_rng(6)
    truth = in_view(synthetic_people(rng, 20, SIZE, missing=0.1))
    t = encoded(truth)
    params = DecoderParams(min_parts=3, upsampling_factor=(1, 1))
    check_round_trip(truth, decode(t.heatmaps, t.pafs, POSE, params), strict=False)


def test_round_trip_with_small_people_and_a_wide_input():
    rng = np.random.default_rng(7)
    size = (256, 448)
    truth = in_view(synthetic_people(rng, 12, size, min_height=30.0), size)
    t = encoded(truth, size)
    people = decode(t.heatmaps, t.pafs, POSE, DecoderParams(min_parts=3))
    check_round_trip(truth, people, tol=0.5)


def test_person_without_a_neck_is_assembled_from_its_pieces():
    rng = np.random.default_rng(8)
    truth = in_view(synthetic_people(rng, 1, SIZE))
    truth[0, 1] = 0  # no neck (one shoulder unlabelled in COCO): arms, head, legs fall apart
    t = encoded(truth)
    people = decode(t.heatmaps, t.pafs, POSE)
    assert len(people) == 1
    assert people.found[0].sum() == 17
    split = decode(t.heatmaps, t.pafs, POSE, DecoderParams(fragment_merge_ratio=0, min_parts=1))
    assert len(split) > 1


def test_merging_pieces_never_joins_whole_people():
    from bpnet.decode.paf import merge_fragments

    limbs = np.asarray(POSE.limbs)
    rng = np.random.default_rng(13)
    whole = synthetic_people(rng, 2, SIZE)
    whole[..., 2] = 1.0  # scores
    np.testing.assert_array_equal(merge_fragments(whole, limbs), [0, 1])
    # the same two people cut at the neck: four pieces, back to two people
    pieces = np.zeros((4, 18, 3), np.float32)
    legs = [8, 9, 10, 11, 12, 13]
    for p in range(2):
        pieces[2 * p, :1] = whole[p, :1]  # nose
        pieces[2 * p, 2:8] = whole[p, 2:8]  # arms
        pieces[2 * p, 14:] = whole[p, 14:]  # face
        pieces[2 * p + 1, legs] = whole[p, legs]
    group = merge_fragments(pieces, limbs)
    assert group[0] == group[1] and group[2] == group[3] and group[0] != group[2]
    assert (merge_fragments(pieces, limbs, max_ratio=0) == np.arange(4)).all()


def test_filters_order_and_limits():
    rng = np.random.default_rng(9)
    truth = in_view(synthetic_people(rng, 6, SIZE))
    truth[0, 5:] = 0  # a five-joint person (nose, neck, right arm)
    t = encoded(truth)
    everyone = decode(t.heatmaps, t.pafs, POSE)
    assert len(everyone) == 6
    assert everyone.scores[-1] == everyone.scores.min()  # the partial person ranks last
    assert everyone.found[-1].sum() == 5
    assert len(decode(t.heatmaps, t.pafs, POSE, DecoderParams(min_parts=6))) == 5
    assert len(decode(t.heatmaps, t.pafs, POSE, DecoderParams(max_people=2))) == 2
    assert len(decode(t.heatmaps, t.pafs, POSE, DecoderParams(min_mean_score=1.0))) == 0
    high = decode(t.heatmaps * 0.05, t.pafs, POSE)  # every peak below the 0.05 threshold
    assert len(high) == 0


def test_people_convert_to_coco_order():
    kp = np.zeros((1, 18, 3), np.float32)
    kp[0, :, :2] = np.arange(36).reshape(18, 2)
    kp[0, :, 2] = 0.5
    coco = People(kp, np.ones(1, np.float32)).to_dataset(POSE)
    names = POSE.joint_names
    assert coco.shape == (1, 17, 3)
    for k, name in enumerate(POSE.dataset_keypoints):
        np.testing.assert_array_equal(coco[0, k], kp[0, names.index(name)])
    assert People.empty(18).to_dataset(POSE).shape == (0, 17, 3)


def test_custom_five_joint_skeleton_round_trip(five_joint_config):
    pose = load_pose_config(five_joint_config)
    kp = np.zeros((2, 5, 3), np.float32)
    kp[0] = [[100, 60, 2], [100, 100, 2], [60, 130, 2], [140, 130, 2], [100, 180, 2]]
    kp[1] = [[260, 80, 2], [262, 120, 2], [220, 150, 2], [300, 150, 2], [265, 220, 2]]
    t = encode(kp, np.ones((256, 368)), pose)
    people = decode(t.heatmaps, t.pafs, pose)
    assert len(people) == 2 and people.keypoints.shape == (2, 5, 3)
    check_round_trip(kp, people, pose, tol=0.01)
    assert people.to_dataset(pose).shape == (2, 17, 3)  # nose and wrists map back; neck does not


def test_channel_counts_are_checked():
    t = encoded(np.zeros((0, 18, 3)))
    with pytest.raises(ValueError, match="channels"):
        decode(t.heatmaps[:5], t.pafs, POSE)
    with pytest.raises(ValueError, match="pafs"):
        decode(t.heatmaps, t.pafs[:10], POSE)
    assert len(decode(t.heatmaps[:18], t.pafs, POSE)) == 0  # background channel optional


def test_inference_spec_reads_a_tao_infer_spec(tmp_path):
    path = tmp_path / "infer_spec.yaml"
    path.write_text(
        "model_path: /workspace/model.tlt\n"
        "train_spec: /workspace/train.yaml\n"
        "input_shape: [288, 384]\n"
        "keep_aspect_ratio_mode: pad_image_input\n"
        "output_stage_to_use: null\n"
        "output_upsampling_factor: [8, 8]\n"
        "heatmap_threshold: 0.1\n"
        "paf_threshold: 0.05\n"
        "multi_scale_inference: False\n"
        "scales: [0.5, 1.0, 1.5, 2.0]\n"
    )
    spec = load_spec(InferenceSpec, path)
    assert spec.input_shape == (288, 384) and spec.mode == "strict"
    assert spec.scales == (0.5, 1.0, 1.5, 2.0)
    params = spec.decoder_params()
    assert params.upsampling_factor == (8, 8) and params.min_parts == 4
    assert InferenceSpec().mode == "default"
    assert InferenceSpec(multi_scale_inference=True).mode == "multi_scale"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("input_shape: [300, 368]", "input_shape[0]: must be a multiple of 8"),
        ("keep_aspect_ratio_mode: stretch", "keep_aspect_ratio_mode"),
        ("heatmap_threshold: 1.5", "heatmap_threshold"),
        ("scales: []", "scales"),
        ("min_paf_fraction: 2", "min_paf_fraction"),
        ("output_stage_to_use: 0", "output_stage_to_use"),
        ("line_integral_sample: 10", "unknown key 'line_integral_sample'"),
    ],
)
def test_bad_inference_specs_name_the_field(tmp_path, text, needle):
    path = tmp_path / "infer.yaml"
    path.write_text(text + "\n")
    with pytest.raises(SpecError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_spec(InferenceSpec, path)


def test_decode_with_an_inference_specs_settings():
    rng = np.random.default_rng(11)
    truth = in_view(synthetic_people(rng, 2, SIZE))
    t = encoded(truth)
    params = InferenceSpec(output_upsampling_factor=(2, 2)).decoder_params()
    people = decode(t.heatmaps, t.pafs, POSE, params)
    check_round_trip(truth, people)


def assert_well_formed(people: People, params: DecoderParams) -> None:
    n = len(people)
    assert people.keypoints.shape == (n, POSE.num_joints, 3)
    assert people.keypoints.dtype == np.float32 and people.scores.dtype == np.float32
    assert people.scores.shape == (n,)
    assert np.isfinite(people.keypoints).all() and np.isfinite(people.scores).all()
    assert ((people.scores >= 0) & (people.scores <= 1)).all()
    assert np.all(np.diff(people.scores) <= 0)
    assert (people.found.sum(1) >= params.min_parts).all()
    missing = ~people.found
    assert (people.keypoints[missing] == 0).all()
    if params.max_people is not None:
        assert n <= params.max_people


special = st.sampled_from([0.0, 1.0, -1.0, 0.5, np.nan, np.inf, -np.inf, 1e30, 0.1, 0.05])
values = st.one_of(st.floats(-2, 2, width=32), special)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(0, 9),
    w=st.integers(0, 9),
    data=st.data(),
    factor=st.sampled_from([(1, 1), (2, 3), (8, 8)]),
    min_parts=st.integers(1, 5),
    max_people=st.sampled_from([None, 1, 3]),
    sigma=st.sampled_from([0.0, 3.0]),
)
def test_any_maps_give_well_formed_people(h, w, data, factor, min_parts, max_people, sigma):
    heatmaps = data.draw(arrays(np.float32, (19, h, w), elements=values))
    pafs = data.draw(arrays(np.float32, (38, h, w), elements=values))
    params = DecoderParams(
        upsampling_factor=factor,
        min_parts=min_parts,
        max_people=max_people,
        smoothing_sigma=sigma,
        min_mean_score=0.0,
        heatmap_threshold=0.0,
        paf_threshold=-1.0,
        min_paf_fraction=0.0,
    )
    assert_well_formed(decode(heatmaps, pafs, POSE, params), params)


@pytest.mark.parametrize("fill", [0.0, np.nan, np.inf, 1.0])
def test_constant_maps(fill):
    heatmaps = np.full((19, 46, 46), fill, np.float32)
    pafs = np.full((38, 46, 46), fill, np.float32)
    params = DecoderParams(min_parts=1)
    assert_well_formed(decode(heatmaps, pafs, POSE, params), params)


def test_noise_maps_are_bounded_and_fast_enough():
    rng = np.random.default_rng(12)
    heatmaps = rng.random((19, 46, 46), np.float32)
    pafs = rng.uniform(-1, 1, (38, 46, 46)).astype(np.float32)
    params = DecoderParams(min_parts=1, min_mean_score=0.0)
    people = decode(heatmaps, pafs, POSE, params)
    assert_well_formed(people, params)
    assert len(people) <= params.max_peaks * POSE.num_joints
