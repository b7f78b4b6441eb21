"""Stage-input range equalisation before INT8: the same function in FP32, maps in the features'
range, on both stage layouts (separable convs with linear depthwise readers; regular convs)."""

import copy

import pytest
import torch

from bpnet.config.spec import BackboneAttributes, ModelConfig
from bpnet.export.equalize import MAX_SCALE, equalize_stage_inputs
from bpnet.models import build_model
from bpnet.pose import load_pose_config

SIDE = 64


def model_of(architecture: str, mtype: str = "default") -> torch.nn.Module:
    config = ModelConfig(
        backbone_attributes=BackboneAttributes(
            architecture=architecture, mtype=mtype, width_multiplier=0.25
        ),
        stages=3,
        num_filters=16,
        stage_kernel_sizes=(3, 3),
        data_format="channels_first",
    )
    torch.manual_seed(0)
    model = build_model(config, load_pose_config()).eval()
    with torch.no_grad():  # features far wider than the maps, as in a trained network
        for name, param in model.named_parameters():
            if name.startswith("backbone") and param.dim() == 4:
                param.mul_(3.0)
    return model


def batches(count=2):
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(2, 3, SIDE, SIDE, generator=generator) * 4 for _ in range(count)]


def stage_input_ranges(model, x):
    """max |maps| and max |features| each refinement stage reads, from the forward pass."""
    outputs = model(x)
    features = model.backbone(x).abs().max()
    return [(max(h.abs().max(), p.abs().max()), features) for h, p in outputs[:-1]]


@pytest.mark.parametrize(
    "architecture, mtype",
    [("mobilenet_v2", "tfpose"), ("mobilenet_v2", "default"), ("resnet", "default")],
)
def test_equalised_network_computes_the_same_maps(architecture, mtype):
    model = model_of(architecture, mtype)
    x = batches(1)[0]
    before = stage_input_ranges(model, x)
    assert all(maps < features / 2 for maps, features in before)  # the disparity to cure
    equalized = copy.deepcopy(model)
    report = equalize_stage_inputs(equalized, batches())
    assert len(report.lines) == 2 * 2  # heatmap and PAF output convs of stages 1 and 2
    last = {k: v for k, v in model.state_dict().items() if k.startswith("stage3.") and ".out." in k}
    for key, value in last.items():  # the network's outputs are never rescaled
        assert torch.equal(equalized.state_dict()[key], value)
    with torch.no_grad():
        want, got = model(x), equalized(x)
        torch.testing.assert_close(got[-1][0], want[-1][0], rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(got[-1][1], want[-1][1], rtol=1e-3, atol=1e-4)
        after = stage_input_ranges(equalized, x)
    for (maps, features), (old_maps, _) in zip(after, before, strict=True):
        assert maps > old_maps * 1.5  # scaled up, towards the features' range
        assert maps <= features * 1.5 or maps >= old_maps * MAX_SCALE * 0.99
