"""Schedules are pure functions of the step: checked against their formulas by hand."""

import math

import pytest

from seqlab.config import TrainConfig
from seqlab.schedules import lr_factor, teacher_forcing_ratio


def test_teacher_forcing_schedules():
    c = TrainConfig(teacher_forcing=1.0)
    assert teacher_forcing_ratio(c, 10_000) == 1.0
    lin = TrainConfig(teacher_forcing_schedule="linear", teacher_forcing_decay=1e-3,
                      teacher_forcing_min=0.25)
    assert [teacher_forcing_ratio(lin, s) for s in (0, 500, 1000)] == pytest.approx([1, 0.5, 0.25])
    exp = TrainConfig(teacher_forcing_schedule="exponential", teacher_forcing_decay=0.01)
    assert teacher_forcing_ratio(exp, 100) == pytest.approx(0.99**100)
    sig = TrainConfig(teacher_forcing_schedule="inverse_sigmoid", teacher_forcing_k=100.0)
    assert teacher_forcing_ratio(sig, 0) == pytest.approx(100 / 101)
    assert teacher_forcing_ratio(sig, 500) == pytest.approx(100 / (100 + math.exp(5)))
    assert teacher_forcing_ratio(sig, 10**9) == pytest.approx(0.0)  # no overflow
    for cfg in (lin, exp, sig):  # never increases
        values = [teacher_forcing_ratio(cfg, s) for s in range(0, 5000, 50)]
        assert values == sorted(values, reverse=True)


def test_lr_warmup_then_inverse_sqrt_decay():
    c = TrainConfig(lr_schedule="warmup_decay", lr_warmup_steps=100)
    assert lr_factor(c, 1) == pytest.approx(0.01)
    assert lr_factor(c, 50) == pytest.approx(0.5)
    assert lr_factor(c, 100) == pytest.approx(1.0)
    assert lr_factor(c, 400) == pytest.approx(0.5)
    assert lr_factor(TrainConfig(), 12345) == 1.0
