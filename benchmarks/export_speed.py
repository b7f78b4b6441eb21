"""CPU ms/frame of one network forward: PyTorch FP32 vs ONNX Runtime FP32 / FP16 / INT8.

Every model is exported by ``bpnet export`` (static input at ``--size``; INT8 calibrated on
``--cal-images`` or on synthetic pictures) and every runtime is timed in the same process,
interleaved round by round, so the ratios hold even on a machine that is not quiet. Timed:
the network alone on one prepared input (no image decoding, warping or people decoding).

Examples::

    # the demo model and TAO's default model (specs/coco_train.yaml, random weights)
    python benchmarks/export_speed.py --checkpoint runs/demo1k_train/model_epoch_030.pth \\
        --threads 2 --frames 30
    # a model before and after pruning, no TAO model
    python benchmarks/export_speed.py --checkpoint A.pth --checkpoint B.pth --no-tao
    # a quick smoke run with tiny sizes
    python benchmarks/export_speed.py --size 64,96 --frames 2 --tao-override \\
        model.backbone_attributes.width_multiplier=0.1

Prints a Markdown table (and writes it to ``--out/export_speed.md``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from bpnet.config import load_experiment_spec
from bpnet.data.synth import generate_dataset
from bpnet.export import ExportOptions, run_export
from bpnet.inference.model_io import network_input, torch_input
from bpnet.inference.onnx_source import make_session
from bpnet.inference.runtime import load_model
from bpnet.io import write_text_atomic
from bpnet.models import build_model
from bpnet.models.checkpoint import save_checkpoint
from bpnet.pose import load_pose_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", type=Path, action="append", default=[],
        help="a trained .pth to time; repeat it to compare models (say, before and after pruning)",
    )  # fmt: skip
    parser.add_argument(
        "--tao-spec", type=Path, default=Path("specs/coco_train.yaml"),
        help="spec of the random-weight TAO-default model (default specs/coco_train.yaml)",
    )  # fmt: skip
    parser.add_argument(
        "--tao-override", action="append", default=[], metavar="KEY=VALUE",
        help="override a field of --tao-spec (e.g. to shrink it for a smoke run)",
    )  # fmt: skip
    parser.add_argument("--no-tao", action="store_true", help="skip the TAO-default model")
    parser.add_argument("--size", default="288,384", help="input H,W (default 288,384)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every runtime")
    parser.add_argument("--frames", type=int, default=20, help="timed frames per runtime")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames per runtime")
    parser.add_argument("--fp16", action="store_true", help="also time the FP16 ONNX model")
    parser.add_argument("--cal-images", type=Path, default=None, help="INT8 calibration images")
    parser.add_argument("--batches", type=int, default=8, help="calibration batches")
    parser.add_argument("--out", type=Path, default=None, help="keep the exported models here")
    return parser.parse_args()


def synthetic_images(folder: Path, count: int) -> Path:
    """``count`` synthetic pictures of people (the bpnet synthetic generator's val split)."""
    generate_dataset(folder / "synth", 0, count, seed=1)
    return folder / "synth" / "val"


def export_all(checkpoint: Path, folder: Path, size, images: Path, args) -> dict[str, Path]:
    """FP32, INT8 (and FP16) ONNX files of one checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    kinds = ["fp32", "int8"] + (["fp16"] if args.fp16 else [])
    paths = {}
    for kind in kinds:
        path = folder / f"model_{kind}.onnx"
        options = ExportOptions(
            model=checkpoint, output=path, data_type=kind, input_dims=size, cal_image_dir=images,
            batches=args.batches, batch_size=1, force=True,
        )  # fmt: skip
        run_export(options, say=lambda _: None)
        paths[kind] = path
    return paths


def runners(checkpoint: Path, onnx_paths: dict[str, Path], size, threads: int) -> dict:
    """name -> zero-argument callable running one forward."""
    loaded = load_model(checkpoint)
    rgb = np.random.default_rng(0).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    out = {}
    x = torch.from_numpy(torch_input(rgb, _norm(loaded)))
    model = loaded.model

    def torch_fp32():
        with torch.no_grad():
            model(x)

    out["PyTorch FP32"] = torch_fp32
    for kind, path in onnx_paths.items():
        # what evaluate and inference run, but with idle threads asleep: spinning ONNX Runtime
        # threads would take the cores from the PyTorch frames timed between its runs
        session = make_session(path, threads, spin=False)
        io_ = load_model(path).io
        feed = {io_.input_name: network_input(rgb, io_, _norm(loaded))}
        out[f"ONNX Runtime {kind.upper()}"] = lambda s=session, f=feed: s.run(None, f)
    return out


def _norm(loaded):
    return loaded.train_spec.dataloader.normalization_params


def time_interleaved(funcs: dict, frames: int, warmup: int) -> dict[str, float]:
    """Median ms per call; one call of each runtime per round, so drift hits all alike."""
    for func in funcs.values():
        for _ in range(warmup):
            func()
    times = {name: [] for name in funcs}
    for _ in range(frames):
        for name, func in funcs.items():
            start = time.perf_counter()
            func()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.split(","))[:2]
    with tempfile.TemporaryDirectory(prefix="bpnet-bench-") as tmp:
        work = args.out or Path(tmp)
        images = args.cal_images or synthetic_images(Path(tmp), args.batches)
        models = {str(checkpoint): checkpoint for checkpoint in args.checkpoint}
        if not args.no_tao:
            spec = load_experiment_spec(args.tao_spec, args.tao_override)
            pose = load_pose_config()
            torch.manual_seed(0)
            path = Path(tmp) / "tao_default.pth"
            save_checkpoint(path, build_model(spec.model, pose), spec=spec, pose=pose)
            models[f"TAO default ({args.tao_spec}, random weights)"] = path
        rows = []
        for index, (name, checkpoint) in enumerate(models.items()):
            paths = export_all(checkpoint, work / f"model{index}", size, images, args)
            result = time_interleaved(
                runners(checkpoint, paths, size, args.threads), args.frames, args.warmup
            )
            base_torch, base_onnx = result["PyTorch FP32"], result["ONNX Runtime FP32"]
            for runtime, ms in result.items():
                rows.append(
                    f"| {name} | {runtime} | {ms:.1f} | {1000 / ms:.1f} | "
                    f"{base_torch / ms:.2f}x | {base_onnx / ms:.2f}x |"
                )
    cpu = platform.processor() or platform.machine()
    table = "\n".join(
        [
            f"Input {size[0]}x{size[1]}, batch 1, {args.threads} threads, median of "
            f"{args.frames} interleaved frames after {args.warmup} warm-up; CPU: {cpu}; "
            f"torch {torch.__version__}, onnxruntime {ort.__version__}.",
            "",
            "| model | runtime | ms/frame | frames/s | vs PyTorch FP32 | vs ONNX FP32 |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if args.out is not None:
        write_text_atomic(args.out / "export_speed.md", table + "\n")


if __name__ == "__main__":
    main()
