"""Layers built from one arch entry plus their input width (which the arch does not store).

Each class takes ``(in_channels, spec)`` where ``spec`` is the entry's plain dict (see
:mod:`bpnet.models.arch`), so the same code builds a fresh model and a pruned one.
"""

from __future__ import annotations

from torch import Tensor, nn


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    return {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "none": nn.Identity}[name]()


class ConvBlock(nn.Conv2d):
    """Conv2d with "same" padding, then optional BatchNorm, then an activation.

    It subclasses ``nn.Conv2d`` so that its kernel lives at ``<path>.weight`` (the path the
    arch graph and a pruner use) and any tool that looks for convs finds it.

    Shapes: (B, in_channels, H, W) -> (B, out, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, spec: dict):
        kernel, dilation = spec["kernel"], spec["dilation"]
        super().__init__(
            in_channels,
            spec["out"],
            kernel,
            stride=spec["stride"],
            padding=dilation * (kernel - 1) // 2,
            dilation=dilation,
            bias=spec["bias"],
        )
        self.bn = nn.BatchNorm2d(spec["out"]) if spec["bn"] else None
        self.act = _activation(spec["act"])
        # He init keeps the activation scale through the deep stages, which have no BN and
        # train from scratch here; gates and linear convs get gain 1
        gain = "relu" if spec["act"] == "relu" else "linear"
        nn.init.kaiming_normal_(self.weight, mode="fan_in", nonlinearity=gain)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self._conv_forward(x, self.weight, self.bias)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


class MaxPool(nn.MaxPool2d):
    """Max-pool from an arch entry (no parameters)."""

    def __init__(self, spec: dict):
        super().__init__(spec["kernel"], spec["stride"], spec["padding"])


class ResidualBlock(nn.Module):
    """relu(convs(x) + shortcut(x)); the shortcut is identity or a (1x1, strided) conv.

    The convs are registered under their arch names (``<block>.conv1``), beside
    ``<block>.<shortcut name>``, so module paths match the arch graph.
    """

    def __init__(self, in_channels: int, spec: dict):
        super().__init__()
        self.body_names = []
        width = in_channels
        for conv in spec["convs"]:
            self.add_module(conv["name"], ConvBlock(width, conv))
            self.body_names.append(conv["name"])
            width = conv["out"]
        self.shortcut_name = None
        if spec["shortcut"] is not None:
            self.shortcut_name = spec["shortcut"]["name"]
            self.add_module(self.shortcut_name, ConvBlock(in_channels, spec["shortcut"]))
        self.act = nn.ReLU(inplace=True)

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
            self.add_module(conv["name"], ConvBlock(width, conv))
            self.conv_names.append(conv["name"])
            width = conv["out"]
        self.attention_name = None
        if spec["attention"] is not None:
            self.attention_name = spec["attention"]["name"]
            self.add_module(self.attention_name, ConvBlock(width, spec["attention"]))
        self.out_name = spec["out"]["name"]
        out = ConvBlock(width, spec["out"])
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
            self.trunk.add_module(conv["name"], ConvBlock(width, conv))
            width = conv["out"]
        self.heatmap = Branch(width, spec["heatmap"])
        self.paf = Branch(width, spec["paf"])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.trunk(x)
        return self.heatmap(x), self.paf(x)


def backbone_from_layers(layers: list[dict]) -> nn.Sequential:
    """The backbone as a named ``nn.Sequential`` (paths ``backbone.<layer name>``).

    Shapes: (B, 3, H, W) -> (B, C, H / 8, W / 8) for the presets.
    """
    backbone = nn.Sequential()
    width = 3
    for layer in layers:
        if layer["type"] == "conv":
            module: nn.Module = ConvBlock(width, layer)
            width = layer["out"]
        elif layer["type"] == "maxpool":
            module = MaxPool(layer)
        else:
            module = ResidualBlock(width, layer)
            width = layer["convs"][-1]["out"]
        backbone.add_module(layer["name"], module)
    return backbone


__all__ = ["Branch", "ConvBlock", "MaxPool", "ResidualBlock", "Stage", "backbone_from_layers"]
