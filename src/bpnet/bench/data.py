"""`bpnet bench data`: how many samples per second the data pipeline makes, per core."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import torch

from bpnet.config import load_experiment_spec
from bpnet.config.spec import ExperimentSpec
from bpnet.data.dataset import build_dataloader


def bench_dataloader(
    spec: ExperimentSpec,
    root: str | os.PathLike,
    split: str,
    *,
    samples: int = 200,
    workers: int = 0,
    train: bool = True,
    warmup_batches: int = 2,
) -> dict:
    """Time reading, masking, augmenting and batching ``samples`` samples of one split.

    The measuring process runs torch and OpenCV on one thread, so with ``workers=0`` the
    figure is per core; with workers each worker is one core and ``per_core`` divides by them.
    Loading the annotation file and the first ``warmup_batches`` batches (worker start-up,
    first-touch page faults) are not timed. The split is cycled when it holds fewer samples.

    Args:
        spec: experiment spec (input size, batch size, augmentation, normalisation).
        root: dataset root in the COCO layout.
        split: split name.
        samples: samples to time (rounded up to whole batches).
        workers: DataLoader worker processes (0: load in this process).
        train: time training samples (augmented crops) or evaluation samples.
        warmup_batches: untimed batches first.

    Returns:
        ``samples``, ``seconds``, ``samples_per_s``, ``per_core``, ``workers``, ``batch_size``,
        ``input_size`` [height, width], ``split``, ``mode`` and ``dataset_samples``.
    """
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        loader = build_dataloader(
            spec, root, split, train=train, num_workers=workers, drop_last=False
        )
        batches = _cycle(loader)
        for _ in range(warmup_batches):
            next(batches)
        done = 0
        start = time.perf_counter()
        while done < samples:
            done += len(next(batches)["image"])
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
    rate = done / seconds
    dims = spec.dataloader.image_config.image_dims
    return {
        "split": split,
        "mode": "train" if train else "eval",
        "dataset_samples": len(loader.dataset),
        "samples": done,
        "seconds": round(seconds, 3),
        "samples_per_s": round(rate, 1),
        "per_core": round(rate / max(workers, 1), 1),
        "workers": workers,
        "batch_size": loader.batch_size,
        "input_size": [dims.height, dims.width],
    }


def bench_data_command(
    experiment_spec: Path | None, overrides: list[str], root: Path, split: str, **options
) -> str:
    """``bpnet bench data``: :func:`bench_dataloader` with the spec file (None: TAO's
    defaults) and its ``overrides``; ``options`` are its keywords. Returns the result as JSON."""
    spec = load_experiment_spec(experiment_spec, overrides)
    return json.dumps(bench_dataloader(spec, root, split, **options), indent=2)


def _cycle(loader) -> Iterator[dict]:
    while True:
        yield from loader
