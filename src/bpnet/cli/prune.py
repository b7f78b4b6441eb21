"""``bpnet prune``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bpnet.cli.options import add_command, add_key, add_model
from bpnet.errors import BpnetError


def add_parsers(commands) -> None:
    prune = add_command(
        commands,
        "prune",
        _prune,
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


def _prune(args: argparse.Namespace) -> int:
    from bpnet.prune import (
        PruneSettings,
        format_report,
        format_sweep,
        parse_thresholds,
        prune_checkpoint,
        sweep_checkpoint,
    )

    settings = PruneSettings(
        threshold=args.pruning_threshold,
        equalization_criterion=args.equalization_criterion,
        granularity=args.pruning_granularity,
        min_num_filters=args.min_num_filters,
        normalizer=args.normalizer,
        # TAO takes -el a b c; the form is -el a,b,c: both work
        excluded_layers=tuple(n for item in args.excluded_layers for n in item.split(",") if n),
    )
    size = tuple(args.input_size) if args.input_size else None
    if args.sweep is not None:
        thresholds = parse_thresholds(args.sweep)
        if args.output_file is not None:
            raise BpnetError("--sweep compares thresholds and writes no model: drop -o")
        table = sweep_checkpoint(
            args.model,
            settings,
            thresholds,
            input_size=size,
            report_path=args.report,
            force=args.force,
            key=args.key,
        )
        print(format_sweep(table))
        if args.report is not None:
            print(f"wrote {args.report}")
        return 0
    if args.output_file is None:
        raise BpnetError(
            "bpnet prune: give the pruned model's path with -o OUT.pth (or compare thresholds "
            "without writing anything: --sweep 0.01,0.05,0.1,0.2,0.5)"
        )
    report = prune_checkpoint(
        args.model,
        args.output_file,
        settings,
        input_size=size,
        report_path=args.report,
        force=args.force,
        key=args.key,
    )
    print(format_report(report))
    print(f"wrote {report['output']} and {report['report']}")
    return 0
