"""`bpnet inference`: people in your own images, with any model file (.pth, .onnx, .engine).

Writes ``detections.json`` (COCO keypoint results, one record per person, with the image's
``file_name`` added) and, for every image, ``images/<name>.jpg`` with the skeletons drawn.
Images that cannot be read are skipped and listed in ``skipped_images.json`` (``--strict``
stops at the first one instead).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2

from bpnet.config import load_inference_spec
from bpnet.config.inference import InferenceSpec
from bpnet.errors import BpnetError, UnreadableImageError
from bpnet.inference.pipeline import Predictor
from bpnet.inference.video import is_video_input, run_video
from bpnet.io import (
    check_output_dir,
    copy_all_atomic,
    image_files,
    read_json,
    staging_folder,
    write_json_atomic,
)
from bpnet.progress import above_bars, progress
from bpnet.visualize import draw_people

DETECTIONS_FILE = "detections.json"
SKIPPED_FILE = "skipped_images.json"

INPUT_TYPES = ("image", "dir", "json")


def find_inputs(source: str | Path, input_type: str | None = None) -> list[tuple[Path, int]]:
    """The images to run on, with their COCO image ids, from ``--input`` (TAO's input types).

    * ``image``: one image file; ``dir``: the image files directly inside a folder, by name.
      Ids: the file stems when all are distinct numbers (COCO's own file names,
      ``000000397133.jpg`` -> 397133), else 1, 2, ... in file order.
    * ``json``: a JSON file listing the images: either a list of paths, or a COCO file whose
      ``images`` entries give ``file_name`` and ``id`` (ids kept, so ``detections.json`` scores
      against that file). Relative paths start at the JSON's folder, or at ``ROOT/SPLIT/``
      for a COCO file in the official layout (``ROOT/annotations/person_keypoints_SPLIT.json``).

    ``input_type`` None: a ``.json`` file is ``json``, another file ``image``, a folder ``dir``.

    Raises:
        BpnetError: nothing there, the wrong kind of input for ``input_type``, a folder without
            images, or a JSON file that lists no images, a missing one, or is not such a list.
    """
    source = Path(source)
    if input_type is None:
        input_type = "dir" if source.is_dir() else "json" if source.suffix == ".json" else "image"
    if input_type not in INPUT_TYPES:
        raise BpnetError(f"--input_type {input_type}: use one of {', '.join(INPUT_TYPES)}")
    if not source.exists():
        raise BpnetError(f"{source}: no such file or folder; check --input")
    if (input_type == "dir") != source.is_dir():
        kind = "a folder" if input_type == "dir" else "a file"
        raise BpnetError(f"{source}: --input_type {input_type} needs {kind}; check --input")
    if input_type == "json":
        return _images_from_json(source)
    images = [source] if input_type == "image" else image_files(source)
    if not images:
        raise BpnetError(f"{source}: no .jpg, .jpeg, .png or .bmp images in this folder")
    return list(zip(images, _ids_from_names(images), strict=True))


def _ids_from_names(images: list[Path]) -> list[int]:
    stems = [p.stem for p in images]  # one per image: 1.jpg and 1.png are not distinct ids
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(images) + 1))


def _images_from_json(path: Path) -> list[tuple[Path, int]]:
    data = read_json(path)
    base = path.parent
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        prefix = "person_keypoints_"
        if base.name == "annotations" and path.stem.startswith(prefix):
            base = base.parent / path.stem[len(prefix) :]  # the official COCO layout
        try:
            listed = [(str(e["file_name"]), int(e["id"])) for e in data["images"]]
        except (TypeError, KeyError, ValueError):
            raise BpnetError(
                f"{path}: every entry of images needs a file_name and an integer id"
            ) from None
    elif isinstance(data, list) and all(isinstance(e, str) for e in data):
        listed = [(name, i) for i, name in enumerate(data, start=1)]
    else:
        raise BpnetError(
            f"{path}: expected a list of image paths or a COCO file with an images list"
        )
    if not listed:
        raise BpnetError(f"{path}: lists no images")
    inputs = [(base / name, image_id) for name, image_id in listed]
    for image, _ in inputs:
        if not image.is_file():
            raise BpnetError(f"{image}: image listed in {path} not found; fix the path")
    return inputs


def run_inference(
    model: str | Path | None,
    source: str | Path,
    results_dir: str | Path,
    spec: InferenceSpec,
    *,
    input_type: str | None = None,
    draw: bool = True,
    threads: int | None = None,
    key: str | None = None,
    strict: bool = False,
    runtime: str | None = None,
    say: Callable[[str], None] = print,
) -> dict:
    """Find people in every image and write the results.

    An image that cannot be read (corrupt, empty, not an image) is skipped: the others are
    processed, and the skipped ones are listed, with the reason, in ``skipped_images.json``.

    Args:
        model: a ``.pth``, ``.onnx`` or ``.engine`` file (see
            :func:`bpnet.inference.runtime.load_model`); None: ``spec.model_path``.
        source: an image file, a folder of images or a JSON list of images.
        results_dir: receives ``detections.json``, ``images/`` and, when images were skipped,
            ``skipped_images.json``.
        spec: input geometry and decoder settings.
        input_type: ``image``, ``dir`` or ``json`` (see :func:`find_inputs`); None: from
            ``source``.
        draw: write the pictures with skeletons.
        threads: ONNX Runtime / OpenVINO threads (None: as many as PyTorch uses).
        key: TAO's ``-k``: the key an encrypted model was written with.
        strict: stop at the first unreadable image (nothing is written) instead of skipping it.
        runtime: ``auto`` or None (the file's own), ``onnxruntime`` or ``openvino`` (.onnx).
        say: where each image's line goes.

    Returns:
        ``{"images": n read, "people": n, "detections": path, "skipped": [(path, reason),
        ...], "skipped_file": path or None}``.

    Raises:
        BpnetError: a missing model or input, an unwritable folder, no readable image at all,
            or (``strict``) an unreadable image; nothing is written then.
    """
    from bpnet.inference.runtime import load_model

    model = model or spec.model_path
    if model is None:
        raise BpnetError("bpnet inference: give a model with -m MODEL (.pth, .onnx or .engine)")
    inputs = find_inputs(source, input_type)
    results_dir = check_output_dir(results_dir)
    loaded = load_model(model, key=key)
    pose = loaded.pose
    source_ = loaded.source(stage=spec.output_stage_to_use, threads=threads, runtime=runtime)
    predictor = Predictor(source_, pose, spec)
    detections: list[dict] = []
    skipped: list[tuple[Path, str]] = []
    stems = Counter(p.stem for p, _ in inputs)
    pictures = results_dir / "images"
    # pictures are drawn into a staging folder and moved into images/ only when every image
    # went through: a failure part-way leaves the results folder as it was
    with staging_folder("bpnet-inference-") as staging:
        for path, image_id in progress(inputs, desc="inference", unit="image"):
            try:
                found = predictor(path, image_id)
            except UnreadableImageError as err:
                if strict:
                    raise BpnetError(
                        err.advise("replace or remove the file, or drop --strict to skip it")
                    ) from None
                skipped.append((path, err.reason or str(err)))
                with above_bars():
                    say(f"{path.name}: skipped: {err.reason}")
                continue
            detections += [{**r, "file_name": path.name} for r in found.detections]
            if draw:
                drawn = draw_people(found.image, found.keypoints, pose, scores=True)
                # a.jpg and a.png (or two a.jpg of a JSON list) would both draw to a.jpg
                name = path.stem if stems[path.stem] == 1 else f"{path.stem}_{image_id}"
                staged = staging / f"{name}.jpg"
                if not cv2.imwrite(str(staged), drawn, [cv2.IMWRITE_JPEG_QUALITY, 90]):
                    raise BpnetError(f"{staged}: could not write the picture; check the disk")
            with above_bars():
                say(f"{path.name}: {len(found.people)} people")
        if len(skipped) == len(inputs):
            first, reason = skipped[0]
            raise BpnetError(
                f"{source}: none of the {len(inputs)} images could be read (first: {first}: "
                f"{reason}); check --input"
            )
        copy_all_atomic((staged, pictures / staged.name) for staged in staging.iterdir())
    write_json_atomic(results_dir / DETECTIONS_FILE, detections)
    skipped_file = results_dir / SKIPPED_FILE
    if skipped:
        listed = [{"file_name": p.name, "path": str(p), "reason": r} for p, r in skipped]
        write_json_atomic(skipped_file, listed, indent=2)
    else:
        skipped_file.unlink(missing_ok=True)  # an earlier run's list would describe its images
    return {
        "images": len(inputs) - len(skipped),
        "people": len(detections),
        "detections": str(results_dir / DETECTIONS_FILE),
        "skipped": skipped,
        "skipped_file": str(skipped_file) if skipped else None,
    }


def inference_command(
    model: Path | None,
    source: Path,
    results_dir: Path,
    inference_spec: Path | None,
    overrides: list[str],
    dump_visualizations: bool = False,
    batch_size: int = 4,
    max_frames: int | None = None,
    **options,
) -> str:
    """``bpnet inference``: :func:`run_inference` with the inference spec file (None: TAO's
    defaults) and its ``overrides``; ``options`` are run_inference's keywords. A video or a
    camera goes to :func:`bpnet.inference.video.run_video` instead, with ``batch_size`` frames
    per network batch, stopping after ``max_frames``.
    ``dump_visualizations`` is TAO's option, accepted: pictures are drawn unless ``draw`` is
    False.

    Returns:
        A line with the people and images found, the images skipped (the first five named)
        and where the results are.
    """
    spec = load_inference_spec(inference_spec, overrides)
    if is_video_input(source, options.get("input_type")):
        options.pop("strict", None)  # a video has no unreadable images to skip or stop at
        video = run_video(
            model,
            source,
            results_dir,
            spec,
            batch_size=batch_size,
            max_frames=max_frames,
            **options,
        )
        return video.line
    summary = run_inference(model, source, results_dir, spec, **options)
    line = f"{summary['people']} people in {summary['images']} images"
    if summary["skipped"]:
        names = [path.name for path, _ in summary["skipped"]]
        shown = ", ".join(names[:5]) + (f", ... ({len(names) - 5} more)" if len(names) > 5 else "")
        listed = summary["skipped_file"]
        line += f"; {len(names)} unreadable image(s) skipped: {shown} (listed in {listed})"
    return f"{line}; results in {results_dir}"
