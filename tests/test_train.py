"""`bpnet train` end to end on real COCO images: files, resume, atomic checkpoints, NaN, DDP.

Runs use 4 training and 3 validation images at 64 x 64 with a 0.1-width network, about a
second each on two CPU cores. The data-parallel test uses the BN-free stand-in network of
``tiny_model.py`` (see there).
"""

import io
import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path

import cv2
import pytest
import torch
import torch.multiprocessing as mp
import yaml

import tiny_model
from bpnet.cli import main
from bpnet.config import load_experiment_spec, to_dict
from bpnet.errors import BpnetError
from bpnet.models import checkpoint as ckpt
from bpnet.models import load_state_checked, model_from_arch
from bpnet.pose import load_pose_config
from bpnet.pose.skeleton import parse_pose_config
from bpnet.train import trainer
from bpnet.train.distributed import needs_launch, torchrun_command


def write_spec(path: Path, root: Path, **top) -> Path:
    spec = {
        "random_seed": 7,
        "num_epoch": 2,
        "checkpoint_n_epoch": 1,
        "validation_every_n_epoch": 2,
        "log_every_n_secs": 0.001,
        "dataloader": {
            "batch_size": 2,
            "image_config": {"image_dims": {"height": 64, "width": 64}},
            "dataset_config": {
                "root_data_path": str(root),
                "train_split": "train",
                "val_split": "val",
            },
        },
        "model": {"backbone_attributes": {"width_multiplier": 0.1}, "stages": 2},
        "optimizer": {
            "type": "adam",
            "learning_rate_schedule": {
                "base_learning_rate": 1e-3,
                "min_learning_rate": 1e-5,
                "soft_start": 0.25,
                "annealing": 0.5,
            },
        },
        **top,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def weights(path: Path) -> dict:
    return ckpt.load_checkpoint(path)["state_dict"]


@pytest.fixture(scope="module")
def trained(tiny_coco, tmp_path_factory):
    """One uninterrupted 2-epoch CLI run: (spec file, results folder, stdout).

    Without -k, so the checkpoints are plain (TAO's -k, which encrypts them, is in
    test_encryption.py).
    """
    tmp = tmp_path_factory.mktemp("trained")
    spec = write_spec(tmp / "spec.yaml", tiny_coco, log_tensorboard=True)
    out = tmp / "results"
    stdout = run_cli(["train", "-e", str(spec), "-r", str(out)])
    return spec, out, stdout


def run_cli(argv) -> str:
    """Run `bpnet ARGV` in-process; return what it printed."""
    buffer, saved = io.StringIO(), sys.stdout
    sys.stdout = buffer
    try:
        code = main(argv)
    finally:
        sys.stdout = saved
    assert code == 0, buffer.getvalue()
    return buffer.getvalue()


def test_cli_run_writes_checkpoints_metrics_curve_and_spec(trained):
    spec_file, out, stdout = trained
    names = {p.name for p in out.iterdir()}
    assert {"experiment_spec.yaml", "model_epoch_001.pth", "model_epoch_002.pth",
            "metrics.jsonl", "loss_curve.png", "validation"} <= names  # fmt: skip
    assert not [n for n in names if n.startswith(".")]  # no temporary files left
    assert load_experiment_spec(out / "experiment_spec.yaml") == load_experiment_spec(spec_file)

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(r["loss"] > 0 and r["images_per_s"] > 0 for r in steps)
    assert "AP" not in epochs[0] and 0.0 <= epochs[1]["AP"] <= 1.0  # validated at epoch 2
    assert (out / "validation" / "results.json").is_file()
    assert cv2.imread(str(out / "loss_curve.png")).shape == (480, 800, 3)
    assert "val AP" in stdout and "done: 2 epochs, 4 steps" in stdout
    # the same numbers in TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(out / "tensorboard"))
    board.Reload()
    losses = board.Scalars("step/loss")
    assert [e.step for e in losses] == [1, 2, 3, 4]
    assert [e.value for e in losses] == pytest.approx([r["loss"] for r in steps])
    assert [(e.step, e.value) for e in board.Scalars("epoch/AP")] == [
        (4, pytest.approx(epochs[1]["AP"]))
    ]

    last = ckpt.load_checkpoint(out / "model_epoch_002.pth")
    assert (last["epoch"], last["step"]) == (2, 4)
    assert last["spec"]["num_epoch"] == 2 and last["metrics"]["AP"] == epochs[1]["AP"]
    assert parse_pose_config(last["pose"]) == load_pose_config()
    model = model_from_arch(last["arch"])  # rebuilds from data alone
    load_state_checked(model, last["state_dict"], "epoch 2")


def test_rerun_after_a_crash_resumes_and_equals_the_uninterrupted_run(
    trained, tmp_path, monkeypatch
):
    spec_file, reference, _ = trained
    out = tmp_path / "results"
    real_save = trainer.save_checkpoint

    def save_then_die(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        raise KeyboardInterrupt  # killed right after the first checkpoint

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    assert main(["train", "-e", str(spec_file), "-r", str(out)]) == 130
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    assert [p.name for _, p in ckpt.list_checkpoints(out)] == ["model_epoch_001.pth"]

    stdout = run_cli(["train", "-e", str(spec_file), "-r", str(out)])  # the same command
    assert "resuming from" in stdout and "model_epoch_001.pth (epoch 1/2, step 2)" in stdout
    mine, theirs = weights(out / "model_epoch_002.pth"), weights(reference / "model_epoch_002.pth")
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 2, 3, 4, 4]  # each step once (plus one epoch record per epoch)


def test_more_epochs_continue_from_the_last_checkpoint(trained, tmp_path):
    spec_file, reference, _ = trained
    out = tmp_path / "results"
    shutil.copytree(reference, out)
    assert "nothing to do" in run_cli(["train", "-e", str(spec_file), "-r", str(out)])
    stdout = run_cli(["train", "-e", str(spec_file), "-r", str(out), "-o", "num_epoch=3",
                      "-o", "validation_every_n_epoch=0"])  # fmt: skip
    assert "model_epoch_002.pth (epoch 2/3, step 4)" in stdout
    assert ckpt.load_checkpoint(out / "model_epoch_003.pth")["step"] == 6


def test_pretrained_weights_with_and_without_load_graph(trained, tiny_coco, tmp_path, capsys):
    _, reference, _ = trained
    pretrained = reference / "model_epoch_002.pth"
    # the spec asks for 3 stages; load_graph keeps the pretrained (say, pruned) 2-stage network
    spec = write_spec(tmp_path / "spec.yaml", tiny_coco, num_epoch=1, validation_every_n_epoch=0,
                      pretrained_weights=str(pretrained), load_graph=True)  # fmt: skip
    argv = ["train", "-e", str(spec), "-r", str(tmp_path / "graph"), "-o", "model.stages=3"]
    assert "(load_graph)" in run_cli(argv)
    retrained = ckpt.load_checkpoint(tmp_path / "graph" / "model_epoch_001.pth")
    assert retrained["arch"] == ckpt.load_checkpoint(pretrained)["arch"]

    argv = ["train", "-e", str(spec), "-r", str(tmp_path / "spec_model"), "-o", "model.stages=3",
            "-o", "load_graph=false"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(pretrained) in err

    # a retrain spec (load_graph) whose pruned model was forgotten: an error, not a fresh net
    argv = ["train", "-e", str(spec), "-r", str(tmp_path / "forgot"), "-o",
            "pretrained_weights=null"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-o pretrained_weights=PATH" in err
    assert not (tmp_path / "forgot").exists()


def test_checkpoints_are_atomic_and_pruned(tmp_path, monkeypatch):
    model = tiny_model.build_model(load_experiment_spec(None).model, load_pose_config())
    good = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 1), model, epoch=1, step=5)

    def crash_mid_write(obj, path):
        Path(path).write_bytes(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt  # killed while writing

    monkeypatch.setattr(ckpt.torch, "save", crash_mid_write)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 2), model, epoch=2, step=10)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_epoch_001.pth"]
    # what a SIGKILL mid-save leaves behind is a hidden temporary file, never a checkpoint name
    (tmp_path / ".model_epoch_002.x1y2.tmp.pth").write_bytes(b"PK\x03\x04 half")
    assert ckpt.latest_checkpoint(tmp_path) == good
    assert ckpt.load_checkpoint(good)["step"] == 5

    truncated = tmp_path / "model_epoch_009.pth"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(BpnetError, match="not a readable checkpoint") as err:
        ckpt.load_checkpoint(truncated)
    assert "\n" not in str(err.value)

    for epoch in (3, 4, 5):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, epoch), model, epoch=epoch)
    truncated.unlink()
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [e for e, _ in ckpt.list_checkpoints(tmp_path)] == [4, 5]


def test_nan_loss_is_a_one_line_error(tiny_coco, tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.yaml", tiny_coco, num_epoch=1, validation_every_n_epoch=0)
    code = main(["train", "-e", str(spec), "-r", str(tmp_path / "out"),
                 "-o", "optimizer.type=sgd", "-o", "model.regularization_type=none",
                 "-o", "optimizer.learning_rate_schedule.schedule=constant",
                 "-o", "optimizer.learning_rate_schedule.base_learning_rate=1e30"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("bpnet: error: loss became ")
    assert "at epoch 1 step 2" in err and "lower the learning rate" in err


def test_gpus_flag_relaunches_under_torchrun():
    assert not needs_launch(1) and needs_launch(2)
    command = torchrun_command(["train", "-e", "s.yaml"], nproc_per_node=2, master_port=1234)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in command and "--master_port=1234" in command
    assert command[-5:] == ["-m", "bpnet", "train", "-e", "s.yaml"]


def ddp_worker(rank: int, world_size: int, port: int, spec_file: str, out: str) -> None:
    """One process of a 2-process gloo run; saves its final weights to rank<N>.pt."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))  # fmt: skip
    torch.set_num_threads(1)
    models = []

    def build_and_keep(spec, pose, resume, say, key=None):
        models.append(bn_free_model(spec, pose, resume, say)[0])
        return models[-1], None

    trainer.build_training_model = build_and_keep
    trainer.train(load_experiment_spec(spec_file), out, stream=io.StringIO())
    torch.save(models[0].state_dict(), Path(out) / f"rank{rank}.pt")


def bn_free_model(spec, pose, resume, say, key=None):
    """A stand-in for build_training_model: the BN-free tiny network, seeded as train() does."""
    return tiny_model.build_model(spec.model, pose, batch_norm=False), None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process_with_the_whole_batch(
    tiny_coco, tmp_path, monkeypatch
):
    # BN-free model: per-process batch-norm statistics (CPU has no SyncBatchNorm) would differ
    monkeypatch.setattr(trainer, "build_training_model", bn_free_model)
    common = dict(num_epoch=1, validation_every_n_epoch=0,
                  optimizer={"type": "sgd", "learning_rate_schedule": {
                      "schedule": "constant", "base_learning_rate": 1e-4}})  # fmt: skip
    single = write_spec(tmp_path / "single.yaml", tiny_coco, **common)
    spec = load_experiment_spec(single, ["dataloader.batch_size=1"])  # 1 + 1 = the same 2
    split = tmp_path / "split.yaml"
    split.write_text(yaml.safe_dump(to_dict(spec)))
    # the reference run overlaps the workers' start-up (importing torch and DDP takes seconds)
    args = (2, free_port(), str(split), str(tmp_path / "ddp"))
    workers = mp.start_processes(ddp_worker, args, nprocs=2, start_method="spawn", join=False)
    trainer.train(load_experiment_spec(single), tmp_path / "single", stream=io.StringIO())
    while not workers.join():
        pass

    rank0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=True)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # the processes stay in sync
    saved = weights(tmp_path / "ddp" / "model_epoch_001.pth")
    assert all(torch.equal(saved[k], rank0[k]) for k in rank0)
    reference = weights(tmp_path / "single" / "model_epoch_001.pth")
    trainer.seed_everything(spec.random_seed)
    initial = tiny_model.build_model(spec.model, load_pose_config(), batch_norm=False)
    for k, before in initial.state_dict().items():
        # the same two SGD steps on the same samples: equal up to float summation order, i.e.
        # far closer than the steps moved the weights
        moved = (reference[k] - before).abs().max()
        assert (rank0[k] - reference[k]).abs().max() <= 1e-3 * moved, k


def test_processes_that_see_different_checkpoints_stop_with_an_error(tmp_path, monkeypatch):
    """Multi-node without a shared results folder: rank 0 sees a checkpoint, rank 1 none. Each
    would run a different number of steps and hang; instead every rank stops with one line."""
    import bpnet.train.distributed as distributed

    model = tiny_model.build_model(load_experiment_spec(None).model, load_pose_config())
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 3), model, epoch=3, step=9)

    def gather(out, value):  # what rank 1, on a machine without the folder, would report
        out[:] = [value, None]

    monkeypatch.setattr(distributed.torch_dist, "all_gather_object", gather)
    dist = distributed.DistInfo(rank=0, world_size=2)
    with pytest.raises(
        BpnetError, match=re.escape("rank 0: model_epoch_003.pth, rank 1: none")
    ) as err:
        trainer.resume_point(tmp_path, dist)
    assert "\n" not in str(err.value) and "shares" in str(err.value)

    def agree(out, value):  # a shared folder: both ranks see the same checkpoint
        out[:] = [value, value]

    monkeypatch.setattr(distributed.torch_dist, "all_gather_object", agree)
    assert trainer.resume_point(tmp_path, dist) == ckpt.checkpoint_path(tmp_path, 3)


def test_tensorboard_asked_for_but_missing_is_one_line(tiny_coco, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import -> ImportError
    spec = write_spec(tmp_path / "spec.yaml", tiny_coco, log_tensorboard=True)
    assert main(["train", "-e", str(spec), "-r", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'bpnet[tensorboard]'" in err
    assert not (tmp_path / "out").exists()  # checked before any work


def test_a_busy_cpu_gets_a_note():
    assert trainer.busy_cpu_note(2, load=0.3, cores=2) == ""
    assert trainer.busy_cpu_note(1, load=6.0, cores=2) == ""  # one thread does not collapse
    note = trainer.busy_cpu_note(2, load=6.0, cores=2)
    assert "load 6.0 on 2 cores" in note and "OMP_NUM_THREADS=1" in note


@pytest.mark.parametrize(
    "content", [b"hello world\n", bytes(range(256)) * 7, b"\x80\x02}q\x00."], ids=str
)
def test_any_file_named_pth_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(BpnetError, match=r"model\.pth: (not a readable|not a bpnet) checkpoint"):
        ckpt.load_checkpoint(path)


def test_decoupled_regularization_shrinks_after_the_step(tiny_coco, tmp_path):
    """Under Adam an L1 term in the loss moves a weight by at most ~lr a step; decoupled, it
    is SGD's soft threshold of lr x factor, so a large factor zeroes weights exactly."""
    zeros = {}
    for mode in ("loss", "decoupled"):
        spec = write_spec(tmp_path / f"{mode}.yaml", tiny_coco, num_epoch=1,
                          validation_every_n_epoch=0)  # fmt: skip
        run_cli(["train", "-e", str(spec), "-r", str(tmp_path / mode), "-o",
                 "model.kernel_regularization_factor=500", "-o",
                 f"model.regularization_mode={mode}"])  # fmt: skip
        state = weights(tmp_path / mode / "model_epoch_001.pth")
        kernels = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 4]
        zeros[mode] = sum(int((k == 0).sum()) for k in kernels) / sum(k.numel() for k in kernels)
    assert zeros["loss"] < 0.01
    assert zeros["decoupled"] > 0.5
