"""The `bpnet` command line. It only parses arguments and calls one library function per command.

Errors a user can cause (:class:`bpnet.errors.BpnetError`) print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bpnet import __version__
from bpnet.errors import BpnetError

EXIT_USER_ERROR = 2


def _add_spec_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "-e",
        "--experiment_spec",
        "--spec",
        dest="spec",
        required=required,
        type=Path,
        help="experiment spec YAML (see specs/); omitted keys keep their documented defaults"
        + ("" if required else "; default: TAO's defaults"),
    )
    parser.add_argument(
        "-o",
        "--override",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.SUB=VALUE",
        help="override one spec field, e.g. -o dataloader.batch_size=4 (repeatable; the value "
        "is parsed as YAML)",
    )


def _add_dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-d",
        "--dataset",
        dest="root",
        required=True,
        type=Path,
        help="dataset root in the COCO layout: ROOT/annotations/person_keypoints_<split>.json "
        "and ROOT/<split>/ images",
    )
    parser.add_argument("--split", required=True, help="split name, e.g. val2017 or train")


def _cmd_dataset_synth(args: argparse.Namespace) -> int:
    from bpnet.data.synth import generate_dataset

    summary = generate_dataset(args.out, args.train, args.val, seed=args.seed, force=args.force)
    print(f"wrote synthetic COCO-format dataset to {args.out}")
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_dataset_stats(args: argparse.Namespace) -> int:
    from bpnet.data.stats import dataset_stats, format_stats

    stats = dataset_stats(args.root, args.split, check_images=not args.skip_image_check)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _cmd_dataset_show(args: argparse.Namespace) -> int:
    from bpnet.data.preview import write_previews
    from bpnet.pose import load_pose_config

    paths = write_previews(
        args.root, args.split, args.out, args.num, seed=args.seed,
        pose=load_pose_config(args.pose_config),
    )  # fmt: skip
    for path in paths:
        print(path)
    return 0


def _cmd_spec_show(args: argparse.Namespace) -> int:
    from bpnet.config import dump_spec, load_experiment_spec, resolve_pose_config

    spec = load_experiment_spec(args.spec, args.overrides)
    resolve_pose_config(spec.dataloader)  # the skeleton file must load too
    print(dump_spec(spec), end="")
    return 0


def _cmd_bench_data(args: argparse.Namespace) -> int:
    from bpnet.bench.data import bench_dataloader
    from bpnet.config import load_experiment_spec

    spec = load_experiment_spec(args.spec, args.overrides)
    result = bench_dataloader(
        spec, args.root, args.split, samples=args.samples, workers=args.workers,
        train=not args.eval,
    )  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bpnet.config import (
        load_experiment_spec,
        load_inference_spec,
        resolve_pose_config,
        save_spec,
    )
    from bpnet.evaluate.evaluate import evaluate, evaluate_detections

    spec = load_inference_spec(args.inference_spec, args.overrides)
    train_spec = load_experiment_spec(args.spec or spec.train_spec)
    pose = resolve_pose_config(train_spec.dataloader)
    if args.detections is not None:
        if args.model is not None or args.oracle:
            raise BpnetError("--detections scores an existing file: drop -m / --oracle")
        report = evaluate_detections(args.root, args.split, args.detections, args.results_dir, pose)
    else:
        if args.oracle:
            from bpnet.inference import OracleSource

            if args.model is not None:
                raise BpnetError("--oracle evaluates the ground truth: drop -m MODEL")
            labels = train_spec.dataloader.label_processor_config
            source = OracleSource(
                pose,
                sigma=labels.heatmap_gaussian_sigma,
                paf_width=labels.paf_ortho_dist_thresh,
            )
            resolution, label = args.oracle_resolution, "oracle"
        else:
            from bpnet.inference.runtime import load_model

            model = args.model or spec.model_path
            if model is None:
                raise BpnetError("bpnet evaluate: give a model with -m MODEL, or use --oracle")
            loaded = load_model(model)
            pose, train_spec = loaded.pose, loaded.train_spec  # what the model was trained with
            source = loaded.source(stage=spec.output_stage_to_use, bf16=args.bf16)
            resolution, label = "network", str(model)
        report = evaluate(
            args.root, args.split, args.results_dir, source, pose, spec,
            resolution=resolution, label=label,
        )  # fmt: skip
        # the targets' sigma and PAF width and the skeleton come from here: keep it beside
        save_spec(train_spec, args.results_dir / "experiment_spec.yaml")
    print(report.summary)
    print(
        f"AP {_fmt(report.metrics['AP'])}  ({report.info['mode']}, {report.info['source']}, "
        f"{report.info['images']} images); results in {args.results_dir}"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from bpnet.config import load_experiment_spec
    from bpnet.train.distributed import launch, needs_launch
    from bpnet.train.trainer import train

    spec = load_experiment_spec(args.spec, args.overrides)  # a bad spec fails once, here
    if needs_launch(args.gpus, args.nodes):
        # the same command again, once per process, under torchrun (which sets LOCAL_RANK)
        argv = ["train", "-e", str(args.spec), "-r", str(args.results_dir)]
        argv += [f"--override={item}" for item in args.overrides]
        argv += ["-d", str(args.root)] if args.root is not None else []
        return launch(
            argv, nproc_per_node=args.gpus, nnodes=args.nodes, node_rank=args.node_rank,
            master_addr=args.master_addr, master_port=args.master_port,
        )  # fmt: skip
    summary = train(spec, args.results_dir, root=args.root, spec_path=args.spec)
    if summary["rank"] == 0 and summary["validation"] is not None:
        print(f"last validation: AP {_fmt(summary['validation'].get('AP'))}")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _cmd_prune(args: argparse.Namespace) -> int:
    from bpnet.io import write_json_atomic
    from bpnet.prune import (
        PruneSettings,
        check_report_path,
        format_report,
        format_sweep,
        parse_thresholds,
        prune_checkpoint,
        sweep_checkpoint,
    )

    # TAO takes -el a b c; the form is -el a,b,c: both work
    excluded = tuple(name for item in args.excluded_layers for name in item.split(",") if name)
    settings = PruneSettings(
        threshold=args.pruning_threshold, equalization_criterion=args.equalization_criterion,
        granularity=args.pruning_granularity, min_num_filters=args.min_num_filters,
        normalizer=args.normalizer, excluded_layers=excluded,
    )  # fmt: skip
    input_size = tuple(args.input_size) if args.input_size else None
    if args.sweep is not None:
        thresholds = parse_thresholds(args.sweep)
        if args.output_file is not None:
            raise BpnetError("--sweep compares thresholds and writes no model: drop -o")
        if args.report is not None:
            check_report_path(Path(args.report), args.force)
        table = sweep_checkpoint(args.model, settings, thresholds, input_size=input_size)
        print(format_sweep(table))
        if args.report is not None:
            write_json_atomic(args.report, table, indent=2)
            print(f"wrote {args.report}")
        return 0
    if args.output_file is None:
        raise BpnetError(
            "bpnet prune: give the pruned model's path with -o OUT.pth (or compare thresholds "
            "without writing anything: --sweep 0.01,0.05,0.1,0.2,0.5)"
        )
    report = prune_checkpoint(
        args.model, args.output_file, settings, input_size=input_size,
        report_path=args.report, force=args.force,
    )  # fmt: skip
    print(format_report(report))
    print(f"wrote {report['output']} and {report['report']}")
    return 0


def _cmd_bench_decode(args: argparse.Namespace) -> int:
    from bpnet.bench.decode import bench_decode
    from bpnet.config import load_inference_spec
    from bpnet.decode import DecoderParams

    spec = load_inference_spec(args.inference_spec, args.overrides)
    result = bench_decode(
        tuple(args.people), frames=args.frames, size=tuple(spec.input_shape),
        params=DecoderParams.from_spec(spec),
    )  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0


# export / calibration / inference (issue 6) ------------------------------------------------


def _dims(text: str) -> tuple[int, int]:
    """``--input_dims`` H,W,3 (HWC), 3,H,W (CHW, as TAO writes it for channels_first) or H,W
    -> (H, W)."""
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if len(values) == 2:
        return values[0], values[1]
    if len(values) == 3 and values[2] == 3:
        return values[0], values[1]
    if len(values) == 3 and values[0] == 3:
        return values[1], values[2]
    raise argparse.ArgumentTypeError(f"expected H,W,3 or 3,H,W (e.g. 288,384,3), got {text!r}")


def _names(text: str) -> tuple[str, ...]:
    """``--keep_fp32`` NODE,NODE,... -> the names (empty items dropped)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _cmd_export(args: argparse.Namespace) -> int:
    from bpnet.export import ExportOptions, run_export

    options = ExportOptions(
        model=args.model, output=args.output, data_type=args.data_type,
        experiment_spec=args.spec, engine_file=args.engine_file,
        cal_image_dir=args.cal_image_dir, cal_cache_file=args.cal_cache_file,
        cal_data_file=args.cal_data_file, batches=args.batches, batch_size=args.batch_size,
        input_dims=args.input_dims, data_format=args.data_format,
        sdk_compatible=args.sdk_compatible_model, upsample_ratio=args.upsample_ratio,
        sdk_input_dtype=args.sdk_input_dtype, cal_method=args.cal_method,
        reduce_range=args.reduce_range, sensitivity=args.sensitivity,
        sensitivity_margin=args.sensitivity_margin, keep_fp32=args.keep_fp32,
        max_batch_size=args.max_batch_size, force=args.force,
    )  # fmt: skip
    result = run_export(options)
    io_ = result["io"]
    size = "dynamic" if io_.size is None else f"{io_.size[0]}x{io_.size[1]}"
    print(
        f"exported {args.model} ({args.data_type}, input {io_.input_name} {io_.layout} "
        f"{io_.input_dtype} {size}); max |ONNX Runtime - PyTorch| on a test input: "
        f"{result['max_abs_diff']:.2e}"
    )
    for what, path in result["files"].items():
        print(f"  {what}: {path}")
    return 0


def _cmd_calibration_sample(args: argparse.Namespace) -> int:
    from bpnet.export.calibration import sample_calibration_images

    written = sample_calibration_images(
        args.annotations, args.images, args.out, args.num, min_people=args.pth,
        min_keypoints=args.kth, randomize=args.randomize, seed=args.seed,
    )  # fmt: skip
    print(f"copied {len(written)} calibration images to {args.out}")
    return 0


def _cmd_inference(args: argparse.Namespace) -> int:
    from bpnet.config import load_inference_spec
    from bpnet.inference.infer import run_inference

    spec = load_inference_spec(args.inference_spec, args.overrides)
    model = args.model or spec.model_path
    if model is None:
        raise BpnetError("bpnet inference: give a model with -m MODEL (.pth, .onnx or .engine)")
    summary = run_inference(
        model, args.input, args.results_dir, spec, input_type=args.input_type,
        draw=not args.no_visualizations, threads=args.threads,
    )  # fmt: skip
    print(
        f"{summary['people']} people in {summary['images']} images; results in {args.results_dir}"
    )
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    if args.source == "tfpose":
        from bpnet.convert.tfpose import import_tfpose

        if args.layout is not None:
            raise BpnetError("bpnet import --from tfpose takes no --layout (the graph says it all)")
        import_tfpose(args.model, args.output, force=args.force)
        return 0
    if args.layout is None:
        raise BpnetError(
            "bpnet import --from onnx needs --layout LAYOUT.yaml (which input and outputs the "
            "model has and their channel orders; see docs/IMPORT.md)"
        )
    from bpnet.convert.onnx_layout import import_onnx

    import_onnx(args.model, args.layout, args.output, force=args.force)
    return 0


def _add_import_parser(commands) -> None:
    parser = commands.add_parser(
        "import",
        help="bring a pretrained OpenPose-family network into bpnet",
        description="Convert a network trained elsewhere: --from tfpose reads tf-pose-"
        "estimation's frozen MobileNetV2 graph (graph_opt.pb, no TensorFlow needed) and writes "
        "a bpnet checkpoint (.pth) that evaluate, inference, export, prune and train take; "
        "--from onnx reads any OpenPose-family ONNX model with a layout file and writes a "
        "bpnet-readable ONNX model (evaluate, inference). docs/IMPORT.md.",
    )
    parser.add_argument(
        "--from", dest="source", choices=("tfpose", "onnx"), required=True,
        help="what MODEL is: tfpose (a frozen TF graph) or onnx (an ONNX model + --layout)",
    )  # fmt: skip
    parser.add_argument("model", type=Path, metavar="MODEL", help="the file to import")
    parser.add_argument(
        "-o", "--output", type=Path, required=True,
        help="the file to write: .pth for --from tfpose, .onnx for --from onnx",
    )  # fmt: skip
    parser.add_argument(
        "--layout", type=Path, default=None,
        help="--from onnx: the YAML layout of the model's input and outputs "
        "(specs/layouts/ has examples)",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.set_defaults(func=_cmd_import)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bpnet",
        description="Bottom-up multi-person pose estimation (heatmaps + PAFs): the BodyPoseNet "
        "workflow on CPU or GPU.",
    )
    parser.add_argument("--version", action="version", version=f"bpnet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # dataset ---------------------------------------------------------------------------------
    dataset = commands.add_parser("dataset", help="make, check and look at datasets")
    dataset_cmds = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)

    synth = dataset_cmds.add_parser(
        "synth",
        help="write a synthetic dataset in the official COCO keypoint layout",
        description="Write a synthetic dataset of articulated people in the official COCO "
        "layout: OUT/annotations/person_keypoints_{train,val}.json and OUT/{train,val}/ images. "
        "Every command accepts it like real COCO (splits 'train' and 'val').",
    )
    synth.add_argument("--out", required=True, type=Path, help="output folder (must be empty)")
    synth.add_argument("--train", type=int, default=1000, help="train images (default 1000)")
    synth.add_argument("--val", type=int, default=200, help="val images (default 200)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    synth.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    synth.set_defaults(func=_cmd_dataset_synth)

    stats = dataset_cmds.add_parser(
        "stats",
        help="validate a COCO-layout split and print its statistics",
        description="Validate a split (JSON structure, every annotation, every image file) and "
        "print counts: images, people, keypoints per person, crowd regions, size classes.",
    )
    _add_dataset_args(stats)
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.add_argument(
        "--skip-image-check",
        action="store_true",
        help="do not open the image files (by default each is decoded and its size checked)",
    )
    stats.set_defaults(func=_cmd_dataset_stats)

    show = dataset_cmds.add_parser(
        "show",
        help="draw ground-truth skeletons and loss masks of a few images",
        description="Write NUM images of the split with their skeletons drawn and ignored "
        "(masked) regions shaded, to check annotations by eye.",
    )
    _add_dataset_args(show)
    show.add_argument("--out", required=True, type=Path, help="folder for the pictures")
    show.add_argument("-n", "--num", type=int, default=8, help="number of images (default 8)")
    show.add_argument("--seed", type=int, default=0, help="which images are picked")
    show.add_argument(
        "--pose-config", type=Path, default=None, help="skeleton YAML (default: 18 joints)"
    )
    show.set_defaults(func=_cmd_dataset_show)

    # spec ------------------------------------------------------------------------------------
    spec = commands.add_parser("spec", help="check and print experiment specs")
    spec_cmds = spec.add_subparsers(dest="spec_command", metavar="ACTION", required=True)
    spec_show = spec_cmds.add_parser(
        "show",
        help="print the resolved spec (every field, after -o overrides)",
        description="Load a spec, apply overrides, check every field and print the result.",
    )
    _add_spec_args(spec_show)
    spec_show.set_defaults(func=_cmd_spec_show)

    # train -----------------------------------------------------------------------------------
    train = commands.add_parser(
        "train",
        help="train a model from an experiment spec (rerun the same command to resume)",
        description="Train the spec's model on dataloader.dataset_config.train_split. Writes "
        "experiment_spec.yaml, model_epoch_NNN.pth every checkpoint_n_epoch epochs, "
        "metrics.jsonl, loss_curve.png and validation/ (COCO AP every validation_every_n_epoch "
        "epochs) into RESULTS_DIR. Rerunning the same command resumes from the newest "
        "checkpoint there, with the result of an uninterrupted run.",
    )
    _add_spec_args(train)
    train.add_argument(
        "-r", "--results_dir", type=Path, required=True,
        help="folder for checkpoints, logs and the resolved spec (resumed from when it has "
        "checkpoints)",
    )  # fmt: skip
    train.add_argument(
        "-d", "--dataset", dest="root", type=Path, default=None,
        help="dataset root in the COCO layout; overrides dataloader.dataset_config.root_data_path",
    )  # fmt: skip
    train.add_argument(
        "--gpus", type=int, default=1,
        help="processes per node (one per GPU; N > 1 relaunches under torchrun, NCCL on GPUs, "
        "gloo on CPUs); default 1",
    )  # fmt: skip
    train.add_argument("--nodes", type=int, default=1, help="nodes (passed to torchrun)")
    train.add_argument("--node_rank", type=int, default=0, help="this node's rank (torchrun)")
    train.add_argument(
        "--master_addr", default="127.0.0.1", help="rendezvous host of node 0 (torchrun)"
    )
    train.add_argument("--master_port", type=int, default=29500, help="rendezvous port (torchrun)")
    train.add_argument(
        "-k", "--key", default=None,
        help="accepted for TAO compatibility and ignored: bpnet models are not encrypted",
    )  # fmt: skip
    train.set_defaults(func=_cmd_train)

    # evaluate --------------------------------------------------------------------------------
    evaluate = commands.add_parser(
        "evaluate",
        help="COCO keypoint AP of a model (or of the decoder alone: --oracle)",
        description="Find people in every image of a split, score them with pycocotools "
        "(OKS keypoint AP, maxDets 20), and write detections_coco_format.json, results.json, "
        "results.csv and the resolved infer_spec.yaml into RESULTS_DIR. The inference spec "
        "sets the mode: default (keep aspect ratio, adjust the network input), strict "
        "(keep_aspect_ratio_mode: pad_image_input, fixed input_shape) or multi-scale.",
    )
    evaluate.add_argument(
        "-i", "--inference_spec", type=Path, default=None,
        help="inference spec YAML (TAO's infer_spec fields); default: TAO's defaults",
    )  # fmt: skip
    evaluate.add_argument("-m", "--model", type=Path, default=None, help="model to evaluate")
    _add_dataset_args(evaluate)
    evaluate.add_argument(
        "-r", "--results_dir", type=Path, required=True, help="folder for the result files"
    )
    evaluate.add_argument(
        "-e", "--experiment_spec", dest="spec", type=Path, default=None,
        help="training spec (skeleton, target sigma and PAF width); default: the inference "
        "spec's train_spec, else TAO's defaults",
    )  # fmt: skip
    evaluate.add_argument(
        "-o", "--override", dest="overrides", action="append", default=[],
        metavar="KEY=VALUE", help="override an inference-spec field, e.g. -o heatmap_threshold=0.2",
    )  # fmt: skip
    evaluate.add_argument(
        "--oracle", action="store_true",
        help="evaluate the decoder alone: ground truth -> encoder -> decoder -> AP, the upper "
        "bound a trained model can reach with these settings (no -m needed)",
    )  # fmt: skip
    evaluate.add_argument(
        "--oracle-resolution", choices=("network", "full"), default="network",
        help="oracle at the network inputs the spec describes, or at full image resolution",
    )  # fmt: skip
    evaluate.add_argument(
        "--bf16", action="store_true",
        help="run the model under bfloat16 autocast with channels-last memory (much faster on "
        "CPUs with AVX-512 BF16 / AMX)",
    )  # fmt: skip
    evaluate.add_argument(
        "--detections", type=Path, default=None,
        help="score this COCO keypoint results file instead of running anything",
    )  # fmt: skip
    evaluate.set_defaults(func=_cmd_evaluate)

    # prune -----------------------------------------------------------------------------------
    prune = commands.add_parser(
        "prune",
        help="remove whole filters (TAO's rules): a smaller, faster dense model to retrain",
        description="Structured pruning with TAO BodyPoseNet's rules: per-filter L2 norm of "
        "the kernel, normalised per layer; filters above the threshold are kept, at least "
        "-nf, rounded up to a multiple of -pg; convs joined by residual adds or attention "
        "gates are decided together (-eq); output convs are never pruned. Writes the pruned "
        "checkpoint (its per-layer widths as data) and <OUT stem>_prune_report.json, and prints "
        "parameters, GMACs and the widths kept. Retrain it with bpnet train, "
        "pretrained_weights: OUT and load_graph: true. See docs/PRUNING.md.",
    )
    prune.add_argument("-m", "--model", type=Path, required=True, help="trained checkpoint")
    prune.add_argument(
        "-o", "--output_file", type=Path, default=None,
        help="pruned checkpoint to write (.pth); not with --sweep",
    )  # fmt: skip
    prune.add_argument(
        "-pth", "--pruning_threshold", type=float, default=0.1,
        help="keep filters whose normalised norm is above this (default 0.1); with -n max "
        "every norm is <= 1, so a threshold >= 1 leaves every layer at -nf filters",
    )  # fmt: skip
    prune.add_argument(
        "-eq", "--equalization_criterion", default="union",
        help="how convs coupled by element-wise ops merge their norms: union, intersection, "
        "arithmetic_mean or geometric_mean (default union)",
    )  # fmt: skip
    prune.add_argument(
        "-pg", "--pruning_granularity", type=int, default=8,
        help="kept widths are rounded up to a multiple of this (default 8)",
    )  # fmt: skip
    prune.add_argument(
        "-nf", "--min_num_filters", type=int, default=16,
        help="minimum filters kept per layer (default 16)",
    )  # fmt: skip
    prune.add_argument(
        "-n", "--normalizer", default="max",
        help="per-layer normalisation of the norms: max (divide by the largest) or L2 "
        "(divide by their L2 norm, times their number); default max",
    )  # fmt: skip
    prune.add_argument(
        "-el", "--excluded_layers", nargs="*", default=[], metavar="LAYER",
        help="convs to leave whole, by path as the report lists them (backbone.conv1_1, "
        "stage2.trunk.conv1, ...); comma- or space-separated",
    )  # fmt: skip
    prune.add_argument(
        "--sweep", default=None, metavar="T1,T2,...",
        help="print the parameters and GMACs kept at each threshold, write nothing "
        "(e.g. --sweep 0.01,0.05,0.1,0.2,0.5)",
    )  # fmt: skip
    prune.add_argument(
        "--input_size", type=int, nargs=2, default=None, metavar=("H", "W"),
        help="input size the GMACs are counted at; default: the model's training image_dims",
    )  # fmt: skip
    prune.add_argument(
        "--report", type=Path, default=None,
        help="JSON report path; default <OUT stem>_prune_report.json beside the model (with "
        "--sweep: write the sweep's table there)",
    )  # fmt: skip
    prune.add_argument(
        "--force", action="store_true", help="replace an existing -o or --report file"
    )
    prune.add_argument(
        "-k", "--key", default=None,
        help="accepted for TAO compatibility and ignored: bpnet models are not encrypted",
    )  # fmt: skip
    prune.set_defaults(func=_cmd_prune)

    # bench -----------------------------------------------------------------------------------
    bench = commands.add_parser("bench", help="speed benchmarks (results go in BENCHMARKS.md)")
    bench_cmds = bench.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    bench_data = bench_cmds.add_parser(
        "data",
        help="data loading + augmentation throughput (samples/s per core)",
        description="Measure how many training samples per second the data pipeline produces "
        "(read, decode, augment, normalise) with one thread per process.",
    )
    _add_spec_args(bench_data, required=False)
    _add_dataset_args(bench_data)
    bench_data.add_argument("--samples", type=int, default=200, help="samples to time")
    bench_data.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    bench_data.add_argument("--eval", action="store_true", help="time the evaluation pipeline")
    bench_data.set_defaults(func=_cmd_bench_data)

    bench_decode = bench_cmds.add_parser(
        "decode",
        help="decoder ms per frame at 1, 5 and 20 people (and encoder ms per sample)",
        description="Time the decoder (peaks, limb scoring, matching, assembly) on maps the "
        "encoder makes from random scenes of N people, one thread, at the spec's input_shape.",
    )
    bench_decode.add_argument(
        "-i", "--inference_spec", type=Path, default=None,
        help="inference spec (input_shape and decoder settings); default: TAO's defaults",
    )  # fmt: skip
    bench_decode.add_argument(
        "-o", "--override", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override an inference-spec field, e.g. -o output_upsampling_factor=[1,1]",
    )  # fmt: skip
    bench_decode.add_argument(
        "--people", type=int, nargs="+", default=[1, 5, 20], help="people per frame"
    )
    bench_decode.add_argument("--frames", type=int, default=20, help="frames per count")
    bench_decode.set_defaults(func=_cmd_bench_decode)

    # export / calibration / inference (issue 6) ------------------------------------------
    export = commands.add_parser(
        "export",
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
    export.add_argument("-m", "--model", type=Path, required=True, help=".pth checkpoint")
    export.add_argument(
        "-o", "--output_file", dest="output", type=Path, required=True, help="output .onnx file"
    )
    export.add_argument(
        "-e", "--experiment_spec", dest="spec", type=Path, default=None,
        help="training spec (accepted for TAO compatibility: the checkpoint's stored spec is "
        "used)",
    )  # fmt: skip
    export.add_argument(
        "-t", "--backend", "--export_format", dest="backend", choices=("onnx", "tfonnx"),
        default="onnx", help="accepted for TAO compatibility: both give the same ONNX model",
    )  # fmt: skip
    export.add_argument(
        "--data_type", choices=("fp32", "fp16", "int8"), default="fp32",
        help="precision of the ONNX model (and of the engine); default fp32",
    )  # fmt: skip
    export.add_argument(
        "--engine_file", type=Path, default=None,
        help="also build a TensorRT engine here (writes ENGINE.json beside it)",
    )  # fmt: skip
    export.add_argument(
        "--cal_image_dir", type=Path, default=None, help="calibration images (INT8)"
    )
    export.add_argument(
        "--cal_cache_file", type=Path, default=None,
        help="TensorRT-format calibration cache to write (default OUT.cal.bin)",
    )  # fmt: skip
    export.add_argument(
        "--cal_data_file", type=Path, default=None,
        help="calibration tensorfile: reused when it exists, else written from --cal_image_dir",
    )  # fmt: skip
    export.add_argument("--batches", type=int, default=10, help="calibration batches (10)")
    export.add_argument("--batch_size", type=int, default=1, help="images per batch (1)")
    export.add_argument(
        "-d", "--input_dims", type=_dims, default=None, metavar="H,W,C",
        help="fixed input size, e.g. 288,384,3 (or 3,288,384); default: dynamic height and "
        "width (calibration then runs at 288x384)",
    )  # fmt: skip
    export.add_argument(
        "-i", "--data_format", choices=("channels_first", "channels_last"),
        default="channels_last", help="NHWC or NCHW input and outputs (default channels_last, "
        "as TAO)",
    )  # fmt: skip
    export.add_argument(
        "--sdk_compatible_model", action="store_true",
        help="deployable model: raw RGB pixels in (pre-processing inside), last stage's "
        "[PAF, heatmap] out, PAF upsampled by -u",
    )  # fmt: skip
    export.add_argument(
        "-u", "--upsample_ratio", type=int, default=4,
        help="deployable model's in-graph PAF upsampling (1, 2, 4 or 8; default 4)",
    )  # fmt: skip
    export.add_argument(
        "--sdk_input_dtype", choices=("uint8", "float32"), default="uint8",
        help="deployable model's input type (float32 for DeepStream nvinfer); default uint8",
    )  # fmt: skip
    export.add_argument(
        "--cal_method", choices=("minmax", "entropy", "percentile"), default="percentile",
        help="activation range calibration (default percentile: 99.999%% of the values)",
    )  # fmt: skip
    export.add_argument(
        "--reduce_range", action="store_true",
        help="7-bit INT8 weights (for CPUs whose int8 kernels saturate; see docs/EXPORT.md)",
    )  # fmt: skip
    export.add_argument(
        "--sensitivity", choices=("auto", "off"), default="auto",
        help="INT8: auto quantizes each node alone on the calibration images and keeps in FP32 "
        "those that cost the outputs --sensitivity_margin dB of SQNR more than the median "
        "node (default auto)",
    )  # fmt: skip
    export.add_argument(
        "--sensitivity_margin", type=float, default=10.0, metavar="DB",
        help="INT8, --sensitivity auto: a node whose output SQNR quantized alone is more than "
        "DB below the median node's (and below 40 dB) stays FP32 (default 10)",
    )  # fmt: skip
    export.add_argument(
        "--keep_fp32", type=_names, default=(), metavar="NODE,...",
        help="INT8: ONNX node names (of OUT.fp32.onnx) to leave in FP32, comma-separated",
    )  # fmt: skip
    export.add_argument(
        "--max_batch_size", type=int, default=1, help="largest batch of a TensorRT engine (1)"
    )
    export.add_argument("--force", action="store_true", help="overwrite existing outputs")
    export.add_argument(
        "-k", "--key", default=None, help="accepted for TAO compatibility and ignored"
    )
    export.set_defaults(func=_cmd_export)

    calibration = commands.add_parser("calibration", help="INT8 calibration helpers")
    calibration_cmds = calibration.add_subparsers(
        dest="calibration_command", metavar="ACTION", required=True
    )
    sample = calibration_cmds.add_parser(
        "sample",
        help="copy N calibration images with enough well-labelled people (TAO's helper)",
        description="Copy exactly N images of a COCO keypoints split into an empty folder: "
        "images with at least PTH people that have at least KTH labelled keypoints each "
        "(TAO's sample_calibration_images.py). Use the folder as --cal_image_dir.",
    )
    sample.add_argument("-a", "--annotations", type=Path, required=True, help="COCO keypoints JSON")
    sample.add_argument(
        "-i", "--images", type=Path, required=True, help="the folder its file_names are in"
    )
    sample.add_argument("-o", "--out", type=Path, required=True, help="new or empty folder")
    sample.add_argument("-n", "--num", type=int, default=2000, help="images to copy (2000)")
    sample.add_argument("-pth", "--pth", type=int, default=1, help="minimum people per image (1)")
    sample.add_argument(
        "-kth", "--kth", type=int, default=5, help="minimum labelled keypoints per person (5)"
    )
    sample.add_argument(
        "--randomize", action="store_true", help="a random sample instead of the first N"
    )
    sample.add_argument("--seed", type=int, default=0, help="seed of --randomize")
    sample.set_defaults(func=_cmd_calibration_sample)

    inference = commands.add_parser(
        "inference",
        help="find people in your images with a .pth, .onnx or .engine model",
        description="Run a model on an image or a folder of images; write detections.json "
        "(COCO keypoint results plus file_name) and images/ with the skeletons drawn into "
        "RESULTS_DIR. The inference spec sets the input geometry and decoder thresholds.",
    )
    inference.add_argument(
        "-m", "--model_filename", "--model", dest="model", type=Path, default=None,
        help="model file: .pth, .onnx (FP32/FP16/INT8/deployable) or .engine",
    )  # fmt: skip
    inference.add_argument(
        "--input", type=Path, required=True,
        help="an image file, a folder of images, or a JSON file listing images (a list of "
        "paths, or a COCO file: its image ids are kept)",
    )  # fmt: skip
    inference.add_argument(
        "--input_type", choices=("image", "dir", "json"), default=None,
        help="what --input is (default: told by --input itself)",
    )  # fmt: skip
    inference.add_argument(
        "-i", "--inference_spec", type=Path, default=None,
        help="inference spec YAML; default: TAO's defaults",
    )  # fmt: skip
    inference.add_argument(
        "-o", "--override", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override an inference-spec field, e.g. -o heatmap_threshold=0.2",
    )  # fmt: skip
    inference.add_argument(
        "-r", "--results_dir", type=Path, required=True, help="folder for the results"
    )
    inference.add_argument(
        "--dump_visualizations", action="store_true",
        help="accepted for TAO compatibility: pictures are written unless --no_visualizations",
    )  # fmt: skip
    inference.add_argument(
        "--no_visualizations", action="store_true", help="write detections.json only"
    )
    inference.add_argument(
        "--threads", type=int, default=None,
        help="ONNX Runtime threads (default: as many as PyTorch uses)",
    )  # fmt: skip
    inference.set_defaults(func=_cmd_inference)

    _add_import_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except BpnetError as err:
        print(f"bpnet: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:
        from bpnet.io import DiskFullError, is_disk_full

        if not is_disk_full(err):
            raise
        # a write outside bpnet.io's atomic writers (a log line, a temporary file)
        print(f"bpnet: error: {DiskFullError(err.filename)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("bpnet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
