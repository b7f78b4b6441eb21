"""Training: the loop (:mod:`bpnet.train.trainer`), LR schedules, parameter groups, transfer
learning and distillation, data parallelism. Checkpoints are the models' own file format
(:mod:`bpnet.models.checkpoint`).
"""

from bpnet.train.schedules import build_scheduler, lr_at

__all__ = ["build_scheduler", "lr_at"]
