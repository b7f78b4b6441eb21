"""``bpnet prune``."""

from __future__ import annotations

from pathlib import Path

from bpnet.cli.options import add_command, add_key, add_model


def add_parsers(commands) -> None:
    prune = add_command(
        commands,
        "prune",
        "bpnet.prune:prune_command",
        help="remove whole filters (TAO's rules): a smaller, faster dense model to retrain",
        description="Structured pruning with TAO BodyPoseNet's rules: per-filter L2 norm of "
        "the kernel, normalised per layer; filters above the threshold are kept, at least "
        "-nf, rounded up to a multiple of -pg; convs joined by residual adds or attention "
        "gates are decided together (-eq); output convs are never pruned. Writes the pruned "
        "checkpoint (its per-layer widths as data) and <OUT stem>_prune_report.json, and prints "
        "parameters, GMACs and the widths kept. Retrain it with bpnet train, "
        "pretrained_weights: OUT and load_graph: true. See docs/PRUNING.md.",
    )
    add_model(prune, "trained checkpoint", required=True)
    prune.add_argument(
        "-o",
        "--output_file",
        type=Path,
        default=None,
        help="pruned checkpoint to write (.pth); not with --sweep",
    )
    prune.add_argument(
        "-pth",
        "--pruning_threshold",
        type=float,
        default=0.1,
        help="keep filters whose normalised norm is above this (default 0.1); with -n max "
        "every norm is <= 1, so a threshold >= 1 leaves every layer at -nf filters",
    )
    prune.add_argument(
        "-eq",
        "--equalization_criterion",
        default="union",
        help="how convs coupled by element-wise ops merge their norms: union, intersection, "
        "arithmetic_mean or geometric_mean (default union)",
    )
    prune.add_argument(
        "-pg",
        "--pruning_granularity",
        type=int,
        default=8,
        help="kept widths are rounded up to a multiple of this (default 8)",
    )
    prune.add_argument(
        "-nf",
        "--min_num_filters",
        type=int,
        default=16,
        help="minimum filters kept per layer (default 16)",
    )
    prune.add_argument(
        "-n",
        "--normalizer",
        default="max",
        help="per-layer normalisation of the norms: max (divide by the largest) or L2 "
        "(divide by their L2 norm, times their number); default max",
    )
    prune.add_argument(
        "-el",
        "--excluded_layers",
        nargs="*",
        default=[],
        metavar="LAYER",
        help="convs to leave whole, by path as the report lists them (backbone.conv1_1, "
        "stage2.trunk.conv1, ...); comma- or space-separated",
    )
    prune.add_argument(
        "--sweep",
        default=None,
        metavar="T1,T2,...",
        help="print the parameters and GMACs kept at each threshold, write nothing "
        "(e.g. --sweep 0.01,0.05,0.1,0.2,0.5)",
    )
    prune.add_argument(
        "--input_size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="input size the GMACs are counted at; default: the model's training image_dims",
    )
    prune.add_argument(
        "--report",
        type=Path,
        default=None,
        help="JSON report path; default <OUT stem>_prune_report.json beside the model (with "
        "--sweep: write the sweep's table there)",
    )
    prune.add_argument(
        "--force", action="store_true", help="replace an existing -o or --report file"
    )
    add_key(prune, "the pruned model")
