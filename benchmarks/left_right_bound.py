"""How much AP is in left/right swaps: each detection re-scored with its sides swapped where
that matches a ground-truth person better (an upper bound of what a side fix can give).

Usage::

    python benchmarks/left_right_bound.py ANNOTATIONS.json DETECTIONS.json

DETECTIONS is the ``detections_coco_format.json`` of a ``bpnet evaluate`` run on the same split.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bpnet.data.coco import COCO_KEYPOINTS

SIGMAS = (
    np.array(
        [
            0.26,
            0.25,
            0.25,
            0.35,
            0.35,
            0.79,
            0.79,
            0.72,
            0.72,
            0.62,
            0.62,
            1.07,
            1.07,
            0.87,
            0.87,
            0.89,
            0.89,
        ]
    )
    / 10
)  # fmt: skip  (COCO's per-keypoint OKS sigmas)


def mirror_order() -> list[int]:
    """COCO keypoint index -> the index of its other side (itself for the nose)."""
    names = list(COCO_KEYPOINTS)
    swap = {"left": "right", "right": "left"}
    return [names.index("_".join([swap.get(n.split("_")[0], n.split("_")[0]), *n.split("_")[1:]]))
            for n in names]  # fmt: skip


def oks(det: np.ndarray, ann: dict) -> float:
    truth = np.asarray(ann["keypoints"], float).reshape(17, 3)
    labelled = truth[:, 2] > 0
    if not labelled.any():
        return 0.0
    d2 = ((det[:, :2] - truth[:, :2]) ** 2).sum(1)
    e = d2 / (2 * (2 * SIGMAS) ** 2) / (ann["area"] + np.spacing(1)) / 2
    return float(np.exp(-e)[labelled].mean())


def ap(gt: COCO, detections: list[dict]) -> tuple[float, float]:
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(detections), "keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations")
    parser.add_argument("detections")
    args = parser.parse_args()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(args.annotations)
    detections = json.loads(open(args.detections).read())
    order = mirror_order()
    swapped = []
    for det in detections:
        people = gt.loadAnns(gt.getAnnIds(imgIds=det["image_id"], iscrowd=False))
        points = np.asarray(det["keypoints"], float).reshape(17, 3)
        mirrored = points[order]
        best = max(((oks(points, a), oks(mirrored, a)) for a in people), key=max, default=(0, 0))
        det = copy.deepcopy(det)
        if best[1] > best[0]:
            det["keypoints"] = mirrored.reshape(-1).tolist()
        swapped.append(det)
    print("| | AP | AP50 |\n|---|---|---|")
    print("| as decoded | {:.3f} | {:.3f} |".format(*ap(gt, detections)))
    print("| sides swapped where better | {:.3f} | {:.3f} |".format(*ap(gt, swapped)))


if __name__ == "__main__":
    main()
