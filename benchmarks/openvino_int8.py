"""OpenVINO INT8 two ways, AP and speed: OpenVINO reading bpnet's QDQ model, and NNCF's
post-training quantization of the FP32 model (OpenVINO backend).

Both start from ``bpnet export`` output: ``--int8`` is the QDQ model of ``bpnet export
--data_type int8`` (its FP32 sibling ``X.int8.fp32.onnx`` is what NNCF quantizes, on the same
calibration batches, read from the ``--cal_data_file`` tensorfile that export wrote). Each form
is evaluated with bpnet's evaluation (the same decoder, geometry and COCO scoring as ``bpnet
evaluate``) and timed at one input size, interleaved with the others.

Example (needs ``pip install 'bpnet[openvino]'``, which brings nncf)::

    bpnet export -m M -o X/tfpose.int8.onnx --data_type int8 --cal_image_dir $F/train2017 \\
        --cal_data_file X/cal.tensorfile --batches 32 --batch_size 1
    python benchmarks/openvino_int8.py --int8 X/tfpose.int8.onnx --cal_data_file X/cal.tensorfile \\
        -d $F --split val2017 -i specs/infer_spec.yaml --out X/ov_int8

Prints a Markdown table (and writes it to ``--out/openvino_int8.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bpnet.bench.model import time_interleaved
from bpnet.config import load_inference_spec
from bpnet.evaluate.evaluate import evaluate
from bpnet.export.int8 import TensorfileReader
from bpnet.export.sensitivity import KEY_FP32_NODES
from bpnet.export.tensorfile import read_tensorfile
from bpnet.inference.model_io import network_input
from bpnet.inference.onnx_source import read_onnx_metadata
from bpnet.inference.openvino_source import OpenVinoSource, compile_openvino
from bpnet.inference.runtime import load_model
from bpnet.io import write_text_atomic


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--int8", type=Path, required=True, help="bpnet export's INT8 .onnx")
    parser.add_argument("--cal_data_file", type=Path, required=True, help="its tensorfile")
    parser.add_argument("-d", "--dataset", type=Path, required=True, help="COCO-layout root")
    parser.add_argument("--split", required=True, help="split to evaluate")
    parser.add_argument("-i", "--inference_spec", type=Path, help="inference spec YAML")
    parser.add_argument("--out", type=Path, required=True, help="evaluation folders, the table")
    parser.add_argument("--threads", type=int, default=2, help="OpenVINO threads")
    parser.add_argument("--size", default="288,384", help="H,W of the speed timing")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds")
    parser.add_argument(
        "--presets",
        default="performance,mixed,performance+keep",
        help="NNCF presets to try, comma-separated; +keep: leave in FP32 the nodes bpnet "
        "export's sensitivity pass kept in FP32 (read from the INT8 model's metadata)",
    )
    return parser.parse_args()


def nncf_quantize(fp32: Path, cal_data_file: Path, preset: str, keep: tuple[str, ...] = ()):
    """NNCF post-training quantization of the FP32 model on bpnet's calibration batches;
    ``keep``: ONNX node names NNCF leaves unquantized (its ignored scope)."""
    import nncf
    import openvino as ov

    loaded = load_model(fp32)
    data = read_tensorfile(cal_data_file)
    norm = loaded.train_spec.dataloader.normalization_params
    reader = TensorfileReader(data, loaded.io, norm)
    items = []
    while (item := reader.get_next()) is not None:
        items.append(item[loaded.io.input_name])
    model = ov.Core().read_model(str(fp32))
    return nncf.quantize(
        model,
        nncf.Dataset(items),
        preset=getattr(nncf.QuantizationPreset, preset.upper()),
        subset_size=len(items),
        ignored_scope=nncf.IgnoredScope(names=list(keep), validate=False),
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    fp32 = args.int8.with_suffix(".fp32" + args.int8.suffix)
    spec = load_inference_spec(args.inference_spec)
    forms = {
        "OpenVINO FP32": (fp32, None),
        "OpenVINO INT8, bpnet's QDQ model": (args.int8, None),
    }
    kept = read_onnx_metadata(args.int8).get(KEY_FP32_NODES, "")
    for preset in args.presets.split(","):
        name, _, keep = preset.partition("+")
        nodes = tuple(n for n in kept.split(",") if n) if keep else ()
        quantized = nncf_quantize(fp32, args.cal_data_file, name, nodes)
        label = f"{name}, the {len(nodes)} FP32 nodes of bpnet export" if keep else name
        forms[f"OpenVINO INT8, NNCF ({label})"] = (fp32, quantized)
    size = tuple(int(v) for v in args.size.split(","))
    rgb = np.random.default_rng(0).integers(0, 256, (1, *size, 3), np.uint8)
    rows, runners = {}, {}
    for index, (name, (path, ov_model)) in enumerate(forms.items()):
        loaded = load_model(path)
        norm = loaded.train_spec.dataloader.normalization_params
        source = OpenVinoSource(path, loaded.io, norm, threads=args.threads, model=ov_model)
        folder = args.out / f"form{index}"
        report = evaluate(args.dataset, args.split, folder, source, loaded.pose, spec, label=name)
        rows[name] = report.metrics
        feed = {loaded.io.input_name: network_input(rgb, loaded.io, norm)}
        shape = feed[loaded.io.input_name].shape
        compiled = compile_openvino(path, args.threads, shape=shape, io=loaded.io, model=ov_model)
        request = compiled.create_infer_request()
        runners[name] = lambda r=request, f=feed: r.infer(f)
    times = time_interleaved(runners, args.rounds, 2)
    lines = [
        f"| form | AP | AP50 | ms/frame ({size[0]}x{size[1]}, {args.threads} threads) |",
        "|---|---|---|---|",
    ]
    for name, metrics in rows.items():
        ms = float(np.median(times[name]))
        lines.append(f"| {name} | {metrics['AP']:.4f} | {metrics['AP50']:.4f} | {ms:.1f} |")
    table = "\n".join(lines)
    print(table)
    write_text_atomic(args.out / "openvino_int8.md", table + "\n")


if __name__ == "__main__":
    main()
