"""The `bpnet` command line: it parses arguments and calls one library function per command.

Each command names that function (:mod:`bpnet.cli.commands`). Errors a user can cause
(:class:`bpnet.errors.BpnetError`) print one line and exit with 2. docs/CLI.md describes every
command.
"""

import argparse
import importlib
import sys
from collections.abc import Sequence

from bpnet import __version__
from bpnet.cli.commands import bench, convert, dataset, demo, evaluate, export, prune, train
from bpnet.errors import BpnetError

EXIT_USER_ERROR = 2
COMMAND_GROUPS = (dataset, train, evaluate, prune, bench, export, convert, demo)  # --help's order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bpnet",
        description="Bottom-up multi-person pose estimation: TAO BodyPoseNet's workflow, any CPU.",
        epilog="details of every command: docs/CLI.md",
    )
    parser.add_argument("--version", action="version", version=f"bpnet {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    for add_group in COMMAND_GROUPS:
        add_group(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    options = vars(args)
    parser, target = options.pop("parser"), options.pop("target")
    if unknown:  # the subcommand's usage, not the top level's, says what it takes
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    module, name = target.split(":")
    try:
        result = getattr(importlib.import_module(module), name)(**options)
        if isinstance(result, int):  # torchrun's exit status (bpnet train --gpus N)
            return result
        if result:
            print(result)
        return 0
    except BpnetError as err:
        print(f"bpnet: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:
        from bpnet.io import DiskFullError, is_disk_full

        if not is_disk_full(err):
            raise
        # a write outside bpnet.io's atomic writers (a log line, a temporary file)
        print(f"bpnet: error: {DiskFullError(err.filename)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("bpnet: interrupted", file=sys.stderr)
        return 130
