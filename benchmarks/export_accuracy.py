"""Strict-mode COCO AP of one checkpoint in every exported form: PyTorch FP32, ONNX FP32, FP16
and INT8 (ONNX Runtime), the figures issue 6 asks for.

Usage::

    python benchmarks/export_accuracy.py --checkpoint runs/demo1k_train/model_epoch_030.pth \\
        -d runs/demo1k --split val --cal_image_dir runs/demo1k/train --out runs/export_accuracy

Every model is exported with ``bpnet export`` (static input of the strict-mode spec's size,
288x384 unless ``--infer_spec`` names another, INT8 calibrated on ``--batches x --batch_size``
images of ``--cal_image_dir``) and evaluated with ``bpnet evaluate`` and that spec. Prints a
Markdown table (and writes it to ``--out/export_accuracy.md``); the exported files and every
evaluation stay in ``--out``.
Speed is ``benchmarks/export_speed.py``'s job: this script may share the machine.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from bpnet.config import load_inference_spec
from bpnet.evaluate.evaluate import evaluate
from bpnet.export import ExportOptions, run_export
from bpnet.inference.runtime import load_model
from bpnet.io import write_text_atomic

STRICT = "specs/infer_spec_strict.yaml"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("-d", "--root", type=Path, required=True, help="dataset root")
    parser.add_argument("--split", default="val")
    parser.add_argument("--cal_image_dir", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--cal_method", default="percentile", help="minmax, entropy, percentile")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--infer_spec", default=STRICT, help=f"a strict-mode inference spec (default {STRICT})"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/export_accuracy"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    spec = load_inference_spec(args.infer_spec)
    size = tuple(spec.input_shape)
    if args.out.exists():
        shutil.rmtree(args.out)
    models = {"PyTorch FP32 (.pth)": args.checkpoint}
    for data_type in ("fp32", "fp16", "int8"):
        output = args.out / f"model.{data_type}.onnx"
        options = ExportOptions(
            model=args.checkpoint, output=output, data_type=data_type, input_dims=size,
            cal_image_dir=args.cal_image_dir if data_type == "int8" else None,
            batches=args.batches, batch_size=args.batch_size, cal_method=args.cal_method,
        )  # fmt: skip
        run_export(options, say=lambda _: None)
        models[f"ONNX Runtime {data_type.upper()}"] = output
    rows = []
    for name, path in models.items():
        loaded = load_model(path)
        source = loaded.source(stage=spec.output_stage_to_use, threads=args.threads)
        report = evaluate(
            args.root, args.split, args.out / f"eval_{path.stem}", source, loaded.pose, spec,
            label=str(path),
        )  # fmt: skip
        m = report.metrics
        rows.append(
            f"| {name} | {m['AP']:.4f} | {m['AP50']:.4f} | {m['AR']:.4f} | "
            f"{report.info['detections']} |"
        )
    table = "\n".join(
        [
            f"Strict mode {size[0]}x{size[1]}, {args.root} split {args.split}, "
            f"{args.checkpoint}; INT8 calibrated ({args.cal_method}) on {args.batches} x "
            f"{args.batch_size} images of {args.cal_image_dir}; {args.threads} threads.",
            "",
            "| model | AP | AP50 | AR | detections |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    write_text_atomic(args.out / "export_accuracy.md", table + "\n")


if __name__ == "__main__":
    main()
