"""Network maps -> people: peaks, limb scores, greedy matching, assembly, filtering.

The inverse of :func:`bpnet.targets.encoder.encode`, with the same grid convention
(:mod:`bpnet.grid`): output cell ``j`` is centred at input pixel ``stride*j + (stride-1)/2``.
Keypoints come out in network-input pixels; the caller maps them to the image with the inverse
of its affine matrix.

Peaks are the heatmaps' local maxima on the output grid (smoothed, 3x3 max-pool NMS,
threshold), placed to a fraction of a pixel by a Gaussian fit on the raw grid; the few that hold
two joints of one type are searched again on small upsampled windows
(:func:`bpnet.decode.peaks.find_peaks`). TAO's search, every heatmap upsampled x8 first, is an
option that finds the same peaks at several times the cost. Limbs are scored on the grid,
matched and assembled in :mod:`bpnet.decode.paf`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bpnet.decode.paf import group_people, line_integrals, match_greedy, merge_fragments
from bpnet.decode.peaks import find_peaks
from bpnet.pose.skeleton import PoseConfig


@dataclass(frozen=True)
class DecoderParams:
    """Post-processing settings, as plain values, and their defaults.

    The defaults are TAO's except three: the peak search runs on the output grid (the same
    peaks, several times faster), and the heatmap threshold (0.05) and ``min_mean_score`` (0.2)
    are tuned on real network maps (docs/BENCHMARKS.md, "A decoder that keeps up"). 0.2 is
    TAO's 0.4 on this decoder's scale (TAO divides a person's score sum by the joint count,
    about twice the mean used here); TAO's heatmap threshold, 0.1, drops the joints of the
    imported network's smaller people (AP 0.182 against 0.215 on the fixture's val2017).

    An inference spec sets them (:meth:`bpnet.config.inference.InferenceSpec.decoder_params`,
    whose docstring gives each one's meaning).

    Attributes:
        upsampling_factor: (fy, fx) heatmap upsampling before the peak search; (1, 1), the
            default, searches the output grid (upsampling only windows around crowded peaks),
            TAO's (8, 8) upsamples every map first (same peaks, several times slower).
        smoothing_sigma: heatmap smoothing in input pixels (0: none).
        heatmap_threshold: minimum heatmap value at a peak.
        paf_threshold: minimum along-limb PAF value of a counting sample.
        line_integral_samples: samples per candidate limb.
        min_paf_fraction: fraction of samples that must count.
        min_parts: minimum joints per person.
        min_mean_score: minimum mean of a person's joint and limb scores.
        max_people: keep the best this many people; None keeps all.
        max_peaks: keep the best this many peaks per joint type (bounds the work on noise).
        refine: place peaks to sub-pixel precision (Gaussian fit on the output grid).
        fragment_merge_ratio: join partial people across a missing joint (0: off).
    """

    upsampling_factor: tuple[int, int] = (1, 1)
    smoothing_sigma: float = 3.0
    heatmap_threshold: float = 0.05
    paf_threshold: float = 0.05
    line_integral_samples: int = 10
    min_paf_fraction: float = 0.8
    min_parts: int = 4
    min_mean_score: float = 0.2
    max_people: int | None = None
    max_peaks: int = 128
    refine: bool = True
    fragment_merge_ratio: float = 2.0


@dataclass(frozen=True)
class People:
    """Decoded people of one image, best first.

    Attributes:
        keypoints: (N, J, 3) float32 x, y in network-input pixels and the joint's heatmap score;
            joints not found are (0, 0, 0).
        scores: (N,) float32 person scores in [0, 1] (the COCO result ``score``).
    """

    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, num_joints: int) -> People:
        return cls(np.zeros((0, num_joints, 3), np.float32), np.zeros(0, np.float32))

    @property
    def found(self) -> np.ndarray:
        """(N, J) bool: which joints each person has."""
        return self.keypoints[..., 2] > 0

    def to_dataset(self, pose: PoseConfig) -> np.ndarray:
        """(N, K, 3) in the dataset's keypoint order (COCO 17 by default), missing joints 0.

        Joints made from several keypoints (the neck) have no dataset keypoint and are left
        out; dataset keypoints no joint provides are zeros.
        """
        return pose.joints_to_dataset(self.keypoints)


def decode(
    heatmaps: np.ndarray,
    pafs: np.ndarray,
    pose: PoseConfig,
    params: DecoderParams | None = None,
    *,
    stride: int = 8,
) -> People:
    """Find the people in one image's network outputs.

    Steps: joint peaks (:func:`find_peaks`); every candidate pair of every limb scored by its
    PAF line integral, with OpenPose's distance prior (:func:`~bpnet.decode.paf.line_integrals`);
    greedy one-to-one matching per limb; assembly that adds the matched limbs best first,
    joining partial people whenever a limb links two that share no joint type
    (:func:`~bpnet.decode.paf.group_people`); joining pieces across missing joints
    (:func:`~bpnet.decode.paf.merge_fragments`); dropping people with fewer than
    ``min_parts`` joints or a mean score below ``min_mean_score``; sorting by person score.

    Args:
        heatmaps: (J + 1, h, w) joint heatmaps then background on the output grid (the
            background channel may be left out: (J, h, w)).
        pafs: (2L, h, w) PAFs on the same grid; limb i in channels 2i (x), 2i + 1 (y).
        pose: the skeleton the network was trained with.
        params: decoder settings (``InferenceSpec.decoder_params()``); None uses the defaults.
        stride: network output stride (input pixels per output cell).

    Returns:
        :class:`People` in network-input pixels, best first. NaN or infinite map values count
        as 0; any maps give a well-formed (possibly empty) result.

    Raises:
        ValueError: when the channel counts do not match ``pose``.
    """
    params = params or DecoderParams()
    heatmaps = _clean(heatmaps)
    pafs = _clean(pafs)
    if heatmaps.shape[0] not in (pose.num_joints, pose.num_heatmap_channels):
        raise ValueError(
            f"heatmaps have {heatmaps.shape[0]} channels; pose needs {pose.num_joints}"
        )
    if pafs.shape != (pose.num_paf_channels, *heatmaps.shape[1:]):
        raise ValueError(
            f"pafs have shape {pafs.shape}; expected {(pose.num_paf_channels, *heatmaps.shape[1:])}"
        )
    if heatmaps.shape[1] == 0 or heatmaps.shape[2] == 0:
        return People.empty(pose.num_joints)

    peaks = find_peaks(
        heatmaps[: pose.num_joints],
        stride=stride,
        upsampling_factor=params.upsampling_factor,
        smoothing_sigma=params.smoothing_sigma,
        threshold=params.heatmap_threshold,
        max_peaks=params.max_peaks,
        refine=params.refine,
    )
    joint = np.concatenate([np.full(len(p), j, np.int64) for j, p in enumerate(peaks)])
    table = np.concatenate(peaks).reshape(-1, 3)  # (N, 3) x, y, score of every peak
    if len(table) == 0:
        return People.empty(pose.num_joints)

    limbs = np.asarray(pose.limbs, np.int64).reshape(-1, 2)
    limb, start, end = _candidate_limbs(joint, limbs)
    scores, valid = line_integrals(
        pafs,
        limb,
        table[start, :2],
        table[end, :2],
        stride=stride,
        samples=params.line_integral_samples,
        paf_threshold=params.paf_threshold,
        min_fraction=params.min_paf_fraction,
        max_length=0.5 * heatmaps.shape[1] * stride,  # OpenPose's prior: half the input height
    )
    limb, start, end, scores = limb[valid], start[valid], end[valid], scores[valid]
    kept = match_greedy(limb, start, end, scores)
    connections = np.stack([start[kept], end[kept]], axis=1).reshape(-1, 2)

    person, limb_sum, limb_count = group_people(joint, connections, scores[kept])
    if params.fragment_merge_ratio > 0:
        pieces = np.zeros((len(limb_sum), pose.num_joints, 3), np.float32)
        pieces[person, joint] = table
        merged = merge_fragments(pieces, limbs, params.fragment_merge_ratio)
        person = merged[person]
        limb_sum = np.bincount(merged, weights=limb_sum)
        limb_count = np.bincount(merged, weights=limb_count)
    return _people(table, joint, person, limb_sum, limb_count, pose.num_joints, params)


def _candidate_limbs(
    joint: np.ndarray, limbs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (start peak, end peak) pair of every limb type.

    Args:
        joint: (N,) joint type of each peak, sorted.
        limbs: (L, 2) joint pairs.

    Returns:
        limb, start, end: (M,) limb index and global peak indices of each candidate.
    """
    counts = np.bincount(joint, minlength=int(limbs.max()) + 1)
    first = np.cumsum(counts) - counts  # index of each joint type's first peak
    pairs = counts[limbs[:, 0]] * counts[limbs[:, 1]]  # (L,)
    limb = np.repeat(np.arange(len(limbs)), pairs)
    local = np.arange(len(limb)) - np.repeat(np.cumsum(pairs) - pairs, pairs)
    ends = np.maximum(counts[limbs[limb, 1]], 1)
    start = first[limbs[limb, 0]] + local // ends
    end = first[limbs[limb, 1]] + local % ends
    return limb, start, end


def _people(
    table: np.ndarray,
    joint: np.ndarray,
    person: np.ndarray,
    limb_sum: np.ndarray,
    limb_count: np.ndarray,
    num_joints: int,
    params: DecoderParams,
) -> People:
    """Score, filter and sort the assembled people.

    A person's *mean score* averages every score it is made of (its joints' peak heights and
    its limbs' line integrals, each about 1 when certain) and is what ``min_mean_score``
    tests. The person score multiplies it by sqrt(joints found / J): a piece of a person (a
    leg cut off from its body) has fewer joints than the whole and ranks below it, so in COCO
    AP the whole person claims the ground truth first, while the square root keeps a fully
    visible upper body close to a whole body.
    """
    count = len(limb_sum)
    keypoints = np.zeros((count, num_joints, 3), np.float32)
    keypoints[person, joint] = table
    parts = np.bincount(person, minlength=count)
    joint_sum = np.bincount(person, weights=table[:, 2], minlength=count)
    mean_score = (joint_sum + limb_sum) / np.maximum(parts + limb_count, 1)
    scores = mean_score * np.sqrt(parts / num_joints)
    keep = (parts >= params.min_parts) & (mean_score >= params.min_mean_score)
    keep &= np.isfinite(scores)
    order = np.flatnonzero(keep)[np.argsort(-scores[keep], kind="stable")]
    if params.max_people is not None:
        order = order[: params.max_people]
    return People(keypoints[order], np.clip(scores[order], 0.0, 1.0).astype(np.float32))


def _clean(array: np.ndarray) -> np.ndarray:
    """float32 maps with NaN and infinities set to 0 (a broken map finds nothing there); finite
    float32 maps come back as they are (the decoder only reads them)."""
    array = np.asarray(array, np.float32)
    if np.isfinite(array).all():
        return array
    return np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
