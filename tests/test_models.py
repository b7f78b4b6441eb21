"""Models: shapes per stage, gradients, the reference parameter counts, arch round trips,
pruned widths, one-line checkpoint errors, custom skeletons, bf16 + channels_last."""

import copy
import json
import re
from pathlib import Path

import pytest
import torch

from bpnet.config import load_experiment_spec
from bpnet.config.spec import BackboneAttributes, ModelConfig
from bpnet.errors import SpecError
from bpnet.models import (
    PoseNet,
    arch_graph,
    build_model,
    count_parameters,
    load_state_checked,
    make_arch,
    model_from_arch,
)
from bpnet.models.blocks import ConvBlock, upsample2x_tf1
from bpnet.pose import load_pose_config

ARCHITECTURES = ("vgg", "resnet", "openpose", "mobilenet_v2")
SIDE = 64  # input side of every forward here: maps are 8x8


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convs gain nothing from a second thread, and on a shared 2-core machine an OpenMP
    barrier waiting on a busy core makes each forward ~100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pose():
    return load_pose_config()


def small_config(architecture="vgg", stages=3, **kwargs) -> ModelConfig:
    """A narrow model (widths / 8, at least 8) that runs a 64x64 forward in milliseconds."""
    attrs = {
        "architecture": architecture,
        "width_multiplier": 0.125,
        **{k: kwargs.pop(k) for k in ("mtype", "use_pooling", "width_multiplier") if k in kwargs},
    }
    kwargs.setdefault("num_filters", 64)
    kwargs.setdefault("stage_kernel_sizes", (3, 3))
    return ModelConfig(
        backbone_attributes=BackboneAttributes(**attrs),
        stages=stages,
        data_format="channels_first",
        **kwargs,
    )


def images(batch=2, side=SIDE) -> torch.Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))


def assert_shapes(outputs, stages, heatmaps, pafs, side=SIDE):
    assert len(outputs) == stages
    for h, p in outputs:
        assert h.shape == (2, heatmaps, side // 8, side // 8)
        assert p.shape == (2, pafs, side // 8, side // 8)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("stages", range(2, 8))
def test_output_shapes_per_stage(pose, architecture, stages):
    model = build_model(small_config(architecture, stages), pose).eval()
    assert (model.stride, model.num_stages) == (8, stages)
    assert (model.num_heatmaps, model.num_pafs) == (19, 38)
    with torch.no_grad():
        assert_shapes(model(images()), stages, 19, 38)


@pytest.mark.parametrize(
    ("architecture", "extra"),
    [
        ("vgg", {"use_self_attention": True}),
        ("vgg", {"use_pooling": False}),
        ("resnet", {}),
        ("resnet", {"mtype": "resnet10"}),
        ("openpose", {}),
        ("mobilenet_v2", {"stage_batch_norm": True}),
        ("mobilenet_v2", {"mtype": "tfpose", "stage_batch_norm": True}),
    ],
)
def test_every_parameter_gets_a_gradient(pose, architecture, extra):
    model = build_model(small_config(architecture, **extra), pose).train()
    outputs = model(images())
    sum(h.sum() + p.sum() for h, p in outputs).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_openpose_coco_matches_the_published_network(pose):
    config = ModelConfig(
        backbone_attributes=BackboneAttributes(architecture="openpose", mtype="openpose_coco"),
        stages=6,
    )
    model = build_model(config, pose)
    assert count_parameters(model) == 52_311_446
    assert len(arch_graph(model.arch).convs) == 92
    # stages 2..6 read concat[PAF 38, heatmap 19, F 128] = 185 channels
    assert model.stage2.paf.conv1.in_channels == 185
    assert model.stage6.heatmap.conv1.kernel_size == (7, 7)


@pytest.mark.parametrize(
    ("stages", "keras_count", "convs"), [(3, 16_777_835, 37), (6, 30_015_638, 64)]
)
def test_vgg_default_matches_tao(pose, stages, keras_count, convs):
    """TAO's own BpNetLiteModel test publishes these Keras counts (BN statistics included)."""
    model = build_model(ModelConfig(stages=stages), pose)
    assert count_parameters(model, with_bn_statistics=True) == keras_count
    assert len(arch_graph(model.arch).convs) == convs


def test_strided_vgg_has_the_same_parameters(pose):
    """use_pooling: false is TAO's VggNet layout: stride-2 convs where the pools were."""
    pooled = build_model(small_config(), pose)
    strided = build_model(small_config(use_pooling=False), pose)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in strided.modules())
    assert strided.backbone.conv2_1.stride == (2, 2)
    assert count_parameters(strided) == count_parameters(pooled)


def test_width_multiplier_keeps_output_channels(pose):
    model = build_model(small_config(), pose)
    assert model.backbone.conv1_1.out_channels == 8  # 64 / 8
    assert model.stage2.trunk.conv1.out_channels == 8
    assert model.stage2.heatmap.out.out_channels == 19
    assert model.stage2.paf.out.out_channels == 38


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_rebuilt_from_arch_gives_the_same_outputs(pose, architecture):
    model = build_model(small_config(architecture, use_self_attention=True), pose).eval()
    x = images()
    with torch.no_grad():
        expected = model(x)
    rebuilt = model_from_arch(model.arch).eval()
    load_state_checked(rebuilt, model.state_dict(), "model.pt")
    with torch.no_grad():
        got = rebuilt(x)
    for (h0, p0), (h1, p1) in zip(expected, got, strict=True):
        assert torch.equal(h0, h1) and torch.equal(p0, p1)


def test_arch_is_plain_data(pose, tmp_path):
    model = build_model(small_config("resnet"), pose)
    assert json.loads(json.dumps(model.arch)) == model.arch
    path = tmp_path / "model.pt"
    torch.save({"arch": model.arch, "state_dict": model.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["arch"] == model.arch
    rebuilt = model_from_arch(ckpt["arch"])
    load_state_checked(rebuilt, ckpt["state_dict"], str(path))
    assert count_parameters(rebuilt) == count_parameters(model)


def test_model_keeps_its_own_copy_of_the_arch(pose):
    arch = make_arch(small_config(), pose)
    model = model_from_arch(arch)
    arch["backbone"][0]["out"] = 3
    assert model.arch["backbone"][0]["out"] == 8


def test_shrunk_widths_rebuild_and_run(pose):
    """What a pruner does: narrow convs in a copy of the arch, coupled groups together."""
    for architecture in ("vgg", "resnet"):
        arch = copy.deepcopy(build_model(small_config(architecture), pose).arch)
        graph = arch_graph(arch)
        prunable = [path for path, node in graph.convs.items() if not node.is_output]
        for path in prunable[1::3]:
            for member in graph.group_of(path):
                graph.convs[member].spec["out"] = max(1, graph.convs[member].spec["out"] // 2)
        model = model_from_arch(arch).eval()
        for path in prunable[1::3]:
            assert model.get_submodule(path).out_channels == graph.convs[path].spec["out"]
        with torch.no_grad():
            assert_shapes(model(images()), 3, 19, 38)


def test_graph_inputs_match_the_built_convs(pose):
    for architecture in ARCHITECTURES:
        model = build_model(small_config(architecture, use_self_attention=True), pose)
        graph = arch_graph(model.arch)
        for path, node in graph.convs.items():
            conv = model.get_submodule(path)
            assert conv.in_channels == node.in_channels, path
            width = sum(3 if p == "image" else graph.convs[p].spec["out"] for p in node.inputs)
            assert width == node.in_channels, path
        outputs = {p for p, n in graph.convs.items() if n.is_output}
        assert len(outputs) == 2 * model.num_stages
        first = {"openpose": "stage2.heatmap.conv1", "mobilenet_v2": "stage2.heatmap.conv1_dw"}
        first = first.get(architecture, "stage2.trunk.conv1")
        assert {"stage1.heatmap.out", "stage1.paf.out"} <= set(graph.convs[first].inputs)


def test_residual_adds_are_coupled(pose):
    graph = arch_graph(build_model(small_config("resnet"), pose).arch)
    groups = {frozenset(g) for g in graph.coupled}
    assert (
        frozenset({"backbone.conv1", "backbone.layer1_0.conv2", "backbone.layer1_1.conv2"})
        in groups
    )
    assert (
        frozenset(
            {"backbone.layer2_0.conv2", "backbone.layer2_0.shortcut", "backbone.layer2_1.conv2"}
        )
        in groups
    )
    attention = arch_graph(make_arch(small_config(use_self_attention=True), pose))
    assert ("stage2.paf.conv3", "stage2.paf.attention") in attention.coupled


def test_widths_that_disagree_with_the_weights_give_one_line(pose):
    model = build_model(small_config(), pose)
    arch = copy.deepcopy(model.arch)
    conv = next(layer for layer in arch["backbone"] if layer["name"] == "conv3_1")
    conv["out"] //= 2
    with pytest.raises(SpecError) as err:
        load_state_checked(model_from_arch(arch), model.state_dict(), "runs/demo/model.pt")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("runs/demo/model.pt: layer backbone.conv3_1.weight has shape")
    assert "(32, 16, 3, 3) but the stored widths say (16, 16, 3, 3)" in message


def test_missing_and_extra_tensors_give_one_line(pose):
    model = build_model(small_config(), pose)
    state = dict(model.state_dict())
    del state["stage2.paf.out.bias"]
    with pytest.raises(SpecError, match=r"^m\.pt: layer stage2\.paf\.out\.bias is missing"):
        load_state_checked(model, state, "m.pt")
    state = {**model.state_dict(), "stage9.out.weight": torch.zeros(1)}
    with pytest.raises(SpecError, match=r"^m\.pt: layer stage9\.out\.weight is in the stored"):
        load_state_checked(model, state, "m.pt")


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda a: a["backbone"][0].update(out=0), "backbone[0].out"),
        (lambda a: a["backbone"][0].update(kernel=2), "backbone[0].kernel"),
        (lambda a: a["backbone"][0].pop("act"), "backbone[0].act"),
        (lambda a: a["backbone"][0].update(colour="red"), "backbone[0].colour"),
        (lambda a: a["stages"][1]["paf"]["out"].update(out=36), "stages[1].paf.out.out"),
        (lambda a: a["stages"][0].update(inputs=["features", "pafs"]), "stages[0].inputs"),
        (lambda a: a["backbone"].pop(2), "backbone"),  # a pool gone: stride 4
        (lambda a: a.update(format=99), "format"),
    ],
)
def test_bad_arch_names_the_field(pose, edit, field):
    arch = make_arch(small_config(), pose)
    edit(arch)
    with pytest.raises(SpecError, match="^model arch: " + re.escape(field) + ":"):
        model_from_arch(arch)


def test_coupled_widths_must_agree(pose):
    arch = make_arch(small_config("resnet"), pose)
    block = next(layer for layer in arch["backbone"] if layer["name"] == "layer2_0")
    block["shortcut"]["out"] = 8
    with pytest.raises(SpecError, match=r"backbone\[4\]\.shortcut\.out: .*added"):
        model_from_arch(arch)


def test_channels_follow_a_custom_skeleton(five_joint_config):
    pose = load_pose_config(five_joint_config)
    for architecture in ARCHITECTURES:
        model = build_model(small_config(architecture), pose).eval()
        assert (model.num_heatmaps, model.num_pafs) == (6, 8)  # 5 joints + bg, 4 limbs x 2
        with torch.no_grad():
            assert_shapes(model(images()), 3, 6, 8)


def test_bf16_autocast_with_channels_last(pose):
    model = build_model(small_config("resnet", use_self_attention=True), pose).eval()
    model = model.to(memory_format=torch.channels_last)
    x = images().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = model(x)[-1][0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = model(x)
    assert_shapes(outputs, 3, 19, 38)
    heatmaps = outputs[-1][0]
    assert heatmaps.dtype == torch.bfloat16
    assert torch.isfinite(heatmaps.float()).all()
    assert torch.allclose(heatmaps.float(), reference, atol=0.05, rtol=0.1)


def test_spec_data_format_and_unknown_mtype(pose):
    model = build_model(
        ModelConfig(backbone_attributes=BackboneAttributes(width_multiplier=0.125)), pose
    )
    assert model.backbone.conv1_1.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(
        SpecError, match=re.escape("model.backbone_attributes.mtype: unknown preset 'tiny'")
    ):
        load_experiment_spec(None, ["model.backbone_attributes.mtype=tiny"])


def test_openpose_coco_preset_cannot_be_changed_by_the_spec():
    coco = ["model.backbone_attributes.architecture=openpose",
            "model.backbone_attributes.mtype=openpose_coco"]  # fmt: skip
    assert load_experiment_spec(None, [*coco, "model.stages=6"]).model.stages == 6
    with pytest.raises(SpecError, match=re.escape("model.stages: the openpose_coco preset is")):
        load_experiment_spec(None, coco)  # the default 3 stages
    with pytest.raises(SpecError, match=r"model\.num_filters: .*use mtype: default"):
        load_experiment_spec(None, [*coco, "model.stages=6", "model.num_filters=64"])
    # the layout itself stays configurable
    default = [coco[0], "model.stages=3", "model.num_filters=64"]
    assert load_experiment_spec(None, default).model.num_filters == 64


def test_demo_spec_builds(pose):
    spec = load_experiment_spec(Path(__file__).parents[1] / "specs" / "synthetic_demo.yaml")
    model = build_model(spec.model, pose)
    assert isinstance(model, PoseNet) and model.num_stages == spec.model.stages
    assert count_parameters(model) < 2_000_000


def test_mobilenet_v2_layout(pose):
    """tf-pose's layout: features = the last stride-8 block + the last stride-16 block
    upsampled, so input sides must be multiples of 16; depthwise convs keep their input's
    width; residual adds only where a block keeps width and resolution."""
    model = build_model(small_config("mobilenet_v2", width_multiplier=0.5), pose)
    graph = arch_graph(model.arch)
    assert (model.stride, model.input_multiple) == (8, 16)
    assert build_model(small_config("vgg"), pose).input_multiple == 8
    assert graph.features == (
        "backbone.expanded_conv_5.project",
        "backbone.expanded_conv_12.project",
    )
    assert graph.feature_width == 16 + 48
    depthwise = [node for node in graph.convs.values() if node.depthwise]
    assert all(node.spec["out"] == node.in_channels for node in depthwise)
    assert all(model.get_submodule(n.path).groups == n.in_channels for n in depthwise)
    assert len(graph.coupled) == 4  # blocks 2, 4-5, 7-9, 11-12 add their input


def test_tf1_upsampling_is_asymmetric():
    """TF1's resize_bilinear x2: output 2i = input i, 2i + 1 = mean of i and i + 1, the last
    input repeated past the edge (not PyTorch's half-pixel centres)."""
    x = torch.arange(12.0).view(1, 1, 3, 4) ** 2
    up = upsample2x_tf1(x)[0, 0]
    rows = [0, 0.5, 1, 1.5, 2, 2]  # input row sampled by output row
    cols = [0, 0.5, 1, 1.5, 2, 2.5, 3, 3]
    grid = x[0, 0]

    def sample(r, c):
        r0, c0 = int(r), int(c)
        r1, c1 = min(r0 + 1, 2), min(c0 + 1, 3)
        top = grid[r0, c0] * (1 - (c - c0)) + grid[r0, c1] * (c - c0)
        bottom = grid[r1, c0] * (1 - (c - c0)) + grid[r1, c1] * (c - c0)
        return top * (1 - (r - r0)) + bottom * (r - r0)

    expected = torch.tensor([[sample(r, c) for c in cols] for r in rows])
    torch.testing.assert_close(up, expected)
    half_pixel = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear")
    assert not torch.allclose(half_pixel[0, 0], expected)


def test_tf_same_padding_puts_the_odd_pixel_at_the_end():
    spec = {"type": "conv", "name": "c", "out": 2, "kernel": 3, "stride": 2, "dilation": 1,
            "bias": False, "bn": False, "act": "none"}  # fmt: skip
    torch.manual_seed(0)
    tf = ConvBlock(3, {**spec, "padding": "tf_same"})
    same = ConvBlock(3, spec)
    same.weight.data.copy_(tf.weight.data)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = torch.nn.functional.conv2d(
            torch.nn.functional.pad(x, (0, 1, 0, 1)), tf.weight, stride=2
        )
        torch.testing.assert_close(tf(x), expected)
        assert tf(x).shape == same(x).shape == (1, 2, 4, 4)
        assert not torch.allclose(same(x), expected)


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda b: b[1].update(out=8), r"backbone\[1\]\.out", "depthwise"),
        (lambda b: b[-1].update(skip="nowhere"), r"backbone\[\d+\]\.skip", "earlier"),
        (lambda b: b[-1].update(scale=4), r"backbone\[\d+\]\.scale", "does not meet"),
        (lambda b: b[0].update(norm="group"), r"backbone\[0\]\.norm", "one of"),
        (lambda b: b[0].update(padding="valid"), r"backbone\[0\]\.padding", "one of"),
    ],
)
def test_bad_mobilenet_arch_names_the_field(pose, edit, field, message):
    arch = make_arch(small_config("mobilenet_v2", width_multiplier=0.5), pose)
    edit(arch["backbone"])
    with pytest.raises(SpecError, match="^model arch: " + field + ": .*" + message):
        model_from_arch(arch)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_background_heatmap_starts_at_one(pose, architecture):
    """The background heatmap (1 - max of the joints) is 1 almost everywhere: a fresh network
    predicts it from the first step, and the joints and PAFs near 0."""
    model = build_model(small_config(architecture), pose).eval()
    with torch.no_grad():
        for heatmaps, pafs in model(images()):
            assert abs(heatmaps[:, -1].mean().item() - 1) < 0.25  # was 0 before the prior
            assert heatmaps[:, :-1].abs().mean().item() < 0.25
            assert pafs.abs().mean().item() < 0.25
