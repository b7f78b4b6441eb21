"""Reconstruction: after the cut, refit each conv that lost inputs to give its unpruned outputs.

A conv whose input channels were cut still has the weights it learnt for all of them; the
removed channels' means are folded into its bias
(:func:`bpnet.prune.cut.compensate_removed_outputs`), but what those channels carried beyond
their mean is gone, and the error grows through every layer after it. Channel pruning with
least-squares reconstruction (He et al., "Channel Pruning for Accelerating Very Deep Neural
Networks", ICCV 2017; ThiNet, ICCV 2017) fits the conv's weights again, on pictures, so that
its outputs from the inputs it still has come as close as a linear map can to the unpruned
network's. Done layer after layer in the order the network runs, each fit starts from the
pruned network's own inputs, so it also absorbs the error of the layers before it. No
gradient step and no labels: seconds on a CPU for a network of tf-pose's size, on the
pictures the ``activation`` criterion measured.

A conv's output is linear in the values under its kernel, so its weights are a least-squares
fit per output channel from those values (:func:`torch.nn.functional.unfold`) to the unpruned
conv's output before its normalisation, with a small ridge towards the weights it had (the
directions the pictures leave open keep them); the intercept goes to the bias, or to the
running mean of a batch norm (an instance norm removes it). Depthwise convs are not refitted:
each sees one channel, which the cut keeps or removes whole.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bpnet.models import PoseNet
from bpnet.models.blocks import ConvBlock, DepthwiseConvBlock

SAMPLES_PER_PICTURE = 1024  # output positions each picture gives a fit: ~32k rows for 32
RIDGE = 1e-4  # towards the current weights, per input, relative to its own energy
_CHUNK = 4096  # rows of the fit turned into float64 at a time


def kernel_inputs(conv: ConvBlock, x: Tensor) -> Tensor:
    """(B, in * k * k, L): the values under the conv's kernel at each of its L outputs."""
    if conv.tf_pad is not None:
        x = F.pad(x, conv.tf_pad)
    return F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)


def raw_output(conv: ConvBlock, x: Tensor) -> Tensor:
    """(B, out, L): the conv's output before its normalisation and activation."""
    if conv.tf_pad is not None:
        x = F.pad(x, conv.tf_pad)
    return conv._conv_forward(x, conv.weight, conv.bias).flatten(2)


def refit_conv(
    conv: ConvBlock, inputs: Tensor, target: Tensor, centre: Tensor | None = None
) -> None:
    """Set ``conv``'s weights (and intercept) to the least-squares map from ``inputs`` to
    ``target``, in place, with a ridge that pulls each weight towards its current value.

    The ridge is :data:`RIDGE` times each input's own energy: it decides only the directions
    the rows leave open (dead or duplicate inputs, fewer rows than inputs), where the conv
    keeps the weights it had; weights that already reproduce ``target`` are kept exactly. The
    intercept goes to the bias; for a conv without one, to its batch norm's running mean
    (``centre`` minus the intercept); an instance norm removes it; a conv with neither is
    fitted without one.

    Args:
        inputs: (N, in * k * k) values under the kernel, rows = output positions.
        target: (N, out) the outputs to reproduce, before the normalisation.
        centre: (out,) the batch norm running mean ``target`` is measured against (the
            unpruned conv's); None: the conv's own.
    """
    with_intercept = conv.bias is not None or conv.bn is not None
    inputs, target = inputs.detach().cpu(), target.detach().cpu()
    size = inputs.shape[1] + with_intercept
    gram = torch.zeros(size, size, dtype=torch.float64)
    moment = torch.zeros(size, target.shape[1], dtype=torch.float64)
    for start in range(0, len(inputs), _CHUNK):  # in float64, a chunk of rows at a time
        rows = inputs[start : start + _CHUNK].double()
        if with_intercept:
            rows = torch.cat([rows, rows.new_ones(len(rows), 1)], dim=1)
        gram += rows.T @ rows
        moment += rows.T @ target[start : start + _CHUNK].double()
    current = conv.weight.detach().flatten(1).T.cpu().double()
    ridge = RIDGE * gram.diagonal() + 1e-12
    if with_intercept:  # the intercept is not held back
        current = torch.cat([current, current.new_zeros(1, current.shape[1])])
        ridge[-1] = 0
    gram.diagonal().add_(ridge)
    solution = torch.linalg.solve(gram, moment + ridge[:, None] * current)
    solution = solution.to(conv.weight.device, conv.weight.dtype)
    conv.weight.copy_(solution[: conv.weight[0].numel()].T.reshape(conv.weight.shape))
    intercept = solution[-1]
    if conv.bias is not None:
        conv.bias.copy_(intercept)
    elif isinstance(conv.bn, nn.BatchNorm2d):
        # BN((Wx + c) - mean) == BN(Wx - (mean - c))
        mean = conv.bn.running_mean if centre is None else centre.to(intercept)
        conv.bn.running_mean.copy_(mean - intercept)


def refit_paths(pruned: PoseNet, original: PoseNet) -> list[str]:
    """The convs :func:`reconstruct` refits: every conv but the depthwise ones that reads fewer
    channels in ``pruned`` than in ``original``, in forward order."""
    convs = original.named_modules()
    widths = {path: m.in_channels for path, m in convs if isinstance(m, ConvBlock)}
    return [
        path
        for path, conv in pruned.named_modules()
        if isinstance(conv, ConvBlock)
        and not isinstance(conv, DepthwiseConvBlock)
        and conv.in_channels != widths[path]
    ]


def reconstruct(
    pruned: PoseNet,
    original: PoseNet,
    pictures: Tensor,
    kept: dict[str, list[int]],
    *,
    seed: int = 0,
) -> list[str]:
    """Refit every conv of ``pruned`` that reads fewer channels than in ``original``, in place,
    in the order the network runs (this module's docstring).

    Args:
        pruned: the network after the cut (same layer paths as ``original``), eval mode.
        original: the network it was cut from (stages already dropped), eval mode.
        pictures: (B, 3, H, W) network inputs, as the network takes them.
        kept: conv path -> the output channels of ``original`` it keeps (every conv whose
            outputs were cut; the others keep all).
        seed: chooses the output positions each fit samples.

    Returns:
        The paths of the refitted convs, in order.
    """
    generator = torch.Generator().manual_seed(seed)
    original_convs = dict(original.named_modules())
    todo = refit_paths(pruned, original)
    targets: dict[str, Tensor] = {}  # path -> (B, out kept, L) the unpruned raw outputs
    centres: dict[str, Tensor] = {}  # path -> its unpruned batch norm's running mean
    samples: dict[str, Tensor] = {}  # path -> the output positions its fit uses

    def record(path):
        def hook(conv, inputs):
            if path in targets:
                raise RuntimeError(f"{path} runs twice in one forward: the refit fits it once")
            channels = kept.get(path, slice(None))
            target = raw_output(conv, inputs[0])[:, channels]
            count = target.shape[2]
            if count > SAMPLES_PER_PICTURE:
                samples[path] = torch.randperm(count, generator=generator)[:SAMPLES_PER_PICTURE]
                target = target[:, :, samples[path].to(target.device)]
            targets[path] = target.cpu()
            if conv.bias is None and isinstance(conv.bn, nn.BatchNorm2d):
                centres[path] = conv.bn.running_mean[channels].cpu()

        return hook

    def refit(path):
        def hook(conv, inputs):
            # one picture at a time: unfolding a whole batch at full resolution would take
            # (channels x kernel area) times the input's memory
            where = samples[path].to(inputs[0].device) if path in samples else slice(None)
            values = torch.cat([kernel_inputs(conv, x[None])[:, :, where].cpu() for x in inputs[0]])
            refit_conv(conv, as_rows(values), as_rows(targets.pop(path)), centres.get(path))

        return hook

    with torch.no_grad():
        _run_hooked(original, pictures, {p: record(p) for p in todo}, original_convs)
        _run_hooked(pruned, pictures, {p: refit(p) for p in todo}, dict(pruned.named_modules()))
    return todo


def as_rows(values: Tensor) -> Tensor:
    """(B, C, L) -> (B * L, C): one row per picture and position."""
    return values.permute(0, 2, 1).reshape(-1, values.shape[1])


def _run_hooked(
    model: nn.Module, pictures: Tensor, hooks: dict[str, Callable], modules: dict[str, nn.Module]
) -> None:
    """One forward of ``pictures`` (moved to the model's device) with a forward pre-hook on
    each module ``hooks`` names (path -> hook), removed afterwards."""
    handles = [modules[path].register_forward_pre_hook(hook) for path, hook in hooks.items()]
    try:
        model(pictures.to(next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()


__all__ = ["as_rows", "kernel_inputs", "raw_output", "reconstruct", "refit_conv", "refit_paths"]
