"""Every command's options, one function per command group, in the order of ``bpnet --help``.

Each command names the library function it runs (:func:`~bpnet.cli.options.add_command`); an
option's dest is that function's parameter name. docs/CLI.md explains the options further.
"""

from pathlib import Path

from bpnet.cli.options import (
    add_command,
    add_dataset,
    add_experiment_spec,
    add_group,
    add_inference_spec,
    add_key,
)

TAO = "accepted for TAO compatibility"


def dataset(commands) -> None:
    """``bpnet dataset synth|stats|show`` and ``bpnet spec show``."""
    actions = add_group(commands, "dataset", "make, check and look at datasets")
    synth = "write a synthetic dataset in the COCO layout"
    add = add_command(actions, "synth", "bpnet.data.synth:synth_command", synth)
    add("--out", type=Path, required=True, help="output folder (new or empty)")
    add("--train", type=int, default=1000, help="train images")
    add("--val", type=int, default=200, help="val images")
    add("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    add("--difficulty", choices=("standard", "easy"), default="standard", help="of the scenes")
    add("--force", action="store_true", help="replace a non-empty --out folder")

    stats = "validate a split and print its statistics"
    add = add_command(actions, "stats", "bpnet.data.stats:stats_command", stats)
    add_dataset(add)
    add("--json", dest="as_json", action="store_true", help="print the statistics as JSON")
    add("--skip_image_check", "--skip-image-check", action="store_true", help="open no image file")

    show = "draw the ground truth and loss masks of a few images"
    add = add_command(actions, "show", "bpnet.data.preview:show_command", show)
    add_dataset(add)
    add("--out", type=Path, required=True, help="folder for the pictures")
    add("-n", "--num", type=int, default=8, help="number of images")
    add("--seed", type=int, default=0, help="which images are picked")
    add("--pose_config", "--pose-config", type=Path, help="skeleton YAML; default: 18 joints")

    actions = add_group(commands, "spec", "check and print experiment specs")
    add = add_command(actions, "show", "bpnet.models:spec_show_command", "print the resolved spec")
    add_experiment_spec(add)


def train(commands) -> None:
    """``bpnet train``."""
    train = "train a model (rerun the same command to resume)"
    add = add_command(commands, "train", "bpnet.train.trainer:train_command", train)
    add_experiment_spec(add)
    add("-r", "--results_dir", type=Path, required=True, help="checkpoints, logs, resolved spec")
    add("-d", "--dataset", dest="root", type=Path, help="dataset root; overrides the spec's")
    add("--gpus", type=int, default=1, help="processes per node (N > 1: under torchrun)")
    add("--nodes", type=int, default=1, help="nodes (torchrun)")
    add("--node_rank", type=int, default=0, help="this node's rank (torchrun)")
    add("--master_addr", default="127.0.0.1", help="rendezvous host of node 0 (torchrun)")
    add("--master_port", type=int, default=29500, help="rendezvous port (torchrun)")
    add_key(add, "the checkpoints")


def evaluate(commands) -> None:
    """``bpnet evaluate`` and ``bpnet inference``."""
    evaluate = "COCO keypoint AP of a model, of the decoder alone or of a results file"
    add = add_command(commands, "evaluate", "bpnet.evaluate.evaluate:evaluate_command", evaluate)
    add_inference_spec(add)
    model = "a .pth, .onnx or .engine model; default: the inference spec's model_path"
    add("-m", "--model_filename", "--model", dest="model", type=Path, help=model)
    add_key(add)
    add_dataset(add)
    add("-r", "--results_dir", type=Path, required=True, help="folder for the result files")
    add("-e", "--experiment_spec", metavar="SPEC", type=Path, help="spec of --oracle, --detections")
    add("--oracle", action="store_true", help="AP of the decoder alone, on the ground truth")
    where = ("network", "full")
    text = "the oracle at the network's inputs or at full image resolution"
    add("--oracle_resolution", "--oracle-resolution", choices=where, default=where[0], help=text)
    add("--bf16", action="store_true", help="bfloat16 autocast, channels-last (.pth models)")
    add("--runtime", choices=("auto", "onnxruntime", "openvino"), help="what runs .onnx models")
    add("--detections", type=Path, help="score this COCO keypoint results file")

    inference = "find people in images with a .pth, .onnx or .engine model"
    add = add_command(commands, "inference", "bpnet.inference.infer:inference_command", inference)
    add("-m", "--model_filename", "--model", dest="model", type=Path, help=model)
    add_key(add)
    source = "an image, a folder of images, a JSON list of them, a video or a camera index"
    add("--input", dest="source", metavar="INPUT", type=Path, required=True, help=source)
    add("--input_type", choices=("image", "dir", "json", "video", "camera"), help="what --input is")
    add("--batch_size", type=int, default=4, help="video frames per network batch")
    add("--max_frames", type=int, help="stop a video or camera after this many frames")
    add_inference_spec(add)
    add("-r", "--results_dir", type=Path, required=True, help="folder for the results")
    add("--dump_visualizations", action="store_true", help=f"{TAO}: pictures are drawn anyway")
    add("--no_visualizations", dest="draw", action="store_false", help="draw no pictures")
    add("--threads", type=int, help="ONNX Runtime / OpenVINO threads; default: PyTorch's count")
    add("--runtime", choices=("auto", "onnxruntime", "openvino"), help="what runs .onnx models")
    add("--strict", action="store_true", help="stop at the first unreadable image")


def prune(commands) -> None:
    """``bpnet prune``."""
    add = add_command(commands, "prune", "bpnet.prune:prune_command", "remove filters or stages")
    add("-m", "--model", type=Path, required=True, help="trained checkpoint")
    add("-o", "--output_file", type=Path, help="pruned checkpoint to write (.pth)")
    add("-pth", "--pruning_threshold", type=float, default=0.1, help="keep filters normed above")
    add("-eq", "--equalization_criterion", default="union", help="how coupled convs' ranks merge")
    add("-pg", "--pruning_granularity", type=int, default=8, help="kept widths: multiples of this")
    add("-nf", "--min_num_filters", type=int, default=16, help="minimum filters per layer")
    add("-n", "--normalizer", default="max", help="per-layer normalisation: max or L2")
    add("-el", "--excluded_layers", nargs="*", default=[], metavar="LAYER", help="convs left whole")
    add("--rank_on", dest="images", metavar="DIR", type=Path, help="rank filters on these pictures")
    add("--stages", type=int, metavar="N", help="keep only the first N stages (then prune)")
    add("--no_refit", dest="refit", action="store_false", help="do not refit convs (--rank_on)")
    add("--sweep", metavar="T1,T2,...", help="print the cost at each threshold, write no model")
    add("--input_size", type=int, nargs=2, metavar=("H", "W"), help="where GMACs are counted")
    add("--report", type=Path, help="JSON report; default: <OUT stem>_prune_report.json")
    add("--force", action="store_true", help="replace an existing -o or --report file")
    add_key(add, "the pruned model")


def bench(commands) -> None:
    """``bpnet bench data|decode|model``."""
    actions = add_group(commands, "bench", "speed benchmarks (docs/BENCHMARKS.md)", "WHAT")
    data = "data pipeline throughput (samples/s per core)"
    add = add_command(actions, "data", "bpnet.bench.data:bench_data_command", data)
    add_experiment_spec(add, required=False)
    add_dataset(add)
    add("--samples", type=int, default=200, help="samples to time")
    add("--workers", type=int, default=0, help="DataLoader worker processes")
    add("--eval", dest="train", action="store_false", help="time the evaluation pipeline")

    decode = "decoder ms per frame (and encoder ms per sample)"
    add = add_command(actions, "decode", "bpnet.bench.decode:bench_decode_command", decode)
    add_inference_spec(add)
    add("--people", type=int, nargs="+", default=[1, 5, 20], help="people per frame")
    add("--frames", type=int, default=20, help="frames per count")
    model = "network ms/frame and FPS: models x sizes x runtimes x batches, vs OpenPose"
    add = add_command(actions, "model", "bpnet.bench.model:bench_model_command", model)
    add("-m", "--model", dest="models", metavar="MODEL", type=Path, action="append", required=True)
    add("-r", "--results_dir", type=Path, required=True, help="bench.json, bench.md, plots")
    add("--sizes", default="224x320,288x384,320x448,368x656", help="network inputs, HxW,...")
    add("--runtimes", default="torch,ort,ort-int8,openvino,openvino-int8", help="+ openvino-bf16")
    add("--batch", default="1,4", help="batch sizes, ...")
    add("--rounds", type=int, default=5, help="timed rounds, each calling every cell once")
    add("--baseline", default="openpose_coco", help="a preset (random weights), a model or none")
    add("--ap", action="append", metavar="NAME[:RUNTIME]=AP", help="a model's AP (repeatable)")
    add("--end_to_end", action="store_true", help="also time pixels -> people (batch 1)")
    add("--cal_image_dir", type=Path, help="INT8 calibration images, the end-to-end picture")


def export(commands) -> None:
    """``bpnet export`` and ``bpnet calibration sample``."""
    export = "ONNX (FP32/FP16/INT8), calibration cache, TensorRT engine, deployable model"
    add = add_command(commands, "export", "bpnet.export.exporter:export_command", export)
    add("-m", "--model", type=Path, required=True, help=".pth checkpoint")
    add("-o", "--output_file", dest="output", type=Path, required=True, help="output .onnx file")
    add("-e", "--experiment_spec", type=Path, help=f"{TAO}: the checkpoint's spec is used")
    add("-t", "--backend", "--export_format", choices=("onnx", "tfonnx"), help=f"{TAO}; ignored")
    add("--data_type", choices=("fp32", "fp16", "int8"), default="fp32", help="precision")
    add("--engine_file", type=Path, help="also build a TensorRT engine here")
    add("--cal_image_dir", type=Path, help="INT8 calibration images")
    add("--cal_cache_file", type=Path, help="TensorRT calibration cache; default: OUT.cal.bin")
    add("--cal_data_file", type=Path, help="calibration tensorfile: reused when it exists")
    add("--batches", type=int, default=10, help="calibration batches")
    add("--batch_size", type=int, default=1, help="images per calibration batch")
    add("-d", "--input_dims", metavar="H,W,C", help="fixed input size; default: dynamic H, W")
    layouts = ("channels_last", "channels_first")
    add("-i", "--data_format", choices=layouts, default=layouts[0], help="NHWC or NCHW")
    add("--sdk_compatible_model", dest="sdk_compatible", action="store_true", help="deployable")
    add("-u", "--upsample_ratio", type=int, default=4, help="deployable model's PAF upsampling")
    add("--sdk_input_dtype", choices=("uint8", "float32"), default="uint8", help="deployable input")
    methods = ("minmax", "percentile", "entropy")
    add("--cal_method", choices=methods, default=methods[0], help="INT8 activation ranges")
    add("--reduce_range", action="store_true", help="7-bit INT8 weights")
    add("--equalize", choices=("on", "off"), default="on", help="exact rewrite for INT8 scales")
    add("--sensitivity", choices=("auto", "off"), default="auto", help="keep fragile nodes FP32")
    add("--sensitivity_margin", type=float, default=10.0, metavar="DB", help="auto's FP32 margin")
    add("--keep_fp32", default="", metavar="NODE,...", help="ONNX nodes to keep in FP32")
    add("--max_batch_size", type=int, default=1, help="largest batch of a TensorRT engine")
    add("--force", action="store_true", help="overwrite existing outputs")
    add_key(add, "the ONNX models")

    actions = add_group(commands, "calibration", "INT8 calibration helpers")
    target = "bpnet.export.calibration:calibration_sample_command"
    add = add_command(actions, "sample", target, "copy N images with enough labelled people")
    add("-a", "--annotations", type=Path, required=True, help="COCO keypoints JSON")
    add("-i", "--images", type=Path, required=True, help="the folder of its file_names")
    add("-o", "--out", type=Path, required=True, help="new or empty folder")
    add("-n", "--num", type=int, default=2000, help="images to copy")
    add("-pth", "--pth", type=int, default=1, help="least people per image")
    add("-kth", "--kth", type=int, default=5, help="least labelled keypoints per person")
    add("--randomize", action="store_true", help="a random sample instead of the first N")
    add("--seed", type=int, default=0, help="seed of --randomize")


def convert(commands) -> None:
    """``bpnet import``."""
    network = "bring an OpenPose-family network trained elsewhere into bpnet"
    add = add_command(commands, "import", "bpnet.convert:import_model", network)
    add("--from", dest="kind", choices=("tfpose", "onnx"), required=True, help="what MODEL is")
    add("model", type=Path, metavar="MODEL", help="the file to import")
    add("-o", "--output", type=Path, required=True, help=".pth (tfpose) or .onnx (onnx) to write")
    add("--layout", type=Path, help="--from onnx: the YAML layout of its input and outputs")
    add("--force", action="store_true", help="overwrite an existing output")
    add_key(add, "the output")


def demo(commands) -> None:
    """``bpnet demo``."""
    add = add_command(commands, "demo", "bpnet.demo:demo_command", "the whole workflow, one report")
    add("-r", "--results_dir", dest="out", type=Path, default=Path("runs/demo"), help="its folder")
    add("--budget", metavar="MINUTES", type=float, help="training minutes (default: 10)")
    add("--data", metavar="ROOT", type=Path, help="a COCO-layout dataset, not synthetic pictures")
