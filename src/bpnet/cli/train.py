"""``bpnet train``."""

from __future__ import annotations

from pathlib import Path

from bpnet.cli.options import add_command, add_experiment_spec, add_key, add_results_dir


def add_parsers(commands) -> None:
    train = add_command(
        commands,
        "train",
        "bpnet.train.trainer:train_command",
        help="train a model from an experiment spec (rerun the same command to resume)",
        description="Train the spec's model on dataloader.dataset_config.train_split. Writes "
        "experiment_spec.yaml, model_epoch_NNN.pth every checkpoint_n_epoch epochs, "
        "metrics.jsonl, loss_curve.png and validation/ (COCO AP every validation_every_n_epoch "
        "epochs) into RESULTS_DIR. Rerunning the same command resumes from the newest "
        "checkpoint there, with the result of an uninterrupted run.",
    )
    add_experiment_spec(train)
    add_results_dir(
        train,
        "folder for checkpoints, logs and the resolved spec (resumed from when it has checkpoints)",
    )
    train.add_argument(
        "-d",
        "--dataset",
        dest="root",
        type=Path,
        default=None,
        help="dataset root in the COCO layout; overrides dataloader.dataset_config.root_data_path",
    )
    train.add_argument(
        "--gpus",
        type=int,
        default=1,
        help="processes per node (one per GPU; N > 1 relaunches under torchrun, NCCL on GPUs, "
        "gloo on CPUs); default 1",
    )
    train.add_argument("--nodes", type=int, default=1, help="nodes (passed to torchrun)")
    train.add_argument("--node_rank", type=int, default=0, help="this node's rank (torchrun)")
    train.add_argument(
        "--master_addr", default="127.0.0.1", help="rendezvous host of node 0 (torchrun)"
    )
    train.add_argument("--master_port", type=int, default=29500, help="rendezvous port (torchrun)")
    add_key(train, "the checkpoints (resume with the same key)")
