"""``bpnet evaluate`` and ``bpnet inference``."""

from __future__ import annotations

from pathlib import Path

from bpnet.cli.options import (
    add_command,
    add_dataset,
    add_inference_spec,
    add_key,
    add_model,
    add_results_dir,
)


def add_parsers(commands) -> None:
    evaluate = add_command(
        commands,
        "evaluate",
        "bpnet.evaluate.evaluate:evaluate_command",
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
        "bpnet.inference.infer:inference_command",
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
        dest="source",
        type=Path,
        required=True,
        help="an image file, a folder of images, or a JSON file listing images (a list of "
        "paths, or a COCO file: its image ids are kept)",
    )
    inference.add_argument(
        "--input_type",
        choices=("image", "dir", "json"),
        default=None,
        help="what --input is (default: told by --input itself)",
    )
    add_inference_spec(inference, "heatmap_threshold=0.2")
    add_results_dir(inference, "folder for the results")
    inference.add_argument(
        "--dump_visualizations",
        action="store_true",
        help="accepted for TAO compatibility: pictures are written unless --no_visualizations",
    )
    inference.add_argument(
        "--no_visualizations", dest="draw", action="store_false", help="write detections.json only"
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
