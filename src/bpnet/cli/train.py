"""``bpnet train``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bpnet.cli.options import add_command, add_experiment_spec, add_key, add_results_dir, fmt_ap


def add_parsers(commands) -> None:
    train = add_command(
        commands,
        "train",
        _train,
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


def _train(args: argparse.Namespace) -> int:
    from bpnet.config import load_experiment_spec
    from bpnet.train.distributed import launch, needs_launch
    from bpnet.train.trainer import train

    spec = load_experiment_spec(args.spec, args.overrides)  # a bad spec fails once, here
    if needs_launch(args.gpus, args.nodes):
        # the same command again, once per process, under torchrun (which sets LOCAL_RANK)
        argv = ["train", "-e", str(args.spec), "-r", str(args.results_dir)]
        argv += [f"--override={item}" for item in args.overrides]
        argv += ["-d", str(args.root)] if args.root is not None else []
        argv += [f"--key={args.key}"] if args.key is not None else []
        return launch(
            argv,
            nproc_per_node=args.gpus,
            nnodes=args.nodes,
            node_rank=args.node_rank,
            master_addr=args.master_addr,
            master_port=args.master_port,
        )
    summary = train(spec, args.results_dir, root=args.root, spec_path=args.spec, key=args.key)
    if summary["rank"] == 0 and summary["validation"] is not None:
        print(f"last validation: AP {fmt_ap(summary['validation'].get('AP'))}")
    return 0
