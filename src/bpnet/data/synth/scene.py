"""One synthetic picture: background, clutter, a crowd, people in depth order, and their COCO
annotations computed from what was actually drawn.

Visibility follows COCO: a keypoint outside the picture, or a face point the head turns away,
is unlabelled (0, 0, 0); one covered by a person drawn in front of it is labelled but occluded
(v = 1); otherwise it is visible (v = 2). Coverage comes from an owner map that records, per
pixel, which object was drawn last there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from bpnet.data.synth import render
from bpnet.data.synth.figure import (
    NUM_KEYPOINTS,
    PosedFigure,
    pick,
    pose_figure,
    sample_body,
    sample_pose,
)
from bpnet.pose import PoseConfig, load_pose_config

BACKGROUND = -1
CROWD = 1000  # owner id of crowd figures; people are 0..N-1 in drawing order

# No tiny labelled people: the decoder's ground-truth "oracle" AP on this data must stay near 1,
# so every labelled person is big enough, shows enough keypoints, and forms one skeleton.
MIN_LABELLED_SIZE = 40.0  # pixels: long side of the box around a person's labelled keypoints
MIN_SAMPLED_SIZE = 44.0  # the smallest size drawn; the slack absorbs hidden face points
MIN_LABELLED_KEYPOINTS = 5
MIN_VISIBLE_FRACTION = 0.4  # of a person's drawn pixels; below it the person is unlabelled


@dataclass(frozen=True)
class Difficulty:
    """What makes the pictures hard, one setting of ``bpnet dataset synth --difficulty``.

    Attributes:
        people_p: probability of 0, 1, 2, ... people (labelled or not) in a picture.
        small: fraction of labelled people drawn small (COCO area < 32^2); of the rest,
            medium and large split as in ``standard`` (0.5 : 0.3).
        truncate_p: probability that a labelled person is cut by the picture's edge.
        crowd_p: probability of a far-away crowd (an ``iscrowd`` region).
        max_distractors: limb-like clutter shapes per picture, 1 to this many.
    """

    people_p: tuple[float, ...]
    small: float
    truncate_p: float
    crowd_p: float
    max_distractors: int


DIFFICULTIES = {
    # the default: crowded scenes, people of every COCO size class, cut-offs, clutter
    "standard": Difficulty((0.05, 0.17, 0.22, 0.2, 0.15, 0.12, 0.09), 0.2, 0.2, 0.22, 7),
    # 1-3 people, none small, fewer cut-offs, less clutter; the same bodies, views and looks
    "easy": Difficulty((0.0, 0.35, 0.35, 0.3), 0.0, 0.1, 0.1, 3),
}


@dataclass
class _Person:
    labelled: bool
    figure: PosedFigure
    look: render.Appearance
    scale: float  # pixels per unit height
    origin: np.ndarray  # (2,) image position of the pelvis
    box: np.ndarray  # (4,) x0, y0, x1, y1 of the drawing, pixels
    keypoints: np.ndarray  # (17, 2) pixels
    extent: float  # long side of the keypoint box, pixels
    depth_key: float


@lru_cache(maxsize=1)
def _default_pose() -> PoseConfig:
    return load_pose_config()


def _unit_extent(fig: PosedFigure) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint box (lo, hi) and drawing box (lo, hi) of a unit-height figure, image axes."""
    kp = fig.keypoints[:, :2] * np.array([1.0, -1.0])
    ends = ("head_centre", "left_toe", "right_toe", "left_hand", "right_hand")
    extra = np.stack([fig.points[n] for n in ends])
    pts = np.concatenate([kp, extra[:, :2] * np.array([1.0, -1.0])])
    margin = 0.11  # head radius and limb thickness around the joints
    return (kp.min(0), kp.max(0)), (pts.min(0) - margin, pts.max(0) + margin)


def _sample_extent(
    rng: np.random.Generator, labelled: bool, h: int, w: int, small: float = 0.2
) -> float:
    """Long side of a person's keypoint box in pixels, spread over COCO's size classes
    (``small``: the fraction of labelled people drawn small)."""
    if not labelled:
        return float(rng.uniform(18, 40)) if rng.random() < 0.75 else float(rng.uniform(44, 160))
    r = rng.random()
    # small people are few: their OKS tolerance is about a pixel, as in COCO, where most of
    # them have no keypoints at all
    if r < small:  # small: COCO area < 32^2
        return float(rng.uniform(MIN_SAMPLED_SIZE, 62))
    if r < small + 0.5 * (1 - small) / 0.8:  # medium (0.2 small: 0.2 .. 0.7)
        return float(np.exp(rng.uniform(np.log(62), np.log(200))))
    return float(rng.uniform(220, max(240.0, 1.1 * min(h, w))))  # large: area > 96^2


def _iou_ioa(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """IoU and intersection over the smaller box of two (x0, y0, x1, y1) boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0, 0.0
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter), inter / min(area_a, area_b)


def _clash(box: np.ndarray, kp: np.ndarray, extent: float, labelled: bool, other: _Person) -> bool:
    """Whether a new person would overlap ``other`` more than the annotations can bear.

    Two labelled people may overlap (that is where occluded keypoints come from) but not so
    much that their boxes mostly coincide or that the same joint of both lands on one spot:
    a bottom-up decoder cannot split two peaks a few pixels apart.
    """
    iou, ioa = _iou_ioa(box, other.box)
    if not (labelled and other.labelled):
        return iou > 0.6 or ioa > 0.9
    if iou > 0.45 or ioa > 0.75:
        return True
    gap = np.hypot(*(kp - other.keypoints).T).min()  # same keypoint of both people
    return bool(gap < max(6.0, 0.1 * min(extent, other.extent)))


def _place_people(
    rng: np.random.Generator, h: int, w: int, difficulty: Difficulty
) -> list[_Person]:
    """Pose, size and position the people of one picture (not yet drawn)."""
    people: list[_Person] = []
    large = 0
    counts = difficulty.people_p
    for _ in range(pick(rng, range(len(counts)), counts)):
        labelled = rng.random() < 0.88
        extent = _sample_extent(rng, labelled, h, w, difficulty.small)
        if extent > 200 and large >= 2:  # two big people already fill the picture
            extent = float(rng.uniform(MIN_SAMPLED_SIZE, 120))
        fig = pose_figure(sample_body(rng), sample_pose(rng))
        (klo, khi), (dlo, dhi) = _unit_extent(fig)
        scale = extent / float(max(khi - klo))
        size = (dhi - dlo) * scale  # drawing box, pixels
        kp_unit = fig.keypoints[:, :2] * np.array([1.0, -1.0])  # (17, 2) image axes
        cut = difficulty.truncate_p if labelled else 0.3
        truncate = rng.random() < cut or size[0] > w or size[1] > h
        if truncate:
            # cut at the sides or the bottom (close-ups, people walking out of the frame);
            # a cut at the top takes the head and shoulders and with them the skeleton
            lo = np.array([-0.45, -0.08]) * size
            hi = np.array([w, h]) - np.array([0.55, 0.5]) * size
        else:
            lo = np.zeros(2)
            hi = np.array([w, h]) - size
        hi = np.maximum(hi, lo + 1)
        for _try in range(12):
            if people and rng.random() < 0.5:  # join someone: groups make occlusions
                other = people[int(rng.integers(len(people)))]
                other_size = other.box[2:] - other.box[:2]
                centre = (other.box[:2] + other.box[2:]) / 2 + rng.normal(0, 0.5, 2) * other_size
                corner = np.clip(centre - size / 2, lo, hi)
            else:
                corner = rng.uniform(lo, hi)
            box = np.concatenate([corner, corner + size])
            origin = corner - dlo * scale
            kp = origin + kp_unit * scale
            if not any(_clash(box, kp, extent, labelled, other) for other in people):
                break
        else:
            continue  # no room left for this person
        large += extent > 200
        # people lower in the picture and bigger are nearer: drawn later
        depth_key = box[3] / h + 0.6 * np.log(extent) + rng.normal(0, 0.25)
        look = render.sample_appearance(rng, scale)
        people.append(
            _Person(labelled, fig, look, scale, origin, box, kp, extent, float(depth_key))
        )
    people.sort(key=lambda p: p.depth_key)
    return people


def _draw_crowd(
    rng: np.random.Generator, image: np.ndarray, owner: np.ndarray, light: render.Light
) -> None:
    """A packed band of small people far away: annotated as one iscrowd region."""
    h, w = image.shape[:2]
    band_w = rng.uniform(0.15, 0.5) * w
    x0 = rng.uniform(0, w - band_w)
    base_y = rng.uniform(0.25, 0.8) * h
    count = int(rng.integers(5, 15))
    feet = np.sort(base_y + rng.uniform(-12, 12, count))
    figures = []
    for fy in feet:
        kind = pick(rng, ("stand", "walk", "wave", "arms_up"))
        fig = pose_figure(sample_body(rng), sample_pose(rng, kind))
        (klo, khi), _ = _unit_extent(fig)
        scale = float(rng.uniform(14, 34)) / float(max(khi - klo))
        origin = np.array([rng.uniform(x0, x0 + band_w), fy - khi[1] * scale])
        look = render.sample_appearance(rng, scale)
        parts, head, _ = render.figure_parts(fig, look, scale, origin)
        figures.append((parts, head, look))
    parts, materials, heads = render.merge_figures(figures)
    render.paste(image, owner, render.rasterize(parts, materials, light, rng, heads), CROWD)


# --- annotations -----------------------------------------------------------------------------


def rle_encode(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE of a (h, w) bool mask: column-major run lengths, zeros first."""
    h, w = mask.shape
    flat = mask.T.ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]]))
    if flat.size and flat[0]:
        counts = np.concatenate([[0], counts])
    return {"counts": [int(c) for c in counts], "size": [int(h), int(w)]}


def polygons(mask: np.ndarray, x0: int = 0, y0: int = 0) -> list[list[float]]:
    """COCO polygons (outer outlines through boundary pixel centres) of a bool mask crop."""
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0)
    )
    out = []
    for c in contours:
        if len(c) >= 3:  # pycocotools reads 2-point lists as boxes
            out.append((c.reshape(-1) + 0.5).tolist())  # + 0.5: pixel centres
    if not out:  # a sliver: fall back to its pixel box
        ys, xs = np.nonzero(mask)
        a, b = float(xs.min() + x0), float(ys.min() + y0)
        c, d = float(xs.max() + x0 + 1), float(ys.max() + y0 + 1)
        out.append([a, b, c, b, c, d, a, d])
    return out


def _bbox(ys: np.ndarray, xs: np.ndarray) -> list[float]:
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


def _connected(keypoints: np.ndarray, pose: PoseConfig) -> bool:
    """Whether the labelled keypoints form one skeleton along the pose config's limbs: a
    person split in two (a missing shoulder cuts the neck) cannot be told apart from two."""
    labelled = pose.joints_from_dataset(keypoints[None])[0, :, 2] > 0  # (J,)
    if not labelled.any():
        return False
    start = int(np.flatnonzero(labelled)[0])
    reached = {start}
    grew = True
    while grew:
        grew = False
        for a, b in pose.limbs:
            if labelled[a] and labelled[b] and (a in reached) != (b in reached):
                reached.update((a, b))
                grew = True
    return len(reached) == int(labelled.sum())


def _keypoint_list(keypoints: np.ndarray) -> list:
    """COCO's flat x, y, v list: x, y to 1/100 pixel, v an integer, unlabelled points 0, 0, 0."""
    out: list = []
    for x, y, v in keypoints.tolist():
        out.extend((round(x, 2), round(y, 2), int(v)) if v > 0 else (0, 0, 0))
    return out


def _annotation(
    iscrowd: int, keypoints: np.ndarray, ys: np.ndarray, xs: np.ndarray, segmentation: object
) -> dict:
    return {
        "category_id": 1,
        "iscrowd": iscrowd,
        "keypoints": _keypoint_list(keypoints),
        "num_keypoints": int((keypoints[:, 2] > 0).sum()),
        "bbox": _bbox(ys, xs),
        "area": float(len(ys)),
        "segmentation": segmentation,
    }


def compose(
    rng: np.random.Generator, width: int, height: int, difficulty: str = "standard"
) -> tuple[np.ndarray, list[dict]]:
    """Draw one picture and annotate it.

    Args:
        rng: the random source (one per picture, for reproducibility).
        width, height: picture size in pixels.
        difficulty: a key of :data:`DIFFICULTIES`.

    Returns:
        (height, width, 3) uint8 BGR picture, and its annotations without ``id``/``image_id``.
    """
    h, w = height, width
    light = render.sample_light(rng)
    image = render.render_background(rng, h, w)
    owner = np.full((h, w), BACKGROUND, np.int16)
    setting = DIFFICULTIES[difficulty]
    for _ in range(int(rng.integers(1, setting.max_distractors + 1))):
        sprite = render.distractor_sprite(rng, h, w, light, float(rng.uniform(60, 400)))
        render.paste(image, owner, sprite, BACKGROUND)
    if rng.random() < setting.crowd_p:
        _draw_crowd(rng, image, owner, light)

    people = _place_people(rng, h, w, setting)
    drawn = []  # (person, sprite, (17, 2) keypoints)
    for i, person in enumerate(people):
        parts, head, kp2 = render.figure_parts(
            person.figure, person.look, person.scale, person.origin
        )
        materials = render.figure_materials(person.look)
        sprite = render.rasterize(parts, materials, light, rng, (head,))
        render.paste(image, owner, sprite, i)
        drawn.append((person, sprite, kp2))

    pose = _default_pose()
    annotations = []
    for i, (person, sprite, kp2) in enumerate(drawn):
        sh, sw = sprite.mask.shape
        x0, y0 = max(sprite.x0, 0), max(sprite.y0, 0)
        x1, y1 = min(sprite.x0 + sw, w), min(sprite.y0 + sh, h)
        if x0 >= x1 or y0 >= y1:
            continue
        visible = owner[y0:y1, x0:x1] == i
        ys, xs = np.nonzero(visible)
        if len(ys) == 0:
            continue
        keypoints = np.zeros((NUM_KEYPOINTS, 3))
        if person.labelled:
            for k in range(NUM_KEYPOINTS):
                x, y = kp2[k]
                if not person.figure.face_visible[k] or not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                    continue
                top = owner[round(y), round(x)]
                covered = top != CROWD and top > i  # a person drawn later lies on it
                keypoints[k] = (x, y, 1 if covered else 2)
            labelled = keypoints[keypoints[:, 2] > 0, :2]
            usable = (
                len(labelled) >= MIN_LABELLED_KEYPOINTS
                and np.ptp(labelled, axis=0).max() >= MIN_LABELLED_SIZE
                and len(ys) >= MIN_VISIBLE_FRACTION * sprite.mask.sum()
                and _connected(keypoints, pose)
            )
            if not usable:  # what an annotator would skip: too little of the person shows
                keypoints[:] = 0
        annotations.append(_annotation(0, keypoints, ys + y0, xs + x0, polygons(visible, x0, y0)))

    crowd = owner == CROWD
    if crowd.any():
        close = np.ones((5, 5), np.uint8)  # one region, not a set of cut-outs
        region = cv2.morphologyEx(crowd.view(np.uint8), cv2.MORPH_CLOSE, close)
        region[(owner >= 0) & (owner != CROWD)] = 0  # people in front of the crowd still count
        ys, xs = np.nonzero(region)
        if len(ys) >= 50:
            annotations.append(
                _annotation(1, np.zeros((NUM_KEYPOINTS, 3)), ys, xs, rle_encode(region > 0))
            )
    return render.finish(rng, image), annotations
