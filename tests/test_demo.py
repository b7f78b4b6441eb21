"""``bpnet demo`` end to end at test size: every step runs, the report holds every figure and
they agree with each other, and a rerun skips the finished steps."""

import json
from pathlib import Path

import pytest

from bpnet.cli import build_parser
from bpnet.config import load_experiment_spec, resolve_pose_config
from bpnet.demo import DEFAULT_BUDGET_MINUTES, DemoSettings, run_demo
from bpnet.demo.run import Demo, find_splits
from bpnet.errors import BpnetError
from bpnet.models import build_model, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
# the demo recipe's network, shrunk: quarter-width MobileNetV2, 2 stages of 16, 64x64 training
TINY = (
    "model.backbone_attributes.width_multiplier=0.25",
    "model.stages=2",
    "model.num_filters=16",
    "dataloader.batch_size=2",
    "dataloader.image_config.image_dims={height: 64, width: 64, channels: 3}",
    "log_every_n_secs=1000",
)
TINY_OPENPOSE = (
    "model.backbone_attributes.mtype=default",
    "model.backbone_attributes.width_multiplier=0.125",
    "model.stages=2",
    "model.num_filters=8",
)
STEPS = ("data", "train", "evaluate", "prune", "retrain", "evaluate_pruned", "calibration",
         "export", "evaluate_int8", "real_photos", "benchmark", "pictures")  # fmt: skip


@pytest.fixture
def settings(tmp_path, tiny_coco, monkeypatch) -> DemoSettings:
    monkeypatch.chdir(REPO)  # the settings name the specs relative to the repository
    spec = load_experiment_spec("specs/synthetic_demo.yaml", TINY)
    pose = resolve_pose_config(spec.dataloader)
    pretrained = save_checkpoint(
        tmp_path / "pretrained.pth", build_model(spec.model, pose), spec=spec, pose=pose
    )
    return DemoSettings(
        overrides=TINY,
        pretrained=pretrained,
        train_images=6,
        val_images=2,
        calibration_images=2,
        sensitivity="off",
        real_photos=tiny_coco,
        real_splits=("train", "val"),
        real_calibration_images=2,
        bench_rounds=1,
        openpose_every=1,
        openpose_overrides=TINY_OPENPOSE,
        pictures=1,
    )


def test_demo_runs_every_step_reports_consistent_figures_and_resumes(settings, tmp_path):
    out, said = tmp_path / "demo", []
    report = run_demo(out, budget_minutes=0.01, settings=settings, say=said.append)
    text = "\n".join(said)
    for number, step in enumerate(STEPS, 1):
        assert f"[{number}/13]" in text and (out / "done" / f"{step}.json").is_file(), step
    saved = json.loads((out / "report.json").read_text())
    assert saved == {k: v for k, v in report.items() if k != "table"}

    # accuracy: a row per model, form and mode, with COCO's figures
    synthetic, real = report["accuracy"]["synthetic"], report["accuracy"]["real_photos"]
    forms = {(r["model"], r["form"], r["mode"].split()[0]) for r in synthetic}
    for model in ("fine-tuned", "pruned + retrained"):
        for form in ("PyTorch FP32", "ONNX Runtime INT8"):
            assert {(model, form, "strict"), (model, form, "default,")} <= forms
    assert ("imported", "PyTorch FP32", "default,") in forms  # zero-shot
    assert ("pruned (before retraining)", "PyTorch FP32", "strict") in forms
    # the imported network pruned (stages, then filters ranked on the real train photos)
    assert {r["model"] for r in real} == {"imported", "imported, pruned"}
    cut = report["real_photos"]["pruning"]
    assert cut["stages"] == settings.prune_stages and cut["pictures"].endswith("train")
    assert Path(cut["pruned"]).is_file() and "no retraining" in cut["summary"]
    assert {(r["form"], r["mode"].split()[0]) for r in real} == {
        (form, mode)
        for form in ("PyTorch FP32", "ONNX Runtime INT8")
        for mode in ("strict", "default,")
    }
    for row in synthetic + real:
        assert all(0 <= row[key] <= 1 for key in ("AP", "AP50", "AR")), row
        # a size class without people in the val pictures has no AP
        assert all(row[key] is None or 0 <= row[key] <= 1 for key in ("APm", "APl")), row

    # INT8 AP drop = FP32 AP - INT8 AP of the same model and mode, for every pair
    rows = {(r["model"], r["form"], r["mode"]): r["AP"] for r in synthetic + real}
    assert len(report["int8_drop"]) == 6
    for drop in report["int8_drop"]:
        fp32 = rows[(drop["model"], "PyTorch FP32", drop["mode"])]
        int8 = rows[(drop["model"], "ONNX Runtime INT8", drop["mode"])]
        assert (drop["fp32_AP"], drop["int8_AP"]) == (fp32, int8)
        assert drop["drop"] == pytest.approx(fp32 - int8)

    # pruning: the swept threshold, and the drop from the fine-tuned to the retrained AP
    pruning = report["pruning"]
    assert pruning["threshold"] in settings.thresholds
    assert pruning["macs_kept"] <= pruning["target_macs"] or "no threshold" in pruning["reason"]
    assert f"-pth {pruning['threshold']:g} keeps" in text
    assert len(pruning["drop"]) == 2
    for drop in pruning["drop"]:
        tuned = rows[("fine-tuned", "PyTorch FP32", drop["mode"])]
        retrained = rows[("pruned + retrained", "PyTorch FP32", drop["mode"])]
        assert drop["drop"] == pytest.approx(tuned - retrained)

    # speed: every model in every runtime; speed-up = OpenPose ms / model ms, same runtime
    speed = report["speed"]["rows"]
    assert {(r["model"], r["runtime"]) for r in speed} == {
        (model, runtime)
        for model in ("fine-tuned", "pruned + retrained", "OpenPose COCO")
        for runtime in ("PyTorch FP32", "ONNX Runtime FP32", "ONNX Runtime INT8")
    }
    openpose = {r["runtime"]: r["ms"] for r in speed if r["model"] == "OpenPose COCO"}
    for row in speed:
        assert row["ms"] > 0 and row["fps"] == pytest.approx(1000 / row["ms"])
        assert row["speedup_vs_openpose"] == pytest.approx(openpose[row["runtime"]] / row["ms"])
    models = report["models"]
    assert set(models) == {"imported", "fine-tuned", "pruned + retrained", "OpenPose COCO"}
    for cost in models.values():
        assert cost["params"] > 0 and cost["gflops"] == pytest.approx(2 * cost["gmacs"])
    assert models["pruned + retrained"]["gmacs"] < models["fine-tuned"]["gmacs"]

    # the files the report shows, and its sections
    files = report["files"]
    for path in (files["fps_chart"], files["learning_curve"], files["retrain_curve"]):
        assert Path(path).is_file(), path
    assert [len(p) for p in files["pictures"].values()] == [1, 1]
    markdown = (out / "report.md").read_text()
    for section in ("## Accuracy", "## INT8 AP drop", "## Pruning", "## Size and speed",
                    "## Learning curves", "## Pictures", "## Steps"):  # fmt: skip
        assert section in markdown, section
    assert "![frames per second per runtime](fps.png)" in markdown
    table = report["table"]
    for words in ("COCO AP", "OpenPose COCO", "INT8 AP drop", "pruning AP drop", "GFLOPs"):
        assert words in table, words

    # a rerun skips every finished step and reports the same figures
    said.clear()
    again = run_demo(out, budget_minutes=0.01, settings=settings, say=said.append)
    assert sum("done in an earlier run" in line for line in said) == len(STEPS)
    assert again["accuracy"] == report["accuracy"] and again["speed"] == report["speed"]
    assert all(step["skipped"] for step in again["steps"])

    # a run that stopped before a step continues with that step
    (out / "done" / "pictures.json").unlink()
    said.clear()
    run_demo(out, budget_minutes=0.01, settings=settings, say=said.append)
    assert sum("done in an earlier run" in line for line in said) == len(STEPS) - 1
    assert any(line.startswith("[12/13] annotated pictures: done in") for line in said)

    # other options into the same folder are refused before any work
    with pytest.raises(BpnetError, match="other options"):
        run_demo(out, budget_minutes=5, settings=settings, say=said.append)


def test_a_folder_of_other_files_is_refused(settings, tmp_path):
    (tmp_path / "old" / "train").mkdir(parents=True)  # say, an earlier `make demo`'s checkpoints
    with pytest.raises(BpnetError, match="not a bpnet demo run"):
        run_demo(tmp_path / "old", settings=settings)


def test_data_takes_a_coco_layout_dataset(settings, tiny_coco, coco_fixture, tmp_path):
    assert find_splits(coco_fixture) == ("train2017", "val2017")
    demo = Demo(tmp_path / "out", 1.0, tiny_coco, settings, say=print)
    record = demo.data(tmp_path / "out" / "data")
    assert (record["root"], record["train_split"], record["val_split"]) == (
        str(tiny_coco),
        "train",
        "val",
    )
    assert not record["synthetic"] and record["counts"]["train"]["with_people"] == 4
    assert demo.default_spec == settings.photo_spec  # real photos: default mode at 368
    with pytest.raises(BpnetError, match="COCO layout"):
        find_splits(tmp_path)


def test_the_cli_default_budget_is_the_library_default():
    demo = build_parser()._subparsers._group_actions[0].choices["demo"]
    budget = next(a for a in demo._actions if a.dest == "budget")
    assert budget.default is None  # run_demo applies DEFAULT_BUDGET_MINUTES
    assert f"(default: {DEFAULT_BUDGET_MINUTES:g})" in budget.help
