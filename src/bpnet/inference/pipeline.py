"""From one image to its people, whatever produces the maps (a network or the ground truth).

The geometry is the same for every map source: the image is mapped into a network input by an
affine matrix (TAO's default and strict modes, at one or several scales), the source returns
heatmaps and PAFs on the stride grid of that input, scales are fused on the finest grid, the
decoder finds people in input pixels, and the inverse matrix takes them back to the image.

:class:`Predictor` is that whole step for one image file, from reading it to its COCO result
records: ``bpnet evaluate``, ``bpnet inference`` and validation during training all run it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from bpnet.config.inference import InferenceSpec
from bpnet.config.spec import STRIDE
from bpnet.data.coco import PERSON_CATEGORY_ID, CocoSplit, detections_for_image, keypoint_order
from bpnet.data.dataset import read_image
from bpnet.data.transforms import apply_affine, invert_affine, letterbox_matrix
from bpnet.decode import DecoderParams, People, decode
from bpnet.grid import grid_matrix
from bpnet.pose import PoseConfig


@dataclass(frozen=True)
class ScaledInput:
    """One network input made from an image.

    Attributes:
        size: (height, width) in pixels, multiples of the source's ``input_multiple``.
        matrix: (2, 3) map from original image pixels to input pixels.
    """

    size: tuple[int, int]
    matrix: np.ndarray


class MapSource(Protocol):
    """Anything that turns one network input into maps on its stride grid.

    A source that can run several pictures through its network at once also has
    ``batch(images, geometry) -> [(heatmaps, pafs), ...]`` (see :func:`batch_maps`).
    """

    stride: int
    input_multiple: int  # input sides must be multiples of it (the stride, or 16, 32, ...)
    needs_image: bool  # False lets the evaluation skip reading and decoding image files

    def __call__(
        self, image: np.ndarray | None, geometry: ScaledInput
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return heatmaps (J + 1, h, w) and PAFs (2L, h, w), h = height / stride.

        Args:
            image: (H, W, 3) uint8 BGR original image, None when ``needs_image`` is False.
            geometry: the network input to produce maps for.
        """
        ...


def _round_to_multiple(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def input_geometry(
    width: int, height: int, spec: InferenceSpec, multiple: int = STRIDE
) -> list[ScaledInput]:
    """The network inputs an image is evaluated at, one per scale.

    ``adjust_network_input`` (default): input height = ``input_shape[0]`` x scale, width
    follows the image's aspect ratio, both rounded to a multiple of ``multiple``.
    ``pad_image_input`` (strict): the input is ``input_shape`` x scale (each side rounded the
    same way) and the image is resized to fit and padded right and bottom.
    ``multi_scale_inference`` uses every factor of ``scales``; otherwise 1.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        spec: input shape, aspect-ratio mode and scales.
        multiple: what every input side must be a multiple of: the map source's
            ``input_multiple`` (the stride, 8, for bpnet's own networks; 16 or 32 for
            networks whose inner layers downsample further).
    """
    scales = spec.scales if spec.multi_scale_inference else (1.0,)
    out = []
    for scale in scales:
        if spec.keep_aspect_ratio_mode == "pad_image_input":
            size = (
                _round_to_multiple(spec.input_shape[0] * scale, multiple),
                _round_to_multiple(spec.input_shape[1] * scale, multiple),
            )
        else:
            in_height = _round_to_multiple(spec.input_shape[0] * scale, multiple)
            size = (in_height, _round_to_multiple(in_height * width / height, multiple))
        out.append(ScaledInput(size, letterbox_matrix(width, height, size)))
    return out


def full_resolution(width: int, height: int, multiple: int = STRIDE) -> list[ScaledInput]:
    """The image itself as the input, padded right and bottom to a multiple of ``multiple``
    (the map source's ``input_multiple``; see :func:`input_geometry`)."""
    size = (-(-height // multiple) * multiple, -(-width // multiple) * multiple)
    return [ScaledInput(size, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))]


def _h(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])


def fuse_scales(
    maps: list[tuple[np.ndarray, np.ndarray]], inputs: list[ScaledInput], stride: int
) -> tuple[np.ndarray, np.ndarray, ScaledInput]:
    """Average several scales' maps on the grid of the largest input.

    Each scale's maps are warped with the exact affine map between the two grids (through the
    original image), so padding and rounding of the input sizes cannot misalign them.

    Returns:
        heatmaps, pafs on the target grid, and the target's :class:`ScaledInput`.
    """
    if len(inputs) == 1:
        return *maps[0], inputs[0]
    t_input = max(inputs, key=lambda i: i.size[0] * i.size[1])
    grid = grid_matrix(stride)
    h, w = t_input.size[0] // stride, t_input.size[1] // stride
    heat, pafs = [], []
    for (heatmaps, paf), source in zip(maps, inputs, strict=True):
        # source grid -> source input -> original -> target input -> target grid
        m = grid @ _h(t_input.matrix) @ _h(invert_affine(source.matrix)) @ np.linalg.inv(grid)
        heat.append(_warp(heatmaps, m[:2], (h, w)))
        pafs.append(_warp(paf, m[:2], (h, w)))
    return np.mean(heat, axis=0), np.mean(pafs, axis=0), t_input


def _warp(maps: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    hwc = np.ascontiguousarray(maps.transpose(1, 2, 0), np.float32)
    out = cv2.warpAffine(
        hwc, matrix, (size[1], size[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return out.reshape(size[0], size[1], -1).transpose(2, 0, 1)


def batch_maps(
    source: MapSource, images: list[np.ndarray], geometry: ScaledInput
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The maps of several pictures of one size at one input: one network batch when the
    source has a ``batch`` method, else one call per picture.

    Returns:
        one (heatmaps (J + 1, h, w), PAFs (2L, h, w)) pair per picture, in order.
    """
    batch = getattr(source, "batch", None)
    if batch is None or len(images) == 1:
        return [source(image, geometry) for image in images]
    return batch(images, geometry)


def predict_people(
    image: np.ndarray | None,
    source: MapSource,
    pose: PoseConfig,
    params: DecoderParams,
    inputs: list[ScaledInput],
    seconds: dict[str, float] | None = None,
) -> People:
    """Maps from ``source`` at every input, fused, decoded, in original image pixels.

    Args:
        seconds: when given, ``maps`` and ``decode`` accumulate the time spent in each.

    Returns:
        :class:`People` whose keypoints are in the original image's pixels.
    """
    start = time.perf_counter()
    maps = [source(image, geometry) for geometry in inputs]
    _add_time(seconds, "maps", start)
    return people_from_maps(maps, inputs, source.stride, pose, params, seconds)


def _add_time(seconds: dict[str, float] | None, step: str, start: float) -> None:
    if seconds is not None:
        seconds[step] = seconds.get(step, 0.0) + time.perf_counter() - start


def people_from_maps(
    maps: list[tuple[np.ndarray, np.ndarray]],
    inputs: list[ScaledInput],
    stride: int,
    pose: PoseConfig,
    params: DecoderParams,
    seconds: dict[str, float] | None = None,
) -> People:
    """One picture's maps at each of its inputs -> its people in the picture's pixels.

    Args:
        maps: (heatmaps, PAFs) per input, in the order of ``inputs``.
        seconds: when given, ``maps`` accumulates the fusion's time and ``decode`` the
            decoder's.
    """
    start = time.perf_counter()
    heatmaps, pafs, target = fuse_scales(maps, inputs, stride)
    _add_time(seconds, "maps", start)
    start = time.perf_counter()
    people = decode(heatmaps, pafs, pose, params, stride=stride)
    _add_time(seconds, "decode", start)
    if len(people) == 0:
        return people
    keypoints = people.keypoints.copy()
    found = keypoints[..., 2] > 0
    xy = apply_affine(keypoints[..., :2], invert_affine(target.matrix))
    keypoints[..., :2] = np.where(found[..., None], xy, 0.0)
    return People(keypoints.astype(np.float32), people.scores)


@dataclass(frozen=True)
class Prediction:
    """The people of one image.

    Attributes:
        image: (H, W, 3) uint8 BGR, or None when the source did not need the pixels.
        people: in original image pixels, in the skeleton's joint order.
        keypoints: (N, K, 3) x, y, score in original image pixels, in the dataset's keypoint
            order (the annotation file's columns when the predictor has a split).
        detections: the COCO keypoint result records of the N people.
    """

    image: np.ndarray | None
    people: People
    keypoints: np.ndarray
    detections: list[dict]


class Predictor:
    """One image file in, its people and their COCO result records out.

    Read -> input geometry -> maps at each scale -> fuse -> decode -> image pixels -> dataset
    keypoints -> COCO records: the step every command that finds people runs.

    Example:
        >>> predictor = Predictor(loaded.source(), loaded.pose, InferenceSpec())  # doctest: +SKIP
        >>> found = predictor("000000397133.jpg", image_id=397133)  # doctest: +SKIP
        >>> found.detections[0]["keypoints"]  # 17 x (x, y, score)  # doctest: +SKIP

    Args:
        source: what produces the maps.
        pose: the skeleton the maps follow.
        spec: input geometry (mode, scales) and decoder settings.
        full_resolution: decode at the image's own pixel grid instead of the inputs ``spec``
            describes (for the oracle).
        split: the annotation file the results are for: its keypoint columns and category id.
            None: the pose config's dataset keypoints and COCO's person category.

    Attributes:
        seconds: time spent so far in ``read``, ``maps`` and ``decode``.
    """

    def __init__(
        self,
        source: MapSource,
        pose: PoseConfig,
        spec: InferenceSpec,
        *,
        full_resolution: bool = False,
        split: CocoSplit | None = None,
    ):
        self.source = source
        self.pose = pose
        self.spec = spec
        self.params = spec.decoder_params()
        self.full_resolution = full_resolution
        # the annotation file's column of each dataset keypoint (None: the dataset's own order)
        self.columns = None if split is None else keypoint_order(split, pose)
        self.num_columns = None if split is None else len(split.keypoint_names)
        self.category_id = PERSON_CATEGORY_ID if split is None else split.category["id"]
        self.seconds = {"read": 0.0, "maps": 0.0, "decode": 0.0}

    def inputs(self, width: int, height: int, source: MapSource | None = None) -> list[ScaledInput]:
        """The network inputs an image of this size is decoded at."""
        multiple = (source or self.source).input_multiple
        if self.full_resolution:
            return full_resolution(width, height, multiple)
        return input_geometry(width, height, self.spec, multiple)

    def __call__(
        self,
        path: str | os.PathLike,
        image_id: int,
        size: tuple[int, int] | None = None,
        *,
        source: MapSource | None = None,
    ) -> Prediction:
        """Find the people of one image file.

        Args:
            path: the image file.
            image_id: its id in the results.
            size: the (height, width) an annotation file gives (checked against the file);
                with it, a source that needs no pixels (the oracle) skips reading the file.
            source: this image's map source, instead of the predictor's (the oracle bound to
                the image's ground truth).

        Raises:
            DatasetError: a missing or unreadable image, or one of another size than ``size``.
        """
        source = source or self.source
        start = time.perf_counter()
        image = read_image(path, size) if source.needs_image or size is None else None
        self.seconds["read"] += time.perf_counter() - start
        height, width = size if size is not None else image.shape[:2]
        inputs = self.inputs(width, height, source)
        people = predict_people(image, source, self.pose, self.params, inputs, self.seconds)
        return self._prediction(image, people, image_id)

    def frames(self, images: list[np.ndarray], image_ids: list[int]) -> list[Prediction]:
        """Find the people of several pictures of one size, such as a video's frames.

        At each input scale the pictures go through the network as one batch when the source
        supports it (:func:`batch_maps`); the result equals one call per picture.

        Args:
            images: (H, W, 3) uint8 BGR pictures, all of the same size.
            image_ids: their ids in the results.
        """
        if not images:
            return []
        height, width = images[0].shape[:2]
        inputs = self.inputs(width, height)
        start = time.perf_counter()
        # per input scale, one (heatmaps, pafs) pair per picture
        by_scale = [batch_maps(self.source, images, geometry) for geometry in inputs]
        _add_time(self.seconds, "maps", start)
        out = []
        for i, (image, image_id) in enumerate(zip(images, image_ids, strict=True)):
            maps = [scale[i] for scale in by_scale]
            people = people_from_maps(
                maps, inputs, self.source.stride, self.pose, self.params, self.seconds
            )
            out.append(self._prediction(image, people, image_id))
        return out

    def _prediction(self, image: np.ndarray | None, people: People, image_id: int) -> Prediction:
        found = people.to_dataset(self.pose)  # (N, K, 3) in the pose config's dataset order
        if self.columns is None:
            keypoints = found
        else:
            keypoints = np.zeros((len(people), self.num_columns, 3), np.float32)
            keypoints[:, self.columns] = found  # the file's own keypoint order
        records = detections_for_image(image_id, keypoints, people.scores, self.category_id)
        return Prediction(image, people, keypoints, records)
