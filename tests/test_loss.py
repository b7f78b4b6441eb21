"""Masked (focal) L2 over stages and kernel regularisation: values, masking, normalisation."""

import pytest
import torch
from torch import nn

from bpnet.config import ExperimentSpec, from_dict
from bpnet.errors import SpecError
from bpnet.loss import focal_weight, masked_l2, pose_loss, regularization, shrink_weights


def maps(batch=2, heat=3, paf=4, h=5, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, heat, h, w, generator=g), torch.rand(batch, paf, h, w, generator=g)


def targets_like(heat, paf, mask=None):
    mask = torch.ones(heat.shape[0], *heat.shape[2:]) if mask is None else mask
    return {"heatmaps": torch.zeros_like(heat), "pafs": torch.zeros_like(paf), "mask": mask}


def test_value_is_half_sum_of_squares_per_sample():
    heat, paf = maps()
    loss = pose_loss([(heat, paf)], targets_like(heat, paf))
    expected = 0.5 * (heat.pow(2).sum() + paf.pow(2).sum()) / 2  # batch of 2
    assert torch.allclose(loss["loss"], expected)
    assert torch.allclose(loss["loss"], loss["heatmap"] + loss["paf"])


def test_batch_normalisation_is_per_sample():
    heat, paf = maps(batch=1)
    one = pose_loss([(heat, paf)], targets_like(heat, paf))["loss"]
    heat2, paf2 = heat.repeat(2, 1, 1, 1), paf.repeat(2, 1, 1, 1)
    two = pose_loss([(heat2, paf2)], targets_like(heat2, paf2))["loss"]
    assert torch.allclose(one, two)


def test_stages_are_summed_and_background_counts():
    heat, paf = maps()
    t = targets_like(heat, paf)
    one = pose_loss([(heat, paf)], t)["loss"]
    assert torch.allclose(pose_loss([(heat, paf), (heat, paf)], t)["loss"], 2 * one)
    # only the background channel (the last one) wrong: the loss still sees it
    background_only = torch.zeros_like(heat)
    background_only[:, -1] = 1.0
    loss = pose_loss([(background_only, torch.zeros_like(paf))], t)
    assert loss["heatmap"].item() == pytest.approx(0.5 * 5 * 6)  # per sample: h*w cells / 2


def test_masked_cells_contribute_zero_loss_and_gradient():
    heat, paf = maps()
    mask = torch.ones(2, 5, 6)
    mask[:, 1:3, 2:5] = 0.0
    t = targets_like(heat, paf, mask)
    heat = heat.clone().requires_grad_(True)
    before = pose_loss([(heat, paf)], t)["loss"]
    before.backward()
    assert torch.all(heat.grad[:, :, 1:3, 2:5] == 0)
    assert torch.all(heat.grad[:, :, 0] != 0)
    changed = heat.detach().clone()
    changed[:, :, 1:3, 2:5] = 100.0  # anything, where the mask is 0
    assert torch.allclose(pose_loss([(changed, paf)], t)["loss"], before)


def test_fractional_mask_weights_the_cell():
    heat, _ = maps(batch=1)
    full = masked_l2(heat, torch.zeros_like(heat), torch.ones(1, 5, 6))
    half = masked_l2(heat, torch.zeros_like(heat), torch.full((1, 5, 6), 0.5))
    assert torch.allclose(half, full / 2)


def test_map_weights():
    heat, paf = maps()
    t = targets_like(heat, paf)
    plain = pose_loss([(heat, paf)], t)
    weighted = pose_loss([(heat, paf)], t, heatmap_weight=3.0, paf_weight=0.0)
    assert torch.allclose(weighted["heatmap"], 3 * plain["heatmap"])
    assert weighted["paf"].item() == 0.0


def test_focal_l2_differs_from_l2_and_reduces_to_it():
    heat, paf = maps()
    t = targets_like(heat, paf)
    l2 = pose_loss([(heat, paf)], t)["loss"]
    focal = pose_loss([(heat, paf)], t, loss_type="focal_l2", focal_alpha=2.0, focal_beta=0.01)
    assert not torch.allclose(focal["loss"], l2)
    assert focal["loss"] < l2  # errors < 1 weigh less than 1
    same = pose_loss([(heat, paf)], t, loss_type="focal_l2", focal_alpha=0.0)["loss"]
    assert torch.allclose(same, l2)


def test_focal_weight_grows_with_error_and_has_a_floor():
    error = torch.tensor([0.0, 0.001, 0.1, -0.5, 1.0])
    w = focal_weight(error, alpha=2.0, beta=0.01)
    assert torch.allclose(w, torch.tensor([1e-4, 1e-4, 0.01, 0.25, 1.0]))


def test_mismatched_heads_are_a_clear_error():
    heat, paf = maps()
    t = targets_like(heat[:, :2], paf)
    with pytest.raises(ValueError, match="pose config"):
        pose_loss([(heat, paf)], t)


def test_loss_spec_checks():
    with pytest.raises(SpecError, match=r"loss\.focal_beta: must be >= 0"):
        from_dict(ExperimentSpec, {"loss": {"focal_beta": -1.0}})


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([3.0, -4.0]))
            self.fc.weight.copy_(torch.tensor([[0.5, -0.5]]))
            self.bn.weight.fill_(10.0)  # never regularised
            self.bn.bias.fill_(10.0)


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("l1", 0.1 * (1 + 2 + 0.5 + 0.5) + 0.01 * (3 + 4)),
        ("l2", 0.1 * (1 + 4 + 0.25 + 0.25) + 0.01 * (9 + 16)),
        ("l1_l2", 0.1 * (4 + 5.5) + 0.01 * (7 + 25)),
        ("none", 0.0),
    ],
)
def test_regularization_values(kind, expected):
    value = regularization(Net(), kind, kernel_factor=0.1, bias_factor=0.01)
    assert value.item() == pytest.approx(expected)


def test_decoupled_l1_is_a_soft_threshold_of_lr_times_factor():
    net = Net()
    shrink_weights(net, "l1", kernel_factor=0.1, bias_factor=0.0, lr=7.5)  # a 0.75 step
    assert torch.allclose(net.conv.weight.flatten(), torch.tensor([0.25, -1.25]))
    assert torch.equal(net.fc.weight, torch.zeros(1, 2))  # 0.5 stops at zero, no sign flip
    assert torch.equal(net.conv.bias, torch.tensor([3.0, -4.0]))  # factor 0: untouched
    assert torch.equal(net.bn.weight, torch.full_like(net.bn.weight, 10.0))


def test_decoupled_l2_is_sgds_step_on_the_term():
    net, sgd_net = Net(), Net()
    shrink_weights(net, "l2", kernel_factor=0.1, bias_factor=0.01, lr=0.5)
    optimizer = torch.optim.SGD(sgd_net.parameters(), lr=0.5)
    regularization(sgd_net, "l2", kernel_factor=0.1, bias_factor=0.01).backward()
    optimizer.step()
    for mine, sgd in zip(net.parameters(), sgd_net.parameters(), strict=True):
        assert torch.allclose(mine, sgd)


def test_regularization_gradient_reaches_kernels_only():
    net = Net()
    regularization(net, "l1", kernel_factor=1.0).backward()
    assert torch.equal(net.conv.weight.grad.flatten(), torch.tensor([1.0, -1.0]))
    assert net.conv.bias.grad is None and net.bn.weight.grad is None
