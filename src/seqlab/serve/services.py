"""One service per problem shape: what its endpoint accepts, checks, batches and returns.

    service.check(request)              # the server's limits, before anything waits (InputError)
    service.key(request) -> Hashable    # requests with equal keys may share a model call
    service.items(request) -> list      # what is batched (sentences); None: not batched
    service.run(items, key) -> list     # in the model's thread: one output per item
    service.respond(request, outputs, ms) -> response model

Seq2seq, classification and tagging batch their sentences across requests; generation
(one prime, a loop of `length` steps) and forecasting (one history) are single calls made
in the same model thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence

from seqlab.errors import ConfigError, DataError
from seqlab.serve import schemas
from seqlab.serve.limits import Limits


class InputError(ValueError):
    """A request the server refuses (HTTP 422 or `status`), with a one-line reason."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def check_texts(texts: Sequence[str], limits: Limits, tokenize=None) -> None:
    """Sentences per request, empty texts, characters and pieces, or one InputError line."""
    if len(texts) > limits.max_texts:
        raise InputError(f"texts: {len(texts)} sentences, over this server's limit of "
                         f"{limits.max_texts} per request (--max-texts)")
    for i, text in enumerate(texts):
        if not text.strip():
            raise InputError(f"texts[{i}] is empty")
        if len(text) > limits.max_chars:
            raise InputError(f"texts[{i}]: {len(text)} characters, over this server's limit "
                             f"of {limits.max_chars} (--max-chars)")
        if tokenize is not None:
            n = len(tokenize(text))
            if n > limits.max_pieces:
                raise InputError(f"texts[{i}]: {n} tokens, over this server's limit of "
                                 f"{limits.max_pieces} (--max-pieces)")


def _round(rows) -> list[list[float]]:
    return [[round(float(w), 5) for w in row] for row in rows]


# ---------------------------------------------------------------------------------- seq2seq
class TranslateService:
    endpoint, problem = "/translate", "seq2seq"
    request_model, response_model = schemas.TranslateRequest, schemas.TranslateResponse

    def __init__(self, translator, limits: Limits, search: dict | None = None):
        self.predictor, self.limits = translator, limits
        self.base = dict(search or {})  # set for every request (precision, stopping)

    def vocabulary(self) -> dict[str, int]:
        c = self.predictor.codec
        return {"source": len(c.src_vocab), "target": len(c.tgt_vocab)}

    def options(self, r: schemas.TranslateRequest) -> tuple[str, dict, dict | None]:
        """(mode, search overrides, sampling or None) of a request."""
        default = self.predictor.config.search
        mode = r.mode or ("greedy" if default.beam_size == 1 else "beam")
        search = dict(self.base)
        if mode == "greedy":
            search.update(beam_size=1, n_best=1, length_penalty=0.0, coverage_penalty=0.0)
            return mode, search, None
        if mode == "beam":
            search["beam_size"] = r.beam_size or (default.beam_size if default.beam_size > 1
                                                  else 5)
            search["n_best"] = r.n_best or 1
            if r.length_penalty is not None:
                search["length_penalty"] = r.length_penalty
            return mode, search, None
        search["n_best"] = r.n_best or 1
        sampling = dict(temperature=r.temperature or 1.0, top_k=r.top_k or 0,
                        top_p=r.top_p or 1.0, seed=r.seed)
        return mode, search, sampling

    def check(self, r: schemas.TranslateRequest) -> None:
        check_texts(r.texts, self.limits, self.predictor.codec.src_tokenizer.tokenize)
        mode, search, sampling = self.options(r)
        if search.get("beam_size", 1) > self.limits.max_beam:
            raise InputError(f"beam_size {search['beam_size']}: over this server's limit of "
                             f"{self.limits.max_beam} (--max-beam)")
        if search["n_best"] > self.limits.max_n_best:
            raise InputError(f"n_best {search['n_best']}: over this server's limit of "
                             f"{self.limits.max_n_best} (--max-n-best)")
        try:  # the translator's own checks (n_best <= beam_size, lengths), before waiting
            self.predictor.check_inputs(r.texts, sampling, **search)
        except (ConfigError, DataError) as exc:
            raise InputError(str(exc).replace("input line ", "texts line ")) from None

    def key(self, r: schemas.TranslateRequest) -> Hashable:
        mode, search, sampling = self.options(r)
        seeded = sampling is not None and sampling["seed"] is not None
        # a seeded sample is drawn alone: the same seed must give the same output whatever
        # else arrives at the same time (the draws depend on the batch)
        alone = object() if seeded else None
        return (mode, tuple(sorted(search.items())),
                tuple(sorted(sampling.items())) if sampling else None, r.attention, alone)

    def items(self, r: schemas.TranslateRequest) -> list[str]:
        return list(r.texts)

    def run(self, texts: list[str], key: Hashable) -> list[dict]:
        _, search, sampling, attention, _ = key
        nbest = self.predictor.translate_nbest(texts, sampling=None if sampling is None
                                               else dict(sampling), with_attention=attention,
                                               **dict(search))
        return [[self._hypothesis(t) for t in row] for row in nbest]

    @staticmethod
    def _hypothesis(t) -> dict:
        attention = None
        if t.attention is not None:
            rows = t.tokens + ["<eos>"] * (t.attention.shape[0] - len(t.tokens))
            attention = {"source_tokens": t.src_tokens, "output_tokens": rows,
                         "weights": _round(t.attention.tolist())}
        return {"text": t.text, "tokens": t.tokens, "score": t.score,
                "log_prob": t.log_prob, "attention": attention}

    def respond(self, r: schemas.TranslateRequest, outputs: list, ms: float):
        return schemas.TranslateResponse(
            results=[schemas.TranslateResult(source=s, hypotheses=h)
                     for s, h in zip(r.texts, outputs)],
            mode=self.options(r)[0], milliseconds=ms)


# ---------------------------------------------------------------------------------- classify, tag
class ClassifyService:
    endpoint, problem = "/classify", "classify"
    request_model, response_model = schemas.TextsRequest, schemas.ClassifyResponse

    def __init__(self, classifier, limits: Limits):
        self.predictor, self.limits = classifier, limits

    def vocabulary(self) -> dict[str, int]:
        c = self.predictor.codec
        return {"source": len(c.vocab), "labels": len(c.labels)}

    def check(self, r) -> None:
        codec = self.predictor.codec
        check_texts(r.texts, self.limits, lambda text: codec.encode_text(text))

    def key(self, r) -> Hashable:
        return None

    def items(self, r) -> list[str]:
        return list(r.texts)

    def run(self, texts: list[str], key: Hashable) -> list[dict]:
        return [dataclasses.asdict(p) for p in self.predictor.predict(texts)]

    def respond(self, r, outputs: list, ms: float):
        return schemas.ClassifyResponse(results=outputs, milliseconds=ms)


class TagService(ClassifyService):
    endpoint, problem = "/tag", "tag"
    request_model, response_model = schemas.TextsRequest, schemas.TagResponse

    def check(self, r) -> None:
        check_texts(r.texts, self.limits, self.predictor.codec.tokens)

    def run(self, texts: list[str], key: Hashable) -> list[dict]:
        return [{"text": p.text, "tokens": p.tokens, "labels": p.labels}
                for p in self.predictor.predict(texts)]

    def respond(self, r, outputs: list, ms: float):
        return schemas.TagResponse(results=outputs, milliseconds=ms)


# ---------------------------------------------------------------------------------- lm, forecast
class GenerateService:
    endpoint, problem = "/generate", "lm"
    request_model, response_model = schemas.GenerateRequest, schemas.GenerateResponse

    def __init__(self, generator, limits: Limits):
        self.predictor, self.limits = generator, limits

    def vocabulary(self) -> dict[str, int]:
        return {"tokens": len(self.predictor.codec.vocab)}

    def check(self, r: schemas.GenerateRequest) -> None:
        if len(r.prime) > self.limits.max_chars:
            raise InputError(f"prime: {len(r.prime)} characters, over this server's limit of "
                             f"{self.limits.max_chars} (--max-chars)")
        if r.length > self.limits.max_length:
            raise InputError(f"length {r.length}: over this server's limit of "
                             f"{self.limits.max_length} (--max-length)")

    def key(self, r) -> Hashable:
        return None

    items = None  # not batched

    def call(self, r: schemas.GenerateRequest) -> str:
        return self.predictor.generate(r.prime, r.length, temperature=r.temperature,
                                       top_k=r.top_k, top_p=r.top_p, seed=r.seed,
                                       greedy=r.mode == "greedy")

    def respond(self, r, text: str, ms: float):
        return schemas.GenerateResponse(text=text, milliseconds=ms)


class ForecastService(GenerateService):
    endpoint, problem = "/forecast", "forecast"
    request_model, response_model = schemas.ForecastRequest, schemas.ForecastResponse

    def vocabulary(self) -> dict[str, int]:
        return {}

    def check(self, r: schemas.ForecastRequest) -> None:
        if len(r.history) > self.limits.max_history:
            raise InputError(f"history: {len(r.history)} values, over this server's limit of "
                             f"{self.limits.max_history} (--max-history)")
        if (r.horizon or 1) > self.limits.max_horizon:
            raise InputError(f"horizon {r.horizon}: over this server's limit of "
                             f"{self.limits.max_horizon} (--max-horizon)")

    def call(self, r: schemas.ForecastRequest) -> list[float]:
        return self.predictor.predict(r.history, r.horizon).values

    def respond(self, r, values: list[float], ms: float):
        return schemas.ForecastResponse(values=values, milliseconds=ms)


SERVICES = {s.problem: s for s in (TranslateService, ClassifyService, TagService,
                                   GenerateService, ForecastService)}
