"""Kill `bpnet train` at random moments, rerun the same command, and check every checkpoint.

Usage::

    python benchmarks/kill_resume.py --kills 8 --seed 0

A small synthetic dataset (160 pictures) and the demo spec cut to 6 epochs of 20 steps, a
checkpoint every epoch, keep one full run under a minute on two cores. The training
command is started, killed with SIGKILL after a random delay (often mid-epoch, sometimes while
a checkpoint is being written), and started again, ``--kills`` times; the last run goes to the
end. After every kill each ``model_epoch_*.pth`` in the folder must load, the metrics log must
parse, and every rerun must say it resumes from the newest checkpoint. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bpnet.data.synth import generate_dataset
from bpnet.errors import BpnetError
from bpnet.models.checkpoint import list_checkpoints, load_checkpoint

SPEC = "specs/synthetic_scratch.yaml"
OVERRIDES = [
    "num_epoch=6",
    "checkpoint_n_epoch=1",
    "validation_every_n_epoch=0",
    "log_every_n_secs=1000",
    "dataloader.augmentation_config.spatial_augmentation_mode=whole_image",
]


def train_command(data: Path, results: Path) -> list[str]:
    command = [sys.executable, "-m", "bpnet", "train", "-e", SPEC, "-r", str(results)]
    command += ["-d", str(data)]
    for override in OVERRIDES:
        command += ["-o", override]
    return command


def check_folder(results: Path) -> tuple[int, list[str]]:
    """(checkpoints found, problems): every checkpoint loads, the metrics log parses."""
    problems = []
    found = list_checkpoints(results)
    for _, path in found:
        try:
            load_checkpoint(path)
        except BpnetError as err:
            problems.append(str(err))
    log = results / "metrics.jsonl"
    if log.exists():
        for number, line in enumerate(log.read_text().splitlines(), 1):
            try:
                json.loads(line)
            except json.JSONDecodeError:
                problems.append(f"{log}:{number}: not JSON")
    return len(found), problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_delay", type=float, default=20.0, help="seconds before a kill")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bpnet-kill-") as tmp:
        data, results = Path(tmp) / "data", Path(tmp) / "train"
        generate_dataset(data, 160, 4, seed=args.seed)
        command = train_command(data, results)
        print("| run | killed after s | checkpoints then | resumed from | problems |")
        print("|---|---|---|---|---|")
        total_problems = 0
        for run in range(args.kills + 1):
            before = list_checkpoints(results) if results.exists() else []
            last = len(before) and before[-1][1].name
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            started = time.perf_counter()
            delay = rng.uniform(3.0, args.max_delay) if run < args.kills else None
            try:
                process.wait(timeout=delay)
                killed = "-"
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed = f"{time.perf_counter() - started:.1f}"
            output = process.stdout.read().decode()
            count, problems = check_folder(results)
            resumed = "-"
            if last and f"resuming from {results / last}" in output:
                resumed = last
            elif last and "training " in output:  # it trained without resuming: a failure
                problems.append(f"did not resume from {last}")
            elif last:
                resumed = "(killed during start-up)"
            if killed == "-" and process.returncode != 0:
                problems.append(f"final run exited {process.returncode}: {output[-300:]}")
            total_problems += len(problems)
            print(f"| {run + 1} | {killed} | {count} | {resumed} | {'; '.join(problems) or 0} |")
        final = list_checkpoints(results)
        print(
            f"\nfinal: {len(final)} checkpoints, last {final[-1][1].name if final else None}; "
            f"problems: {total_problems}"
        )
        sys.exit(1 if total_problems or not final or final[-1][0] != 6 else 0)


if __name__ == "__main__":
    main()
