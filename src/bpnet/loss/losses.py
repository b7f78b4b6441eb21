"""Loss of a multi-stage heatmap + PAF network, and TAO's kernel regularisation.

Normalisation (TAO's and CMU's, so that their learning rates and regularisation factors carry
over): for every stage and map kind, half the sum of mask-weighted squared errors over all
channels and output cells of the batch (TensorFlow's ``l2_loss``, Caffe's EuclideanLoss),
summed over stages and divided by the number of samples::

    loss = 1 / (2 B) * sum_stages [ w_h * sum m (H^ - H)^2 + w_p * sum m (P^ - P)^2 ]

Dividing by samples, not cells, keeps data-parallel training exact: the average of the
gradients of N equal per-process batches is the gradient of the whole batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import nn

# Layers whose kernels are regularised (TAO: Conv2D, DepthwiseConv2D and Dense); normalisation
# layers are not: shrinking a batch-norm scale only moves the work to the next kernel.
WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


def focal_weight(error: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Focal L2 weight of each element: ``max(|error|, beta) ** alpha``.

    Cells the network already gets right (most background cells) weigh little, so the loss
    concentrates on joints and limbs; ``beta`` floors the weight so that nothing drops out of
    the loss entirely (a larger ``beta`` moves focal L2 towards ordinary L2).

    Args:
        error: prediction - target, any shape.
        alpha: exponent (``loss.focal_alpha``); 0 gives ordinary L2.
        beta: floor on ``|error|`` (``loss.focal_beta``).

    Returns:
        Weights of ``error``'s shape.
    """
    return error.abs().clamp_min(beta) ** alpha


def masked_l2(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    focal: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Half the sum of mask-weighted squared errors (no normalisation).

    Args:
        prediction: (B, C, h, w) network output (any float dtype; computed in float32).
        target: (B, C, h, w) targets.
        mask: (B, h, w) weights >= 0 (1 = counts, 0 = does not), the same for every channel.
        focal: ``(alpha, beta)`` to weight each element by :func:`focal_weight`; None for L2.

    Returns:
        Scalar tensor ``0.5 * sum(mask * w * (prediction - target) ** 2)``.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ; the "
            "model's heads do not match the pose config's joints and limbs"
        )
    error = prediction.float() - target.float()
    squared = error * error
    if focal is not None:
        squared = squared * focal_weight(error, *focal)
    return 0.5 * (squared * mask.float()[:, None]).sum()


def pose_loss(
    outputs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    targets: dict[str, torch.Tensor],
    *,
    loss_type: Literal["l2", "focal_l2"] = "l2",
    heatmap_weight: float = 1.0,
    paf_weight: float = 1.0,
    focal_alpha: float = 2.0,
    focal_beta: float = 0.01,
) -> dict[str, torch.Tensor]:
    """Masked (focal) L2 of every stage's heatmaps (background included) and PAFs.

    Args:
        outputs: per stage, ``(heatmaps (B, J + 1, h, w), pafs (B, 2L, h, w))``.
        targets: :func:`bpnet.targets.encode_batch` output on the outputs' device:
            ``heatmaps`` (B, J + 1, h, w), ``pafs`` (B, 2L, h, w), ``mask`` (B, h, w).
        loss_type: ``l2`` or ``focal_l2`` (``loss.type``).
        heatmap_weight: factor on the heatmap terms (``loss.heatmap_weight``).
        paf_weight: factor on the PAF terms (``loss.paf_weight``).
        focal_alpha, focal_beta: see :func:`focal_weight` (``focal_l2`` only).

    Returns:
        Scalar tensors, each divided by the batch size (module docstring): ``loss`` (the
        total), ``heatmap`` and ``paf`` (its two weighted parts, summed over stages).
    """
    focal = (focal_alpha, focal_beta) if loss_type == "focal_l2" else None
    mask = targets["mask"]
    heatmap = sum(masked_l2(h, targets["heatmaps"], mask, focal=focal) for h, _ in outputs)
    paf = sum(masked_l2(p, targets["pafs"], mask, focal=focal) for _, p in outputs)
    batch = mask.shape[0]
    heatmap = heatmap_weight * heatmap / batch
    paf = paf_weight * paf / batch
    return {"loss": heatmap + paf, "heatmap": heatmap, "paf": paf}


def weight_layers(model: nn.Module) -> Iterator[nn.Module]:
    """The convolution and linear layers of ``model`` (those whose kernels are regularised)."""
    return (m for m in model.modules() if isinstance(m, WEIGHT_LAYERS))


def _regularised(
    model: nn.Module, kernel_factor: float, bias_factor: float
) -> Iterator[tuple[torch.Tensor, float]]:
    """(tensor, factor) of every regularised kernel and bias whose factor is not zero."""
    for layer in weight_layers(model):
        for tensor, factor in ((layer.weight, kernel_factor), (layer.bias, bias_factor)):
            if tensor is not None and factor != 0:
                yield tensor, factor


def regularization(
    model: nn.Module,
    kind: Literal["l1", "l2", "l1_l2", "none"],
    kernel_factor: float,
    bias_factor: float = 0.0,
) -> torch.Tensor:
    """TAO's kernel (and bias) regularisation over conv and linear layers, not normalisation.

    Keras conventions, as TAO: ``l1 = f * sum|w|``, ``l2 = f * sum w^2`` (no 1/2), ``l1_l2``
    is both with the same factor. It is added to the loss as is (not divided by the batch).

    Args:
        model: the network.
        kind: ``model.regularization_type``.
        kernel_factor: ``model.kernel_regularization_factor``, on conv / linear weights.
        bias_factor: ``model.bias_regularization_factor``, on their biases.

    Returns:
        Scalar float32 tensor on the model's device (zero for ``none`` or zero factors).
    """
    device = next(model.parameters()).device
    total = torch.zeros((), device=device)
    if kind == "none":
        return total
    for tensor, factor in _regularised(model, kernel_factor, bias_factor):
        if kind in ("l1", "l1_l2"):
            total = total + factor * tensor.abs().sum()
        if kind in ("l2", "l1_l2"):
            total = total + factor * tensor.pow(2).sum()
    return total


@torch.no_grad()
def shrink_weights(
    model: nn.Module,
    kind: Literal["l1", "l2", "l1_l2", "none"],
    kernel_factor: float,
    bias_factor: float,
    lr: float,
) -> None:
    """Apply :func:`regularization` as a decoupled step (``regularization_mode: decoupled``).

    The step plain SGD takes on the term alone, whatever optimiser took the loss's step: L1
    moves each weight ``lr * factor`` towards zero and stops at zero (soft threshold); L2
    scales it by ``1 - 2 * lr * factor`` (AdamW's weight decay). Adam's per-weight
    normalisation never sees the term, so it cannot outweigh a small but useful gradient.

    Args:
        model: the network, after the optimiser's step.
        kind, kernel_factor, bias_factor: as :func:`regularization`.
        lr: the learning rate of the step just taken.
    """
    if kind == "none":
        return
    for tensor, factor in _regularised(model, kernel_factor, bias_factor):
        if kind in ("l2", "l1_l2"):
            tensor.mul_(1.0 - 2.0 * lr * factor)
        if kind in ("l1", "l1_l2"):
            tensor.copy_(tensor.sign() * (tensor.abs() - lr * factor).clamp_(min=0.0))


__all__ = [
    "WEIGHT_LAYERS",
    "focal_weight",
    "masked_l2",
    "pose_loss",
    "regularization",
    "shrink_weights",
    "weight_layers",
]
