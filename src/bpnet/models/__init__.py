"""Networks: one factory built from the spec, and a plain-data arch that rebuilds them.

Example:
    >>> model = build_model(spec.model, pose)  # doctest: +SKIP
    >>> torch.save({"arch": model.arch, "state_dict": model.state_dict()}, path)  # doctest: +SKIP
    >>> ckpt = torch.load(path, weights_only=True)  # doctest: +SKIP
    >>> model = model_from_arch(ckpt["arch"])  # doctest: +SKIP
    >>> load_state_checked(model, ckpt["state_dict"], str(path))  # doctest: +SKIP
"""

from bpnet.models.arch import ARCH_FORMAT, ArchGraph, ConvNode, arch_graph
from bpnet.models.factory import build_model, make_arch
from bpnet.models.posenet import PoseNet, count_parameters, load_state_checked, model_from_arch

__all__ = [
    "ARCH_FORMAT",
    "ArchGraph",
    "ConvNode",
    "PoseNet",
    "arch_graph",
    "build_model",
    "count_parameters",
    "load_state_checked",
    "make_arch",
    "model_from_arch",
]
