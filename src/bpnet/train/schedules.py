"""Learning-rate schedules as functions of training progress (TAO's definitions).

``progress`` is the fraction of all training steps done: ``step / total_steps`` in [0, 1].

``soft_start_annealing`` (TAO's ``SoftStartAnnealingLearningRateScheduler``)::

    lr
    base |        ______________
         |       /              \\
         |      /                 \\          exponential in between: a straight line on a
    min  |_____/                     \\___    log-lr axis
         0   soft_start        annealing   1   progress

It starts at ``min_learning_rate``, rises exponentially to ``base_learning_rate`` at
``soft_start``, holds, and from ``annealing`` decays exponentially back to the minimum at the
end: ``lr = min * (base / min) ** t`` with ``t`` going 0 -> 1 -> 1 -> 0. With a minimum of 0
the interpolation is linear instead (a logarithm of 0 does not exist).

``exponential_decay`` (TAO's ``BpNetExponentialDecayLRSchedule``, continuous):
``base * decay_rate ** (epoch / decay_epochs)``, never below the minimum. ``constant``: base.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from bpnet.config.spec import LearningRateSchedule


def lr_at(schedule: LearningRateSchedule, progress: float, *, num_epochs: float = 1.0) -> float:
    """The learning rate at a point of training.

    Args:
        schedule: the spec's ``optimizer.learning_rate_schedule``.
        progress: fraction of all steps done, clipped to [0, 1].
        num_epochs: epochs of the whole run (``exponential_decay`` counts in epochs).

    Returns:
        The learning rate (before stage-wise multipliers).

    Example:
        >>> s = LearningRateSchedule(base_learning_rate=1e-3, min_learning_rate=1e-6)
        >>> lr_at(s, 0.0), lr_at(s, 0.3), lr_at(s, 1.0)
        (1e-06, 0.001, 1e-06)
    """
    base, low = schedule.base_learning_rate, schedule.min_learning_rate
    progress = min(max(progress, 0.0), 1.0)
    if schedule.schedule == "constant":
        return base
    if schedule.schedule == "exponential_decay":
        epoch = progress * num_epochs
        return max(low, base * schedule.decay_rate ** (epoch / schedule.decay_epochs))
    # TAO's phases: the comparisons also keep soft_start = 0 and annealing = 1 free of 0 / 0
    if progress < schedule.soft_start:
        t = progress / schedule.soft_start
    elif progress > schedule.annealing:
        t = (1.0 - progress) / (1.0 - schedule.annealing)
    else:
        return base
    if low <= 0.0:
        return base * t
    return low * (base / low) ** t


def build_scheduler(
    optimizer: Optimizer,
    schedule: LearningRateSchedule,
    *,
    total_steps: int,
    steps_per_epoch: int,
) -> LambdaLR:
    """A LambdaLR that sets every group's lr to ``lr_at(step / total_steps) * lr_mult``.

    Each group's initial ``lr`` must be ``base_learning_rate * lr_mult`` (what
    :func:`bpnet.train.optim.build_optimizer` makes); call ``step()`` once per optimiser step.
    The state (``state_dict``) is the step count, so a resumed run continues the same curve.
    """
    base = schedule.base_learning_rate
    num_epochs = total_steps / max(steps_per_epoch, 1)

    def factor(step: int) -> float:
        return lr_at(schedule, step / max(total_steps, 1), num_epochs=num_epochs) / base

    return LambdaLR(optimizer, factor)


__all__ = ["build_scheduler", "lr_at"]
