"""The decoder's fast path: peak search on the output grid, limb scoring by a NumPy bilinear
gather, fragment merging on one distance matrix; each against the slower path it replaced."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from bpnet.bench.decode import synthetic_people
from bpnet.config.inference import InferenceSpec
from bpnet.config.loader import load_spec
from bpnet.decode import DecoderParams, decode, find_peaks
from bpnet.decode.paf import _bridges, _gaps, line_integrals, merge_fragments
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


def test_line_integrals_read_the_linearly_upsampled_field():
    """Sampling the grid bilinearly equals reading the PAF upsampled by the stride (cv2.resize,
    linear, half-pixel mapping) at the sample points: the old path, without building it."""
    rng = np.random.default_rng(4)
    pafs = cv2.GaussianBlur(rng.uniform(-1, 1, (46, 46, 38)).astype(np.float32), (5, 5), 1.5)
    up = cv2.resize(pafs, (368, 368), interpolation=cv2.INTER_LINEAR)  # (368, 368, 38)
    pafs = np.ascontiguousarray(pafs.transpose(2, 0, 1))
    count, samples = 300, 10
    limb = rng.integers(0, 19, count)
    # integer end points a multiple of 9 px apart in x and y, so that every sample is a pixel
    starts = rng.integers(0, 368, (count, 2))
    ends = starts + rng.integers(-12, 13, (count, 2)) * (samples - 1)
    keep = np.all((ends >= 0) & (ends < 368), axis=1) & np.any(ends != starts, axis=1)
    limb, starts, ends = limb[keep], starts[keep], ends[keep]
    assert len(limb) > 100
    scores, _ = line_integrals(
        pafs, limb, starts.astype(np.float32), ends.astype(np.float32), stride=8,
        samples=samples, paf_threshold=-2.0, min_fraction=0.0,
    )  # fmt: skip
    t = np.linspace(0, 1, samples)
    points = np.rint(starts[:, None] + t[:, None] * (ends - starts)[:, None]).astype(int)
    unit = (ends - starts) / np.linalg.norm(ends - starts, axis=1, keepdims=True)
    field = np.stack(
        [up[points[..., 1], points[..., 0], 2 * limb[:, None] + k] for k in (0, 1)], axis=-1
    )  # (M, S, 2)
    expected = (field * unit[:, None]).sum(-1).mean(-1)
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def brute_force_bridges(found: np.ndarray, xy: np.ndarray, limbs: np.ndarray) -> np.ndarray:
    """:func:`merge_fragments`' bridge, from its definition, one gap at a time."""
    count, joints = found.shape
    neighbours = {j: set() for j in range(joints)}
    for a, b in limbs.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    gaps = [(m,) for m in range(joints)] + [tuple(p) for p in limbs.tolist()]
    gaps += [(b, a) for a, b in limbs.tolist()]
    bridge = np.full((count, count), np.inf)
    for g1 in range(count):
        for g2 in range(count):
            for gap in gaps:
                if g1 == g2 or found[g1, list(gap)].any() or found[g2, list(gap)].any():
                    continue
                for j1 in neighbours[gap[0]]:
                    for j2 in neighbours[gap[-1]]:
                        if found[g1, j1] and found[g2, j2]:
                            d = np.linalg.norm(xy[g1, j1] - xy[g2, j2])
                            bridge[g1, g2] = bridge[g2, g1] = min(bridge[g1, g2], d)
    return bridge


def test_bridges_follow_their_definition(monkeypatch):
    limbs = np.asarray(POSE.limbs)
    rng = np.random.default_rng(5)
    people = synthetic_people(rng, 3, SIZE)
    pieces = []
    for person in people:  # each person cut into random pieces
        labels = rng.integers(0, 3, 18)
        for label in range(3):
            piece = np.where((labels == label)[:, None], person, 0.0)
            if piece[:, 2].any():
                pieces.append(piece)
    pieces = np.asarray(pieces, np.float32)
    found, xy = pieces[..., 2] > 0, pieces[..., :2].astype(np.float64)
    expected = brute_force_bridges(found, xy, limbs)
    gaps = _gaps(limbs.tobytes(), 18, 2)
    np.testing.assert_allclose(_bridges(found, xy, gaps), expected)
    # the distance matrix in blocks of a few joints gives the same bridges
    monkeypatch.setattr("bpnet.decode.paf._BRIDGE_BLOCK", 5)
    np.testing.assert_allclose(_bridges(found, xy, gaps), expected)
    group = merge_fragments(pieces, limbs)
    assert len(np.unique(group)) <= len(people) + 1


def test_whole_people_are_never_merging_candidates():
    whole = synthetic_people(np.random.default_rng(6), 4, SIZE)
    np.testing.assert_array_equal(merge_fragments(whole, np.asarray(POSE.limbs)), np.arange(4))


def test_the_shipped_default_spec_is_the_decoders_default():
    """specs/infer_spec.yaml spells out TAO's fields; with tuned values they are the defaults."""
    spec = load_spec(InferenceSpec, Path(__file__).parents[1] / "specs" / "infer_spec.yaml")
    assert spec.decoder_params() == DecoderParams()
    assert DecoderParams().heatmap_threshold == 0.05 and DecoderParams().min_mean_score == 0.2


def test_finite_maps_are_not_copied_and_broken_ones_are_cleaned():
    from bpnet.decode.decoder import _clean

    maps = np.ones((3, 4, 4), np.float32)
    assert _clean(maps) is maps
    maps[0, 0, 0] = np.nan
    cleaned = _clean(maps)
    assert cleaned is not maps and cleaned[0, 0, 0] == 0 and np.isnan(maps[0, 0, 0])


def test_decoding_on_the_grid_is_the_default_and_agrees_with_x8():
    assert DecoderParams().upsampling_factor == GRID
    rng = np.random.default_rng(7)
    truth = synthetic_people(rng, 8, SIZE)
    t = encoded(truth)
    grid = decode(t.heatmaps, t.pafs, POSE)
    full = decode(t.heatmaps, t.pafs, POSE, DecoderParams(upsampling_factor=(8, 8)))
    assert len(grid) == len(full) == 8
    np.testing.assert_allclose(grid.scores, full.scores, atol=1e-3)
    np.testing.assert_allclose(grid.keypoints, full.keypoints, atol=0.05)


def test_bench_reports_wall_and_cpu_time():
    from bpnet.bench.decode import bench_decode

    result = bench_decode((2,), frames=2, size=(128, 128))["people"][2]
    assert result["decode_ms"] > 0 and result["decode_cpu_ms"] > 0 and result["found"] == 2.0


@pytest.mark.parametrize("separation", [20.0, 24.0])
def test_grid_search_finds_a_weak_blob_on_a_strong_ones_shoulder(separation):
    """A weak joint two or three cells from a wide, strong one of its type has no grid maximum
    of its own; the grid search finds it wherever the x8 search does."""
    rng = np.random.default_rng(int(separation))
    both = 0
    for _ in range(30):
        strong, angle = rng.uniform(100, 250, 2), rng.uniform(0, 2 * np.pi)
        weak = strong + separation * np.array([np.cos(angle), np.sin(angle)])
        heatmap = np.maximum(
            gaussians(strong[None], 12.0, np.array([1.0])),
            gaussians(weak[None], 7.0, np.array([0.5])),
        )
        found = {}
        for factor in (GRID, (8, 8)):
            [peaks] = find_peaks(heatmap, upsampling_factor=factor)
            dist = np.linalg.norm(peaks[:, None, :2] - np.stack([strong, weak])[None], axis=-1)
            found[factor] = len(peaks) == 2 and dist.min(0).max() < 3.0
        assert found[GRID] or not found[(8, 8)]
        both += found[GRID]
    assert both >= 5


def test_the_threshold_applies_to_the_fitted_top_not_the_nearest_cell():
    """Centred at a cell's corner, a peak of 0.12 leaves 0.087 on its nearest cells: it passes
    a threshold of 0.1, as it does in the x8 search; a peak of 0.09 does not."""
    corner = to_input(np.array([[20.5, 20.5]]), 8)
    for height, count in ((0.12, 1), (0.09, 0)):
        heatmap = gaussians(corner, 7.0, np.array([height]))
        assert heatmap.max() < 0.1
        for factor in (GRID, (8, 8)):
            assert len(find_peaks(heatmap, upsampling_factor=factor, threshold=0.1)[0]) == count
