"""Vocabulary: token strings <-> integer ids, with the four special tokens.

The special tokens always hold the same ids, so that every module (data, model,
search) can rely on them without carrying a vocabulary around:

    <pad> = 0   fills batches to a common length; never attended to, never in the loss
    <unk> = 1   any token not in the vocabulary
    <sos> = 2   start of sequence: the decoder's first input
    <eos> = 3   end of sequence: the decoder's last target; decoding stops there
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

PAD, UNK, SOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<sos>", "<eos>")


class Vocab:
    """A list of token strings; a token's id is its index in the list."""

    def __init__(self, tokens: Sequence[str]):
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIALS}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary must not list a token twice")
        self.itos: list[str] = list(tokens)
        self.stoi: dict[str, int] = {tok: i for i, tok in enumerate(self.itos)}

    @classmethod
    def build(
        cls, sentences: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None
    ) -> Vocab:
        """Count tokens over tokenized sentences; keep those seen at least `min_freq` times,
        the most frequent first (ties broken alphabetically, so the result is deterministic),
        at most `max_size` tokens including the specials."""
        counts = Counter(tok for sent in sentences for tok in sent)
        for special in SPECIALS:
            counts.pop(special, None)
        kept = (t for t, c in counts.items() if c >= min_freq)
        ranked = sorted(kept, key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + ranked)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Token strings -> ids; unknown tokens map to <unk>, and so does text that merely
        looks like a special token ("<eos>" in a sentence must not end it)."""
        n = len(SPECIALS)
        return [i if i >= n else UNK for i in (self.stoi.get(tok, UNK) for tok in tokens)]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> token strings, stopping at the first <eos> and dropping <pad> and <sos>."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, SOS):
                continue
            out.append(self.itos[i])
        return out

    def state_dict(self) -> dict:
        """Plain data (a list of strings): safe for `torch.load(weights_only=True)`."""
        return {"itos": list(self.itos)}

    @classmethod
    def from_state_dict(cls, state: dict) -> Vocab:
        return cls(state["itos"])
