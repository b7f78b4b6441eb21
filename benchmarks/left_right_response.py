"""Left/right confusion of a model's heatmaps: the response in a joint's channel at the joint
itself, at the same person's joint of the other side (the mirror joint), and at the person's
other joints.

A network that knows the joint type but not the side answers about as strongly at the mirror
joint as at its own; one that knows the side answers there like at any other joint. Per
labelled, visible left or right joint, each response is the channel's value at the ground-truth
position (the last stage's heatmaps, bilinear on the stride grid) of a picture evaluated as
``bpnet evaluate`` does (one scale of the inference spec). ``side accuracy`` is the fraction of
joints whose own response beats the mirror one.

Usage::

    python benchmarks/left_right_response.py MODEL.pth ROOT SPLIT [-i INFER_SPEC] [-n IMAGES]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from bpnet.config import load_inference_spec
from bpnet.data.coco import load_coco_split
from bpnet.grid import grid_matrix
from bpnet.inference.pipeline import Predictor
from bpnet.inference.runtime import load_model


def _sample(channel: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear values of a (h, w) map at (N, 2) grid x, y points (0 outside)."""
    maps = cv2.remap(
        channel.astype(np.float32),
        points[:, 0].astype(np.float32)[None],
        points[:, 1].astype(np.float32)[None],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    return maps[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("root")
    parser.add_argument("split")
    parser.add_argument("-i", "--inference_spec", default=None)
    parser.add_argument("-n", "--images", type=int, default=None, help="first N images only")
    args = parser.parse_args()

    loaded = load_model(args.model)
    source = loaded.source()
    pose = loaded.pose
    predictor = Predictor(source, pose, load_inference_spec(args.inference_spec, ()))
    split = load_coco_split(args.root, args.split)
    names = list(split.keypoint_names)
    mirror = pose.flip_permutation  # joint index -> its other side (itself in the middle)
    own, other_side, elsewhere = [], [], []
    for image_id in split.image_ids[: args.images]:
        info = split.coco.imgs[image_id]
        image = cv2.imread(str(split.image_dir / info["file_name"]), cv2.IMREAD_COLOR)
        geometry = predictor.inputs(info["width"], info["height"])[0]
        heatmaps, _ = source(image, geometry)
        to_grid = grid_matrix(source.stride) @ np.vstack([geometry.matrix, [0, 0, 1]])
        for ann in split.coco.loadAnns(split.coco.getAnnIds(imgIds=image_id, iscrowd=False)):
            kp = np.asarray(ann["keypoints"], np.float64).reshape(len(names), 3)
            joints = pose.joints_from_dataset(kp[None])[0]  # (J, 3) in the model's joint order
            xy = joints[:, :2] @ to_grid[:2, :2].T + to_grid[:2, 2]
            visible = joints[:, 2] > 0
            for j in np.flatnonzero(visible):
                m = mirror[j]
                if m == j or not visible[m]:
                    continue  # a middle joint, or a side whose partner is unlabelled
                values = _sample(heatmaps[j], xy[visible])
                at = {
                    int(k): float(v) for k, v in zip(np.flatnonzero(visible), values, strict=True)
                }
                own.append(at[j])
                other_side.append(at[m])
                elsewhere.extend(v for k, v in at.items() if k not in (j, m))
    own_a, mirror_a = np.array(own), np.array(other_side)
    print(f"{args.model} on {args.root} {args.split}: {len(own_a)} side joints")
    print(f"  response at own joint     {own_a.mean():.3f}")
    print(f"  response at mirror joint  {mirror_a.mean():.3f}")
    print(f"  response at other joints  {np.mean(elsewhere):.3f}")
    print(f"  side accuracy (own > mirror)  {np.mean(own_a > mirror_a):.3f}")


if __name__ == "__main__":
    main()
