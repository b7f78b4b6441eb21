"""Joint candidates: local maxima of the heatmaps, each placed to a fraction of a pixel by a
Gaussian fit on the raw output grid (:func:`find_peaks`).

Two searches find the maxima. The grid search (``upsampling_factor`` (1, 1), the default of
:class:`~bpnet.decode.DecoderParams`) looks at the output grid itself and upsamples only small
windows around the peaks that may hold two joints of one type. TAO's search upsamples every
heatmap first (``upsampling_factor`` (8, 8) in TAO's infer spec): on a 46x46 grid that is 64
times the pixels for the same peaks.

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
_CV_CHANNELS = 128  # OpenCV's Python binding takes images of at most this many channels
# The grid search's window around a peak that may hold two joints: 6 cells each side carry
# the bicubic (2 cells), smoothing and 3x3 NMS support of the 7x7 cells kept at its centre.
_WINDOW_RADIUS = 6
_WINDOW_KEEP = 3
# Grid peaks of one joint type at most this many cells apart (in x and in y) are searched in
# windows: their grid fits read each other's blobs.
_NEIGHBOUR_CELLS = 3
# A cell within _SHOULDER_CELLS of a grid peak above the peak's fitted Gaussian by _SHOULDER
# of its height may be a second joint of the same type: a blob on the peak's shoulder, with
# no grid maximum of its own. Exact Gaussians leave 0; a network's blobs are rounder or
# flatter (on the imported network's maps a third of the peaks pass), and a false alarm costs
# only a small window.
_SHOULDER = 0.1
_SHOULDER_CELLS = 3
# The share of a peak's height its nearest grid cell keeps at least: exp(-0.25 / sigma^2) for
# a Gaussian of sigma cells centred at a cell's corner, 0.72 for the encoder's 7 px; 0.5
# covers blobs down to sigma 5 px.
_CELL_FLOOR = 0.5
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

    Both searches smooth the maps, keep pixels equal to their 3x3 maximum (TAO's NMS), and
    re-place each peak by fitting a Gaussian (a parabola to the log) through the raw grid
    values around the cell nearest to it, separately in x and y: exact for the encoder's
    targets, and the DARK-style estimate for a network's. At the map border, where a side
    value is missing, the curvature of the other axis stands in (Gaussians are round).

    TAO's search (``upsampling_factor`` other than (1, 1)) first upsamples the maps (bicubic)
    and keeps maxima whose unsmoothed upsampled value exceeds ``threshold``. Where two blobs of
    one joint type nearly touch, the grid fit blends them; a fit that strays from its
    upsampled peak then gives way to a parabola fitted on the upsampled map.

    The grid search (``upsampling_factor`` (1, 1)) takes the maxima of the output grid whose
    fitted height passes ``threshold`` (a peak between cells leaves only part of it on its
    nearest cell). Two blobs of one type a few cells apart share one grid maximum (the weaker
    sits on the stronger one's shoulder: the Gaussian fitted to the maximum falls short of a
    cell on its side), or make two maxima whose fits read each other's blob (two maxima of
    one type within 3 cells). Those peaks alone are searched again as TAO's search does, on
    windows of 13x13 cells upsampled by the stride, keeping the maxima of their central 7x7
    cells. On the encoder's targets and on real network maps this finds what the x8 search of
    the whole maps finds (docs/BENCHMARKS.md). When so many peaks would need a window that
    the windows cost more than the whole maps (noise), the whole maps are searched that way.

    Args:
        heatmaps: (J, h, w) joint heatmaps (no background), finite.
        stride: output stride.
        upsampling_factor: (fy, fx); (1, 1) searches the output grid itself.
        smoothing_sigma: smoothing before NMS, in input pixels.
        threshold: minimum heatmap value of a peak (the grid search: at its fitted top).
        max_peaks: keep at most this many peaks per channel, highest first.
        refine: sub-pixel refinement (else the searched pixel's position and value; the grid
            search then gives cell centres).

    Returns:
        J arrays (n_j, 3) float32 of x, y (input pixels) and score, highest score first.
    """
    num, h, w = heatmaps.shape
    factor = tuple(int(f) for f in upsampling_factor)
    search = dict(stride=stride, smoothing_sigma=smoothing_sigma, threshold=threshold)
    if factor == (1, 1):
        channel, gx, gy, values = _grid_search(heatmaps, refine=refine, **search)
    else:
        maps = np.ascontiguousarray(heatmaps.transpose(1, 2, 0))  # (h, w, J): cv2 is HWC
        whole = np.zeros((num, 2), np.int64)
        channel, gx, gy, values = _upsampled_search(
            maps, heatmaps, np.arange(num), whole, factor, refine=refine, reuse=True, **search
        )
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
    # per channel, highest first: one sort by (channel, -score), then split
    order = np.lexsort((-table[:, 2], channel))
    table, channel = table[order], channel[order]
    bounds = np.searchsorted(channel, np.arange(num + 1))
    return [table[bounds[j] : bounds[j + 1]][:max_peaks] for j in range(num)]


def _grid_search(
    heatmaps: np.ndarray,
    *,
    stride: int,
    smoothing_sigma: float,
    threshold: float,
    refine: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Peaks from the output grid's maxima (:func:`find_peaks`, ``upsampling_factor`` (1, 1)).

    Returns:
        channel (N,), gx, gy (N,) grid coordinates and values (N,) of the peaks.
    """
    num, h, w = heatmaps.shape
    maps = np.ascontiguousarray(heatmaps.transpose(1, 2, 0))  # (h, w, J)
    smooth = _smooth(maps, smoothing_sigma / stride, smoothing_sigma / stride)
    if not refine:
        y, x, channel = _maxima(maps, smooth, threshold)
        return channel, x.astype(np.float64), y.astype(np.float64), maps[y, x, channel]
    # A peak between cells leaves only part of its height on its nearest cell: candidates
    # need _CELL_FLOOR of the threshold there, peaks the threshold at their fitted top (what
    # the x8 search tests, up to the bicubic upsampling's overshoot).
    y, x, channel = _maxima(maps, smooth, threshold * _CELL_FLOOR)
    if len(channel) == 0:
        return channel, x.astype(np.float64), y.astype(np.float64), maps[y, x, channel]
    gx, gy, log_height, curv_x, curv_y = _refine(heatmaps, channel, x, y)
    values = np.exp(np.minimum(log_height, 0.0))  # heights above 1 read as 1
    two = _two_blobs(heatmaps, channel, gx, gy, log_height, curv_x, curv_y)
    two |= _neighbours(channel, x, y, (h, w, num))
    keep = ~two & (values > threshold)
    if not two.any():
        return channel[keep], gx[keep], gy[keep], values[keep]
    size = (2 * _WINDOW_RADIUS + 1) ** 2
    if two.sum() * size > num * h * w:  # noise: the whole maps cost less than the windows
        whole = np.zeros((num, 2), np.int64)
        return _upsampled_search(
            maps, heatmaps, np.arange(num), whole, (stride, stride), stride=stride,
            smoothing_sigma=smoothing_sigma, threshold=threshold, refine=True, reuse=True,
        )  # fmt: skip
    # (K, 13, 13) windows centred on the grid maxima, edge cells replicated past the border
    span = np.arange(-_WINDOW_RADIUS, _WINDOW_RADIUS + 1)
    rows = np.clip(y[two, None] + span, 0, h - 1)  # (K, 13)
    cols = np.clip(x[two, None] + span, 0, w - 1)
    windows = heatmaps[channel[two, None, None], rows[:, :, None], cols[:, None, :]]
    origin = np.stack([y[two], x[two]], axis=1) - _WINDOW_RADIUS  # (K, 2) cell of [0, 0]
    found = []
    for lo in range(0, len(windows), _CV_CHANNELS):
        part = slice(lo, lo + _CV_CHANNELS)
        c, fx, fy, v = _upsampled_search(
            np.ascontiguousarray(windows[part].transpose(1, 2, 0)), heatmaps,
            channel[two][part], origin[part], (stride, stride), stride=stride,
            smoothing_sigma=smoothing_sigma, threshold=threshold, refine=True, reuse=False,
            centre=True,
        )  # fmt: skip
        found.append((c, fx, fy, v))
    c, fx, fy, v = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return (
        np.concatenate([channel[keep], c]),
        np.concatenate([gx[keep], fx]),
        np.concatenate([gy[keep], fy]),
        np.concatenate([values[keep], v]),
    )


def _two_blobs(
    heatmaps: np.ndarray,
    channel: np.ndarray,
    gx: np.ndarray,
    gy: np.ndarray,
    log_height: np.ndarray,
    curv_x: np.ndarray,
    curv_y: np.ndarray,
) -> np.ndarray:
    """(N,) bool: peaks with a cell of their 7x7 neighbourhood above their fitted Gaussian by
    ``_SHOULDER`` x its height, the mark of a second blob of the same joint type within about
    three cells."""
    _, h, w = heatmaps.shape
    span = np.arange(-_SHOULDER_CELLS, _SHOULDER_CELLS + 1)
    cx, cy = np.rint(gx).astype(np.int64), np.rint(gy).astype(np.int64)
    xx = (cx[:, None] + span)[:, None, :]  # (N, 1, 7)
    yy = (cy[:, None] + span)[:, :, None]  # (N, 7, 1)
    inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
    actual = heatmaps[channel[:, None, None], np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
    ex, ey = xx - gx[:, None, None], yy - gy[:, None, None]
    kx, ky = (np.nan_to_num(k)[:, None, None] for k in (curv_x, curv_y))
    fitted = np.exp(log_height[:, None, None] - 0.5 * (kx * ex * ex + ky * ey * ey))
    height = np.exp(log_height)
    excess = np.where(inside, actual - fitted, 0.0).reshape(len(gx), -1).max(1)
    return excess > _SHOULDER * height


def _neighbours(
    channel: np.ndarray, x: np.ndarray, y: np.ndarray, shape: tuple[int, int, int]
) -> np.ndarray:
    """(N,) bool: grid peaks with another peak of their type within ``_NEIGHBOUR_CELLS``."""
    marks = np.zeros(shape, np.float32)  # (h, w, J)
    marks[y, x, channel] = 1.0
    ones = np.ones(2 * _NEIGHBOUR_CELLS + 1, np.float32)  # a box sum (boxFilter is slower)
    counts = cv2.sepFilter2D(marks, -1, ones, ones, borderType=cv2.BORDER_CONSTANT)
    counts = counts.reshape(shape)
    return counts[y, x, channel] > 1.5


def _upsampled_search(
    maps: np.ndarray,
    heatmaps: np.ndarray,
    channel_of: np.ndarray,
    origin: np.ndarray,
    factor: tuple[int, int],
    *,
    stride: int,
    smoothing_sigma: float,
    threshold: float,
    refine: bool,
    reuse: bool,
    centre: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TAO's search on stacked grid maps: upsample, smooth, 3x3 NMS, fit on the grid.

    Args:
        maps: (H, W, C) grid values: the whole heatmaps, or windows of them.
        heatmaps: (J, h, w) the whole heatmaps (the grid fit reads them).
        channel_of: (C,) joint type of each stacked map.
        origin: (C, 2) y, x cell of the whole map at each stacked map's [0, 0].
        factor: (fy, fx) upsampling.
        reuse: work in this thread's reusable arrays (the whole maps, every frame).
        centre: keep only maxima within ``_WINDOW_KEEP`` cells of the centre (windows).

    Returns:
        channel (N,), gx, gy (N,) grid coordinates of the whole map and values (N,).
    """
    _, h, w = heatmaps.shape
    fy, fx = factor
    shape = (maps.shape[0] * fy, maps.shape[1] * fx, maps.shape[2])

    def out(name: str, dtype: type = np.float32) -> np.ndarray | None:
        return _scratch(name, shape, dtype) if reuse else None

    up = cv2.resize(maps, shape[1::-1], dst=out("up"), interpolation=cv2.INTER_CUBIC)
    up = up.reshape(shape)
    smooth = _smooth(up, smoothing_sigma * fx / stride, smoothing_sigma * fy / stride, out)
    uy, ux, stack = _maxima(up, smooth, threshold, out)
    if centre:
        middle = (np.abs((uy + 0.5) / fy - 0.5 - _WINDOW_RADIUS) <= _WINDOW_KEEP + 0.5) & (
            np.abs((ux + 0.5) / fx - 0.5 - _WINDOW_RADIUS) <= _WINDOW_KEEP + 0.5
        )
        uy, ux, stack = uy[middle], ux[middle], stack[middle]
    values = up[uy, ux, stack]
    channel = channel_of[stack]
    # whole-map grid coordinates of the upsampled pixels (cv2.resize's half-pixel mapping)
    gx = (ux + 0.5) / fx - 0.5 + origin[stack, 1]
    gy = (uy + 0.5) / fy - 0.5 + origin[stack, 0]
    if not refine or len(channel) == 0:
        return channel, gx, gy, values
    fine_x, fine_y, log_height, _, _ = _refine(heatmaps, channel, gx, gy)
    fine_values = np.exp(np.minimum(log_height, 0.0))
    # Where two blobs of one joint type nearly touch (a crowd), the grid fit reads both and
    # drifts; the upsampled map still separates them. A fit that lands farther from its
    # upsampled peak than that peak's own error (half an upsampled pixel plus the ~0.5 px
    # bicubic bias) gives way to a parabola on the smoothed upsampled map.
    dx, dy = _parabola_hwc(smooth, uy, ux, stack)
    near_x = (ux + dx + 0.5) / fx - 0.5 + origin[stack, 1]
    near_y = (uy + dy + 0.5) / fy - 0.5 + origin[stack, 0]
    far = np.abs(fine_x - near_x) * stride > 0.5 * stride / fx + 0.5
    far |= np.abs(fine_y - near_y) * stride > 0.5 * stride / fy + 0.5
    # ...except within two cells of the edge, where bicubic upsampling reads replicated
    # border cells and the grid fit (borrowing curvature at the edge) is the better one
    far &= (near_x > 1.5) & (near_x < w - 2.5) & (near_y > 1.5) & (near_y < h - 2.5)
    return (
        channel,
        np.where(far, near_x, fine_x),
        np.where(far, near_y, fine_y),
        np.where(far, np.minimum(values, 1.0), fine_values),
    )


def _smooth(maps: np.ndarray, sx: float, sy: float, out=None) -> np.ndarray:
    """(H, W, C) maps smoothed by a Gaussian of sigma (sx, sy) pixels; sigma 0: the maps."""
    if sx <= 0 or sy <= 0:
        return maps
    # TAO's kernel (5 taps for sigma 3) scaled with sigma: a smoother that suppresses ripples
    # and noise maxima; positions come from the grid fit, not from this map
    ksize = (2 * int(np.ceil(sx * 2 / 3)) + 1, 2 * int(np.ceil(sy * 2 / 3)) + 1)
    # sepFilter2D: GaussianBlur takes a slow path on many-channel images
    kx = cv2.getGaussianKernel(ksize[0], sx, cv2.CV_32F)
    ky = cv2.getGaussianKernel(ksize[1], sy, cv2.CV_32F)
    dst = out("smooth") if out else None
    smooth = cv2.sepFilter2D(maps, -1, kx, ky, dst=dst, borderType=cv2.BORDER_REPLICATE)
    return smooth.reshape(maps.shape)


def _maxima(
    maps: np.ndarray, smooth: np.ndarray, threshold: float, out=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TAO's NMS: y, x, channel (n,) of pixels equal to their 3x3 max on the smoothed (H, W, C)
    map and above ``threshold`` on the unsmoothed one, one per flat top."""
    out = out or (lambda name, dtype=np.float32: None)
    # cv2.dilate replicates the border, so edge pixels can be peaks
    pooled = cv2.dilate(smooth, _KERNEL_3X3, dst=out("pooled")).reshape(smooth.shape)
    maxima = np.greater_equal(smooth, pooled, out=out("maxima", bool))
    maxima &= np.greater(maps, threshold, out=out("above", bool))
    return _first_of_plateaus(smooth, maxima)


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sub-cell peak positions and heights from a log-parabola fit on the raw output grid.

    Args:
        heatmaps: (J, h, w) raw joint heatmaps.
        channel: (N,) channel of each peak.
        gx, gy: (N,) approximate peak positions in grid coordinates.

    Returns:
        refined gx, gy (N,), the fitted log-heights (N,) and the fit's curvatures of the log
        along x and y (N,) (NaN where the map is flat).
    """
    _, h, w = heatmaps.shape
    cx = np.clip(np.rint(gx), 0, w - 1).astype(np.int64)
    cy = np.clip(np.rint(gy), 0, h - 1).astype(np.int64)
    fit = _fit(heatmaps, channel, cx, cy)  # dx, dy, log-height, curvatures
    # a fit that lands more than half a cell away is redone around the cell it points to (at
    # the map's edge that is often the same cell: nothing to redo)
    new_x = np.clip(np.rint(cx + fit[0]), 0, w - 1).astype(np.int64)
    new_y = np.clip(np.rint(cy + fit[1]), 0, h - 1).astype(np.int64)
    far = (np.abs(fit[0]) > 0.5) | (np.abs(fit[1]) > 0.5)
    moved = np.flatnonzero(far & ((new_x != cx) | (new_y != cy)))
    if len(moved):
        cx[moved], cy[moved] = new_x[moved], new_y[moved]
        redo = _fit(heatmaps, channel[moved], cx[moved], cy[moved])
        for values, redone in zip(fit, redo, strict=True):
            values[moved] = redone
    dx, dy, height, curv_x, curv_y = fit
    return cx + dx, cy + dy, height, curv_x, curv_y


def _parabola_hwc(
    maps: np.ndarray, y: np.ndarray, x: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel offsets of log-parabola tops around pixels (y, x) of channel c of (H, W, C)."""
    height, width, _ = maps.shape
    ys = np.stack([y, y, y, np.maximum(y - 1, 0), np.minimum(y + 1, height - 1)])
    xs = np.stack([x, np.maximum(x - 1, 0), np.minimum(x + 1, width - 1), x, x])
    logs = np.log(np.maximum(maps[ys, xs, c], _LOG_FLOOR))  # (5, N) centre, left, right, up, down
    dx, dy, _, _, _ = _fit_values(*logs, x > 0, x < width - 1, y > 0, y < height - 1)
    return dx, dy


def _fit(
    heatmaps: np.ndarray, channel: np.ndarray, cx: np.ndarray, cy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Offsets (within +-1 cell) of the log-parabola's top from (cx, cy), its log-height and
    its curvatures (:func:`_fit_values`)."""
    _, h, w = heatmaps.shape
    left, right = np.maximum(cx - 1, 0), np.minimum(cx + 1, w - 1)
    up, down = np.maximum(cy - 1, 0), np.minimum(cy + 1, h - 1)
    ys = np.stack([cy, cy, cy, up, down])  # (5, N) centre, left, right, up, down
    xs = np.stack([cx, left, right, cx, cx])
    logs = np.log(np.maximum(heatmaps[channel, ys, xs], _LOG_FLOOR))
    return _fit_values(*logs, cx > 0, cx < w - 1, cy > 0, cy < h - 1)


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Separable log-parabola fit through a centre and its four neighbours (log values).

    Returns:
        dx, dy offsets of the top, its log-height, and the curvatures along x and y.
    """
    curv_x = np.where(has_left & has_right, 2 * centre - left - right, np.nan)
    curv_y = np.where(has_up & has_down, 2 * centre - up - down, np.nan)
    # a missing side borrows the other axis's curvature (round Gaussians)
    curv_x = np.where(np.isnan(curv_x), curv_y, curv_x)
    curv_y = np.where(np.isnan(curv_y), curv_x, curv_y)
    dx = _offset(centre, left, right, has_left, has_right, curv_x)
    dy = _offset(centre, up, down, has_up, has_down, curv_y)
    lift = 0.5 * (np.nan_to_num(curv_x) * dx * dx + np.nan_to_num(curv_y) * dy * dy)
    return dx, dy, centre + np.maximum(lift, 0.0), curv_x, curv_y


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
