"""Regenerate the example pictures of the synthetic dataset shown in the docs.

Writes ``docs/images/synth_example_{1,2,3}.jpg``: pictures of the seed-0 dataset with their
annotations drawn on them (skeletons; hollow dots are occluded keypoints, v = 1), unlabelled
people outlined in grey and crowd regions in red.

Usage::

    python benchmarks/make_synth_examples.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from bpnet.data.synth import generate_dataset
from bpnet.pose import load_pose_config
from bpnet.visualize import draw_people

SEED = 0
SPLIT = "val"
# picture indices in the seed-0 val split, chosen to show groups, occlusion, back and side
# views, a crowd region and unlabelled people
EXAMPLES = (21, 19, 8)
REPO = Path(__file__).resolve().parents[1]


def annotate(image: np.ndarray, annotations: list[dict]) -> np.ndarray:
    """Draw one picture's annotations: skeletons, unlabelled outlines, crowd outlines."""
    h, w = image.shape[:2]
    out = image.copy()
    for ann in annotations:
        if ann["num_keypoints"] > 0:
            continue
        rle = mask_utils.frPyObjects(ann["segmentation"], h, w)
        mask = mask_utils.decode(mask_utils.merge(rle) if isinstance(rle, list) else rle)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        colour = (40, 40, 230) if ann["iscrowd"] else (210, 210, 210)
        cv2.drawContours(out, contours, -1, colour, 1, cv2.LINE_AA)
    labelled = [a["keypoints"] for a in annotations if a["num_keypoints"] > 0]
    if labelled:
        keypoints = np.array(labelled, np.float32).reshape(len(labelled), -1, 3)
        out = draw_people(out, keypoints, load_pose_config())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        # picture i of a split depends only on (seed, split, i): a short run reproduces it
        generate_dataset(root, 0, max(EXAMPLES) + 1, seed=SEED)
        coco = json.loads((root / "annotations" / f"person_keypoints_{SPLIT}.json").read_text())
        for n, index in enumerate(EXAMPLES, start=1):
            info = coco["images"][index]
            image = cv2.imread(str(root / SPLIT / info["file_name"]))
            anns = [a for a in coco["annotations"] if a["image_id"] == info["id"]]
            path = args.out / f"synth_example_{n}.jpg"
            cv2.imwrite(str(path), annotate(image, anns), [cv2.IMWRITE_JPEG_QUALITY, 90])
            print(f"{path}: {SPLIT} picture {index}, {len(anns)} annotations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
