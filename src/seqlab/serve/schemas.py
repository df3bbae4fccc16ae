"""The typed requests and responses of the HTTP API (pydantic models: FastAPI validates every
request against them and writes the OpenAPI description at /docs from them).

Requests are strict: an unknown field, a wrong type ("5" for a number) or a value out of
range is a 422 that names the field. The server's own limits (sentences per request,
characters, pieces, beam size) are checked after this, against the options of `seqlab serve`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


Texts = Field(min_length=1, description="the inputs, one sentence (or text) each")


# ---------------------------------------------------------------------------------- seq2seq
class TranslateRequest(Strict):
    texts: list[str] = Texts
    mode: Literal["greedy", "beam", "sample"] | None = Field(
        None, description="greedy (beam 1), beam search, or sampling; default: the run's "
        "search section")
    beam_size: int | None = Field(None, ge=1, description="beam search: hypotheses kept")
    n_best: int | None = Field(None, ge=1, description="outputs per input (beam: <= beam_size; "
                               "sample: independent samples)")
    length_penalty: float | None = Field(None, ge=0, description="beam search: GNMT alpha")
    temperature: float | None = Field(None, gt=0, description="sampling temperature")
    top_k: int | None = Field(None, ge=0, description="sample among the k most likely (0: all)")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling")
    seed: int | None = Field(None, description="sampling: the same seed gives the same output")
    attention: bool = Field(False, description="return each output's attention matrix")

    @model_validator(mode="after")
    def _options_fit_the_mode(self) -> TranslateRequest:
        beam = ("beam_size", "length_penalty")
        sampling = ("temperature", "top_k", "top_p", "seed")
        allowed = {"greedy": (), "beam": beam + ("n_best",), "sample": sampling + ("n_best",),
                   None: beam + ("n_best",)}[self.mode]
        for name in beam + sampling + ("n_best",):
            if getattr(self, name) is not None and name not in allowed:
                mode = self.mode or "the run's default search"
                raise ValueError(f"{name} does not apply to mode {mode}")
        return self


class Attention(BaseModel):
    source_tokens: list[str] = Field(description="columns: the source pieces and <eos>")
    output_tokens: list[str] = Field(description="rows: the output pieces (and <eos>)")
    weights: list[list[float]] = Field(description="rows x columns, each row sums to 1")


class Hypothesis(BaseModel):
    text: str
    tokens: list[str]
    score: float = Field(description="the search's score (length-normalized for beam search)")
    log_prob: float = Field(description="log p(output | input), nats")
    attention: Attention | None = None


class TranslateResult(BaseModel):
    source: str
    hypotheses: list[Hypothesis] = Field(description="best first (samples: as drawn)")


class TranslateResponse(BaseModel):
    results: list[TranslateResult]
    mode: str
    milliseconds: float = Field(description="time from arrival to answer")


# ---------------------------------------------------------------------------------- classify
class TextsRequest(Strict):
    texts: list[str] = Texts


class Label(BaseModel):
    label: str
    probability: float
    probabilities: dict[str, float]


class ClassifyResponse(BaseModel):
    results: list[Label]
    milliseconds: float


# ---------------------------------------------------------------------------------- tag
class Tags(BaseModel):
    text: str = Field(description="spacing: the line with spaces restored; else token/TAG")
    tokens: list[str]
    labels: list[str]


class TagResponse(BaseModel):
    results: list[Tags]
    milliseconds: float


# ---------------------------------------------------------------------------------- lm
class GenerateRequest(Strict):
    prime: str = Field("", description="the text to continue")
    length: int = Field(200, ge=1, description="tokens to generate (at most)")
    mode: Literal["greedy", "sample"] = "sample"
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None


class GenerateResponse(BaseModel):
    text: str = Field(description="the continuation, without the prime")
    milliseconds: float


# ---------------------------------------------------------------------------------- forecast
class ForecastRequest(Strict):
    history: list[float] = Field(min_length=1, description="the series so far, oldest first")
    horizon: int | None = Field(None, ge=1, description="values to forecast (default: the "
                                "model's horizon)")


class ForecastResponse(BaseModel):
    values: list[float]
    milliseconds: float


# ---------------------------------------------------------------------------------- about
class Health(BaseModel):
    status: Literal["ok"]


class ModelInfo(BaseModel):
    run: str
    checkpoint: str = Field(description="the file the weights came from")
    problem: str
    endpoint: str = Field(description="the POST endpoint of this problem")
    parameters: int
    vocabulary: dict[str, int] = Field(description="sizes: source / target / labels ...")
    progress: dict = Field(description="step, epoch and best validation figure of best.pt")
    results: dict | None = Field(description="the run's final validation and test figures "
                                 "(results.json), if it finished")
    limits: dict = Field(description="this server's limits")
    batching: dict = Field(description="the dynamic batching settings and what it did")
    config: dict = Field(description="the run's full config")


class Error(BaseModel):
    error: str = Field(description="what is wrong, in one line")
