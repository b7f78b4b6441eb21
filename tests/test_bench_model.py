"""`bpnet bench model`: every cell timed and written (table, JSON, plots), ratios against the
baseline of the same run, end-to-end rows, the fastest runtime at an equal AP. One round at one
small size on tiny networks: no timing is asserted, only that the report holds every cell."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bpnet.bench.model import RUNTIMES, parse_ap, parse_sizes
from bpnet.cli import main
from bpnet.config import load_experiment_spec
from bpnet.errors import BpnetError
from bpnet.models import build_model
from bpnet.models.checkpoint import save_checkpoint
from bpnet.pose import load_pose_config

POSE = load_pose_config()
RUNTIME_NAMES = ("torch", "ort", "ort-int8", "openvino", "openvino-int8")


def tiny_checkpoint(path: Path, seed: int, stages: int) -> Path:
    """A small real BodyPoseNet (width x0.1), saved as bpnet train saves one."""
    spec = load_experiment_spec(
        None,
        [
            "model.backbone_attributes.width_multiplier=0.1",
            "model.num_filters=16",
            f"model.stages={stages}",
        ],
    )
    torch.manual_seed(seed)
    return save_checkpoint(path, build_model(spec.model, POSE), spec=spec, pose=POSE)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple[Path, dict, str]:
    folder = tmp_path_factory.mktemp("bench")
    small = tiny_checkpoint(folder / "small.pth", 0, 2)
    large = tiny_checkpoint(folder / "large.pth", 1, 4)
    pictures = folder / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):  # calibration images: 2 keep the INT8 exports' sensitivity pass short
        cv2.imwrite(str(pictures / f"p{i}.png"), rng.integers(0, 256, (80, 120, 3), np.uint8))
    out = folder / "out"
    argv = [
        "bench",
        "model",
        "-m",
        str(small),
        "-r",
        str(out),
        "--sizes",
        "64x96",
        "--runtimes",
        ",".join(RUNTIME_NAMES),
        "--batch",
        "1,2",
        "--rounds",
        "1",
        "--baseline",
        str(large),
        "--ap",
        "small=0.30",
        "--ap",
        "small:ort-int8=0.295",
        "--end_to_end",
        "--cal_image_dir",
        str(pictures),
    ]
    torch.set_num_threads(1)
    assert main(argv) == 0
    return out, json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def expected_runtimes(result: dict) -> list[str]:
    """Every runtime asked for, but OpenVINO's when it is not installed (then a note says so)."""
    if result["machine"]["openvino"] is None:
        assert any("OpenVINO is not installed" in note for note in result["notes"])
        return [r for r in RUNTIME_NAMES if RUNTIMES[r][0] != "OpenVINO"]
    return list(RUNTIME_NAMES)


def test_every_cell_is_in_the_json_and_the_table(bench_run):
    out, result, table = bench_run
    runtimes = expected_runtimes(result)
    cells = {(c["model"], tuple(c["size"]), c["runtime"], c["batch"]) for c in result["cells"]}
    wanted = {(m, (64, 96), r, b) for m in ("small", "large") for r in runtimes for b in (1, 2)}
    assert cells == wanted
    assert result["settings"]["baseline"] == "large"
    for row in result["cells"]:
        assert row["ms"] > 0 and row["rounds"] == 1
        # both are rounded to 3 decimals, so they may differ by one unit in the last
        assert row["ms_per_frame"] == pytest.approx(row["ms"] / row["batch"], abs=1e-3)
        line = (
            f"| {row['model']} | 64x96 | {row['runtime']} | {row['batch']} | "
            f"{row['ms_per_frame']:.1f} | {row['fps']:.1f} |"
        )
        assert line in table
    exported = {m["label"]: set(m["onnx"]) for m in result["models"]}
    assert exported == {"small": {"fp32", "int8"}, "large": {"fp32", "int8"}}
    assert (out / "models" / "small" / "int8.onnx").is_file()


def test_ratios_are_against_the_baseline_cell_of_the_same_size_runtime_and_batch(bench_run):
    _, result, _ = bench_run
    by_key = {(c["model"], c["runtime"], c["batch"]): c for c in result["cells"]}
    for (model, runtime, batch), row in by_key.items():
        base = by_key[("large", runtime, batch)]
        expected = base["ms_per_frame"] / row["ms_per_frame"]
        assert row["vs_baseline"] == pytest.approx(expected, rel=0.02, abs=0.01)
        if model == "large":
            assert row["vs_baseline"] == 1.0


def test_end_to_end_rows_ap_and_best_runtime(bench_run):
    _, result, table = bench_run
    runtimes = expected_runtimes(result)
    e2e = {(r["model"], r["runtime"]) for r in result["end_to_end"]}
    assert e2e == {("small", r) for r in runtimes}  # not the baseline
    for row in result["end_to_end"]:
        assert row["ms_per_frame"] > 0 and row["maps_ms"] > 0 and row["decode_ms"] >= 0
    assert "End-to-end" in table
    aps = {(c["model"], c["runtime"]): c["ap"] for c in result["cells"] if c["batch"] == 1}
    assert aps[("small", "torch")] == aps[("small", "ort")] == 0.30  # FP32: the model's AP
    assert aps[("small", "ort-int8")] == 0.295
    assert aps[("large", "torch")] is None
    if "openvino-int8" in runtimes:
        assert aps[("small", "openvino-int8")] is None  # INT8 needs its own entry
    (best,) = result["best"]
    fastest = min(
        (c for c in result["cells"] if c["model"] == "small" and c["batch"] == 1 and c["ap"]),
        key=lambda c: c["ms_per_frame"],
    )
    assert best["runtime"] == fastest["runtime"]  # 0.295 is within one point of 0.30
    assert "ort-int8" in best["candidates"]


def test_plots_are_pngs(bench_run):
    out, _, table = bench_run
    for name in ("fps_per_size.png", "ap_vs_fps.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({name})" in table


def test_options_are_checked():
    assert parse_sizes("288x384, 368X656") == ((288, 384), (368, 656))
    with pytest.raises(BpnetError, match="positive integer"):
        parse_sizes("288,384")
    assert parse_ap(["m=0.5", "m:ort-int8=0.4"]) == {"m": 0.5, "m:ort-int8": 0.4}
    with pytest.raises(BpnetError, match="NAME=AP"):
        parse_ap(["m:0.5"])


def test_unknown_runtime_and_ap_name_are_user_errors(tmp_path, capsys):
    model = tiny_checkpoint(tmp_path / "m.pth", 0, 2)
    argv = ["bench", "model", "-m", str(model), "-r", str(tmp_path / "o"), "--baseline", "none"]
    assert main([*argv, "--runtimes", "torch,tensorflow"]) == 2
    assert "tensorflow" in capsys.readouterr().err
    assert main([*argv, "--runtimes", "torch", "--ap", "other=0.3", "--sizes", "64x96"]) == 2
    assert "name a model (m)" in capsys.readouterr().err
