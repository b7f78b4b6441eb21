"""PyTorch -> ONNX: the plain model, the deployable model, FP16, and the metadata they carry.

The export uses PyTorch's TorchScript-based exporter (``dynamo=False``): with opset 17 it
writes one self-contained file (no external-data side file, no ``onnxscript`` needed) whose
conv + batch-norm pairs are folded in eval mode, and it is stable for this plain conv net.
Every exported file carries :class:`~bpnet.inference.model_io.ModelIO`, the pose config and
the training spec in ``metadata_props``, so ``bpnet evaluate -m model.onnx`` needs no other
file.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bpnet.config import ExperimentSpec, to_dict
from bpnet.config.spec import NormalizationParams
from bpnet.encryption import write_model_bytes
from bpnet.errors import BpnetError
from bpnet.inference import model_io as mio
from bpnet.inference.model_io import ModelIO
from bpnet.io import write_with_atomic
from bpnet.pose import PoseConfig

OPSET = 17
INPUT_NAME = "input"
DEPLOYABLE_INPUT_NAME = "image"
TRACE_SIZE = (256, 256)  # any multiple of 8: the graph is the same at every size


class PlainExport(nn.Module):
    """Every stage's maps as a flat tuple, in the chosen layout.

    Input: (N, 3, H, W) or (N, H, W, 3) float32 ``rgb / image_scale - image_offset``.
    Output: heatmaps_stage1, pafs_stage1, ..., heatmaps_stageS, pafs_stageS; each
    (N, C, H / 8, W / 8) or (N, H / 8, W / 8, C).
    """

    def __init__(self, model: nn.Module, channels_last: bool):
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        out = []
        for heatmaps, pafs in self.model(x):
            out += [heatmaps, pafs]
        if self.channels_last:
            out = [t.permute(0, 2, 3, 1) for t in out]
        return tuple(out)


class DeployableModel(nn.Module):
    """TAO's ``--sdk_compatible_model``: raw pixels in, last stage's [PAF, heatmap] out.

    Pre-processing is inside: the raw RGB input (0..255) is cast to float and normalised as
    ``rgb / image_scale - image_offset``; the PAFs are upsampled by ``upsample`` (bilinear,
    half-pixel centres) so a DeepStream / Triton post-processor gets them at stride
    ``8 / upsample``.

    Input: (N, H, W, 3) (``channels_last``) or (N, 3, H, W), uint8 or float32 RGB 0..255.
    Output: pafs (N, 2L, uH / 8, uW / 8) and heatmaps (N, J + 1, H / 8, W / 8), or their
    NHWC forms.
    """

    def __init__(
        self,
        model: nn.Module,
        normalization: NormalizationParams,
        *,
        upsample: int = 4,
        channels_last: bool = True,
    ):
        super().__init__()
        self.model = model
        self.upsample = int(upsample)
        self.channels_last = channels_last
        self.register_buffer(
            "scale", torch.tensor(normalization.image_scale, dtype=torch.float32).view(1, 3, 1, 1)
        )
        self.register_buffer(
            "offset",
            torch.tensor(normalization.image_offset, dtype=torch.float32).view(1, 3, 1, 1),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        x = x.float() / self.scale - self.offset
        heatmaps, pafs = self.model(x)[-1]
        if self.upsample != 1:
            pafs = F.interpolate(
                pafs, scale_factor=self.upsample, mode="bilinear", align_corners=False
            )
        if self.channels_last:
            return pafs.permute(0, 2, 3, 1), heatmaps.permute(0, 2, 3, 1)
        return pafs, heatmaps


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    pose: PoseConfig,
    train_spec: ExperimentSpec,
    size: tuple[int, int] | None = None,
    channels_last: bool = False,
    sdk_compatible: bool = False,
    upsample: int = 4,
    sdk_input_dtype: str = "uint8",
    source: str = "",
) -> ModelIO:
    """Export a pose network to a single ONNX file (FP32, opset 17) with bpnet metadata.

    Args:
        model: a network whose forward returns ``[(heatmaps, pafs), ...]`` per stage.
        path: the ``.onnx`` file to write (atomically).
        pose: the skeleton (stored in the file).
        train_spec: the training spec (normalisation; stored in the file).
        size: fixed input (height, width), multiples of the model's ``input_multiple`` (its
            stride, 8, unless it says otherwise); None makes both dynamic.
        channels_last: NHWC input and outputs instead of NCHW.
        sdk_compatible: write the deployable model (:class:`DeployableModel`) instead of the
            plain one (:class:`PlainExport`).
        upsample: the deployable model's in-graph PAF upsampling factor.
        sdk_input_dtype: the deployable model's input type, ``uint8`` or ``float32`` (raw
            0..255 values either way; DeepStream's nvinfer feeds float).
        source: what was exported (stored in the file, for the record).

    Returns:
        The contract written into the file.
    """
    stride = int(getattr(model, "stride", 8))
    # what the network's input sides must be multiples of (PoseNet says; else the stride)
    multiple = int(getattr(model, "input_multiple", stride))
    if size is not None and any(side % multiple for side in size):
        fit = "x".join(str(max(multiple, round(side / multiple) * multiple)) for side in size)
        raise BpnetError(
            f"--input_dims {size[0]}x{size[1]}: this network needs input sides that are "
            f"multiples of {multiple}; use {fit}"
        )
    num_stages = _count_stages(model)
    layout = "NHWC" if channels_last else "NCHW"
    normalization = train_spec.dataloader.normalization_params
    if sdk_compatible:
        if upsample < 1 or stride % upsample:
            raise BpnetError(
                f"--upsample_ratio {upsample}: must divide the stride {stride} (1, 2, 4 or 8)"
            )
        if sdk_input_dtype not in ("uint8", "float32"):
            raise BpnetError(f"sdk input type {sdk_input_dtype!r}: use uint8 or float32")
        wrapper = DeployableModel(
            model, normalization, upsample=upsample, channels_last=channels_last
        )
        io_ = ModelIO(
            input_name=DEPLOYABLE_INPUT_NAME,
            layout=layout,
            input_dtype=sdk_input_dtype,
            raw_input=True,
            size=tuple(size) if size else None,
            heatmap_outputs=("heatmaps",),
            paf_outputs=("pafs",),
            stages=(num_stages,),
            num_stages=num_stages,
            paf_upsample=upsample,
            stride=stride,
            output_order=("pafs", "heatmaps"),
            size_multiple=multiple,
        )
        dtype = torch.uint8 if sdk_input_dtype == "uint8" else torch.float32
    else:
        wrapper = PlainExport(model, channels_last)
        heat = tuple(f"heatmaps_stage{i}" for i in range(1, num_stages + 1))
        paf = tuple(f"pafs_stage{i}" for i in range(1, num_stages + 1))
        io_ = ModelIO(
            input_name=INPUT_NAME,
            layout=layout,
            input_dtype="float32",
            raw_input=False,
            size=tuple(size) if size else None,
            heatmap_outputs=heat,
            paf_outputs=paf,
            stages=tuple(range(1, num_stages + 1)),
            num_stages=num_stages,
            stride=stride,
            output_order=tuple(n for pair in zip(heat, paf, strict=True) for n in pair),
            size_multiple=multiple,
        )
        dtype = torch.float32
    wrapper.eval()  # the exporter folds batch norm only in eval mode
    height, width = size or _trace_size(multiple)
    shape = (1, height, width, 3) if channels_last else (1, 3, height, width)
    dummy = (
        torch.randint(0, 256, shape, dtype=torch.uint8).to(dtype)
        if sdk_compatible
        else torch.randn(shape)
    )
    axes = {0: "batch"}
    if size is None:
        axes.update({1: "height", 2: "width"} if channels_last else {2: "height", 3: "width"})
    proto = _trace(wrapper, dummy, io_, axes)
    set_metadata(proto, io_, pose, train_spec, data_type="fp32", source=source)
    save_onnx(proto, path)
    return io_


def _trace_size(multiple: int) -> tuple[int, int]:
    """A trace size the network accepts: TRACE_SIZE rounded up to the input multiple."""
    return tuple(-(-side // multiple) * multiple for side in TRACE_SIZE)


def _count_stages(model: nn.Module) -> int:
    stages = getattr(model, "num_stages", None)
    if stages is not None:
        return int(stages)
    with torch.no_grad():  # a model without the attribute (tests' tiny nets): ask it
        was = model.training
        model.eval()
        try:
            return len(model(torch.zeros(1, 3, 16, 16)))
        finally:
            model.train(was)


def _trace(wrapper: nn.Module, dummy: Tensor, io_: ModelIO, axes: dict) -> object:
    import onnx

    buffer = io.BytesIO()
    dynamic_axes = {io_.input_name: axes}
    for name in io_.output_order:
        dynamic_axes[name] = {0: "batch"} if io_.size else dict(axes)
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter is deprecated in favour of dynamo; it is the one that
        # writes a single self-contained file without onnxscript (module docstring)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper,
            (dummy,),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=[io_.input_name],
            output_names=list(io_.output_order),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    _inline_identity_initializers(proto)
    if not io_.size:
        _name_dynamic_output_dims(proto, io_)
    onnx.checker.check_model(proto)
    return proto


def _inline_identity_initializers(proto) -> None:
    """Replace ``Identity(initializer)`` nodes by initializers of their own.

    The exporter shares equal weights (after batch-norm folding, say two zero biases) through
    Identity nodes; the INT8 quantizer then sees a computed tensor instead of a weight.
    """
    inits = {t.name: t for t in proto.graph.initializer}
    keep = []
    for node in proto.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = proto.graph.initializer.add()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
        else:
            keep.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    used = {name for node in proto.graph.node for name in node.input}
    unused = [t for t in proto.graph.initializer if t.name not in used]
    for t in unused:
        proto.graph.initializer.remove(t)


def _name_dynamic_output_dims(proto, io_: ModelIO) -> None:
    """Give the outputs' dynamic dims readable names (the exporter invents long ones)."""
    spatial = (1, 2) if io_.layout == "NHWC" else (2, 3)
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        for axis, name in zip(spatial, ("out_height", "out_width"), strict=True):
            if dims[axis].dim_param:
                suffix = "_up" if output.name in io_.paf_outputs and io_.paf_upsample > 1 else ""
                dims[axis].dim_param = name + suffix


def set_metadata(
    proto,
    io_: ModelIO,
    pose: PoseConfig,
    train_spec: ExperimentSpec,
    *,
    data_type: str,
    source: str = "",
) -> None:
    """Write bpnet's metadata_props (the contract, skeleton, spec, precision) into a model."""
    entries = {
        mio.KEY_FORMAT: json.dumps({"format": mio.FORMAT, "version": mio.VERSION}),
        mio.KEY_IO: io_.to_json(),
        mio.KEY_POSE: json.dumps(pose.to_dict()),
        mio.KEY_SPEC: json.dumps(to_dict(train_spec)),
        mio.KEY_DATA_TYPE: data_type,
        mio.KEY_SOURCE: source,
    }
    kept = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "bpnet"


def convert_fp16(proto) -> object:
    """FP16 weights and activations; inputs and outputs stay as they were (float32 / uint8).

    Uses ONNX Runtime's own converter (``onnxruntime.transformers.float16``), so no extra
    package is needed; metadata is kept, with ``bpnet.data_type`` set to ``fp16``.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the model has values out of fp16 range" noise
        half = convert_float_to_float16(proto, keep_io_types=True)
    for entry in half.metadata_props:
        if entry.key == mio.KEY_DATA_TYPE:
            entry.value = "fp16"
    return half


def save_onnx(proto, path: str | Path, key: str | None = None) -> None:
    """Write a model as one file, atomically; encrypted with ``key`` (``-k``) when given."""
    import onnx

    if key is not None:
        write_model_bytes(path, proto.SerializeToString(), key)
        return

    def write(tmp: Path) -> None:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)

    write_with_atomic(path, write)
