"""``bpnet evaluate`` and ``bpnet inference``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bpnet.cli.options import (
    add_command,
    add_dataset,
    add_inference_spec,
    add_key,
    add_model,
    add_results_dir,
    fmt_ap,
)


def add_parsers(commands) -> None:
    evaluate = add_command(
        commands,
        "evaluate",
        _evaluate,
        help="COCO keypoint AP of a model (or of the decoder alone: --oracle)",
        description="Find people in every image of a split, score them with pycocotools "
        "(OKS keypoint AP, maxDets 20), and write detections_coco_format.json, results.json, "
        "results.csv and the resolved infer_spec.yaml into RESULTS_DIR. The inference spec "
        "sets the mode: default (keep aspect ratio, adjust the network input), strict "
        "(keep_aspect_ratio_mode: pad_image_input, fixed input_shape) or multi-scale.",
    )
    add_inference_spec(evaluate, "heatmap_threshold=0.2")
    add_model(
        evaluate,
        "model to evaluate: .pth, .onnx or .engine (required unless --oracle, --detections or "
        "the inference spec's model_path)",
        aliases=("--model_filename",),
    )
    add_key(evaluate)
    add_dataset(evaluate)
    add_results_dir(evaluate, "folder for the result files")
    evaluate.add_argument(
        "-e",
        "--experiment_spec",
        dest="spec",
        type=Path,
        default=None,
        help="training spec (skeleton, target sigma and PAF width); default: the inference "
        "spec's train_spec, else TAO's defaults",
    )
    evaluate.add_argument(
        "--oracle",
        action="store_true",
        help="evaluate the decoder alone: ground truth -> encoder -> decoder -> AP, the upper "
        "bound a trained model can reach with these settings (no -m needed)",
    )
    evaluate.add_argument(
        "--oracle_resolution",
        "--oracle-resolution",
        choices=("network", "full"),
        default="network",
        help="oracle at the network inputs the spec describes, or at full image resolution",
    )
    evaluate.add_argument(
        "--bf16",
        action="store_true",
        help="run the model under bfloat16 autocast with channels-last memory (much faster on "
        "CPUs with AVX-512 BF16 / AMX)",
    )
    evaluate.add_argument(
        "--detections",
        type=Path,
        default=None,
        help="score this COCO keypoint results file instead of running anything",
    )

    inference = add_command(
        commands,
        "inference",
        _inference,
        help="find people in your images with a .pth, .onnx or .engine model",
        description="Run a model on an image or a folder of images; write detections.json "
        "(COCO keypoint results plus file_name) and images/ with the skeletons drawn into "
        "RESULTS_DIR. Unreadable images are skipped and listed in skipped_images.json (exit 0; "
        "2 with --strict, or when no image could be read). The inference spec sets the input "
        "geometry and decoder thresholds.",
    )
    add_model(
        inference,
        "model file: .pth, .onnx (FP32/FP16/INT8/deployable) or .engine (required unless the "
        "inference spec gives model_path)",
        aliases=("--model_filename",),
    )
    add_key(inference)
    inference.add_argument(
        "--input",
        type=Path,
        required=True,
        help="an image file, a folder of images, or a JSON file listing images (a list of "
        "paths, or a COCO file: its image ids are kept); a video file; a camera index (0)",
    )
    inference.add_argument(
        "--input_type",
        choices=("image", "dir", "json", "video", "camera"),
        default=None,
        help="what --input is (default: told by --input itself)",
    )
    inference.add_argument(
        "--batch_size", type=int, default=4, help="video frames per network batch (default 4)"
    )
    inference.add_argument(
        "--max_frames", type=int, default=None, help="stop a video or camera after N frames"
    )
    add_inference_spec(inference, "heatmap_threshold=0.2")
    add_results_dir(inference, "folder for the results")
    inference.add_argument(
        "--dump_visualizations",
        action="store_true",
        help="accepted for TAO compatibility: pictures are written unless --no_visualizations",
    )
    inference.add_argument(
        "--no_visualizations", action="store_true", help="write detections.json only"
    )
    inference.add_argument(
        "--threads",
        type=int,
        default=None,
        help="ONNX Runtime threads (default: as many as PyTorch uses)",
    )
    inference.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable image (exit 2, nothing written); by default such "
        "images are skipped and listed in skipped_images.json",
    )


def _evaluate(args: argparse.Namespace) -> int:
    from bpnet.config import load_inference_spec
    from bpnet.evaluate.evaluate import run_evaluation

    report = run_evaluation(
        args.root,
        args.split,
        args.results_dir,
        load_inference_spec(args.inference_spec, args.overrides),
        model=args.model,
        experiment_spec=args.spec,
        oracle=args.oracle,
        oracle_resolution=args.oracle_resolution,
        detections=args.detections,
        bf16=args.bf16,
        key=args.key,
    )
    print(report.summary)
    print(
        f"AP {fmt_ap(report.metrics['AP'])}  ({report.info['mode']}, {report.info['source']}, "
        f"{report.info['images']} images); results in {args.results_dir}"
    )
    return 0


def _inference(args: argparse.Namespace) -> int:
    from bpnet.config import load_inference_spec
    from bpnet.inference.infer import run_inference
    from bpnet.inference.video import is_video_input, run_video

    spec = load_inference_spec(args.inference_spec, args.overrides)
    if is_video_input(args.input, args.input_type):
        print(
            run_video(
                args.model,
                args.input,
                args.results_dir,
                spec,
                input_type=args.input_type,
                draw=not args.no_visualizations,
                threads=args.threads,
                key=args.key,
                batch_size=args.batch_size,
                max_frames=args.max_frames,
            ).line
        )
        return 0
    summary = run_inference(
        args.model,
        args.input,
        args.results_dir,
        spec,
        input_type=args.input_type,
        draw=not args.no_visualizations,
        threads=args.threads,
        key=args.key,
        strict=args.strict,
    )
    line = f"{summary['people']} people in {summary['images']} images"
    if summary["skipped"]:
        names = [path.name for path, _ in summary["skipped"]]
        shown = ", ".join(names[:5]) + (f", ... ({len(names) - 5} more)" if len(names) > 5 else "")
        listed = summary["skipped_file"]
        line += f"; {len(names)} unreadable image(s) skipped: {shown} (listed in {listed})"
    print(f"{line}; results in {args.results_dir}")
    return 0
