"""Data-parallel training: process-group setup from torchrun's variables, and the relaunch.

``bpnet train --gpus N`` starts itself again under ``torch.distributed.run`` (torchrun) with N
processes per node; each process reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``, joins the
group (NCCL on GPUs, gloo on CPUs) and trains on its shard of every epoch. Gradients are
averaged across processes, so N processes with batch B train like one process with batch N*B.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as torch_dist

from bpnet.errors import BpnetError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) run.

    Attributes:
        rank: global rank; rank 0 writes checkpoints, logs and validation results.
        world_size: number of processes.
        local_rank: rank on this node (which GPU it uses).
        device: the device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Join the process group torchrun describes, or describe a single process.

    Uses ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU. Backend: NCCL on CUDA, gloo
    on CPU.
    """
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise BpnetError(
                f"process {rank} wants GPU {local_rank} but {torch.cuda.device_count()} are "
                "visible; ask for fewer with --gpus or check CUDA_VISIBLE_DEVICES"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            # rank 0 validates alone while the others wait in their next all-reduce
            timeout=timedelta(minutes=60),
        )
    return DistInfo(rank, world_size, local_rank, device)


def shutdown_distributed() -> None:
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def all_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a (small) tensor over all processes (itself when single-process)."""
    if not info.distributed:
        return values
    values = values.clone()
    torch_dist.all_reduce(values)
    return values / info.world_size


def all_gather(value: Any, info: DistInfo) -> list[Any]:
    """Every process's ``value`` (a small picklable object), in rank order."""
    if not info.distributed:
        return [value]
    gathered: list[Any] = [None] * info.world_size
    torch_dist.all_gather_object(gathered, value)
    return gathered


def needs_launch(gpus: int, nodes: int = 1) -> bool:
    """True when ``--gpus``/``--nodes`` ask for several processes and torchrun is not running."""
    return (gpus > 1 or nodes > 1) and "LOCAL_RANK" not in os.environ


def torchrun_command(
    argv: Sequence[str],
    *,
    nproc_per_node: int,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int = 29500,
) -> list[str]:
    """The torchrun command line that runs ``python -m bpnet <argv>`` in every process."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc_per_node}",
        f"--nnodes={nnodes}",
        f"--node_rank={node_rank}",
        f"--master_addr={master_addr}",
        f"--master_port={master_port}",
        "-m",
        "bpnet",
        *argv,
    ]


def launch(argv: Sequence[str], *, nproc_per_node: int, **kwargs) -> int:
    """Run ``bpnet <argv>`` under torchrun (:func:`torchrun_command`); return its exit code.

    Without CUDA the processes train on CPU cores (gloo), e.g. to test a multi-GPU setup.

    Raises:
        BpnetError: more processes per node than visible GPUs.
    """
    if torch.cuda.is_available() and nproc_per_node > torch.cuda.device_count():
        raise BpnetError(
            f"--gpus {nproc_per_node}, but {torch.cuda.device_count()} GPUs are visible; ask for "
            "fewer or check CUDA_VISIBLE_DEVICES"
        )
    return subprocess.call(torchrun_command(argv, nproc_per_node=nproc_per_node, **kwargs))


__all__ = [
    "DistInfo",
    "all_mean",
    "init_distributed",
    "launch",
    "needs_launch",
    "shutdown_distributed",
    "torchrun_command",
]
