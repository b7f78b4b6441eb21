"""INT8 sensitivity pass on a foreign FP32 ONNX model: which layers stay FP32, SQNR, ms/frame.

Made for ``pretrained/tfpose_mobilenet_v2_small/model.onnx`` (input BGR float 0..255 NCHW,
output ``maps``), whose 73 depthwise convolutions plain INT8 wrecks. The script

1. prepares the model as ONNX Runtime advises before quantization (``quant_pre_process``:
   shape inference, batch norm folded into the convolutions) and names its unnamed nodes;
2. letterboxes ``--cal-images`` train2017 images to ``--size`` (BGR float32 NCHW) and measures
   the activation ranges on them (:func:`bpnet.export.int8.calibrate_ranges`);
3. runs the sensitivity pass (:func:`bpnet.export.sensitivity.find_sensitive_layers`);
4. quantizes the model three ways: every layer (plain), the pass's FP32 layers left out
   (sensitivity), every depthwise convolution left out (depthwise_fp32, the hand-made fix);
5. prints, on ``--val-images`` val2017 images, each variant's output SQNR against FP32
   (:func:`bpnet.export.sensitivity.output_sqnr`), how many of FP32's heatmap peaks it finds
   (a rough stand-in for AP), and ms/frame of FP32 and the variants timed in one process,
   interleaved round by round.

Every model goes into ``--out`` (``fp32.onnx``, ``int8_plain.onnx``, ``int8_sensitivity.onnx``,
``int8_depthwise_fp32.onnx``) with the report as ``sensitivity.json``, so that they can be
evaluated. Example::

    python benchmarks/int8_sensitivity.py --out runs/int8_sensitivity --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import onnx

from bpnet.export.calibration import letterbox_rgb
from bpnet.export.int8 import calibrate_ranges, quantize_int8
from bpnet.export.sensitivity import (
    DEFAULT_MARGIN_DB,
    candidate_layers,
    find_sensitive_layers,
    name_unnamed_nodes,
    output_sqnr,
)
from bpnet.inference.onnx_source import make_session


class ImageReader:
    """Calibration reader over letterboxed BGR float32 NCHW images, one per batch."""

    def __init__(self, name: str, images: list[np.ndarray]):
        self.name, self.images, self.index = name, images, 0

    def get_next(self):
        if self.index >= len(self.images):
            return None
        self.index += 1
        return {self.name: self.images[self.index - 1]}

    def rewind(self):
        self.index = 0

    def __len__(self):
        return len(self.images)


def load_images(folder: Path, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """The first ``count`` images of ``folder`` (sorted): (1, 3, H, W) BGR float32 0..255."""
    paths = sorted(folder.glob("*.jpg"))[:count]
    out = []
    for path in paths:
        rgb = letterbox_rgb(cv2.imread(str(path)), size)
        out.append(np.ascontiguousarray(rgb[..., ::-1].transpose(2, 0, 1)[None], np.float32))
    return out


def peaks(maps: np.ndarray, joints: int, threshold: float = 0.1) -> set[tuple[int, ...]]:
    """(channel, y, x) of every 3x3 local maximum >= ``threshold`` of the joint heatmaps.

    Args:
        maps: (1, C, H, W) network output, joint heatmaps in the first ``joints`` channels.
    """
    heat = maps[0, :joints]
    padded = np.pad(heat, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h, w = heat.shape[1:]
    neighbours = [padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                  for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]  # fmt: skip
    is_peak = (heat >= threshold) & np.all([heat >= n for n in neighbours], axis=0)
    return {tuple(int(v) for v in index) for index in np.argwhere(is_peak)}


def found(wanted: set, got: set) -> int:
    """How many of ``wanted`` have a peak of ``got`` in the same channel within one cell."""
    return sum(
        any((c, y + dy, x + dx) in got for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        for c, y, x in wanted
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=Path("pretrained/tfpose_mobilenet_v2_small/model.onnx")
    )
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/coco_fixture"))
    parser.add_argument("--size", default="368,432", help="H,W of the network input")
    parser.add_argument("--cal-images", type=int, default=16, help="train2017 images (ranges)")
    parser.add_argument("--sensitivity-batches", type=int, default=4)
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN_DB)
    parser.add_argument("--cal-method", default="percentile")
    parser.add_argument("--val-images", type=int, default=10, help="val2017 images (SQNR, time)")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds over the images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--joints", type=int, default=18, help="joint heatmaps first in maps")
    parser.add_argument("--out", type=Path, required=True, help="folder for the models")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    args.out.mkdir(parents=True, exist_ok=True)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = args.out / "fp32.onnx"
    quant_pre_process(str(args.model), str(fp32), skip_symbolic_shape=True)
    model = onnx.load(str(fp32))
    name_unnamed_nodes(model)
    onnx.save_model(model, str(fp32))
    input_name = model.graph.input[0].name
    layers = candidate_layers(model)
    depthwise = [layer.name for layer in layers if layer.kind == "depthwise conv"]
    print(f"{args.model}: {len(layers)} candidate layers, {len(depthwise)} depthwise convs")

    reader = ImageReader(input_name, load_images(args.data / "train2017", args.cal_images, size))
    start = time.perf_counter()
    ranges = calibrate_ranges(fp32, reader, args.cal_method)
    print(f"ranges ({args.cal_method}, {len(reader)} images): {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    report = find_sensitive_layers(
        fp32, reader, ranges, margin_db=args.margin, batches=args.sensitivity_batches,
        threads=args.threads,
    )  # fmt: skip
    print(f"sensitivity pass: {time.perf_counter() - start:.0f} s")
    for line in report.lines():
        print(line)
    (args.out / "sensitivity.json").write_text(json.dumps(report.summary(), indent=1))
    by_kind: dict[str, list[float]] = {}
    for layer in report.layers:
        by_kind.setdefault(layer.kind, []).append(layer.sqnr_db)
    print("\nSQNR quantized alone, by kind (dB): kind, layers, min, median, max")
    for kind, values in sorted(by_kind.items()):
        print(
            f"  {kind}: {len(values)}, {min(values):.1f}, {statistics.median(values):.1f}, "
            f"{max(values):.1f}"
        )

    variants = {
        "int8_plain": (),
        "int8_sensitivity": report.kept_fp32,
        "int8_depthwise_fp32": tuple(depthwise),
    }
    for name, excluded in variants.items():
        quantize_int8(
            fp32, args.out / f"{name}.onnx", ranges, reader, nodes_to_exclude=excluded,
            metadata={"bpnet.int8_fp32_nodes": ",".join(excluded)},
        )  # fmt: skip

    images = load_images(args.data / "val2017", args.val_images, size)
    sessions = {
        name: make_session(args.out / f"{name}.onnx", args.threads, spin=False)
        for name in ("fp32", *variants)
    }
    outputs = {name: [s.run(None, {input_name: x}) for x in images] for name, s in sessions.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, session in sessions.items():  # interleaved: every variant in every round
            for x in images:
                start = time.perf_counter()
                session.run(None, {input_name: x})
                times[name].append(1000 * (time.perf_counter() - start))

    print(
        f"\n{len(images)} val2017 images at {size[0]}x{size[1]}, {args.threads} threads, "
        f"{args.rounds} interleaved rounds"
    )
    print(
        "peaks: 3x3 maxima >= 0.1 of the joint heatmaps; recall: FP32 peaks found within one "
        "cell, precision: peaks that match an FP32 peak"
    )
    print("| model | FP32 nodes | output SQNR vs FP32 (dB) | peak recall | peak precision "
          "| ms/frame (median) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    reference = [peaks(out[0], args.joints) for out in outputs["fp32"]]
    for name in sessions:
        kept = "all" if name == "fp32" else len(variants[name])
        sqnr = "-" if name == "fp32" else f"{output_sqnr(outputs['fp32'], outputs[name]):.1f}"
        mine = [peaks(out[0], args.joints) for out in outputs[name]]
        recall = sum(map(found, reference, mine)) / max(1, sum(map(len, reference)))
        precision = sum(map(found, mine, reference)) / max(1, sum(map(len, mine)))
        print(
            f"| {name} | {kept} | {sqnr} | {recall:.2f} | {precision:.2f} "
            f"| {statistics.median(times[name]):.1f} |"
        )


if __name__ == "__main__":
    main()
