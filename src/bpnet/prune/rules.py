"""TAO BodyPoseNet's pruning rules: which filters (output channels) of every conv survive.

:func:`plan_pruning` decides, by TAO's rules (``nvidia_tao_tf1/core/pruning``, "min weight"
method); :mod:`bpnet.prune.cut` then removes the channels. The rules:

* the statistic of a filter is the L2 norm of its kernel, shape (in, k, k) -> one number
  (biases and batch norm do not count);
* it is normalised per layer: ``max`` divides by the layer's largest norm (every statistic is
  then in [0, 1], so a threshold >= 1 leaves every layer at ``min_num_filters``); ``L2``
  divides by the L2 norm of the layer's norms and multiplies by their number;
* filters whose statistic is strictly above ``threshold`` are kept; at least
  ``min_num_filters`` (or the layer's width if it is smaller), then rounded up to a multiple of
  ``granularity`` (at most the layer's width); the highest statistics win;
* convs whose outputs meet in an element-wise add (residual shortcut) or multiply (attention
  gate) must keep the same channels: their statistics are merged per channel first (union =
  max, intersection = min, arithmetic or geometric mean) and one decision serves them all;
* output convs (heatmaps, PAFs) are never pruned, nor are excluded layers; a coupled group with
  an excluded member keeps all its channels (as TAO does).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from bpnet.errors import BpnetError
from bpnet.models import PoseNet, arch_graph
from bpnet.models.arch import IMAGE

EQUALIZATION_CRITERIA = ("union", "intersection", "arithmetic_mean", "geometric_mean")
NORMALIZERS = ("max", "L2")
CRITERIA = ("kernel_norm", "activation")


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
        criterion: ``kernel_norm`` (TAO's statistic, this module's docstring) or
            ``activation`` (measured on pictures, :mod:`bpnet.prune.activation`); not TAO's.
        stages: keep only the first this many stages (None: all); not TAO's.
        refit: where the filters were measured on pictures, refit every conv that lost inputs
            to give the unpruned network's outputs on them (:mod:`bpnet.prune.reconstruct`);
            not TAO's.
    """

    threshold: float = 0.1
    equalization_criterion: str = "union"
    granularity: int = 8
    min_num_filters: int = 16
    normalizer: str = "max"
    excluded_layers: tuple[str, ...] = field(default_factory=tuple)
    criterion: str = "kernel_norm"
    stages: int | None = None
    refit: bool = True

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
        if self.criterion not in CRITERIA:
            raise BpnetError(
                f"pruning criterion {self.criterion!r} is unknown; choose one of "
                f"{', '.join(CRITERIA)}"
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


def plan_pruning(
    model: PoseNet, settings: PruneSettings, statistics: dict[str, np.ndarray] | None = None
) -> PruningPlan:
    """Decide, by TAO's rules (module docstring), which filters of every conv survive.

    Args:
        model: the trained network (its ``arch`` gives the convs and their couplings).
        settings: threshold, equalisation, granularity, minimum, normaliser, exclusions.
        statistics: conv path -> (out,) statistic of each filter, replacing the kernel norms
            (:func:`bpnet.prune.activation.channel_statistics`); None: kernel norms.

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
                normalize_stats(
                    filter_norms(modules[member].weight)
                    if statistics is None
                    else statistics[member],
                    settings.normalizer,
                )
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


__all__ = [
    "CRITERIA",
    "EQUALIZATION_CRITERIA",
    "NORMALIZERS",
    "LayerPlan",
    "PruneSettings",
    "PruningPlan",
    "arch_with_widths",
    "filter_norms",
    "merge_stats",
    "normalize_stats",
    "plan_pruning",
    "retained_indices",
]
