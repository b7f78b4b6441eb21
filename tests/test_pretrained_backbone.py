"""model.pretrained_backbone: ImageNet weights from torchvision-layout state dicts.

Each test writes a state dict in torchvision's key layout, generated here from the
networks' published layer tables (not from bpnet's key map), and checks what lands where.
"""

import pytest
import torch

from bpnet.config.spec import BackboneAttributes, ModelConfig
from bpnet.errors import SpecError
from bpnet.models import build_model
from bpnet.models.pretrained_backbone import load_pretrained_backbone
from bpnet.pose import load_pose_config


def batch_norm(state: dict, prefix: str, width: int, generator) -> None:
    state[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(width, generator=generator)
    state[f"{prefix}.bias"] = 0.1 * torch.randn(width, generator=generator)
    state[f"{prefix}.running_mean"] = 0.1 * torch.randn(width, generator=generator)
    state[f"{prefix}.running_var"] = 1 + torch.rand(width, generator=generator)
    state[f"{prefix}.num_batches_tracked"] = torch.tensor(100)


def vgg19_bn_state(generator) -> dict:
    """torchvision vgg19_bn: `features` is conv, bn, relu per conv and one entry per pool."""
    config = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M"]
    state, index, width = {}, 0, 3
    for item in config + [512] * 4 + ["M"]:
        if item == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.randn(item, width, 3, 3, generator=generator)
        state[f"features.{index}.bias"] = torch.randn(item, generator=generator)
        batch_norm(state, f"features.{index + 1}", item, generator)
        index, width = index + 3, item
    state["classifier.0.weight"] = torch.zeros(4096, 25088)[:1]  # any extra key is ignored
    return state


def resnet18_state(generator) -> dict:
    state = {"conv1.weight": torch.randn(64, 3, 7, 7, generator=generator)}
    batch_norm(state, "bn1", 64, generator)
    width = 64
    for layer, out in enumerate((64, 128, 256, 512), start=1):
        for block in (0, 1):
            prefix = f"layer{layer}.{block}"
            state[f"{prefix}.conv1.weight"] = torch.randn(out, width, 3, 3, generator=generator)
            batch_norm(state, f"{prefix}.bn1", out, generator)
            state[f"{prefix}.conv2.weight"] = torch.randn(out, out, 3, 3, generator=generator)
            batch_norm(state, f"{prefix}.bn2", out, generator)
            if block == 0 and out != width:
                shortcut = torch.randn(out, width, 1, 1, generator=generator)
                state[f"{prefix}.downsample.0.weight"] = shortcut
                batch_norm(state, f"{prefix}.downsample.1", out, generator)
            width = out
    state["fc.weight"] = torch.randn(1000, 512, generator=generator)
    return state


def mobilenet_v2_state(generator) -> dict:
    """torchvision mobilenet_v2 (width 1.0): its inverted-residual table."""
    state = {"features.0.0.weight": torch.randn(32, 3, 3, 3, generator=generator)}
    batch_norm(state, "features.0.1", 32, generator)
    table = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]
    width, index = 32, 1
    for expansion, out, repeats in table:
        for _ in range(repeats):
            hidden, prefix = width * expansion, f"features.{index}.conv"
            if expansion == 1:
                state[f"{prefix}.0.0.weight"] = torch.randn(hidden, 1, 3, 3, generator=generator)
                batch_norm(state, f"{prefix}.0.1", hidden, generator)
                state[f"{prefix}.1.weight"] = torch.randn(out, hidden, 1, 1, generator=generator)
                batch_norm(state, f"{prefix}.2", out, generator)
            else:
                expand = torch.randn(hidden, width, 1, 1, generator=generator)
                state[f"{prefix}.0.0.weight"] = expand
                batch_norm(state, f"{prefix}.0.1", hidden, generator)
                state[f"{prefix}.1.0.weight"] = torch.randn(hidden, 1, 3, 3, generator=generator)
                batch_norm(state, f"{prefix}.1.1", hidden, generator)
                state[f"{prefix}.2.weight"] = torch.randn(out, hidden, 1, 1, generator=generator)
                batch_norm(state, f"{prefix}.3", out, generator)
            width, index = out, index + 1
    return state


def full_width_model(architecture: str, mtype: str = "default"):
    config = ModelConfig(
        backbone_attributes=BackboneAttributes(architecture=architecture, mtype=mtype),
        stages=2,
        num_filters=16,
        stage_kernel_sizes=(3,),
        data_format="channels_first",
    )
    return build_model(config, load_pose_config()).eval()


# architecture -> (its torchvision state dict, backbone convs filled, bpnet conv -> their key)
CASES = {
    "vgg": (vgg19_bn_state, 10, {"conv4_1": "features.27", "conv2_2": "features.10"}),
    "resnet": (
        resnet18_state,
        15,
        {"layer2_0.shortcut": "layer2.0.downsample.0", "layer3_1.conv2": "layer3.1.conv2"},
    ),
    "mobilenet_v2": (
        mobilenet_v2_state,
        39,
        {
            "expanded_conv_depthwise": "features.1.conv.0.0",
            "expanded_conv_12.project": "features.13.conv.2",
        },
    ),
}  # fmt: skip


@pytest.mark.parametrize("architecture", CASES)
def test_torchvision_weights_land_on_the_same_layers(tmp_path, architecture):
    make, count, pairs = CASES[architecture]
    state = make(torch.Generator().manual_seed(0))
    path = tmp_path / "imagenet.pth"
    torch.save(state, path)
    model = full_width_model(architecture)
    stage_before = model.stage1.heatmap.out.weight.clone()
    filled = load_pretrained_backbone(model, path)
    assert len(filled) == count
    modules = dict(model.named_modules())
    for ours, theirs in pairs.items():
        torch.testing.assert_close(modules[f"backbone.{ours}"].weight, state[f"{theirs}.weight"])
    torch.testing.assert_close(model.stage1.heatmap.out.weight, stage_before)  # stages untouched


def test_vgg_conv_bias_is_folded_into_the_batch_norm(tmp_path):
    """bpnet's VGG convs have no bias: conv + bias + BN must equal conv + BN' exactly."""
    state = vgg19_bn_state(torch.Generator().manual_seed(1))
    torch.save(state, tmp_path / "vgg.pth")
    model = full_width_model("vgg")
    load_pretrained_backbone(model, tmp_path / "vgg.pth")
    x = torch.randn(1, 3, 16, 16)
    conv1_1 = torch.nn.functional.conv2d(
        x, state["features.0.weight"], state["features.0.bias"], padding=1
    )
    reference = torch.nn.functional.batch_norm(
        conv1_1,
        state["features.1.running_mean"], state["features.1.running_var"],
        state["features.1.weight"], state["features.1.bias"], eps=1e-5,
    )  # fmt: skip
    with torch.no_grad():
        conv = model.backbone.conv1_1
        ours = conv.bn(conv._conv_forward(x, conv.weight, None))
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_wrong_files_are_one_line(tmp_path):
    model = full_width_model("resnet")
    with pytest.raises(SpecError, match="not found"):
        load_pretrained_backbone(model, tmp_path / "missing.pth")
    torch.save(vgg19_bn_state(torch.Generator().manual_seed(0)), tmp_path / "vgg.pth")
    with pytest.raises(SpecError, match=r"conv1\.weight is missing.*resnet18"):
        load_pretrained_backbone(model, tmp_path / "vgg.pth")
    narrow = build_model(
        ModelConfig(
            backbone_attributes=BackboneAttributes(architecture="resnet", width_multiplier=0.5),
            stages=2, num_filters=16, stage_kernel_sizes=(3,),
        ),
        load_pose_config(),
    )  # fmt: skip
    torch.save(resnet18_state(torch.Generator().manual_seed(0)), tmp_path / "r18.pth")
    with pytest.raises(SpecError, match=r"width_multiplier: 1\.0"):
        load_pretrained_backbone(narrow, tmp_path / "r18.pth")
    openpose = full_width_model("openpose")
    with pytest.raises(SpecError, match="no ImageNet key map"):
        load_pretrained_backbone(openpose, tmp_path / "r18.pth")
