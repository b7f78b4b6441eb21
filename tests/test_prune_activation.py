"""Pruning beyond TAO's rules: the activation criterion (filters ranked on pictures), the fold
of measured means, the refit of the convs that lost inputs, and dropping the last stages (the
CLI's ``--rank_on DIR --stages N``: test_prune.py)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from bpnet.errors import BpnetError
from bpnet.models.blocks import ConvBlock
from bpnet.pose import load_pose_config
from bpnet.prune import PruneSettings, prune_model
from bpnet.prune.activation import channel_statistics, input_moments
from bpnet.prune.cut import dependency_graph, keep_stages
from bpnet.prune.reconstruct import as_rows, kernel_inputs, raw_output, refit_conv, refit_paths
from bpnet.prune.run import prepare
from test_prune import MODEL_TYPES, images, trained_model

TFPOSE = MODEL_TYPES["mobilenet_v2_tfpose"]
ACTIVATION = PruneSettings(threshold=1e-6, granularity=1, min_num_filters=1, criterion="activation")


@pytest.fixture(scope="module")
def pose():
    return load_pose_config()


def pictures(count=4, seed=3):
    """Batches of two network inputs, as the criterion reads them."""
    x = torch.randn(count, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    return [x[i : i + 2] for i in range(0, count, 2)]


@pytest.mark.parametrize("kind", ["vgg_stage_bn", "mobilenet_v2_tfpose", "resnet"])
def test_keep_stages_predicts_what_those_stages_predicted(pose, kind):
    model = trained_model(pose, **MODEL_TYPES[kind])  # 3 stages
    x = images()
    with torch.no_grad():
        expected = model(x)
        got = keep_stages(model, 2)(x)
    assert len(got) == 2
    for (h0, p0), (h1, p1) in zip(expected[:2], got, strict=True):
        torch.testing.assert_close(h1, h0)
        torch.testing.assert_close(p1, p0)
    assert len(model(x)) == 3  # the input model is left alone
    for count in (1, 4):
        with pytest.raises(BpnetError, match=f"--stages {count}: this model has 3 stages; keep 2"):
            keep_stages(model, count)


def test_the_statistic_is_the_share_of_each_output_a_channel_carries(pose):
    """Replace one channel of stage2.paf.conv2_pw by its mean where its consumer reads it
    (through the 1x1 depthwise conv3_dw) and measure the change of the consumer's normalised
    outputs: its energy, relative to what each output carries, is the statistic squared."""
    model = trained_model(pose, **TFPOSE)
    batches = pictures()
    moments = input_moments(model, batches)
    stats = channel_statistics(model, dependency_graph(model), moments)
    consumer = dict(model.named_modules())["stage2.paf.conv3_pw"]
    moment = moments["stage2.paf.conv3_pw"]
    gamma = consumer.bn.weight.detach().double()
    for channel in (0, 5):
        energy = torch.zeros((), dtype=torch.float64)
        for batch in batches:
            seen = {}
            hook = consumer.register_forward_pre_hook(lambda _m, x, seen=seen: seen.update(x=x[0]))
            with torch.no_grad():
                model(batch)
            hook.remove()
            x = seen["x"].double()
            change = consumer.weight[:, channel, 0, 0].double()[:, None, None, None] * (
                moment.mean[channel] - x[:, channel]
            )  # (out, B, h, w)
            energy += (change**2).mean(dim=(2, 3)).sum(dim=1) @ (gamma**2 / moment.output_var)
        expected = (energy / len(batches) / batches[0].shape[0]).sqrt()
        assert stats["stage2.paf.conv2_pw"][channel] == pytest.approx(expected.item(), rel=1e-4)


def test_a_small_kernel_behind_instance_norm_is_not_a_spare_filter(pose):
    """Instance norm gives a channel the same output whatever its kernel's scale (while the
    conv's output variance stays well above the norm's eps): TAO's kernel norm sees four
    spare filters where the activation criterion sees the filters they were."""
    model = trained_model(pose, **TFPOSE)
    path = "backbone.expanded_conv_12.expand"
    conv = dict(model.named_modules())[path]
    before = channel_statistics(model, dependency_graph(model), input_moments(model, pictures()))
    norms = conv.weight.detach().flatten(1).norm(dim=1)
    with torch.no_grad():
        conv.weight[:4] *= 0.1
    after = channel_statistics(model, dependency_graph(model), input_moments(model, pictures()))
    np.testing.assert_allclose(after[path], before[path], rtol=0.02)
    shrunk = conv.weight.detach().flatten(1).norm(dim=1)
    torch.testing.assert_close(shrunk[:4], 0.1 * norms[:4])


def test_channels_the_pictures_never_move_are_removed_exactly(pose):
    """Zero kernels in stage1's conv4_pw give constant channels (their batch norm shift): the
    criterion scores them 0 and the cut folds their measured mean into the 1x1 output conv
    (through the 1x1 depthwise conv5_dw), so the predictions do not change."""
    model = trained_model(pose, **TFPOSE)
    path = "stage1.heatmap.conv4_pw"
    with torch.no_grad():
        dict(model.named_modules())[path].weight[:6] = 0
    ready = prepare(model, ACTIVATION, pictures())
    assert np.all(ready.statistics[path][:6] < 1e-6 * ready.statistics[path].max())
    pruned, plan = prune_model(model, ACTIVATION, pictures())
    assert not set(range(6)) & set(plan.layers[path].kept)
    # on the pictures measured: a channel they never move may move on others
    x = torch.cat(pictures())
    with torch.no_grad():
        for (h0, p0), (h1, p1) in zip(model(x), pruned(x), strict=True):
            torch.testing.assert_close(h1, h0, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(p1, p0, atol=1e-5, rtol=1e-4)


def test_the_activation_criterion_needs_pictures(pose):
    model = trained_model(pose, **TFPOSE)
    with pytest.raises(BpnetError, match="--rank_on DIR"):
        prune_model(model, ACTIVATION)


@pytest.mark.parametrize("kernel,bn,constant", [(1, True, 0.5), (3, False, 0.0)])
def test_refit_recovers_outputs_a_removed_input_channel_carried(kernel, bn, constant):
    """A removed input that was a mix of the kept ones (plus a constant: a 1x1 conv, where no
    zero padding breaks the mix) is no loss to a linear conv: the refit finds weights that give
    the unpruned outputs again, where dropping the channel does not. The constant goes to the
    bias, or to a batch norm's running mean, measured from the unpruned one's (the cut had
    already folded the removed channel's mean into the pruned conv's)."""
    spec = {"out": 4, "kernel": kernel, "stride": 1, "dilation": 1, "bias": not bn, "bn": bn}
    spec["act"] = "relu"
    torch.manual_seed(0)
    full, cut = ConvBlock(6, spec).eval(), ConvBlock(5, spec).eval()
    if bn:
        with torch.no_grad():
            full.bn.running_mean.uniform_(-1, 1)
            full.bn.running_var.uniform_(0.5, 2)
        cut.bn.load_state_dict(full.bn.state_dict())
        cut.bn.running_mean -= 0.3  # what the fold of the removed channel's mean left
    x = torch.randn(8, 5, 12, 12)
    x6 = torch.cat([x, 2 * x[:, :1] - x[:, 1:2] + constant], dim=1)  # channel 5: 2 x0 - x1 + c
    with torch.no_grad():
        expected = full(x6)
        cut.weight.copy_(full.weight[:, :5])
        assert (cut(x) - expected).abs().max() > 0.1
        centre = full.bn.running_mean if bn else None
        refit_conv(cut, as_rows(kernel_inputs(cut, x)), as_rows(raw_output(full, x6)), centre)
        torch.testing.assert_close(cut(x), expected, atol=1e-3, rtol=1e-3)  # the ridge


@pytest.mark.parametrize("kind", ["mobilenet_v2_tfpose", "vgg_stage_bn", "resnet"])
def test_refit_brings_a_cut_network_closer_to_the_unpruned_one(pose, kind):
    """Filters go (tf-pose: instance norms, depthwise convs; VGG: 3x3 convs; ResNet: residual adds):
    on pictures it was not fitted on, the refitted network's last maps are closer to the
    unpruned network's than those of the same cut without refit, and only convs that lost
    inputs changed."""
    model = trained_model(pose, **MODEL_TYPES[kind])
    settings = replace(ACTIVATION, threshold=0.5)
    refitted, _ = prune_model(model, settings, pictures(16))
    plain, _ = prune_model(model, replace(settings, refit=False), pictures(16))
    changed = {
        key
        for key, value in refitted.state_dict().items()
        if not torch.equal(value, plain.state_dict()[key])
    }
    paths = refit_paths(refitted, model)
    assert paths and {f"{path}.weight" for path in paths} <= changed
    refit = {f"{path}.{name}" for path in paths for name in ("weight", "bias", "bn.running_mean")}
    assert changed <= refit
    x = torch.cat(pictures(4, seed=11))
    with torch.no_grad():
        expected, near, far = model(x)[-1], refitted(x)[-1], plain(x)[-1]
    for k in range(2):  # heatmaps, PAFs
        assert (near[k] - expected[k]).norm() < 0.9 * (far[k] - expected[k]).norm()
