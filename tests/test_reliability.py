"""Issue 16's catalogue of bad inputs and bad moments (docs/RELIABILITY.md): each case exits 2
with one line naming the file or field, no traceback, and nothing half-written."""

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from bpnet.cli import main
from test_train import run_cli, write_spec


@pytest.fixture(scope="module")
def trained(tiny_coco, tmp_path_factory):
    """One uninterrupted 2-epoch run: (spec file, results folder)."""
    tmp = tmp_path_factory.mktemp("trained")
    spec = write_spec(tmp / "spec.yaml", tiny_coco, log_tensorboard=True)
    out = tmp / "results"
    run_cli(["train", "-e", str(spec), "-r", str(out)])
    return spec, out


def snapshot(folder: Path) -> dict:
    """Every file under ``folder``: relative path -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def one_line_error(capsys, argv, code: int = 2) -> str:
    """Run ``bpnet ARGV`` in-process; assert it failed with one line on stderr; return it."""
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    assert err.startswith("bpnet: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def saved_spec(path: Path) -> dict:
    return torch.load(path, weights_only=True)["spec"]


# resume ----------------------------------------------------------------------------------------


def test_resume_refuses_a_changed_spec_and_lists_the_keys(trained, tmp_path, capsys):
    spec_file, reference = trained
    out = tmp_path / "results"
    shutil.copytree(reference, out)
    before = snapshot(out)
    err = one_line_error(capsys, ["train", "-e", spec_file, "-r", out, "-o", "num_epoch=3",
                                  "-o", "model.stages=4", "-o", "optimizer.type=sgd"])  # fmt: skip
    assert "model_epoch_002.pth: the spec differs" in err
    assert "model.stages: 2 -> 4" in err and "optimizer.type: 'adam' -> 'sgd'" in err
    assert "num_epoch" not in err.split("(")[1].split(")")[0]  # allowed, so not listed
    assert snapshot(out) == before  # nothing written, nothing trained


def test_resume_allows_and_records_the_run_length_and_cadence(trained, tmp_path):
    spec_file, reference = trained
    out = tmp_path / "results"
    shutil.copytree(reference, out)
    changes = ["num_epoch=3", "validation_every_n_epoch=0", "log_tensorboard=false"]
    argv = ["train", "-e", str(spec_file), "-r", str(out)]
    stdout = run_cli(argv + [f"--override={item}" for item in changes])
    assert "changed since then: num_epoch: 2 -> 3, validation_every_n_epoch: 2 -> 0" in stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    resumed = [r for r in records if r["kind"] == "resume"]
    assert resumed == [{"kind": "resume", "epoch": 2, "step": 4, "changed": {
        "num_epoch": {"was": 2, "now": 3}, "validation_every_n_epoch": {"was": 2, "now": 0},
        "log_tensorboard": {"was": True, "now": False}}}]  # fmt: skip
    assert yaml.safe_load((out / "experiment_spec.yaml").read_text())["num_epoch"] == 3
    assert saved_spec(out / "model_epoch_003.pth")["num_epoch"] == 3


def test_nothing_to_do_rewrites_nothing(trained, tmp_path):
    spec_file, reference = trained
    out = tmp_path / "results"
    shutil.copytree(reference, out)
    before = snapshot(out)
    stdout = run_cli(["train", "-e", str(spec_file), "-r", str(out), "-o", "log_every_n_secs=9"])
    assert "nothing to do" in stdout
    assert snapshot(out) == before  # the spec file still holds the settings that ran


# one run per results folder ------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from bpnet.io import folder_lock
with folder_lock(sys.argv[1], "bpnet train"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_training_in_the_same_folder_refuses_and_a_killed_ones_lock_does_not_block(
    tiny_coco, tmp_path, capsys
):
    spec = write_spec(tmp_path / "spec.yaml", tiny_coco, num_epoch=1, validation_every_n_epoch=0)
    out = tmp_path / "results"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"  # "the first training" runs
        before = snapshot(out)
        err = one_line_error(capsys, ["train", "-e", spec, "-r", out])
        assert f"{out}: bpnet train (pid {holder.pid}) is already writing to this folder" in err
        assert snapshot(out) == before
    finally:
        holder.kill()  # SIGKILL: its lock file stays behind
        holder.wait()
    assert (out / ".bpnet.lock").is_file()
    run_cli(["train", "-e", str(spec), "-r", str(out)])
    assert (out / "model_epoch_001.pth").is_file() and not (out / ".bpnet.lock").exists()


def test_temporary_files_of_a_killed_save_are_removed_at_start(tiny_coco, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", tiny_coco, num_epoch=1, validation_every_n_epoch=0)
    out = tmp_path / "results"
    (out / "validation").mkdir(parents=True)
    stale = [out / ".model_epoch_002.k3x_9a0q.tmp.pth", out / ".metrics.abcdefgh.tmp.jsonl",
             out / "validation" / ".results.0a1b2c3d.tmp.json"]  # fmt: skip
    for path in stale:
        path.write_bytes(b"")  # what kill -9 right after mkstemp leaves
    mine = [out / ".notes.tmp", out / "model.tmp.pth"]  # not bpnet's pattern: left alone
    for path in mine:
        path.write_text("keep")
    run_cli(["train", "-e", str(spec), "-r", str(out)])
    assert not any(path.exists() for path in stale)
    assert all(path.read_text() == "keep" for path in mine)


# a full disk -----------------------------------------------------------------------------------


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def commands_writing(trained, tiny_coco, out: Path) -> dict:
    """Every command that writes files, writing into ``out``."""
    spec, reference = trained
    model = reference / "model_epoch_002.pth"
    picture = sorted((tiny_coco / "val").iterdir())[0]
    return {
        "train": ["train", "-e", spec, "-r", out, "-o", "num_epoch=1"],
        "export": ["export", "-m", model, "-o", out / "model.onnx"],
        "inference": ["inference", "-m", model, "--input", picture, "-r", out],
        "evaluate": ["evaluate", "-m", model, "-d", tiny_coco, "--split", "val", "-r", out],
        "prune": ["prune", "-m", model, "-o", out / "pruned.pth", "-pth", "0.5"],
    }


@pytest.mark.parametrize("command", ["train", "export", "inference", "evaluate", "prune"])
def test_a_full_disk_is_one_line_naming_the_file(
    command, trained, tiny_coco, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    argv = commands_writing(trained, tiny_coco, out)[command]
    # every atomic write fails where a full disk reports it at the latest: flushing to disk
    monkeypatch.setattr(os, "fsync", no_space)
    err = one_line_error(capsys, argv)
    # the file it was writing: in the output folder, or a temporary one (export stages there)
    written = re.search(r"error: (\S+): not written: no space left on the device", err)
    assert written and written[1].startswith((f"{out}/", tempfile.gettempdir())), err
    assert "free some space" in err
    # nothing half-written: no temporary file, no file but those written in full before
    left = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not [p for p in left if p.name.startswith(".")]


def disk_usage(free: int):
    return shutil._ntuple_diskusage(2 << 40, 2 << 40 - free, free)


def test_torch_save_on_a_full_disk_is_one_line(trained, tmp_path, monkeypatch, capsys):
    """torch.save's C++ writer reports a full disk without an errno ("unexpected pos")."""
    spec, _ = trained
    out = tmp_path / "out"

    def half_then_fail(obj, path):
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", half_then_fail)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2 << 20, 2 << 20, 0)
    )
    err = one_line_error(capsys, ["train", "-e", spec, "-r", out, "-o", "num_epoch=1"])
    assert f"{out / 'model_epoch_001.pth'}: not written: no space left" in err
    names = sorted(p.name for p in out.iterdir())
    assert "model_epoch_001.pth" not in names and not [n for n in names if n.startswith(".")]

    # with free space left, the same error is not blamed on the disk
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 40, 0, 1 << 40)
    )
    with pytest.raises(RuntimeError, match="unexpected pos"):
        main(["train", "-e", str(spec), "-r", str(tmp_path / "other"), "-o", "num_epoch=1"])


def test_a_full_disk_while_appending_to_the_log_names_the_log(tmp_path, monkeypatch):
    from bpnet.io import DiskFullError
    from bpnet.train import monitor

    log = monitor.MetricsLog(tmp_path / "metrics.jsonl")
    monkeypatch.setattr(monitor, "open", no_space, raising=False)
    with pytest.raises(DiskFullError, match=r"metrics\.jsonl: not written: no space left"):
        log.write({"kind": "step", "step": 1})


def test_any_other_disk_full_error_is_one_line(monkeypatch, capsys):
    import bpnet.models

    def full(**options):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/data/x.bin")

    # a command whose write hits a quota
    monkeypatch.setattr(bpnet.models, "spec_show_command", full)
    err = one_line_error(capsys, ["spec", "show", "-e", "specs/synthetic_demo.yaml"])
    assert "/data/x.bin: not written: no space left on the device" in err


# dataset stats checks every image and every value ----------------------------------------------


@pytest.fixture
def val_copy(coco_fixture, tmp_path) -> Path:
    """A writable copy of the fixture's val2017 split (50 images)."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    shutil.copy(
        coco_fixture / "annotations" / "person_keypoints_val2017.json", root / "annotations"
    )
    shutil.copytree(coco_fixture / "val2017", root / "val2017")
    return root


def annotations_of(root: Path) -> tuple[Path, dict]:
    path = root / "annotations" / "person_keypoints_val2017.json"
    return path, json.loads(path.read_text())


def test_stats_decodes_every_image(val_copy, capsys):
    images = sorted((val_copy / "val2017").iterdir())
    images[0].write_bytes(b"")  # zero bytes
    images[1].write_bytes(images[1].read_bytes()[:2000])  # truncated
    images[2].write_bytes(bytes(range(256)) * 8)  # not an image
    shutil.copy(images[4], images[3])  # another picture, of another size
    err = one_line_error(capsys, ["dataset", "stats", "-d", val_copy, "--split", "val2017"])
    assert "4 problem(s) found" in err
    assert f"unreadable images: 3 (first: {images[0]} (an empty file))" in err
    assert f"images of another size than their width/height: 1 (first: {images[3]} is " in err
    # --skip-image-check opens no image
    argv = ["dataset", "stats", "-d", val_copy, "--split", "val2017", "--skip-image-check"]
    assert main([str(a) for a in argv]) == 0


def test_stats_checks_annotation_values(val_copy, capsys):
    path, data = annotations_of(val_copy)
    people = [a for a in data["annotations"] if a["num_keypoints"] > 0]
    people[0]["keypoints"][0:3] = [1e9, 5, 2]  # a keypoint far outside its image
    k = people[1]["keypoints"][2::3].index(2)  # a visible keypoint: now "7"
    people[1]["keypoints"][3 * k + 2] = 7
    people[2]["num_keypoints"] += 3
    path.write_text(json.dumps(data))
    err = one_line_error(capsys, ["dataset", "stats", "-d", val_copy, "--split", "val2017"])
    assert "3 problem(s) found" in err
    assert f"keypoints far outside their image: 1 (first: annotations[id={people[0]['id']}]" in err
    assert f"visibility flags not 0, 1 or 2: 1 (first: annotations[id={people[1]['id']}]." in err
    assert f"keypoints[{k}] v=7" in err
    assert f"annotations[id={people[2]['id']}].num_keypoints is {people[2]['num_keypoints']}" in err


def test_a_negative_area_is_refused_where_annotations_load(val_copy, tmp_path, capsys):
    path, data = annotations_of(val_copy)
    person = next(a for a in data["annotations"] if a["num_keypoints"] > 0)
    person["area"] = -25.0
    path.write_text(json.dumps(data))
    field = f"annotations[id={person['id']}].area: -25.0 is negative"
    err = one_line_error(capsys, ["dataset", "stats", "-d", val_copy, "--split", "val2017"])
    assert f"{path}: {field}" in err and "silently leave this person out" in err
    # evaluation refuses it instead of scoring without that person
    argv = ["evaluate", "--oracle", "-d", val_copy, "--split", "val2017", "-r", tmp_path / "r"]
    assert field in one_line_error(capsys, argv)
    assert not (tmp_path / "r").exists()


# dataset synth ---------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_synth_folders_follow_the_umask(tmp_path, umask):
    saved = os.umask(umask)
    try:
        assert main(["dataset", "synth", "--out", str(tmp_path / "data"), "--train", "1",
                     "--val", "1"]) == 0  # fmt: skip
    finally:
        os.umask(saved)
    folders = [tmp_path / "data", *[p for p in (tmp_path / "data").rglob("*") if p.is_dir()]]
    assert len(folders) == 4  # the root, annotations/, train/, val/
    assert {oct(p.stat().st_mode & 0o777) for p in folders} == {oct(0o777 & ~umask)}


def test_synth_removes_the_partial_folder_of_a_killed_run(tmp_path, capsys):
    dead = tmp_path / ".data.999999999.k3x_9a0q.partial"  # no process has this pid
    live = tmp_path / f".data.{os.getpid()}.abcdefgh.partial"  # a run still writing
    other = tmp_path / ".other.999999999.abcdefgh.partial"  # another dataset's
    for folder in (dead, live, other):
        (folder / "train").mkdir(parents=True)
    assert main(["dataset", "synth", "--out", str(tmp_path / "data"), "--train", "1",
                 "--val", "1"]) == 0  # fmt: skip
    assert not dead.exists() and live.is_dir() and other.is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data.") and p != live]


# data errors in DataLoader workers -------------------------------------------------------------


def test_a_data_error_in_a_worker_process_is_one_line(tiny_coco, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(tiny_coco, root)
    victim = sorted((root / "train").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:500])  # truncated
    spec = write_spec(tmp_path / "spec.yaml", root, num_epoch=1, validation_every_n_epoch=0)
    argv = ["train", "-e", spec, "-r", tmp_path / "out", "-o", "dataloader.num_workers=2"]
    err = one_line_error(capsys, argv)
    assert err.startswith(f"bpnet: error: {victim}: not a readable image")
    assert "DataLoader worker" not in err


# inference over a folder with unreadable images ------------------------------------------------


def folder_with_bad_images(tiny_coco: Path, folder: Path, good: int = 2) -> Path:
    """``good`` readable pictures, an empty file and a text file named .jpg."""
    folder.mkdir()
    for image in sorted((tiny_coco / "val").iterdir())[:good]:
        shutil.copy(image, folder)
    (folder / "empty.png").write_bytes(b"")
    (folder / "zz_broken.jpg").write_bytes(b"not a jpeg")
    return folder


def test_inference_skips_unreadable_images_and_names_them(trained, tiny_coco, tmp_path, capsys):
    _, reference = trained
    model = reference / "model_epoch_002.pth"
    folder = folder_with_bad_images(tiny_coco, tmp_path / "pictures")
    good = sorted(p.name for p in folder.iterdir() if p.suffix == ".jpg" and p.stem != "zz_broken")
    out = tmp_path / "out"
    stdout = run_cli(["inference", "-m", str(model), "--input", str(folder), "-r", str(out)])
    assert "empty.png: skipped: not a readable image" in stdout
    summary = stdout.strip().splitlines()[-1]
    assert "in 2 images; 2 unreadable image(s) skipped: empty.png, zz_broken.jpg" in summary
    assert f"(listed in {out / 'skipped_images.json'})" in summary
    assert "annotation file" not in stdout  # no annotation file to fix here
    skipped = json.loads((out / "skipped_images.json").read_text())
    assert [s["file_name"] for s in skipped] == ["empty.png", "zz_broken.jpg"]
    assert all(s["reason"].startswith("not a readable image") for s in skipped)
    detections = json.loads((out / "detections.json").read_text())
    assert {d["file_name"] for d in detections} <= set(good)
    assert sorted(p.name for p in (out / "images").iterdir()) == good  # every readable one drawn

    # the images fixed, a rerun lists nothing: no stale list of the earlier run stays
    for bad in ("empty.png", "zz_broken.jpg"):
        (folder / bad).unlink()
    run_cli(["inference", "-m", str(model), "--input", str(folder), "-r", str(out)])
    assert not (out / "skipped_images.json").exists()


def test_inference_strict_or_nothing_readable_is_one_line_and_writes_nothing(
    trained, tiny_coco, tmp_path, capsys
):
    _, reference = trained
    model = reference / "model_epoch_002.pth"
    folder = folder_with_bad_images(tiny_coco, tmp_path / "pictures")
    argv = ["inference", "-m", model, "--input", folder, "-r", tmp_path / "strict", "--strict"]
    err = one_line_error(capsys, argv)
    assert f"{folder / 'empty.png'}: not a readable image" in err and "drop --strict" in err
    assert "annotation file" not in err
    assert not (tmp_path / "strict").exists()

    folder = folder_with_bad_images(tiny_coco, tmp_path / "all_bad", good=0)
    err = one_line_error(capsys, ["inference", "-m", model, "--input", folder,
                                  "-r", tmp_path / "none"])  # fmt: skip
    assert f"{folder}: none of the 2 images could be read (first: {folder / 'empty.png'}" in err
    assert not (tmp_path / "none").exists()


def test_inference_leaves_no_staging_folder_and_removes_stale_ones(
    trained, tiny_coco, tmp_path, monkeypatch, capsys
):
    _, reference = trained
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    dead = temp / "bpnet-inference-999999999-k3x_9a0q"  # no process has this pid
    live = temp / f"bpnet-inference-{os.getpid()}-abcdefgh"  # a run still going
    other = temp / "someone-else-999999999-abcdefgh"
    for folder in (dead, live, other):
        (folder / "x.jpg").parent.mkdir()
        (folder / "x.jpg").write_bytes(b"staged")
    picture = sorted((tiny_coco / "val").iterdir())[0]
    argv = ["inference", "-m", str(reference / "model_epoch_002.pth"), "--input", str(picture)]
    run_cli([*argv, "-r", str(tmp_path / "out")])
    assert sorted(temp.iterdir()) == sorted([live, other])  # its own staging folder is gone
    # nor after a failure
    assert main([*argv, "-r", str(tmp_path / "out"), "--input_type", "dir"]) == 2
    assert sorted(temp.iterdir()) == sorted([live, other])


STAGE_THEN_WAIT = """
import sys, time
from bpnet.io import staging_folder
with staging_folder("bpnet-inference-") as staging:
    print(staging, flush=True)
    time.sleep(60)
"""


def test_a_staging_folder_is_removed_on_sigterm(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-c", STAGE_THEN_WAIT], env=env, stdout=subprocess.PIPE, text=True
    )
    staging = Path(process.stdout.readline().strip())
    assert staging.is_dir() and staging.parent == tmp_path
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert not staging.exists() and list(tmp_path.iterdir()) == []


def test_unreadable_calibration_images_are_not_blamed_on_an_annotation_file(tmp_path):
    from bpnet.errors import BpnetError
    from bpnet.export.calibration import build_calibration_data

    broken = tmp_path / "cal" / "broken.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(BpnetError) as caught:
        build_calibration_data([broken], tmp_path / "cal.tensor", (64, 64), 1)
    message = str(caught.value)
    assert message.startswith(f"{broken}: not a readable image")
    assert "remove it from the calibration folder" in message and "annotation" not in message
    assert not (tmp_path / "cal.tensor").exists()


# smaller cases ---------------------------------------------------------------------------------


def test_a_missing_dataset_root_is_named_as_such(tiny_coco, tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.yaml", tiny_coco)
    missing = tmp_path / "no_such_dataset"
    err = one_line_error(capsys, ["train", "-e", spec, "-r", tmp_path / "out", "-d", missing])
    assert f"{missing}: dataset root not found" in err and "val_split" not in err
    assert not (tmp_path / "out").exists()


def test_calibration_sample_into_a_file_says_it_is_a_file(coco_fixture, tmp_path, capsys):
    target = tmp_path / "calibration"
    target.write_text("not a folder")
    ann = coco_fixture / "annotations" / "person_keypoints_val2017.json"
    argv = ["calibration", "sample", "-a", ann, "-i", coco_fixture / "val2017", "-o", target,
            "-n", "2"]  # fmt: skip
    err = one_line_error(capsys, argv)
    assert f"{target}: is a file, not a folder" in err
    assert target.read_text() == "not a folder"


# kill -9 at random points ----------------------------------------------------------------------

# `bpnet train ARGS`; with DIE_IN_SAVE set, the first checkpoint save writes half its bytes to
# the temporary file and the process SIGKILLs itself there
TRAIN_MAY_DIE_IN_SAVE = """
import os, signal, sys
import torch
if os.environ.get("DIE_IN_SAVE"):
    real_save = torch.save
    def save_half_then_die(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    torch.save = save_half_then_die
from bpnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_five_times_then_the_rerun_equals_an_uninterrupted_run(tiny_coco, tmp_path):
    """5 SIGKILLs at random moments of the training loop (one inside a checkpoint write), each
    followed by the same command: the last run ends with the uninterrupted run's weights, every
    step logged once, and no temporary file. 16 epochs of 2 steps, a checkpoint every epoch."""
    rng = random.Random(16)
    spec = write_spec(tmp_path / "spec.yaml", tiny_coco, num_epoch=16, validation_every_n_epoch=0)
    reference, out = tmp_path / "reference", tmp_path / "results"
    run_cli(["train", "-e", str(spec), "-r", str(reference)])

    command = [sys.executable, "-c", TRAIN_MAY_DIE_IN_SAVE, "train", "-e", spec, "-r", out]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the reference ran on one thread too
    in_save = rng.randrange(5)
    for kill in range(5):
        die_in_save = {"DIE_IN_SAVE": "1"} if kill == in_save else {}
        run = subprocess.Popen(command, stdout=subprocess.PIPE, env={**env, **die_in_save})
        if not die_in_save:
            # a random moment: up to 5 lines (2 an epoch) into the loop (after the model line),
            # then up to 50 ms more
            lines = [run.stdout.readline() for _ in range(rng.randint(2, 6) + 1)]
            # "model: ..." (the built widths), then "training ..." or "resuming ..."
            assert lines[0].startswith(b"model:"), lines
            assert lines[1].startswith((b"training", b"resuming")), lines
            time.sleep(rng.uniform(0, 0.05))
            run.send_signal(signal.SIGKILL)
        run.communicate(timeout=60)
        assert run.returncode == -signal.SIGKILL, (kill, run.returncode)
        if die_in_save:  # it died with a half-written temporary checkpoint
            assert [p.name for p in out.glob(".model_epoch_*.tmp.pth")]
    final = subprocess.run(command, capture_output=True, env=env, timeout=60)
    assert final.returncode == 0, final.stderr
    assert b"resuming from" in final.stdout and b"model_epoch_016.pth" in final.stdout

    mine = torch.load(out / "model_epoch_016.pth", weights_only=True)
    theirs = torch.load(reference / "model_epoch_016.pth", weights_only=True)
    assert (mine["epoch"], mine["step"]) == (16, 32)
    assert all(torch.equal(mine["state_dict"][k], v) for k, v in theirs["state_dict"].items())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, 33))
    assert not [p for p in out.rglob(".*")]  # no temporary file, no lock file
