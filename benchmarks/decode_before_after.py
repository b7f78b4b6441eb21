"""Decoder cost per frame of two source trees (or two settings), interleaved on one core.

Both sides decode the same maps: the encoder's targets of random scenes (``bpnet bench
decode``'s scenes), made once and saved. Each round runs one process per side, alternating,
and reports CPU time per frame (``time.process_time``, less distorted by other load than wall
time, which is reported too); ``--callgrind`` adds the instructions per frame counted by
valgrind, which do not depend on the machine's load at all.

Usage::

    python benchmarks/decode_before_after.py --before 08d33b0 --people 5 --rounds 5
    python benchmarks/decode_before_after.py --before HEAD --before-params \
        '{"upsampling_factor": [8, 8]}' --callgrind

``--before`` is a git revision (its ``src`` is extracted to a temporary folder); the after side
is this checkout's ``src``. ``--before-params`` / ``--after-params`` are DecoderParams fields as
JSON (default: each tree's own defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# Runs in each side's process, with that side's src first on the path: only the decoder and
# OpenCV are imported (no torch, so valgrind's start-up stays short).
CHILD = """
import json, sys, time
import cv2
import numpy as np
cv2.setNumThreads(1)
from bpnet.decode import DecoderParams, decode
from bpnet.pose import load_pose_config

data = np.load(sys.argv[1])
fields = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(sys.argv[2]).items()}
repeat = int(sys.argv[3])
params = DecoderParams(**fields)
pose = load_pose_config()
heatmaps, pafs = data["heatmaps"], data["pafs"]
decode(heatmaps[0], pafs[0], pose, params)  # warm-up: caches and work arrays
found = 0
cpu, wall = time.process_time(), time.perf_counter()
for _ in range(repeat):
    for h, p in zip(heatmaps, pafs):
        found += len(decode(h, p, pose, params))
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
n = max(repeat * len(heatmaps), 1)
print(json.dumps({"cpu_ms": cpu * 1e3 / n, "wall_ms": wall * 1e3 / n, "people": found / n}))
"""


def make_maps(path: Path, people: int, frames: int, size: tuple[int, int], seed: int) -> None:
    """Save the encoder's targets of ``frames`` random scenes of ``people`` people."""
    sys.path.insert(0, str(REPO / "src"))
    from bpnet.bench.decode import synthetic_people
    from bpnet.pose import load_pose_config
    from bpnet.targets import encode

    pose = load_pose_config()
    rng = np.random.default_rng(seed)
    mask = np.ones(size, np.uint8)
    targets = [encode(synthetic_people(rng, people, size), mask, pose) for _ in range(frames)]
    np.savez(
        path,
        heatmaps=np.stack([t.heatmaps for t in targets]),
        pafs=np.stack([t.pafs for t in targets]),
    )


def run_side(src: Path, maps: Path, params: str, repeat: int, callgrind: bool = False):
    """One process of one side: its JSON report, or with ``callgrind`` its instruction count."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", CHILD, str(maps), params, str(repeat)]
    if callgrind:
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    if callgrind:
        return int(re.search(r"Collected : (\d+)", done.stderr).group(1))
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision of the before side")
    parser.add_argument("--before-params", default="{}", help="DecoderParams fields, JSON")
    parser.add_argument("--after-params", default="{}", help="DecoderParams fields, JSON")
    parser.add_argument("--people", type=int, default=5)
    parser.add_argument("--frames", type=int, default=20, help="scenes")
    parser.add_argument("--repeat", type=int, default=10, help="passes over the scenes a round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs per side")
    parser.add_argument("--size", type=int, nargs=2, default=[368, 368], help="input h w")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--callgrind", action="store_true", help="count instructions too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.before, "src"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
        maps = tmp / "maps.npz"
        make_maps(maps, args.people, args.frames, tuple(args.size), args.seed)
        sides = {
            "before": (tmp / "src", args.before_params),
            "after": (REPO / "src", args.after_params),
        }
        runs = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, (src, params) in sides.items():
                runs[name].append(run_side(src, maps, params, args.repeat))
        report = {"people": args.people, "input_size": args.size, "frames": args.frames}
        for name, results in runs.items():
            report[name] = {
                key: round(statistics.median(r[key] for r in results), 3)
                for key in ("cpu_ms", "wall_ms", "people")
            }
        report["cpu_ratio"] = round(report["after"]["cpu_ms"] / report["before"]["cpu_ms"], 3)
        if args.callgrind:
            # instructions of `repeat` passes minus those of none: start-up and warm-up cancel
            frames = args.repeat * args.frames
            for name, (src, params) in sides.items():
                count = run_side(src, maps, params, args.repeat, callgrind=True)
                base = run_side(src, maps, params, 0, callgrind=True)
                report[name]["instructions"] = round((count - base) / frames)
            report["instruction_ratio"] = round(
                report["after"]["instructions"] / report["before"]["instructions"], 3
            )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
