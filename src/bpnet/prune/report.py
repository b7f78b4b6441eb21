"""What pruning buys: parameters and multiply-accumulates before and after, per-layer widths.

Costs are computed from the arch (per-layer widths) alone, so a ``--sweep`` over thresholds
builds no network. Convolutions are the only ops counted (batch norm folds into them at
export; activations, pools and concatenations are memory traffic, not arithmetic), as in
the published figures: CMU OpenPose COCO is 135.9 GMAC at 368x368 and this count gives
135.93. GFLOPs = 2 x GMACs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bpnet.models import arch_graph, model_from_arch
from bpnet.models.blocks import ConvBlock
from bpnet.prune.rules import PruningPlan


@dataclass(frozen=True)
class Cost:
    """Size and arithmetic of a network at one input size.

    Attributes:
        params: trainable parameters (kernels, biases, BN scale and shift), as
            :func:`bpnet.models.count_parameters` counts them.
        macs: conv multiply-accumulates for one (1, 3, H, W) image.
    """

    params: int
    macs: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        return 2 * self.macs / 1e9

    def to_dict(self) -> dict:
        return {"params": self.params, "gmacs": self.gmacs, "gflops": self.gflops}


def conv_output_sizes(arch: dict, input_size: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Output (h, w) of every conv for an (H, W) input: one forward on the meta device (no
    memory, no arithmetic). Widths do not change them, so one call serves every pruned arch.

    Args:
        arch: any arch of the network (pruned or not: same layers, same strides).
        input_size: (H, W) in pixels, multiples of 8.

    Returns:
        conv path -> (h, w).
    """
    with torch.device("meta"):
        model = model_from_arch(arch)
    sizes: dict[str, tuple[int, int]] = {}
    hooks = []
    for path, module in model.named_modules():
        if isinstance(module, ConvBlock):

            def record(_module, _inputs, output, path=path):
                sizes[path] = (int(output.shape[-2]), int(output.shape[-1]))

            hooks.append(module.register_forward_hook(record))
    with torch.no_grad():
        model(torch.empty(1, 3, *input_size, device="meta"))
    for hook in hooks:
        hook.remove()
    return sizes


def arch_cost(arch: dict, sizes: dict[str, tuple[int, int]]) -> Cost:
    """Parameters and conv MACs of an arch, from its widths alone.

    Args:
        arch: the network's plain-data description.
        sizes: conv output sizes from :func:`conv_output_sizes` (same network, any widths).
    """
    params = macs = 0
    for path, node in arch_graph(arch).convs.items():
        spec = node.spec
        out, taps = spec["out"], spec["kernel"] ** 2
        fan_in = 1 if node.depthwise else node.in_channels  # inputs each filter reads
        params += out * fan_in * taps + out * spec["bias"] + 2 * out * spec["bn"]
        h, w = sizes[path]
        macs += h * w * out * fan_in * taps
    return Cost(params, macs)


def pruning_report(
    arch: dict, pruned_arch: dict, plan: PruningPlan, input_size: tuple[int, int]
) -> dict:
    """The pruning report as plain data (what ``bpnet prune`` prints and saves as JSON).

    Args:
        arch: the network before pruning.
        pruned_arch: after pruning (the widths of ``plan``).
        plan: the per-layer decisions.
        input_size: (H, W) the MACs are counted at.

    Returns:
        ``{"settings", "input_size", "before", "after", "params_kept", "macs_kept",
        "layers": [{"path", "before", "after", "status"}, ...]}``.
    """
    sizes = conv_output_sizes(arch, input_size)
    before, after = arch_cost(arch, sizes), arch_cost(pruned_arch, sizes)
    widths = {path: node.spec["out"] for path, node in arch_graph(pruned_arch).convs.items()}
    settings = plan.settings
    return {
        "settings": {
            "pruning_threshold": settings.threshold,
            "equalization_criterion": settings.equalization_criterion,
            "pruning_granularity": settings.granularity,
            "min_num_filters": settings.min_num_filters,
            "normalizer": settings.normalizer,
            "excluded_layers": list(settings.excluded_layers),
            "criterion": settings.criterion,
            "stages": settings.stages,
            "refit": settings.refit,
        },
        "input_size": list(input_size),
        "before": before.to_dict(),
        "after": after.to_dict(),
        "params_kept": after.params / before.params,
        "macs_kept": after.macs / before.macs,
        "layers": [
            {
                "path": path,
                "before": node.spec["out"],
                "after": widths.get(path, 0),
                "status": plan.layers[path].status if path in plan.layers else "dropped stage",
            }
            for path, node in arch_graph(arch).convs.items()
        ],
    }


def format_report(report: dict) -> str:
    """The report as a text table: totals, then one line per conv."""
    before, after = report["before"], report["after"]
    h, w = report["input_size"]
    lines = [
        f"{'':<12}{'parameters':>14}{'GMACs':>10}{'GFLOPs':>10}   (at {h}x{w})",
        f"{'before':<12}{before['params']:>14,}{before['gmacs']:>10.3f}{before['gflops']:>10.3f}",
        f"{'after':<12}{after['params']:>14,}{after['gmacs']:>10.3f}{after['gflops']:>10.3f}",
        f"{'kept':<12}{report['params_kept']:>14.1%}{report['macs_kept']:>10.1%}",
        "",
    ]
    width = max(len(layer["path"]) for layer in report["layers"])
    lines.append(f"{'layer':<{width}}  {'before':>6}  {'after':>6}  status")
    for layer in report["layers"]:
        path, status = layer["path"], layer["status"]
        lines.append(f"{path:<{width}}  {layer['before']:>6}  {layer['after']:>6}  {status}")
    if report.get("refitted"):
        refitted = report["refitted"]
        lines += ["", f"refitted {len(refitted)} convs on the pictures: {', '.join(refitted)}"]
    if report.get("note"):
        lines += ["", report["note"]]
    return "\n".join(lines)


def format_sweep(table: dict) -> str:
    """The ``--sweep`` table: one line per threshold, then the table's note if any.

    Args:
        table: ``input_size`` (H, W) the MACs are counted at, ``rows`` (``{"threshold",
            "params", "gmacs", "params_kept", "macs_kept"}`` per threshold; the first one
            may be the unpruned model, ``threshold`` None) and an optional ``note``.
    """
    rows = table["rows"]
    h, w = table["input_size"]
    lines = [
        f"{'threshold':>10}{'parameters':>14}{'kept':>8}{'GMACs':>10}{'kept':>8}   (at {h}x{w})"
    ]
    for row in rows:
        name = "unpruned" if row["threshold"] is None else f"{row['threshold']:g}"
        lines.append(
            f"{name:>10}{row['params']:>14,}{row['params_kept']:>8.1%}"
            f"{row['gmacs']:>10.3f}{row['macs_kept']:>8.1%}"
        )
    if table.get("note"):
        lines += ["", table["note"]]
    return "\n".join(lines)


__all__ = [
    "Cost",
    "arch_cost",
    "conv_output_sizes",
    "format_report",
    "format_sweep",
    "pruning_report",
]
