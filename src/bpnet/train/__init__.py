"""Training: the loop (:mod:`bpnet.train.trainer`), LR schedules, parameter groups, checkpoints,
data parallelism.

Only the light modules are imported here, so that ``bpnet.models`` can read checkpoints
(:func:`load_checkpoint`) without importing the trainer, which imports ``bpnet.models``.
"""

from bpnet.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from bpnet.train.schedules import build_scheduler, lr_at

__all__ = ["build_scheduler", "latest_checkpoint", "load_checkpoint", "lr_at", "save_checkpoint"]
