"""Backbone presets, written as arch layer lists (plain data, see :mod:`bpnet.models.arch`).

Every backbone has output stride 8 and ends in the 128-channel features F that all stages
read. ``width`` maps a nominal width (64, 128, ...) to the built one (width multiplier).
"""

from __future__ import annotations

from collections.abc import Callable

Width = Callable[[int], int]

# VGG19's first four blocks as BodyPoseNet and OpenPose keep them: (width, convs); a stride-2
# step follows each of the first three, giving output stride 8
VGG19_BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 2))
# ResNet basic blocks per layer; layer4 is dropped (stride 8 and 256 channels are enough)
RESNET_BLOCKS = {"resnet18": (2, 2, 2), "resnet10": (1, 1, 1)}


def conv(
    name: str,
    out: int,
    kernel: int = 3,
    *,
    bias: bool,
    bn: bool,
    act: str = "relu",
    stride: int = 1,
    dilation: int = 1,
) -> dict:
    """One conv entry of an arch ("same" padding)."""
    return {
        "type": "conv",
        "name": name,
        "out": out,
        "kernel": kernel,
        "stride": stride,
        "dilation": dilation,
        "bias": bias,
        "bn": bn,
        "act": act,
    }


def maxpool(name: str, kernel: int = 2, stride: int = 2, padding: int = 0) -> dict:
    return {"type": "maxpool", "name": name, "kernel": kernel, "stride": stride, "padding": padding}


def vgg19_trunk(width: Width, *, bias: bool, bn: bool, use_pooling: bool = True) -> list[dict]:
    """conv1_1 .. conv4_2 of VGG19 (10 convs, stride 8).

    Args:
        use_pooling: 2x2 max-pools after blocks 1-3; False puts stride 2 on the first conv of
            blocks 2-4 instead (TAO's ``VggNet(use_pooling=False)``; same parameters).
    """
    layers = []
    for block, (nominal, count) in enumerate(VGG19_BLOCKS, start=1):
        for i in range(1, count + 1):
            stride = 2 if (not use_pooling and block > 1 and i == 1) else 1
            layers.append(conv(f"conv{block}_{i}", width(nominal), bias=bias, bn=bn, stride=stride))
        if use_pooling and block < len(VGG19_BLOCKS):
            layers.append(maxpool(f"pool{block}"))
    return layers


def vgg_backbone(
    width: Width, *, backbone_bias: bool, head_bias: bool, use_pooling: bool = True
) -> list[dict]:
    """TAO BodyPoseNet's backbone: VGG19 conv1_1..conv4_2 + conv4_3 (256), all conv-BN-ReLU,
    then the channel-reduction conv (128, no BN, bias from the model's ``use_bias``)."""
    return [
        *vgg19_trunk(width, bias=backbone_bias, bn=True, use_pooling=use_pooling),
        conv("conv4_3", width(256), bias=backbone_bias, bn=True),
        conv("channel_reduction", width(128), bias=head_bias, bn=False),
    ]


def openpose_backbone(width: Width) -> list[dict]:
    """CMU OpenPose COCO: VGG19 conv1_1..conv4_2 + conv4_3_CPM (256) + conv4_4_CPM (128);
    biases, no BN, max-pools."""
    return [
        *vgg19_trunk(width, bias=True, bn=False),
        conv("conv4_3_cpm", width(256), bias=True, bn=False),
        conv("conv4_4_cpm", width(128), bias=True, bn=False),
    ]


def resnet_backbone(
    width: Width, *, blocks: tuple[int, int, int], backbone_bias: bool, head_bias: bool
) -> list[dict]:
    """ResNet-18-like (basic blocks, BN) at output stride 8, then the channel reduction.

    Stem 7x7/2 + 3x3/2 max-pool (stride 4); layer1 64; layer2 128, stride 2 (stride 8);
    layer3 256 at stride 1 with dilation 2, which keeps ResNet's receptive field without a
    fourth downsampling. A block whose width or stride changes gets a 1x1 shortcut conv;
    the others add their input (identity), so every add is recorded in the arch.
    """
    layers = [
        conv("conv1", width(64), 7, stride=2, bias=backbone_bias, bn=True),
        maxpool("pool1", kernel=3, stride=2, padding=1),
    ]
    in_width = width(64)
    for index, (nominal, count, stride, dilation) in enumerate(
        zip((64, 128, 256), blocks, (1, 2, 1), (1, 1, 2), strict=True), start=1
    ):
        out = width(nominal)
        for j in range(count):
            step = stride if j == 0 else 1
            # no activation on either addend: the ReLU comes after the add
            body = [
                conv("conv1", out, stride=step, dilation=dilation, bias=backbone_bias, bn=True),
                conv("conv2", out, dilation=dilation, bias=backbone_bias, bn=True, act="none"),
            ]
            shortcut = None
            if step != 1 or in_width != out:
                shortcut = conv(
                    "shortcut", out, 1, stride=step, bias=backbone_bias, bn=True, act="none"
                )
            block = {"type": "residual", "name": f"layer{index}_{j}", "convs": body}
            layers.append({**block, "shortcut": shortcut})
            in_width = out
    layers.append(conv("channel_reduction", width(128), bias=head_bias, bn=False))
    return layers


# MobileNetV2's block table (expansion t, nominal width c, repeats n, first stride s), cut
# after the 96-channel stride-16 stage: tf-pose's features come from the last stride-8 block
# and the last stride-16 block
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))


def mobilenet_v2_feature_width(width: Width) -> int:
    """Channels of :func:`mobilenet_v2_backbone`'s features (stride-8 + stride-16 blocks)."""
    return width(32) + width(96)


def _block_name(index: int) -> str:
    """TF-slim's block names (``expanded_conv``, ``expanded_conv_1``, ...), kept for import."""
    return "expanded_conv" if index == 0 else f"expanded_conv_{index}"


def mobilenet_v2_backbone(width: Width, *, tf: bool = False) -> list[dict]:
    """MobileNetV2 (inverted residuals, linear bottlenecks) with tf-pose's feature pyramid.

    Stem 3x3/2 conv of 32, then the blocks of :data:`MOBILENET_V2_BLOCKS`: expand 1x1 (t x
    input width, ReLU6; absent when t = 1), depthwise 3x3 (stride s, ReLU6), project 1x1
    (no activation); blocks that keep width and resolution add their input (an identity
    residual, no activation after the add). Features F = concat[the last stride-8 block, the
    last stride-16 block upsampled x2]: output stride 8, input sides multiples of 16.

    Args:
        width: nominal -> built widths (the width multiplier; 0.5 is tf-pose's "small").
        tf: tf-pose's exact conventions, for imported weights: normalisation with each
            input's own statistics (instance norm), TensorFlow SAME padding, TF1 bilinear
            upsampling. False: batch norm, PyTorch padding and upsampling.
    """
    extra = {"norm": "instance", "padding": "tf_same"} if tf else {}

    def unit(name: str, out: int, kernel: int, *, act: str, stride: int = 1, **more) -> dict:
        return {
            **conv(name, out, kernel, stride=stride, bias=False, bn=True, act=act),
            **extra,
            **more,
        }

    layers = [unit("conv", width(32), 3, act="relu6", stride=2)]
    in_width, index, stride_reached, skip = width(32), 0, 2, None
    for expansion, nominal, repeats, first_stride in MOBILENET_V2_BLOCKS:
        out = width(nominal)
        for j in range(repeats):
            stride = first_stride if j == 0 else 1
            hidden = in_width * expansion
            convs = [unit("expand", hidden, 1, act="relu6")] if expansion != 1 else []
            convs.append(unit("depthwise", hidden, 3, act="relu6", stride=stride, depthwise=True))
            convs.append(unit("project", out, 1, act="none"))
            name = _block_name(index)
            if stride == 1 and in_width == out:
                layers.append(
                    {
                        "type": "residual",
                        "name": name,
                        "convs": convs,
                        "shortcut": None,
                        "act": "none",
                    }
                )
            else:
                layers += [{**c, "name": f"{name}_{c['name']}"} for c in convs]
            stride_reached *= stride
            if stride_reached == 8:
                skip = layers[-1]["name"]
            in_width, index = out, index + 1
    layers.append(
        {
            "type": "upsample_concat",
            "name": "feat_concat",
            "skip": skip,
            "scale": 2,
            "mode": "bilinear_tf1" if tf else "bilinear",
        }
    )
    return layers
