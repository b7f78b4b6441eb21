"""Experiment specs: YAML files loaded into frozen, typed dataclasses."""

from __future__ import annotations

from pathlib import Path

from bpnet.config.loader import dump_spec, from_dict, load_spec, save_spec, to_dict
from bpnet.config.spec import STRIDE, DataloaderConfig, ExperimentSpec
from bpnet.errors import SpecError
from bpnet.pose import PoseConfig, load_pose_config


def load_experiment_spec(
    path: str | Path | None, overrides: list[str] | tuple = ()
) -> ExperimentSpec:
    """Load ``bpnet train -e`` specs; ``path=None`` gives TAO's defaults."""
    return load_spec(ExperimentSpec, path, overrides)


def resolve_pose_config(dataloader: DataloaderConfig, spec_path: str | Path | None = None):
    """The skeleton a spec names; a relative path is taken from the spec file's folder.

    Returns:
        PoseConfig
    """
    ref = dataloader.pose_config.pose_config_path
    if ref is None:
        return load_pose_config()
    path = Path(ref)
    if not path.is_absolute() and spec_path is not None and not path.exists():
        path = Path(spec_path).parent / path
    if not path.exists():
        raise SpecError(
            f"{spec_path or '<spec>'}: dataloader.pose_config.pose_config_path: {ref} not found"
        )
    return load_pose_config(path)


__all__ = [
    "STRIDE",
    "ExperimentSpec",
    "PoseConfig",
    "dump_spec",
    "from_dict",
    "load_experiment_spec",
    "load_spec",
    "resolve_pose_config",
    "save_spec",
    "to_dict",
]
