"""`bpnet evaluate`: oracle AP, result files, modes and one-line errors."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from bpnet.cli import main
from bpnet.config import load_inference_spec
from bpnet.config.inference import InferenceSpec
from bpnet.data.coco import build_records, load_coco_split
from bpnet.decode import DecoderParams
from bpnet.evaluate.oracle import OracleSource
from bpnet.inference.pipeline import full_resolution, input_geometry, predict_people
from bpnet.pose import load_pose_config


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_oracle_full_resolution_beats_the_open_decoders(coco_fixture, tmp_path, capsys):
    code, out, _ = run(
        ["evaluate", "--oracle", "--oracle-resolution", "full", "-d", coco_fixture,
         "--split", "val2017", "-r", tmp_path], capsys,
    )  # fmt: skip
    assert code == 0
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ]" in out
    results = json.loads((tmp_path / "results.json").read_text())
    # two well-known open decoders reach 0.895 and 0.898 on these annotations
    assert results["AP"] >= 0.92
    for key in ("AP", "AP50", "AP75", "APm", "APl", "AR", "timings"):
        assert key in results
    assert results["mode"] == "full_resolution" and results["images"] == 50
    detections = json.loads((tmp_path / "detections_coco_format.json").read_text())
    assert len(detections) == results["detections"] > 0
    assert all(len(d["keypoints"]) == 51 for d in detections)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 1 and float(rows[0]["AP"]) == pytest.approx(results["AP"])
    saved = load_inference_spec(tmp_path / "infer_spec.yaml")
    assert saved == InferenceSpec()


def test_modes_set_the_network_input():
    default = InferenceSpec(input_shape=(368, 368))
    [only] = input_geometry(640, 480, default)
    assert only.size == (368, 488)  # height kept, width follows the aspect ratio, x8
    strict = InferenceSpec(input_shape=(288, 384), keep_aspect_ratio_mode="pad_image_input")
    [fixed] = input_geometry(480, 640, strict)
    assert fixed.size == (288, 384)
    multi = InferenceSpec(multi_scale_inference=True, scales=(0.5, 1.0, 2.0))
    assert [g.size[0] for g in input_geometry(640, 480, multi)] == [184, 368, 736]


def test_input_sides_round_to_the_sources_multiple():
    """A network that downsamples by 16 inside gets sides that are multiples of 16."""
    default = InferenceSpec(input_shape=(360, 360))
    [only] = input_geometry(640, 480, default, multiple=16)
    # 360 / 16 = 22.5 rounds to the even 22 (Python's round), 352 x 4 / 3 = 469.3 -> 464
    assert only.size == (352, 464)
    [eight] = input_geometry(640, 480, default)
    assert eight.size == (360, 480)  # the stride, 8, by default
    strict = InferenceSpec(input_shape=(280, 376), keep_aspect_ratio_mode="pad_image_input")
    [fixed] = input_geometry(480, 640, strict, multiple=32)
    assert fixed.size == (288, 384)
    [full] = full_resolution(641, 479, multiple=16)
    assert full.size == (480, 656)
    assert full_resolution(641, 479)[0].size == (480, 648)
    assert OracleSource(load_pose_config()).input_multiple == 8


def test_multi_scale_fusion_keeps_joints_in_place(coco_fixture):
    """Scales are fused through exact affine maps: a misaligned grid would shift every joint."""
    pose = load_pose_config()
    data = load_coco_split(coco_fixture, "val2017", check_images=False)
    records = [r for r in build_records(data, pose) if r.num_people]
    spec = InferenceSpec(multi_scale_inference=True, scales=(0.5, 1.0, 1.5))
    errors = []
    for record in records:
        geometry = input_geometry(record.width, record.height, spec)
        oracle = OracleSource(pose).bind(record)
        found = predict_people(None, oracle, pose, DecoderParams(), geometry)
        for j in range(pose.num_joints):
            truth = record.keypoints[record.keypoints[:, j, 2] > 0, j, :2]  # (T, 2)
            hits = found.keypoints[found.keypoints[:, j, 2] > 0, j, :2]  # (F, 2)
            if len(truth) and len(hits):
                distance = np.linalg.norm(truth[:, None] - hits[None], axis=-1)  # (T, F)
                errors += distance.min(1).tolist()
    errors = np.array(errors)
    assert len(errors) > 300
    assert np.median(errors) < 0.5  # in original image pixels
    assert np.mean(errors < 2.0) > 0.95


def test_strict_and_multi_scale_from_the_spec_file(coco_fixture, tmp_path, capsys):
    spec = tmp_path / "infer.yaml"
    spec.write_text(yaml.safe_dump({"input_shape": [288, 384],
                                    "keep_aspect_ratio_mode": "pad_image_input"}))  # fmt: skip
    code, out, _ = run(["evaluate", "--oracle", "-i", spec, "-d", coco_fixture, "--split",
                        "val2017", "-r", tmp_path / "strict"], capsys)  # fmt: skip
    assert code == 0 and "(strict, oracle, 50 images)" in out
    argv = ["evaluate", "--oracle", "-d", coco_fixture, "--split", "val2017",
            "-r", tmp_path / "multi", "-o", "multi_scale_inference=true"]  # fmt: skip
    code, out, _ = run(argv, capsys)
    assert code == 0 and "(multi_scale, oracle, 50 images)" in out


def copy_split(coco_fixture: Path, tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    name = "person_keypoints_val2017.json"
    shutil.copy(coco_fixture / "annotations" / name, root / "annotations" / name)
    shutil.copytree(coco_fixture / "val2017", root / "val2017")
    return root


def one_line_error(code: int, err: str) -> str:
    assert code != 0
    assert err.startswith("bpnet: error: ") and err.count("\n") == 1, err
    return err


def test_missing_image_is_one_line(coco_fixture, tmp_path, capsys):
    root = copy_split(coco_fixture, tmp_path)
    victim = sorted((root / "val2017").iterdir())[7]
    victim.unlink()
    argv = ["evaluate", "--oracle", "-d", root, "--split", "val2017", "-r", tmp_path / "r"]
    err = one_line_error(*run(argv, capsys)[::2])
    assert victim.name in err
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_empty_image_list_is_one_line(coco_fixture, tmp_path, capsys):
    root = copy_split(coco_fixture, tmp_path)
    ann = root / "annotations" / "person_keypoints_val2017.json"
    data = json.loads(ann.read_text())
    data["images"], data["annotations"] = [], []
    ann.write_text(json.dumps(data))
    argv = ["evaluate", "--oracle", "-d", root, "--split", "val2017", "-r", tmp_path / "r"]
    err = one_line_error(*run(argv, capsys)[::2])
    assert "empty" in err and str(ann) in err


def test_detections_for_unknown_images_are_one_line(coco_fixture, tmp_path, capsys):
    detections = tmp_path / "dets.json"
    detections.write_text(json.dumps([{"image_id": 123456789, "category_id": 1,
                                       "keypoints": [0.0] * 51, "score": 0.9}]))  # fmt: skip
    argv = ["evaluate", "--detections", detections, "-d", coco_fixture, "--split", "val2017",
            "-r", tmp_path / "r"]  # fmt: skip
    err = one_line_error(*run(argv, capsys)[::2])
    assert "123456789" in err


def test_detections_file_round_trip(coco_fixture, tmp_path, capsys):
    first = tmp_path / "first"
    assert run(["evaluate", "--oracle", "-d", coco_fixture, "--split", "val2017", "-r", first],
               capsys)[0] == 0  # fmt: skip
    ap = json.loads((first / "results.json").read_text())["AP"]
    again = tmp_path / "again"
    argv = ["evaluate", "--detections", first / "detections_coco_format.json", "-d",
            coco_fixture, "--split", "val2017", "-r", again]  # fmt: skip
    assert run(argv, capsys)[0] == 0
    assert json.loads((again / "results.json").read_text())["AP"] == pytest.approx(ap)


def test_model_or_oracle_is_required(coco_fixture, tmp_path, capsys):
    argv = ["evaluate", "-d", coco_fixture, "--split", "val2017", "-r", tmp_path]
    err = one_line_error(*run(argv, capsys)[::2])
    assert "--oracle" in err


HEAD = ["nose", "left_eye", "right_eye", "left_ear", "right_ear"]
HEAD_POSE = """
name: head
dataset_keypoints: [nose, left_eye, right_eye, left_ear, right_ear]
joints:
  - {name: nose, from: nose}
  - {name: left_eye, from: left_eye}
  - {name: right_eye, from: right_eye}
  - {name: left_ear, from: left_ear}
  - {name: right_ear, from: right_ear}
limbs: [[nose, left_eye], [left_eye, left_ear], [nose, right_eye], [right_eye, right_ear]]
flip_pairs: [[left_eye, right_eye], [left_ear, right_ear]]
"""


def head_dataset(coco_fixture: Path, tmp_path: Path) -> Path:
    """The fixture's val2017 cut down to a 5-keypoint (head) category."""
    root = copy_split(coco_fixture, tmp_path)
    ann = root / "annotations" / "person_keypoints_val2017.json"
    data = json.loads(ann.read_text())
    data["categories"][0]["keypoints"] = HEAD
    data["categories"][0]["skeleton"] = [[1, 2], [2, 4], [1, 3], [3, 5]]
    for a in data["annotations"]:
        a["keypoints"] = a["keypoints"][:15]
        a["num_keypoints"] = sum(v > 0 for v in a["keypoints"][2::3])
    ann.write_text(json.dumps(data))
    return root


def test_custom_skeleton_evaluates_with_its_own_oks_sigmas(coco_fixture, tmp_path, capsys):
    root = head_dataset(coco_fixture, tmp_path)
    pose = tmp_path / "head.yaml"
    spec = tmp_path / "train.yaml"
    spec.write_text(f"dataloader:\n  pose_config:\n    pose_config_path: {pose}\n")
    argv = ["evaluate", "--oracle", "-e", spec, "-d", root, "--split", "val2017",
            "-r", tmp_path / "r", "-o", "min_parts=2"]  # fmt: skip
    pose.write_text(HEAD_POSE)
    err = one_line_error(*run(argv, capsys)[::2])
    assert "oks_sigmas" in err  # COCO's 17 sigmas cannot score 5 keypoints
    pose.write_text(HEAD_POSE + "oks_sigmas: [0.026, 0.025, 0.025, 0.035, 0.035]\n")
    assert run(argv, capsys)[0] == 0
    assert json.loads((tmp_path / "r" / "results.json").read_text())["AP"] > 0.7
    detections = json.loads((tmp_path / "r" / "detections_coco_format.json").read_text())
    assert all(len(d["keypoints"]) == 15 for d in detections)


@pytest.mark.parametrize(
    ("record", "needle"),
    [
        ({"image_id": 397133, "keypoints": [0.0] * 51, "score": 0.9}, "[0].category_id"),
        ({"image_id": 397133, "category_id": 1, "keypoints": [0.0] * 15, "score": 0.9},
         "[0].keypoints must be 51"),
        ({"image_id": 397133, "category_id": 1, "keypoints": [], "score": 0.9}, "[0].keypoints"),
        ({"image_id": 397133, "category_id": 1, "keypoints": [0.0] * 51, "score": "high"},
         "[0].score"),
        ({"image_id": 397133, "category_id": 7, "keypoints": [0.0] * 51, "score": 0.5},
         "[0].category_id is 7"),
    ],
)  # fmt: skip
def test_malformed_detections_files_are_one_line(coco_fixture, tmp_path, capsys, record, needle):
    detections = tmp_path / "dets.json"
    detections.write_text(json.dumps([record]))
    argv = ["evaluate", "--detections", detections, "-d", coco_fixture, "--split", "val2017",
            "-r", tmp_path / "r"]  # fmt: skip
    assert needle in one_line_error(*run(argv, capsys)[::2])


def test_written_detections_are_exactly_ours(coco_fixture, tmp_path, capsys):
    argv = ["evaluate", "--oracle", "-d", coco_fixture, "--split", "val2017", "-r", tmp_path]
    assert run(argv, capsys)[0] == 0
    detections = json.loads((tmp_path / "detections_coco_format.json").read_text())
    assert {tuple(sorted(d)) for d in detections} == {
        ("category_id", "image_id", "keypoints", "score")
    }  # pycocotools' loadRes must not add area / bbox / id to our records
    mode = (tmp_path / "results.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_no_detections_scores_zero_only_where_there_are_people(coco_fixture, tmp_path, capsys):
    detections = tmp_path / "none.json"
    detections.write_text("[]")
    argv = ["evaluate", "--detections", detections, "-d", coco_fixture, "--split", "val2017",
            "-r", tmp_path / "r"]  # fmt: skip
    assert run(argv, capsys)[0] == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["AP"] == 0.0 and results["APm"] == 0.0 and results["APl"] == 0.0


def tiny_checkpoint(tmp_path: Path) -> Path:
    """An untrained small model saved the way `bpnet train` saves one."""
    from bpnet.config import load_experiment_spec
    from bpnet.models import build_model
    from bpnet.models.checkpoint import save_checkpoint

    spec = load_experiment_spec(
        None, ["model.backbone_attributes.width_multiplier=0.1", "model.num_filters=16"]
    )
    pose = load_pose_config()
    return save_checkpoint(
        tmp_path / "model_epoch_001.pth", build_model(spec.model, pose), spec=spec, pose=pose
    )


def test_evaluate_runs_a_saved_model(coco_fixture, tmp_path, capsys):
    model = tiny_checkpoint(tmp_path)
    argv = ["evaluate", "-m", model, "-d", coco_fixture, "--split", "val2017",
            "-r", tmp_path / "r", "-o", "input_shape=[64,64]"]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 0, err
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["source"] == str(model) and results["images"] == 50
    assert results["timings"]["maps_ms_per_image"] > 0  # the network ran on every image
    assert (tmp_path / "r" / "experiment_spec.yaml").is_file()


def test_model_files_that_cannot_load_are_one_line(tmp_path, coco_fixture, capsys):
    import torch

    model = tiny_checkpoint(tmp_path)
    checkpoint = torch.load(model, weights_only=True)
    name = next(k for k in checkpoint["state_dict"] if k.endswith("conv1_1.weight"))
    checkpoint["state_dict"][name] = checkpoint["state_dict"][name][:, :1]
    torch.save(checkpoint, tmp_path / "bad.pth")
    (tmp_path / "model.onnx").write_bytes(b"")
    for path, needle in [(tmp_path / "bad.pth", "conv1_1.weight"),
                         (tmp_path / "model.onnx", ".pth"),
                         (tmp_path / "missing.pth", "not found")]:  # fmt: skip
        argv = ["evaluate", "-m", path, "-d", coco_fixture, "--split", "val2017", "-r", tmp_path]
        assert needle in one_line_error(*run(argv, capsys)[::2])


def test_agreement_ap_scores_one_models_people_against_anothers():
    from bpnet.data.coco import COCO_OKS_SIGMAS
    from bpnet.evaluate.coco_eval import agreement_ap

    rng = np.random.default_rng(0)
    people = rng.uniform(50, 250, (2, 17, 3)).astype(np.float32)
    people[..., 2] = 1.0
    people[1, :5] = 0.0  # a person without a head: the missing joints do not count
    image = (people, np.array([0.9, 0.8], np.float32))
    none = (np.zeros((0, 17, 3), np.float32), np.zeros(0, np.float32))
    assert agreement_ap([image, none], [image, none], COCO_OKS_SIGMAS) == pytest.approx(1.0)
    assert agreement_ap([none], [image], COCO_OKS_SIGMAS) is None  # nobody to agree on
    assert agreement_ap([image], [none], COCO_OKS_SIGMAS) == 0.0
    moved = people.copy()
    moved[..., :2] += rng.normal(0, 4, moved[..., :2].shape)  # joints a few pixels off
    partly = agreement_ap([image], [(moved, image[1])], COCO_OKS_SIGMAS)
    assert 0.0 < partly < 1.0
    extra = (np.concatenate([people, moved + 400]), np.array([0.9, 0.8, 0.95, 0.95]))
    assert agreement_ap([image], [extra], COCO_OKS_SIGMAS) < 1.0  # people FP32 did not find
