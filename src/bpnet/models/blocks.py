"""Layers built from one arch entry plus their input width (which the arch does not store).

Each class takes ``(in_channels, spec)`` where ``spec`` is the entry's plain dict (see
:mod:`bpnet.models.arch`), so the same code builds a fresh model and a pruned one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bpnet.models.arch import conv_option

# TensorFlow's batch-norm epsilon: instance-normalised layers come from TF networks (their
# frozen ``is_training=True`` batch norms), whose epsilon is part of the function
INSTANCE_NORM_EPS = 1e-3


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    return {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "none": nn.Identity}[name]()


def _tf_same_padding(kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding (before, after) for a side divisible by the stride."""
    total = max(dilation * (kernel - 1) + 1 - stride, 0)
    return total // 2, total - total // 2


class ConvBlock(nn.Conv2d):
    """Conv2d with "same" padding, then optional normalisation, then an activation.

    It subclasses ``nn.Conv2d`` so that its kernel lives at ``<path>.weight`` (the path the
    arch graph and a pruner use) and any tool that looks for convs finds it. A depthwise conv
    has one filter per input channel (``groups = in_channels``). The normalisation (``bn``)
    is batch norm, or instance norm (``norm: instance``: each sample's own statistics, what a
    TensorFlow batch norm frozen in training mode computes at batch 1). TensorFlow's SAME
    padding (``padding: tf_same``) puts the odd pixel at the end, which a stride-2 conv needs
    to match a TF network exactly.

    Shapes: (B, in_channels, H, W) -> (B, out, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, spec: dict):
        kernel, dilation, stride = spec["kernel"], spec["dilation"], spec["stride"]
        self.tf_pad = None
        padding = dilation * (kernel - 1) // 2
        if conv_option(spec, "padding") == "tf_same":
            before, after = _tf_same_padding(kernel, stride, dilation)
            if before != after:
                self.tf_pad, padding = (before, after, before, after), 0
        super().__init__(
            in_channels,
            spec["out"],
            kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=in_channels if conv_option(spec, "depthwise") else 1,
            bias=spec["bias"],
        )
        self.bn: nn.Module | None = None
        if spec["bn"] and conv_option(spec, "norm") == "instance":
            self.bn = nn.InstanceNorm2d(spec["out"], eps=INSTANCE_NORM_EPS, affine=True)
        elif spec["bn"]:
            self.bn = nn.BatchNorm2d(spec["out"])
        self.act = _activation(spec["act"])
        # He init keeps the activation scale through the deep stages, which have no BN and
        # train from scratch here; gates and linear convs get gain 1
        gain = "relu" if spec["act"] == "relu" else "linear"
        nn.init.kaiming_normal_(self.weight, mode="fan_in", nonlinearity=gain)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.tf_pad is not None:
            x = F.pad(x, self.tf_pad)
        x = self._conv_forward(x, self.weight, self.bias)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


class DepthwiseConvBlock(ConvBlock):
    """A :class:`ConvBlock` with one filter per input channel (``depthwise: true``): its own
    class, so that a pruner cuts its input and output channels together."""


def conv_block(in_channels: int, spec: dict) -> ConvBlock:
    """The conv an arch entry describes: a :class:`DepthwiseConvBlock` or a :class:`ConvBlock`."""
    if conv_option(spec, "depthwise"):
        return DepthwiseConvBlock(in_channels, spec)
    return ConvBlock(in_channels, spec)


class MaxPool(nn.MaxPool2d):
    """Max-pool from an arch entry (no parameters)."""

    def __init__(self, spec: dict):
        super().__init__(spec["kernel"], spec["stride"], spec["padding"])


class ResidualBlock(nn.Module):
    """act(convs(x) + shortcut(x)); the shortcut is identity or a (1x1, strided) conv; act is
    ReLU, or none for MobileNetV2's linear bottlenecks.

    The convs are registered under their arch names (``<block>.conv1``), beside
    ``<block>.<shortcut name>``, so module paths match the arch graph.
    """

    def __init__(self, in_channels: int, spec: dict):
        super().__init__()
        self.body_names = []
        width = in_channels
        for conv in spec["convs"]:
            self.add_module(conv["name"], conv_block(width, conv))
            self.body_names.append(conv["name"])
            width = conv["out"]
        self.shortcut_name = None
        if spec["shortcut"] is not None:
            self.shortcut_name = spec["shortcut"]["name"]
            self.add_module(self.shortcut_name, conv_block(in_channels, spec["shortcut"]))
        self.act = _activation(spec.get("act", "relu"))

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for name in self.body_names:
            y = getattr(self, name)(y)
        shortcut = x if self.shortcut_name is None else getattr(self, self.shortcut_name)(x)
        return self.act(y + shortcut)


class Branch(nn.Module):
    """One output branch of a stage: convs, optional attention gate, output conv.

    The gate is TAO's self-attention: ``x * act(attention(x))`` (sigmoid for heatmaps, tanh
    for PAFs, whose values are signed). The output conv starts near zero so that the first
    steps do not fight large random maps.

    Shapes: (B, in_channels, h, w) -> (B, out.out, h, w).
    """

    def __init__(self, in_channels: int, spec: dict):
        super().__init__()
        self.conv_names = []
        width = in_channels
        for conv in spec["convs"]:
            self.add_module(conv["name"], conv_block(width, conv))
            self.conv_names.append(conv["name"])
            width = conv["out"]
        self.attention_name = None
        if spec["attention"] is not None:
            self.attention_name = spec["attention"]["name"]
            self.add_module(self.attention_name, conv_block(width, spec["attention"]))
        self.out_name = spec["out"]["name"]
        out = conv_block(width, spec["out"])
        nn.init.normal_(out.weight, std=0.01)
        self.add_module(self.out_name, out)

    def forward(self, x: Tensor) -> Tensor:
        for name in self.conv_names:
            x = getattr(self, name)(x)
        if self.attention_name is not None:
            x = x * getattr(self, self.attention_name)(x)
        return getattr(self, self.out_name)(x)


class Stage(nn.Module):
    """One prediction stage: shared trunk, then a heatmap and a PAF branch.

    Attributes:
        inputs: names of the maps concatenated (in this order) into the stage input, from
            ``features``, ``heatmaps``, ``pafs`` (the previous stage's outputs).

    Shapes: (B, in_channels, h, w) -> ((B, J + 1, h, w), (B, 2L, h, w)).
    """

    def __init__(self, in_channels: int, spec: dict):
        super().__init__()
        self.inputs = tuple(spec["inputs"])
        self.trunk = nn.Sequential()
        width = in_channels
        for conv in spec["trunk"]:
            self.trunk.add_module(conv["name"], conv_block(width, conv))
            width = conv["out"]
        self.heatmap = Branch(width, spec["heatmap"])
        self.paf = Branch(width, spec["paf"])
        out = getattr(self.heatmap, self.heatmap.out_name)
        if out.bias is not None:
            # the last heatmap is the background, 1 - max(joints): 1 almost everywhere. Starting
            # it at 0 made the first loss 3x that of predicting background everywhere, and the
            # first steps of training only learnt "background = 1" (as detection heads start
            # their classes at the prior, not at 0)
            with torch.no_grad():
                out.bias[-1] = 1.0

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.trunk(x)
        return self.heatmap(x), self.paf(x)


def upsample2x_tf1(x: Tensor) -> Tensor:
    """TF1's ``resize_bilinear`` x2 (``align_corners=False``, no half-pixel centres): output
    pixel 2i is input pixel i, 2i + 1 the mean of pixels i and i + 1 (the last one repeated).

    Written as edge padding, a corner-aligned bilinear resize to 2n + 1 (output j samples
    input j / 2 exactly) and a crop: ops that keep channels apart, as a pruner's trace and
    an ONNX export need.

    Shapes: (B, C, h, w) -> (B, C, 2h, 2w).
    """
    h, w = x.shape[-2:]
    padded = F.pad(x, (0, 1, 0, 1), mode="replicate")
    up = F.interpolate(padded, size=(2 * h + 1, 2 * w + 1), mode="bilinear", align_corners=True)
    return up[..., : 2 * h, : 2 * w]


class UpsampleConcat(nn.Module):
    """concat[an earlier backbone output, this input upsampled by ``scale``] (no parameters).

    Attributes:
        skip: the name of the earlier backbone layer whose output comes first.
    """

    def __init__(self, spec: dict):
        super().__init__()
        self.skip = spec["skip"]
        self.scale = spec["scale"]
        self.mode = spec["mode"]

    def forward(self, skip: Tensor, x: Tensor) -> Tensor:
        if self.mode == "bilinear_tf1":  # scale 2 (the arch check)
            up = upsample2x_tf1(x)
        else:
            up = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return torch.cat([skip, up], dim=1)


class Backbone(nn.Sequential):
    """The backbone's layers in order (paths ``backbone.<layer name>``); an upsample-concat
    layer reads the output an earlier layer kept for it.

    Shapes: (B, 3, H, W) -> (B, C, H / 8, W / 8) for the presets.
    """

    def __init__(self, layers: list[dict]):
        super().__init__()
        width = 3
        widths: dict[str, int] = {}
        for layer in layers:
            if layer["type"] == "conv":
                module: nn.Module = conv_block(width, layer)
                width = layer["out"]
            elif layer["type"] == "maxpool":
                module = MaxPool(layer)
            elif layer["type"] == "residual":
                module = ResidualBlock(width, layer)
                width = layer["convs"][-1]["out"]
            else:
                module = UpsampleConcat(layer)
                width += widths[layer["skip"]]
            widths[layer["name"]] = width
            self.add_module(layer["name"], module)
        self.kept = {m.skip for m in self.children() if isinstance(m, UpsampleConcat)}

    def forward(self, x: Tensor) -> Tensor:
        kept: dict[str, Tensor] = {}
        for name, module in self.named_children():
            x = module(kept[module.skip], x) if isinstance(module, UpsampleConcat) else module(x)
            if name in self.kept:
                kept[name] = x
        return x


__all__ = [
    "Backbone",
    "Branch",
    "ConvBlock",
    "DepthwiseConvBlock",
    "MaxPool",
    "ResidualBlock",
    "Stage",
    "UpsampleConcat",
    "conv_block",
    "upsample2x_tf1",
]
