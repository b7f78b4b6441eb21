"""`bpnet dataset show`: ground-truth skeletons and loss masks drawn on a few images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bpnet.data.coco import build_records, keypoint_order, load_coco_split
from bpnet.data.dataset import read_image
from bpnet.data.masks import record_mask
from bpnet.errors import DatasetError
from bpnet.io import atomic_path
from bpnet.pose import PoseConfig, load_pose_config
from bpnet.visualize import draw_people

IGNORED_TINT = np.array([0, 0, 255], np.float32)  # BGR red over masked-out regions


def write_previews(
    root: str | Path,
    split: str,
    out_dir: str | Path,
    num: int = 8,
    *,
    seed: int = 0,
    pose: PoseConfig | None = None,
) -> list[Path]:
    """Draw ``num`` images of a split (images with people first) and write them as JPEGs.

    Labelled people get their skeletons (hollow dots: occluded joints); regions the loss
    ignores (crowds, people without keypoints) are tinted red.

    Returns:
        The written files, ``OUT/<image id>_<image file stem>.jpg`` (the id keeps files of
        the same name in different sub-folders apart).
    """
    if num < 1:
        raise DatasetError(f"--num must be >= 1, got {num}")
    pose = pose or load_pose_config()
    data = load_coco_split(root, split, check_images=False)
    records = build_records(data, pose)
    rng = np.random.default_rng(seed)
    with_people = [r for r in records if r.num_people > 0]
    without = [r for r in records if r.num_people == 0]
    picked = list(rng.permutation(len(with_people))[:num])
    chosen = [with_people[i] for i in picked]
    chosen += [without[i] for i in rng.permutation(len(without))[: num - len(chosen)]]

    rows_of = {int(a): i for i, a in enumerate(data.table.ann_ids)}
    order = keypoint_order(data, pose)
    out_dir = Path(out_dir)
    written = []
    for record in chosen:
        image = read_image(record.path, (record.height, record.width))  # BGR
        ignored = record_mask(record) == 0  # (H, W)
        image[ignored] = (0.5 * image[ignored] + 0.5 * IGNORED_TINT).astype(np.uint8)
        rows = [rows_of[int(a)] for a in record.annotation_ids]
        keypoints = data.table.keypoints[rows][:, order]  # (P, K, 3) in the pose's order
        drawn = draw_people(image, keypoints, pose)
        path = out_dir / f"{record.image_id}_{Path(record.file_name).stem}.jpg"
        with atomic_path(path) as tmp:
            if not cv2.imwrite(str(tmp), drawn, [cv2.IMWRITE_JPEG_QUALITY, 90]):
                raise DatasetError(f"{path}: could not write the picture; check the folder")
        written.append(path)
    return written


def show_command(
    root: str | Path, split: str, out: str | Path, num: int, seed: int, pose_config: Path | None
) -> str:
    """``bpnet dataset show``: :func:`write_previews` with the skeleton file ``pose_config``
    (None: the default 18 joints); returns the written files, one a line."""
    written = write_previews(root, split, out, num, seed=seed, pose=load_pose_config(pose_config))
    return "\n".join(str(path) for path in written)
