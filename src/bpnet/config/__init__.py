"""Experiment specs: YAML files loaded into frozen, typed dataclasses."""

from __future__ import annotations

from pathlib import Path

from bpnet.config.inference import InferenceSpec
from bpnet.config.loader import dump_spec, from_dict, load_spec, save_spec, to_dict
from bpnet.config.spec import STRIDE, DataloaderConfig, ExperimentSpec
from bpnet.errors import SpecError
from bpnet.pose import PoseConfig, load_pose_config


def load_experiment_spec(
    path: str | Path | None, overrides: list[str] | tuple = ()
) -> ExperimentSpec:
    """Load ``bpnet train -e`` specs; ``path=None`` gives TAO's defaults."""
    return load_spec(ExperimentSpec, path, overrides)


def load_inference_spec(
    path: str | Path | None, overrides: list[str] | tuple = ()
) -> InferenceSpec:
    """Load ``bpnet evaluate -i`` / ``bpnet inference -i`` specs; None gives TAO's defaults."""
    return load_spec(InferenceSpec, path, overrides)


def resolve_pose_config(dataloader: DataloaderConfig) -> PoseConfig:
    """The skeleton a spec names (the built-in 18 joints when none).

    Paths in specs, like ``root_data_path``, are taken relative to the working directory.
    """
    ref = dataloader.pose_config.pose_config_path
    if ref is None:
        return load_pose_config()
    if not Path(ref).is_file():
        raise SpecError(
            f"dataloader.pose_config.pose_config_path: {ref} not found; give a path relative to "
            "the working directory, or an absolute one"
        )
    return load_pose_config(ref)


__all__ = [
    "STRIDE",
    "ExperimentSpec",
    "InferenceSpec",
    "PoseConfig",
    "dump_spec",
    "from_dict",
    "load_experiment_spec",
    "load_inference_spec",
    "load_spec",
    "resolve_pose_config",
    "save_spec",
    "to_dict",
]
