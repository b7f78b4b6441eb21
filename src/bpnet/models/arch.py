"""The arch: a network's structure as plain data, checked, and read as a conv graph.

A model is rebuilt from its arch alone (random weights), so a checkpoint stores
``{"arch": model.arch, "state_dict": ...}`` and a pruned model (narrower convs) reloads from
its own file. The arch holds only JSON types. Input widths are not stored: they follow from
the output widths of the layers that feed each conv, so changing one ``out`` is the whole
edit a pruner makes (plus the same change on every conv coupled to it, see
:attr:`ArchGraph.coupled`).

Format (``ARCH_FORMAT`` = 1)::

    {"format": 1, "architecture": "vgg", "mtype": "default",
     "num_heatmaps": 19, "num_pafs": 38,
     "backbone": [LAYER, ...],          # applied in order; the last output is the features F
     "stages": [STAGE, ...]}            # stage 1 first

    CONV     = {"type": "conv", "name": "conv1_1", "out": 64, "kernel": 3, "stride": 1,
                "dilation": 1, "bias": false, "bn": true, "act": "relu"}
               # act is one of relu, relu6, sigmoid, tanh, none. Optional keys:
               #   "depthwise": true   one filter per input channel (out must equal the
               #                       input width; a pruner cuts both together)
               #   "norm": "batch" | "instance"   what "bn": true means: batch norm with
               #                       running statistics (default) or the input's own
               #                       statistics per sample (TF's frozen is_training=True)
               #   "padding": "same" | "tf_same"  symmetric (default) or TensorFlow's SAME,
               #                       the extra pixel at the end (sides divisible by stride)
    LAYER    = CONV
             | {"type": "maxpool", "name": "pool1", "kernel": 2, "stride": 2, "padding": 0}
             | {"type": "residual", "name": "layer2_0", "convs": [CONV, ...],
                "shortcut": CONV | null, "act": "relu"}
               # act(convs(x) + shortcut(x)); null shortcut = identity; act optional
               # (relu by default, none for MobileNetV2's linear bottlenecks)
             | {"type": "upsample_concat", "name": "feat_concat", "skip": "block_5",
                "scale": 2, "mode": "bilinear"}
               # concat[output of backbone layer `skip`, upsample(x) by `scale`]: a
               # feature-pyramid step (mode bilinear: half-pixel centres, as PyTorch's
               # interpolate; bilinear_tf1: TF1's resize_bilinear, asymmetric coordinates)
    STAGE    = {"inputs": ["features", "heatmaps", "pafs"],   # concatenated in this order
                "trunk": [CONV, ...],                         # shared by both branches
                "heatmap": BRANCH, "paf": BRANCH}
    BRANCH   = {"convs": [CONV, ...], "attention": CONV | null, "out": CONV}
               # attention: x * act(attention(x)) after the convs (TAO's self-attention)

Module paths (``<path>.weight`` in the state dict): ``backbone.<layer>``,
``backbone.<block>.<conv>``, ``stage<i>.trunk.<conv>``, ``stage<i>.<heatmap|paf>.<conv>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bpnet.config.spec import STRIDE
from bpnet.errors import SpecError

ARCH_FORMAT = 1
ACTIVATIONS = ("relu", "relu6", "sigmoid", "tanh", "none")
NORMS = ("batch", "instance")
PADDINGS = ("same", "tf_same")
UPSAMPLE_MODES = ("bilinear", "bilinear_tf1")
STAGE_INPUTS = ("features", "heatmaps", "pafs")
IMAGE = "image"  # the producer name of the network input in ConvNode.inputs

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CONV_KEYS = ("type", "name", "out", "kernel", "stride", "dilation", "bias", "bn", "act")
_CONV_OPTIONAL = {"depthwise": False, "norm": "batch", "padding": "same"}
_LAYER_KEYS = {
    "conv": _CONV_KEYS,
    "maxpool": ("type", "name", "kernel", "stride", "padding"),
    "residual": ("type", "name", "convs", "shortcut"),
    "upsample_concat": ("type", "name", "skip", "scale", "mode"),
}
_LAYER_OPTIONAL = {"conv": _CONV_OPTIONAL, "residual": {"act": "relu"}}
_TOP_KEYS = ("format", "architecture", "mtype", "num_heatmaps", "num_pafs", "backbone", "stages")


@dataclass(frozen=True)
class ConvNode:
    """One conv as a pruner sees it.

    Attributes:
        path: module path; the kernel is ``state_dict[path + ".weight"]`` of shape
            (out, in_channels, k, k).
        spec: the arch's own conv dict (not a copy): setting ``spec["out"]`` edits the arch.
        inputs: producers whose outputs are concatenated, in this order, into this conv's
            input: conv paths, or ``IMAGE``. A tensor made by an element-wise add or multiply
            is named by one conv of its coupled group.
        in_channels: width of that concatenation.
        is_output: a heatmap / PAF output conv; its width is fixed by the pose config.
    """

    path: str
    spec: dict
    inputs: tuple[str, ...]
    in_channels: int
    is_output: bool

    @property
    def depthwise(self) -> bool:
        """One filter per input channel: its channels are its input's, never decided alone."""
        return conv_option(self.spec, "depthwise")


@dataclass(frozen=True)
class ArchGraph:
    """The convs of an arch in forward order, with what feeds each and what is coupled.

    Attributes:
        convs: path -> node, in forward order.
        coupled: groups of conv paths whose outputs meet in an element-wise add (residual
            shortcut) or multiply (attention gate); each group must keep the same channel
            indices when pruned.
        features: the convs whose outputs are concatenated, in this order, into the features F
            (the backbone output); one conv for a plain backbone.
        feature_width: channels of F.
        stride: the backbone's output stride.
        input_multiple: input sides must be multiples of this (the largest stride any layer
            reaches; more than ``stride`` when a coarser map is upsampled into F).
    """

    convs: dict[str, ConvNode]
    coupled: tuple[tuple[str, ...], ...]
    features: tuple[str, ...]
    feature_width: int
    stride: int
    input_multiple: int

    def group_of(self, path: str) -> tuple[str, ...]:
        """The coupled group holding ``path`` (just ``(path,)`` when it is uncoupled)."""
        for group in self.coupled:
            if path in group:
                return group
        return (path,)


def _fail(where: str, message: str) -> SpecError:
    return SpecError(f"model arch: {where}: {message}")


def conv_option(spec: dict, key: str) -> Any:
    """An optional conv key (``depthwise``, ``norm``, ``padding``), its default when absent."""
    return spec.get(key, _CONV_OPTIONAL[key])


def _mapping(value: Any, where: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise _fail(where, f"expected a mapping with keys {', '.join(keys)}, got {value!r:.60}")
    for key in keys:
        if key not in value:
            raise _fail(f"{where}.{key}", "missing")
    for key in value:
        if key not in keys and key not in optional:
            raise _fail(f"{where}.{key}", f"unknown key; expected {', '.join(keys + optional)}")
    return value


def _choice(spec: dict, key: str, where: str, choices: tuple, default: Any) -> Any:
    value = spec.get(key, default)
    if isinstance(value, bool) is not isinstance(default, bool) or value not in choices:
        raise _fail(f"{where}.{key}", f"must be one of {', '.join(map(str, choices))}")
    return value


def _int(spec: dict, key: str, where: str, minimum: int = 1) -> int:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(f"{where}.{key}", f"must be an integer >= {minimum}, got {value!r}")
    return value


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise _fail(where, f"expected a list, got {value!r:.60}")
    return value


def _name(spec: dict, where: str, taken: set[str]) -> str:
    name = spec["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(f"{where}.name", f"must be an identifier (letters, digits, _), got {name!r}")
    if name in taken:
        raise _fail(f"{where}.name", f"{name!r} is used twice in the same block")
    taken.add(name)
    return name


class _GraphBuilder:
    """Checks conv entries while walking the arch, and records nodes and couplings."""

    def __init__(self):
        self.convs: dict[str, ConvNode] = {}
        self._parent: dict[str, str] = {}  # union-find over coupled conv paths

    def conv(
        self,
        spec: Any,
        where: str,
        path: str,
        inputs: list[str],
        in_channels: int,
        is_output: bool = False,
    ) -> int:
        """Check one conv entry, record it, and return its output width."""
        spec = _mapping(spec, where, _CONV_KEYS, tuple(_CONV_OPTIONAL))
        if spec["type"] != "conv":
            raise _fail(f"{where}.type", f"must be 'conv' here, got {spec['type']!r}")
        out = _int(spec, "out", where)
        kernel = _int(spec, "kernel", where)
        if kernel % 2 == 0:
            raise _fail(f"{where}.kernel", f"must be odd ('same' padding), got {kernel}")
        _int(spec, "stride", where)
        _int(spec, "dilation", where)
        for key in ("bias", "bn"):
            if not isinstance(spec[key], bool):
                raise _fail(f"{where}.{key}", f"must be true or false, got {spec[key]!r}")
        if spec["act"] not in ACTIVATIONS:
            raise _fail(f"{where}.act", f"must be one of {', '.join(ACTIVATIONS)}")
        _choice(spec, "norm", where, NORMS, "batch")
        _choice(spec, "padding", where, PADDINGS, "same")
        if _choice(spec, "depthwise", where, (False, True), False) and out != in_channels:
            raise _fail(
                f"{where}.out",
                f"is {out} but a depthwise conv keeps its input's {in_channels} channels",
            )
        self.convs[path] = ConvNode(path, spec, tuple(inputs), in_channels, is_output)
        return out

    def couple(self, a: str, b: str) -> None:
        if IMAGE in (a, b):
            return  # the input image cannot be pruned: nothing to keep in step
        self._parent[self._root(a)] = self._root(b)

    def _root(self, path: str) -> str:
        while self._parent.get(path, path) != path:
            path = self._parent[path]
        return path

    def groups(self) -> tuple[tuple[str, ...], ...]:
        members: dict[str, list[str]] = {}
        for path in self.convs:  # forward order inside each group
            members.setdefault(self._root(path), []).append(path)
        return tuple(tuple(g) for g in members.values() if len(g) > 1)


def arch_graph(arch: Any) -> ArchGraph:
    """Check an arch and describe its convs: what feeds each, widths, couplings.

    Args:
        arch: the plain-data description (``PoseNet.arch``; format in this module's docstring).

    Returns:
        The :class:`ArchGraph`. Its ``spec`` dicts are the arch's own: a pruner edits widths
        through them, on a deep copy of the arch it then passes to ``model_from_arch``.

    Raises:
        SpecError: naming the field (e.g. ``backbone[3].out``) that cannot be built.
    """
    arch = _mapping(arch, "<top>", _TOP_KEYS)
    if arch["format"] != ARCH_FORMAT:
        raise _fail(
            "format",
            f"version {arch['format']!r} is not readable by this bpnet (it reads "
            f"{ARCH_FORMAT}); use the bpnet version that wrote the checkpoint",
        )
    for key in ("architecture", "mtype"):
        if not isinstance(arch[key], str):
            raise _fail(key, f"must be a string, got {arch[key]!r}")
    num_heatmaps = _int(arch, "num_heatmaps", "<top>")
    num_pafs = _int(arch, "num_pafs", "<top>", minimum=2)
    if num_pafs % 2:
        raise _fail("num_pafs", f"must be even (x and y per limb), got {num_pafs}")

    graph = _GraphBuilder()
    producers, width, stride, multiple = _walk_backbone(graph, _list(arch["backbone"], "backbone"))
    if stride != STRIDE:
        raise _fail(
            "backbone",
            f"output stride is {stride}; targets and decoding need {STRIDE} "
            "(three stride-2 layers)",
        )
    maps = {"features": (producers, width)}
    feature_width = width
    stages = _list(arch["stages"], "stages")
    if not stages:
        raise _fail("stages", "needs at least one stage")
    for index, stage in enumerate(stages):
        where = f"stages[{index}]"
        stage = _mapping(stage, where, ("inputs", "trunk", "heatmap", "paf"))
        names = _list(stage["inputs"], f"{where}.inputs")
        if (
            not names
            or not all(isinstance(name, str) for name in names)
            or len(set(names)) != len(names)
        ):
            raise _fail(f"{where}.inputs", f"needs distinct entries of {STAGE_INPUTS}")
        for name in names:
            if name not in maps:
                raise _fail(
                    f"{where}.inputs",
                    f"{name!r} is not available here (choose from {', '.join(maps)})",
                )
        inputs = [path for name in names for path in maps[name][0]]
        width = sum(maps[name][1] for name in names)
        prefix = f"stage{index + 1}"
        taken: set[str] = set()
        for i, spec in enumerate(_list(stage["trunk"], f"{where}.trunk")):
            spec_where = f"{where}.trunk[{i}]"
            _mapping(spec, spec_where, _CONV_KEYS, tuple(_CONV_OPTIONAL))
            path = f"{prefix}.trunk.{_name(spec, spec_where, taken)}"
            width = graph.conv(spec, spec_where, path, inputs, width)
            inputs = [path]
        outputs = {}
        for branch, channels, what in (
            ("heatmap", num_heatmaps, "heatmap channels (joints + 1 background)"),
            ("paf", num_pafs, "PAF channels (2 x limbs)"),
        ):
            outputs[branch] = _walk_branch(
                graph, stage[branch], f"{where}.{branch}", f"{prefix}.{branch}", inputs, width
            )
            out = graph.convs[outputs[branch]].spec["out"]
            if out != channels:
                raise _fail(
                    f"{where}.{branch}.out.out",
                    f"must be {channels}, the model's {what}, got {out}",
                )
        maps["heatmaps"] = ((outputs["heatmap"],), num_heatmaps)
        maps["pafs"] = ((outputs["paf"],), num_pafs)
    return ArchGraph(
        graph.convs, graph.groups(), producers, feature_width, stride, max(multiple, stride)
    )


def _walk_backbone(graph: _GraphBuilder, layers: list) -> tuple[tuple[str, ...], int, int, int]:
    """Returns (producers of the features, their width, output stride, largest stride)."""
    if not layers:
        raise _fail("backbone", "needs at least one layer")
    producers, width, stride = (IMAGE,), 3, 1
    largest = 1
    outputs: dict[str, tuple[tuple[str, ...], int, int]] = {}  # name -> producers, width, stride
    taken: set[str] = set()
    for i, layer in enumerate(layers):
        where = f"backbone[{i}]"
        kind = layer.get("type") if isinstance(layer, dict) else None
        if kind not in _LAYER_KEYS:
            raise _fail(f"{where}.type", f"must be one of {', '.join(_LAYER_KEYS)}")
        _mapping(layer, where, _LAYER_KEYS[kind], tuple(_LAYER_OPTIONAL.get(kind, ())))
        name = _name(layer, where, taken)
        if kind == "conv":
            path = f"backbone.{name}"
            width = graph.conv(layer, where, path, list(producers), width)
            producers, stride = (path,), stride * layer["stride"]
        elif kind == "maxpool":
            kernel = _int(layer, "kernel", where)
            stride *= _int(layer, "stride", where)
            padding = _int(layer, "padding", where, minimum=0)
            if 2 * padding > kernel:
                raise _fail(f"{where}.padding", f"must be at most kernel / 2, got {padding}")
        elif kind == "residual":
            if len(producers) != 1:
                raise _fail(where, "a residual block cannot start on a concatenation")
            producer, width, block_stride = _walk_residual(
                graph, layer, where, f"backbone.{name}", producers[0], width
            )
            producers, stride = (producer,), stride * block_stride
        else:
            skip = layer["skip"]
            if skip not in outputs:
                raise _fail(f"{where}.skip", f"{skip!r} is not an earlier backbone layer")
            scale = _int(layer, "scale", where)
            if _choice(layer, "mode", where, UPSAMPLE_MODES, "bilinear") == "bilinear_tf1":
                if scale != 2:
                    raise _fail(f"{where}.scale", f"bilinear_tf1 is written for 2, got {scale}")
            skip_producers, skip_width, skip_stride = outputs[skip]
            if skip_stride * scale != stride:
                raise _fail(
                    f"{where}.scale",
                    f"upsampling stride {stride} by {scale} does not meet {skip!r} "
                    f"at stride {skip_stride}",
                )
            producers = skip_producers + producers
            width, stride = skip_width + width, skip_stride
        largest = max(largest, stride)
        outputs[name] = (producers, width, stride)
    return producers, width, stride, largest


def _walk_residual(
    graph: _GraphBuilder, block: dict, where: str, prefix: str, producer: str, width: int
) -> tuple[str, int, int]:
    _choice(block, "act", where, ACTIVATIONS, "relu")
    convs = _list(block["convs"], f"{where}.convs")
    if not convs:
        raise _fail(f"{where}.convs", "a residual block needs at least one conv")
    taken: set[str] = set()
    body, body_width, stride = producer, width, 1
    for j, spec in enumerate(convs):
        spec_where = f"{where}.convs[{j}]"
        _mapping(spec, spec_where, _CONV_KEYS, tuple(_CONV_OPTIONAL))
        path = f"{prefix}.{_name(spec, spec_where, taken)}"
        body_width = graph.conv(spec, spec_where, path, [body], body_width)
        body, stride = path, stride * spec["stride"]
    shortcut = block["shortcut"]
    if shortcut is None:
        if width != body_width or stride != 1:
            raise _fail(
                f"{where}.shortcut",
                f"is null (identity) but the block maps width {width} -> {body_width} "
                f"at stride {stride}; add a 1x1 shortcut conv or keep the widths equal",
            )
        graph.couple(body, producer)
    else:
        spec_where = f"{where}.shortcut"
        _mapping(shortcut, spec_where, _CONV_KEYS, tuple(_CONV_OPTIONAL))
        path = f"{prefix}.{_name(shortcut, spec_where, taken)}"
        out = graph.conv(shortcut, spec_where, path, [producer], width)
        if out != body_width:
            raise _fail(
                f"{spec_where}.out",
                f"is {out} but the block's last conv gives {body_width}; they are added, "
                "so they must be equal (prune them together)",
            )
        if shortcut["stride"] != stride:
            raise _fail(f"{spec_where}.stride", f"must equal the block's stride {stride}")
        graph.couple(body, path)
    return body, body_width, stride


def _walk_branch(
    graph: _GraphBuilder, branch: Any, where: str, prefix: str, inputs: list[str], width: int
) -> str:
    """Check one stage branch; returns the path of its output conv."""
    branch = _mapping(branch, where, ("convs", "attention", "out"))
    taken: set[str] = set()
    for i, spec in enumerate(_list(branch["convs"], f"{where}.convs")):
        spec_where = f"{where}.convs[{i}]"
        _mapping(spec, spec_where, _CONV_KEYS, tuple(_CONV_OPTIONAL))
        path = f"{prefix}.{_name(spec, spec_where, taken)}"
        width = graph.conv(spec, spec_where, path, inputs, width)
        inputs = [path]
    if branch["attention"] is not None:
        spec_where = f"{where}.attention"
        spec = _mapping(branch["attention"], spec_where, _CONV_KEYS, tuple(_CONV_OPTIONAL))
        if len(inputs) != 1:
            raise _fail(spec_where, "needs a conv before it in the stage (it gates that output)")
        path = f"{prefix}.{_name(spec, spec_where, taken)}"
        out = graph.conv(spec, spec_where, path, inputs, width)
        if out != width:
            raise _fail(
                f"{spec_where}.out",
                f"is {out} but it gates a {width}-channel tensor; they are multiplied, "
                "so they must be equal (prune them together)",
            )
        graph.couple(inputs[0], path)
    spec_where = f"{where}.out"
    spec = _mapping(branch["out"], spec_where, _CONV_KEYS, tuple(_CONV_OPTIONAL))
    path = f"{prefix}.{_name(spec, spec_where, taken)}"
    graph.conv(spec, spec_where, path, inputs, width, is_output=True)
    return path
