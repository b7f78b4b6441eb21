"""`bpnet inference`: people in your own images, with any model file (.pth, .onnx, .engine).

Writes ``detections.json`` (COCO keypoint results, one record per person, with the image's
``file_name`` added) and, for every image, ``images/<name>.jpg`` with the skeletons drawn.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from bpnet.config.inference import InferenceSpec
from bpnet.data.coco import ImageRecord
from bpnet.data.dataset import read_image
from bpnet.decode import DecoderParams
from bpnet.errors import BpnetError
from bpnet.evaluate.coco_eval import detections_for_image
from bpnet.inference.pipeline import input_geometry, predict_people
from bpnet.io import check_output_dir, copy_atomic, image_files, write_json_atomic
from bpnet.visualize import draw_people

DETECTIONS_FILE = "detections.json"
CATEGORY_ID = 1  # COCO's "person"


def find_images(source: str | Path) -> list[Path]:
    """One image file, or the image files directly inside a folder, sorted by name.

    Raises:
        BpnetError: nothing there, or a folder without images.
    """
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise BpnetError(f"{source}: no such image file or folder; check --input")
    images = image_files(source)
    if not images:
        raise BpnetError(f"{source}: no .jpg, .jpeg, .png or .bmp images in this folder")
    return images


def image_ids(images: list[Path]) -> list[int]:
    """COCO image ids: the file stems when all are distinct numbers (COCO's own file names,
    ``000000397133.jpg`` -> 397133), else 1, 2, ... in file order."""
    stems = Counter(p.stem for p in images)
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(images) + 1))


def _record(path: Path, image_id: int, width: int, height: int, joints: int) -> ImageRecord:
    """A record with no ground truth: what the pipeline needs to place one image."""
    return ImageRecord(
        image_id=image_id, image_dir=path.parent, file_name=path.name, width=width,
        height=height, keypoints=np.zeros((0, joints, 3), np.float32),
        boxes=np.zeros((0, 4), np.float32), num_keypoints=np.zeros(0, np.int64),
        annotation_ids=np.zeros(0, np.int64), main_people=np.zeros(0, np.int64), keep=(),
        ignore=(),
    )  # fmt: skip


def run_inference(
    model: str | Path,
    source: str | Path,
    results_dir: str | Path,
    spec: InferenceSpec,
    *,
    draw: bool = True,
    threads: int | None = None,
    say: Callable[[str], None] = print,
) -> dict:
    """Find people in every image and write the results.

    Args:
        model: a ``.pth``, ``.onnx`` or ``.engine`` file (see
            :func:`bpnet.inference.runtime.load_model`).
        source: an image file or a folder of images.
        results_dir: receives ``detections.json`` and ``images/``.
        spec: input geometry and decoder settings.
        draw: write the pictures with skeletons.
        threads: ONNX Runtime threads (None: as many as PyTorch uses).

    Returns:
        ``{"images": n, "people": n, "detections": path}``.

    Raises:
        BpnetError: a missing model or input, an unreadable image, an unwritable folder.
    """
    from bpnet.inference.runtime import load_model

    images = find_images(source)
    results_dir = check_output_dir(results_dir)
    loaded = load_model(model)
    pose = loaded.pose
    source_ = loaded.source(stage=spec.output_stage_to_use, threads=threads)
    params = DecoderParams.from_spec(spec)
    detections: list[dict] = []
    stems = Counter(p.stem for p in images)
    pictures = results_dir / "images"
    # pictures are drawn into a staging folder and moved into images/ only when every image
    # went through: a failure part-way leaves the results folder as it was
    with tempfile.TemporaryDirectory(prefix="bpnet-inference-") as staging:
        for path, image_id in zip(images, image_ids(images), strict=True):
            image = read_image(path)
            height, width = image.shape[:2]
            record = _record(path, image_id, width, height, pose.num_joints)
            people = predict_people(
                image, record, source_, pose, params, input_geometry(width, height, spec)
            )
            keypoints = people.to_dataset(pose)  # (N, K, 3) x, y, score in dataset order
            records = detections_for_image(image_id, keypoints, people.scores, CATEGORY_ID)
            detections += [{**r, "file_name": path.name} for r in records]
            if draw:
                drawn = draw_people(image, keypoints, pose, scores=True)
                # a.jpg and a.png would both draw to a.jpg: keep the suffix in the name then
                name = path.stem if stems[path.stem] == 1 else path.name.replace(".", "_")
                staged = Path(staging) / f"{name}.jpg"
                if not cv2.imwrite(str(staged), drawn, [cv2.IMWRITE_JPEG_QUALITY, 90]):
                    raise BpnetError(f"{staged}: could not write the picture; check the disk")
            say(f"{path.name}: {len(people)} people")
        for staged in sorted(Path(staging).iterdir()):
            copy_atomic(staged, pictures / staged.name)
    write_json_atomic(results_dir / DETECTIONS_FILE, detections)
    return {
        "images": len(images),
        "people": len(detections),
        "detections": str(results_dir / DETECTIONS_FILE),
    }
