"""Training targets: keypoints in network-input pixels -> heatmaps, PAFs and a loss mask.

Heatmaps and PAFs are evaluated at the output cells' centres in input pixels (the grid
convention of :mod:`bpnet.grid`, which the decoder inverts exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from bpnet.grid import cell_centers
from bpnet.pose.skeleton import PoseConfig

# TAO zeroes heatmap values below this (far Gaussian tails), so the background is exactly 1 away
# from people and the targets are sparse; peaks and their 3x3 neighbourhoods are far above it.
HEATMAP_FLOOR = 1e-3


@dataclass(frozen=True)
class Targets:
    """What the network is trained to output for one sample (stride-8 grid, h = H / stride).

    Attributes:
        heatmaps: (J + 1, h, w) float32; channel J is the background, 1 - max over joints.
        pafs: (2L, h, w) float32; limb i's unit vector a -> b in channels 2i (x), 2i + 1 (y).
        mask: (h, w) float32 in [0, 1]; the fraction of each cell's input pixels that count.
    """

    heatmaps: np.ndarray
    pafs: np.ndarray
    mask: np.ndarray


def encode(
    keypoints: np.ndarray,
    mask: np.ndarray,
    pose: PoseConfig,
    *,
    stride: int = 8,
    sigma: float = 7.0,
    paf_width: float = 1.0,
) -> Targets:
    """Encode one sample's people as heatmaps, PAFs and an output-size loss mask.

    Heatmaps are Gaussians evaluated at the cell centres (module docstring), the max over
    people, zeroed below 1e-3 as TAO does; the background channel is 1 - the max over joints.
    Only labelled joints (v > 0) contribute; a joint outside the crop still adds the part of its
    Gaussian that reaches in, and a limb crossing the crop still gets its PAF there. Where
    limbs of several people cover a cell, their unit vectors are averaged (count-normalised,
    as in OpenPose), so the field stays at most unit length.

    Args:
        keypoints: (P, J, 3) x, y, v in network-input pixels, joints in ``pose`` order; rows
            of padding have v = 0.
        mask: (H, W) loss mask at input size, 1 = counts (any numeric dtype).
        pose: the skeleton (joint and limb order, channel counts).
        stride: network output stride; H and W must be multiples of it.
        sigma: heatmap Gaussian sigma in input pixels (``heatmap_gaussian_sigma``).
        paf_width: PAF half-width in output cells (``paf_ortho_dist_thresh``): a cell gets the
            limb's unit vector when its centre is within ``paf_width * stride`` input pixels of
            the limb's line, and along the limb from ``paf_width * stride`` before joint a to
            as far past joint b. The extension past the joints keeps the field full-strength
            around each joint, so the decoder's end samples (taken at the joints themselves)
            read the limb's direction rather than a half-faded edge.

    Returns:
        :class:`Targets` on the (H / stride, W / stride) grid.

    Raises:
        ValueError: on a keypoint array that does not match ``pose`` or a mask size that is not
            a multiple of ``stride``.
    """
    mask = np.asarray(mask)
    height, width = mask.shape
    if height % stride or width % stride:
        raise ValueError(f"mask size {mask.shape} is not a multiple of the stride {stride}")
    kp = np.asarray(keypoints, np.float32)  # (P, J, 3)
    if kp.ndim != 3 or kp.shape[1:] != (pose.num_joints, 3):
        raise ValueError(f"keypoints have shape {kp.shape}; expected (P, {pose.num_joints}, 3)")
    h, w = height // stride, width // stride
    xs, ys = cell_centers(w, stride), cell_centers(h, stride)
    labelled = (kp[..., 2] > 0) & np.isfinite(kp[..., :2]).all(-1)  # (P, J)
    people = labelled.any(1)  # padding rows (the loader pads to max_people) cost nothing
    labelled = labelled[people]
    xy = np.where(labelled[..., None], kp[people, :, :2], 0.0)  # (P', J, 2), NaN-free

    heatmaps = np.empty((pose.num_heatmap_channels, h, w), np.float32)
    heatmaps[:-1] = _heatmaps(xy, labelled, xs, ys, sigma)
    heatmaps[-1] = 1.0 - heatmaps[:-1].max(0, initial=0.0)
    limbs = np.asarray(pose.limbs, np.int64).reshape(-1, 2)
    pafs = _pafs(xy, labelled, limbs, xs, ys, paf_width * stride)
    # INTER_AREA with an integer factor is the exact block mean: the fraction of each cell's
    # pixels that count. Kept fractional (no threshold) so a cell straddling a crowd boundary
    # is half-weighted instead of flipped either way, and an all-ones mask stays exactly 1.
    small = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return Targets(heatmaps, pafs.reshape(-1, h, w), np.clip(small, 0.0, 1.0))


def _heatmaps(
    xy: np.ndarray, labelled: np.ndarray, xs: np.ndarray, ys: np.ndarray, sigma: float
) -> np.ndarray:
    """(J, h, w) max over people of separable Gaussians (exp(-d^2 / 2 sigma^2) = gx * gy)."""
    if xy.shape[0] == 0:
        return np.zeros((xy.shape[1], ys.size, xs.size), np.float32)
    scale = -0.5 / (sigma * sigma)
    gx = np.exp(scale * (xs - xy[..., 0:1]) ** 2)  # (P, J, w)
    gy = np.exp(scale * (ys - xy[..., 1:2]) ** 2)  # (P, J, h)
    gx *= labelled[..., None]
    heat = (gy[..., :, None] * gx[..., None, :]).max(0)  # (J, h, w)
    heat[heat < HEATMAP_FLOOR] = 0.0
    return heat.astype(np.float32)


def _pafs(
    xy: np.ndarray,
    labelled: np.ndarray,
    limbs: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    radius: float,
) -> np.ndarray:
    """(L, 2, h, w) unit limb vectors, averaged over the people whose limb covers a cell."""
    start, end = xy[:, limbs[:, 0]], xy[:, limbs[:, 1]]  # (P, L, 2)
    delta = end - start
    length = np.linalg.norm(delta, axis=-1)  # (P, L)
    # a zero-length limb has no direction: it adds nothing (and the decoder cannot score it)
    valid = labelled[:, limbs[:, 0]] & labelled[:, limbs[:, 1]] & (length > 1e-3)
    unit = np.where(valid[..., None], delta / np.maximum(length, 1e-3)[..., None], 0.0)
    ux, uy = unit[..., 0:1], unit[..., 1:2]  # (P, L, 1)
    dx = xs - start[..., 0:1]  # (P, L, w)
    dy = ys - start[..., 1:2]  # (P, L, h)
    # along / across the limb for every cell: separable sums of a per-column and a per-row term
    along = (dx * ux)[..., None, :] + (dy * uy)[..., :, None]  # (P, L, h, w)
    across = (dx * uy)[..., None, :] - (dy * ux)[..., :, None]
    on = (
        (np.abs(across) <= radius)
        & (along >= -radius)
        & (along <= (length + radius)[..., None, None])
        & valid[..., None, None]
    ).astype(np.float32)
    count = on.sum(0)  # (L, h, w)
    vectors = np.einsum("plhw,plc->lchw", on, unit.astype(np.float32))  # (L, 2, h, w)
    return (vectors / np.maximum(count, 1.0)[:, None]).astype(np.float32)


def encode_batch(
    keypoints: torch.Tensor | np.ndarray,
    masks: torch.Tensor | np.ndarray,
    pose: PoseConfig,
    *,
    stride: int = 8,
    sigma: float = 7.0,
    paf_width: float = 1.0,
) -> dict[str, torch.Tensor]:
    """:func:`encode` over a batch from the data loader, as CPU tensors ready to stack losses on.

    Args:
        keypoints: (B, P, J, 3) x, y, v in input pixels (padding rows have v = 0).
        masks: (B, H, W) loss masks at input size, 1 = counts.
        pose, stride, sigma, paf_width: as in :func:`encode`.

    Returns:
        ``heatmaps`` (B, J + 1, h, w), ``pafs`` (B, 2L, h, w) and ``mask`` (B, h, w), float32.
    """
    keypoints = _numpy(keypoints)
    masks = _numpy(masks)
    targets = [
        encode(k, m, pose, stride=stride, sigma=sigma, paf_width=paf_width)
        for k, m in zip(keypoints, masks, strict=True)
    ]
    return {
        name: torch.from_numpy(np.stack([getattr(t, name) for t in targets]))
        for name in ("heatmaps", "pafs", "mask")
    }


def _numpy(array: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)
