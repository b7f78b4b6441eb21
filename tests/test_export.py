"""Export: ONNX equals PyTorch, FP16, INT8 QDQ and its calibration files, the TensorRT cache,
the deployable model, calibration sampling, and models run through evaluate / inference."""

import json
import struct
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

import tiny_model
from bpnet.cli import main
from bpnet.config import load_experiment_spec, load_inference_spec
from bpnet.data.synth import generate_dataset
from bpnet.errors import BpnetError
from bpnet.export import ExportOptions, run_export
from bpnet.export.calibration import letterbox_rgb, sample_calibration_images
from bpnet.export.int8 import TensorfileReader, calibrate_ranges
from bpnet.export.onnx_export import convert_fp16, export_onnx
from bpnet.export.sensitivity import quantized_op_types
from bpnet.export.tensorfile import read_tensorfile, write_tensorfile
from bpnet.export.trt_cache import cache_text, parse_cache, read_cache
from bpnet.inference.infer import find_inputs
from bpnet.inference.model_io import (
    ModelIO,
    bilinear_upsampling_matrix,
    maps_from_outputs,
    warp_rgb,
)
from bpnet.inference.onnx_source import read_onnx_metadata
from bpnet.inference.pipeline import input_geometry
from bpnet.inference.runtime import load_model
from bpnet.pose import load_pose_config

POSE = load_pose_config()
SPEC = load_experiment_spec(None)


def tiny_net(seed: int = 0) -> torch.nn.Module:
    """TinyPoseNet with batch norm whose statistics are not the identity (the fold is tested)."""
    torch.manual_seed(seed)
    net = tiny_model.build_model(SPEC.model, POSE)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one per pytest worker, as conftest does for torch
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_maps(net: torch.nn.Module, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for pair in net(torch.from_numpy(x)) for t in pair]


@pytest.mark.parametrize("size", [(64, 96), None], ids=["static", "dynamic"])
def test_onnx_equals_pytorch(tmp_path, size):
    net = tiny_net()
    path = tmp_path / "m.onnx"
    io_ = export_onnx(net, path, pose=POSE, train_spec=SPEC, size=size)
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 17
    assert [o.name for o in model.graph.output] == list(io_.output_order)
    assert io_.output_order == tuple(
        f"{k}_stage{i}" for i in (1, 2, 3) for k in ("heatmaps", "pafs")
    )
    assert not any(t.HasField("data_location") and t.data_location for t in model.graph.initializer)
    run = session(path)
    shapes = [(1, 3, 64, 96)] if size else [(1, 3, 64, 96), (2, 3, 48, 80), (1, 3, 96, 64)]
    rng = np.random.default_rng(0)
    for shape in shapes:
        x = rng.standard_normal(shape).astype(np.float32)
        got = run.run(None, {"input": x})
        for ref, out in zip(torch_maps(net, x), got, strict=True):
            assert ref.shape == out.shape
            np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    if size:
        with pytest.raises(Exception, match=r"[Ii]nvalid"):  # a fixed size refuses another
            run.run(None, {"input": np.zeros((1, 3, 48, 80), np.float32)})


def test_channels_last_export_is_nhwc_and_equal(tmp_path):
    net = tiny_net()
    io_ = export_onnx(net, tmp_path / "m.onnx", pose=POSE, train_spec=SPEC, channels_last=True)
    assert io_.layout == "NHWC"
    x = np.random.default_rng(1).standard_normal((1, 40, 56, 3)).astype(np.float32)
    got = session(tmp_path / "m.onnx").run(None, {"input": x})
    ref = torch_maps(net, np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g.transpose(0, 3, 1, 2), r, atol=1e-4, rtol=0)


def test_export_records_the_input_multiple(tmp_path):
    """A network whose inner layers need sides in multiples of 16 says so in its ONNX file,
    and every runtime source rounds its inputs to it; files without the key read as 8."""
    from bpnet.inference.torch_source import TorchSource

    net = tiny_net()
    assert export_onnx(net, tmp_path / "8.onnx", pose=POSE, train_spec=SPEC).size_multiple == 8
    net.input_multiple = 16
    assert TorchSource(net).input_multiple == 16
    io_ = export_onnx(net, tmp_path / "16.onnx", pose=POSE, train_spec=SPEC)
    loaded = load_model(tmp_path / "16.onnx")
    assert io_.size_multiple == loaded.io.size_multiple == 16
    assert loaded.source().input_multiple == 16
    with pytest.raises(BpnetError, match=r"multiples of 16; use 64x96$"):
        export_onnx(net, tmp_path / "bad.onnx", pose=POSE, train_spec=SPEC, size=(64, 88))
    assert not (tmp_path / "bad.onnx").exists()
    old = json.loads(io_.to_json())
    del old["size_multiple"]  # a file written before the field existed
    assert ModelIO.from_json(json.dumps(old), "old.onnx").size_multiple == 8


def test_fp16_export_runs_and_is_close(tmp_path):
    net = tiny_net()
    export_onnx(net, tmp_path / "m.onnx", pose=POSE, train_spec=SPEC)
    half = convert_fp16(onnx.load(str(tmp_path / "m.onnx")))
    onnx.save_model(half, str(tmp_path / "h.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # kept I/O
    assert read_onnx_metadata(tmp_path / "h.onnx")["bpnet.data_type"] == "fp16"
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32)
    got = session(tmp_path / "h.onnx").run(None, {"input": x})
    for ref, out in zip(torch_maps(net, x), got, strict=True):
        assert out.dtype == np.float32
        scale = np.abs(ref).max()
        assert np.abs(out - ref).max() < 5e-3 * scale + 1e-4
        assert not np.array_equal(out, ref)  # it really ran in half precision


# checkpoints, images and datasets ------------------------------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """A tiny synthetic COCO-layout dataset (4 val images)."""
    root = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(root, 1, 4, seed=3, image_size=(96, 160))
    return root


def image_folder(path: Path, count: int, seed: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        picture = rng.integers(0, 256, (60 + 4 * i, 90, 3), dtype=np.uint8)
        cv2.imwrite(str(path / f"img{i}.png"), picture)
    return path


@pytest.fixture(scope="module")
def int8_export(checkpoint, tmp_path_factory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("int8")
    images = image_folder(folder / "cal", 6)
    options = ExportOptions(
        model=checkpoint, output=folder / "m.onnx", data_type="int8", cal_image_dir=images,
        cal_data_file=folder / "cal.tensor", batches=3, batch_size=2, input_dims=(64, 96),
    )  # fmt: skip
    return run_export(options, say=lambda _: None), folder


# INT8 -----------------------------------------------------------------------------------------


def test_int8_is_qdq_with_uint8_activations_and_per_channel_weights(int8_export):
    result, folder = int8_export
    model = onnx.load(str(folder / "m.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 5 and ops.count("DequantizeLinear") > 5
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    activations = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert activations and all(inits[n.input[2]].dtype == np.uint8 for n in activations)
    weights = [
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4
    ]
    assert weights, "conv weights are stored quantized"
    for node in weights:
        kernel = inits[node.input[0]]
        assert kernel.dtype == np.int8
        assert inits[node.input[1]].shape == (kernel.shape[0],)  # one scale per output channel
        assert np.all(inits[node.input[2]] == 0)  # symmetric weights
    assert read_onnx_metadata(folder / "m.onnx")["bpnet.data_type"] == "int8"
    assert set(result["files"]) == {"onnx", "fp32_onnx", "cal_cache_file", "cal_data_file"}
    assert result["max_abs_diff"] < 0.1  # quantized, yet the same maps


def test_int8_export_reports_the_nodes_it_kept_in_fp32(int8_export):
    """The sensitivity pass ran (on by default): its report is returned and stored in the
    model, and the nodes it names really are FP32 (float weights, no integer kernel)."""
    result, folder = int8_export
    report = result["int8_report"]
    metadata = read_onnx_metadata(folder / "m.onnx")
    assert metadata["bpnet.int8_fp32_nodes"] == ",".join(report.kept_fp32)
    summary = json.loads(metadata["bpnet.int8_sensitivity"])
    fp32 = onnx.load(str(folder / "m.fp32.onnx"))
    ops = quantized_op_types()
    measured = [n.name for n in fp32.graph.node if n.op_type in ops]
    assert [layer["name"] for layer in summary["layers"]] == measured
    assert {n.op_type for n in fp32.graph.node if n.name in measured} >= {"Conv", "Concat"}
    assert "Relu" not in ops  # folded into the conv before it
    assert summary["margin_db"] == 10.0 and summary["cutoff_db"] <= 40.0
    assert [k["name"] for k in summary["kept_fp32"]] == list(report.kept_fp32)
    assert all(
        layer["sqnr_db"] < summary["cutoff_db"] or layer["name"] not in report.kept_fp32
        for layer in summary["layers"]
    )
    assert summary["sqnr_kept_db"] >= summary["sqnr_int8_db"] - 1.0
    # an untrained network finds nobody on the pictures: nothing for the block pass to compare
    assert summary["blocks"] == [] and summary["block_threshold"] is None
    assert summary["ms_fp32"] > 0 and summary["ms_int8"] > 0  # both models timed
    quantized = onnx.load(str(folder / "m.onnx"))
    made_by = {out: node.op_type for node in quantized.graph.node for out in node.output}
    for node in quantized.graph.node:
        if node.op_type == "Conv":
            assert (made_by.get(node.input[1]) == "DequantizeLinear") == (
                node.name not in report.kept_fp32
            ), node.name


def test_keep_fp32_by_hand_is_printed_and_checked(checkpoint, tmp_path, capsys):
    images = image_folder(tmp_path / "cal", 2)
    argv = ["export", "-m", str(checkpoint), "--data_type", "int8", "--cal_image_dir",
            str(images), "--batches", "2", "-d", "64,96,3", "--sensitivity", "off"]  # fmt: skip
    name = "/model/backbone/conv1_1/Conv"
    out = tmp_path / "m.onnx"
    assert main([*argv, "-o", str(out), "--keep_fp32", f"{name}, /model/stages.0/Nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--keep_fp32 /model/stages.0/Nope: no node" in err
    assert list(tmp_path.glob("m.*")) == []
    assert main([*argv, "-o", str(out), "--keep_fp32", name]) == 0
    printed = capsys.readouterr().out
    assert "INT8: 1 node(s) kept in FP32 (1 conv)" in printed
    assert f"  {name} (conv): named by --keep_fp32" in printed
    assert "sensitivity node" not in printed  # the pass did not run
    assert read_onnx_metadata(out)["bpnet.int8_fp32_nodes"] == name


def two_image_int8(checkpoint: Path, tmp_path: Path, output: Path, **paths) -> ExportOptions:
    """An INT8 export of the small checkpoint calibrated on two 64x96 images."""
    return ExportOptions(
        model=checkpoint, output=output, data_type="int8",
        cal_image_dir=image_folder(tmp_path / "cal", 2), batches=2, batch_size=1,
        input_dims=(64, 96), **paths,
    )  # fmt: skip


def test_a_late_failure_leaves_no_output(checkpoint, tmp_path, monkeypatch):
    """The last step (here the ONNX Runtime check, in real life a TensorRT build) fails after
    the model, cache and tensorfile exist: none of them may be left behind."""
    import bpnet.export.exporter as exporter

    def broken(*args, **kwargs):
        raise BpnetError("late failure")

    monkeypatch.setattr(exporter, "_compare_with_torch", broken)
    out = tmp_path / "out"
    out.mkdir()
    options = two_image_int8(checkpoint, tmp_path, out / "m.onnx", cal_data_file=out / "cal.t")
    with pytest.raises(BpnetError, match="late failure"):
        run_export(options, say=lambda _: None)
    assert list(out.iterdir()) == []


def test_an_unwritable_output_folder_stops_before_calibration(checkpoint, tmp_path):
    """The cache's folder cannot be made (a file is in the way): the error comes before the
    calibration images are read, and the model is not left in place without its cache."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    said = []
    options = two_image_int8(
        checkpoint, tmp_path, tmp_path / "m.onnx", cal_cache_file=blocker / "cal.bin"
    )
    with pytest.raises(BpnetError, match="blocker: is a file"):
        run_export(options, say=said.append)
    assert said == [] and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("fails", [False, True])
def test_engine_and_its_metadata_land_together_or_not_at_all(
    checkpoint, tmp_path, monkeypatch, fails
):
    """The engine build (faked: no TensorRT here) writes the engine and its .json; both reach
    their place only when the build succeeds, and a failed build leaves nothing at all."""
    import types

    import bpnet.export.tensorrt_engine as trt_engine
    import bpnet.inference.tensorrt_source as trt_source

    fake_trt = types.SimpleNamespace(__version__="10.3.0")
    monkeypatch.setattr(trt_source, "import_tensorrt", lambda _why: fake_trt)
    built = {}

    def fake_build(onnx_path, engine_path, io_, metadata, **kwargs):
        if fails:
            raise BpnetError("TensorRT could not build an engine")
        built.update(kwargs, engine=engine_path, cache=read_cache(kwargs["cache_file"]))
        Path(engine_path).write_bytes(b"engine")
        trt_source.engine_metadata_path(engine_path).write_text(json.dumps(metadata))

    monkeypatch.setattr(trt_engine, "build_engine", fake_build)
    out = tmp_path / "out"
    out.mkdir()
    options = ExportOptions(
        model=checkpoint, output=out / "m.onnx", data_type="int8", engine_file=out / "m.engine",
        cal_image_dir=image_folder(tmp_path / "cal", 2), batches=2, batch_size=1,
        input_dims=(64, 96),
    )  # fmt: skip
    if fails:
        with pytest.raises(BpnetError, match="could not build"):
            run_export(options, say=lambda _: None)
        assert list(out.iterdir()) == []
        return
    result = run_export(options, say=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == [
        "m.cal.bin", "m.engine", "m.engine.json", "m.fp32.onnx", "m.onnx"
    ]  # fmt: skip
    assert result["files"]["engine_file"] == str(out / "m.engine")
    assert built["engine"].parent != out  # built in the staging folder, then moved
    assert built["data_type"] == "int8" and built["cache"].header.startswith("TRT-100300-")
    assert (out / "m.engine").read_bytes() == b"engine"
    assert json.loads((out / "m.engine.json").read_text())  # the ONNX model's metadata


def test_options_that_do_not_apply_are_reported(checkpoint, tmp_path):
    said = []
    options = ExportOptions(
        model=checkpoint, output=tmp_path / "m.onnx", cal_data_file=tmp_path / "cal.tensor",
        batches=20, cal_method="percentile", upsample_ratio=2,
    )  # fmt: skip
    result = run_export(options, say=said.append)
    notes = [line for line in said if "ignored" in line]
    assert notes == [
        "note: --cal_data_file, --batches, --cal_method only apply to --data_type int8; ignored",
        "note: --upsample_ratio only applies to --sdk_compatible_model; ignored",
    ]
    assert set(result["files"]) == {"onnx"} and not (tmp_path / "cal.tensor").exists()


def test_a_tao_export_command_translates_one_to_one(checkpoint, tmp_path, capsys):
    """TAO's short options and forms: -k KEY (the model is written encrypted), -t tfonnx, -d in
    CHW order with -i channels_first; and TAO's default layout, NHWC, when -i is not given."""
    out = tmp_path / "tao.onnx"
    argv = ["export", "-m", str(checkpoint), "-o", str(out), "-k", "tlt_encode", "-t", "tfonnx",
            "-d", "3,64,96", "-i", "channels_first"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    io_ = load_model(out, key="tlt_encode").io
    assert io_.size == (64, 96) and io_.layout == "NCHW"
    assert main(["export", "-m", str(checkpoint), "-o", str(tmp_path / "d.onnx")]) == 0
    assert load_model(tmp_path / "d.onnx").io.layout == "NHWC"


def activation_ranges_of(quantized) -> dict[str, tuple[float, float]]:
    """The real-valued range each activation QuantizeLinear of a QDQ model represents.

    For uint8 with scale s and zero point z that is ``[-z s, (255 - z) s]``.
    """
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in quantized.graph.initializer}
    out = {}
    for node in quantized.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        scale = inits.get(node.input[1])
        zero = inits.get(node.input[2]) if len(node.input) > 2 else None
        if scale is None or zero is None or scale.size != 1:
            continue
        s, z = float(scale), int(zero)
        info = np.iinfo(zero.dtype)
        out[node.input[0]] = ((info.min - z) * s, (info.max - z) * s)
    return out


def test_cache_parses_and_matches_onnx_runtime_ranges(int8_export):
    _, folder = int8_export
    cache = read_cache(folder / "m.cal.bin")
    text = (folder / "m.cal.bin").read_text().splitlines()
    assert text[0] == cache.header and cache.header.startswith("TRT-")
    assert cache.algorithm == "EntropyCalibration2"
    assert len(text) - 1 == len(cache.scales)  # one line, one scale per tensor
    fp32 = folder / "m.fp32.onnx"
    graph = onnx.load(str(fp32)).graph
    assert "input" in cache.scales and all(o.name in cache.scales for o in graph.output)
    # the ranges ONNX Runtime measures on the same tensorfile give exactly these scales
    loaded = load_model(fp32)
    data = read_tensorfile(folder / "cal.tensor")
    reader = TensorfileReader(data, loaded.io, loaded.train_spec.dataloader.normalization_params)
    ranges = calibrate_ranges(fp32, reader)
    assert ranges.keys() == cache.scales.keys()
    for name, (low, high) in ranges.items():
        assert cache.scales[name] == pytest.approx(max(abs(low), abs(high)) / 127, rel=1e-6)
    # and the QDQ model quantizes each activation over that same range (uint8 rounding aside),
    # but for a MaxPool's output: ONNX Runtime gives it its input's quantization, exact for a
    # max (TensorRT does the same when it fuses the pool)
    int8 = onnx.load(str(folder / "m.onnx"))
    pooled = {o for n in graph.node if n.op_type == "MaxPool" for o in n.output}
    checked = 0
    for name, (low, high) in activation_ranges_of(int8).items():
        name = name.removesuffix("_QuantizeLinear_Input")  # a graph output's own Q input
        if name in pooled:
            continue
        amax = cache.amax(name)
        if amax == 0:  # a dead channel: ONNX Runtime picks scale 1, TensorRT's scale is 0
            continue
        step = (high - low) / 255
        assert max(abs(low), abs(high)) == pytest.approx(amax, abs=1.01 * step)
        checked += 1
    assert checked > 10


def test_cache_format_round_trip_and_errors():
    text = cache_text({"a": (-1.0, 0.5), "b:0": (0.0, 2.54)}, version=8601)
    lines = text.splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert lines[1] == "a: " + struct.pack(">f", 1.0 / 127).hex()
    cache = parse_cache(text)
    assert cache.version == 8601 and cache.scales["b:0"] == pytest.approx(0.02, rel=1e-6)
    assert cache.amax("a") == pytest.approx(1.0)
    # TensorRT's own caches drop leading zeros of small hex values
    assert parse_cache("TRT-100300-EntropyCalibration2\nx: 0\n").scales["x"] == 0.0
    for bad in ["", "hello\nx: 3c010a14", "TRT-8601-EntropyCalibration2\nno scale here"]:
        with pytest.raises(BpnetError):
            parse_cache(bad, "bad.cache")


def test_tensorfile_round_trip_and_damage(tmp_path):
    rng = np.random.default_rng(3)
    batches = [rng.integers(0, 256, (2, 16, 24, 3), dtype=np.uint8) for _ in range(3)]
    path = tmp_path / "cal.tensor"
    write_tensorfile(path, iter(batches), (3, 2, 16, 24, 3), [f"{i}.jpg" for i in range(6)])
    data = read_tensorfile(path)
    assert data.num_batches == 3 and data.batch_size == 2 and data.size == (16, 24)
    np.testing.assert_array_equal(np.asarray(data.batches), np.stack(batches))
    assert data.images == tuple(f"{i}.jpg" for i in range(6))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BpnetError, match="truncated"):
        read_tensorfile(path)
    path.write_bytes(b"not a tensorfile at all")
    with pytest.raises(BpnetError, match="not a bpnet calibration tensorfile"):
        read_tensorfile(path)


def test_calibration_batches_are_preprocessed_like_inference(int8_export):
    _, folder = int8_export
    data = read_tensorfile(folder / "cal.tensor")
    name = data.images[0]
    image = cv2.imread(str(folder / "cal" / name))
    # strict-mode inference's geometry at the export size, warped by the inference code
    spec = load_inference_spec(
        None, ["keep_aspect_ratio_mode=pad_image_input", "input_shape=[64,96]"]
    )
    (geometry,) = input_geometry(image.shape[1], image.shape[0], spec)
    np.testing.assert_array_equal(data.batches[0, 0], warp_rgb(image, geometry))
    np.testing.assert_array_equal(data.batches[0, 0], letterbox_rgb(image, (64, 96)))


def test_tensorfile_is_reused(int8_export, checkpoint, tmp_path):
    _, folder = int8_export
    options = ExportOptions(
        model=checkpoint, output=tmp_path / "again.onnx", data_type="int8",
        cal_data_file=folder / "cal.tensor", batches=3, batch_size=2, input_dims=(64, 96),
    )  # fmt: skip
    said = []
    run_export(options, say=said.append)
    assert not any("pre-processing" in line for line in said)  # no image was read
    a = read_cache(folder / "m.cal.bin").scales
    b = read_cache(tmp_path / "again.cal.bin").scales
    assert a == b


def test_too_few_calibration_images_fail_before_any_file(checkpoint, tmp_path):
    images = image_folder(tmp_path / "cal", 3)
    out = tmp_path / "out"
    options = ExportOptions(
        model=checkpoint, output=out / "m.onnx", data_type="int8", cal_image_dir=images,
        cal_data_file=out / "cal.tensor", batches=2, batch_size=2,
    )  # fmt: skip
    with pytest.raises(BpnetError, match=r"3 images, but --batches 2 x --batch_size 2 needs 4"):
        run_export(options)
    assert not out.exists()


@pytest.mark.parametrize("batches, batch_size", [(0, 1), (2, 0), (-1, 1)])
def test_non_positive_calibration_counts_are_one_line_errors(checkpoint, tmp_path, batches,
                                                              batch_size):  # fmt: skip
    options = ExportOptions(
        model=checkpoint, output=tmp_path / "out" / "m.onnx", data_type="int8",
        cal_image_dir=image_folder(tmp_path / "cal", 3), batches=batches, batch_size=batch_size,
    )  # fmt: skip
    with pytest.raises(BpnetError, match=r"must be >= 1"):
        run_export(options)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("version, number", [("8.6.1", 8601), ("10.3.0", 100300), ("9.0", 9000)])
def test_trt_version_number_follows_nv_tensorrt_version(version, number):
    from types import SimpleNamespace

    from bpnet.export.tensorrt_engine import trt_version_number

    assert trt_version_number(SimpleNamespace(__version__=version)) == number


def test_existing_outputs_need_force(checkpoint, tmp_path, capsys):
    (tmp_path / "m.onnx").write_bytes(b"old")
    argv = ["export", "-m", str(checkpoint), "-o", str(tmp_path / "m.onnx")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err
    assert (tmp_path / "m.onnx").read_bytes() == b"old"
    assert main([*argv, "--force", "--input_dims", "64,96,3"]) == 0
    assert "max |ONNX Runtime - PyTorch|" in capsys.readouterr().out
    assert load_model(tmp_path / "m.onnx").io.size == (64, 96)


# calibration sampling ---------------------------------------------------------------------------


def write_annotations(path: Path, images: Path, people: list[list[int]]) -> None:
    """One image per entry of ``people``: the labelled-keypoint counts of its people."""
    images.mkdir(parents=True, exist_ok=True)
    entries, anns = [], []
    for i, counts in enumerate(people, start=1):
        cv2.imwrite(str(images / f"{i:04d}.jpg"), np.full((8, 8, 3), i, np.uint8))
        entries.append({"id": i, "file_name": f"{i:04d}.jpg", "width": 8, "height": 8})
        for count in counts:
            kps = [1, 1, 2] * count + [0, 0, 0] * (17 - count)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "iscrowd": 0,
                         "keypoints": kps, "num_keypoints": count, "bbox": [0, 0, 4, 4],
                         "area": 16})  # fmt: skip
    anns.append({"id": 999, "image_id": 1, "category_id": 1, "iscrowd": 1, "num_keypoints": 17,
                 "keypoints": [1, 1, 2] * 17, "bbox": [0, 0, 4, 4], "area": 16})  # fmt: skip
    category = {"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(17)],
                "skeleton": []}  # fmt: skip
    data = {"images": entries, "annotations": anns, "categories": [category]}
    path.write_text(json.dumps(data))


def test_calibration_sample_exactly_n_and_refuses_a_full_folder(tmp_path, capsys):
    ann, images = tmp_path / "ann.json", tmp_path / "images"
    # image 1 only has a crowd region with keypoints (never counts), 2 and 5 have one good
    # person, 3 has two, 4 has people with too few keypoints, 6 has one good and one poor
    write_annotations(ann, images, [[], [5], [17, 6], [4, 3], [9], [5, 2]])
    out = tmp_path / "out"
    argv = ["calibration", "sample", "-a", str(ann), "-i", str(images), "-o", str(out),
            "-n", "3", "-pth", "1", "-kth", "5"]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0002.jpg", "0003.jpg", "0005.jpg"]
    assert main(argv) == 2  # the folder is not empty now
    assert "not empty" in capsys.readouterr().err
    two = sample_calibration_images(ann, images, tmp_path / "two", 1, min_people=2)
    assert [p.name for p in two] == ["0003.jpg"]
    picked = sample_calibration_images(ann, images, tmp_path / "rand", 4, randomize=True, seed=1)
    assert len(picked) == 4 and {p.name for p in picked} <= {"0002.jpg", "0003.jpg",
                                                             "0005.jpg", "0006.jpg"}  # fmt: skip
    with pytest.raises(BpnetError, match="only 4 images"):
        sample_calibration_images(ann, images, tmp_path / "many", 5)
    assert not (tmp_path / "many").exists()


# the deployable model ---------------------------------------------------------------------------


def test_deployable_model_inputs_outputs_and_equality(tmp_path):
    net = tiny_net(1)
    path = tmp_path / "deploy.onnx"
    io_ = export_onnx(
        net, path, pose=POSE, train_spec=SPEC, size=(64, 96), channels_last=True,
        sdk_compatible=True, upsample=4,
    )  # fmt: skip
    model = onnx.load(str(path))
    (inp,) = model.graph.input
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim][1:] == [64, 96, 3]  # NHWC
    assert [o.name for o in model.graph.output] == ["pafs", "heatmaps"]
    rgb = np.random.default_rng(4).integers(0, 256, (1, 64, 96, 3), dtype=np.uint8)
    pafs, heatmaps = session(path).run(None, {"image": rgb})
    assert pafs.shape == (1, 32, 48, POSE.num_paf_channels)  # 4x the stride-8 grid
    assert heatmaps.shape == (1, 8, 12, POSE.num_heatmap_channels)
    # the same pre-processing by hand, then PyTorch
    norm = SPEC.dataloader.normalization_params
    x = rgb.astype(np.float32) / np.float32(norm.image_scale) - np.float32(norm.image_offset)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        ref_heat, ref_paf = net(x)[-1]
    ref_up = F.interpolate(ref_paf, scale_factor=4, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(heatmaps.transpose(0, 3, 1, 2), ref_heat.numpy(), atol=1e-4)
    np.testing.assert_allclose(pafs.transpose(0, 3, 1, 2), ref_up.numpy(), atol=1e-4)
    # the runtime brings the PAFs back to the stride grid exactly
    heat, paf = maps_from_outputs({"pafs": pafs, "heatmaps": heatmaps}, io_)
    np.testing.assert_allclose(paf, ref_paf[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(heat, ref_heat[0].numpy(), atol=1e-4)
    with pytest.raises(BpnetError, match="outputs stage"):
        io_.stage_index(1)


@pytest.mark.parametrize("data_type", ["fp16", "int8"])
def test_deployable_model_in_fp16_and_int8(checkpoint, tmp_path, data_type):
    """The DeepStream recipe: raw uint8 pixels in, calibrated on raw pixels for INT8, and the
    runtime's maps still those of PyTorch."""
    path = tmp_path / "deploy.onnx"
    options = ExportOptions(
        model=checkpoint, output=path, data_type=data_type, input_dims=(64, 96),
        sdk_compatible=True, cal_image_dir=image_folder(tmp_path / "cal", 4), batches=4,
    )  # fmt: skip
    result = run_export(options, say=lambda _: None)
    assert result["max_abs_diff"] < (0.01 if data_type == "fp16" else 0.1)
    model = onnx.load(str(path))
    (inp,) = model.graph.input
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.name for o in model.graph.output] == ["pafs", "heatmaps"]
    assert read_onnx_metadata(path)["bpnet.data_type"] == data_type
    if data_type == "int8":  # what nvinfer builds its engine from: the FP32 graph + the cache
        assert set(result["files"]) == {"onnx", "fp32_onnx", "cal_cache_file"}
        fp32 = onnx.load(str(tmp_path / "deploy.fp32.onnx"))
        assert fp32.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
        assert len(read_cache(tmp_path / "deploy.cal.bin").scales) > 10


@pytest.mark.parametrize("spin", [True, False])
def test_bpnet_sessions_run_with_and_without_spinning_threads(tmp_path, spin):
    """make_session (what evaluate, inference and export_speed.py use) with ONNX Runtime's
    spinning on or off: the same maps."""
    from bpnet.inference.onnx_source import make_session

    net = tiny_net()
    path = tmp_path / "m.onnx"
    export_onnx(net, path, pose=POSE, train_spec=SPEC, size=(64, 96))
    x = np.random.default_rng(2).normal(size=(1, 3, 64, 96)).astype(np.float32)
    got = make_session(path, 1, spin=spin).run(None, {"input": x})
    for mine, ref in zip(got, torch_maps(net, x), strict=True):
        np.testing.assert_allclose(mine, ref, atol=1e-4)


def test_upsampling_matrix_is_torch_bilinear():
    for n, factor in [(5, 4), (7, 2), (3, 8)]:
        basis = torch.eye(n)[:, None, :, None]  # (n, 1, n, 1): one unit impulse per image
        up = F.interpolate(basis, scale_factor=(factor, 1), mode="bilinear", align_corners=False)
        np.testing.assert_allclose(up[:, 0, :, 0].numpy().T, bilinear_upsampling_matrix(n, factor))


# running exported models ------------------------------------------------------------------------


def test_onnx_source_equals_torch_source_in_every_mode(checkpoint, synth, tmp_path):
    from bpnet.data.coco import build_records, load_coco_split
    from bpnet.data.dataset import read_image

    onnx_path = tmp_path / "m.onnx"
    run_export(ExportOptions(model=checkpoint, output=onnx_path), say=lambda _: None)
    torch_model, onnx_model = load_model(checkpoint), load_model(onnx_path)
    assert onnx_model.runtime == "onnxruntime" and onnx_model.pose == torch_model.pose
    assert onnx_model.train_spec == torch_model.train_spec
    records = build_records(load_coco_split(synth, "val"), POSE)[:2]
    modes = [
        ["input_shape=[64,64]"],
        ["input_shape=[64,96]", "keep_aspect_ratio_mode=pad_image_input"],
        ["input_shape=[48,48]", "multi_scale_inference=true", "scales=[0.5,1.5]"],
    ]
    for overrides in modes:
        spec = load_inference_spec(None, overrides)
        for stage in (None, 1):
            a, b = torch_model.source(stage=stage), onnx_model.source(stage=stage)
            for record in records:
                image = read_image(record.path)
                for geometry in input_geometry(record.width, record.height, spec):
                    for x, y in zip(a(image, geometry), b(image, geometry), strict=True):
                        np.testing.assert_allclose(y, x, atol=1e-4, rtol=0)


def test_evaluate_and_inference_run_exported_models(checkpoint, synth, tmp_path, capsys):
    static = tmp_path / "static.onnx"
    deploy = tmp_path / "deploy.onnx"
    run_export(ExportOptions(model=checkpoint, output=static, input_dims=(64, 96)), say=print)
    run_export(
        ExportOptions(model=checkpoint, output=deploy, input_dims=(64, 96), sdk_compatible=True,
                      data_format="channels_last"),
        say=print,
    )  # fmt: skip
    strict = ["-i", "specs/infer_spec_strict.yaml", "-o", "input_shape=[64,96]"]
    found = {}
    for model in (checkpoint, static, deploy):
        argv = ["evaluate", "-m", str(model), "-d", str(synth), "--split", "val",
                "-r", str(tmp_path / model.stem), *strict]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        results = json.loads((tmp_path / model.stem / "results.json").read_text())
        assert results["images"] == 4 and results["source"] == str(model)
        assert results["timings"]["maps_ms_per_image"] > 0
        found[model.suffix + model.stem] = (results["detections"], results["AP"])
    # FP32 ONNX = PyTorch within 1e-4: the same people, the same AP
    assert found[".onnxstatic"] == found[".pthmodel"]
    # a fixed-size model asked for another size: one line naming both sizes
    argv = ["evaluate", "-m", str(static), "-d", str(synth), "--split", "val",
            "-r", str(tmp_path / "bad"), "-o", "input_shape=[64,64]"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fixed at 64x96" in err
    # bpnet inference on a folder: detections.json and one picture per image
    out = tmp_path / "infer"
    argv = ["inference", "-m", str(deploy), "--input", str(synth / "val"), "-r", str(out),
            *strict]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    detections = json.loads((out / "detections.json").read_text())
    names = {p.name for p in (synth / "val").iterdir()}
    assert all(d["file_name"] in names and len(d["keypoints"]) == 17 * 3 for d in detections)
    pictures = sorted(p.name for p in (out / "images").iterdir())
    assert pictures == sorted(p.stem + ".jpg" for p in (synth / "val").iterdir())
    # TAO's --input_type json: a COCO file in the official layout keeps its image ids (so the
    # detections score against it); a plain list of paths is numbered 1, 2, ...
    annotations = synth / "annotations" / "person_keypoints_val.json"
    listed = {e["id"]: synth / "val" / e["file_name"]
              for e in json.loads(annotations.read_text())["images"]}  # fmt: skip
    assert {i: p for p, i in find_inputs(annotations, "json")} == listed
    argv = ["inference", "-m", str(deploy), "--input_type", "json", "--input", str(annotations),
            "-r", str(tmp_path / "json"), "--no_visualizations", *strict]  # fmt: skip
    assert main(argv) == 0
    assert f"in {len(listed)} images" in capsys.readouterr().out
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps([str(p) for p in sorted(listed.values())[:2]]))
    assert [i for _, i in find_inputs(listing)] == [1, 2]  # .json: json by default
    argv[6], argv[8] = str(listing), str(tmp_path / "list")
    assert main(argv) == 0
    listing.write_text(json.dumps(["nowhere.jpg"]))
    assert "nowhere.jpg: image listed in" in _error(capsys, argv)
    argv[4] = "dir"
    assert "--input_type dir needs a folder" in _error(capsys, argv)
    # an unreadable image after good ones with --strict: one line, and no pictures or
    # detections left (without --strict it is skipped: test_reliability.py)
    folder = tmp_path / "some_bad"
    folder.mkdir()
    for image in sorted((synth / "val").iterdir())[:2]:
        (folder / image.name).write_bytes(image.read_bytes())
    (folder / "zz_broken.jpg").write_bytes(b"not a jpeg")
    argv = ["inference", "-m", str(deploy), "--input", str(folder), "-r", str(tmp_path / "bad_run"),
            *strict, "--strict"]  # fmt: skip
    assert "zz_broken.jpg" in _error(capsys, argv)
    assert not (tmp_path / "bad_run").exists()
    assert "--bf16" in _error(
        capsys,
        [
            "evaluate",
            "-m",
            str(static),
            "-d",
            str(synth),
            "--split",
            "val",
            "-r",
            str(tmp_path / "x"),
            "--bf16",
        ],
    )


def test_folder_inputs_get_coco_ids_from_numeric_names_only_when_distinct(tmp_path):
    for name in ("000000000007.jpg", "000000000042.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 8, 3), np.uint8))
    assert [i for _, i in find_inputs(tmp_path)] == [7, 42]
    cv2.imwrite(str(tmp_path / "000000000007.png"), np.zeros((8, 8, 3), np.uint8))
    # 7.jpg and 7.png cannot both be image 7: every image is numbered instead
    assert [i for _, i in find_inputs(tmp_path, "dir")] == [1, 2, 3]


def _error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err


def test_missing_tensorrt_is_a_clear_message(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    argv = ["export", "-m", str(checkpoint), "-o", str(tmp_path / "m.onnx"),
            "--engine_file", str(tmp_path / "m.engine")]  # fmt: skip
    err = _error(capsys, argv)
    assert "TensorRT" in err and "not installed" in err and "bpnet[tensorrt]" in err
    assert list(tmp_path.iterdir()) == []  # checked before any work
    # an engine without its metadata, then with it but no TensorRT to run it
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0")
    with pytest.raises(BpnetError, match=r"m\.engine\.json"):
        load_model(engine)
    run_export(ExportOptions(model=checkpoint, output=tmp_path / "m.onnx"), say=lambda _: None)
    props = read_onnx_metadata(tmp_path / "m.onnx")
    (tmp_path / "m.engine.json").write_text(json.dumps(props))
    loaded = load_model(engine)
    assert loaded.runtime == "tensorrt"
    with pytest.raises(BpnetError, match="not installed"):
        loaded.source()


def test_unknown_and_damaged_model_files_are_one_line(tmp_path, capsys):
    (tmp_path / "m.onnx").write_bytes(b"garbage")
    (tmp_path / "m.xyz").write_bytes(b"")
    for path, needle in [(tmp_path / "m.onnx", "not a readable ONNX model"),
                         (tmp_path / "m.xyz", "unknown model file type")]:  # fmt: skip
        with pytest.raises(BpnetError, match=needle):
            load_model(path)
    plain = ModelIO("input", "NCHW", "float32", False, None, ("h",), ("p",), (1,), 1)
    with pytest.raises(BpnetError, match="malformed"):
        ModelIO.from_json("{}", "x.onnx")
    assert ModelIO.from_json(plain.to_json(), "x.onnx") == plain
