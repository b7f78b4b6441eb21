"""Decoder (and encoder) speed on synthetic crowds: ``bpnet bench decode``.

Maps come from the encoder (the targets of random scenes), so the timing covers the decoder's
real work: peaks, all candidate limbs, matching and assembly, with as many people as asked.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bpnet.config import load_inference_spec
from bpnet.decode import DecoderParams, decode
from bpnet.pose import PoseConfig, load_pose_config
from bpnet.targets import encode

# A standing figure in the default 18-joint order, in units of its height, origin mid-hips.
_TEMPLATE_18 = np.array(
    [
        [0.00, -0.80],  # nose
        [0.00, -0.66],  # neck
        [-0.12, -0.65],  # right shoulder
        [-0.17, -0.44],  # right elbow
        [-0.19, -0.24],  # right wrist
        [0.12, -0.65],  # left shoulder
        [0.17, -0.44],  # left elbow
        [0.19, -0.24],  # left wrist
        [-0.08, 0.00],  # right hip
        [-0.09, 0.24],  # right knee
        [-0.10, 0.47],  # right ankle
        [0.08, 0.00],  # left hip
        [0.09, 0.24],  # left knee
        [0.10, 0.47],  # left ankle
        [-0.03, -0.83],  # right eye
        [0.03, -0.83],  # left eye
        [-0.06, -0.81],  # right ear
        [0.06, -0.81],  # left ear
    ]
)


def synthetic_people(
    rng: np.random.Generator,
    count: int,
    size: tuple[int, int] = (368, 368),
    *,
    missing: float = 0.0,
    min_height: float = 40.0,
) -> np.ndarray:
    """Random standing people of the default 18-joint skeleton, one per cell of a jittered grid.

    Each figure gets a random height (up to 0.9 of its grid cell, at least ``min_height``),
    a rotation of up to +-25 degrees, a mirror, and a 3%-of-height jitter per joint, so
    neighbours come close but rarely lie on top of each other.

    Args:
        rng: random generator.
        count: number of people.
        size: (height, width) of the network input.
        missing: probability that a joint is unlabelled (v = 0).
        min_height: smallest figure height in pixels.

    Returns:
        (count, 18, 3) float32 x, y, v in input pixels.
    """
    height, width = size
    cols = max(1, int(np.ceil(np.sqrt(count * width / height))))
    rows = max(1, int(np.ceil(count / cols)))
    cell_w, cell_h = width / cols, height / rows
    cells = rng.permutation(rows * cols)[:count]
    out = np.zeros((count, len(_TEMPLATE_18), 3), np.float32)
    for i, cell in enumerate(cells):
        row, col = divmod(int(cell), cols)
        tall = rng.uniform(max(min_height, 0.5 * cell_h), max(min_height, 0.9 * cell_h))
        angle = np.deg2rad(rng.uniform(-25, 25))
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shape = _TEMPLATE_18 * [rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.2), 1.0]
        shape = shape + rng.normal(0.0, 0.03, shape.shape)
        centre = [
            (col + 0.5 + rng.uniform(-0.15, 0.15)) * cell_w,
            (row + 0.5 + rng.uniform(-0.1, 0.1)) * cell_h + 0.15 * tall,
        ]
        out[i, :, :2] = centre + tall * shape @ rot.T
        out[i, :, 2] = np.where(rng.random(len(_TEMPLATE_18)) < missing, 0.0, 2.0)
    out[out[..., 2] == 0] = 0.0
    return out


def bench_decode(
    people: tuple[int, ...] = (1, 5, 20),
    *,
    frames: int = 20,
    size: tuple[int, int] = (368, 368),
    params: DecoderParams | None = None,
    pose: PoseConfig | None = None,
    seed: int = 0,
) -> dict:
    """Milliseconds per frame of :func:`~bpnet.decode.decode` and per sample of ``encode``.

    Runs torch and OpenCV on one thread (restored afterwards); each count gets ``frames``
    different scenes, timed after one untimed warm-up decode. ``decode_ms`` is wall time;
    ``decode_cpu_ms`` is this process's CPU time, which other work on a busy machine distorts
    less (compare either only within one run).

    Args:
        people: people per frame to time.
        frames: frames per count.
        size: network input (height, width); maps are (height / 8, width / 8).
        params: decoder settings (TAO's defaults when None).
        pose: skeleton (the default 18 joints; the scenes need it).
        seed: scene generator seed.

    Returns:
        ``{"input_size": [h, w], "frames": n, "people": {count: {"decode_ms": ...,
        "decode_cpu_ms": ..., "encode_ms": ..., "found": mean people decoded}}}``.
    """
    pose = pose or load_pose_config()
    params = params or DecoderParams()
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(seed)
    mask = np.ones(size, np.uint8)
    results = {}
    try:
        for count in people:
            scenes = [synthetic_people(rng, count, size) for _ in range(frames)]
            start = time.perf_counter()
            targets = [encode(k, mask, pose) for k in scenes]
            encode_ms = (time.perf_counter() - start) * 1e3 / frames
            decode(targets[0].heatmaps, targets[0].pafs, pose, params)  # warm-up
            found = 0
            start, cpu = time.perf_counter(), time.process_time()
            for t in targets:
                found += len(decode(t.heatmaps, t.pafs, pose, params))
            decode_ms = (time.perf_counter() - start) * 1e3 / frames
            decode_cpu_ms = (time.process_time() - cpu) * 1e3 / frames
            results[count] = {
                "decode_ms": round(decode_ms, 2),
                "decode_cpu_ms": round(decode_cpu_ms, 2),
                "encode_ms": round(encode_ms, 2),
                "found": found / frames,
            }
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
    return {"input_size": list(size), "frames": frames, "people": results}


def bench_decode_command(
    inference_spec: Path | None, overrides: list[str], people: list[int], frames: int
) -> str:
    """``bpnet bench decode``: :func:`bench_decode` at the inference spec's ``input_shape``
    with its decoder settings (None: TAO's defaults, then the ``overrides``). Returns the
    result as JSON."""
    spec = load_inference_spec(inference_spec, overrides)
    size = tuple(spec.input_shape)
    result = bench_decode(tuple(people), frames=frames, size=size, params=spec.decoder_params())
    return json.dumps(result, indent=2)
