"""INT8 calibration data: picking calibration images, pre-processing them, batching them.

* :func:`sample_calibration_images` is TAO's ``sample_calibration_images.py`` (``bpnet
  calibration sample``): copy ``n`` images that show at least ``pth`` people with at least
  ``kth`` labelled keypoints each, so the activation ranges are measured on pictures like the
  ones the model will see.
* :func:`build_calibration_data` turns ``--batches x --batch_size`` images of
  ``--cal_image_dir`` into a tensorfile (:mod:`bpnet.export.tensorfile`), pre-processed as
  strict-mode inference does (:func:`letterbox_rgb`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bpnet.config.inference import InferenceSpec
from bpnet.data.dataset import read_image
from bpnet.errors import BpnetError, DatasetError, UnreadableImageError
from bpnet.export.tensorfile import write_tensorfile
from bpnet.inference.model_io import warp_rgb
from bpnet.inference.pipeline import input_geometry
from bpnet.io import copy_all_atomic, image_files, read_json
from bpnet.progress import progress


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (jpg, jpeg, png, bmp), sorted by name.

    Raises:
        BpnetError: the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BpnetError(f"{folder}: calibration image folder not found; pass --cal_image_dir")
    return image_files(folder)


def choose_calibration_images(
    folder: str | Path, batches: int, batch_size: int, *, seed: int = 0
) -> list[Path]:
    """The ``batches * batch_size`` images calibration uses (a seeded sample when there are more).

    Raises:
        BpnetError: fewer images than that (says how many there are and what to change), or
            a non-positive count.
    """
    if batches < 1 or batch_size < 1:
        raise BpnetError(f"--batches and --batch_size must be >= 1, got {batches}, {batch_size}")
    images = list_images(folder)
    needed = batches * batch_size
    if len(images) < needed:
        raise BpnetError(
            f"{folder}: {len(images)} images, but --batches {batches} x --batch_size "
            f"{batch_size} needs {needed}; add images (bpnet calibration sample picks them from "
            "a COCO split) or lower --batches / --batch_size"
        )
    if len(images) == needed:
        return images
    picked = np.random.default_rng(seed).choice(len(images), needed, replace=False)
    return [images[i] for i in sorted(picked)]


def letterbox_rgb(image_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) BGR image -> (h, w, 3) RGB network input before normalisation.

    Strict-mode inference's own geometry (:func:`bpnet.inference.pipeline.input_geometry`):
    resized to fit ``size`` keeping the aspect ratio, padded right and bottom with grey.
    """
    height, width = image_bgr.shape[:2]
    strict = InferenceSpec(input_shape=size, keep_aspect_ratio_mode="pad_image_input")
    [geometry] = input_geometry(width, height, strict)
    return warp_rgb(image_bgr, geometry)


def read_letterboxed(path: Path, size: tuple[int, int], folder: str) -> np.ndarray:
    """A picture of a plain folder, letterboxed as :func:`letterbox_rgb` does.

    Raises:
        DatasetError: an unreadable picture, named, with the fix (no annotation file to fix
            here: replace it or remove it from ``folder``).
    """
    try:
        return letterbox_rgb(read_image(path), size)
    except UnreadableImageError as err:
        raise DatasetError(err.advise(f"replace the file or remove it from {folder}")) from None


def build_calibration_data(
    images: list[Path], path: str | Path, size: tuple[int, int], batch_size: int
) -> None:
    """Pre-process ``images`` into a tensorfile of ``len(images) // batch_size`` batches.

    Raises:
        DatasetError: an unreadable image (named).
    """
    batches = len(images) // batch_size
    shape = (batches, batch_size, size[0], size[1], 3)

    def generate() -> Iterator[np.ndarray]:
        with progress(desc="calibration images", unit="image", total=shape[0] * shape[1]) as bar:
            for b in range(batches):
                chunk = images[b * batch_size : (b + 1) * batch_size]
                yield np.stack([read_letterboxed(p, size, "the calibration folder") for p in chunk])
                bar.update(len(chunk))

    write_tensorfile(path, generate(), shape, [p.name for p in images[: batches * batch_size]])


def sample_calibration_images(
    ann_file: str | Path,
    image_dir: str | Path,
    out_dir: str | Path,
    num: int,
    *,
    min_people: int = 1,
    min_keypoints: int = 5,
    randomize: bool = False,
    seed: int = 0,
) -> list[Path]:
    """Copy exactly ``num`` images with enough well-labelled people into an empty folder.

    An image qualifies when at least ``min_people`` of its non-crowd people have at least
    ``min_keypoints`` labelled keypoints each (TAO's ``-pth`` and ``-kth``). Without
    ``randomize`` the first qualifying images in the annotation file's order are taken;
    with it a seeded random sample. Files keep their names (``<image id>_<name>`` when two
    chosen images share one).

    Args:
        ann_file: COCO keypoints annotation file.
        image_dir: the folder its ``file_name`` entries are relative to.
        out_dir: must be missing or empty.
        num: images to copy.

    Returns:
        The written files.

    Raises:
        BpnetError: a non-empty output folder, fewer qualifying images than ``num``, a missing
            image file or a malformed annotation file (all before anything is copied).
    """
    out_dir = Path(out_dir)
    if num < 1:
        raise BpnetError(f"-n must be >= 1, got {num}")
    if out_dir.exists() and not out_dir.is_dir():
        raise BpnetError(f"{out_dir}: is a file, not a folder; choose a new or empty folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise BpnetError(f"{out_dir}: output folder is not empty; choose a new or empty folder")
    data = read_json(ann_file)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{ann_file}: not a COCO annotation file (no 'images' list)")
    good_people: dict[int, int] = {}
    for i, ann in enumerate(data.get("annotations") or []):
        try:
            if ann.get("iscrowd", 0):
                continue
            labelled = ann.get("num_keypoints")
            if labelled is None:
                labelled = sum(1 for v in ann["keypoints"][2::3] if v > 0)
            if labelled >= min_keypoints:
                good_people[ann["image_id"]] = good_people.get(ann["image_id"], 0) + 1
        except (KeyError, TypeError, AttributeError):
            raise DatasetError(
                f"{ann_file}: annotations[{i}] needs image_id and keypoints (or num_keypoints)"
            ) from None
    try:
        candidates = [
            (int(im["id"]), str(im["file_name"]))
            for im in data["images"]
            if good_people.get(im["id"], 0) >= min_people
        ]
    except (KeyError, TypeError):
        raise DatasetError(f"{ann_file}: every image needs an id and a file_name") from None
    if len(candidates) < num:
        raise BpnetError(
            f"{ann_file}: only {len(candidates)} images have >= {min_people} people with >= "
            f"{min_keypoints} keypoints each, fewer than -n {num}; lower -n, -pth or -kth"
        )
    if randomize:
        order = np.random.default_rng(seed).permutation(len(candidates))[:num]
        chosen = [candidates[i] for i in sorted(order)]
    else:
        chosen = candidates[:num]
    image_dir = Path(image_dir)
    for _, name in chosen:
        if not (image_dir / name).is_file():
            raise DatasetError(f"{image_dir / name}: image file not found; check -i")
    names = [Path(name).name for _, name in chosen]
    uses = Counter(names)
    written = [
        out_dir / (base if uses[base] == 1 else f"{image_id}_{base}")
        for (image_id, _), base in zip(chosen, names, strict=True)
    ]
    # all or nothing: a copy that fails part-way leaves no image behind for the next run to
    # refuse as a non-empty folder
    copy_all_atomic(
        (image_dir / name, target) for (_, name), target in zip(chosen, written, strict=True)
    )
    return written


def calibration_sample_command(
    annotations: Path, images: Path, out: Path, pth: int, kth: int, **options
) -> str:
    """``bpnet calibration sample``: :func:`sample_calibration_images` of ``annotations``,
    whose files are in ``images``, into ``out``; TAO's ``pth`` and ``kth`` are the least people
    per image and labelled keypoints per person, ``options`` its other keywords. Returns the
    line the command prints."""
    written = sample_calibration_images(
        annotations, images, out, min_people=pth, min_keypoints=kth, **options
    )
    return f"copied {len(written)} calibration images to {out}"
