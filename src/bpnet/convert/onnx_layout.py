"""Any OpenPose-family ONNX model -> a bpnet ONNX model, by graph surgery from a layout file.

A network trained elsewhere (tf-pose-estimation, lightweight OpenPose, a tf2onnx conversion...)
already computes heatmaps and PAFs; what differs is around it: the input's channel order and
normalisation, which outputs hold the maps, and the order of their channels. A YAML *layout
file* says all of that, and :func:`import_onnx` rewrites the graph so it follows bpnet's
contract (:class:`~bpnet.inference.model_io.ModelIO`):

* a new input ``image``: raw **RGB** pixels 0..255, float32, in the model's own layout, turned
  in-graph into what the model wants, ``model_input = (pixel[channel_order] - mean) / std``;
* outputs ``heatmaps_stage<N>`` and ``pafs_stage<N>``: the model's channels gathered into the
  pose config's order (joints then background; limb i's x then y), in the input's layout;
* bpnet metadata (contract, skeleton, a default spec), so ``bpnet evaluate -m OUT.onnx`` and
  ``bpnet inference -m OUT.onnx`` run it unchanged.

Layout file (every key but ``outputs.*.name`` has a default)::

    input:
      name: image            # the model's input; null: its only input
      layout: NCHW           # NCHW or NHWC
      channel_order: BGR     # what the model was trained on: BGR or RGB
      mean: [0.0, 0.0, 0.0]  # per channel, in the model's channel order
      std: [1.0, 1.0, 1.0]   # model_input = (pixel - mean) / std
      size_multiple: 16      # input height and width must be multiples of it
    outputs:
      layout: NCHW           # the outputs' layout; null: the input's
      heatmaps: {name: maps, channels: [0, 19]}   # [start, end) on the channel axis
      pafs: {name: maps, channels: [19, 57]}      # the same tensor may hold both
    heatmap_order: [0, 1, ...]           # block channel of each pose-config joint (+ background)
    paf_order: [[12, 13], [20, 21], ...] # block channels (x, y) of each pose-config limb
    stride: 8                # input pixels per map cell
    stage: 6                 # the stage these maps come from (the last one)
    pose_config: null        # a pose-config YAML (relative to the working directory); null:
                             # bpnet's default 18-joint skeleton

See docs/IMPORT.md ("Importing an ONNX model") for how to write one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from bpnet.config import STRIDE, ExperimentSpec
from bpnet.config.loader import from_dict
from bpnet.errors import BpnetError, SpecError
from bpnet.inference.model_io import ModelIO
from bpnet.io import read_yaml
from bpnet.pose import PoseConfig, load_pose_config

INPUT_NAME = "image"  # raw pixels in, as the deployable model's input
_PREFIX = "bpnet_import/"  # names of the tensors and nodes the import adds or renames
_TRIAL_SIDE = 128  # a trial run's input side (rounded up to the size multiple)


@dataclass(frozen=True)
class LayoutInput:
    """The model's input and the pre-processing it was trained with.

    Attributes:
        name: the model's input tensor; None: its only input.
        layout: ``NCHW`` or ``NHWC``.
        channel_order: ``BGR`` or ``RGB``, the pixels the model was trained on.
        mean: per-channel value subtracted, in the model's channel order.
        std: per-channel divisor, in the model's channel order.
        size_multiple: input height and width must be multiples of it.
    """

    name: str | None = None
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["BGR", "RGB"] = "BGR"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    size_multiple: int = 8


@dataclass(frozen=True)
class LayoutSlice:
    """Where one kind of map is: an output tensor and a channel range of it.

    Attributes:
        name: the model's output tensor.
        channels: ``[start, end)`` on the channel axis; None: every channel.
    """

    name: str | None = None
    channels: tuple[int, int] | None = None


@dataclass(frozen=True)
class LayoutOutputs:
    """The model's outputs.

    Attributes:
        layout: ``NCHW`` or ``NHWC``; None: the input's layout.
        heatmaps: where the heatmaps are.
        pafs: where the PAFs are.
    """

    layout: Literal["NCHW", "NHWC"] | None = None
    heatmaps: LayoutSlice = field(default_factory=LayoutSlice)
    pafs: LayoutSlice = field(default_factory=LayoutSlice)


@dataclass(frozen=True)
class OnnxLayout:
    """A layout file: how a foreign OpenPose-family ONNX model maps onto bpnet's contract.

    Attributes:
        input: the input and its pre-processing.
        outputs: where the maps are.
        heatmap_order: for each pose-config joint, then the background, the channel of the
            heatmap block holding it (0-based within ``outputs.heatmaps.channels``); None:
            the block's own order. Leave the background out (J entries) for a model without.
        paf_order: for each pose-config limb, the (x, y) channels of the PAF block holding it;
            None: the block's own order.
        stride: input pixels per map cell.
        stage: the stage the maps come from, taken as the network's last.
        pose_config: a pose-config YAML file; None: bpnet's default 18-joint skeleton.
    """

    input: LayoutInput = field(default_factory=LayoutInput)
    outputs: LayoutOutputs = field(default_factory=LayoutOutputs)
    heatmap_order: tuple[int, ...] | None = None
    paf_order: tuple[tuple[int, int], ...] | None = None
    stride: int = 8
    stage: int = 1
    pose_config: str | None = None


def read_layout(path: str | Path) -> OnnxLayout:
    """Read a layout file (types and keys checked; the model-dependent checks come later).

    Raises:
        SpecError: a missing file, bad YAML, an unknown key or a value of the wrong type.
    """
    raw = read_yaml(path, "layout file")
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping with keys input, outputs, heatmap_order...")
    layout = from_dict(OnnxLayout, raw, str(path))
    fail = _failer(path)
    inp = layout.input
    if inp.size_multiple < 1:
        raise fail("input.size_multiple", f"must be >= 1, got {inp.size_multiple}")
    if not all(s != 0 for s in inp.std):
        raise fail("input.std", f"divisors must be non-zero, got {list(inp.std)}")
    if layout.stride < 1:
        raise fail("stride", f"must be >= 1, got {layout.stride}")
    if inp.size_multiple % layout.stride:
        raise fail(
            "input.size_multiple",
            f"{inp.size_multiple} is not a multiple of the stride {layout.stride}; inputs "
            "must give whole map cells",
        )
    if layout.stage < 1:
        raise fail("stage", f"must be a 1-based stage number, got {layout.stage}")
    for kind in ("heatmaps", "pafs"):
        where: LayoutSlice = getattr(layout.outputs, kind)
        if not where.name:
            raise fail(f"outputs.{kind}.name", "missing; give the model output that holds them")
        if where.channels is not None and not 0 <= where.channels[0] < where.channels[1]:
            raise fail(
                f"outputs.{kind}.channels",
                f"expected [start, end) with 0 <= start < end, got {list(where.channels)}",
            )
    return layout


def import_onnx(
    model_path: str | Path,
    layout_path: str | Path,
    out_path: str | Path,
    *,
    force: bool = False,
    key: str | None = None,
    say: Callable[[str], None] = print,
) -> ModelIO:
    """Rewrite a foreign OpenPose-family ONNX model so bpnet runs it (module docstring).

    Args:
        model_path: the ONNX model trained elsewhere.
        layout_path: its layout file (module docstring; ``specs/layouts/`` has examples).
        out_path: the ``.onnx`` file to write (atomically).
        force: overwrite ``out_path`` if it exists.
        key: encrypt the output with this key (``-k``; it may then end in ``.etlt``).
        say: where the one-line summary goes.

    Returns:
        The contract written into the file.

    Raises:
        BpnetError: a missing or unreadable model, an existing output without ``force``, or
            a layout that does not fit the model (one line naming the layout file, the field
            and the fix; a wrong output name lists the model's outputs).

    Example:
        >>> import_onnx("pretrained/tfpose_mobilenet_v2_small/model.onnx",  # doctest: +SKIP
        ...             "specs/layouts/tfpose_mobilenet_v2_small.yaml", "tfpose.onnx")
    """
    import onnx

    from bpnet.export.onnx_export import save_onnx, set_metadata

    model_path, layout_path, out_path = Path(model_path), Path(layout_path), Path(out_path)
    if out_path.suffix.lower() not in ((".onnx", ".etlt") if key is not None else (".onnx",)):
        raise BpnetError(f"{out_path}: the output must be an .onnx file (.etlt with -k)")
    if out_path.exists() and not force:
        raise BpnetError(f"{out_path} exists; pass --force to overwrite it")
    layout = read_layout(layout_path)
    pose = _pose(layout, layout_path)
    proto = _load(model_path)
    fail = _failer(layout_path)
    graph = proto.graph
    inp = _find_input(graph, layout, fail)
    size = _fixed_size(inp, layout, fail)
    found = _trial_run(model_path, inp.name, layout, size, fail)  # channels of each output
    heat_index, paf_index = _channel_indices(layout, pose, found, fail)

    n = layout.stage
    io_ = ModelIO(
        input_name=INPUT_NAME,
        layout=layout.input.layout,
        input_dtype="float32",
        raw_input=True,
        size=size,
        heatmap_outputs=(f"heatmaps_stage{n}",),
        paf_outputs=(f"pafs_stage{n}",),
        stages=(n,),
        num_stages=n,
        stride=layout.stride,
        output_order=(f"heatmaps_stage{n}", f"pafs_stage{n}"),
        size_multiple=layout.input.size_multiple,
    )
    _rewrite(proto, inp, layout, heat_index, paf_index, io_)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        message = " ".join(str(err).split())[:300]
        raise BpnetError(
            f"{model_path}: the rewritten graph is not valid ONNX ({message})"
        ) from None
    spec = _spec(size, layout.input.size_multiple)
    source = f"import_onnx {model_path} (layout {layout_path})"
    set_metadata(proto, io_, pose, spec, data_type="fp32", source=source)
    save_onnx(proto, out_path, key=key)
    raw = ", ".join(
        [layout.input.layout, f"sides multiple of {layout.input.size_multiple}"]
        + ([f"fixed {size[0]}x{size[1]}"] if size else [])
    )
    say(
        f"wrote {out_path}: input {INPUT_NAME!r} (raw RGB 0..255 float32, {raw}) -> "
        f"{io_.heatmap_outputs[0]} ({len(heat_index)}), {io_.paf_outputs[0]} ({len(paf_index)}), "
        f"stride {layout.stride}, skeleton {pose.name}"
    )
    return io_


# checks ---------------------------------------------------------------------------------------


def _failer(source: str | Path) -> Callable[[str, str], SpecError]:
    def fail(key: str, message: str) -> SpecError:
        return SpecError(f"{source}: {key}: {message}")

    return fail


def _pose(layout: OnnxLayout, layout_path: Path) -> PoseConfig:
    if layout.pose_config is None:
        return load_pose_config()
    if not Path(layout.pose_config).is_file():
        raise SpecError(
            f"{layout_path}: pose_config: {layout.pose_config} not found; give a path relative "
            "to the working directory, or an absolute one"
        )
    return load_pose_config(layout.pose_config)


def _load(model_path: Path):
    import onnx

    try:
        return onnx.load(str(model_path))
    except FileNotFoundError:
        raise BpnetError(f"{model_path}: model file not found; check the path") from None
    except Exception as err:  # onnx raises DecodeError, ValueError, ... for a damaged file
        raise BpnetError(
            f"{model_path}: not a readable ONNX model ({type(err).__name__}); check the file"
        ) from None


def _find_input(graph, layout: OnnxLayout, fail):
    """The model's input the layout names (or its only one), checked to be 4-D float."""
    import onnx

    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    names = ", ".join(repr(i.name) for i in inputs)
    wanted = layout.input.name
    if wanted is None:
        if len(inputs) != 1:
            raise fail("input.name", f"the model has {len(inputs)} inputs ({names}); name one")
        inp = inputs[0]
    else:
        matches = [i for i in inputs if i.name == wanted]
        if not matches:
            raise fail("input.name", f"the model has no input {wanted!r}; its inputs: {names}")
        inp = matches[0]
    tensor = inp.type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        kind = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise fail("input.name", f"{inp.name!r} is {kind}; only float32 inputs can be imported")
    dims = _dims(inp)
    if dims is not None and len(dims) != 4:
        raise fail(
            "input.name", f"{inp.name!r} has {len(dims)} dimensions; expected 4 (N, C, H, W)"
        )
    return inp


def _dims(value_info) -> list[int | None] | None:
    """A tensor's dimensions (None where dynamic), or None when its rank is unknown."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


def _spatial(layout: str) -> tuple[int, int, int]:
    """(channel, height, width) axes of a 4-D tensor."""
    return (1, 2, 3) if layout == "NCHW" else (3, 1, 2)


def _fixed_size(inp, layout: OnnxLayout, fail) -> tuple[int, int] | None:
    """The model's fixed (height, width), or None when both are dynamic."""
    dims = _dims(inp) or [None] * 4
    c, h, w = _spatial(layout.input.layout)
    other = "NHWC" if layout.input.layout == "NCHW" else "NCHW"
    if dims[c] not in (None, 3) or (dims[c] is None and dims[_spatial(other)[0]] == 3):
        raise fail(
            "input.layout",
            f"{layout.input.layout} puts the channels on axis {c}, but {inp.name!r} has "
            f"{dims[c] or 'a dynamic size'} there (shape {_show_dims(dims)}); try {other}",
        )
    if dims[h] is None and dims[w] is None:
        return None
    if dims[h] is None or dims[w] is None:
        raise fail(
            "input.name",
            f"{inp.name!r} ({_show_dims(dims)}) fixes one side only; bpnet needs both fixed or "
            "both dynamic (fix the model's input shape before importing)",
        )
    size = (dims[h], dims[w])
    m = layout.input.size_multiple
    if size[0] % m or size[1] % m:
        raise fail(
            "input.size_multiple",
            f"the model's input is fixed at {size[0]}x{size[1]}, not a multiple of {m}; "
            "set size_multiple to a divisor of both sides",
        )
    return size


def _show_dims(dims: list[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def _trial_run(model_path: Path, input_name: str, layout: OnnxLayout, size, fail) -> dict:
    """Run the original model once on zeros and check the named outputs' real shapes.

    Returns:
        ``{"heatmaps": channels, "pafs": channels}`` of the tensors that hold them.

    Raises:
        SpecError: a named output does not exist (lists them), or the maps are not at the
            layout's stride (suggests the stride, or the other output layout).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT's own Fail / InvalidGraph types
        message = " ".join(str(err).split())[:300]
        raise BpnetError(f"{model_path}: ONNX Runtime cannot load the model ({message})") from None
    outputs = [o.name for o in session.get_outputs()]
    for kind in ("heatmaps", "pafs"):
        name = getattr(layout.outputs, kind).name
        if name not in outputs:
            listed = ", ".join(repr(o) for o in outputs)
            raise fail(
                f"outputs.{kind}.name", f"the model has no output {name!r}; its outputs: {listed}"
            )
    m = layout.input.size_multiple
    height, width = size or (m * math.ceil(_TRIAL_SIDE / m),) * 2
    shape = (1, 3, height, width) if layout.input.layout == "NCHW" else (1, height, width, 3)
    wanted = sorted({layout.outputs.heatmaps.name, layout.outputs.pafs.name})
    try:
        values = session.run(wanted, {input_name: np.zeros(shape, np.float32)})
    except Exception as err:
        message = " ".join(str(err).split())[:300]
        raise fail(
            "input",
            f"{model_path} does not run on a {_show_dims(list(shape))} input ({message}); "
            "check layout and size_multiple",
        ) from None
    shapes = dict(zip(wanted, (v.shape for v in values), strict=True))
    out_layout = layout.outputs.layout or layout.input.layout
    c, h, w = _spatial(out_layout)
    found = {}
    for kind in ("heatmaps", "pafs"):
        name = getattr(layout.outputs, kind).name
        dims = shapes[name]
        if len(dims) != 4:
            raise fail(f"outputs.{kind}.name", f"{name!r} has shape {dims}; expected 4-D maps")
        if (dims[h] * layout.stride, dims[w] * layout.stride) != (height, width):
            ratio = f"{height / dims[h]:g} x {width / dims[w]:g}"
            raise fail(
                "stride",
                f"{layout.stride}, but a {height}x{width} input gives {name!r} of shape "
                f"{tuple(dims)} (read as {out_layout}: a stride of {ratio}); set stride, or "
                "outputs.layout if the channels are on the other axis",
            )
        found[kind] = dims[c]
    return found


def _check_permutation(values: list[int], count: int, key: str, what: str, fail) -> None:
    if sorted(values) != list(range(count)):
        missing = sorted(set(range(count)) - set(values))
        twice = sorted({v for v in values if values.count(v) > 1})
        outside = sorted({v for v in values if not 0 <= v < count})
        detail = "; ".join(
            f"{text} {items if len(items) <= 8 else [*items[:8], '...']}"
            for text, items in (("missing", missing), ("listed twice", twice), ("outside", outside))
            if items
        )
        raise fail(
            key,
            f"must list each channel 0..{count - 1} of the {what} block exactly once (a "
            f"permutation): {detail}",
        )


def _channel_indices(
    layout: OnnxLayout, pose: PoseConfig, found: dict, fail
) -> tuple[list[int], list[int]]:
    """The model's channel of each bpnet heatmap and PAF channel, in bpnet's order."""
    out = []
    for kind, want, what in (
        ("heatmaps", (pose.num_heatmap_channels, pose.num_joints), "heatmap"),
        ("pafs", (pose.num_paf_channels,), "PAF"),
    ):
        where: LayoutSlice = getattr(layout.outputs, kind)
        have = found[kind]
        start, end = where.channels or (0, have)
        key = f"outputs.{kind}.channels"
        if end > have:
            raise fail(key, f"[{start}, {end}) but {where.name!r} has {have} channels")
        count = end - start
        if count not in want:
            need = " or ".join(str(w) for w in want)
            raise fail(
                key,
                f"[{start}, {end}) holds {count} channels but skeleton {pose.name!r} needs "
                f"{need} {what} channels; fix the range or set pose_config",
            )
        if kind == "heatmaps":
            order = list(layout.heatmap_order or range(count))
            if len(order) != count:
                raise fail(
                    "heatmap_order",
                    f"lists {len(order)} channels but outputs.heatmaps.channels holds {count}",
                )
            _check_permutation(order, count, "heatmap_order", what, fail)
        else:
            pairs = layout.paf_order or [(2 * i, 2 * i + 1) for i in range(count // 2)]
            if len(pairs) != pose.num_limbs:
                raise fail(
                    "paf_order",
                    f"lists {len(pairs)} limbs but skeleton {pose.name!r} has {pose.num_limbs}",
                )
            order = [c for pair in pairs for c in pair]
            _check_permutation(order, count, "paf_order", what, fail)
        out.append([start + i for i in order])
    return out[0], out[1]


# graph surgery --------------------------------------------------------------------------------


def _rewrite(proto, inp, layout: OnnxLayout, heat_index, paf_index, io_: ModelIO) -> None:
    """Replace the model's input and outputs by bpnet's, in place."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    model_input = _PREFIX + "model_input"
    renamed = {}
    for name in (INPUT_NAME, *io_.output_order, model_input):
        if name != inp.name and name in _all_names(graph):
            renamed[name] = _PREFIX + "model/" + name
            _rename(graph, name, renamed[name])  # free the name bpnet needs
    _rename(graph, inp.name, model_input)
    new_input = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, None)
    new_input.type.CopyFrom(inp.type)
    graph.input.remove(inp)
    graph.input.insert(0, new_input)

    nodes, consts = [], []

    def const(name: str, array: np.ndarray) -> str:
        consts.append(numpy_helper.from_array(array, _PREFIX + name))
        return _PREFIX + name

    # raw RGB pixels -> what the model was trained on
    in_c = _spatial(layout.input.layout)[0]
    broadcast = [1, 3, 1, 1] if layout.input.layout == "NCHW" else [1, 1, 1, 3]
    x = INPUT_NAME
    steps = []
    if layout.input.channel_order == "BGR":
        steps.append(("Gather", [const("bgr", np.array([2, 1, 0], np.int64))], {"axis": in_c}))
    if any(v != 0 for v in layout.input.mean):
        mean = np.array(layout.input.mean, np.float32).reshape(broadcast)
        steps.append(("Sub", [const("mean", mean)], {}))
    if any(v != 1 for v in layout.input.std):
        std = np.array(layout.input.std, np.float32).reshape(broadcast)
        steps.append(("Div", [const("std", std)], {}))
    if not steps:
        steps.append(("Identity", [], {}))
    for i, (op, extra, attrs) in enumerate(steps):
        y = model_input if i == len(steps) - 1 else f"{_PREFIX}pre{i}"
        nodes.append(helper.make_node(op, [x, *extra], [y], name=f"{_PREFIX}{op}{i}", **attrs))
        x = y

    # the model's channels -> bpnet's order, in the input's layout
    out_layout = layout.outputs.layout or layout.input.layout
    out_c = _spatial(out_layout)[0]
    perm = None
    if out_layout != layout.input.layout:
        perm = [0, 2, 3, 1] if out_layout == "NCHW" else [0, 3, 1, 2]
    new_outputs = []
    for kind, source, index, target in (
        ("heatmaps", layout.outputs.heatmaps.name, heat_index, io_.heatmap_outputs[0]),
        ("pafs", layout.outputs.pafs.name, paf_index, io_.paf_outputs[0]),
    ):
        source = renamed.get(source, source)
        gathered = target if perm is None else f"{_PREFIX}{kind}_gathered"
        indices = const(f"{kind}_channels", np.array(index, np.int64))
        nodes.append(
            helper.make_node(
                "Gather", [source, indices], [gathered], name=f"{_PREFIX}{kind}", axis=out_c
            )
        )
        if perm is not None:
            nodes.append(
                helper.make_node(
                    "Transpose", [gathered], [target], name=f"{_PREFIX}{kind}_layout", perm=perm
                )
            )
        new_outputs.append(
            helper.make_tensor_value_info(
                target, TensorProto.FLOAT, _output_shape(inp, len(index), io_)
            )
        )
    nodes = nodes[: len(steps)] + list(graph.node) + nodes[len(steps) :]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(consts)
    del graph.output[:]
    graph.output.extend(new_outputs)
    _prune(graph)


def _output_shape(inp, channels: int, io_: ModelIO) -> list:
    """An output's shape in the contract's layout (batch as the input's, sides over stride)."""
    dims = _dims(inp) or [None] * 4
    batch = inp.type.tensor_type.shape.dim[0].dim_param if dims[0] is None else dims[0]
    if io_.size is None:
        sides = ["out_height", "out_width"]
    else:
        sides = [side // io_.stride for side in io_.size]
    batch = batch or "batch"
    if io_.layout == "NCHW":
        return [batch, channels, *sides]
    return [batch, *sides, channels]


def _all_names(graph) -> set[str]:
    names = {t.name for t in graph.initializer}
    names |= {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    for node in graph.node:
        names |= set(node.input) | set(node.output)
    return names


def _subgraphs(node):
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def _rename(graph, old: str, new: str) -> None:
    """Rename a tensor everywhere it appears (subgraphs included, which may read it)."""
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new
        for sub in _subgraphs(node):
            _rename(sub, old, new)
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        if value.name == old:
            value.name = new


def _reads(node) -> set[str]:
    """Every tensor a node reads, including those its subgraphs read from outside."""
    names = set(node.input)
    for sub in _subgraphs(node):
        for inner in sub.node:
            names |= _reads(inner)
    return names


def _prune(graph) -> None:
    """Drop the nodes, weights and shape records no output needs (the unused original
    outputs and whatever only they used)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed |= _reads(node)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    weights = {t.name for t in graph.initializer}
    # weights listed as graph inputs (older exporters) go with their initializer
    inputs = [i for i in graph.input if i.name in weights and i.name not in needed]
    for container, unused in (
        (graph.initializer, [t for t in graph.initializer if t.name not in needed]),
        (graph.value_info, [v for v in graph.value_info if v.name not in needed]),
        (graph.input, inputs),
    ):
        for t in unused:
            container.remove(t)


def _spec(size: tuple[int, int] | None, multiple: int) -> ExperimentSpec:
    """bpnet's default spec with an input size the model accepts (its fixed size, or 368x368
    rounded up to the size multiple). Only the input size and the normalisation are read for
    an imported model; the normalisation is unused (raw input, normalised in-graph)."""
    spec = ExperimentSpec()
    height, width = size or (max(multiple, math.ceil(368 / multiple) * multiple),) * 2
    if height % STRIDE or width % STRIDE:  # the spec's sides are multiples of 8
        return spec
    image_config = replace(
        spec.dataloader.image_config,
        image_dims=replace(spec.dataloader.image_config.image_dims, height=height, width=width),
    )
    return replace(spec, dataloader=replace(spec.dataloader, image_config=image_config))
