"""Target encoder: heatmap peaks on the cell-centre grid, background, PAF geometry, masks."""

import numpy as np
import pytest
import torch

from bpnet.pose import load_pose_config
from bpnet.targets import cell_centers, encode, encode_batch

POSE = load_pose_config()
NECK, R_SHOULDER, NOSE = 1, 2, 0
SIZE = (96, 128)  # (H, W) input -> (12, 16) output cells


def people(*joints: dict[int, tuple[float, float]]) -> np.ndarray:
    """(P, 18, 3) keypoints with the given {joint: (x, y)} labelled (v = 2), the rest v = 0."""
    out = np.zeros((len(joints), POSE.num_joints, 3), np.float32)
    for p, person in enumerate(joints):
        for j, (x, y) in person.items():
            out[p, j] = [x, y, 2]
    return out


def limb_channels(a: int, b: int) -> slice:
    limb = POSE.limbs.index((a, b))
    return slice(2 * limb, 2 * limb + 2)


def test_cell_centres_follow_the_pixel_centre_convention():
    # cell j covers input pixels 8j .. 8j+7, whose centre is 8j + 3.5
    np.testing.assert_allclose(cell_centers(3, 8), [3.5, 11.5, 19.5])
    np.testing.assert_allclose(cell_centers(2, 4), [1.5, 5.5])


def test_shapes_and_dtypes_come_from_the_pose_config():
    t = encode(people({NOSE: (50, 40)}), np.ones(SIZE), POSE)
    assert t.heatmaps.shape == (19, 12, 16) and t.heatmaps.dtype == np.float32
    assert t.pafs.shape == (38, 12, 16) and t.pafs.dtype == np.float32
    assert t.mask.shape == (12, 16) and t.mask.dtype == np.float32


def test_heatmap_peak_is_at_the_joint_cell_with_value_one():
    x, y = 8 * 5 + 3.5, 8 * 3 + 3.5  # exactly the centre of cell (row 3, col 5)
    t = encode(people({NOSE: (x, y)}), np.ones(SIZE), POSE, sigma=7.0)
    nose = t.heatmaps[NOSE]
    assert np.unravel_index(nose.argmax(), nose.shape) == (3, 5)
    assert nose[3, 5] == pytest.approx(1.0)
    assert nose[3, 6] == pytest.approx(np.exp(-64 / 98), rel=1e-5)  # one cell = 8 px away
    assert nose[4, 6] == pytest.approx(np.exp(-128 / 98), rel=1e-5)
    assert t.heatmaps[NECK].max() == 0  # other joints untouched


def test_background_is_one_minus_the_max_over_joints():
    t = encode(people({NOSE: (40, 40), NECK: (44, 52)}, {NOSE: (100, 60)}), np.ones(SIZE), POSE)
    np.testing.assert_allclose(t.heatmaps[-1], 1 - t.heatmaps[:-1].max(0), atol=1e-6)
    assert t.heatmaps[-1].min() >= 0 and t.heatmaps[-1].max() == 1.0


def test_heatmaps_take_the_max_over_people_not_the_sum():
    t = encode(people({NOSE: (43.5, 43.5)}, {NOSE: (51.5, 43.5)}), np.ones(SIZE), POSE)
    assert t.heatmaps[NOSE].max() == pytest.approx(1.0)


def test_only_labelled_joints_contribute():
    kp = people({NOSE: (43.5, 43.5), NECK: (43.5, 59.5), R_SHOULDER: (27.5, 59.5)})
    kp[0, NECK, 2] = 0  # unlabelled neck: no neck heatmap and no limb touching the neck
    t = encode(kp, np.ones(SIZE), POSE)
    assert t.heatmaps[NECK].max() == 0
    assert t.heatmaps[NOSE].max() == 1.0 and t.heatmaps[R_SHOULDER].max() == 1.0
    assert np.abs(t.pafs).max() == 0
    # padding rows (all zeros) change nothing
    padded = np.concatenate([kp, np.zeros((3, 18, 3), np.float32)])
    t2 = encode(padded, np.ones(SIZE), POSE)
    np.testing.assert_array_equal(t.heatmaps, t2.heatmaps)


def test_keypoints_outside_the_crop_still_reach_in():
    t = encode(people({NOSE: (-6.0, 43.5)}), np.ones(SIZE), POSE)
    assert t.heatmaps[NOSE, 5, 0] == pytest.approx(np.exp(-(9.5**2) / 98), rel=1e-5)
    assert t.heatmaps[NOSE, :, 0].argmax() == 5
    # a limb from outside the crop to inside has its PAF on the in-crop part
    t = encode(people({NECK: (-40.0, 43.5), R_SHOULDER: (60.0, 43.5)}), np.ones(SIZE), POSE)
    paf = t.pafs[limb_channels(NECK, R_SHOULDER)]
    np.testing.assert_allclose(paf[:, 5, 0], [1.0, 0.0])


def test_paf_is_the_unit_vector_on_the_limb_and_zero_away_from_it():
    y = 8 * 6 + 3.5  # a horizontal limb along the centres of row 6
    start, end = (8 * 3 + 3.5, y), (8 * 10 + 3.5, y)  # cells 3 .. 10
    t = encode(people({NECK: start, R_SHOULDER: end}), np.ones(SIZE), POSE, paf_width=1.0)
    px, py = t.pafs[limb_channels(NECK, R_SHOULDER)]
    np.testing.assert_allclose(px[6, 3:11], 1.0)
    np.testing.assert_allclose(py, 0.0)
    # half-width 1 cell = 8 px: rows 5 and 7 are exactly 8 px away (on), row 4 is 16 px (off)
    np.testing.assert_allclose(px[5, 3:11], 1.0)
    np.testing.assert_allclose(px[7, 3:11], 1.0)
    assert px[4].max() == 0 and px[8].max() == 0
    # the field reaches one half-width past each joint, no further
    assert px[6, 2] == 1.0 and px[6, 11] == 1.0
    assert px[6, 1] == 0.0 and px[6, 12] == 0.0
    # other limbs are untouched
    others = np.delete(t.pafs, np.r_[limb_channels(NECK, R_SHOULDER)], axis=0)
    assert np.abs(others).max() == 0


def test_paf_direction_points_from_the_first_joint_to_the_second():
    a, b = (30.0, 80.0), (90.0, 20.0)  # up and to the right
    t = encode(people({NECK: a, R_SHOULDER: b}), np.ones(SIZE), POSE)
    px, py = t.pafs[limb_channels(NECK, R_SHOULDER)]
    on = (px != 0) | (py != 0)
    np.testing.assert_allclose(px[on], np.sqrt(0.5), atol=1e-6)
    np.testing.assert_allclose(py[on], -np.sqrt(0.5), atol=1e-6)
    # on exactly where the cell centre is within 8 px across and -8 .. length + 8 along
    xs, ys = np.meshgrid(cell_centers(16, 8), cell_centers(12, 8))
    ux, uy = np.sqrt(0.5), -np.sqrt(0.5)
    across = np.abs((xs - a[0]) * uy - (ys - a[1]) * ux)
    along = (xs - a[0]) * ux + (ys - a[1]) * uy
    length = np.hypot(60, 60)
    inside = (across < 7.99) & (along > -7.99) & (along < length + 7.99)
    outside = (across > 8.01) | (along < -8.01) | (along > length + 8.01)
    assert on[inside].all() and not on[outside].any()
    assert inside.sum() > 20


def test_overlapping_limbs_are_averaged_not_summed():
    y = 8 * 6 + 3.5
    same = people(
        {NECK: (20.0, y), R_SHOULDER: (100.0, y)}, {NECK: (40.0, y), R_SHOULDER: (110.0, y)}
    )
    t = encode(same, np.ones(SIZE), POSE)
    px, py = t.pafs[limb_channels(NECK, R_SHOULDER)]
    np.testing.assert_allclose(np.hypot(px, py)[px != 0], 1.0, atol=1e-6)
    # two limbs crossing at right angles: the crossing cell holds their mean
    crossing = people(
        {NECK: (20.0, 51.5), R_SHOULDER: (100.0, 51.5)},
        {NECK: (59.5, 10.0), R_SHOULDER: (59.5, 90)},
    )
    px, py = encode(crossing, np.ones(SIZE), POSE).pafs[limb_channels(NECK, R_SHOULDER)]
    np.testing.assert_allclose([px[6, 7], py[6, 7]], [0.5, 0.5])
    assert np.hypot(px, py).max() <= 1.0 + 1e-6


def test_zero_length_limb_adds_no_field():
    t = encode(people({NECK: (40.0, 40.0), R_SHOULDER: (40.0, 40.0)}), np.ones(SIZE), POSE)
    assert np.abs(t.pafs).max() == 0


def test_mask_is_the_fraction_of_each_cell_that_counts():
    mask = np.ones(SIZE, np.uint8)
    mask[:, :20] = 0  # cells 0, 1 fully masked; cell 2 (pixels 16..23) half masked
    mask[:4, 96:104] = 0  # the top half of cell (0, 12)
    t = encode(people(), mask, POSE)
    np.testing.assert_allclose(t.mask[:, :2], 0.0)
    np.testing.assert_allclose(t.mask[:, 2], 0.5)
    np.testing.assert_allclose(t.mask[0, 12], 0.5)
    np.testing.assert_allclose(t.mask[1:, 3:], 1.0)
    assert encode(people(), np.ones(SIZE, bool), POSE).mask.min() == 1.0


def test_no_people_gives_empty_maps():
    t = encode(np.zeros((0, 18, 3)), np.ones(SIZE), POSE)
    assert t.heatmaps[:-1].max() == 0 and t.heatmaps[-1].min() == 1 and t.pafs.max() == 0


def test_size_must_be_a_multiple_of_the_stride_and_joints_match_the_pose():
    with pytest.raises(ValueError, match="multiple of the stride"):
        encode(people(), np.ones((100, 128)), POSE)
    with pytest.raises(ValueError, match=r"expected \(P, 18, 3\)"):
        encode(np.zeros((2, 17, 3)), np.ones(SIZE), POSE)


def test_custom_five_joint_skeleton(five_joint_config):
    from bpnet.pose import load_pose_config

    pose = load_pose_config(five_joint_config)
    kp = np.zeros((2, 5, 3), np.float32)
    kp[0] = [[40, 20, 2], [40, 40, 2], [20, 60, 2], [60, 60, 1], [40, 80, 2]]
    t = encode(kp, np.ones((96, 96)), pose)
    assert t.heatmaps.shape == (pose.num_joints + 1, 12, 12) == (6, 12, 12)
    assert t.pafs.shape == (2 * pose.num_limbs, 12, 12) == (8, 12, 12)
    for j in range(5):
        assert t.heatmaps[j].max() > 0.7
    for limb in range(4):
        norm = np.hypot(*t.pafs[2 * limb : 2 * limb + 2])
        assert norm.max() == pytest.approx(1.0)


def test_encode_batch_stacks_tensors():
    kp = torch.from_numpy(np.stack([people({NOSE: (40, 40)})[0:1], people({NECK: (60, 30)})]))
    masks = torch.ones((2, *SIZE), dtype=torch.uint8)
    out = encode_batch(kp, masks, POSE)
    assert out["heatmaps"].shape == (2, 19, 12, 16)
    assert out["pafs"].shape == (2, 38, 12, 16)
    assert out["mask"].shape == (2, 12, 16)
    single = encode(kp[1].numpy(), masks[1].numpy(), POSE)
    np.testing.assert_array_equal(out["heatmaps"][1].numpy(), single.heatmaps)
