"""The decoder's fast path: peak search on the output grid, against the x8 search it replaces."""

import numpy as np
import pytest

from bpnet.bench.decode import synthetic_people
from bpnet.decode import find_peaks
from bpnet.grid import to_input
from bpnet.pose import load_pose_config
from bpnet.targets import encode

POSE = load_pose_config()
SIZE = (368, 368)
GRID = (1, 1)


def encoded(keypoints: np.ndarray, size=SIZE):
    return encode(keypoints, np.ones(size, np.uint8), POSE)


def gaussians(centres: np.ndarray, sigma: float, heights: np.ndarray, shape=(46, 46), stride=8):
    """(1, h, w) max of Gaussians sampled at the cell centres (input pixels throughout)."""
    ys = to_input(np.arange(shape[0]), stride)[:, None, None]
    xs = to_input(np.arange(shape[1]), stride)[None, :, None]
    d2 = (xs - centres[:, 0]) ** 2 + (ys - centres[:, 1]) ** 2  # (h, w, n)
    return (heights * np.exp(-d2 / (2 * sigma**2))).max(-1)[None].astype(np.float32)


@pytest.mark.parametrize("sigma", [5.0, 7.0, 9.0])
def test_grid_search_places_gaussian_peaks_within_a_quarter_pixel(sigma):
    """Blobs of other widths than the encoder's, with a little noise (exact without it)."""
    rng = np.random.default_rng(int(sigma))
    for _ in range(20):
        centre = rng.uniform(40, 328, (1, 2))
        height = rng.uniform(0.5, 1.0, 1)
        heatmap = gaussians(centre, sigma, height)
        heatmap += rng.normal(0, 0.002, heatmap.shape).astype(np.float32)
        [peaks] = find_peaks(heatmap, upsampling_factor=GRID)
        assert len(peaks) == 1
        assert np.linalg.norm(peaks[0, :2] - centre[0]) < 0.25
        assert peaks[0, 2] == pytest.approx(height[0], abs=0.02)


@pytest.mark.parametrize("separation", [16.0, 18.0, 24.0])
def test_grid_search_separates_close_joints_like_the_upsampled_search(separation):
    """Two joints of one type about two cells apart share or crowd a grid maximum; the windows
    searched at the stride find both, where the x8 search of every map does."""
    rng = np.random.default_rng(int(separation))
    for _ in range(20):
        centre, angle = rng.uniform(100, 250, 2), rng.uniform(0, 2 * np.pi)
        kp = np.zeros((2, 18, 3), np.float32)
        kp[:, 0, :2] = [centre, centre + separation * np.array([np.cos(angle), np.sin(angle)])]
        kp[:, 0, 2] = 2
        heatmaps = encoded(kp).heatmaps[:18]
        for factor in (GRID, (8, 8)):
            peaks = find_peaks(heatmaps, upsampling_factor=factor)[0]
            assert len(peaks) == 2, factor
            dist = np.linalg.norm(kp[:, None, 0, :2] - peaks[None, :, :2], axis=-1)
            assert dist.min(1).max() < 2.0, factor


@pytest.mark.parametrize(("seed", "count"), [(0, 5), (1, 20), (2, 40)])
def test_grid_search_finds_the_peaks_of_the_upsampled_search(seed, count):
    rng = np.random.default_rng(seed)
    heatmaps = encoded(synthetic_people(rng, count, SIZE, missing=0.1)).heatmaps[:18]
    grid = find_peaks(heatmaps, upsampling_factor=GRID)
    full = find_peaks(heatmaps, upsampling_factor=(8, 8))
    assert sum(map(len, grid)) >= 0.99 * sum(map(len, full))
    for a, b in zip(grid, full, strict=True):
        if len(a) and len(b):
            dist = np.linalg.norm(a[:, None, :2] - b[None, :, :2], axis=-1)
            assert np.median(dist.min(0)) < 0.01


def test_grid_search_on_noise_is_bounded():
    rng = np.random.default_rng(3)
    peaks = find_peaks(rng.random((18, 46, 46), np.float32), upsampling_factor=GRID)
    assert all(len(p) <= 128 for p in peaks) and sum(map(len, peaks)) > 0
    assert all(np.isfinite(p).all() for p in peaks)


def test_grid_search_without_refinement_gives_cell_centres():
    kp = np.zeros((1, 18, 3), np.float32)
    kp[0, 0] = [100.3, 50.6, 2]
    [peak] = find_peaks(encoded(kp).heatmaps[:18], upsampling_factor=GRID, refine=False)[0]
    np.testing.assert_allclose(peak[:2], to_input(np.rint((peak[:2] - 3.5) / 8), 8))
    assert np.abs(peak[:2] - [100.3, 50.6]).max() <= 4.0
