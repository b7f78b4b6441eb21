"""The contract between an exported network and every runtime that runs it.

``bpnet export`` writes a :class:`ModelIO` (and the pose config and training spec) into the
ONNX file's ``metadata_props``; :mod:`bpnet.inference.onnx_source` and
:mod:`bpnet.inference.tensorrt_source` read it back, so an exported model evaluates with no
other file. Two kinds of network share it:

* the plain export: normalised float input (``rgb / image_scale - image_offset``), every
  stage's heatmaps and PAFs, outputs named ``heatmaps_stage<i>`` / ``pafs_stage<i>``;
* the deployable model (``--sdk_compatible_model``): raw RGB pixels in (0..255, pre-processing
  inside), the last stage only, ordered [PAF, heatmap], the PAF upsampled in-graph by
  ``paf_upsample``.

The pre- and post-processing here is shared by the runtimes and by INT8 calibration, so a
calibration batch is exactly what inference feeds the network.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from bpnet.config.spec import NormalizationParams
from bpnet.data.transforms import normalize_image, warp_image
from bpnet.errors import BpnetError

FORMAT = "bpnet-onnx"
VERSION = 1
# metadata_props keys (visible in Netron's model properties)
KEY_FORMAT = "bpnet.format"
KEY_IO = "bpnet.io"
KEY_POSE = "bpnet.pose"
KEY_SPEC = "bpnet.spec"
KEY_DATA_TYPE = "bpnet.data_type"
KEY_SOURCE = "bpnet.source"


@dataclass(frozen=True)
class ModelIO:
    """What goes into an exported network and what comes out.

    Attributes:
        input_name: the input tensor's name.
        layout: ``NCHW`` (channels_first) or ``NHWC`` (channels_last), for the input and
            every output.
        input_dtype: ``float32`` or ``uint8`` (the deployable model's raw pixels).
        raw_input: True when the network takes raw RGB values 0..255 and normalises inside;
            False when it takes ``rgb / image_scale - image_offset``.
        size: the fixed (height, width) of the input, or None when both are dynamic.
        heatmap_outputs: output name of each exported stage's heatmaps, in stage order.
        paf_outputs: output name of each exported stage's PAFs, in stage order.
        stages: the 1-based stage number of each exported pair.
        num_stages: stages of the network (the last one is the prediction).
        paf_upsample: integer factor the PAFs are upsampled by in-graph (bilinear,
            half-pixel centres, as ``torch.nn.functional.interpolate``); 1 for none.
        stride: input pixels per heatmap cell.
        output_order: output names in the graph's order.
        size_multiple: input height and width must be multiples of it (the stride for bpnet's
            own networks; 16 or 32 for imported networks that downsample further inside).
            Files written before this field existed read as 8.
    """

    input_name: str
    layout: Literal["NCHW", "NHWC"]
    input_dtype: Literal["float32", "uint8"]
    raw_input: bool
    size: tuple[int, int] | None
    heatmap_outputs: tuple[str, ...]
    paf_outputs: tuple[str, ...]
    stages: tuple[int, ...]
    num_stages: int
    paf_upsample: int = 1
    stride: int = 8
    output_order: tuple[str, ...] = ()
    size_multiple: int = 8

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, source: str) -> ModelIO:
        """Parse the ``bpnet.io`` metadata entry.

        Raises:
            BpnetError: malformed entry (names ``source``).
        """
        try:
            raw = json.loads(text)
            raw["size"] = None if raw["size"] is None else tuple(raw["size"])
            for key in ("heatmap_outputs", "paf_outputs", "stages", "output_order"):
                raw[key] = tuple(raw.get(key, ()))
            return cls(**raw)
        except (ValueError, KeyError, TypeError) as err:
            raise BpnetError(
                f"{source}: the model's bpnet.io metadata is malformed ({err}); export it again "
                "with bpnet export"
            ) from None

    def stage_index(self, stage: int | None) -> int:
        """Position of a 1-based stage among the exported pairs (None: the last stage).

        Raises:
            BpnetError: the stage was not exported (the deployable model keeps the last one).
        """
        wanted = self.num_stages if stage is None else stage
        if wanted not in self.stages:
            have = ", ".join(map(str, self.stages))
            raise BpnetError(
                f"output_stage_to_use: {stage}, but this model outputs stage(s) {have} of "
                f"{self.num_stages}; use one of them or null (the last)"
            )
        return self.stages.index(wanted)

    def check_size(self, size: tuple[int, int], source: str) -> None:
        """Fail clearly when a fixed-size model is asked for another input size.

        Raises:
            BpnetError: naming both sizes and the two ways out.
        """
        if self.size is not None and tuple(size) != tuple(self.size):
            h, w = self.size
            raise BpnetError(
                f"{source}: the model's input is fixed at {h}x{w} but this image needs "
                f"{size[0]}x{size[1]}; evaluate in strict mode at its size (-i "
                f"specs/infer_spec_strict.yaml -o 'input_shape=[{h},{w}]') or export without "
                "--input_dims for dynamic height and width"
            )


def warp_rgb(image: np.ndarray, geometry) -> np.ndarray:
    """(H, W, 3) BGR image -> (h, w, 3) uint8 RGB network input, as TorchSource warps it.

    Args:
        image: the original picture.
        geometry: a :class:`~bpnet.inference.pipeline.ScaledInput` (size and matrix).
    """
    return cv2.cvtColor(warp_image(image, geometry.matrix, geometry.size), cv2.COLOR_BGR2RGB)


def network_input(rgb: np.ndarray, io: ModelIO, normalization: NormalizationParams) -> np.ndarray:
    """Turn warped RGB pixels into the network's input tensor.

    Args:
        rgb: (N, H, W, 3) uint8 RGB, already warped into the network input (grey border).
        io: the network's contract.
        normalization: the training spec's ``normalization_params`` (ignored for raw-input
            networks, which normalise inside).

    Returns:
        (N, 3, H, W) or (N, H, W, 3), float32 ``rgb / image_scale - image_offset`` or the raw
        uint8 pixels, as ``io`` says.
    """
    if io.raw_input:
        x = rgb if io.input_dtype == "uint8" else rgb.astype(np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if io.layout == "NCHW" else x)
    # the same operations as training and TorchSource
    x = np.stack([normalize_image(image, normalization) for image in rgb])  # (N, 3, H, W)
    return np.ascontiguousarray(x if io.layout == "NCHW" else x.transpose(0, 2, 3, 1))


def torch_input(rgb: np.ndarray, normalization: NormalizationParams) -> np.ndarray:
    """What a PyTorch checkpoint's network takes: normalised float32 NCHW, whatever layout its
    exported forms use (see :func:`network_input`)."""
    return network_input(rgb, _TORCH_IO, normalization)


_TORCH_IO = ModelIO("input", "NCHW", "float32", False, None, (), (), (), 0)


def maps_from_outputs(
    outputs: dict[str, np.ndarray], io: ModelIO, stage: int | None = None, item: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One image's heatmaps and PAFs on the stride grid, whatever the network's layout.

    The deployable model's upsampled PAFs are brought back to the heatmaps' grid by the
    exact inverse of the in-graph bilinear upsampling (least squares; see
    :func:`bilinear_upsampling_matrix`), so its maps decode exactly like the plain model's.

    Args:
        outputs: output name -> (N, C, h, w) or (N, h, w, C) array.
        io: the network's contract.
        stage: 1-based stage; None is the last.
        item: which image of the batch.

    Returns:
        heatmaps (J + 1, h, w) and PAFs (2L, h, w), float32.
    """
    index = io.stage_index(stage)
    heatmaps = _chw(outputs[io.heatmap_outputs[index]][item], io.layout)
    pafs = _chw(outputs[io.paf_outputs[index]][item], io.layout)
    if io.paf_upsample != 1:
        h, w = heatmaps.shape[1:]
        inv_h = np.linalg.pinv(bilinear_upsampling_matrix(h, io.paf_upsample))  # (h, u h)
        inv_w = np.linalg.pinv(bilinear_upsampling_matrix(w, io.paf_upsample))  # (w, u w)
        pafs = np.einsum("yi,cij,xj->cyx", inv_h, pafs.astype(np.float64), inv_w)
    return heatmaps.astype(np.float32), np.ascontiguousarray(pafs, np.float32)


class ExportedSource:
    """What an exported model's map source shares, whatever runs it (ONNX Runtime, TensorRT).

    Pre-processing matches :class:`~bpnet.inference.torch_source.TorchSource` exactly: the
    image is warped into the input with the geometry's matrix (grey border), converted to RGB
    and normalised (or handed over raw to a deployable model, which normalises inside).
    Subclasses implement :meth:`run`.

    Args:
        path: the model file.
        io: its contract (from its metadata).
        normalization: the training spec's normalisation.
        stage: 1-based stage whose maps are used; None is the last.
    """

    needs_image = True

    def __init__(
        self,
        path: str | Path,
        io: ModelIO,
        normalization: NormalizationParams,
        *,
        stage: int | None = None,
    ):
        self.path = Path(path)
        self.io = io
        self.normalization = normalization
        self.stage = stage
        self.stride = io.stride
        self.input_multiple = io.size_multiple
        io.stage_index(stage)  # fail now for a stage the model does not output

    def __call__(self, image: np.ndarray | None, geometry) -> tuple[np.ndarray, np.ndarray]:
        if image is None:
            raise ValueError(f"{type(self).__name__} needs the image (needs_image is True)")
        self.io.check_size(geometry.size, str(self.path))
        return self.run(network_input(warp_rgb(image, geometry)[None], self.io, self.normalization))

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One prepared input (batch of one) -> heatmaps (J+1, h, w), PAFs (2L, h, w)."""
        raise NotImplementedError


class ArraySource(ExportedSource):
    """An exported model whose runtime takes the prepared input as a numpy array and returns
    named arrays (ONNX Runtime, OpenVINO): one picture, or several of one size as a batch.
    Subclasses implement :meth:`outputs`."""

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return maps_from_outputs(self.outputs(x), self.io, self.stage)

    def batch(self, images: list[np.ndarray], geometry) -> list[tuple[np.ndarray, np.ndarray]]:
        """Several pictures of one size through the network as one batch (video frames);
        bpnet export leaves the batch dimension dynamic."""
        self.io.check_size(geometry.size, str(self.path))
        rgb = np.stack([warp_rgb(image, geometry) for image in images])  # (N, h, w, 3)
        outputs = self.outputs(network_input(rgb, self.io, self.normalization))
        return [maps_from_outputs(outputs, self.io, self.stage, i) for i in range(len(images))]

    def outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """A prepared input batch -> output name -> array."""
        raise NotImplementedError


def _chw(array: np.ndarray, layout: str) -> np.ndarray:
    return array if layout == "NCHW" else array.transpose(2, 0, 1)


def bilinear_upsampling_matrix(n: int, factor: int) -> np.ndarray:
    """(factor n, n) matrix of 1-D bilinear upsampling with half-pixel centres.

    The linear map of ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)`` and of ONNX ``Resize`` (linear, half_pixel) along one axis: output
    pixel j samples input coordinate ``(j + 0.5) / factor - 0.5``, clamped to the edges.
    """
    out = np.zeros((n * factor, n))
    for j in range(n * factor):
        x = min(max((j + 0.5) / factor - 0.5, 0.0), n - 1)
        i0 = int(np.floor(x))
        i1 = min(i0 + 1, n - 1)
        t = x - i0
        out[j, i0] += 1.0 - t
        out[j, i1] += t
    return out
