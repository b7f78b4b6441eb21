"""PoseNet: the multi-stage heatmap + PAF network, built from its arch (plain data)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from bpnet.errors import SpecError
from bpnet.models.arch import arch_graph
from bpnet.models.blocks import Backbone, Stage


class PoseNet(nn.Module):
    """Backbone -> features F -> stages; every stage predicts heatmaps and PAFs.

    Build one with :func:`bpnet.models.build_model` (from a spec) or :func:`model_from_arch`
    (from a checkpoint's arch).

    Attributes:
        arch: the plain-data description this model was built from (a private copy); with
            the state dict it is everything a checkpoint needs.
        stride: output stride (8): maps are (H / 8, W / 8) for an (H, W) input.
        input_multiple: input sides must be multiples of this (8, or 16 for a backbone
            that upsamples a stride-16 map into its features).
        num_heatmaps: J + 1 (joints and background).
        num_pafs: 2 L (x and y per limb).
        num_stages: number of stages (each one is supervised).
        stage_names: module names of the stages, ``stage1`` first.
    """

    def __init__(self, arch: dict):
        super().__init__()
        self.arch = _plain_copy(arch)
        graph = arch_graph(self.arch)
        self.stride = graph.stride
        self.input_multiple = graph.input_multiple
        self.num_heatmaps = self.arch["num_heatmaps"]
        self.num_pafs = self.arch["num_pafs"]
        self.num_stages = len(self.arch["stages"])
        self.backbone = Backbone(self.arch["backbone"])
        widths = {
            "features": graph.feature_width,
            "heatmaps": self.num_heatmaps,
            "pafs": self.num_pafs,
        }
        self.stage_names = []
        for index, spec in enumerate(self.arch["stages"], start=1):
            in_channels = sum(widths[name] for name in spec["inputs"])
            self.add_module(f"stage{index}", Stage(in_channels, spec))
            self.stage_names.append(f"stage{index}")

    def forward(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Predict maps at every stage.

        Args:
            x: (B, 3, H, W) normalised RGB; H and W multiples of ``input_multiple``. Contiguous or
                channels_last; outputs follow the input's memory format.

        Returns:
            One ``(heatmaps (B, J + 1, H / 8, W / 8), pafs (B, 2L, H / 8, W / 8))`` per stage,
            stage 1 first; the last stage's pair is the prediction.
        """
        maps = {"features": self.backbone(x)}  # (B, C_F, H/8, W/8)
        outputs = []
        for name in self.stage_names:
            stage = getattr(self, name)
            parts = [maps[key] for key in stage.inputs]
            heatmaps, pafs = stage(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))
            maps["heatmaps"], maps["pafs"] = heatmaps, pafs
            outputs.append((heatmaps, pafs))
        return outputs


def model_from_arch(arch: dict) -> PoseNet:
    """Rebuild a model (random weights) from the arch stored in a checkpoint.

    Example:
        >>> ckpt = torch.load(path, weights_only=True)  # doctest: +SKIP
        >>> model = model_from_arch(ckpt["arch"])  # doctest: +SKIP
        >>> load_state_checked(model, ckpt["state_dict"], str(path))  # doctest: +SKIP

    Raises:
        SpecError: naming the arch field that cannot be built (``model arch: <field>: ...``).
    """
    return PoseNet(arch)


def load_state_checked(model: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """``model.load_state_dict(state_dict)`` with a one-line error on any mismatch.

    Args:
        model: built from the checkpoint's own arch.
        state_dict: the checkpoint's tensors.
        source: the file name, for the message.

    Raises:
        SpecError: naming ``source`` and the first tensor (in forward order) that is missing,
            extra or of another shape than the arch's widths give.
    """
    if not isinstance(state_dict, Mapping):
        raise SpecError(
            f"{source}: the stored weights are a {type(state_dict).__name__}, not a mapping of "
            "layer names to tensors; the file is damaged or not a bpnet model"
        )
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            raise SpecError(
                f"{source}: layer {key} is missing from the stored weights; the checkpoint's "
                "arch does not match its weights"
            )
        stored = state_dict[key]
        if not isinstance(stored, Tensor):
            raise SpecError(f"{source}: layer {key} is not a tensor; the checkpoint is damaged")
        if stored.shape != tensor.shape:
            raise SpecError(
                f"{source}: layer {key} has shape {tuple(stored.shape)} but the stored widths "
                f"say {tuple(tensor.shape)}; the checkpoint's widths do not match its weights"
            )
    extra = [key for key in state_dict if key not in expected]
    if extra:
        raise SpecError(
            f"{source}: layer {extra[0]} is in the stored weights but not in the stored arch "
            f"({len(extra)} such tensors); the checkpoint's arch does not match its weights"
        )
    model.load_state_dict(state_dict)


def describe_widths(model: PoseNet) -> str:
    """The built widths in one line, e.g. ``250,155 parameters; features 32 channels; stage
    convs 16 wide (stage 1's branch convs 128)``: what a spec's ``num_filters`` and width
    multiplier became."""
    graph = arch_graph(model.arch)
    widths: dict[bool, set[int]] = {True: set(), False: set()}  # stage 1? -> widths
    for path, node in graph.convs.items():
        if path.startswith("stage") and not node.is_output and not node.depthwise:
            widths[path.startswith("stage1.")].add(int(node.spec["out"]))
    later = "/".join(str(w) for w in sorted(widths[False])) or "-"
    first = "/".join(str(w) for w in sorted(widths[True] - widths[False]))
    return (
        f"{count_parameters(model):,} parameters; features {graph.feature_width} channels; "
        f"stage convs {later} wide" + (f" (stage 1's branch convs {first})" if first else "")
    )


def count_parameters(model: nn.Module, *, with_bn_statistics: bool = False) -> int:
    """Number of parameters (weights and biases, BN scale and shift).

    Args:
        with_bn_statistics: also count BN running means and variances, as Keras's
            ``count_params`` does; use it to compare with TAO's published counts.
    """
    total = sum(p.numel() for p in model.parameters())
    if with_bn_statistics:
        statistics = ("running_mean", "running_var")
        total += sum(b.numel() for name, b in model.named_buffers() if name.endswith(statistics))
    return total


def _plain_copy(arch: object) -> dict:
    """A deep copy through JSON: proves the arch is plain data and detaches it from the
    caller's object (an arch edited later must not desync a built model)."""
    try:
        copy = json.loads(json.dumps(arch))
    except (TypeError, ValueError) as err:
        raise SpecError(
            f"model arch: <top>: must hold only JSON types (dict, list, str, int, float, "
            f"bool, null): {err}"
        ) from None
    if not isinstance(copy, dict):
        raise SpecError(f"model arch: <top>: expected a mapping, got {type(arch).__name__}")
    return copy
