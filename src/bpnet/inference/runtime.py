"""Load a trained model for inference: the one entry point `bpnet evaluate -m` goes through.

Today a model is a ``.pth`` checkpoint run with PyTorch; ONNX and TensorRT engines join here
when export lands, behind the same :class:`LoadedModel` interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bpnet.config import ExperimentSpec, from_dict, load_experiment_spec
from bpnet.errors import BpnetError
from bpnet.inference.torch_source import TorchSource
from bpnet.pose import PoseConfig
from bpnet.pose.skeleton import parse_pose_config


@dataclass
class LoadedModel:
    """A model ready to produce maps, with what it was trained with.

    Attributes:
        path: the model file.
        model: the network (eval mode).
        pose: the skeleton its heads follow (from the checkpoint).
        train_spec: its resolved experiment spec (normalisation, input size, targets).
    """

    path: Path
    model: torch.nn.Module
    pose: PoseConfig
    train_spec: ExperimentSpec

    def source(self, *, stage: int | None = None, bf16: bool = False) -> TorchSource:
        """A map source for :func:`bpnet.evaluate.evaluate.evaluate`."""
        return TorchSource(
            self.model,
            self.train_spec.dataloader.normalization_params,
            stage=stage,
            autocast_bf16=bf16,
        )


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a network from a bpnet checkpoint (its own per-layer widths) and load weights.

    Raises:
        BpnetError: the file is missing, not a bpnet model, or its widths and weights disagree.
    """
    from bpnet.models import load_state_checked, model_from_arch
    from bpnet.train.checkpoint import load_checkpoint

    path = Path(path)
    if path.suffix not in (".pth", ".pt"):
        raise BpnetError(
            f"{path}: bpnet runs .pth checkpoints (from bpnet train / bpnet prune) so far; "
            "ONNX and TensorRT models arrive with bpnet export"
        )
    checkpoint = load_checkpoint(path, map_location=device)
    model = model_from_arch(checkpoint["arch"])
    load_state_checked(model, checkpoint["state_dict"], str(path))
    model.to(device).eval()
    spec_dict = checkpoint.get("spec")
    train_spec = (
        from_dict(ExperimentSpec, spec_dict, f"{path} (stored spec)")
        if spec_dict
        else load_experiment_spec(None)
    )
    if checkpoint.get("pose"):
        pose = parse_pose_config(checkpoint["pose"], source=f"{path} (stored pose config)")
    else:
        raise BpnetError(f"{path}: the checkpoint stores no pose config; re-save it with bpnet")
    return LoadedModel(path, model, pose, train_spec)
