"""Schedules as pure functions of the training step.

Teacher forcing (scheduled sampling, Bengio et al. 2015, section 2.4): the probability
eps_i of feeding the gold previous token at step i decays during training, so the model
learns to continue from its own predictions (the exposure bias of pure teacher forcing).

    constant         eps_i = eps_0
    linear           eps_i = max(eps_min, eps_0 - c i)
    exponential      eps_i = eps_0 * k^i                         (k < 1)
    inverse_sigmoid  eps_i = eps_0 * k / (k + exp(i / k))         (k >= 1)

Learning rate, as a factor of the configured lr:

    constant      1
    warmup_decay  i / w for i < w, then sqrt(w / i)   (linear warmup, inverse-sqrt decay)
    plateau       handled by torch's ReduceLROnPlateau on the validation metric
"""

from __future__ import annotations

import math

from seqlab.config import TrainConfig


def teacher_forcing_ratio(cfg: TrainConfig, step: int) -> float:
    """The probability of feeding the gold token at training step `step` (0-based)."""
    eps0, kind = cfg.teacher_forcing, cfg.teacher_forcing_schedule
    if kind == "constant":
        return eps0
    if kind == "linear":
        return max(cfg.teacher_forcing_min, eps0 - cfg.teacher_forcing_decay * step)
    if kind == "exponential":
        return eps0 * (1.0 - cfg.teacher_forcing_decay) ** step
    if kind == "inverse_sigmoid":
        k = cfg.teacher_forcing_k
        return eps0 * k / (k + math.exp(min(step / k, 700.0)))
    raise ValueError(f"unknown teacher forcing schedule {kind!r}")


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of cfg.lr at optimizer step `step` (1-based) for the step-driven schedules."""
    if cfg.lr_schedule == "warmup_decay":
        w = max(1, cfg.lr_warmup_steps)
        return step / w if step < w else math.sqrt(w / step)
    return 1.0
