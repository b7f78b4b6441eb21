"""The INT8 sensitivity pass on a hand-made network whose depthwise convolution INT8 wrecks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from bpnet.errors import BpnetError
from bpnet.export.int8 import calibrate_ranges, quantize_int8
from bpnet.export.sensitivity import (
    candidate_layers,
    find_sensitive_layers,
    manual_report,
    name_unnamed_nodes,
    node_blocks,
    output_sqnr,
)


class DepthwiseNet(nn.Module):
    """conv -> depthwise conv whose channels differ in size by 10^6 -> divide back -> 1x1 conv.

    Per-channel weight scales absorb the spread in the depthwise weights, but its output is one
    uint8 tensor: a range set by the largest channel rounds the small channels away, and the
    1x1 conv needs them (the division restores their size in FP32). Only the depthwise conv
    quantizes that tensor (Div is not quantized), so leaving it in FP32 repairs the model.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 4, 1)
        scale = torch.logspace(3, -3, 8)  # 1000 ... 0.001, one per channel
        with torch.no_grad():
            self.dw.weight.mul_(scale.view(8, 1, 1, 1))
            self.dw.bias.mul_(scale)
        self.register_buffer("scale", scale.view(1, 8, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(torch.relu(self.conv(x)))
        return self.pw(torch.relu(y / self.scale))


class Batches:
    """A calibration reader over fixed batches."""

    def __init__(self, batches: list[np.ndarray]):
        self.batches, self.index = batches, 0

    def get_next(self):
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return {"x": self.batches[self.index - 1]}

    def rewind(self):
        self.index = 0

    def __len__(self):
        return len(self.batches)


def exported(net_class: type[nn.Module], path):
    """(the ONNX file of a seeded ``net_class()``, a reader of 4 random batches, their ranges)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():  # the TorchScript exporter, as bpnet's own export uses
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            net_class().eval(), torch.zeros(1, 3, 32, 32), str(path), input_names=["x"],
            output_names=["y"], opset_version=17, dynamo=False,
        )  # fmt: skip
    rng = np.random.default_rng(0)
    reader = Batches([rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(4)])
    return path, reader, calibrate_ranges(path, reader, "percentile")


@pytest.fixture(scope="module")
def depthwise_onnx(tmp_path_factory):
    return exported(DepthwiseNet, tmp_path_factory.mktemp("dw") / "dw.onnx")


def test_the_depthwise_conv_that_int8_wrecks_stays_fp32(depthwise_onnx, tmp_path):
    path, reader, ranges = depthwise_onnx
    report = find_sensitive_layers(path, reader, ranges, threads=1)
    kinds = {layer.name: layer.kind for layer in report.layers}
    assert kinds == {"/conv/Conv": "conv", "/dw/Conv": "depthwise conv", "/pw/Conv": "conv"}
    assert report.kept_fp32 == ("/dw/Conv",)
    assert report.sqnr_kept_db > report.sqnr_int8_db + 20  # much smaller output error
    assert "1 node(s) kept in FP32 (1 depthwise conv)" in report.lines()[0]
    # the exclusion really leaves the conv in FP32: float weights, its output not quantized
    quantize_int8(path, tmp_path / "q.onnx", ranges, reader, nodes_to_exclude=report.kept_fp32)
    model = onnx.load(str(tmp_path / "q.onnx"))
    made_by = {out: node.op_type for node in model.graph.node for out in node.output}
    read_by = {name: node.op_type for node in model.graph.node for name in node.input}
    convs = {node.name: node for node in model.graph.node if node.op_type == "Conv"}
    assert convs["/dw/Conv"].input[1] not in made_by  # an FP32 initializer
    assert read_by[convs["/dw/Conv"].output[0]] == "Div"
    for name in ("/conv/Conv", "/pw/Conv"):  # the others are quantized
        assert made_by[convs[name].input[1]] == "DequantizeLinear"
        assert read_by[convs[name].output[0]] == "QuantizeLinear"


def test_the_margin_is_the_rule(depthwise_onnx):
    path, reader, ranges = depthwise_onnx
    report = find_sensitive_layers(path, reader, ranges, margin_db=math.inf, threads=1)
    assert report.kept_fp32 == () and report.sqnr_kept_db == report.sqnr_int8_db
    named = find_sensitive_layers(
        path, reader, ranges, margin_db=math.inf, keep_fp32=["/Div"], threads=1
    )
    assert named.kept_fp32 == ("/Div",) and named.kinds == {"/Div": "div"}
    summary = named.summary()
    assert summary["kept_fp32"] == [{"name": "/Div", "kind": "div"}]
    assert [layer["name"] for layer in summary["layers"]] == ["/conv/Conv", "/dw/Conv", "/pw/Conv"]


def test_unknown_node_names_and_unnamed_nodes_are_one_line_errors(depthwise_onnx, tmp_path):
    path, reader, ranges = depthwise_onnx
    with pytest.raises(BpnetError, match="--keep_fp32 /nope: no node of that name"):
        manual_report(path, ["/nope"])
    with pytest.raises(BpnetError, match=r"--keep_fp32 /nope\*: the pattern matches no node"):
        manual_report(path, ["/nope*"])
    # a pattern stands for every node it matches, once, in graph order
    report = manual_report(path, ["/pw/Conv", "/*w/Conv"])
    assert report.kept_fp32 == ("/pw/Conv", "/dw/Conv")
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.name = ""
    onnx.save_model(model, str(tmp_path / "unnamed.onnx"))
    with pytest.raises(BpnetError, match="have no name"):
        find_sensitive_layers(tmp_path / "unnamed.onnx", reader, ranges)
    assert name_unnamed_nodes(model) == len(model.graph.node)
    assert [layer.name for layer in candidate_layers(model)] == ["Conv_0", "Conv_2", "Conv_5"]


def test_output_sqnr():
    ref = [[np.array([3.0, 4.0])]]
    assert output_sqnr(ref, ref) == math.inf
    assert output_sqnr(ref, [[np.array([3.0, 4.5])]]) == pytest.approx(10 * math.log10(25 / 0.25))
    # (batch, channel, x): each channel's error relative to its energy, or the median's
    ref = [[np.array([[[10.0, 0.0], [1.0, 0.0], [0.001, 0.0]]])]]
    out = [[np.array([[[11.0, 0.0], [1.0, 0.1], [0.101, 0.0]]])]]
    relative = np.mean([1 / 100, 0.01 / 1, 0.01 / 1])
    assert output_sqnr(ref, out) == pytest.approx(-10 * math.log10(relative))
    assert output_sqnr(
        [[r.transpose(0, 2, 1) for r in ref[0]]], [[o.transpose(0, 2, 1) for o in out[0]]], -1
    ) == pytest.approx(-10 * math.log10(relative))


class Wrapped(nn.Module):
    """DepthwiseNet one scope down, named as bpnet's networks are: /model/dw/Conv ..."""

    def __init__(self):
        super().__init__()
        self.model = DepthwiseNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@pytest.fixture(scope="module")
def wrapped_onnx(tmp_path_factory):
    return exported(Wrapped, tmp_path_factory.mktemp("wrapped") / "wrapped.onnx")


def test_blocks_are_scopes_with_the_unscoped_nodes_only_they_read(wrapped_onnx):
    path, _, _ = wrapped_onnx
    blocks = node_blocks(onnx.load(str(path)))
    assert blocks == {
        "/model/conv": ["/model/conv/Conv"],
        "/model/dw": ["/model/Relu", "/model/dw/Conv"],  # the Relu only the dw conv reads
        "/model/pw": ["/model/Div", "/model/Relu_1", "/model/pw/Conv"],
    }


def test_the_block_pass_keeps_blocks_fp32_worst_first_until_the_score_is_reached(wrapped_onnx):
    """No node stands out (margin inf): the block pass alone finds the depthwise conv's block,
    scoring each quantized model by its output SQNR, and stops once the model reaches 30 dB."""
    path, reader, ranges = wrapped_onnx
    reference = [[y] for y in _outputs(path, reader)]

    def score(model):
        return output_sqnr(reference, [[y] for y in _outputs(model, reader)])

    report = find_sensitive_layers(
        path, reader, ranges, margin_db=math.inf, threads=1, score=score, block_threshold=30.0,
        block_scored="SQNR",
    )  # fmt: skip
    scores = {b.name: b.score for b in report.blocks}
    assert min(scores, key=scores.get) == "/model/dw"
    assert report.block_start < 30.0 <= report.blocks[1].score_after
    assert [b.name for b in report.fragile_blocks] == ["/model/dw"]
    assert report.kept_fp32 == ("/model/Relu", "/model/dw/Conv")
    assert report.by_block == {"/model/Relu", "/model/dw/Conv"}
    assert report.sqnr_kept_db > report.sqnr_int8_db + 20
    assert report.ms_fp32 > 0 and report.ms_int8 > 0
    printed = "\n".join(report.lines())
    assert "/model/dw (block of 2 nodes): SQNR" in printed and "reaches 30.000" in printed
    assert "ms per calibration batch: FP32" in printed
    summary = report.summary()
    assert summary["fp32_blocks"] == ["/model/dw"] and summary["block_threshold"] == 30.0
    # a threshold the model already meets keeps no block; one it never meets keeps them all
    met = find_sensitive_layers(
        path, reader, ranges, margin_db=math.inf, threads=1, score=score,
        block_threshold=-math.inf, timing_rounds=0,
    )  # fmt: skip
    assert met.kept_fp32 == () and met.ms_fp32 is None
    never = find_sensitive_layers(
        path, reader, ranges, margin_db=math.inf, threads=1, score=score,
        block_threshold=math.inf, timing_rounds=0,
    )  # fmt: skip
    assert [b.name for b in never.fragile_blocks] == sorted(scores, key=scores.get)
    assert len(never.fragile_blocks) == 3


def _outputs(path, reader) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reader.rewind()
    return [session.run(None, batch)[0] for batch in iter(reader.get_next, None)]


class CancellingNet(nn.Module):
    """conv -> 1x1 conv whose first filter is +-1000 on two equal channels (its output ~0: the
    weights' size says nothing about the output's) -> 1x1 conv. One int8 scale for all of the
    middle conv's weights rounds its other filters (~1) to zero; per filter, or in FP32, they
    survive."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 8, 1)
        self.out = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.conv.weight[1] = self.conv.weight[0]
            self.conv.bias[1] = self.conv.bias[0]
            self.mid.weight[0].zero_()
            self.mid.weight[0, 0], self.mid.weight[0, 1] = 1000.0, -1000.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.mid(torch.relu(self.conv(x)))))


def test_a_node_kept_fp32_between_int8_nodes_runs_fp32_in_bpnet_sessions(tmp_path):
    """ONNX Runtime's WeightBiasQuantization would quantize the kept conv's weights itself,
    one scale for all its filters; bpnet's sessions turn it off (make_session)."""
    import onnxruntime as ort

    from bpnet.inference.onnx_source import make_session

    path, reader, ranges = exported(CancellingNet, tmp_path / "cancel.onnx")
    mid = next(n.name for n in onnx.load(str(path)).graph.node if n.name.startswith("/mid/"))
    quantized = tmp_path / "cancel.int8.onnx"
    quantize_int8(path, quantized, ranges, reader, nodes_to_exclude=[mid])
    reference = [[y] for y in _outputs(path, reader)]
    reader.rewind()
    batches = list(iter(reader.get_next, None))
    plain = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    ours = make_session(quantized, 1)
    sqnr_plain = output_sqnr(reference, [plain.run(None, b) for b in batches])
    sqnr_ours = output_sqnr(reference, [ours.run(None, b) for b in batches])
    assert sqnr_ours > sqnr_plain + 10
