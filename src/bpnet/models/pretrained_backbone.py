"""ImageNet weights for bpnet's backbones from torchvision-layout state dicts.

``model.pretrained_backbone: PATH`` names a state dict (``torch.save(model.state_dict())`` of
torchvision's ``vgg19_bn``, ``resnet18`` or ``mobilenet_v2``, or any file with the same keys);
:func:`load_pretrained_backbone` copies every backbone tensor of the bpnet model from it by a
key map, and leaves the stages (and the channel-reduction conv, which ImageNet networks do not
have) at their initial values. Nothing is downloaded: the file is the user's.

The backbone must be built at the width of the file (``width_multiplier`` 1.0 for the
torchvision models). torchvision's VGG convs have biases where bpnet's VGG backbone has a
conv without bias followed by batch norm: the bias is folded into the batch norm's running
mean (exact).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from bpnet.errors import SpecError
from bpnet.models.arch import arch_graph
from bpnet.models.posenet import PoseNet

# torchvision vgg19_bn: the index in `features` of each conv kept by bpnet (conv1_1 .. conv4_2);
# its batch norm is the next index
_VGG19_BN_CONVS = {
    "conv1_1": 0, "conv1_2": 3, "conv2_1": 7, "conv2_2": 10, "conv3_1": 14, "conv3_2": 17,
    "conv3_3": 20, "conv3_4": 23, "conv4_1": 27, "conv4_2": 30,
}  # fmt: skip


def _vgg_keys(path: str) -> tuple[str, str] | None:
    name = path.removeprefix("backbone.")
    if name not in _VGG19_BN_CONVS:
        return None
    index = _VGG19_BN_CONVS[name]
    return f"features.{index}", f"features.{index + 1}"


def _resnet_keys(path: str) -> tuple[str, str] | None:
    parts = path.removeprefix("backbone.").split(".")
    if parts == ["conv1"]:
        return "conv1", "bn1"
    if len(parts) != 2 or not parts[0].startswith("layer"):
        return None
    layer, block = parts[0].removeprefix("layer").split("_")
    prefix = f"layer{layer}.{block}"
    if parts[1] == "shortcut":
        return f"{prefix}.downsample.0", f"{prefix}.downsample.1"
    number = parts[1].removeprefix("conv")
    return f"{prefix}.conv{number}", f"{prefix}.bn{number}"


def _mobilenet_keys(path: str) -> tuple[str, str] | None:
    name = path.removeprefix("backbone.")
    if name == "conv":
        return "features.0.0", "features.0.1"
    if not name.startswith("expanded_conv"):
        return None
    block, part = name.split(".") if "." in name else name.rsplit("_", 1)
    index = 0 if block == "expanded_conv" else int(block.removeprefix("expanded_conv_"))
    prefix = f"features.{index + 1}.conv"
    if index == 0:  # no expansion: depthwise, project
        positions = {"depthwise": ("0.0", "0.1"), "project": ("1", "2")}
    else:
        positions = {"expand": ("0.0", "0.1"), "depthwise": ("1.0", "1.1"), "project": ("2", "3")}
    conv, norm = positions[part]
    return f"{prefix}.{conv}", f"{prefix}.{norm}"


KEY_MAPS = {"vgg": _vgg_keys, "resnet": _resnet_keys, "mobilenet_v2": _mobilenet_keys}
SOURCES = {"vgg": "vgg19_bn", "resnet": "resnet18", "mobilenet_v2": "mobilenet_v2"}


def load_pretrained_backbone(model: PoseNet, path: str | os.PathLike) -> list[str]:
    """Copy ImageNet backbone weights from a torchvision-layout state dict, in place.

    Args:
        model: a freshly built bpnet model (``vgg``, ``resnet`` or ``mobilenet_v2``).
        path: the state dict file.

    Returns:
        The bpnet conv paths that were filled.

    Raises:
        SpecError: the file is missing or unreadable, the architecture has no key map, or a
            tensor is missing or of another shape (another network or width).
    """
    path = Path(path)
    architecture = model.arch["architecture"]
    if architecture not in KEY_MAPS:
        raise SpecError(
            f"model.pretrained_backbone: no ImageNet key map for architecture {architecture}; "
            f"bpnet maps {', '.join(f'{k} ({v})' for k, v in SOURCES.items())}"
        )
    if not path.is_file():
        raise SpecError(f"{path}: model.pretrained_backbone file not found; check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle of objects, not a torch file
        reason = " ".join(str(err).split())[:120]
        raise SpecError(f"{path}: not a readable state dict ({reason})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SpecError(f"{path}: expected a state dict (name -> tensor)")
    key_map = KEY_MAPS[architecture]
    modules = dict(model.named_modules())
    filled = []
    with torch.no_grad():
        for conv_path in arch_graph(model.arch).convs:
            keys = key_map(conv_path) if conv_path.startswith("backbone.") else None
            if keys is None:
                continue
            conv, norm = modules[conv_path], modules[conv_path].bn
            _copy(conv.weight, state, f"{keys[0]}.weight", path, architecture)
            bias = state.get(f"{keys[0]}.bias")
            if conv.bias is not None and bias is not None:
                _copy(conv.bias, state, f"{keys[0]}.bias", path, architecture)
            if isinstance(norm, torch.nn.BatchNorm2d):
                for name in ("weight", "bias", "running_mean", "running_var"):
                    _copy(getattr(norm, name), state, f"{keys[1]}.{name}", path, architecture)
                if conv.bias is None and bias is not None:  # fold it: BN(x + b) = BN'(x)
                    norm.running_mean -= bias
            elif isinstance(norm, torch.nn.InstanceNorm2d):  # scale and shift; own statistics
                for name in ("weight", "bias"):
                    _copy(getattr(norm, name), state, f"{keys[1]}.{name}", path, architecture)
            filled.append(conv_path)
    if not filled:
        raise SpecError(f"{path}: no backbone tensor of the model was found in it")
    return filled


def _copy(target: Tensor, state: dict, key: str, path: Path, architecture: str) -> None:
    source = state.get(key)
    if not isinstance(source, Tensor):
        raise SpecError(
            f"{path}: {key} is missing; model.pretrained_backbone takes torchvision's "
            f"{SOURCES[architecture]} state dict for architecture {architecture}"
        )
    if source.shape != target.shape:
        raise SpecError(
            f"{path}: {key} has shape {tuple(source.shape)} where the model needs "
            f"{tuple(target.shape)}; build the backbone at the file's width "
            "(backbone_attributes.width_multiplier: 1.0 for torchvision's models)"
        )
    target.copy_(source)
