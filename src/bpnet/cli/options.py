"""What several commands share: how a command is declared, and the option groups they repeat.

Spellings follow TAO (``--experiment_spec``, ``--results_dir``, ...) where TAO has the option;
other spellings of an option are aliases, listed beside it in ``--help``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_command(commands, name: str, target: str, **kwargs) -> argparse.ArgumentParser:
    """A (sub)command that runs ``target``, ``"module:function"``; ``kwargs`` go to
    ``add_parser``.

    The module is imported only when the command runs (``bpnet --help`` loads no torch). The
    function takes the command's options as keyword arguments (their dests are its parameter
    names) and returns the text to print (or, for ``bpnet train --gpus N``, torchrun's exit
    status).
    """
    parser = commands.add_parser(name, **kwargs)
    # the parser travels with the arguments so that an unknown option shows this usage
    parser.set_defaults(target=target, parser=parser)
    return parser


def add_group(commands, name: str, help: str, metavar: str = "ACTION"):
    """A command made of actions (``bpnet dataset synth``): the actions' subparsers."""
    parser = commands.add_parser(name, help=help)
    return parser.add_subparsers(metavar=metavar, required=True)


def add_experiment_spec(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``-e SPEC`` and repeatable ``-o KEY.SUB=VALUE`` overrides."""
    parser.add_argument(
        "-e",
        "--experiment_spec",
        "--spec",
        required=required,
        type=Path,
        help="experiment spec YAML (see specs/); omitted keys keep their documented defaults"
        + ("" if required else "; default: TAO's defaults"),
    )
    parser.add_argument(
        "-o",
        "--override",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.SUB=VALUE",
        help="override one spec field, e.g. -o dataloader.batch_size=4 (repeatable; the value "
        "is parsed as YAML)",
    )


def add_inference_spec(parser: argparse.ArgumentParser, example: str) -> None:
    """``-i INFER_SPEC`` and repeatable ``-o KEY=VALUE`` overrides of its fields."""
    parser.add_argument(
        "-i",
        "--inference_spec",
        type=Path,
        default=None,
        help="inference spec YAML (TAO's infer_spec fields: input geometry, decoder "
        "settings); default: TAO's defaults",
    )
    parser.add_argument(
        "-o",
        "--override",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override an inference-spec field, e.g. -o {example} (repeatable)",
    )


def add_dataset(parser: argparse.ArgumentParser) -> None:
    """``-d ROOT --split SPLIT``: a split in the COCO layout."""
    parser.add_argument(
        "-d",
        "--dataset",
        dest="root",
        required=True,
        type=Path,
        help="dataset root in the COCO layout: ROOT/annotations/person_keypoints_<split>.json "
        "and ROOT/<split>/ images",
    )
    parser.add_argument("--split", required=True, help="split name, e.g. val2017 or train")


def add_model(
    parser: argparse.ArgumentParser, help: str, *, required: bool = False, aliases=()
) -> None:
    """``-m MODEL``."""
    parser.add_argument(
        "-m", *aliases, "--model", dest="model", type=Path, required=required, help=help
    )


def add_results_dir(parser: argparse.ArgumentParser, help: str) -> None:
    """``-r RESULTS_DIR``."""
    parser.add_argument("-r", "--results_dir", type=Path, required=True, help=help)


def add_key(parser: argparse.ArgumentParser, writes: str = "") -> None:
    """TAO's ``-k KEY``: the key encrypted models are read (and, with ``writes``, written) with."""
    parser.add_argument(
        "-k",
        "--key",
        default=None,
        help="TAO's model key: encrypted models are read with it"
        + (f" and {writes} are encrypted with it (AES-256-GCM)" if writes else "")
        + "; without -k models are plain files",
    )


def add_force(parser: argparse.ArgumentParser, help: str = "overwrite existing outputs") -> None:
    parser.add_argument("--force", action="store_true", help=help)
