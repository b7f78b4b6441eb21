"""One way to build a model: from the spec's ``model`` section and the pose config."""

from __future__ import annotations

from pathlib import Path

import torch

from bpnet.config import dump_spec, load_experiment_spec, resolve_pose_config
from bpnet.config.spec import ModelConfig
from bpnet.models.arch import ARCH_FORMAT
from bpnet.models.backbones import (
    RESNET_BLOCKS,
    Width,
    mobilenet_v2_backbone,
    mobilenet_v2_feature_width,
    openpose_backbone,
    resnet_backbone,
    vgg_backbone,
)
from bpnet.models.heads import lite_stages, openpose_stages, separable_stages
from bpnet.models.posenet import PoseNet, describe_widths, model_from_arch
from bpnet.pose import PoseConfig


def build_model(config: ModelConfig, pose: PoseConfig) -> PoseNet:
    """Build the network a spec describes, with random weights.

    Output channels come from the pose config (``pose.num_heatmap_channels``,
    ``pose.num_paf_channels``), so a custom skeleton needs no code change. When
    ``config.data_format`` is ``channels_last`` the weights are laid out channels_last
    (feed channels_last inputs too for speed).

    Example:
        >>> spec = load_experiment_spec("specs/synthetic_demo.yaml")  # doctest: +SKIP
        >>> model = build_model(spec.model, resolve_pose_config(spec.dataloader))  # doctest: +SKIP
        >>> outputs = model(images)  # [(heatmaps, pafs)] per stage  # doctest: +SKIP

    Args:
        config: ``spec.model`` (architecture, mtype, stages, widths, kernels, attention).
        pose: the skeleton.

    Returns:
        The model; ``model.arch`` rebuilds it with :func:`model_from_arch`.
    """
    model = model_from_arch(make_arch(config, pose))
    if config.data_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    return model


def spec_show_command(experiment_spec: Path, overrides: list[str]) -> str:
    """``bpnet spec show``: the resolved spec as YAML (every field, after the ``overrides``),
    then a comment line with the widths its model is built with (num_filters and the width
    multiplier do not scale every stage alike). The skeleton file must load too."""
    spec = load_experiment_spec(experiment_spec, overrides)
    model = build_model(spec.model, resolve_pose_config(spec.dataloader))
    return f"{dump_spec(spec)}# model as built: {describe_widths(model)}"


def make_arch(config: ModelConfig, pose: PoseConfig) -> dict:
    """The arch (plain data) of the network a spec describes; see :mod:`bpnet.models.arch`.

    Presets by ``backbone_attributes.architecture`` / ``mtype``:

    * ``vgg`` / ``default``: TAO BodyPoseNet (VGG19-BN backbone + lite stages).
    * ``resnet`` / ``resnet18`` (= ``default``), ``resnet10``: residual backbone + lite stages.
    * ``openpose`` / ``openpose_coco``: CMU OpenPose COCO exactly (the spec checks ``stages:
      6``, 128 filters, 7x7 kernels, full width, no BN); ``openpose`` / ``default``: the same
      layout with the spec's stages, widths and kernels. Biases follow ``use_bias``.
    * ``mobilenet_v2`` / ``default``: MobileNetV2 (width multiplier) with tf-pose's features
      (stride 8 + upsampled stride 16) and depthwise-separable two-branch stages of
      ``num_filters`` (the built width, not scaled); ``tfpose``: the same with tf-pose's
      TensorFlow conventions (instance norm in the backbone, TF padding and upsampling), the
      form ``bpnet import --from tfpose`` writes. Input sides: multiples of 16.
    """
    attrs = config.backbone_attributes
    width = scaled_width(attrs.width_multiplier)
    heads = {
        "num_heatmaps": pose.num_heatmap_channels,
        "num_pafs": pose.num_paf_channels,
        "width": width,
        "num_filters": config.num_filters,
        "stage_kernel_sizes": tuple(config.stage_kernel_sizes),
        "use_self_attention": config.use_self_attention,
        "bn": config.stage_batch_norm,
    }
    if attrs.architecture == "mobilenet_v2":
        backbone = mobilenet_v2_backbone(width, tf=attrs.mtype == "tfpose")
        stages = separable_stages(
            config.stages,
            num_heatmaps=pose.num_heatmap_channels,
            num_pafs=pose.num_paf_channels,
            feature_width=mobilenet_v2_feature_width(width),
            num_filters=config.num_filters,
            stage_kernel_sizes=tuple(config.stage_kernel_sizes),
            bn=config.stage_batch_norm,
        )
    elif attrs.architecture == "openpose":
        backbone = openpose_backbone(width)
        stages = openpose_stages(config.stages, **heads)
    else:
        if attrs.architecture == "vgg":
            backbone = vgg_backbone(
                width,
                backbone_bias=attrs.use_bias,
                head_bias=config.use_bias,
                use_pooling=attrs.use_pooling,
            )
        else:
            blocks = RESNET_BLOCKS["resnet18" if attrs.mtype == "default" else attrs.mtype]
            backbone = resnet_backbone(
                width, blocks=blocks, backbone_bias=attrs.use_bias, head_bias=config.use_bias
            )
        stages = lite_stages(config.stages, bias=config.use_bias, **heads)
    return {
        "format": ARCH_FORMAT,
        "architecture": attrs.architecture,
        "mtype": attrs.mtype,
        "num_heatmaps": pose.num_heatmap_channels,
        "num_pafs": pose.num_paf_channels,
        "backbone": backbone,
        "stages": stages,
    }


def scaled_width(multiplier: float) -> Width:
    """Nominal width -> built width: ``round(w * multiplier)`` to a multiple of 8, at least 8.

    Multiples of 8 keep vectorised CPU kernels and tensor cores busy; 1.0 keeps every
    nominal width as it is.
    """

    def width(nominal: int) -> int:
        if multiplier == 1.0:
            return nominal
        return max(8, round(nominal * multiplier / 8) * 8)

    return width
