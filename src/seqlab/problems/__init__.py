"""Problem shapes: what differs between seq2seq, classification, language modelling, tagging
and forecasting.

The training loop (`seqlab.train`) drives every problem through this protocol and knows
nothing else about it (duck-typed; each problem module documents its own data and model):

    problem = build_problem(config)          # by config.problem; nothing is read yet
    problem.prepare(state=None) -> str       # read the data; build tokenizers, vocabularies,
                                             # labels from train (or restore them from `state`,
                                             # a checkpoint's "problem"); returns a log line
    problem.build_model() -> nn.Module       # forward(..., targets) -> (logits, summed loss)
    problem.describe_model(model) -> str     # what was built, for the log
    problem.batches(epoch, rank, world) -> list   # this rank's batch keys for an epoch, a pure
                                             # function of (config, epoch, rank, world)
    problem.batch(key) -> batch              # padded tensors of one batch (has .to(device))
    problem.loss(model, batch, step) -> (summed, count)   # summed loss over `count` units
    problem.log_fields(step) -> dict         # extra training-log fields (may be empty)
    problem.validate(model) -> dict          # validation metrics, names in
                                             # config.PROBLEM_METRICS (with their direction)
    problem.describe(metrics) -> list[str]   # the log lines of one validation
    problem.pictures(model, folder, step)    # optional: pictures drawn after a validation
                                             # into folder (seq2seq: attention maps)
    problem.report(run_dir, device, say) -> dict   # the best checkpoint on valid and test
    problem.state_dict() -> dict             # what prediction needs besides the weights
    problem.train_state() / load_train_state(state)   # what exact resumption needs besides
                                             # model, optimizer and torch RNG (e.g. a carried
                                             # state, a private generator)
    problem.unit                             # what `count` counts: "tokens", "examples"

Prediction (CLI, Python, `seqlab serve`) goes through each problem's predictor, which loads
a run directory or checkpoint by itself and imports nothing from training:
`seqlab.translate.Translator` (seq2seq), `classify.Classifier`, `lm.Generator`,
`tag.Tagger`, `forecast.Forecaster`, each with `from_checkpoint(path, device)`.

`count` is what the loss is averaged over: the loop divides the summed loss by the step's
count summed over all ranks, so a step's gradient is that of the mean over the global batch.
"""

from __future__ import annotations


def build_problem(config):
    """The problem object of `config.problem` (the modules are imported on demand)."""
    if config.problem == "seq2seq":
        from seqlab.problems.seq2seq import Seq2SeqProblem

        return Seq2SeqProblem(config)
    if config.problem == "classify":
        from seqlab.problems.classify import ClassifyProblem

        return ClassifyProblem(config)
    if config.problem == "lm":
        from seqlab.problems.lm import LMProblem

        return LMProblem(config)
    if config.problem == "tag":
        from seqlab.problems.tag import TagProblem

        return TagProblem(config)
    if config.problem == "forecast":
        from seqlab.problems.forecast import ForecastProblem

        return ForecastProblem(config)
    raise ValueError(f"unknown problem {config.problem!r}")
