"""LR schedules (TAO's shapes), the LambdaLR wrapper, and stage-wise parameter groups."""

import math

import numpy as np
import pytest
import torch

from bpnet.config import ExperimentSpec, from_dict
from bpnet.config.spec import LearningRateSchedule, ModelConfig, OptimizerConfig
from bpnet.errors import SpecError
from bpnet.pose import load_pose_config
from bpnet.train.optim import build_optimizer, parameter_groups, stage_of
from bpnet.train.schedules import build_scheduler, lr_at
from tiny_model import build_model

SOFT = LearningRateSchedule(
    base_learning_rate=1e-3, min_learning_rate=1e-7, soft_start=0.1, annealing=0.6
)


def curve(schedule, n=1001, **kwargs):
    progress = np.linspace(0, 1, n)
    return progress, np.array([lr_at(schedule, p, **kwargs) for p in progress])


def test_soft_start_annealing_shape():
    progress, lr = curve(SOFT)
    assert lr[0] == pytest.approx(1e-7) and lr[-1] == pytest.approx(1e-7)
    warm, hold, anneal = progress <= 0.1, (progress >= 0.1) & (progress <= 0.6), progress >= 0.6
    assert np.all(np.diff(lr[warm]) > 0)
    assert np.allclose(lr[hold], 1e-3)
    assert np.all(np.diff(lr[anneal]) < 0)
    # exponential pieces: log(lr) is a straight line in progress
    log = np.log(lr)
    assert np.allclose(np.diff(log[warm]), np.diff(log[warm])[0])
    assert np.allclose(np.diff(log[anneal]), np.diff(log[anneal])[0])
    assert lr_at(SOFT, 0.05) == pytest.approx(math.sqrt(1e-3 * 1e-7))  # halfway up, geometric


def test_soft_start_edge_settings():
    no_warmup = LearningRateSchedule(base_learning_rate=1e-3, soft_start=0.0, annealing=1.0)
    assert lr_at(no_warmup, 0.0) == lr_at(no_warmup, 1.0) == pytest.approx(1e-3)
    zero_min = LearningRateSchedule(base_learning_rate=1e-3, min_learning_rate=0.0)
    assert lr_at(zero_min, 0.0) == 0.0  # linear ramp from 0 when the minimum is 0
    assert lr_at(zero_min, 0.025) == pytest.approx(0.5e-3)
    assert lr_at(SOFT, -1.0) == lr_at(SOFT, 0.0) and lr_at(SOFT, 2.0) == lr_at(SOFT, 1.0)


def test_exponential_decay_and_constant():
    decay = LearningRateSchedule(
        schedule="exponential_decay", base_learning_rate=1.0, min_learning_rate=1e-3,
        decay_rate=0.1, decay_epochs=10,
    )  # fmt: skip
    assert lr_at(decay, 0.0, num_epochs=100) == 1.0
    assert lr_at(decay, 0.1, num_epochs=100) == pytest.approx(0.1)  # epoch 10
    assert lr_at(decay, 0.15, num_epochs=100) == pytest.approx(10**-1.5)
    assert lr_at(decay, 1.0, num_epochs=100) == pytest.approx(1e-3)  # floored at the minimum
    constant = LearningRateSchedule(schedule="constant", base_learning_rate=0.5)
    assert {lr_at(constant, p) for p in (0.0, 0.5, 1.0)} == {0.5}


def test_spec_rejects_warmup_after_annealing():
    with pytest.raises(SpecError, match="soft_start"):
        from_dict(ExperimentSpec, {"optimizer": {"learning_rate_schedule": {
            "soft_start": 0.7, "annealing": 0.5}}})  # fmt: skip


def tiny():
    return build_model(ModelConfig(stages=3), load_pose_config())


def test_stage_rule_from_names():
    assert stage_of("backbone.0.weight") == 0
    assert stage_of("stages.0.heat.weight") == 1
    assert stage_of("module.stages.2.trunk.0.bias") == 3
    assert stage_of("stage1.paf_branch.conv.weight") == 1
    assert stage_of("stage_4.out.weight") == 4
    assert stage_of("backstage.conv.weight") == 0


def test_stagewise_groups_follow_tao_multipliers():
    model = tiny()
    groups = parameter_groups(model, base_lr=0.01, weight_decay=5e-4)
    mult = {id(p): g["lr_mult"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert mult[id(named["backbone.0.weight"])] == 1.0
    assert mult[id(named["backbone.0.bias"])] == 2.0
    assert mult[id(named["backbone.1.weight"])] == 1.0  # batch norm: 1x, no decay
    assert decay[id(named["backbone.1.weight"])] == 0.0
    assert mult[id(named["stages.0.heat.weight"])] == 1.0
    assert mult[id(named["stages.1.paf.weight"])] == 4.0
    assert mult[id(named["stages.2.trunk.0.bias"])] == 8.0
    assert decay[id(named["stages.2.trunk.0.weight"])] == 5e-4
    assert decay[id(named["stages.2.trunk.0.bias"])] == 0.0
    assert all(g["lr"] == pytest.approx(0.01 * g["lr_mult"]) for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(named)
    flat = parameter_groups(model, base_lr=0.01, stagewise=False)
    assert [g["lr_mult"] for g in flat] == [1.0]


def test_scheduler_sets_every_group_and_resumes():
    model = tiny()
    config = OptimizerConfig(type="sgd", learning_rate_schedule=SOFT, use_nesterov=True)
    optimizer = build_optimizer(config, model, stagewise=True)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]
    scheduler = build_scheduler(optimizer, SOFT, total_steps=100, steps_per_epoch=10)
    for step in range(37):
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(lr_at(SOFT, step / 100) * group["lr_mult"])
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    fresh = build_optimizer(config, model, stagewise=True)
    resumed = build_scheduler(fresh, SOFT, total_steps=100, steps_per_epoch=10)
    fresh.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(state)
    optimizer.step(), scheduler.step(), fresh.step(), resumed.step()
    assert [g["lr"] for g in fresh.param_groups] == [g["lr"] for g in optimizer.param_groups]


def test_optimizer_choices():
    model = tiny()
    adam = build_optimizer(OptimizerConfig(type="adam"), model, stagewise=False)
    assert isinstance(adam, torch.optim.Adam)
    with pytest.raises(SpecError, match="momentum"):
        build_optimizer(OptimizerConfig(momentum=0.0, use_nesterov=True), model, stagewise=True)
