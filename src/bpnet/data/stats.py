"""`bpnet dataset stats`: validate a COCO-layout split and count what it holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bpnet.data.coco import load_coco_split

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
