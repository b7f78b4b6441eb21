"""Joint candidates: TAO's peak search on the upsampled heatmaps, then each peak placed to a
fraction of a pixel by a Gaussian fit on the raw output grid (:func:`find_peaks`).

Positions come out in network-input pixels (the grid convention of :mod:`bpnet.grid`; a map
upsampled by ``f`` has pixel ``u`` at input coordinate ``(u + 0.5) * stride / f - 0.5``,
``cv2.resize``'s half-pixel mapping, so with ``f = stride`` upsampled pixels are input pixels).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from bpnet.grid import to_input

_LOG_FLOOR = 1e-6  # heatmap values are clamped to this before the log of the Gaussian fit
_KERNEL_3X3 = np.ones((3, 3), np.uint8)
# Per-thread work arrays for the upsampled maps, reused from frame to frame: fresh 10 MB
# arrays each frame cost as much in page faults as the filtering itself.
_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """A reusable uninitialised array of this thread (contents are overwritten by the caller)."""
    cache = _SCRATCH.__dict__.setdefault("arrays", {})
    array = cache.get(name)
    if array is None or array.shape != shape or array.dtype != dtype:
        array = cache[name] = np.empty(shape, dtype)
    return array


def find_peaks(
    heatmaps: np.ndarray,
    *,
    stride: int = 8,
    upsampling_factor: tuple[int, int] = (8, 8),
    smoothing_sigma: float = 3.0,
    threshold: float = 0.1,
    max_peaks: int = 128,
    refine: bool = True,
) -> list[np.ndarray]:
    """Joint candidates of every heatmap channel.

    TAO's search: upsample (bicubic) by ``upsampling_factor``, smooth, keep pixels equal to
    their 3x3 maximum whose unsmoothed value exceeds ``threshold``. Upsampling alone cannot
    place a peak better than a few tenths of a pixel (bicubic interpolation of a Gaussian
    sampled every 8 pixels bends it), and on small people that costs AP. So each peak is then
    re-placed by fitting a Gaussian (a parabola to the log) through the raw grid values around
    the cell nearest to it, separately in x and y: exact for the encoder's targets, and the
    DARK-style estimate for a network's. At the map border, where a side value is missing,
    the curvature of the other axis stands in (Gaussians are round). Where two blobs of one
    joint type nearly touch, the grid fit blends them; a fit that strays from its upsampled
    peak then gives way to a parabola fitted on the upsampled map.

    Args:
        heatmaps: (J, h, w) joint heatmaps (no background), finite.
        stride: output stride.
        upsampling_factor: (fy, fx); (1, 1) searches the output grid itself.
        smoothing_sigma: smoothing before NMS, in input pixels.
        threshold: minimum heatmap value of a peak.
        max_peaks: keep at most this many peaks per channel, highest first.
        refine: sub-pixel refinement (else the upsampled pixel's position and value).

    Returns:
        J arrays (n_j, 3) float32 of x, y (input pixels) and score, highest score first.
    """
    num, h, w = heatmaps.shape
    fy, fx = (int(f) for f in upsampling_factor)
    shape = (h * fy, w * fx, num)
    maps = np.ascontiguousarray(heatmaps.transpose(1, 2, 0))  # (h, w, J): cv2 is channels-last
    if (fy, fx) != (1, 1):
        maps = cv2.resize(
            maps, shape[1::-1], dst=_scratch("up", shape), interpolation=cv2.INTER_CUBIC
        )
    maps = maps.reshape(shape)
    smooth = maps
    if smoothing_sigma > 0:
        sx, sy = smoothing_sigma * fx / stride, smoothing_sigma * fy / stride
        # TAO's kernel (5 taps for sigma 3) scaled with sigma: a smoother that suppresses
        # ripples and noise maxima; positions come from the fit below, not from this map
        ksize = (2 * int(np.ceil(sx * 2 / 3)) + 1, 2 * int(np.ceil(sy * 2 / 3)) + 1)
        # sepFilter2D: GaussianBlur takes a slow path on many-channel images
        kx = cv2.getGaussianKernel(ksize[0], sx, cv2.CV_32F)
        ky = cv2.getGaussianKernel(ksize[1], sy, cv2.CV_32F)
        smooth = cv2.sepFilter2D(
            maps, -1, kx, ky, dst=_scratch("smooth", shape), borderType=cv2.BORDER_REPLICATE
        ).reshape(shape)
    # TAO's NMS: pixels equal to their 3x3 max on the smoothed map, above the threshold on the
    # unsmoothed one (cv2.dilate replicates the border, so edge pixels can be peaks)
    pooled = cv2.dilate(smooth, _KERNEL_3X3, dst=_scratch("pooled", shape)).reshape(shape)
    maxima = np.greater_equal(smooth, pooled, out=_scratch("maxima", shape, bool))
    maxima &= np.greater(maps, threshold, out=_scratch("above", shape, bool))
    uy, ux, channel = _first_of_plateaus(smooth, maxima)
    values = maps[uy, ux, channel]
    # output-grid coordinates of the upsampled pixels (cv2.resize's half-pixel mapping)
    gx = (ux + 0.5) / fx - 0.5
    gy = (uy + 0.5) / fy - 0.5
    if refine and len(channel):
        fine_x, fine_y, fine_values = _refine(heatmaps, channel, gx, gy)
        if (fy, fx) != (1, 1):
            # Where two blobs of one joint type nearly touch (a crowd), the grid fit reads both
            # and drifts; the upsampled map still separates them. A fit that lands farther from
            # its upsampled peak than that peak's own error (half an upsampled pixel plus the
            # ~0.5 px bicubic bias) gives way to a parabola on the smoothed upsampled map.
            dx, dy = _parabola_hwc(smooth, uy, ux, channel)
            near_x, near_y = (ux + dx + 0.5) / fx - 0.5, (uy + dy + 0.5) / fy - 0.5
            far = np.abs(fine_x - near_x) * stride > 0.5 * stride / fx + 0.5
            far |= np.abs(fine_y - near_y) * stride > 0.5 * stride / fy + 0.5
            # ...except within two cells of the edge, where bicubic upsampling reads replicated
            # border cells and the grid fit (borrowing curvature at the edge) is the better one
            far &= (near_x > 1.5) & (near_x < w - 2.5) & (near_y > 1.5) & (near_y < h - 2.5)
            fine_x = np.where(far, near_x, fine_x)
            fine_y = np.where(far, near_y, fine_y)
            fine_values = np.where(far, np.minimum(values, 1.0), fine_values)
        gx, gy, values = fine_x, fine_y, fine_values
    xs, ys = to_input(gx, stride), to_input(gy, stride)
    table = np.stack([xs, ys, values], axis=1).astype(np.float32)  # (N, 3)
    # refinement can bring two maxima of one blob (say, either side of a dent) to one place:
    # keep the best peak per output cell, which also bounds the count on noise
    cell = np.clip(np.rint(gy), 0, h - 1).astype(np.int64) * w + np.clip(np.rint(gx), 0, w - 1)
    key = channel.astype(np.int64) * (h * w) + cell.astype(np.int64)
    order = np.lexsort((-table[:, 2], key))
    first = np.ones(len(order), bool)
    first[1:] = key[order][1:] != key[order][:-1]
    order = order[first]
    table, channel = table[order], channel[order]
    out = []
    for j in range(num):
        mine = table[channel == j]
        out.append(mine[np.argsort(-mine[:, 2], kind="stable")[:max_peaks]])
    return out


def _first_of_plateaus(
    smooth: np.ndarray, maxima: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of the local maxima, one per flat top.

    A flat top (a saturated or constant map) makes every pixel of it a 3x3 maximum; keeping
    only those strictly above their already-scanned neighbours (up-left, up, up-right, left)
    leaves one per top, so a constant map costs one peak instead of one per pixel.

    Args:
        smooth: (H, W, C) map.
        maxima: (H, W, C) bool, pixels >= their 8 neighbours.

    Returns:
        y, x, channel (n,) of the kept maxima.
    """
    width = smooth.shape[1]
    y, x, c = np.unravel_index(np.flatnonzero(maxima), maxima.shape)
    value = smooth[y, x, c]
    keep = np.ones(len(y), bool)
    for dy, dx in ((0, -1), (-1, -1), (-1, 0), (-1, 1)):
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (nx >= 0) & (nx < width)
        neighbour = smooth[np.maximum(ny, 0), np.clip(nx, 0, width - 1), c]
        keep &= ~inside | (value > neighbour)
    return y[keep], x[keep], c[keep]


def _refine(
    heatmaps: np.ndarray, channel: np.ndarray, gx: np.ndarray, gy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-cell peak positions and heights from a log-parabola fit on the raw output grid.

    Args:
        heatmaps: (J, h, w) raw joint heatmaps.
        channel: (N,) channel of each peak.
        gx, gy: (N,) approximate peak positions in grid coordinates.

    Returns:
        refined gx, gy (N,) and the fitted heights (N,) clipped to [0, 1].
    """
    _, h, w = heatmaps.shape
    logs = np.log(np.maximum(heatmaps, _LOG_FLOOR))
    cx = np.clip(np.rint(gx), 0, w - 1).astype(np.int64)
    cy = np.clip(np.rint(gy), 0, h - 1).astype(np.int64)
    dx, dy, height = _fit(logs, channel, cx, cy)
    # a fit that lands more than half a cell away is redone around the cell it points to
    moved = (np.abs(dx) > 0.5) | (np.abs(dy) > 0.5)
    if moved.any():
        cx = np.where(moved, np.clip(np.rint(cx + dx), 0, w - 1).astype(np.int64), cx)
        cy = np.where(moved, np.clip(np.rint(cy + dy), 0, h - 1).astype(np.int64), cy)
        dx, dy, height = _fit(logs, channel, cx, cy)
    return cx + dx, cy + dy, np.exp(np.minimum(height, 0.0))  # heights above 1 read as 1


def _parabola_hwc(
    maps: np.ndarray, y: np.ndarray, x: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel offsets of log-parabola tops around pixels (y, x) of channel c of (H, W, C)."""
    height, width, _ = maps.shape
    logs = lambda yy, xx: np.log(np.maximum(maps[yy, xx, c], _LOG_FLOOR))  # noqa: E731
    centre = logs(y, x)
    left, right = logs(y, np.maximum(x - 1, 0)), logs(y, np.minimum(x + 1, width - 1))
    up, down = logs(np.maximum(y - 1, 0), x), logs(np.minimum(y + 1, height - 1), x)
    dx, dy, _ = _fit_values(
        centre, left, right, up, down, x > 0, x < width - 1, y > 0, y < height - 1
    )
    return dx, dy


def _fit(
    logs: np.ndarray, channel: np.ndarray, cx: np.ndarray, cy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets (within +-1 cell) of the log-parabola's top from (cx, cy), and its log-height."""
    _, h, w = logs.shape
    centre = logs[channel, cy, cx]
    left = logs[channel, cy, np.maximum(cx - 1, 0)]
    right = logs[channel, cy, np.minimum(cx + 1, w - 1)]
    up = logs[channel, np.maximum(cy - 1, 0), cx]
    down = logs[channel, np.minimum(cy + 1, h - 1), cx]
    return _fit_values(centre, left, right, up, down, cx > 0, cx < w - 1, cy > 0, cy < h - 1)


def _fit_values(
    centre: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    up: np.ndarray,
    down: np.ndarray,
    has_left: np.ndarray,
    has_right: np.ndarray,
    has_up: np.ndarray,
    has_down: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Separable log-parabola fit through a centre and its four neighbours (log values)."""
    curv_x = np.where(has_left & has_right, 2 * centre - left - right, np.nan)
    curv_y = np.where(has_up & has_down, 2 * centre - up - down, np.nan)
    # a missing side borrows the other axis's curvature (round Gaussians)
    curv_x = np.where(np.isnan(curv_x), curv_y, curv_x)
    curv_y = np.where(np.isnan(curv_y), curv_x, curv_y)
    dx = _offset(centre, left, right, has_left, has_right, curv_x)
    dy = _offset(centre, up, down, has_up, has_down, curv_y)
    lift = 0.5 * (np.nan_to_num(curv_x) * dx * dx + np.nan_to_num(curv_y) * dy * dy)
    return dx, dy, centre + np.maximum(lift, 0.0)


def _offset(
    centre: np.ndarray,
    minus: np.ndarray,
    plus: np.ndarray,
    has_minus: np.ndarray,
    has_plus: np.ndarray,
    curvature: np.ndarray,
) -> np.ndarray:
    """Top of the parabola through (-1, minus), (0, centre), (1, plus) given its curvature.

    With both sides: (plus - minus) / (2 c). With one side and a borrowed curvature c:
    the top is where a parabola of curvature c through the two known points peaks.
    """
    ok = np.isfinite(curvature) & (curvature > 1e-9)
    c = np.where(ok, curvature, 1.0)
    both = 0.5 * (plus - minus) / c
    only_plus = 0.5 + (plus - centre) / c
    only_minus = -0.5 - (minus - centre) / c
    offset = np.where(has_minus & has_plus, both, np.where(has_plus, only_plus, only_minus))
    offset = np.where(ok & (has_minus | has_plus), offset, 0.0)
    return np.clip(offset, -1.0, 1.0)
