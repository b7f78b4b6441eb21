"""``bpnet bench data|decode``."""

from __future__ import annotations

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
        "bpnet.bench.data:bench_data_command",
        help="data loading + augmentation throughput (samples/s per core)",
        description="Measure how many training samples per second the data pipeline produces "
        "(read, decode, augment, normalise) with one thread per process.",
    )
    add_experiment_spec(data, required=False)
    add_dataset(data)
    data.add_argument("--samples", type=int, default=200, help="samples to time")
    data.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    data.add_argument(
        "--eval", dest="train", action="store_false", help="time the evaluation pipeline"
    )

    decode = add_command(
        actions,
        "decode",
        "bpnet.bench.decode:bench_decode_command",
        help="decoder ms per frame at 1, 5 and 20 people (and encoder ms per sample)",
        description="Time the decoder (peaks, limb scoring, matching, assembly) on maps the "
        "encoder makes from random scenes of N people, one thread, at the spec's input_shape.",
    )
    add_inference_spec(decode, "output_upsampling_factor=[1,1]")
    decode.add_argument(
        "--people", type=int, nargs="+", default=[1, 5, 20], help="people per frame"
    )
    decode.add_argument("--frames", type=int, default=20, help="frames per count")
