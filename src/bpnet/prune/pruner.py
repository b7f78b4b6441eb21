"""Structured filter pruning: TAO's decision rules, applied with torch-pruning's dependency graph.

Two steps, kept apart so that the rules can be read (and tested) without the surgery:

1. :func:`plan_pruning` decides which filters (output channels) of every conv survive, by TAO
   BodyPoseNet's rules (``nvidia_tao_tf1/core/pruning``, "min weight" method):

   * the statistic of a filter is the L2 norm of its kernel, shape (in, k, k) -> one number
     (biases and batch norm do not count);
   * it is normalised per layer: ``max`` divides by the layer's largest norm (every statistic
     is then in [0, 1], so a threshold >= 1 leaves every layer at ``min_num_filters``); ``L2``
     divides by the L2 norm of the layer's norms and multiplies by their number;
   * filters whose statistic is strictly above ``threshold`` are kept; at least
     ``min_num_filters`` (or the layer's width if it is smaller), then rounded up to a multiple
     of ``granularity`` (at most the layer's width); the highest statistics win;
   * convs whose outputs meet in an element-wise add (residual shortcut) or multiply (attention
     gate) must keep the same channels: their statistics are merged per channel first (union =
     max, intersection = min, arithmetic or geometric mean) and one decision serves them all;
   * output convs (heatmaps, PAFs) are never pruned, nor are excluded layers; a coupled group
     with an excluded member keeps all its channels (as TAO does).

2. :func:`apply_plan` removes those channels with torch-pruning's ``DependencyGraph``: pruning
   a conv's output channels also removes its batch norm channels and the matching input
   channels of every consumer, through concatenations (stage inputs) and element-wise ops.
   The new widths are then written into the arch (``spec["out"]``), and the pruned model is
   rebuilt from that arch and its weights loaded with :func:`load_state_checked`: the result is
   a plain, smaller, dense :class:`PoseNet` that reloads from its own checkpoint. Before
   the cut, the constant a removed filter still outputs is folded into its consumers' biases
   (:func:`compensate_removed_outputs`; not in TAO, and no decision changes).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning.pruner import function as tp_function

from bpnet.errors import BpnetError
from bpnet.models import PoseNet, arch_graph, load_state_checked, model_from_arch
from bpnet.models.arch import IMAGE
from bpnet.models.blocks import ConvBlock, DepthwiseConvBlock

EQUALIZATION_CRITERIA = ("union", "intersection", "arithmetic_mean", "geometric_mean")
NORMALIZERS = ("max", "L2")
# input side of the trace that builds the dependency graph: shapes do not matter, only
# which op feeds which; a multiple of 8 keeps every backbone's stride arithmetic exact
_TRACE_SIDE = 64


@dataclass(frozen=True)
class PruneSettings:
    """TAO's ``bpnet prune`` options (same names, same defaults).

    Attributes:
        threshold: ``-pth``; keep filters whose normalised norm is strictly above it.
        equalization_criterion: ``-eq``; how coupled convs merge their statistics.
        granularity: ``-pg``; kept widths are rounded up to a multiple of it.
        min_num_filters: ``-nf``; no pruned layer gets narrower than this.
        normalizer: ``-n``; ``max`` or ``L2`` (see the module docstring).
        excluded_layers: ``-el``; conv paths (``backbone.conv1_1``, ``stage2.trunk.conv1``,
            as the report lists them) that keep every filter.
    """

    threshold: float = 0.1
    equalization_criterion: str = "union"
    granularity: int = 8
    min_num_filters: int = 16
    normalizer: str = "max"
    excluded_layers: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise BpnetError(f"pruning threshold: expected a number, got {self.threshold!r}")
        if not math.isfinite(self.threshold) or self.threshold < 0:
            raise BpnetError(
                f"pruning threshold (-pth) must be a finite number >= 0, got {self.threshold}; "
                "typical values are 0.01 .. 0.5 (see bpnet prune --sweep)"
            )
        if self.equalization_criterion not in EQUALIZATION_CRITERIA:
            raise BpnetError(
                f"equalization criterion (-eq) {self.equalization_criterion!r} is unknown; "
                f"choose one of {', '.join(EQUALIZATION_CRITERIA)}"
            )
        if self.normalizer not in NORMALIZERS:
            raise BpnetError(
                f"normalizer (-n) {self.normalizer!r} is unknown; choose one of "
                f"{', '.join(NORMALIZERS)}"
            )
        for name, value in (
            ("pruning granularity (-pg)", self.granularity),
            ("minimum number of filters (-nf)", self.min_num_filters),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BpnetError(f"{name} must be an integer >= 1, got {value!r}")
        object.__setattr__(self, "excluded_layers", tuple(self.excluded_layers))


@dataclass(frozen=True)
class LayerPlan:
    """What happens to one conv.

    Attributes:
        path: module path (``stage2.heatmap.conv6``).
        width: output channels before pruning.
        kept: indices of the kept filters, ascending (all of them when not pruned).
        status: ``pruned`` (decided by the rules; may still keep all), ``output``,
            ``excluded``, or ``coupled-excluded`` (coupled to an excluded layer).
        group: the coupled group this conv was decided with (just itself when uncoupled).
    """

    path: str
    width: int
    kept: tuple[int, ...]
    status: str
    group: tuple[str, ...]


@dataclass(frozen=True)
class PruningPlan:
    """Per-conv decisions, in forward order (``layers[path]``)."""

    layers: dict[str, LayerPlan]
    settings: PruneSettings

    def widths(self) -> dict[str, int]:
        """conv path -> kept width."""
        return {path: len(layer.kept) for path, layer in self.layers.items()}


def filter_norms(kernel: Tensor) -> np.ndarray:
    """L2 norm of every filter of a conv kernel.

    Args:
        kernel: (out, in, k, k) conv weight.

    Returns:
        (out,) float64 norms.
    """
    return kernel.detach().to("cpu", torch.float64).flatten(1).norm(dim=1).numpy()


def normalize_stats(norms: np.ndarray, normalizer: str) -> np.ndarray:
    """Per-layer normalisation of filter norms (TAO's ``normalize_stat``).

    Args:
        norms: (C,) filter norms of one layer.
        normalizer: ``max`` (divide by the largest; results in [0, 1]) or ``L2`` (divide by
            the L2 norm of ``norms`` and multiply by C).

    Returns:
        (C,) statistics; all zero for a layer whose kernels are all zero.
    """
    scale = norms.max() if normalizer == "max" else np.sqrt(np.sum(norms**2)) / len(norms)
    if scale == 0:
        return np.zeros_like(norms)
    return norms / scale


def merge_stats(stats: Sequence[np.ndarray], criterion: str) -> np.ndarray:
    """Merge the statistics of coupled convs per channel (TAO's ``_merge_layerwise_stats``).

    Args:
        stats: one (C,) array per coupled conv.
        criterion: ``union`` (max: a channel lives if any conv needs it), ``intersection``
            (min: it lives only if every conv needs it), ``arithmetic_mean``,
            ``geometric_mean`` (a zero anywhere gives zero).

    Returns:
        (C,) merged statistics.
    """
    stacked = np.stack(stats)  # (G, C)
    if criterion == "union":
        return stacked.max(axis=0)
    if criterion == "intersection":
        return stacked.min(axis=0)
    if criterion == "arithmetic_mean":
        return stacked.mean(axis=0)
    if criterion == "geometric_mean":
        with np.errstate(divide="ignore"):  # log(0) = -inf, and exp(-inf) = 0 as wanted
            return np.exp(np.log(stacked).mean(axis=0))
    raise ValueError(f"unknown equalization criterion {criterion!r}")


def retained_indices(
    stat: np.ndarray, *, threshold: float, min_num_filters: int, granularity: int
) -> tuple[int, ...]:
    """Filters to keep (TAO's ``_get_retained_idx``).

    Args:
        stat: (C,) normalised (and possibly merged) statistics.
        threshold: keep statistics strictly above it.
        min_num_filters: keep at least this many (at most C).
        granularity: round the count up to a multiple of it (at most C).

    Returns:
        Ascending indices of the kept filters: the highest statistics, ties to the lower index.
    """
    depth = len(stat)
    count = max(int(np.sum(stat > threshold)), min(min_num_filters, depth))
    count = min(math.ceil(count / granularity) * granularity, depth)
    order = np.argsort(-stat, kind="stable")
    return tuple(sorted(int(i) for i in order[:count]))


def arch_with_widths(arch: dict, widths: dict[str, int]) -> dict:
    """A copy of ``arch`` whose convs have the given output widths (the input widths follow).

    Args:
        arch: a network's plain-data description.
        widths: conv path -> output channels; convs not named keep theirs.
    """
    arch = copy.deepcopy(arch)
    for path, node in arch_graph(arch).convs.items():
        node.spec["out"] = widths.get(path, node.spec["out"])
    return arch


def plan_pruning(model: PoseNet, settings: PruneSettings) -> PruningPlan:
    """Decide, by TAO's rules (module docstring), which filters of every conv survive.

    Args:
        model: the trained network (its ``arch`` gives the convs and their couplings).
        settings: threshold, equalisation, granularity, minimum, normaliser, exclusions.

    Returns:
        The plan: one :class:`LayerPlan` per conv, in forward order.

    Raises:
        BpnetError: an excluded layer name that is not a conv of this model.
    """
    graph = arch_graph(model.arch)
    unknown = [name for name in settings.excluded_layers if name not in graph.convs]
    if unknown:
        raise BpnetError(
            f"excluded layer {unknown[0]!r} is not a conv of this model; its convs are "
            f"{', '.join(graph.convs)}"
        )
    follower = next((n for n in settings.excluded_layers if graph.convs[n].depthwise), None)
    if follower is not None:
        producers = ", ".join(graph.convs[follower].inputs)
        raise BpnetError(
            f"excluded layer {follower!r} is a depthwise conv: it keeps the channels of what it "
            f"reads; exclude that instead ({producers})"
        )
    modules = dict(model.named_modules())
    excluded = set(settings.excluded_layers)
    layers: dict[str, LayerPlan] = {}
    for path, node in graph.convs.items():
        if path in layers:
            continue
        group = graph.group_of(path)
        width = node.spec["out"]
        if node.depthwise:
            if len(group) > 1:
                raise BpnetError(f"{path}: a depthwise conv whose output is added is not supported")
            kept = _follow_inputs(node, layers)
            layers[path] = LayerPlan(path, width, kept, "depthwise", group)
            continue
        if any(graph.convs[member].is_output for member in group):
            statuses = dict.fromkeys(group, "output")
            kept = tuple(range(width))
        elif excluded & set(group):
            statuses = {m: "excluded" if m in excluded else "coupled-excluded" for m in group}
            kept = tuple(range(width))
        else:
            stats = [
                normalize_stats(filter_norms(modules[member].weight), settings.normalizer)
                for member in group
            ]
            merged = merge_stats(stats, settings.equalization_criterion)
            kept = retained_indices(
                merged,
                threshold=settings.threshold,
                min_num_filters=settings.min_num_filters,
                granularity=settings.granularity,
            )
            statuses = dict.fromkeys(group, "pruned")
        for member in group:
            layers[member] = LayerPlan(member, width, kept, statuses[member], group)
    ordered = {path: layers[path] for path in graph.convs}
    return PruningPlan(ordered, settings)


def _follow_inputs(node, layers: dict[str, LayerPlan]) -> tuple[int, ...]:
    """The channels a depthwise conv keeps: those its (concatenated) inputs keep."""
    kept, offset = [], 0
    for producer in node.inputs:
        if producer == IMAGE:
            return tuple(range(node.in_channels))
        plan = layers[producer]
        kept += [offset + i for i in plan.kept]
        offset += plan.width
    return tuple(kept)


class _WithNorm:
    """Pruning a :class:`ConvBlock`'s output channels also prunes its normalisation's (batch
    norm: scale, shift, running statistics; instance norm: scale, shift)."""

    _bn = tp_function.BatchnormPruner()

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        layer = super().prune_out_channels(layer, idxs)
        if layer.bn is not None:
            self._bn.prune_out_channels(layer.bn, idxs)
        return layer


class _ConvBlockPruner(_WithNorm, tp_function.ConvPruner):
    """torch-pruning's conv pruner, extended to the normalisation a :class:`ConvBlock` holds.

    torch-pruning sees a ConvBlock as one layer (it is registered as a customised layer, so
    its inner BN is not traced separately): pruning its output channels prunes the kernel, the
    bias and the BN's scale, shift and running statistics; input channels only touch the
    kernel.
    """


class _DepthwiseBlockPruner(_WithNorm, tp_function.DepthwiseConvPruner):
    """torch-pruning's depthwise pruner for a :class:`DepthwiseConvBlock` and its norm: one
    function cuts input and output channels, so torch-pruning couples them (its rule for
    layers whose input and output channels are the same)."""

    prune_in_channels = _WithNorm.prune_out_channels


def dependency_graph(model: PoseNet) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of a PoseNet (traced on a small CPU input).

    Args:
        model: on the CPU; traced in eval mode, with gradients on (the trace reads autograd).
    """
    example = torch.zeros(1, 3, _TRACE_SIDE, _TRACE_SIDE)
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(
            model,
            example_inputs=example,
            customized_pruners={
                ConvBlock: _ConvBlockPruner(),
                DepthwiseConvBlock: _DepthwiseBlockPruner(),
                # traced as one layer: instance norm reshapes its input internally, which
                # torch-pruning would otherwise read as a channel reshuffle
                nn.InstanceNorm2d: tp_function.BatchnormPruner(),
            },
            verbose=False,
        )


def removed_filters(layer: LayerPlan) -> list[int]:
    """Ascending indices of the filters a layer loses."""
    return sorted(set(range(layer.width)) - set(layer.kept))


def _cut_groups(plan: PruningPlan) -> Iterator[tuple[str, LayerPlan, list[int]]]:
    """Every coupled group that loses filters, once: (its first conv's path, that conv's plan,
    the filters the group loses)."""
    done: set[str] = set()
    for path, layer in plan.layers.items():
        if path in done or layer.status == "depthwise":  # cut with the channels they follow
            continue
        done.update(layer.group)
        removed = removed_filters(layer)
        if removed:
            yield path, layer, removed


def _out_channel_group(graph: tp.DependencyGraph, root: nn.Module, removed: list[int]):
    """torch-pruning's group for cutting ``removed`` output channels of ``root``."""
    return graph.get_pruning_group(
        root, graph.get_pruner_of_module(root).prune_out_channels, removed
    )


def _input_recorder(store: dict, key: int, channels: list[int]):
    def hook(module, inputs):
        store[key] = inputs[0][:, channels].detach().clone()

    return hook


def _output_constants(conv: ConvBlock, filters: list[int]) -> None:
    """Make some filters of a (probe) conv output constant maps: what each would output if
    its kernel norm, the pruning statistic, were zero.

    A zero kernel already outputs a constant (its bias through batch norm and activation): it
    is kept exactly. A live filter behind a batch norm is given gamma = 0 as well, so the
    batch norm outputs its shift beta: what a zero kernel would give once the running mean
    followed it to the bias, and the mean of the batch norm's output (before the activation).
    Without batch norm the kernel is simply zeroed, leaving ``act(bias)``.
    """
    live = [f for f in filters if conv.weight[f].abs().sum() > 0]
    conv.weight[filters] = 0
    if conv.bn is not None and live:
        conv.bn.weight[live] = 0


def compensate_removed_outputs(model: PoseNet, plan: PruningPlan, graph: tp.DependencyGraph):
    """Fold what the removed filters still output into their consumers' biases, in place.

    A filter with a zero kernel is not silent: its bias, batch norm shift and activation give
    its channel a constant value c, and every consumer conv adds ``sum(W[:, j]) * c`` to its
    outputs. Removing the channel would drop that term. So each removed channel's value, as
    it would be with a zero statistic (:func:`_output_constants`: the state L1 training pushes
    spare filters to), is moved into the consumer: into the conv's bias, or, for a conv
    without bias, into its batch norm's running mean (in training mode, batch statistics
    absorb a constant anyway). For a filter whose kernel (or, behind a batch norm, gamma) is
    zero this keeps the outputs unchanged away from the picture's border (zero padding sees no
    constant there); for a live filter it is an estimate of its contribution, not exact.
    A consumer with neither bias nor batch norm is given a bias (its arch entry too) to hold
    the term.

    Args:
        model: the network before any cut, in eval mode (changed in place: biases, running
            means, and the arch's ``bias`` flag of a consumer that had no bias nor batch norm).
        plan: from :func:`plan_pruning`.
        graph: torch-pruning's dependency graph of ``model``.
    """
    modules = dict(model.named_modules())
    names = {module: name for name, module in modules.items()}
    probe = copy.deepcopy(model).eval()
    probe_modules = dict(probe.named_modules())
    cuts: list[tuple[ConvBlock, list[int]]] = []  # (consumer, its removed input channels)
    with torch.no_grad():
        for path, layer, removed in _cut_groups(plan):
            for member in layer.group:
                _output_constants(probe_modules[member], removed)
            group = _out_channel_group(graph, modules[path], removed)
            cuts += [  # the consumer's input channels, offsets of concatenations applied
                (dep.target.module, [int(getattr(i, "idx", i)) for i in idxs])
                for dep, idxs in group
                if isinstance(dep.target.module, ConvBlock)
                # a depthwise conv passes its removed channels on (they are cut there too):
                # the fold happens in the convs that read it
                and not isinstance(dep.target.module, DepthwiseConvBlock)
                and graph.is_in_channel_pruning_fn(dep.handler)
            ]
        if not cuts:
            return
        inputs: dict[int, Tensor] = {}  # cut number -> the removed channels it sees
        hooks = [
            probe_modules[names[consumer]].register_forward_pre_hook(
                _input_recorder(inputs, i, idxs)
            )
            for i, (consumer, idxs) in enumerate(cuts)
        ]
        weight = next(model.parameters())
        try:
            probe(weight.new_zeros(1, 3, _TRACE_SIDE, _TRACE_SIDE))
        finally:
            for hook in hooks:
                hook.remove()
        convs = arch_graph(model.arch).convs
        for i, (consumer, idxs) in enumerate(cuts):
            # the removed channels are constant maps: their mean is their value
            value = inputs[i][0].mean(dim=(1, 2))  # (R,)
            shift = consumer.weight[:, idxs].sum(dim=(2, 3)) @ value  # (out,)
            if isinstance(consumer.bn, nn.InstanceNorm2d):
                continue  # it subtracts each map's own mean: a constant input shift vanishes
            if consumer.bias is None and consumer.bn is None:
                if not torch.any(shift):
                    continue
                consumer.bias = nn.Parameter(torch.zeros_like(shift))
                convs[names[consumer]].spec["bias"] = True
            if consumer.bias is not None:
                consumer.bias += shift
            else:
                consumer.bn.running_mean -= shift


def apply_plan(model: PoseNet, plan: PruningPlan, *, compensate: bool = True) -> PoseNet:
    """Remove the filters a plan drops, with torch-pruning; the input model is not changed.

    Every coupled group is pruned once through torch-pruning (its root conv's output
    channels); torch-pruning propagates the cut to batch norms, consumers' input channels,
    concatenated stage inputs and element-wise partners. The couplings torch-pruning finds must
    equal the arch's (:attr:`ArchGraph.coupled`), or this raises: a network whose arch hides an
    element-wise op would otherwise be cut wrong.

    Args:
        model: the network the plan was made for.
        plan: from :func:`plan_pruning`.
        compensate: first fold the removed filters' constant outputs into their consumers
            (:func:`compensate_removed_outputs`); off, the channels are simply cut.

    Returns:
        A new PoseNet rebuilt from the pruned arch (per-layer widths as data) with the pruned
        weights, in eval mode, on the CPU.

    Raises:
        RuntimeError: torch-pruning's couplings disagree with the arch (a bug, not user error).
    """
    work = copy.deepcopy(model).to("cpu", torch.float32).eval()
    work = work.to(memory_format=torch.contiguous_format)
    modules = dict(work.named_modules())
    names = {module: name for name, module in modules.items()}
    graph = dependency_graph(work)
    if compensate:
        compensate_removed_outputs(work, plan, graph)
    for path, layer, removed in _cut_groups(plan):
        group = _out_channel_group(graph, modules[path], removed)
        cut = {  # the convs whose outputs torch-pruning cuts together (depthwise convs follow)
            names[dep.target.module]
            for dep, _ in group
            if isinstance(dep.target.module, ConvBlock)
            and not isinstance(dep.target.module, DepthwiseConvBlock)
            and graph.is_out_channel_pruning_fn(dep.handler)
        }
        if cut != set(layer.group):
            raise RuntimeError(
                f"torch-pruning couples the outputs of {sorted(cut)} but the arch couples "
                f"{sorted(layer.group)}; the arch does not describe this network's element-wise "
                "ops"
            )
        group.prune()

    widths = {path: modules[path].out_channels for path in plan.layers}
    if widths != plan.widths():
        raise RuntimeError("torch-pruning left other widths than the plan asked for")
    rebuilt = model_from_arch(arch_with_widths(work.arch, widths))
    load_state_checked(rebuilt, work.state_dict(), "pruned model")
    return rebuilt.eval()


def prune_model(model: PoseNet, settings: PruneSettings) -> tuple[PoseNet, PruningPlan]:
    """Plan with TAO's rules, then cut with torch-pruning (:func:`plan_pruning`,
    :func:`apply_plan`).

    Example:
        >>> pruned, plan = prune_model(model, PruneSettings(threshold=0.05))  # doctest: +SKIP
        >>> pruned.arch  # per-layer widths, what a checkpoint stores  # doctest: +SKIP

    Returns:
        (the pruned network, the plan it follows).
    """
    plan = plan_pruning(model, settings)
    return apply_plan(model, plan), plan


__all__ = [
    "EQUALIZATION_CRITERIA",
    "NORMALIZERS",
    "LayerPlan",
    "PruneSettings",
    "PruningPlan",
    "apply_plan",
    "arch_with_widths",
    "compensate_removed_outputs",
    "dependency_graph",
    "filter_norms",
    "merge_stats",
    "normalize_stats",
    "plan_pruning",
    "prune_model",
    "retained_indices",
]
