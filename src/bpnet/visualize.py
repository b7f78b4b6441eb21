"""Drawing skeletons on pictures: ground truth or decoded people, in the pose config's limbs."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

from bpnet.pose import PoseConfig


def _point(joint: np.ndarray) -> tuple[int, int]:
    return int(np.rint(joint[0])), int(np.rint(joint[1]))


def limb_colours(pose: PoseConfig) -> list[tuple[int, int, int]]:
    """One BGR colour per limb, hues spread around the colour wheel in limb order."""
    n = max(pose.num_limbs, 1)
    out = []
    for i in range(pose.num_limbs):
        r, g, b = colorsys.hsv_to_rgb(i / n, 0.9, 1.0)
        out.append((int(b * 255), int(g * 255), int(r * 255)))
    return out


def id_colour(number: int) -> tuple[int, int, int]:
    """A BGR colour for an id (a video track): consecutive ids get distant hues."""
    hue = (number * 0.618034) % 1.0  # golden-ratio steps around the colour wheel
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_people(
    image_bgr: np.ndarray,
    keypoints: np.ndarray,
    pose: PoseConfig,
    *,
    scores: bool = False,
    min_score: float = 0.0,
    thickness: int | None = None,
    alpha: float = 1.0,
    colours: Sequence[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """Draw people's skeletons: a coloured line per limb, a dot per joint.

    Args:
        image_bgr: (H, W, 3) uint8 picture; it is not modified.
        keypoints: (P, K, 3) x, y, v in *dataset* keypoint order (e.g. COCO 17). With COCO
            flags, v = 0 is not drawn, v = 1 (labelled, occluded) is a hollow dot and v = 2 a
            filled one. With ``scores=True`` column 2 is a confidence: joints above
            ``min_score`` are drawn filled.
        pose: the skeleton; its joints and limbs decide what is drawn (the neck, for one, is
            the mean of the shoulders).
        scores: read column 2 as scores instead of COCO visibility flags.
        min_score: with ``scores``, joints at or below it are not drawn.
        thickness: line width in pixels; by default it follows each person's size.
        alpha: opacity of the drawing over the picture.
        colours: one BGR colour per person, for all of that person's limbs and joints (a
            video's track colours); None: a colour per limb.

    Returns:
        (H, W, 3) uint8 copy of the picture with the skeletons drawn.
    """
    canvas = image_bgr.copy()
    kp = np.asarray(keypoints, np.float32).reshape(-1, len(pose.dataset_keypoints), 3)
    if scores:
        kp = kp.copy()
        kp[..., 2] = np.where(kp[..., 2] > min_score, 2.0, 0.0)
    joints = pose.joints_from_dataset(kp)  # (P, J, 3)
    limb_colour = limb_colours(pose)
    joint_colour = {}
    for (a, b), colour in zip(pose.limbs, limb_colour, strict=True):
        joint_colour.setdefault(b, colour)
        joint_colour.setdefault(a, colour)
    for i, person in enumerate(joints):
        labelled = person[:, 2] > 0
        if not labelled.any():
            continue
        xy = person[labelled, :2]
        size = float(np.max(xy.max(0) - xy.min(0))) if len(xy) > 1 else 0.0
        width = thickness or int(np.clip(size / 70, 1, 4))
        own = None if colours is None else tuple(colours[i])
        for (a, b), colour in zip(pose.limbs, limb_colour, strict=True):
            if labelled[a] and labelled[b]:
                start, end = _point(person[a]), _point(person[b])
                cv2.line(canvas, start, end, own or colour, width, cv2.LINE_AA)
        radius = width + 1
        for j in np.flatnonzero(labelled):
            centre = _point(person[j])
            colour = own or joint_colour.get(j, (255, 255, 255))
            if person[j, 2] == 1:  # occluded: hollow
                cv2.circle(canvas, centre, radius + 1, colour, 1, cv2.LINE_AA)
            else:
                cv2.circle(canvas, centre, radius, colour, -1, cv2.LINE_AA)
                cv2.circle(canvas, centre, radius, (0, 0, 0), 1, cv2.LINE_AA)
    if alpha >= 1.0:
        return canvas
    return cv2.addWeighted(canvas, alpha, image_bgr, 1.0 - alpha, 0.0)
