"""Training: one readable loop for every problem shape.

    for each batch:  summed loss, count = problem.loss(model, batch, step)  (the model's own)
                     backward on summed / count; clip the gradient norm; optimizer step;
                     lr schedule step (a step whose loss or gradient is nan/inf is skipped,
                     and logged)
    every N steps:   problem.validate(model) (BLEU, accuracy, nats per char, ...),
                     checkpoint (last, and best on the chosen metric), early stopping

The loop never learns which problem it trains: data, model, loss and metrics come through
the protocol of `seqlab.problems`.

The run directory (see `seqlab.rundir`) holds `config.yaml` (resolved), `metrics.jsonl` (one
JSON object per log line), `last.pt` and `best.pt`. `train(..., resume=True)` continues a run
exactly where its last checkpoint left it: same batches, same RNG streams, same schedules.
SIGINT (Ctrl-C) or SIGTERM during training saves a resumable `last.pt` at the current step and
raises `TrainingInterrupted`; a second signal stops at once (the checkpoint on disk is then the
previous one: checkpoints are written atomically).

Distributed: launched by `torchrun --nproc_per_node N -m seqlab train ...`, every process
trains on its share of the batches under DistributedDataParallel; rank 0 validates, logs
and writes checkpoints. Each rank's summed loss is divided by the step's global count
(times N, which DDP's gradient average divides out), so a step's gradient is that of the
mean loss over all ranks' batches together, as one process would compute it.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from seqlab.checkpoint import load_checkpoint, save_checkpoint
from seqlab.config import Config, DataConfig, save_config
from seqlab.device import describe_machine, pick_device
from seqlab.errors import RunError, TrainingDiverged, TrainingInterrupted
from seqlab.precision import autocast, resolve_precision
from seqlab.problems import build_problem
from seqlab.rundir import CONFIG, RESULTS, RunDir
from seqlab.schedules import lr_factor

__all__ = ["RunError", "TrainingInterrupted", "TrainingDiverged", "train"]

# parts of last.pt (best.pt and snapshots hold checkpoint.FOR_PREDICTION only)
RESUMABLE = ("model", "optimizer", "progress", "rng", "config", "problem", "train_state")
PERFECT = {"bleu": 100.0, "chrf": 100.0, "exact_match": 1.0, "accuracy": 1.0,
           "macro_f1": 1.0}  # reached on validation: nothing left to learn, stop


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float | None = None
    bad_checks: int = 0
    elapsed: float = 0.0  # training seconds, summed over resumed sessions
    skipped: int = 0  # steps skipped for a non-finite loss or gradient, over the whole run
    snapshots: list | None = None  # [step, valid metric] of the step-N.pt files kept

    def state_dict(self) -> dict:
        return dict(self.__dict__)


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


class _Console:
    """What a person sees: a progress bar on a terminal, or a progress line every `every`
    steps when stderr is a file or a pipe (no carriage returns in a log file)."""

    def __init__(self, enabled: bool, quiet: bool, every: int):
        self.enabled = enabled and not quiet
        self.tty = self.enabled and sys.stderr.isatty()
        self.every, self.bar = every, None

    def say(self, text: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)

    def start(self, step: int, total: int) -> None:
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True,
                            file=sys.stderr)

    def update(self, step: int, total: int, left: float | None, fields: dict | None) -> None:
        """total: the step at which the run is now expected to end; left: seconds to go."""
        if self.bar is not None:
            self.bar.total = total
            if fields:
                self.bar.set_postfix(fields, refresh=False)
            self.bar.update(step - self.bar.n)
        elif self.enabled and fields is not None and step % self.every == 0:
            eta = "" if left is None else f", about {_clock(left)} left"
            self.say(f"step {step}/{total} " + " ".join(f"{k} {v}" for k, v in fields.items())
                     + eta)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class _Signals:
    """While active, SIGINT and SIGTERM are remembered (the loop stops after the current step
    and saves); a second one raises KeyboardInterrupt at once."""

    def __init__(self):
        self.received: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> _Signals:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def default_run_dir(config: Config) -> Path:
    """runs/<generated dataset name> or runs/<folder of the training files>."""
    d = config.data
    if d.train is None and d.synthetic is None:  # a built-in series of problem forecast
        return Path("runs") / f"forecast_{config.forecast.series}"
    return Path("runs") / (d.synthetic or Path(d.path(d.train)).resolve().parent.name or "run")


def train(config: Config, out_dir: str | Path | None = None, *, resume: bool = False,
          quiet: bool = False) -> dict:
    """Train a model as configured into `out_dir` (default: `default_run_dir`); returns the
    final validation (and test) metrics of the best checkpoint.

    Everything that can be wrong with the run directory, the device and the data is found
    before the first step; a run that fails before its first checkpoint leaves nothing behind.
    Raises TrainingInterrupted (after saving last.pt) on SIGINT / SIGTERM."""
    rank, world, local_rank = _dist_info()
    run = RunDir(Path(out_dir) if out_dir is not None else default_run_dir(config),
                 resume=resume, writer=rank == 0)
    run.check()
    if resume and not run.last.exists():
        raise RunError(f"{run.path}: nothing to resume (no {run.last.name}); start it without "
                       "--resume")
    device = _device(config, world, local_rank)  # an unknown device fails here, before data
    run.open()
    try:
        return _train(config, run, device, rank, world, local_rank, quiet)
    except BaseException:
        run.discard()
        raise


def _device(config: Config, world: int, local_rank: int) -> torch.device:
    tc = config.train
    if world > 1:
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() and tc.device != "cpu" else "gloo"
        dist.init_process_group(backend)
        return torch.device(f"cuda:{local_rank}") if backend == "nccl" else torch.device("cpu")
    return pick_device(tc.device)


def _train(config: Config, run: RunDir, device: torch.device, rank: int, world: int,
           local_rank: int, quiet: bool) -> dict:
    tc = config.train
    console = _Console(enabled=rank == 0, quiet=quiet, every=tc.log_every)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    random.seed(tc.seed)

    # text -> tokens -> ids; the model
    problem = build_problem(config)
    checkpoint = load_checkpoint(run.last, require=RESUMABLE) if run.resume else None
    if checkpoint:
        _check_resumable(config, checkpoint["config"], run.path)
    console.say(problem.prepare(checkpoint["problem"] if checkpoint else None))
    model = problem.build_model().to(device)
    n_params = sum(p.numel() for p in model.parameters())
    precision, why = resolve_precision(tc.precision, device)
    console.say(f"model: {n_params:,} parameters; {problem.describe_model(model)}; "
                f"device {device}, {precision}"
                + ("" if tc.precision == "float32" else f" ({tc.precision}: {why})"))
    optimizer, adagrad, clipped = _optimizers(model, tc)
    key, higher_is_better = config.stopping_metric, config.higher_is_better
    plateau = None
    if tc.lr_schedule == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max" if higher_is_better else "min", factor=tc.lr_plateau_factor,
            patience=tc.lr_plateau_patience, min_lr=tc.lr_min)
    progress = Progress(snapshots=[])
    if checkpoint:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if adagrad is not None:
            adagrad.load_state_dict(checkpoint["adagrad"])
        if plateau is not None and checkpoint.get("plateau"):
            plateau.load_state_dict(checkpoint["plateau"])
        progress = Progress(**{"snapshots": [], **checkpoint["progress"]})
        torch.set_rng_state(checkpoint["rng"]["torch"])
        problem.load_train_state(checkpoint["train_state"])
        console.say(f"resuming {run.path} at step {progress.step} (epoch {progress.epoch + 1})")
    elif rank == 0:
        save_config(config, run.created(run.path / CONFIG))
    run.start_log(progress.step if checkpoint else None)

    ddp_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(model, device_ids=[local_rank]
                                            if device.type == "cuda" else None)
    steps_per_epoch = len(problem.batches(0, rank, world))
    total_steps = min(tc.max_steps or math.inf, tc.max_epochs * steps_per_epoch)
    budget = tc.max_minutes * 60 if tc.max_minutes else math.inf

    def save(path: Path, resumable: bool = True) -> None:
        """last.pt can resume the run; best.pt and snapshots hold what prediction needs."""
        state = {"model": model.state_dict(), "progress": progress.state_dict(),
                 "config": config.to_dict(), "problem": problem.state_dict()}
        if resumable:
            state.update(optimizer=optimizer.state_dict(),
                         adagrad=adagrad.state_dict() if adagrad else None,
                         plateau=plateau.state_dict() if plateau else None,
                         rng={"torch": torch.get_rng_state()},
                         train_state=problem.train_state())
        save_checkpoint(state, path)

    checked_at = [progress.step]
    stop_reason: list[str] = []

    def checkpoint_and_check() -> bool:
        """Validate, save, decide on early stopping; True means stop."""
        stop = False
        checked_at[0] = progress.step
        if rank == 0:
            save(run.last)  # the training first: a failing validation then loses none of it
            model.eval()
            with torch.no_grad():
                metrics = problem.validate(model)
            value = metrics.get(key)
            if value is not None:
                better = progress.best is None or (
                    value > progress.best if higher_is_better else value < progress.best)
                if better:
                    progress.best, progress.bad_checks = value, 0
                else:
                    progress.bad_checks += 1
                if plateau is not None:
                    plateau.step(value)
                metrics.update(best=progress.best, improved=better)
                if tc.patience is not None and progress.bad_checks > tc.patience:
                    stop_reason.append(f"early stopping: valid {key} did not improve in "
                                       f"{progress.bad_checks} validations (patience "
                                       f"{tc.patience})")
                    stop = True
                if value >= PERFECT.get(key, math.inf):
                    stop_reason.append(f"valid {key} is perfect ({value:g}): nothing left to "
                                       "learn")
                    stop = True
            if tc.keep_last or tc.keep_best:
                save(run.snapshot(progress.step), resumable=False)
                progress.snapshots = run.prune_snapshots(
                    [*progress.snapshots, [progress.step, value]], tc.keep_last, tc.keep_best,
                    higher_is_better)
            save(run.last)
            if value is None or metrics["improved"]:
                save(run.best, resumable=False)
            run.record(dict(step=progress.step, epoch=progress.epoch + 1,
                            **{f"valid_{k}": v for k, v in metrics.items() if k != "samples"},
                            elapsed=round(progress.elapsed, 1)))
            _report_validation(console, progress, metrics, key, problem)
            if hasattr(problem, "pictures"):
                with torch.no_grad():
                    problem.pictures(model, run.path, progress.step)
        return _any([stop], world)[0]

    def expected_end(pace: float | None) -> int:
        """The step at which the run will end: the step limit, or sooner if the wall-clock
        budget runs out first at this session's pace (steps per second)."""
        if budget == math.inf or not pace:
            return int(total_steps)  # finite, as max_epochs is
        by_clock = progress.step + pace * max(0.0, budget - progress.elapsed)
        return int(min(total_steps, max(progress.step, by_clock)))

    console.start(progress.step, expected_end(None))
    model.train()
    window_count, window_loss, window_start = 0, 0.0, time.time()
    session_start = time.time() - progress.elapsed  # as if the run had never paused
    wall_start, first_step = time.time(), progress.step  # this session's own pace
    nonfinite_in_a_row = 0
    stop = progress.step >= total_steps
    if stop:
        stop_reason.append(f"the step limit ({total_steps}) was already reached")
    with _Signals() as signals:
        while not stop and progress.epoch < tc.max_epochs:
            for i, key_of_batch in enumerate(problem.batches(progress.epoch, rank, world)):
                if i < progress.batch_in_epoch:
                    continue  # resumed mid-epoch: these batches were already trained on
                batch = problem.batch(key_of_batch).to(device)
                if tc.lr_schedule == "warmup_decay":
                    for group in optimizer.param_groups:
                        group["lr"] = tc.lr * lr_factor(tc, progress.step + 1)
                with autocast(precision, device):
                    summed, count = problem.loss(ddp_model, batch, progress.step)
                loss = summed * world / _total(count, world)
                optimizer.zero_grad(set_to_none=True)
                if adagrad is not None:
                    adagrad.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = clip_gradients(clipped, tc.clip_norm)
                progress.batch_in_epoch = i + 1
                finite = bool(torch.isfinite(summed)) and bool(torch.isfinite(grad_norm))
                nonfinite, out_of_time, interrupted = _any(
                    [not finite, time.time() - session_start >= budget,
                     signals.received is not None], world)
                if nonfinite:  # no update: the weights and the optimizer state stay clean
                    optimizer.zero_grad(set_to_none=True)
                    nonfinite_in_a_row += 1
                    progress.skipped += 1
                    run.record(dict(step=progress.step, epoch=progress.epoch + 1,
                                    skipped="non-finite loss or gradient",
                                    loss=summed.item(), grad_norm=grad_norm.item()))
                    console.say(f"step {progress.step + 1}: loss {summed.item():g}, gradient "
                                f"norm {grad_norm.item():g}: step skipped")
                    if nonfinite_in_a_row >= tc.max_nonfinite_steps:
                        _diverged(run, progress, nonfinite_in_a_row, console)
                else:
                    nonfinite_in_a_row = 0
                    optimizer.step()
                    if adagrad is not None:
                        adagrad.step()
                    progress.step += 1
                    window_count += count
                    window_loss += summed.item()
                progress.elapsed = time.time() - session_start
                fields = None
                if not nonfinite and progress.step % tc.log_every == 0:
                    fields = _log_train(run, progress, optimizer, window_count, window_loss,
                                        time.time() - window_start, world, grad_norm, problem)
                    window_count, window_loss, window_start = 0, 0.0, time.time()
                done = progress.step - first_step
                pace = done / max(time.time() - wall_start, 1e-9) if done else None
                end = expected_end(pace)
                left = (end - progress.step) / pace if pace else None
                console.update(progress.step, end, left, fields)
                if not nonfinite and (progress.step % tc.valid_every == 0
                                      or progress.step >= total_steps or out_of_time):
                    if checkpoint_and_check():
                        stop = True
                    elif progress.step >= total_steps:
                        stop_reason.append(_limit_reason(tc, progress.step))
                        stop = True
                    elif out_of_time:
                        stop_reason.append(f"the wall-clock budget of {tc.max_minutes:g} min "
                                           "was reached")
                        stop = True
                    model.train()
                if interrupted and not stop:  # after this step's validation, if one was due
                    raise _interrupt(run, progress, signals.received or signal.SIGINT, save,
                                     console, rank, world)
                if stop:
                    break
            if not stop:
                progress.epoch += 1
                progress.batch_in_epoch = 0
        if not stop_reason:
            stop_reason.append(f"max_epochs ({tc.max_epochs}) reached")
        if checked_at[0] != progress.step:  # the epochs ran out between two validations
            checkpoint_and_check()
    console.close()
    console.say(f"training stopped at step {progress.step}: {stop_reason[0]}")
    result = _final_report(run, problem, console, rank, device, stop_reason[0])
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # leave together: the others wait while rank 0 writes its report
        dist.destroy_process_group()
    return result


def _total(count: int, world: int) -> int:
    """The step's loss count (tokens, examples) summed over all ranks."""
    if world == 1:
        return count
    import torch.distributed as dist

    t = torch.tensor([float(count)])
    dist.all_reduce(t)
    return int(t.item())


def _limit_reason(tc, step: int) -> str:
    if tc.max_steps is not None and step >= tc.max_steps:
        return f"max_steps ({tc.max_steps}) reached"
    return f"max_epochs ({tc.max_epochs}) reached"


_UNIT_SHORT = {"tokens": "tok", "examples": "ex"}


def _optimizers(model: torch.nn.Module, tc) -> tuple[torch.optim.Optimizer,
                                               torch.optim.Optimizer | None, list]:
    """(the run's optimizer, Adagrad or None, the parameters that gradient clipping sees).
    A model's adagrad_groups() (e.g. a classifier's n-gram weights) are trained by Adagrad
    at their own fixed lr, unclipped; train.optimizer trains every other parameter."""
    groups = model.adagrad_groups() if hasattr(model, "adagrad_groups") else []
    apart = {id(p) for g in groups for p in g["params"]}
    params = [p for p in model.parameters() if id(p) not in apart]
    if tc.optimizer == "adam":
        # fused: one kernel for the whole update (CPU and CUDA), 3x faster than the loop of
        # elementwise ops on the peers' model; the same Adam, same state dict
        optimizer = torch.optim.Adam(params, lr=tc.lr, weight_decay=tc.weight_decay, fused=True)
    else:
        optimizer = torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum,
                                    weight_decay=tc.weight_decay)
    return optimizer, torch.optim.Adagrad(groups) if groups else None, params


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_(params, max_norm) (no limit for None or 0): the
    gradients' total 2-norm, and every gradient scaled by max_norm / (norm + 1e-6) when that
    is below 1. Torch multiplies by the clamped factor in any case, a pass over every
    gradient (about 1.5% of a bfloat16 step on the peers' model) that changes nothing
    when the norm is under the limit, as it mostly is after the first steps."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if max_norm and float(max_norm / (norm + 1e-6)) < 1.0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def _log_train(run: RunDir, progress: Progress, optimizer, count: int, loss: float,
               seconds: float, world: int, grad_norm, problem) -> dict:
    extra = problem.log_fields(progress.step)
    record = dict(step=progress.step, epoch=progress.epoch + 1,
                  train_loss=loss / max(count, 1),
                  **{f"{problem.unit}_per_s": count * world / max(seconds, 1e-9)},
                  lr=optimizer.param_groups[0]["lr"], **extra,
                  grad_norm=float(grad_norm), elapsed=round(progress.elapsed, 1))
    run.record(record)
    fields = dict(loss=f"{record['train_loss']:.3f}",
                  **{_UNIT_SHORT.get(problem.unit, problem.unit) + "_s":
                     f"{record[f'{problem.unit}_per_s']:.0f}"},
                  lr=f"{record['lr']:.2g}")
    if "teacher_forcing" in extra:
        fields["tf"] = f"{extra['teacher_forcing']:.2f}"
    return fields


def _interrupt(run: RunDir, progress: Progress, signum: int, save, console: _Console,
               rank: int, world: int) -> TrainingInterrupted:
    """Save a resumable checkpoint at the current step; the exception to raise."""
    console.close()
    if rank == 0:
        save(run.last)
        console.say(f"{signal.Signals(signum).name}: saved {run.last} at step {progress.step}")
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return TrainingInterrupted(signum, progress.step, run.last)


def _diverged(run: RunDir, progress: Progress, count: int, console: _Console) -> None:
    console.close()
    saved = (f"the last checkpoint, {run.last}, is from before it" if run.last.exists()
             else "no checkpoint was written")
    raise TrainingDiverged(
        f"training diverged: {count} steps in a row had a nan/inf loss or gradient (after step "
        f"{progress.step}); {saved}. Lower train.lr or set train.clip_norm, then start again")


def _normpath(path: str | None) -> str | None:
    return None if path is None else os.path.normpath(os.path.abspath(path))


def _check_resumable(config: Config, saved: dict, out_dir: Path) -> None:
    """A resumed run may change its budget (steps, minutes, validation...) and the recurrent
    backend (both compute the same function on the same parameters), not what it is."""
    now = config.to_dict()
    sections = ("data", "tokenizer", "model") + ((config.problem,) if config.problem in now
                                                 else ())  # the problem's own section
    saved = {"problem": saved.get("problem", "seq2seq"),
             **{section: dict(saved.get(section, {})) for section in sections}}
    if saved["problem"] != config.problem:
        raise RunError(f"{out_dir} was trained for problem {saved['problem']!r}, not "
                       f"{config.problem!r}; resume with the same settings or start a new run")
    then = DataConfig(**{k: v for k, v in saved["data"].items() if k in now["data"]})
    for key in ("train", "valid", "test"):  # where the files lie may change, not which they are
        now["data"][key] = _normpath(config.data.path(now["data"][key]))
        saved["data"][key] = _normpath(then.path(saved["data"].get(key)))
    changed = [f"{section}.{key}: {saved[section].get(key)!r} -> {value!r}"
               for section in sections
               for key, value in now[section].items()
               if saved[section].get(key) != value and key not in ("backend", "root")]
    if changed:
        raise RunError(f"{out_dir} was trained with a different data / tokenizer / model config "
                       f"({'; '.join(changed)}); resume with the same settings or start a new run")


def _any(flags: list[bool], world: int) -> list[bool]:
    """All ranks decide together: each flag is True if it is True on any rank (one
    all_reduce for all of them)."""
    if world == 1:
        return flags
    import torch.distributed as dist

    t = torch.tensor([1.0 if f else 0.0 for f in flags])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(x > 0) for x in t.tolist()]


def _report_validation(log: _Console, progress: Progress, metrics: dict, key: str,
                       problem) -> None:
    if not metrics:
        log.say(f"step {progress.step}: checkpoint saved (no validation set)")
        return
    mark = " *" if metrics.get("improved") else ""
    first, *rest = problem.describe(metrics)
    log.say(f"step {progress.step} valid: {first}  [best {key} {metrics['best']:.4g}]{mark}")
    for line in rest:
        log.say(line)


def _final_report(run: RunDir, problem, log: _Console, rank: int, device,
                  stop_reason: str) -> dict:
    """The problem's report on the best checkpoint, written to results.json."""
    if rank != 0:
        return {}
    report = {"stopped": stop_reason, **problem.report(run.path, device, log.say),
              "machine": describe_machine(device)}
    (run.path / RESULTS).write_text(json.dumps(report, indent=2, ensure_ascii=False),
                                    encoding="utf-8")
    return report
