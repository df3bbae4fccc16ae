"""What one request may ask of `seqlab serve` (each field is an option: max_texts is
--max-texts). A leaf module: `seqlab serve --help` reads it without loading torch."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


def _limit(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Limits:
    max_texts: int = _limit(64, "sentences per request")
    max_chars: int = _limit(1000, "characters per sentence or prime")
    max_pieces: int = _limit(250, "tokens per sentence, after the model's tokenizer")
    max_beam: int = _limit(16, "beam size")
    max_n_best: int = _limit(16, "outputs per sentence")
    max_length: int = _limit(2000, "tokens generated (language models)")
    max_history: int = _limit(100_000, "values of a forecast's history")
    max_horizon: int = _limit(10_000, "values forecast")
    timeout: float = _limit(30.0, "seconds until a request is answered 504")


def limit_options() -> list[tuple[str, str, object, str]]:
    """(option, field name, default, meaning) of every limit."""
    return [(f"--{f.name.replace('_', '-')}", f.name, f.default, f.metadata["help"])
            for f in fields(Limits)]
