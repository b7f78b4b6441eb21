"""A tiny network that follows the ``bpnet.models`` contract, for fast training tests.

``build_model(model_config, pose)`` -> a module with ``.arch`` (plain dict) and ``.stride`` (8)
whose forward returns ``[(heatmaps, pafs), ...]`` per stage; ``model_from_arch(arch)``;
``load_state_checked(model, state_dict, source)``. Parameter names follow the stage rule of
:mod:`bpnet.train.optim` (``backbone.*``, ``stages.<i>.*``). ``batch_norm: False`` in the arch
makes it BN-free, so that data-parallel runs can equal a single process exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from bpnet.errors import SpecError


class TinyPoseNet(nn.Module):
    def __init__(self, arch: dict):
        super().__init__()
        self.arch = dict(arch)
        self.stride = 8
        width, heat, paf = arch["width"], arch["heatmap_channels"], arch["paf_channels"]
        layers, channels = [], 3
        for _ in range(3):  # three stride-2 convs: output stride 8
            layers.append(nn.Conv2d(channels, width, 3, stride=2, padding=1))
            if arch["batch_norm"]:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU())
            channels = width
        self.backbone = nn.Sequential(*layers)
        self.stages = nn.ModuleList()
        for stage in range(arch["stages"]):
            inputs = width if stage == 0 else width + heat + paf
            self.stages.append(
                nn.ModuleDict(
                    {
                        "trunk": nn.Sequential(nn.Conv2d(inputs, width, 3, padding=1), nn.ReLU()),
                        "heat": nn.Conv2d(width, heat, 1),
                        "paf": nn.Conv2d(width, paf, 1),
                    }
                )
            )

    def forward(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        features = self.backbone(images)
        outputs, x = [], features
        for stage in self.stages:
            y = stage["trunk"](x)
            outputs.append((stage["heat"](y), stage["paf"](y)))
            x = torch.cat([features, *outputs[-1]], 1)
        return outputs


def build_model(model_config, pose, *, batch_norm: bool = True) -> TinyPoseNet:
    width = max(4, round(16 * model_config.backbone_attributes.width_multiplier))
    return model_from_arch(
        {
            "width": width,
            "stages": model_config.stages,
            "heatmap_channels": pose.num_heatmap_channels,
            "paf_channels": pose.num_paf_channels,
            "batch_norm": batch_norm,
        }
    )


def model_from_arch(arch: dict) -> TinyPoseNet:
    return TinyPoseNet(arch)


def load_state_checked(model: nn.Module, state_dict: dict, source: str) -> None:
    mine = model.state_dict()
    if mine.keys() != state_dict.keys() or any(mine[k].shape != state_dict[k].shape for k in mine):
        raise SpecError(f"{source}: weights do not fit the model")
    model.load_state_dict(state_dict)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
