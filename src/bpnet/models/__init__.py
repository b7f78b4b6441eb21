"""Networks: one factory built from the spec, a plain-data arch that rebuilds them, and the
checkpoint file that stores both (:mod:`bpnet.models.checkpoint`).

Example:
    >>> model = build_model(spec.model, pose)  # doctest: +SKIP
    >>> save_checkpoint(path, model, spec=spec, pose=pose)  # doctest: +SKIP
    >>> trained = load_trained(path)  # its own arch, its weights, eval mode  # doctest: +SKIP
    >>> trained.model, trained.train_spec, trained.pose  # doctest: +SKIP
"""

from bpnet.models.arch import ARCH_FORMAT, ArchGraph, ConvNode, arch_graph
from bpnet.models.checkpoint import TrainedModel, load_checkpoint, load_trained, save_checkpoint
from bpnet.models.factory import build_model, make_arch, spec_show_command
from bpnet.models.posenet import (
    PoseNet,
    count_parameters,
    describe_widths,
    load_state_checked,
    model_from_arch,
)

__all__ = [
    "ARCH_FORMAT",
    "ArchGraph",
    "ConvNode",
    "PoseNet",
    "TrainedModel",
    "arch_graph",
    "build_model",
    "count_parameters",
    "describe_widths",
    "load_checkpoint",
    "load_state_checked",
    "load_trained",
    "make_arch",
    "model_from_arch",
    "save_checkpoint",
    "spec_show_command",
]
