"""Checkpoints: one plain dict per file, written atomically, read with ``weights_only=True``.

A checkpoint holds data only, never a pickled module, so a pruned model reloads from its own
per-layer widths (``arch``) and a file cannot run code when it is opened::

    {"format": "bpnet-checkpoint", "version": 1,
     "arch": {...},                   # model.arch: rebuilds the network (model_from_arch)
     "state_dict": {...},             # model weights, on CPU
     "optimizer": {...} | None,       # optimiser state (resume)
     "scheduler": {...} | None,       # LR scheduler state (resume)
     "scaler": {...} | None,          # fp16 GradScaler state (resume)
     "epoch": int, "step": int,       # epochs and optimiser steps completed
     "spec": {...} | None,            # the resolved experiment spec (to_dict)
     "pose": {...} | None,            # the skeleton, in pose-config file form
     "metrics": {...},                # e.g. the epoch's mean loss and validation AP
     ...}                             # extra keys

Training writes ``model_epoch_NNN.pth`` into the results folder; the newest one is found by
scanning (no pointer file that could disagree with the folder). A save goes to a temporary
file in the same folder, is flushed to disk, and is renamed over the target: a crash at any
moment leaves the previous files intact and never a truncated checkpoint under a real name.
With a key (TAO's ``-k``) the file is encrypted (:mod:`bpnet.encryption`) and reads back only
with the same key; a plain file reads with or without one.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bpnet.config import ExperimentSpec, from_dict, load_experiment_spec, to_dict
from bpnet.encryption import is_encrypted_file, read_model_bytes, write_model_bytes
from bpnet.errors import BpnetError
from bpnet.io import write_with_atomic
from bpnet.models.posenet import PoseNet, load_state_checked, model_from_arch
from bpnet.pose import PoseConfig
from bpnet.pose.skeleton import parse_pose_config

FORMAT = "bpnet-checkpoint"
VERSION = 1
SUFFIXES = (".pth", ".pt")  # what a checkpoint file is called
_EPOCH_FILE = re.compile(r"model_epoch_(\d+)\.pth")


def checkpoint_path(results_dir: str | os.PathLike, epoch: int) -> Path:
    """``results_dir/model_epoch_NNN.pth`` for a (1-based) completed epoch."""
    return Path(results_dir) / f"model_epoch_{epoch:03d}.pth"


def list_checkpoints(results_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(epoch, path) of every epoch checkpoint in the folder, oldest first.

    Temporary files of an interrupted save (hidden ``.model_epoch_*`` names) do not match.
    """
    folder = Path(results_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _EPOCH_FILE.fullmatch(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(results_dir: str | os.PathLike) -> Path | None:
    """The checkpoint of the highest epoch in the folder, or None."""
    found = list_checkpoints(results_dir)
    return found[-1][1] if found else None


def prune_checkpoints(results_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest epoch checkpoints; return the deleted paths."""
    found = list_checkpoints(results_dir)
    doomed = [path for _, path in found[: max(len(found) - keep, 0)]]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: dict | None = None,
    scaler: dict | None = None,
    epoch: int = 0,
    step: int = 0,
    spec: Any = None,
    pose: PoseConfig | None = None,
    metrics: dict | None = None,
    extra: dict | None = None,
    key: str | None = None,
) -> Path:
    """Write a checkpoint atomically (module docstring) and return its path.

    Args:
        path: target file.
        model: the network (unwrapped: a DDP wrapper's ``.module``); needs ``.arch``.
        optimizer: saved for resuming when given.
        scheduler: an LR scheduler's ``state_dict()``.
        scaler: a GradScaler's ``state_dict()`` (fp16 training).
        epoch: epochs completed.
        step: optimiser steps completed.
        spec: the resolved experiment spec (a dataclass; stored as a plain dict).
        pose: the skeleton the heads were trained for.
        metrics: numbers worth keeping with the weights (losses, AP).
        extra: more plain-data keys.
        key: encrypt the file with this key (``-k``); None writes it plain.
    """
    arch = getattr(model, "arch", None)
    if arch is None:
        raise TypeError("save_checkpoint: the model has no .arch; pass the unwrapped PoseNet")
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler,
        "scaler": scaler,
        "epoch": int(epoch),
        "step": int(step),
        "spec": to_dict(spec) if spec is not None else None,
        "pose": pose.to_dict() if pose is not None else None,
        "metrics": dict(metrics or {}),
        **(extra or {}),
    }
    # a temporary file, flushed to disk, then renamed: never a partial file under the name
    if key is None:
        write_with_atomic(path, lambda tmp: torch.save(checkpoint, tmp))
    else:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_model_bytes(path, buffer.getvalue(), key)
    return Path(path)


# what each stored field must be before anything reads it (absent fields are allowed: older
# checkpoints lack some); a wrong type is a damaged or foreign file, one line
_FIELD_TYPES = (
    ("version", int, "an integer"),
    ("arch", dict, "a mapping"),
    ("state_dict", dict, "a mapping of layer names to tensors"),
    ("spec", (dict, type(None)), "a mapping"),
    ("pose", (dict, type(None)), "a mapping"),
    ("epoch", int, "an integer"),
    ("step", int, "an integer"),
)


def _plain(value: Any) -> bool:
    """Whether ``value`` is YAML-like data: mappings, lists, strings, numbers, booleans, None."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", *, key: str | None = None
) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on ``map_location``).

    Args:
        path: the file.
        map_location: where the tensors go.
        key: the ``-k`` key an encrypted checkpoint was written with (a plain one ignores it).

    Raises:
        BpnetError: the file is missing, unreadable, truncated, or not a bpnet checkpoint; it
            is encrypted and no key or a wrong key was given, or it was changed since.
    """
    path = Path(path)
    if not path.is_file():
        raise BpnetError(f"{path}: checkpoint not found; check the path")
    # plain files load from the path as always; an encrypted one is decrypted in memory
    source = io.BytesIO(read_model_bytes(path, key)) if is_encrypted_file(path) else path
    try:
        checkpoint = torch.load(source, map_location=map_location, weights_only=True)
    # any file can be named .pth: a text file makes the legacy unpickler raise KeyError, other
    # bytes IndexError or ValueError; each means the same to the user
    except (
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        OSError,
        KeyError,
        IndexError,
        ValueError,
        UnicodeDecodeError,
        AttributeError,
        TypeError,
        struct.error,
    ) as err:
        reason = " ".join(str(err).split())[:200]
        raise BpnetError(
            f"{path}: not a readable checkpoint ({reason}); it may be truncated or not a bpnet "
            "model: use another file (a half-written one in a training folder: delete it, and "
            "training resumes from the previous epoch)"
        ) from None
    if not (isinstance(checkpoint, dict) and checkpoint.get("format") == FORMAT):
        raise BpnetError(
            f"{path}: not a bpnet checkpoint (no '{FORMAT}' marker); pass a model_epoch_*.pth "
            "written by bpnet train or bpnet prune"
        )
    for field, kinds, what in _FIELD_TYPES:
        if field in checkpoint and not isinstance(checkpoint[field], kinds):
            raise BpnetError(
                f"{path}: the checkpoint's '{field}' is a {type(checkpoint[field]).__name__}, "
                f"not {what}; the file is damaged or was not written by bpnet"
            )
    for field in ("arch", "spec", "pose"):  # written from YAML-like data: tensors do not belong
        if not _plain(checkpoint.get(field)):
            raise BpnetError(
                f"{path}: the checkpoint's '{field}' holds something other than plain data (a "
                "tensor?); the file is damaged or was not written by bpnet"
            )
    if checkpoint.get("version", 0) > VERSION:
        raise BpnetError(
            f"{path}: checkpoint format version {checkpoint['version']} is newer than this "
            f"bpnet reads ({VERSION}); upgrade bpnet"
        )
    return checkpoint


@dataclass
class TrainedModel:
    """A checkpoint's network, rebuilt from its own per-layer widths, and what was stored with it.

    Attributes:
        path: the checkpoint file.
        model: the network with its weights, in eval mode, on the device it was loaded to.
        checkpoint: the whole stored dict (optimiser state, epoch, raw spec and pose, ...).
    """

    path: Path
    model: PoseNet
    checkpoint: dict

    @classmethod
    def from_checkpoint(
        cls, checkpoint: dict, path: str | os.PathLike, device: str | torch.device = "cpu"
    ) -> TrainedModel:
        """Rebuild the network of a checkpoint already read with :func:`load_checkpoint`.

        Raises:
            BpnetError: its stored widths and weights disagree.
        """
        model = model_from_arch(checkpoint["arch"])
        load_state_checked(model, checkpoint["state_dict"], str(path))
        return cls(Path(path), model.to(device).eval(), checkpoint)

    @cached_property
    def train_spec(self) -> ExperimentSpec:
        """The stored, resolved experiment spec (TAO's defaults when none was stored)."""
        stored = self.checkpoint.get("spec")
        if not stored:
            return load_experiment_spec(None)
        return from_dict(ExperimentSpec, stored, f"{self.path} (stored spec)")

    @cached_property
    def pose(self) -> PoseConfig:
        """The skeleton the heads were trained for.

        Raises:
            BpnetError: the checkpoint stores none.
        """
        stored = self.checkpoint.get("pose")
        if not stored:
            raise BpnetError(
                f"{self.path}: the checkpoint stores no pose config; re-save it with bpnet"
            )
        return parse_pose_config(stored, source=f"{self.path} (stored pose config)")


def load_trained(
    path: str | os.PathLike, device: str | torch.device = "cpu", *, key: str | None = None
) -> TrainedModel:
    """Read a checkpoint and rebuild its network (its own widths) with its weights.

    ``key``: the ``-k`` key of an encrypted checkpoint (see :func:`load_checkpoint`).

    Example:
        >>> trained = load_trained("runs/demo/train/model_epoch_001.pth")  # doctest: +SKIP
        >>> maps = trained.model(images)[-1]  # doctest: +SKIP

    Raises:
        BpnetError: the file is missing, unreadable, not a bpnet checkpoint, encrypted with
            another key (or none given), or its stored widths and weights disagree.
    """
    checkpoint = load_checkpoint(path, map_location=device, key=key)
    return TrainedModel.from_checkpoint(checkpoint, path, device)


__all__ = [
    "SUFFIXES",
    "TrainedModel",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_trained",
    "prune_checkpoints",
    "save_checkpoint",
]
