"""The training loop's mechanics take effect in a run: tiny runs through `seqlab.train.train`,
with assertions on what must differ.

    loss         logged train_loss = sum over real targets of the token loss / real targets,
                 token loss = (1 - eps) (-log p_y) + eps mean_v(-log p_v)   (label smoothing)
    clipping     SGD, one step:  ||w1 - w0|| = eta min(c, ||g||)
    warmup_decay lr at step k = lr k / w  (k < w),  lr sqrt(w / k)  (k >= w)
    plateau      lr *= factor after patience + 1 non-improving validations, floored at lr_min
    early stop   the run stops at the (patience + 1)-th non-improving validation in a row
    best.pt      the checkpoint of the best validation; last.pt the last step

The spy wraps `build_model` and `collate` as the seq2seq problem calls them: it keeps the model and,
at every step, the batch and the weights before that step's update. Validation is scripted
(the problem's `validate` returns given metrics) where the test needs "no improvement" on cue.
"""

import copy
import json
import math

import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import seqlab.problems.seq2seq as train_module
from seqlab.checkpoint import load_checkpoint
from seqlab.config import config_from_dict
from seqlab.train import train
from seqlab.vocab import PAD

_BUILD_MODEL, _COLLATE = train_module.build_model, train_module.collate


def _config(**sections):
    """Reverse task, 12 training pairs in one batch (so it holds padding), tiny model, plain
    SGD without clipping or dropout, a log line every step, scripted stopping off."""
    raw = {
        "data": {"synthetic": "reverse", "synthetic_train_size": 12, "synthetic_eval_size": 4},
        "tokenizer": {"kind": "word"},
        "model": {"embedding_size": 8, "hidden_size": 16, "dropout": 0.0,
                  "attention": "general"},
        "train": {"optimizer": "sgd", "lr": 0.5, "clip_norm": None, "batch_tokens": 1000,
                  "max_steps": 2, "max_epochs": 1000, "log_every": 1, "valid_every": 1000,
                  "valid_samples": 0, "early_stopping_metric": "loss", "patience": None},
        "search": {"batch_size": 16},
    }
    for name, values in sections.items():
        raw[name].update(values)
    return config_from_dict(raw)


class _Spy:
    """Records the model, and per training step the batch and the weights before the step."""

    def __init__(self, monkeypatch):
        self.model, self.batches, self.before = None, [], []

        def build_model(*args, **kwargs):
            self.model = _BUILD_MODEL(*args, **kwargs)
            return self.model

        def collate(*args, **kwargs):
            batch = _COLLATE(*args, **kwargs)
            self.batches.append(batch)
            self.before.append(_weights(self.model))
            return batch

        monkeypatch.setattr(train_module, "build_model", build_model)
        monkeypatch.setattr(train_module, "collate", collate)

    def after(self, k: int) -> torch.Tensor:
        """Weights after step k (1-based)."""
        return self.before[k] if k < len(self.before) else _weights(self.model)


def _weights(model) -> torch.Tensor:
    return parameters_to_vector(model.parameters()).detach().clone()


def _with_weights(model, weights: torch.Tensor):
    """A copy of `model` holding the flat parameter vector `weights`."""
    model = copy.deepcopy(model)
    vector_to_parameters(weights, model.parameters())
    return model


def _run(tmp_path, cfg, name="run"):
    """Train; -> (run dir, training log lines, validation log lines)."""
    out = tmp_path / name
    train(cfg, out, quiet=True)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return (out, [x for x in lines if "train_loss" in x],
            [x for x in lines if any(k.startswith("valid_") for k in x)])


def _token_losses(model, batch, eps: float) -> torch.Tensor:
    """(B, T) token loss (1 - eps) (-log p_y) + eps mean_v(-log p_v) at EVERY position (padding
    included), from a full teacher-forced pass computed here, not by the loop."""
    with torch.no_grad():
        logits, _ = model.teacher_forced(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, V)
        logp = logits.log_softmax(-1)
        nll = -logp.gather(-1, batch.tgt_out.unsqueeze(-1)).squeeze(-1)  # (B, T)
        return (1 - eps) * nll + eps * -logp.mean(-1)


def _reference_grad(model, weights: torch.Tensor, batch, eps: float, real=None):
    """Flat gradient, at `weights`, of the mean token loss over `real` (default: the real
    targets; pass all-True to count the padding too)."""
    model = _with_weights(model, weights)
    real = batch.tgt_out != PAD if real is None else real
    logits, _ = model.teacher_forced(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, V)
    logp = logits.log_softmax(-1)
    nll = -logp.gather(-1, batch.tgt_out.unsqueeze(-1)).squeeze(-1)  # (B, T)
    ((1 - eps) * nll + eps * -logp.mean(-1))[real].mean().backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in model.parameters()])


def _script(monkeypatch, metric: str, values: list[float], model_snapshots: list | None = None):
    """Validation i returns values[i] (the last one repeated) for `metric`."""

    def scripted_validate(self, model):
        value = values[min(len(calls), len(values) - 1)]
        calls.append(value)
        if model_snapshots is not None:
            model_snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        metrics = {"loss": 1.0, "ppl": math.e, "bleu": 1.0, "chrf": 1.0, "exact_match": 0.0}
        return {**metrics, metric: value}

    calls: list[float] = []
    monkeypatch.setattr(train_module.Seq2SeqProblem, "validate", scripted_validate)
    return calls


# ------------------------------------------------------------------------------ the loss
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_logged_loss_is_the_masked_token_cross_entropy(tmp_path, monkeypatch, eps):
    """Each step's loss, recomputed here from the weights before that step and its batch.
    By the last step (Adam has sharpened the outputs) summing padding, averaging over B*T,
    or the other eps (label smoothing dropped, or applied unasked) all miss it by > 1%."""
    spy = _Spy(monkeypatch)
    cfg = _config(train={"optimizer": "adam", "lr": 0.05, "max_steps": 4,
                         "label_smoothing": eps})
    _, logs, _ = _run(tmp_path, cfg)
    assert [x["step"] for x in logs] == [1, 2, 3, 4]
    for log, batch, before in zip(logs, spy.batches, spy.before, strict=True):
        model = _with_weights(spy.model, before)
        real = batch.tgt_out != PAD
        assert not real.all()  # the batch holds padding to ignore
        token = _token_losses(model, batch, eps)
        expected = float(token[real].sum() / real.sum())
        assert log["train_loss"] == pytest.approx(expected, rel=1e-5)
    wrong = [float(token.sum() / real.sum()), float(token.mean()),  # padding counted
             float(_token_losses(model, batch, 0.1 - eps)[real].mean())]  # the other eps
    assert all(abs(w - expected) > 0.01 * expected for w in wrong), (expected, wrong)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_sgd_step_follows_the_gradient_of_the_masked_mean_token_loss(tmp_path, monkeypatch,
                                                                     eps):
    """SGD, one step: w1 - w0 = -eta grad, the gradient recomputed here. Its normalization
    (per real token), the padding and label smoothing all show in the update itself, not only
    in the logged loss; each wrong variant is > 5% away."""
    eta = 0.5
    spy = _Spy(monkeypatch)
    _run(tmp_path, _config(train={"lr": eta, "max_steps": 1, "label_smoothing": eps}))
    batch, w0 = spy.batches[0], spy.before[0]
    step = spy.after(1) - w0
    grad = _reference_grad(spy.model, w0, batch, eps)
    torch.testing.assert_close(step, -eta * grad, rtol=1e-4, atol=1e-6)
    real = batch.tgt_out != PAD
    wrong = [grad * real.sum() / real.numel(),  # averaged over B*T
             _reference_grad(spy.model, w0, batch, eps, torch.ones_like(real)),  # padding
             _reference_grad(spy.model, w0, batch, 0.1 - eps)]  # the other eps
    assert all((w - grad).norm() > 0.05 * grad.norm() for w in wrong)


def test_padded_positions_never_reach_the_loss(tmp_path, monkeypatch):
    """Noise added to the decoder's attentional vectors a_t at padded target positions leaves
    the loss and the trained weights exactly as they were, and the loss is taken over
    exactly the real positions, against their targets (not over every position)."""
    spy = _Spy(monkeypatch)
    cfg = _config(train={"max_steps": 2})
    _, clean_logs, _ = _run(tmp_path, cfg, "clean")
    clean = _weights(spy.model)

    spy = _Spy(monkeypatch)
    noise, steps, scored = torch.Generator().manual_seed(0), [], []

    def garble(module, inputs, output):  # W_c [s_t; c_t], one step of the teacher-forced pass
        if not module.training:
            return output  # decoding (validation, final report): not the loss
        real = spy.batches[-1].tgt_out != PAD  # (B, T)
        t = len(steps) % real.shape[1]
        steps.append(t)
        junk = 50 * torch.randn(output.shape, generator=noise)
        return torch.where(real[:, t, None], output, output + junk)

    def build_model(*args, **kwargs):
        spy.model = _BUILD_MODEL(*args, **kwargs)
        spy.model.decoder.combine.register_forward_hook(garble)
        project_with_loss = spy.model.decoder.project_with_loss

        def scored_rows(a, targets, label_smoothing=0.0):
            if spy.model.training:  # not the final report's validation loss
                scored.append((a.shape[0], targets.clone()))
            return project_with_loss(a, targets, label_smoothing)

        spy.model.decoder.project_with_loss = scored_rows
        return spy.model

    monkeypatch.setattr(train_module, "build_model", build_model)
    _, logs, _ = _run(tmp_path, cfg, "garbled")
    assert len(scored) == 2  # one loss per step
    for (rows, targets), batch in zip(scored, spy.batches, strict=True):
        real = batch.tgt_out != PAD
        assert not real.all() and rows == int(real.sum())
        assert torch.equal(targets, batch.tgt_out[real])
    assert [x["train_loss"] for x in logs] == pytest.approx(
        [x["train_loss"] for x in clean_logs], rel=1e-6)
    torch.testing.assert_close(_weights(spy.model), clean, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ clipping
def test_clipping_scales_the_sgd_step_to_eta_times_clip_norm(tmp_path, monkeypatch):
    """SGD, no momentum, one step: ||w1 - w0|| = eta ||g|| unclipped (or with a huge clip),
    eta c with c < ||g||, and the clipped step points the same way."""
    eta = 0.5

    def one_step(name, clip):
        spy = _Spy(monkeypatch)
        _, logs, _ = _run(tmp_path, _config(train={"lr": eta, "max_steps": 1,
                                                   "clip_norm": clip}), name)
        return spy.after(1) - spy.before[0], logs[0]["grad_norm"]

    free, g = one_step("free", None)
    assert free.norm() == pytest.approx(eta * g, rel=1e-4)  # the logged norm is ||g||
    huge, _ = one_step("huge", 1e6)
    torch.testing.assert_close(huge, free, rtol=0, atol=1e-6)  # float32 w1 - w0: ~1e-7 off
    c = g / 4
    clipped, _ = one_step("clipped", c)
    assert clipped.norm() == pytest.approx(eta * c, rel=1e-4)
    torch.testing.assert_close(clipped, free * (c / g), rtol=1e-3, atol=1e-6)


# ------------------------------------------------------------------------------ lr schedules
def test_warmup_decay_sets_the_lr_each_step_uses(tmp_path, monkeypatch):
    """lr at step k (1-based) is lr k / w before w, lr sqrt(w / k) from w on: as logged, and
    as the SGD update shows (||w_k - w_{k-1}|| / ||g_k||)."""
    lr, w, steps = 0.4, 4, 7
    spy = _Spy(monkeypatch)
    cfg = _config(train={"lr": lr, "max_steps": steps, "lr_schedule": "warmup_decay",
                         "lr_warmup_steps": w})
    _, logs, _ = _run(tmp_path, cfg)
    expected = [lr * k / w if k < w else lr * math.sqrt(w / k) for k in range(1, steps + 1)]
    assert [x["lr"] for x in logs] == pytest.approx(expected, rel=1e-9)
    used = [float((spy.after(k) - spy.before[k - 1]).norm()) / logs[k - 1]["grad_norm"]
            for k in range(1, steps + 1)]
    assert used == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("metric,values", [
    ("loss", [5.0, 4.0, 4.0, 4.0, 4.0, 4.0, 3.0]),  # lower is better
    ("bleu", [10.0, 20.0, 20.0, 20.0, 20.0, 20.0, 30.0]),  # higher is better
])
def test_plateau_cuts_lr_after_patience_plus_one_bad_checks(tmp_path, monkeypatch, metric,
                                                            values):
    """Patience 2, factor 0.5, floor 0.03, a validation every step: checks 3-5 are bad, so
    step 6 runs at 0.05; check 6 is bad, 7 improves (count reset), 8-10 bad: step 11 runs at
    0.025 floored to 0.03."""
    _script(monkeypatch, metric, values)
    cfg = _config(train={"lr": 0.1, "max_steps": 12, "valid_every": 1, "lr_schedule": "plateau",
                         "lr_plateau_factor": 0.5, "lr_plateau_patience": 2, "lr_min": 0.03,
                         "early_stopping_metric": metric})
    _, logs, _ = _run(tmp_path, cfg)
    assert [x["lr"] for x in logs] == pytest.approx([0.1] * 5 + [0.05] * 5 + [0.03] * 2)


# ------------------------------------------------------------------------------ early stopping
@pytest.mark.parametrize("patience", [1, 3])
@pytest.mark.parametrize("metric,values", [
    ("loss", [3.0, 2.0, 1.0, 4.0]),  # best at check 3; read backwards, check 4 would improve
    ("bleu", [10.0, 20.0, 30.0, 5.0]),
    ("exact_match", [0.1, 0.2, 0.3, 0.05]),
])
def test_early_stopping_at_the_patience_plus_first_bad_check(tmp_path, monkeypatch, metric,
                                                             values, patience):
    """Validation every 2 steps; best at check 3, then no improvement: the run stops at check
    3 + patience + 1, i.e. step 2 (4 + patience)."""
    calls = _script(monkeypatch, metric, values)
    cfg = _config(train={"max_steps": 40, "valid_every": 2, "patience": patience,
                         "early_stopping_metric": metric})
    out, _, valid = _run(tmp_path, cfg)
    assert len(calls) == 4 + patience
    assert [x["step"] for x in valid] == list(range(2, 2 * (4 + patience) + 1, 2))
    assert load_checkpoint(out / "last.pt")["progress"]["step"] == 2 * (4 + patience)


def test_patience_null_never_stops_early(tmp_path, monkeypatch):
    calls = _script(monkeypatch, "loss", [1.0])  # never improves after the first check
    out, _, _ = _run(tmp_path, _config(train={"max_steps": 12, "valid_every": 1,
                                              "patience": None}))
    assert len(calls) == 12
    assert load_checkpoint(out / "last.pt")["progress"]["step"] == 12


@pytest.mark.parametrize("metric,perfect", [("exact_match", 1.0), ("bleu", 100.0)])
def test_a_perfect_score_stops_the_run(tmp_path, monkeypatch, metric, perfect):
    calls = _script(monkeypatch, metric, [0.5, perfect])
    out, _, _ = _run(tmp_path, _config(train={"max_steps": 12, "valid_every": 1,
                                              "patience": None,
                                              "early_stopping_metric": metric}))
    assert len(calls) == 2
    assert load_checkpoint(out / "last.pt")["progress"]["step"] == 2


# ------------------------------------------------------------------------------ checkpoints
def test_best_pt_is_the_best_validation_and_last_pt_the_last_step(tmp_path, monkeypatch):
    """Loss 3, 1, 2, 2, 2 at steps 2, 4, ..., 10: best.pt is step 4's weights, last.pt step 10's."""
    snapshots: list[dict] = []
    _script(monkeypatch, "loss", [3.0, 1.0, 2.0], snapshots)
    out, _, _ = _run(tmp_path, _config(train={"lr": 0.5, "max_steps": 10, "valid_every": 2}))
    assert len(snapshots) == 5
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert best["progress"]["step"] == 4
    assert best["progress"]["best"] == 1.0
    assert last["progress"]["step"] == 10
    for name, tensor in snapshots[1].items():
        torch.testing.assert_close(best["model"][name], tensor, rtol=0, atol=0, msg=name)
    for name, tensor in snapshots[-1].items():
        torch.testing.assert_close(last["model"][name], tensor, rtol=0, atol=0, msg=name)
    assert not torch.equal(snapshots[1]["decoder.out.weight"], snapshots[-1]["decoder.out.weight"])


def test_a_failing_validation_loses_no_training(tmp_path, monkeypatch):
    """The training state is saved before each validation: when validation fails (a bug, a
    full disk, a missing file) the run can resume from that step instead of starting over."""
    cfg = _config(train={"max_steps": 6, "valid_every": 3})
    validate = train_module.Seq2SeqProblem.validate

    def failing(self, model):
        raise RuntimeError("validation broke")

    monkeypatch.setattr(train_module.Seq2SeqProblem, "validate", failing)
    with pytest.raises(RuntimeError, match="validation broke"):
        train(cfg, tmp_path / "run", quiet=True)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved["progress"]["step"] == 3
    monkeypatch.setattr(train_module.Seq2SeqProblem, "validate", validate)
    result = train(cfg, tmp_path / "run", resume=True, quiet=True)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["progress"]["step"] == 6
    assert "valid" in result
