"""How a command is declared, and the options several commands share.

Options are spelled as TAO spells them (``--experiment_spec``, ``--results_dir``, ...) where TAO
has the option; other spellings are aliases, listed beside it in ``--help``.
"""

import argparse
from collections.abc import Callable
from pathlib import Path

AddArgument = Callable[..., argparse.Action]  # a command's parser.add_argument


class HelpFormatter(argparse.HelpFormatter):
    """Each option's help line ends with its default, where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, "", [], argparse.SUPPRESS) or isinstance(action.default, bool):
            return action.help
        return f"{action.help} (default: %(default)s)"


def add_command(commands, name: str, target: str, help: str) -> AddArgument:
    """A command that runs ``target``, ``"module:function"``; returns its ``add_argument``.

    The module is imported only when the command runs (``bpnet --help`` loads no torch). The
    function takes the command's options as keyword arguments (their dests are its parameter
    names) and returns the text to print (``bpnet train --gpus N``: torchrun's exit status).
    """
    parser = commands.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
    parser.epilog = f"details: docs/CLI.md#{parser.prog.replace(' ', '-')}"
    # the parser travels with the arguments so that an unknown option shows this usage
    parser.set_defaults(target=target, parser=parser)
    return parser.add_argument


def add_group(commands, name: str, help: str, metavar: str = "ACTION"):
    """A command made of actions (``bpnet dataset synth``): the actions' subparsers."""
    parser = commands.add_parser(name, help=help, description=help)
    return parser.add_subparsers(metavar=metavar, required=True)


def add_experiment_spec(add: AddArgument, required: bool = True) -> None:
    """``-e SPEC`` and repeatable ``-o KEY.SUB=VALUE`` overrides of its fields."""
    text = "experiment spec YAML" + ("" if required else "; default: TAO's defaults")
    names = ("-e", "--experiment_spec", "--spec")
    add(*names, metavar="SPEC", type=Path, required=required, help=text)
    add_overrides(add, "KEY.SUB=VALUE", "dataloader.batch_size=4")


def add_inference_spec(add: AddArgument) -> None:
    """``-i INFER_SPEC`` and repeatable ``-o KEY=VALUE`` overrides of its fields."""
    add("-i", "--inference_spec", type=Path, help="inference spec YAML; default: TAO's defaults")
    add_overrides(add, "KEY=VALUE", "heatmap_threshold=0.2")


def add_overrides(add: AddArgument, field: str, example: str) -> None:
    text = f"set a spec field, e.g. -o {example} (repeatable; the value is YAML)"
    add("-o", "--override", dest="overrides", action="append", default=[], metavar=field, help=text)


def add_dataset(add: AddArgument) -> None:
    """``-d ROOT --split SPLIT``: a split in the COCO layout."""
    add("-d", "--dataset", dest="root", type=Path, required=True, help="dataset root (COCO layout)")
    add("--split", required=True, help="split name, e.g. val2017 or train")


def add_key(add: AddArgument, writes: str = "") -> None:
    """TAO's ``-k KEY``: encrypted models are read with it (and ``writes`` encrypted)."""
    also = f"; {writes} are encrypted with it" if writes else ""
    add("-k", "--key", help=f"TAO's model key: encrypted models are read with it{also}")
