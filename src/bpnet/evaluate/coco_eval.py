"""COCO keypoint AP with pycocotools, and the detection records it reads."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.cocoeval import COCOeval

from bpnet.data.coco import CocoSplit
from bpnet.errors import DatasetError

MAX_DETS = 20  # COCO's keypoint protocol: at most 20 people per image are scored
METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def detections_for_image(
    image_id: int, keypoints: np.ndarray, scores: np.ndarray, category_id: int
) -> list[dict]:
    """COCO result records for the people found in one image.

    Args:
        image_id: the image's id in the annotation file.
        keypoints: (N, K, 3) x, y, confidence in original image pixels, in the dataset's
            keypoint order; keypoints not found are zeros.
        scores: (N,) person scores (they rank detections for AP).
        category_id: the keypoint category's id.
    """
    out = []
    for person, score in zip(keypoints, scores, strict=True):
        flat = np.round(person.astype(np.float64), 2).reshape(-1)
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "keypoints": flat.tolist(),
                "score": round(float(score), 5),
            }
        )
    return out


def coco_keypoint_ap(split: CocoSplit, detections: list[dict]) -> tuple[dict, str]:
    """Score detections against a split's ground truth.

    Args:
        split: the loaded ground truth.
        detections: COCO keypoint result records (:func:`detections_for_image`).

    Returns:
        (metrics, summary): ``AP``, ``AP50``, ``AP75``, ``APm``, ``APl``, ``AR``, ``AR50``,
        ``AR75``, ``ARm``, ``ARl`` as floats (None where the split has no people of that size
        class), and pycocotools' standard summary lines.

    Raises:
        DatasetError: the split has no images, or a detection names an unknown image.
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
    category_id = split.category["id"]
    if not detections:  # pycocotools cannot load an empty result list: nothing found scores 0
        metrics = dict.fromkeys(METRIC_NAMES, 0.0)
        return metrics, "no detections: every metric is 0"
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        results = split.coco.loadRes(detections)
        evaluator = COCOeval(split.coco, results, iouType="keypoints")
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
