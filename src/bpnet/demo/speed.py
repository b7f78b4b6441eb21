"""The demo's speed step: ms per frame of every model and runtime, timed in one interleaved run.

Timed: one network forward on a prepared input (no image decoding, warping or people
decoding), batch 1, the threads PyTorch uses (``OMP_NUM_THREADS``) for both runtimes. One call
of each runner per round, so whatever else the machine does hits every runtime alike; a slow
runner (OpenPose: over a second a frame on a CPU) runs every ``slow_every``-th round only.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import torch

from bpnet.bench.model import time_interleaved as bench_times
from bpnet.inference.model_io import network_input, torch_input
from bpnet.inference.onnx_source import make_session
from bpnet.inference.runtime import load_model

PYTORCH_FP32, ONNX_FP32, ONNX_INT8 = "PyTorch FP32", "ONNX Runtime FP32", "ONNX Runtime INT8"
RUNTIMES = (PYTORCH_FP32, ONNX_FP32, ONNX_INT8)


def model_runners(
    checkpoint: Path, fp32_onnx: Path, int8_onnx: Path, size: tuple[int, int]
) -> dict[str, Callable[[], object]]:
    """One zero-argument forward per runtime (:data:`RUNTIMES`) of a model on a random picture.

    Args:
        checkpoint: the ``.pth`` (PyTorch FP32).
        fp32_onnx, int8_onnx: its ``bpnet export`` models.
        size: (H, W) of the input.
    """
    loaded = load_model(checkpoint)
    normalization = loaded.train_spec.dataloader.normalization_params
    rgb = np.random.default_rng(0).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    x = torch.from_numpy(torch_input(rgb, normalization))
    model = loaded.model

    def pytorch() -> object:
        with torch.no_grad():
            return model(x)

    runners: dict[str, Callable[[], object]] = {PYTORCH_FP32: pytorch}
    for runtime, path in ((ONNX_FP32, fp32_onnx), (ONNX_INT8, int8_onnx)):
        # spinning idle threads would take the cores from the PyTorch frames timed in between
        session = make_session(path, spin=False)
        io_ = load_model(path).io
        feed = {io_.input_name: network_input(rgb, io_, normalization)}
        runners[runtime] = lambda s=session, f=feed: s.run(None, f)
    return runners


def time_interleaved(
    runners: dict[str, Callable[[], object]],
    rounds: int,
    *,
    slow: Collection[str] = (),
    slow_every: int = 1,
    warmup: int = 1,
) -> dict[str, dict]:
    """Median milliseconds per call of each runner, timed by
    :func:`bpnet.bench.model.time_interleaved` (a ``slow`` runner in every ``slow_every``-th
    round only).

    Returns:
        name -> ``{"ms": median, "fps": 1000 / median, "frames": timed calls}``.
    """
    times = bench_times(runners, rounds, warmup, slow=slow, slow_every=slow_every)
    return {
        name: {"ms": (ms := statistics.median(values)), "fps": 1000 / ms, "frames": len(values)}
        for name, values in times.items()
    }


__all__ = [
    "ONNX_FP32",
    "ONNX_INT8",
    "PYTORCH_FP32",
    "RUNTIMES",
    "model_runners",
    "time_interleaved",
]
