"""``bpnet dataset synth|stats|show`` and ``bpnet spec show``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bpnet.cli.options import add_command, add_dataset, add_experiment_spec, add_group


def add_parsers(commands) -> None:
    actions = add_group(commands, "dataset", "make, check and look at datasets")
    synth = add_command(
        actions,
        "synth",
        _synth,
        help="write a synthetic dataset in the official COCO keypoint layout",
        description="Write a synthetic dataset of articulated people in the official COCO "
        "layout: OUT/annotations/person_keypoints_{train,val}.json and OUT/{train,val}/ images. "
        "Every command accepts it like real COCO (splits 'train' and 'val').",
    )
    synth.add_argument("--out", required=True, type=Path, help="output folder (must be empty)")
    synth.add_argument("--train", type=int, default=1000, help="train images (default 1000)")
    synth.add_argument("--val", type=int, default=200, help="val images (default 200)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    synth.add_argument("--force", action="store_true", help="replace a non-empty --out folder")

    stats = add_command(
        actions,
        "stats",
        _stats,
        help="validate a COCO-layout split and print its statistics",
        description="Validate a split (JSON structure, every annotation, every image file) and "
        "print counts: images, people, keypoints per person, crowd regions, size classes.",
    )
    add_dataset(stats)
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.add_argument(
        "--skip_image_check",
        "--skip-image-check",
        action="store_true",
        help="do not open the image files (by default each is decoded and its size checked)",
    )

    show = add_command(
        actions,
        "show",
        _show,
        help="draw ground-truth skeletons and loss masks of a few images",
        description="Write NUM images of the split with their skeletons drawn and ignored "
        "(masked) regions shaded, to check annotations by eye.",
    )
    add_dataset(show)
    show.add_argument("--out", required=True, type=Path, help="folder for the pictures")
    show.add_argument("-n", "--num", type=int, default=8, help="number of images (default 8)")
    show.add_argument("--seed", type=int, default=0, help="which images are picked")
    show.add_argument(
        "--pose_config",
        "--pose-config",
        type=Path,
        default=None,
        help="skeleton YAML (default: 18 joints)",
    )

    spec_show = add_command(
        add_group(commands, "spec", "check and print experiment specs"),
        "show",
        _spec_show,
        help="print the resolved spec (every field, after -o overrides)",
        description="Load a spec, apply overrides, check every field and print the result.",
    )
    add_experiment_spec(spec_show)


def _synth(args: argparse.Namespace) -> int:
    from bpnet.data.synth import generate_dataset

    summary = generate_dataset(args.out, args.train, args.val, seed=args.seed, force=args.force)
    print(f"wrote synthetic COCO-format dataset to {args.out}")
    print(json.dumps(summary, indent=2))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from bpnet.data.stats import dataset_stats, format_stats

    stats = dataset_stats(args.root, args.split, check_images=not args.skip_image_check)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _show(args: argparse.Namespace) -> int:
    from bpnet.data.preview import write_previews
    from bpnet.pose import load_pose_config

    pose = load_pose_config(args.pose_config)
    for path in write_previews(
        args.root, args.split, args.out, args.num, seed=args.seed, pose=pose
    ):
        print(path)
    return 0


def _spec_show(args: argparse.Namespace) -> int:
    from bpnet.config import dump_spec, load_experiment_spec, resolve_pose_config
    from bpnet.models import build_model, describe_widths

    spec = load_experiment_spec(args.spec, args.overrides)
    pose = resolve_pose_config(spec.dataloader)  # the skeleton file must load too
    print(dump_spec(spec), end="")
    # what num_filters and the width multiplier build (stage widths are not scaled alike)
    print(f"# model as built: {describe_widths(build_model(spec.model, pose))}")
    return 0
