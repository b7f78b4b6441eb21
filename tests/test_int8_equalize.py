"""The exact INT8 rewrite: stage-input concats split, channel ranges equalized."""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from bpnet.export.equalize import prepare_for_int8
from bpnet.export.int8 import calibrate_ranges, quantize_int8
from bpnet.export.sensitivity import output_sqnr
from bpnet.inference.onnx_source import read_onnx_metadata


class TwoStageNet(nn.Module):
    """Features (|x| ~ 100) -> stage 1 maps (|x| < 1) -> stage 2 on concat[maps, features].

    Stage 2 is a separable block: depthwise conv on the concat, 1x1 conv + ReLU whose channels
    differ in size by 10^4 (its filters scaled by 100 ... 0.01, the next depthwise conv's
    kernels by the inverse, so the network computes the same thing), depthwise conv, 1x1 maps.
    One INT8 scale for the concat keeps a few levels for the maps; one for the ReLU's output
    rounds its small channels away.
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 16, 3, padding=1)
        self.stage1 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 4, 1))
        self.dw1 = nn.Conv2d(20, 20, 3, padding=1, groups=20)
        self.pw1 = nn.Conv2d(20, 8, 1)
        self.dw2 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw2 = nn.Conv2d(8, 4, 1)
        spread = torch.logspace(2, -2, 8)
        with torch.no_grad():
            self.features.weight.mul_(30.0)
            self.stage1[1].weight.mul_(0.003)
            self.stage1[1].bias.mul_(0.003)
            self.pw1.weight.mul_(spread.view(8, 1, 1, 1))
            self.pw1.bias.mul_(spread)
            self.dw2.weight.div_(spread.view(8, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        maps1 = self.stage1(features)
        y = torch.relu(self.pw1(self.dw1(torch.cat([maps1, features], dim=1))))
        return maps1, self.pw2(self.dw2(y))


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    """(the FP32 ONNX file, its rewrite, 4 calibration batches, the rewrite's summary)."""
    folder = tmp_path_factory.mktemp("eq")
    path = folder / "net.onnx"
    torch.manual_seed(0)
    with warnings.catch_warnings():  # the TorchScript exporter, as bpnet's own export uses
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            TwoStageNet().eval(), torch.zeros(1, 3, 24, 24), str(path), input_names=["x"],
            output_names=["maps1", "maps2"], opset_version=17, dynamo=False,
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}},
        )  # fmt: skip
    rng = np.random.default_rng(0)
    batches = [{"x": rng.uniform(0, 1, (1, 3, 24, 24)).astype(np.float32)} for _ in range(4)]
    rewritten = folder / "net.equalized.onnx"
    return path, rewritten, batches, prepare_for_int8(path, rewritten, batches)


def _run(path, batch) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, batch)


def test_the_rewrite_computes_what_the_graph_computed(two_stage):
    path, rewritten, _, summary = two_stage
    assert summary.max_abs_diff < 1e-4
    # on an input the rewrite never saw, at another size
    batch = {"x": np.random.default_rng(1).uniform(0, 1, (2, 3, 32, 40)).astype(np.float32)}
    for before, after in zip(_run(path, batch), _run(rewritten, batch), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())


def test_no_conv_reads_a_concat_of_maps_and_features(two_stage):
    path, rewritten, _, summary = two_stage

    def concat_readers(model_path):
        graph = onnx.load(str(model_path)).graph
        concats = {n.output[0] for n in graph.node if n.op_type == "Concat"}
        return [n.name for n in graph.node if n.op_type == "Conv" and n.input[0] in concats]

    assert concat_readers(path)  # dw1 reads concat[maps, features]
    assert concat_readers(rewritten) == []
    # dw1 and then pw1 (which read dw1's parts, concatenated) each became two convs
    assert (summary.concats_split, summary.convs_split) == (2, 2)
    assert "split 2 convs reading 2 concatenated tensors" in summary.line()


def test_the_relu_output_read_by_a_depthwise_conv_has_flat_channels(two_stage):
    path, rewritten, batches, summary = two_stage
    assert summary.tensors_equalized >= 3

    def channel_spread(model_path):
        model = onnx.load(str(model_path))
        relu = next(n for n in model.graph.node if n.op_type == "Relu").output[0]
        model.graph.output.append(onnx.helper.make_tensor_value_info(relu, 1, None))
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        peak = np.max([np.abs(session.run([relu], b)[0]).max(axis=(0, 2, 3)) for b in batches], 0)
        return peak.max() / peak.min()

    assert channel_spread(path) > 1e3
    assert channel_spread(rewritten) < 1.01  # a depthwise reader: every channel as the largest


def test_plain_int8_of_the_rewrite_keeps_what_plain_int8_loses(two_stage):
    """Every node INT8, the same calibration: the rewritten graph's outputs stay close to
    FP32, the original's do not."""
    path, rewritten, batches, _ = two_stage

    class Reader:
        def __init__(self):
            self.index = 0

        def get_next(self):
            self.index += 1
            return batches[self.index - 1] if self.index <= len(batches) else None

        def rewind(self):
            self.index = 0

        def __len__(self):
            return len(batches)

    reference = [_run(path, b) for b in batches]
    sqnr = {}
    for name, model in (("original", path), ("rewritten", rewritten)):
        quantized = model.with_suffix(".int8.onnx")
        ranges = calibrate_ranges(model, Reader(), "minmax")
        quantize_int8(model, quantized, ranges, Reader())
        sqnr[name] = output_sqnr(reference, [_run(quantized, b) for b in batches])
    assert math.isfinite(sqnr["rewritten"])
    assert sqnr["rewritten"] > sqnr["original"] + 10


def test_export_rewrites_unless_told_not_to(checkpoint, tmp_path, capsys):
    from bpnet.cli import main

    images = tmp_path / "cal"
    images.mkdir()
    import cv2

    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(images / f"{i}.jpg"), rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    graphs = {}
    for equalize in ("on", "off"):
        out = tmp_path / equalize / "m.onnx"
        argv = ["export", "-m", str(checkpoint), "-o", str(out), "--data_type", "int8",
                "--cal_image_dir", str(images), "--batches", "2", "--sensitivity", "off",
                "--equalize", equalize]  # fmt: skip
        assert main(argv) == 0
        printed = capsys.readouterr().out
        assert ("INT8 rewrite: split" in printed) == (equalize == "on")
        sibling = onnx.load(str(out.with_suffix(".fp32.onnx")))
        graphs[equalize] = [n.op_type for n in sibling.graph.node]
        assert read_onnx_metadata(out)["bpnet.data_type"] == "int8"
    # the FP32 sibling is the graph the INT8 model was made from: rewritten, or as exported
    assert graphs["on"].count("Conv") > graphs["off"].count("Conv")
