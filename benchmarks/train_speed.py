"""Training-step speed of model variants: forward + backward + Adam step on random input.

Usage (one run, so the ratios are comparable; absolute figures vary 10-15% between runs)::

    python benchmarks/train_speed.py --threads 2 \\
        "model.backbone_attributes.architecture=vgg;model.num_filters=64" \\
        "model.backbone_attributes.architecture=resnet;model.num_filters=64"

Each argument is a ';'-separated list of spec overrides applied to specs/synthetic_scratch.yaml
(``--spec`` another); ``mixed_precision=bf16`` runs the forward pass under bf16 autocast and
``model.data_format`` picks the memory format, as ``bpnet train`` does.
"""

from __future__ import annotations

import argparse
import time

import torch

from bpnet.config import load_experiment_spec, resolve_pose_config
from bpnet.models import build_model, count_parameters

SPEC = "specs/synthetic_scratch.yaml"


def step_seconds(
    overrides: list[str], batch: int, steps: int, spec_path: str = SPEC
) -> tuple[int, float]:
    """(parameters, seconds per training step) of the spec with ``overrides``."""
    spec = load_experiment_spec(spec_path, overrides)
    model = build_model(spec.model, resolve_pose_config(spec.dataloader)).train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    dims = spec.dataloader.image_config.image_dims
    images = torch.randn(batch, 3, dims.height, dims.width)
    if spec.model.data_format == "channels_last":
        images = images.contiguous(memory_format=torch.channels_last)
        model = model.to(memory_format=torch.channels_last)
    bf16 = spec.mixed_precision == "bf16"
    for i in range(steps + 2):  # two warm-up steps
        if i == 2:
            started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = model(images)
        loss = sum(h.float().square().sum() + p.float().square().sum() for h, p in outputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return count_parameters(model), (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="';'-separated spec overrides")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--spec", default=SPEC, help=f"spec the overrides apply to ({SPEC})")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| variant | parameters | ms/step | images/s |\n|---|---|---|---|")
    for variant in args.variants:
        params, seconds = step_seconds(
            [o for o in variant.split(";") if o], args.batch, args.steps, args.spec
        )
        print(f"| {variant} | {params:,} | {seconds * 1000:.0f} | {args.batch / seconds:.1f} |")


if __name__ == "__main__":
    main()
