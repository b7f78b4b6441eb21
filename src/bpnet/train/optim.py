"""Optimiser with parameter groups made by a rule from parameter names (stage-wise LR).

Stage-wise learning-rate multipliers (``use_stagewise_lr_multipliers``) are TAO's, which are
the ``lr_mult`` values of CMU's OpenPose prototxt:

    =====================================  ======  ====
    conv / linear layer in                 kernel  bias
    =====================================  ======  ====
    backbone, stage 1                      1x      2x
    refinement stages (2 .. N)             4x      8x
    anything else (batch-norm scale/shift) 1x      1x
    =====================================  ======  ====

The refinement stages start from random weights on top of a backbone that usually does not
(ImageNet or a previous run), and see a smaller, already-refined error signal; the larger
step lets them catch up. The stage of a parameter comes from its dotted name: a component
``stageN`` / ``stage_N`` (1-based, TAO's layer names) or ``stages.<i>`` (a ModuleList,
0-based); everything before the first stage is the backbone.
"""

from __future__ import annotations

import re

from torch import nn
from torch.optim import SGD, Adam, Optimizer

from bpnet.config.spec import OptimizerConfig
from bpnet.errors import SpecError
from bpnet.loss import weight_layers

REFINEMENT_LR_MULT = 4.0
BIAS_LR_MULT = 2.0

_STAGE_NAME = re.compile(r"stage_?(\d+)")


def stage_of(name: str) -> int:
    """1-based stage of a parameter or module name; 0 for the backbone (and anything else).

    Example:
        >>> stage_of("stages.1.paf.0.weight"), stage_of("stage1.heat.weight"), stage_of("vgg.0.w")
        (2, 1, 0)
    """
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part == "stages" and i + 1 < len(parts) and parts[i + 1].isdigit():
            return int(parts[i + 1]) + 1
        match = _STAGE_NAME.fullmatch(part)
        if match:
            return int(match.group(1))
    return 0


def parameter_groups(
    model: nn.Module, *, base_lr: float, weight_decay: float = 0.0, stagewise: bool = True
) -> list[dict]:
    """Optimiser parameter groups: one per (lr multiplier, weight decay) pair.

    Args:
        model: the network (unwrapped, or wrapped: a ``module.`` prefix changes nothing).
        base_lr: the schedule's base learning rate; a group's ``lr`` is ``base_lr * lr_mult``.
        weight_decay: the optimiser's weight decay, given to conv / linear kernels only.
        stagewise: apply the multipliers of the module docstring (else all 1x).

    Returns:
        Group dicts with ``params``, ``lr``, ``lr_mult``, ``weight_decay`` and ``name``.
    """
    kernels = {id(layer.weight) for layer in weight_layers(model)}
    biases = {id(layer.bias) for layer in weight_layers(model) if layer.bias is not None}
    groups: dict[tuple[float, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        mult = 1.0
        if stagewise and (id(param) in kernels or id(param) in biases):
            mult = REFINEMENT_LR_MULT if stage_of(name) >= 2 else 1.0
            mult *= BIAS_LR_MULT if id(param) in biases else 1.0
        decay = weight_decay if id(param) in kernels else 0.0
        group = groups.setdefault(
            (mult, decay),
            {
                "params": [],
                "lr": base_lr * mult,
                "lr_mult": mult,
                "weight_decay": decay,
                "name": f"lr x{mult:g}" + (" decay" if decay else ""),
            },
        )
        group["params"].append(param)
    return list(groups.values())


def build_optimizer(config: OptimizerConfig, model: nn.Module, *, stagewise: bool) -> Optimizer:
    """SGD (momentum, optional Nesterov) or Adam over :func:`parameter_groups`.

    Raises:
        SpecError: Nesterov momentum asked for with ``momentum: 0``.
    """
    base_lr = config.learning_rate_schedule.base_learning_rate
    groups = parameter_groups(
        model, base_lr=base_lr, weight_decay=config.weight_decay, stagewise=stagewise
    )
    if config.type == "adam":
        return Adam(groups, lr=base_lr)
    if config.use_nesterov and config.momentum == 0:
        raise SpecError("optimizer.use_nesterov: Nesterov needs optimizer.momentum > 0 (try 0.9)")
    return SGD(groups, lr=base_lr, momentum=config.momentum, nesterov=config.use_nesterov)


__all__ = ["build_optimizer", "parameter_groups", "stage_of"]
