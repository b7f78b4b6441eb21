"""`bpnet dataset stats`: validate a COCO-layout split and count what it holds.

Beyond what every command checks when it loads a split (:func:`bpnet.data.coco.load_coco_split`),
stats decodes every image and checks the annotation values that training tolerates but that
show a broken file: keypoints far outside their image, visibility flags other than 0, 1 and 2,
``num_keypoints`` that disagrees with the keypoints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from bpnet.data.coco import CocoSplit, load_coco_split
from bpnet.data.dataset import IMREAD_FLAGS
from bpnet.errors import DatasetError

# COCO's size classes, by annotation area in pixels
SMALL_AREA = 32**2
LARGE_AREA = 96**2


def dataset_stats(root: str | Path, split: str, *, check_images: bool = True) -> dict:
    """Load and validate one split, then count images, people, keypoints and size classes.

    Raises:
        DatasetError: naming the file and entry when the split is malformed.

    Returns:
        A JSON-able dict (see :func:`format_stats` for the meaning of each entry).
    """
    data = load_coco_split(root, split, check_images=check_images)
    problems = find_problems(data, check_images=check_images)
    if problems:
        total = sum(len(where) for where in problems.values())
        listed = "; ".join(
            f"{kind}: {len(where)} (first: {where[0]})" for kind, where in problems.items()
        )
        raise DatasetError(
            f"{data.ann_file}: {total} problem(s) found; {listed}; fix or replace these files, or "
            "remove their entries from the annotation file"
        )
    table = data.table  # the keypoint category's annotations as arrays
    num_kpts = len(data.keypoint_names)
    labelled = ~table.iscrowd & (table.num_keypoints > 0)  # (N,)
    v = table.keypoints[labelled][..., 2]  # (P, K)
    per_person = table.num_keypoints[labelled]
    entries = [table.entries[i] for i in np.flatnonzero(labelled)]
    areas = np.array([entry.get("area", 0.0) for entry in entries], np.float64)
    image_index = np.searchsorted(np.asarray(data.image_ids), table.image_ids[labelled])
    labelled_per_image = np.bincount(image_index, minlength=len(data.image_ids))
    # buckets of 5 keypoints (1-4, 5-9, ...), the last one ending at the category's count
    hist_edges = [(max(lo, 1), min(lo + 4, num_kpts)) for lo in range(0, num_kpts + 1, 5)]
    hist_edges = [(lo, hi) for lo, hi in hist_edges if lo <= hi]
    return {
        "dataset": str(data.ann_file),
        "split": split,
        "images": len(data.image_ids),
        "images_with_people": int((labelled_per_image > 0).sum()),
        "images_without_people": int((labelled_per_image == 0).sum()),
        "annotations": len(table.entries),
        "people_labelled": int(labelled.sum()),
        "people_unlabelled": int((~table.iscrowd & ~labelled).sum()),
        "crowd_regions": int(table.iscrowd.sum()),
        "people_per_image": {
            "mean": _round(labelled_per_image.mean()) if len(labelled_per_image) else 0.0,
            "max": int(labelled_per_image.max()) if len(labelled_per_image) else 0,
            "histogram": {
                str(n): int((labelled_per_image == n).sum())
                for n in range(int(labelled_per_image.max(initial=0)) + 1)
            },
        },
        "keypoints_per_person": {
            "mean": _round(per_person.mean()) if len(per_person) else 0.0,
            "histogram": {
                f"{lo}-{hi}": int(((per_person >= lo) & (per_person <= hi)).sum())
                for lo, hi in hist_edges
            },
        },
        "keypoints": {
            "labelled": int((v > 0).sum()),
            "visible": int((v == 2).sum()),
            "occluded": int((v == 1).sum()),
            "labelled_by_name": {
                name: int((v[:, k] > 0).sum()) for k, name in enumerate(data.keypoint_names)
            },
        },
        "size_classes": {
            "small": int((areas < SMALL_AREA).sum()),
            "medium": int(((areas >= SMALL_AREA) & (areas < LARGE_AREA)).sum()),
            "large": int((areas >= LARGE_AREA).sum()),
        },
    }


def find_problems(data: CocoSplit, *, check_images: bool = True) -> dict[str, list[str]]:
    """What is wrong in a loaded split: ``{kind of problem: [where, ...]}``, empty when nothing.

    Kinds: images that do not decode (empty, truncated, corrupt), images whose pixel size is
    not the annotation's width x height, labelled keypoints more than an image size outside
    their image, keypoint visibility flags other than 0, 1, 2, and ``num_keypoints`` that is
    not the number of labelled keypoints.

    Args:
        data: a split from :func:`bpnet.data.coco.load_coco_split`.
        check_images: decode every image (a thread per core).
    """
    problems: dict[str, list[str]] = {}

    def add(kind: str, where: str) -> None:
        problems.setdefault(kind, []).append(where)

    if check_images:
        for kind, where in _image_problems(data):
            add(kind, where)
    table = data.table
    if len(table.entries):
        images = data.coco.imgs
        sizes = np.array(
            [(images[i]["width"], images[i]["height"]) for i in table.image_ids.tolist()],
            np.float64,
        )[:, None, :]  # (N, 1, 2) width, height
        xy, v = table.keypoints[..., :2], table.keypoints[..., 2]  # (N, K, 2), (N, K)
        far = (v > 0) & ((xy < -sizes) | (xy > 2 * sizes)).any(-1)
        for n, k in zip(*np.nonzero(far), strict=True):
            x, y = xy[n, k].tolist()
            width, height = sizes[n, 0].astype(int).tolist()
            add(
                "keypoints far outside their image",
                f"annotations[id={table.ann_ids[n]}].keypoints[{k}] at ({x:g}, {y:g}) in a "
                f"{width}x{height} image",
            )
        for n, k in zip(*np.nonzero(~np.isin(v, (0, 1, 2))), strict=True):
            add(
                "visibility flags not 0, 1 or 2",
                f"annotations[id={table.ann_ids[n]}].keypoints[{k}] v={v[n, k]:g}",
            )
    for entry, ann_id, counted in zip(
        table.entries, table.ann_ids.tolist(), table.num_keypoints.tolist(), strict=True
    ):
        stated = entry["num_keypoints"]
        if isinstance(stated, bool) or stated != counted:
            add(
                "num_keypoints not the number of labelled keypoints",
                f"annotations[id={ann_id}].num_keypoints is {stated!r}, the keypoints have "
                f"{counted}",
            )
    return problems


def _image_problems(data: CocoSplit) -> Iterator[tuple[str, str]]:
    """(kind, where) for every image that does not decode or has another size than listed."""
    jobs = [(data.image_path(i), data.coco.imgs[i]) for i in data.image_ids]
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:  # cv2 frees the GIL
        for problem in pool.map(lambda job: _image_problem(*job), jobs):
            if problem is not None:
                yield problem


def _image_problem(path: Path, info: dict) -> tuple[str, str] | None:
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as err:
        return "unreadable images", f"{path} ({err.strerror or err})"
    if data.size == 0:
        return "unreadable images", f"{path} (an empty file)"
    image = cv2.imdecode(data, IMREAD_FLAGS)
    if image is None:
        return "unreadable images", f"{path} (truncated, corrupt or not an image)"
    height, width = image.shape[:2]
    if (width, height) != (info["width"], info["height"]):
        return (
            "images of another size than their width/height",
            f"{path} is {width}x{height}, images[id={info['id']}] says "
            f"{info['width']}x{info['height']}",
        )
    return None


def stats_command(
    root: str | Path, split: str, as_json: bool = False, skip_image_check: bool = False
) -> str:
    """``bpnet dataset stats``: :func:`dataset_stats` as text (:func:`format_stats`) or JSON."""
    stats = dataset_stats(root, split, check_images=not skip_image_check)
    return json.dumps(stats, indent=2) if as_json else format_stats(stats)


def format_stats(stats: dict) -> str:
    """Human-readable report of :func:`dataset_stats`."""
    kp = stats["keypoints"]
    per_image = stats["people_per_image"]
    lines = [
        f"dataset   {stats['dataset']}  (split {stats['split']}): valid",
        f"images    {stats['images']}  ({stats['images_with_people']} with labelled people, "
        f"{stats['images_without_people']} without)",
        f"people    {stats['people_labelled']} labelled, {stats['people_unlabelled']} unlabelled "
        f"(no keypoints, masked), {stats['crowd_regions']} crowd regions (masked)",
        f"per image mean {per_image['mean']}, max {per_image['max']}; "
        f"histogram {_inline(per_image['histogram'])}",
        f"keypoints {kp['labelled']} labelled ({kp['visible']} visible, {kp['occluded']} occluded)"
        f"; per person mean {stats['keypoints_per_person']['mean']}, "
        f"histogram {_inline(stats['keypoints_per_person']['histogram'])}",
        f"sizes     {_inline(stats['size_classes'])}  (COCO area classes of labelled people)",
    ]
    return "\n".join(lines)


def _inline(mapping: dict) -> str:
    return " ".join(f"{k}:{v}" for k, v in mapping.items())


def _round(x: float) -> float:
    return round(float(x), 2)
