"""People tracked across video frames: each person keeps one id while they stay in view.

The rule, once per frame (:meth:`Tracker.update`):

1. Every live track predicts its person's keypoints in this frame: the last ones seen, moved at
   the person's last speed (the mean shift of their keypoints per frame) for the frames since.
2. Each (track, person) pair gets a similarity in 0..1: the OKS of the person's keypoints
   against the prediction (COCO's formula; the predicted box's area is the scale) when the two
   share found keypoints, else the IoU of their boxes.
3. Tracks and people are paired for the largest total similarity (the Hungarian algorithm,
   ``scipy.optimize.linear_sum_assignment``); a pair below ``min_similarity`` is no match.
4. A matched track takes the person's keypoints; a person left unmatched starts a new track with
   the next id (ids are never reused); a track unmatched for more than ``max_age`` frames in a
   row ends.

Example:
    >>> tracker = Tracker(COCO_OKS_SIGMAS)  # doctest: +SKIP
    >>> for found in predictions:  # doctest: +SKIP
    ...     ids = tracker.update(found.keypoints)  # (N,) one id per person of this frame
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass
class Track:
    """One person followed through the frames.

    Attributes:
        track_id: the person's id, 1, 2, ... in order of appearance.
        keypoints: (K, 3) x, y, score where the person was last seen (score 0: not found).
        velocity: (2,) pixels per frame the person moved between their last two sightings.
        last_frame: the frame the person was last seen in.
    """

    track_id: int
    keypoints: np.ndarray
    velocity: np.ndarray
    last_frame: int

    def predict(self, frame: int) -> np.ndarray:
        """(K, 3) where the person should be in ``frame``: constant speed since last seen."""
        out = self.keypoints.copy()
        found = out[:, 2] > 0
        out[found, :2] += self.velocity * (frame - self.last_frame)
        return out


def boxes(keypoints: np.ndarray) -> np.ndarray:
    """(N, K, 3) keypoints -> (N, 4) x, y, width, height around each person's found keypoints
    (zeros for a person with none)."""
    keypoints = np.asarray(keypoints, np.float64)
    out = np.zeros((len(keypoints), 4))
    for i, person in enumerate(keypoints):
        xy = person[person[:, 2] > 0, :2]
        if len(xy):
            low, high = xy.min(0), xy.max(0)
            out[i] = (*low, *(high - low))
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) and (M, 4) x, y, w, h boxes -> (N, M) intersection over union (0 for empty
    boxes)."""
    low = np.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2) the intersection's corners
    high = np.minimum(a[:, None, :2] + a[:, None, 2:], b[None, :, :2] + b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=-1)
    union = np.prod(a[:, None, 2:], -1) + np.prod(b[None, :, 2:], -1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def similarity(expected: np.ndarray, found: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS of every found person against every expected one, box IoU where they share no
    found keypoint.

    Args:
        expected: (T, K, 3) the tracks' predicted keypoints (x, y, score; score 0: not found).
        found: (N, K, 3) this frame's people.
        sigmas: (K,) COCO-style OKS falloff per keypoint.

    Returns:
        (T, N) similarities in 0..1.
    """
    expected_boxes = boxes(expected)
    # COCO: OKS = mean over shared keypoints of exp(-d^2 / (2 s^2 (2 sigma)^2)), s^2 the area
    area = np.maximum(expected_boxes[:, 2] * expected_boxes[:, 3], 1.0)[:, None, None]  # (T,1,1)
    d2 = np.sum((expected[:, None, :, :2] - found[None, :, :, :2]) ** 2, axis=-1)  # (T, N, K)
    per_keypoint = np.exp(-d2 / (2 * area * (2 * np.asarray(sigmas)) ** 2))
    shared = (expected[:, None, :, 2] > 0) & (found[None, :, :, 2] > 0)  # (T, N, K)
    count = shared.sum(-1)
    oks = np.sum(per_keypoint * shared, -1) / np.maximum(count, 1)
    return np.where(count > 0, oks, box_iou(expected_boxes, boxes(found)))


class Tracker:
    """Gives each person of each frame a track id that stays theirs (module docstring: the rule).

    Args:
        sigmas: (K,) OKS falloff per keypoint, in the keypoint order of the frames' people
            (COCO's for the 17 COCO keypoints: ``bpnet.data.coco.COCO_OKS_SIGMAS``).
        max_age: frames a track may go unmatched (the person missed or hidden) and still
            continue.
        min_similarity: the least OKS (or box IoU) that pairs a person with a track.
    """

    def __init__(self, sigmas: Sequence[float], *, max_age: int = 5, min_similarity: float = 0.2):
        self.sigmas = np.asarray(sigmas, np.float64)
        self.max_age = max_age
        self.min_similarity = min_similarity
        self.tracks: list[Track] = []
        self.frame = -1
        self.next_id = 1

    def update(self, keypoints: np.ndarray) -> np.ndarray:
        """Match the people of the next frame to the tracks.

        Args:
            keypoints: (N, K, 3) x, y, score of the frame's people (N may be 0).

        Returns:
            (N,) int64 track id of each person, in the order given.
        """
        self.frame += 1
        keypoints = np.asarray(keypoints, np.float64).reshape(-1, len(self.sigmas), 3)
        ids = np.zeros(len(keypoints), np.int64)
        rows, cols = np.zeros(0, int), np.zeros(0, int)
        if self.tracks and len(keypoints):
            expected = np.stack([t.predict(self.frame) for t in self.tracks])
            scores = similarity(expected, keypoints, self.sigmas)  # (T, N)
            rows, cols = linear_sum_assignment(scores, maximize=True)
            good = scores[rows, cols] >= self.min_similarity
            rows, cols = rows[good], cols[good]
        for t, p in zip(rows, cols, strict=True):
            self._follow(self.tracks[t], keypoints[p])
            ids[p] = self.tracks[t].track_id
        for p in np.flatnonzero(ids == 0):
            self.tracks.append(Track(self.next_id, keypoints[p], np.zeros(2), self.frame))
            ids[p] = self.next_id
            self.next_id += 1
        self.tracks = [t for t in self.tracks if self.frame - t.last_frame <= self.max_age]
        return ids

    def _follow(self, track: Track, person: np.ndarray) -> None:
        shared = (track.keypoints[:, 2] > 0) & (person[:, 2] > 0)
        if shared.any():
            shift = (person[shared, :2] - track.keypoints[shared, :2]).mean(0)
            track.velocity = shift / (self.frame - track.last_frame)
        track.keypoints, track.last_frame = person, self.frame
