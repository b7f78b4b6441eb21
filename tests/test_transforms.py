"""Augmentation: keypoints, masks and images move together; flips swap left and right."""

import numpy as np
import pytest

from bpnet.config.spec import ColorAugParams, SpatialAugParams
from bpnet.data.coco import build_records, load_coco_split
from bpnet.data.transforms import (
    BORDER_GREY,
    affine_matrix,
    apply_affine,
    color_jitter,
    invert_affine,
    letterbox_matrix,
    sample_person_centric,
    transform_keypoints,
    warp_image,
    warp_mask,
)
from bpnet.pose import load_pose_config

IMAGE_H, IMAGE_W = 240, 320
SIZE = (160, 224)  # (height, width): not square, so a swapped axis shows
STRONG = SpatialAugParams(
    flip_lr_prob=0.5,
    rotate_deg_max=40.0,
    translate_max_x=30.0,
    translate_max_y=30.0,
    target_person_scale=0.6,
    zoom_prob=1.0,
    zoom_ratio_min=0.7,
    zoom_ratio_max=1.3,
)
STILL = SpatialAugParams(
    flip_lr_prob=0.0, rotate_deg_max=0.0, translate_max_x=0.0, translate_max_y=0.0, zoom_prob=0.0
)


def blob(x: float, y: float, sigma: float = 2.0) -> np.ndarray:
    """(IMAGE_H, IMAGE_W, 3) uint8 black image with one bright Gaussian dot centred at (x, y)."""
    yy, xx = np.mgrid[:IMAGE_H, :IMAGE_W]
    dot = 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.repeat(dot.astype(np.uint8)[..., None], 3, axis=2)


def test_keypoints_follow_the_image_under_random_augmentation():
    rng = np.random.default_rng(7)
    points = np.stack([rng.uniform(110, 210, 6), rng.uniform(60, 180, 6)], 1)
    keypoints = np.concatenate([points, np.full((6, 1), 2.0)], 1)[None]  # (1, 6, 3)
    flips, checked = set(), 0
    for seed in range(8):
        matrix, flipped = sample_person_centric(
            (160, 120), 120, SIZE, STRONG, np.random.default_rng(seed)
        )
        flips.add(flipped)
        moved = transform_keypoints(keypoints, matrix)[0]  # (6, 3)
        for (x, y), (mx, my, _) in zip(points, moved, strict=True):
            if not (3 <= mx < SIZE[1] - 3 and 3 <= my < SIZE[0] - 3):
                continue  # the dot left the crop
            warped = warp_image(blob(x, y), matrix, SIZE)[..., 0].astype(np.float32)
            py, px = np.unravel_index(np.argmax(warped), warped.shape)
            assert np.hypot(px - mx, py - my) <= 1.5, (seed, (x, y), (px, py), (mx, my))
            checked += 1
    assert flips == {True, False}  # both kinds of transform were exercised
    assert checked >= 30


def test_mask_moves_with_the_image_and_the_border_counts():
    image = np.zeros((IMAGE_H, IMAGE_W, 3), np.uint8)
    mask = np.ones((IMAGE_H, IMAGE_W), np.uint8)
    image[80:160, 100:180] = 255
    mask[80:160, 100:180] = 0
    for seed in range(5):
        matrix, _ = sample_person_centric((140, 120), 80, SIZE, STRONG, np.random.default_rng(seed))
        warped = warp_image(image, matrix, SIZE)[..., 0]
        warped_mask = warp_mask(mask, matrix, SIZE)
        assert warped_mask.shape == SIZE and warped_mask.dtype == np.uint8
        bright, ignored = warped > 200, warped_mask == 0
        iou = (bright & ignored).sum() / (bright | ignored).sum()
        assert iou > 0.9, (seed, iou)
    # zoomed far out: the image sits inside a grey border, where the mask must count (1)
    matrix = affine_matrix((160, 120), 0.3, SIZE)
    warped = warp_image(image, matrix, SIZE)
    assert (warped[0, 0] == BORDER_GREY).all()
    border = np.all(warped == BORDER_GREY, axis=2)
    assert (warp_mask(mask, matrix, SIZE)[border] == 1).all()


def test_main_person_lands_at_the_centre_at_target_scale():
    x, y, w, h = 100.0, 50.0, 60.0, 150.0
    centre, top, bottom = (x + w / 2, y + h / 2), (x + w / 2, y), (x + w / 2, y + h)
    matrix, flipped = sample_person_centric(centre, h, SIZE, STILL, np.random.default_rng(0))
    assert not flipped
    c, t, b = apply_affine(np.array([centre, top, bottom]), matrix)
    np.testing.assert_allclose(c, [(SIZE[1] - 1) / 2, (SIZE[0] - 1) / 2], atol=1e-9)
    assert b[1] - t[1] == pytest.approx(0.6 * SIZE[0])

    for seed in range(20):
        matrix, _ = sample_person_centric(centre, h, SIZE, STRONG, np.random.default_rng(seed))
        c, t, b = apply_affine(np.array([centre, top, bottom]), matrix)
        offset = np.abs(c - [(SIZE[1] - 1) / 2, (SIZE[0] - 1) / 2])
        assert (offset <= [30 + 1e-9, 30 + 1e-9]).all()  # only translation moves the centre
        height = np.hypot(*(b - t))  # rotation turns the person but keeps their size
        assert 0.7 * 0.6 * SIZE[0] - 1e-6 <= height <= 1.3 * 0.6 * SIZE[0] + 1e-6


def test_flip_swaps_left_and_right_channels(coco_fixture):
    """Real people mostly face the camera: their left shoulder is at larger x than their right.

    A mirrored picture of such a person is again a person facing the camera, so after the flip
    with the channel swap the left shoulder must still be at larger x; without the swap the
    relation would invert.
    """
    pose = load_pose_config()
    names = pose.joint_names
    ls, rs = names.index("left_shoulder"), names.index("right_shoulder")
    lw, rw, nose = names.index("left_wrist"), names.index("right_wrist"), names.index("nose")
    people = np.concatenate(
        [r.keypoints for r in build_records(load_coco_split(coco_fixture, "val2017"), pose)]
    )
    people = people[(people[:, ls, 2] > 0) & (people[:, rs, 2] > 0)]
    before = np.sign(people[:, ls, 0] - people[:, rs, 0])
    assert (before > 0).mean() > 0.7  # the premise: mostly facing the camera

    matrix = affine_matrix((320, 240), 1.0, (480, 640), flip=True)
    flipped = transform_keypoints(people, matrix, pose.flip_permutation)
    np.testing.assert_array_equal(np.sign(flipped[:, ls, 0] - flipped[:, rs, 0]), before)
    unswapped = transform_keypoints(people, matrix)
    np.testing.assert_array_equal(np.sign(unswapped[:, ls, 0] - unswapped[:, rs, 0]), -before)

    # identities: the right wrist channel holds the mirrored left wrist; the nose stays the nose
    mirrored = apply_affine(people[:, :, :2], matrix)
    both = (people[:, lw, 2] > 0) & (people[:, rw, 2] > 0)
    np.testing.assert_allclose(flipped[both, rw, :2], mirrored[both, lw], atol=1e-3)
    np.testing.assert_allclose(flipped[both, lw, :2], mirrored[both, rw], atol=1e-3)
    has_nose = people[:, nose, 2] > 0
    np.testing.assert_allclose(flipped[has_nose, nose, :2], mirrored[has_nose, nose], atol=1e-3)
    np.testing.assert_array_equal(flipped[:, rw, 2], people[:, lw, 2])


def test_transform_keypoints_keeps_off_crop_joints_and_zeroes_unlabelled():
    keypoints = np.array([[[10, 10, 2], [500, 500, 1], [7, 7, 0]]], np.float32)
    out = transform_keypoints(keypoints, affine_matrix((10, 10), 1.0, (32, 32)))
    assert out.dtype == np.float32 and out.shape == (1, 3, 3)
    np.testing.assert_allclose(out[0, 0], [15.5, 15.5, 2])
    np.testing.assert_allclose(out[0, 1], [505.5, 505.5, 1])  # outside, kept with its v
    np.testing.assert_array_equal(out[0, 2], [0, 0, 0])


def test_letterbox_fits_the_whole_image_and_inverts():
    matrix = letterbox_matrix(640, 480, (368, 368))
    scale = 368 / 640
    corners = apply_affine(np.array([[-0.5, -0.5], [639.5, 479.5]]), matrix)
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [367.5, 480 * scale - 0.5]])
    white = np.full((480, 640, 3), 255, np.uint8)
    warped = warp_image(white, matrix, (368, 368))
    assert (warped[: int(480 * scale) - 1] == 255).all()
    assert (warped[int(480 * scale) + 1 :] == BORDER_GREY).all()  # padded at the bottom
    points = np.array([[12.3, 45.6], [600.0, 470.0]])
    back = apply_affine(apply_affine(points, matrix), invert_affine(matrix))
    np.testing.assert_allclose(back, points, atol=1e-9)


def test_color_jitter():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    image[:8] = 100  # a grey band: hue and saturation cannot change it
    never = ColorAugParams(prob=0.0)
    assert color_jitter(image, never, np.random.default_rng(1)) is image

    always = ColorAugParams(prob=1.0, brightness=0.5, contrast=0.5, saturation=0.5, hue_deg=30)
    a = color_jitter(image, always, np.random.default_rng(3))
    b = color_jitter(image, always, np.random.default_rng(3))
    assert a.dtype == np.uint8 and a.shape == image.shape
    np.testing.assert_array_equal(a, b)  # same generator state, same jitter
    assert not np.array_equal(a, image)

    hue_only = ColorAugParams(prob=1.0, brightness=0.0, contrast=0.0, saturation=0.0, hue_deg=90)
    shifted = color_jitter(image, hue_only, np.random.default_rng(5))
    assert np.abs(shifted[:8].astype(int) - 100).max() <= 1  # grey stays grey
    assert not np.array_equal(shifted[8:], image[8:])

    brighter = ColorAugParams(prob=1.0, brightness=0.2, contrast=0.0, saturation=0.0, hue_deg=0)
    grey = np.full((8, 8, 3), 100, np.uint8)
    for seed in range(5):
        out = color_jitter(grey, brighter, np.random.default_rng(seed))
        assert abs(int(out[0, 0, 0]) - 100) <= 0.2 * 255 + 1
        assert (out == out[0, 0, 0]).all()  # a uniform shift
