"""Training losses: masked (focal) L2 on every stage's maps, and kernel regularisation."""

from bpnet.loss.losses import (
    focal_weight,
    masked_l2,
    pose_loss,
    regularization,
    shrink_weights,
    weight_layers,
)

__all__ = [
    "focal_weight",
    "masked_l2",
    "pose_loss",
    "regularization",
    "shrink_weights",
    "weight_layers",
]
