"""OpenVINO as a runtime of exported models (``--runtime openvino``): the same maps as ONNX
Runtime for FP32, close ones for the INT8 QDQ model, and clear errors where it cannot run.

OpenVINO is an optional extra (``pip install 'bpnet[openvino]'``) that ``make test`` does not
install: the tests that run it skip, saying so, where it is missing; the error tests run
everywhere."""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bpnet.cli import main
from bpnet.config import load_experiment_spec, load_inference_spec
from bpnet.data.synth import generate_dataset
from bpnet.errors import BpnetError
from bpnet.export import ExportOptions, run_export
from bpnet.inference.pipeline import input_geometry
from bpnet.inference.runtime import load_model
from bpnet.models import build_model
from bpnet.models.checkpoint import save_checkpoint
from bpnet.pose import load_pose_config

POSE = load_pose_config()
NOT_INSTALLED = (
    "OpenVINO is an optional extra (pip install 'bpnet[openvino]') that make test does not "
    "install; these tests run where it is installed"
)


@pytest.fixture
def openvino():
    return pytest.importorskip("openvino", reason=NOT_INSTALLED)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """A small real BodyPoseNet: its checkpoint, FP32 ONNX, INT8 QDQ ONNX and encrypted FP32."""
    folder = tmp_path_factory.mktemp("ov")
    spec = load_experiment_spec(
        None, ["model.backbone_attributes.width_multiplier=0.1", "model.num_filters=16"]
    )
    torch.manual_seed(0)
    pth = save_checkpoint(folder / "m.pth", build_model(spec.model, POSE), spec=spec, pose=POSE)
    pictures = folder / "cal"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(pictures / f"{i}.png"), rng.integers(0, 256, (70, 100, 3), np.uint8))
    files = {"pth": pth}
    for name, extra in (
        ("fp32", {}),
        (
            "int8",
            {"data_type": "int8", "cal_image_dir": pictures, "batches": 4, "sensitivity": "off"},
        ),
        ("etlt", {"key": "secret"}),
    ):
        output = folder / f"m.{name}.{'etlt' if name == 'etlt' else 'onnx'}"
        options = ExportOptions(model=pth, output=output, **extra)
        run_export(options, say=lambda _: None)
        files[name] = output
    return files


def maps_of(source, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    spec = load_inference_spec(None, ["input_shape=[64,96]"])
    (geometry,) = input_geometry(image.shape[1], image.shape[0], spec, source.input_multiple)
    return source(image, geometry)


def picture(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (90, 120, 3), np.uint8)


def test_fp32_maps_equal_onnx_runtime(openvino, exported):
    loaded = load_model(exported["fp32"])
    image = picture()
    ort_maps = maps_of(loaded.source(threads=1), image)
    ov_source = loaded.source(threads=1, runtime="openvino")
    assert type(ov_source).__name__ == "OpenVinoSource"
    for ref, got in zip(ort_maps, maps_of(ov_source, image), strict=True):
        assert got.shape == ref.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    # several pictures as one batch (video frames): the same maps as one at a time
    spec = load_inference_spec(None, ["input_shape=[64,96]"])
    (geometry,) = input_geometry(120, 90, spec, ov_source.input_multiple)
    batch = ov_source.batch([image, picture(2)], geometry)
    np.testing.assert_allclose(batch[0][0], ort_maps[0], atol=1e-4, rtol=0)


def test_int8_qdq_model_runs_close_to_onnx_runtime(openvino, exported):
    loaded = load_model(exported["int8"])
    assert loaded.data_type == "int8"
    image = picture()
    ort_heat, ort_pafs = maps_of(loaded.source(threads=1), image)
    ov_heat, ov_pafs = maps_of(loaded.source(threads=1, runtime="openvino"), image)
    # both run integer kernels on the same scales; they may round a few values differently
    for ref, got in ((ort_heat, ov_heat), (ort_pafs, ov_pafs)):
        scale = np.abs(ref).max()
        assert np.abs(got - ref).max() <= 0.1 * scale + 1e-3
        assert np.abs(got - ref).mean() <= 0.01 * scale + 1e-4


def test_encrypted_model_runs_with_its_key(openvino, exported):
    plain = maps_of(load_model(exported["fp32"]).source(threads=1), picture())
    sealed = load_model(exported["etlt"], key="secret").source(threads=1, runtime="openvino")
    np.testing.assert_allclose(maps_of(sealed, picture())[0], plain[0], atol=1e-4, rtol=0)


def test_evaluate_and_inference_take_runtime_openvino(openvino, exported, tmp_path):
    root = tmp_path / "data"
    generate_dataset(root, 1, 3, seed=3, image_size=(96, 160))
    common = ["-d", str(root), "--split", "val", "-o", "input_shape=[64,96]"]
    ap = {}
    for runtime in ("onnxruntime", "openvino"):
        out = tmp_path / f"eval_{runtime}"
        argv = ["evaluate", "-m", str(exported["fp32"]), "-r", str(out), "--runtime", runtime]
        assert main([*argv, *common]) == 0
        ap[runtime] = json.loads((out / "results.json").read_text())
    assert ap["openvino"]["AP"] == pytest.approx(ap["onnxruntime"]["AP"], abs=1e-6)
    assert ap["openvino"]["source"].endswith("on openvino")
    out = tmp_path / "infer"
    argv = ["inference", "-m", str(exported["fp32"]), "--input", str(root / "val"), "-r", str(out)]
    assert main([*argv, "--runtime", "openvino", "--no_visualizations", "--threads", "1"]) == 0
    assert (out / "detections.json").is_file()


def test_runtime_openvino_needs_an_exported_model(exported, capsys):
    with pytest.raises(BpnetError, match=r"--runtime openvino cannot run this file .*bpnet export"):
        load_model(exported["pth"]).source(runtime="openvino")
    with pytest.raises(BpnetError, match="choose one of auto, onnxruntime, openvino"):
        load_model(exported["fp32"]).source(runtime="tensorflow")


def test_missing_openvino_says_how_to_install_it(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(BpnetError, match=r"pip install 'bpnet\[openvino\]'"):
        load_model(exported["fp32"]).source(runtime="openvino")
