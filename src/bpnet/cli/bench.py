"""``bpnet bench data|decode``."""

from __future__ import annotations

import argparse
import json

from bpnet.cli.options import (
    add_command,
    add_dataset,
    add_experiment_spec,
    add_group,
    add_inference_spec,
)


def add_parsers(commands) -> None:
    actions = add_group(commands, "bench", "speed benchmarks (results go in BENCHMARKS.md)", "WHAT")
    data = add_command(
        actions,
        "data",
        _data,
        help="data loading + augmentation throughput (samples/s per core)",
        description="Measure how many training samples per second the data pipeline produces "
        "(read, decode, augment, normalise) with one thread per process.",
    )
    add_experiment_spec(data, required=False)
    add_dataset(data)
    data.add_argument("--samples", type=int, default=200, help="samples to time")
    data.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    data.add_argument("--eval", action="store_true", help="time the evaluation pipeline")

    decode = add_command(
        actions,
        "decode",
        _decode,
        help="decoder ms per frame at 1, 5 and 20 people (and encoder ms per sample)",
        description="Time the decoder (peaks, limb scoring, matching, assembly) on maps the "
        "encoder makes from random scenes of N people, one thread, at the spec's input_shape.",
    )
    add_inference_spec(decode, "output_upsampling_factor=[1,1]")
    decode.add_argument(
        "--people", type=int, nargs="+", default=[1, 5, 20], help="people per frame"
    )
    decode.add_argument("--frames", type=int, default=20, help="frames per count")


def _data(args: argparse.Namespace) -> int:
    from bpnet.bench.data import bench_dataloader
    from bpnet.config import load_experiment_spec

    spec = load_experiment_spec(args.spec, args.overrides)
    result = bench_dataloader(
        spec, args.root, args.split, samples=args.samples, workers=args.workers, train=not args.eval
    )
    print(json.dumps(result, indent=2))
    return 0


def _decode(args: argparse.Namespace) -> int:
    from bpnet.bench.decode import bench_decode
    from bpnet.config import load_inference_spec

    spec = load_inference_spec(args.inference_spec, args.overrides)
    result = bench_decode(
        tuple(args.people),
        frames=args.frames,
        size=tuple(spec.input_shape),
        params=spec.decoder_params(),
    )
    print(json.dumps(result, indent=2))
    return 0
