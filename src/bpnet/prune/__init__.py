"""Structured filter pruning with TAO BodyPoseNet's rules (``bpnet prune``).

Whole filters go, so the result is a smaller dense network (no masks), stored like any other
checkpoint: its arch holds the new per-layer widths. :mod:`bpnet.prune.rules` decides which
filters go (TAO's rules), on kernel norms or on the statistic :mod:`bpnet.prune.activation`
measures on pictures (``--rank_on``); :mod:`bpnet.prune.cut` removes them, and drops stages
(``--stages``); with pictures, :mod:`bpnet.prune.reconstruct` then refits the convs that lost
inputs to the unpruned outputs; :mod:`bpnet.prune.run` is ``bpnet prune``.

Example:
    >>> from bpnet.prune import PruneSettings, prune_model
    >>> pruned, plan = prune_model(model, PruneSettings(threshold=0.05))  # doctest: +SKIP
    >>> plan.widths()["stage1.trunk.conv1"]  # doctest: +SKIP
    64
"""

from bpnet.prune.cut import apply_plan
from bpnet.prune.report import Cost, arch_cost, conv_output_sizes, format_report, format_sweep
from bpnet.prune.rules import (
    CRITERIA,
    EQUALIZATION_CRITERIA,
    NORMALIZERS,
    LayerPlan,
    PruneSettings,
    PruningPlan,
    arch_with_widths,
    plan_pruning,
)
from bpnet.prune.run import (
    check_report_path,
    parse_thresholds,
    prune_checkpoint,
    prune_command,
    prune_model,
    sweep_checkpoint,
)

__all__ = [
    "CRITERIA",
    "EQUALIZATION_CRITERIA",
    "NORMALIZERS",
    "Cost",
    "LayerPlan",
    "PruneSettings",
    "PruningPlan",
    "apply_plan",
    "arch_cost",
    "arch_with_widths",
    "check_report_path",
    "conv_output_sizes",
    "format_report",
    "format_sweep",
    "parse_thresholds",
    "plan_pruning",
    "prune_checkpoint",
    "prune_command",
    "prune_model",
    "sweep_checkpoint",
]
