"""``bpnet export`` and ``bpnet calibration sample``."""

from __future__ import annotations

from pathlib import Path

from bpnet.cli.options import add_command, add_force, add_group, add_key, add_model


def add_parsers(commands) -> None:
    export = add_command(
        commands,
        "export",
        "bpnet.export.exporter:export_command",
        help="ONNX (FP32/FP16/INT8), calibration cache, TensorRT engine, deployable model",
        description="Export a .pth checkpoint to ONNX (opset 17, one file, bpnet metadata "
        "inside so bpnet evaluate/inference run it alone). INT8: ONNX Runtime QDQ model "
        "(per-channel int8 weights, uint8 activations) calibrated on --batches x "
        "--batch_size images of --cal_image_dir pre-processed like strict-mode inference; "
        "writes the reusable --cal_data_file, the TensorRT-format --cal_cache_file and the "
        "FP32 model the cache belongs to (OUT.fp32.onnx); nodes that INT8 alone degrades "
        "far more than the median node stay FP32 (--sensitivity). --engine_file builds a TensorRT "
        "engine (needs tensorrt and a GPU). TAO's option names; see docs/EXPORT.md.",
    )
    add_model(export, ".pth checkpoint", required=True)
    add = export.add_argument
    add("-o", "--output_file", dest="output", type=Path, required=True, help="output .onnx file")
    add(
        "-e",
        "--experiment_spec",
        type=Path,
        default=None,
        help="training spec (accepted for TAO compatibility: the checkpoint's stored spec is used)",
    )
    add(
        "-t",
        "--backend",
        "--export_format",
        dest="backend",
        choices=("onnx", "tfonnx"),
        default="onnx",
        help="accepted for TAO compatibility: both give the same ONNX model",
    )
    add(
        "--data_type",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="precision of the ONNX model (and of the engine); default fp32",
    )
    add(
        "--engine_file",
        type=Path,
        default=None,
        help="also build a TensorRT engine here (writes ENGINE.json beside it)",
    )
    add("--cal_image_dir", type=Path, default=None, help="calibration images (INT8)")
    add(
        "--cal_cache_file",
        type=Path,
        default=None,
        help="TensorRT-format calibration cache to write (default OUT.cal.bin)",
    )
    add(
        "--cal_data_file",
        type=Path,
        default=None,
        help="calibration tensorfile: reused when it exists, else written from --cal_image_dir",
    )
    add("--batches", type=int, default=10, help="calibration batches (10)")
    add("--batch_size", type=int, default=1, help="images per batch (1)")
    add(
        "-d",
        "--input_dims",
        default=None,
        metavar="H,W,C",
        help="fixed input size, e.g. 288,384,3 (or 3,288,384); default: dynamic height and "
        "width (calibration then runs at 288x384)",
    )
    add(
        "-i",
        "--data_format",
        choices=("channels_first", "channels_last"),
        default="channels_last",
        help="NHWC or NCHW input and outputs (default channels_last, as TAO)",
    )
    add(
        "--sdk_compatible_model",
        dest="sdk_compatible",
        action="store_true",
        help="deployable model: raw RGB pixels in (pre-processing inside), last stage's "
        "[PAF, heatmap] out, PAF upsampled by -u",
    )
    add(
        "-u",
        "--upsample_ratio",
        type=int,
        default=4,
        help="deployable model's in-graph PAF upsampling (1, 2, 4 or 8; default 4)",
    )
    add(
        "--sdk_input_dtype",
        choices=("uint8", "float32"),
        default="uint8",
        help="deployable model's input type (float32 for DeepStream nvinfer); default uint8",
    )
    add(
        "--cal_method",
        choices=("minmax", "entropy", "percentile"),
        default="percentile",
        help="activation range calibration (default percentile: 99.999%% of the values)",
    )
    add(
        "--reduce_range",
        action="store_true",
        help="7-bit INT8 weights (for CPUs whose int8 kernels saturate; see docs/EXPORT.md)",
    )
    add(
        "--sensitivity",
        choices=("auto", "off"),
        default="auto",
        help="INT8: auto quantizes each node alone on the calibration images and keeps in FP32 "
        "those that cost the outputs --sensitivity_margin dB of SQNR more than the median "
        "node (default auto)",
    )
    add(
        "--sensitivity_margin",
        type=float,
        default=10.0,
        metavar="DB",
        help="INT8, --sensitivity auto: a node whose output SQNR quantized alone is more than "
        "DB below the median node's (and below 40 dB) stays FP32 (default 10)",
    )
    add(
        "--keep_fp32",
        default="",
        metavar="NODE,...",
        help="INT8: ONNX node names (of OUT.fp32.onnx) to leave in FP32, comma-separated",
    )
    add("--max_batch_size", type=int, default=1, help="largest batch of a TensorRT engine (1)")
    add_force(export)
    add_key(export, "the ONNX models (then -o may end in .etlt)")

    sample = add_command(
        add_group(commands, "calibration", "INT8 calibration helpers"),
        "sample",
        "bpnet.export.calibration:calibration_sample_command",
        help="copy N calibration images with enough well-labelled people (TAO's helper)",
        description="Copy exactly N images of a COCO keypoints split into an empty folder: "
        "images with at least PTH people that have at least KTH labelled keypoints each "
        "(TAO's sample_calibration_images.py). Use the folder as --cal_image_dir.",
    )
    sample.add_argument(
        "-a", "--annotations", dest="ann_file", type=Path, required=True, help="COCO keypoints JSON"
    )
    sample.add_argument(
        "-i",
        "--images",
        dest="image_dir",
        type=Path,
        required=True,
        help="the folder its file_names are in",
    )
    sample.add_argument("-o", "--out", type=Path, required=True, help="new or empty folder")
    sample.add_argument("-n", "--num", type=int, default=2000, help="images to copy (2000)")
    sample.add_argument(
        "-pth", "--pth", dest="min_people", type=int, default=1, help="minimum people per image (1)"
    )
    sample.add_argument(
        "-kth",
        "--kth",
        dest="min_keypoints",
        type=int,
        default=5,
        help="minimum labelled keypoints per person (5)",
    )
    sample.add_argument(
        "--randomize", action="store_true", help="a random sample instead of the first N"
    )
    sample.add_argument("--seed", type=int, default=0, help="seed of --randomize")
