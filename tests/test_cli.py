"""The command line: help for every command, one-line errors with a non-zero exit."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bpnet.cli import build_parser, main


def subcommands(parser, prefix=()):
    """Yield every command path, e.g. ('dataset', 'synth')."""
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from subcommands(sub, (*prefix, name))


def test_every_command_has_help(capsys):
    paths = list(subcommands(build_parser()))
    assert ("dataset", "synth") in paths and ("dataset", "stats") in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_:
            main([*path, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "usage: bpnet " + " ".join(path) in out


def test_every_option_is_a_parameter_of_the_function_its_command_runs():
    import importlib
    import inspect

    parser = build_parser()
    for path in subcommands(parser):
        sub = parser
        for name in path:
            sub = next(a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction")
            sub = sub.choices[name]
        target = sub.get_default("target")
        if target is None:  # a group of actions: its actions are checked
            continue
        module, name = target.split(":")
        function = getattr(importlib.import_module(module), name)
        dests = {a.dest: None for a in sub._actions if a.dest not in ("help", "target", "parser")}
        inspect.signature(function).bind(**dests)  # TypeError: an option it does not take


def test_console_script_runs():
    exe = Path(sys.executable).with_name("bpnet")
    result = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("bpnet ")


def run_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("bpnet: error: ") and err.count("\n") == 1, err
    return err


def test_unknown_spec_key_is_one_line(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("model:\n  stagez: 3\n")
    err = run_error(capsys, ["spec", "show", "-e", str(spec)])
    assert str(spec) in err and "model.stagez" in err


def test_bad_override_is_one_line(capsys):
    err = run_error(capsys, ["spec", "show", "-e", "specs/synthetic_scratch.yaml", "-o", "x.y=1"])
    assert "'x'" in err


def test_spec_show_applies_overrides(capsys):
    assert main(["spec", "show", "-e", "specs/synthetic_scratch.yaml", "-o", "model.stages=6"]) == 0
    assert "stages: 6" in capsys.readouterr().out


def test_spec_show_prints_the_built_stage_widths(capsys):
    # num_filters is scaled by the width multiplier in TAO's stage layout: 64 x 0.25 = 16
    argv = ["spec", "show", "-e", "specs/synthetic_scratch.yaml", "-o", "model.num_filters=64"]
    assert main([*argv, "-o", "model.backbone_attributes.width_multiplier=0.25"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["model"]["num_filters"] == 64  # still a spec file
    assert "# model as built:" in out and "stage convs 16 wide" in out


def test_stats_on_the_real_fixture(coco_fixture, capsys):
    assert main(["dataset", "stats", "-d", str(coco_fixture), "--split", "val2017", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["images"] == 50
    assert stats["annotations"] == 127
    assert stats["crowd_regions"] == 4
    assert stats["people_labelled"] == 46
    assert sum(stats["size_classes"].values()) == 46
    assert stats["images_with_people"] + stats["images_without_people"] == 50


def test_stats_text_report(coco_fixture, capsys):
    assert main(["dataset", "stats", "-d", str(coco_fixture), "--split", "train2017"]) == 0
    out = capsys.readouterr().out
    assert "images    50" in out
    assert "3 crowd regions" in out


def broken_copy(coco_fixture: Path, tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    name = "person_keypoints_val2017.json"
    shutil.copy(coco_fixture / "annotations" / name, root / "annotations")
    shutil.copytree(coco_fixture / "val2017", root / "val2017")
    return root


def test_stats_missing_image(coco_fixture, tmp_path, capsys):
    root = broken_copy(coco_fixture, tmp_path)
    victim = sorted((root / "val2017").iterdir())[3]
    victim.unlink()
    err = run_error(capsys, ["dataset", "stats", "-d", str(root), "--split", "val2017"])
    assert victim.name in err


def test_stats_malformed_json(coco_fixture, tmp_path, capsys):
    root = broken_copy(coco_fixture, tmp_path)
    ann = root / "annotations" / "person_keypoints_val2017.json"
    ann.write_text(ann.read_text()[:5000])
    err = run_error(capsys, ["dataset", "stats", "-d", str(root), "--split", "val2017"])
    assert str(ann) in err and "JSON" in err


def test_stats_unknown_split(coco_fixture, capsys):
    err = run_error(capsys, ["dataset", "stats", "-d", str(coco_fixture), "--split", "test2017"])
    assert "person_keypoints_test2017.json" in err


def test_show_draws_requested_images(coco_fixture, tmp_path, capsys):
    out = tmp_path / "show"
    assert main(["dataset", "show", "-d", str(coco_fixture), "--split", "val2017",
                 "--out", str(out), "-n", "3"]) == 0  # fmt: skip
    written = sorted(out.iterdir())
    assert len(written) == 3 and all(p.suffix == ".jpg" and p.stat().st_size > 0 for p in written)
    assert capsys.readouterr().out.count("\n") == 3


def test_bench_decode_finds_the_people_it_times(capsys):
    argv = ["bench", "decode", "--frames", "2", "--people", "3", "-o", "input_shape=[256,256]"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input_size"] == [256, 256]
    assert result["people"]["3"]["found"] == 3.0
    assert result["people"]["3"]["decode_ms"] > 0
