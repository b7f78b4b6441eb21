"""From one image to its people, whatever produces the maps (a network or the ground truth).

The geometry is the same for every map source: the image is mapped into a network input by an
affine matrix (TAO's default and strict modes, at one or several scales), the source returns
heatmaps and PAFs on the stride grid of that input, scales are fused on the finest grid, the
decoder finds people in input pixels, and the inverse matrix takes them back to the image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from bpnet.config.inference import InferenceSpec
from bpnet.config.spec import STRIDE
from bpnet.data.coco import ImageRecord
from bpnet.data.transforms import apply_affine, invert_affine, letterbox_matrix, transform_keypoints
from bpnet.decode import DecoderParams, People, decode
from bpnet.pose import PoseConfig
from bpnet.targets import encode


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
    """Anything that turns one network input into maps on its stride grid."""

    stride: int
    input_multiple: int  # input sides must be multiples of it (the stride, or 16, 32, ...)
    needs_image: bool  # False lets the evaluation skip reading and decoding image files

    def __call__(
        self, image: np.ndarray | None, record: ImageRecord, geometry: ScaledInput
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return heatmaps (J + 1, h, w) and PAFs (2L, h, w), h = height / stride.

        Args:
            image: (H, W, 3) uint8 BGR original image, None when ``needs_image`` is False.
            record: the image's record (ground truth; only the oracle reads it).
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


class OracleSource:
    """The ground truth's own targets as the "network output": the decoder's upper bound.

    Args:
        pose: the skeleton.
        sigma: heatmap Gaussian sigma in input pixels (``heatmap_gaussian_sigma``).
        paf_width: PAF half-width in output cells (``paf_ortho_dist_thresh``).
    """

    needs_image = False

    def __init__(self, pose: PoseConfig, *, sigma: float = 7.0, paf_width: float = 1.0):
        self.pose = pose
        self.sigma = sigma
        self.paf_width = paf_width
        self.stride = STRIDE
        self.input_multiple = STRIDE

    def __call__(
        self, image: np.ndarray | None, record: ImageRecord, geometry: ScaledInput
    ) -> tuple[np.ndarray, np.ndarray]:
        keypoints = transform_keypoints(record.keypoints, geometry.matrix)  # (P, J, 3)
        targets = encode(
            keypoints,
            np.ones(geometry.size, np.uint8),
            self.pose,
            stride=self.stride,
            sigma=self.sigma,
            paf_width=self.paf_width,
        )
        return targets.heatmaps, targets.pafs


def _grid_matrix(stride: int) -> np.ndarray:
    """(3, 3) map from input pixels to stride-grid coordinates (cell centres at integers)."""
    centre = (stride - 1) / 2
    return np.array(
        [[1 / stride, 0, -centre / stride], [0, 1 / stride, -centre / stride], [0, 0, 1]]
    )


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
    grid = _grid_matrix(stride)
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


def predict_people(
    image: np.ndarray | None,
    record: ImageRecord,
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
    maps = [source(image, record, geometry) for geometry in inputs]
    heatmaps, pafs, target = fuse_scales(maps, inputs, source.stride)
    middle = time.perf_counter()
    people = decode(heatmaps, pafs, pose, params, stride=source.stride)
    if seconds is not None:
        seconds["maps"] = seconds.get("maps", 0.0) + middle - start
        seconds["decode"] = seconds.get("decode", 0.0) + time.perf_counter() - middle
    if len(people) == 0:
        return people
    keypoints = people.keypoints.copy()
    found = keypoints[..., 2] > 0
    xy = apply_affine(keypoints[..., :2], invert_affine(target.matrix))
    keypoints[..., :2] = np.where(found[..., None], xy, 0.0)
    return People(keypoints.astype(np.float32), people.scores)
