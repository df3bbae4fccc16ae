"""Training: one readable loop.

    for each batch:  logits = model(src, tgt_in, teacher forcing ratio of this step)
                     loss = masked token cross entropy (optionally label-smoothed)
                     backward; clip the gradient norm; optimizer step; lr schedule step
    every N steps:   validate (loss, perplexity, greedy BLEU / chrF / exact match),
                     checkpoint (last, and best on the chosen metric), early stopping

The run directory holds `config.yaml` (resolved), `metrics.jsonl` (one JSON object per log
line), `last.pt` and `best.pt`. `train(..., resume=True)` continues a run exactly where its
last checkpoint left it: same batches, same RNG streams, same schedules.

Distributed: launched by `torchrun --nproc_per_node N -m seqlab train ...`, every process
trains on its share of the batches under DistributedDataParallel; rank 0 validates, logs
and writes checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from seqlab.checkpoint import load_checkpoint, save_checkpoint
from seqlab.config import Config, DataConfig, save_config
from seqlab.data import DataError, TokenBatchSampler, collate
from seqlab.model import build_model
from seqlab.prepare import Codec, build_codec, encode, read_splits
from seqlab.schedules import lr_factor, teacher_forcing_ratio
from seqlab.translate import Translator, pick_device
from seqlab.vocab import PAD

HIGHER_IS_BETTER = {"bleu": True, "chrf": True, "exact_match": True, "loss": False}
PERFECT = {"bleu": 100.0, "chrf": 100.0, "exact_match": 1.0}  # reached: stop early


class RunError(ValueError):
    """A problem with the run directory (e.g. an existing run without --resume)."""


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float | None = None
    bad_checks: int = 0
    elapsed: float = 0.0  # training seconds, summed over resumed sessions

    def state_dict(self) -> dict:
        return dict(self.__dict__)


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


class _Log:
    """Console lines (through tqdm, so they don't break the bar) and metrics.jsonl."""

    def __init__(self, out_dir: Path, enabled: bool, quiet: bool):
        self.path, self.enabled, self.quiet = out_dir / "metrics.jsonl", enabled, quiet

    def say(self, text: str) -> None:
        if self.enabled and not self.quiet:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)

    def record(self, **fields) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(fields, ensure_ascii=False) + "\n")


def token_loss(model, batch, label_smoothing: float, teacher_forcing: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Summed cross-entropy over the real target tokens of a batch (teacher-forced pass).
    Only the real, non-padding positions are projected onto the vocabulary (keep mask)."""
    real = batch.tgt_out != PAD
    logits, _ = model(batch.src, batch.src_lengths, batch.tgt_in, teacher_forcing=teacher_forcing,
                      generator=generator, keep=real)
    return F.cross_entropy(logits, batch.tgt_out[real], label_smoothing=label_smoothing,
                           reduction="sum")


def default_run_dir(config: Config) -> Path:
    """runs/<task name> or runs/<folder of the training files>."""
    d = config.data
    return Path("runs") / (d.task or Path(d.path(d.train)).resolve().parent.name or "run")


def train(config: Config, out_dir: str | Path | None = None, *, resume: bool = False,
          quiet: bool = False) -> dict:
    """Train a model as configured into `out_dir` (default: `default_run_dir`); returns the
    final validation (and test) metrics of the best checkpoint."""
    out_dir = Path(out_dir) if out_dir is not None else default_run_dir(config)
    rank, world, local_rank = _dist_info()
    last_path = out_dir / "last.pt"
    if last_path.exists() and not resume:
        raise RunError(f"{out_dir} already holds a run ({last_path.name}); pass --resume to "
                       "continue it, or choose another --out")
    if resume and not last_path.exists():
        raise RunError(f"{out_dir}: nothing to resume (no last.pt)")
    out_dir.mkdir(parents=True, exist_ok=True)
    tc = config.train
    log = _Log(out_dir, enabled=rank == 0, quiet=quiet)

    if world > 1:
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() and tc.device != "cpu" else "gloo"
        dist.init_process_group(backend)
        device = torch.device(f"cuda:{local_rank}") if backend == "nccl" else torch.device("cpu")
    else:
        device = pick_device(tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    random.seed(tc.seed)

    # text -> tokens -> ids
    t0 = time.time()
    splits = read_splits(config)
    checkpoint = load_checkpoint(last_path) if resume else None
    if checkpoint:
        _check_resumable(config, checkpoint["config"], out_dir)
    codec = (Codec.from_state_dict(checkpoint["codec"]) if checkpoint
             else build_codec(config, splits.train))
    train_examples, filtered = encode(config, codec, splits.train)
    if not train_examples:
        raise DataError(f"{splits.train.source}: no training pair is within the length limits "
                        f"(max_src_len={config.data.max_src_len}, "
                        f"max_tgt_len={config.data.max_tgt_len})")
    log.say(f"data: {len(train_examples)} training pairs from {splits.train.source} "
            f"({splits.train.skipped_empty} empty skipped, {filtered} over the length limit); "
            f"vocabularies: source {len(codec.src_vocab)}, target {len(codec.tgt_vocab)} "
            f"({config.tokenizer.kind}) [{time.time() - t0:.1f}s]")

    model = build_model(config.model, len(codec.src_vocab), len(codec.tgt_vocab)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log.say(f"model: {n_params:,} parameters; {config.model.cell} "
            f"{'bi' if config.model.bidirectional else 'uni'}directional encoder, attention "
            f"{config.model.attention} ({config.model.attention_style}), recurrent backend "
            f"{model.encoder.rnn.backend}; device {device}")
    if tc.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum,
                                    weight_decay=tc.weight_decay)
    plateau = None
    if tc.lr_schedule == "plateau":
        mode = "max" if HIGHER_IS_BETTER[tc.early_stopping_metric] else "min"
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=tc.lr_plateau_factor, patience=tc.lr_plateau_patience,
            min_lr=tc.lr_min)
    progress = Progress()
    sampling_rng = torch.Generator().manual_seed(tc.seed + 1)
    if checkpoint:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if plateau is not None and checkpoint.get("plateau"):
            plateau.load_state_dict(checkpoint["plateau"])
        progress = Progress(**checkpoint["progress"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        sampling_rng.set_state(checkpoint["rng"]["sampling"])
        log.say(f"resuming {out_dir} at step {progress.step} (epoch {progress.epoch + 1})")
    else:
        save_config(config, out_dir / "config.yaml")

    ddp_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(model, device_ids=[local_rank]
                                            if device.type == "cuda" else None)
    sampler = TokenBatchSampler.from_examples(train_examples, tc.batch_tokens, shuffle=True,
                                              seed=tc.seed, rank=rank, world_size=world)
    steps_per_epoch = len(sampler)
    total_steps = tc.max_steps or tc.max_epochs * steps_per_epoch
    budget = tc.max_minutes * 60 if tc.max_minutes else math.inf

    def validate() -> dict:
        return _validate(model, codec, config, splits.valid)

    def save(path: Path, resumable: bool = True) -> None:
        """last.pt can resume the run; best.pt holds only what translation needs."""
        state = {"model": model.state_dict(), "progress": progress.state_dict(),
                 "config": config.to_dict(), "codec": codec.state_dict()}
        if resumable:
            state.update(optimizer=optimizer.state_dict(),
                         plateau=plateau.state_dict() if plateau else None,
                         rng={"torch": torch.get_rng_state(),
                              "sampling": sampling_rng.get_state()})
        save_checkpoint(state, path)

    checked_at = [progress.step]

    def checkpoint_and_check() -> bool:
        """Validate, save, decide on early stopping; True means stop."""
        stop = False
        checked_at[0] = progress.step
        if rank == 0:
            metrics = validate() if splits.valid else {}
            key = tc.early_stopping_metric
            value = metrics.get(key)
            if value is not None:
                better = progress.best is None or (
                    value > progress.best if HIGHER_IS_BETTER[key] else value < progress.best)
                if better:
                    progress.best, progress.bad_checks = value, 0
                else:
                    progress.bad_checks += 1
                if plateau is not None:
                    plateau.step(value)
                metrics.update(best=progress.best, improved=better)
                stop = tc.patience is not None and progress.bad_checks > tc.patience
                if value >= PERFECT.get(key, math.inf):
                    log.say(f"valid {key} is perfect ({value:g}): nothing left to learn")
                    stop = True
            save(last_path)
            if value is None or metrics["improved"]:
                save(out_dir / "best.pt", resumable=False)
            log.record(step=progress.step, epoch=progress.epoch + 1,
                       **{f"valid_{k}": v for k, v in metrics.items() if k != "samples"})
            _report_validation(log, progress, metrics, key)
        return _agree(stop, world)

    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=progress.step, disable=quiet or rank != 0,
               unit="step", dynamic_ncols=True, file=sys.stderr)
    model.train()
    window_tokens, window_loss, window_start = 0, 0.0, time.time()
    session_start = time.time() - progress.elapsed
    stop = progress.step >= total_steps
    while not stop and progress.epoch < tc.max_epochs:
        sampler.set_epoch(progress.epoch)
        for i, indices in enumerate(sampler):
            if i < progress.batch_in_epoch:
                continue  # resumed mid-epoch: these batches were already trained on
            batch = collate(train_examples, indices).to(device)
            ratio = teacher_forcing_ratio(tc, progress.step)
            for group in optimizer.param_groups:
                if tc.lr_schedule == "warmup_decay":
                    group["lr"] = tc.lr * lr_factor(tc, progress.step + 1)
            ntok = batch.num_tgt_tokens
            loss = token_loss(ddp_model, batch, tc.label_smoothing, ratio, sampling_rng) / ntok
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), tc.clip_norm if tc.clip_norm else float("inf"))
            optimizer.step()
            progress.step += 1
            progress.batch_in_epoch = i + 1
            progress.elapsed = time.time() - session_start
            window_tokens += ntok
            window_loss += loss.item() * ntok
            bar.update(1)
            if progress.step % tc.log_every == 0:
                seconds = time.time() - window_start
                record = dict(step=progress.step, epoch=progress.epoch + 1,
                              train_loss=window_loss / window_tokens,
                              tokens_per_s=window_tokens * world / max(seconds, 1e-9),
                              lr=optimizer.param_groups[0]["lr"], teacher_forcing=ratio,
                              grad_norm=float(grad_norm), elapsed=round(progress.elapsed, 1))
                log.record(**record)
                postfix = dict(loss=f"{record['train_loss']:.3f}",
                               tok_s=f"{record['tokens_per_s']:.0f}", tf=f"{ratio:.2f}")
                if budget < math.inf:  # the step ETA is moot when the clock ends the run
                    left = max(0, int(budget - progress.elapsed))
                    postfix["budget_left"] = f"{left // 60}:{left % 60:02d}"
                bar.set_postfix(postfix, refresh=False)
                window_tokens, window_loss, window_start = 0, 0.0, time.time()
            out_of_time = _agree(progress.elapsed >= budget, world)
            if progress.step % tc.valid_every == 0 or progress.step >= total_steps or out_of_time:
                if checkpoint_and_check() or progress.step >= total_steps:
                    stop = True
                elif out_of_time:
                    log.say(f"wall-clock budget of {tc.max_minutes} min reached")
                    stop = True
                model.train()
            if stop:
                break
        if not stop:
            progress.epoch += 1
            progress.batch_in_epoch = 0
    if checked_at[0] != progress.step:  # the epochs ran out between two validations
        checkpoint_and_check()
    bar.close()
    result = _final_report(out_dir, config, splits, log, rank, device)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return result


def _normpath(path: str | None) -> str | None:
    return None if path is None else os.path.normpath(os.path.abspath(path))


def _check_resumable(config: Config, saved: dict, out_dir: Path) -> None:
    """A resumed run may change its budget (steps, minutes, validation...) and the recurrent
    backend (both compute the same function on the same parameters), not what it is."""
    now = config.to_dict()
    saved = {section: dict(saved.get(section, {})) for section in ("data", "tokenizer", "model")}
    then = DataConfig(**{k: v for k, v in saved["data"].items() if k in now["data"]})
    for key in ("train", "valid", "test"):  # where the files lie may change, not which they are
        now["data"][key] = _normpath(config.data.path(now["data"][key]))
        saved["data"][key] = _normpath(then.path(saved["data"].get(key)))
    changed = [f"{section}.{key}: {saved[section].get(key)!r} -> {value!r}"
               for section in ("data", "tokenizer", "model")
               for key, value in now[section].items()
               if saved[section].get(key) != value and key not in ("backend", "root")]
    if changed:
        raise RunError(f"{out_dir} was trained with a different data / tokenizer / model config "
                       f"({'; '.join(changed)}); resume with the same settings or start a new run")


def _agree(flag: bool, world: int) -> bool:
    """All ranks stop together: True if any rank says so."""
    if world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _validate(model, codec, config, valid) -> dict:
    """Greedy decoding of the validation set, scored; loss and perplexity teacher-forced."""
    translator = Translator(model, codec, config, model_device(model))
    result = translator.evaluate(valid.src, valid.tgt, beam_size=1, n_best=1,
                                 no_repeat_ngram=0, coverage_penalty=0.0)
    hyps = result.pop("hypotheses")
    n = min(config.train.valid_samples, len(hyps))
    result["samples"] = [(valid.src[i], valid.tgt[i], hyps[i]) for i in range(n)]
    return result


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def _report_validation(log: _Log, progress: Progress, metrics: dict, key: str) -> None:
    if not metrics:
        log.say(f"step {progress.step}: checkpoint saved (no validation set)")
        return
    mark = " *" if metrics.get("improved") else ""
    log.say(f"step {progress.step} valid: loss {metrics['loss']:.3f} ppl "
            f"{metrics['ppl']:.2f} BLEU {metrics['bleu']:.2f} chrF {metrics['chrf']:.2f} "
            f"exact {100 * metrics['exact_match']:.1f}%  [best {key} {metrics['best']:.4g}]{mark}")
    for src, ref, hyp in metrics.get("samples", []):
        log.say(f"    src: {src}\n    ref: {ref}\n    hyp: {hyp}")


def _final_report(out_dir: Path, config: Config, splits, log: _Log, rank: int, device) -> dict:
    """Evaluate the best checkpoint on valid (and report test) with the configured search."""
    if rank != 0:
        return {}
    translator = Translator.from_checkpoint(out_dir, device=str(device))
    report: dict = {"signature_note": "sacrebleu BLEU and chrF on detokenized output"}
    for name, split in (("valid", splits.valid), ("test", splits.test)):
        if split is None:
            continue
        metrics = translator.evaluate(split.src, split.tgt)
        metrics.pop("hypotheses")
        report[name] = metrics
        log.say(f"{name} ({split.source}, {config.search.beam_size=}): BLEU "
                f"{metrics['bleu']:.2f} chrF {metrics['chrf']:.2f} exact "
                f"{100 * metrics['exact_match']:.1f}%  {metrics['signature']}")
    (out_dir / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False),
                                          encoding="utf-8")
    return report
