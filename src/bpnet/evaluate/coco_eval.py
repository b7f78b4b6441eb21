"""COCO keypoint AP with pycocotools, on the result records of
:func:`bpnet.data.coco.detections_for_image`."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
from pycocotools.cocoeval import COCOeval

from bpnet.data.coco import COCO_KEYPOINTS, CocoSplit, keypoint_order
from bpnet.errors import DatasetError
from bpnet.pose import PoseConfig

MAX_DETS = 20  # COCO's keypoint protocol: at most 20 people per image are scored
METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def format_ap(value: float | None) -> str:
    """An AP as the commands print it: four decimals, ``n/a`` when nothing was scored."""
    return "n/a" if value is None else f"{value:.4f}"


def coco_keypoint_ap(
    split: CocoSplit, detections: list[dict], sigmas: np.ndarray | None = None
) -> tuple[dict, str]:
    """Score detections against a split's ground truth.

    Args:
        split: the loaded ground truth.
        detections: COCO keypoint result records
            (:func:`bpnet.data.coco.detections_for_image`).
        sigmas: (K,) OKS sigmas in the file's keypoint order; None means COCO's, which only
            fit the 17 COCO keypoints.

    Returns:
        (metrics, summary): ``AP``, ``AP50``, ``AP75``, ``APm``, ``APl``, ``AR``, ``AR50``,
        ``AR75``, ``ARm``, ``ARl`` as floats (None where the split has no people of that size
        class), and pycocotools' standard summary lines.

    Raises:
        DatasetError: the split has no images, a detection names an unknown image, or the
            keypoints are not COCO's and no sigmas are given.
    """
    if not split.image_ids:
        raise DatasetError(
            f"{split.ann_file}: the 'images' list is empty; there is nothing to evaluate"
        )
    known = set(split.image_ids)
    unknown = sorted({d["image_id"] for d in detections} - known)
    if unknown:
        raise DatasetError(
            f"detections name image id {unknown[0]} ({len(unknown)} unknown ids in all), which "
            f"{split.ann_file} does not list; evaluate against the split they were made on"
        )
    if sigmas is None and tuple(split.keypoint_names) != COCO_KEYPOINTS:
        raise DatasetError(
            f"{split.ann_file}: its {len(split.keypoint_names)} keypoints are not COCO's 17, so "
            "COCO's OKS sigmas do not apply; list oks_sigmas (one per dataset keypoint) in the "
            "pose config"
        )
    category_id = split.category["id"]
    if not detections:  # pycocotools cannot load an empty result list
        return _nothing_found(split), "no detections: AP and AR are 0 where there are people"
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        # loadRes adds area, id and bbox to the records it is given: keep ours as they are
        results = split.coco.loadRes([dict(d) for d in detections])
        evaluator = COCOeval(split.coco, results, iouType="keypoints")
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        evaluator.params.catIds = [category_id]
        evaluator.params.imgIds = list(split.image_ids)
        evaluator.params.maxDets = [MAX_DETS]
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    # pycocotools writes -1 where a size class has no people: undefined, not zero
    stats = [float(s) if s >= 0 else None for s in evaluator.stats]
    return dict(zip(METRIC_NAMES, stats, strict=True)), summary.getvalue().rstrip()


def _nothing_found(split: CocoSplit) -> dict:
    """Metrics when there are no detections: 0, or None where the split has no such people."""
    table = split.table
    people = ~table.iscrowd & (table.num_keypoints > 0)
    areas = np.array([table.entries[i].get("area", 0.0) for i in np.flatnonzero(people)])
    present = {
        "": len(areas) > 0,
        "m": bool(((areas >= 32**2) & (areas < 96**2)).any()),
        "l": bool((areas >= 96**2).any()),
    }
    size_of = {"APm": "m", "ARm": "m", "APl": "l", "ARl": "l"}
    return {name: 0.0 if present[size_of.get(name, "")] else None for name in METRIC_NAMES}


def oks_sigmas_for(split: CocoSplit, pose: PoseConfig) -> np.ndarray | None:
    """The pose config's OKS sigmas in the file's keypoint order (None: COCO's own).

    Raises:
        DatasetError: the pose config's sigmas leave some of the file's keypoints uncovered.
    """
    if pose.oks_sigmas is None:
        return None
    order = keypoint_order(split, pose)  # file column of each pose dataset keypoint
    if len(set(order.tolist())) != len(split.keypoint_names):
        raise DatasetError(
            f"{split.ann_file}: pose config '{pose.name}' gives oks_sigmas for "
            f"{len(order)} of the file's {len(split.keypoint_names)} keypoints; list them all"
        )
    sigmas = np.empty(len(split.keypoint_names), np.float64)
    sigmas[order] = pose.oks_sigmas
    return sigmas


def agreement_ap(
    reference: Sequence[tuple[np.ndarray, np.ndarray]],
    test: Sequence[tuple[np.ndarray, np.ndarray]],
    sigmas: Sequence[float],
) -> float | None:
    """COCO keypoint AP of one model's people scored against another's as the ground truth.

    How well a changed model (INT8, pruned) finds the people its original finds, on pictures
    without labels: every person of ``reference`` becomes a ground-truth annotation (its box
    and area from its found keypoints), every person of ``test`` a detection. 1.0 when the
    two agree; like COCO AP, 0.0 when ``test`` finds none of them.

    Args:
        reference: per image, (keypoints (N, K, 3) in the dataset order, x, y and a score > 0
            where found; scores (N,)), e.g. ``People.to_dataset(pose)`` and ``People.scores``.
        test: the same for the model under test, image by image.
        sigmas: (K,) OKS sigmas.

    Returns:
        The AP, or None when ``reference`` has no person (nothing to agree on).
    """
    from pycocotools.coco import COCO

    annotations, detections = [], []
    for image_id, ((ref_points, _), (points, scores)) in enumerate(
        zip(reference, test, strict=True)
    ):
        for person in ref_points:
            found = person[:, 2] > 0
            if not found.any():
                continue
            low, high = person[found, :2].min(0), np.maximum(person[found, :2].max(0), 0)
            width, height = np.maximum(high - low, 1.0)
            keypoints = np.concatenate([person[:, :2], 2.0 * found[:, None]], 1)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                "iscrowd": 0, "keypoints": keypoints.ravel().tolist(),
                "num_keypoints": int(found.sum()), "area": float(width * height),
                "bbox": [float(low[0]), float(low[1]), float(width), float(height)],
            })  # fmt: skip
        detections += [
            {
                "image_id": image_id,
                "category_id": 1,
                "keypoints": p.ravel().tolist(),
                "score": float(s),
            }
            for p, s in zip(points, scores, strict=True)
        ]
    if not annotations:
        return None
    if not detections:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {
            "images": [{"id": i} for i in range(len(reference))],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "person"}],
        }
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(detections), iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        evaluator.params.maxDets = [MAX_DETS]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return max(float(evaluator.stats[0]), 0.0)
