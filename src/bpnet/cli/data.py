"""``bpnet dataset synth|stats|show`` and ``bpnet spec show``."""

from __future__ import annotations

from pathlib import Path

from bpnet.cli.options import add_command, add_dataset, add_experiment_spec, add_group


def add_parsers(commands) -> None:
    actions = add_group(commands, "dataset", "make, check and look at datasets")
    synth = add_command(
        actions,
        "synth",
        "bpnet.data.synth.writer:synth_command",
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
        "bpnet.data.stats:stats_command",
        help="validate a COCO-layout split and print its statistics",
        description="Validate a split (JSON structure, every annotation, every image file) and "
        "print counts: images, people, keypoints per person, crowd regions, size classes.",
    )
    add_dataset(stats)
    stats.add_argument(
        "--json", dest="as_json", action="store_true", help="print the statistics as JSON"
    )
    stats.add_argument(
        "--skip_image_check",
        "--skip-image-check",
        action="store_true",
        help="do not open the image files (by default each is decoded and its size checked)",
    )

    show = add_command(
        actions,
        "show",
        "bpnet.data.preview:show_command",
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
        "bpnet.models.factory:spec_show_command",
        help="print the resolved spec (every field, after -o overrides)",
        description="Load a spec, apply overrides, check every field and print the result.",
    )
    add_experiment_spec(spec_show)
