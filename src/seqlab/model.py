"""The encoder-decoder, read top to bottom: embed -> encoder -> bridge -> decoder.step -> logits.

    memory = model.encode(src, src_lengths)          # encoder states, keys, mask
    state = model.init_state(memory)                 # bridge: encoder final -> decoder first
    logits, state, attn = model.step(prev, state, memory)   # one target token at a time

Training (`model(src, src_lengths, tgt_in, tgt_out) -> logits, summed loss`), greedy and
beam search all go through the same step; the teacher-forced pass only batches the parts
that do not depend on the previous step (the output projection always; the whole decoder
when nothing is fed back).

Decoder arrangements (Luong, Pham & Manning 2015; Bahdanau, Cho & Bengio 2015;
Cho et al. 2014):

    luong:     s_t = RNN([y_{t-1}; a_{t-1}], s_{t-1})   (a_{t-1} only with input feeding)
               c_t = attend(s_t, h_1..S)
    bahdanau:  c_t = attend(s_{t-1}, h_1..S)            (previous state is the query)
               s_t = RNN([y_{t-1}; c_t], s_{t-1})
    none:      c   = the encoder's final state, the same at every step (Cho et al. 2014)
               s_t = RNN([y_{t-1}; c], s_{t-1})
    then       a_t = tanh(W_c [s_t; c_t])               attentional vector (Luong eq. 5)
               p(y_t | y_<t, x) = softmax(W_o a_t)

Departures: the Bahdanau arrangement uses the same attentional output layer a_t as Luong
(the paper's deep output with maxout is not implemented); the `none` decoder also reads out
through a_t, so all variants differ only in the attention. Shapes: B batch, S source length,
T target length, E embedding, H hidden, M memory (= encoder output) size, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqlab.attention import Attention, steps_in_float32
from seqlab.config import ModelConfig
from seqlab.dropout import Dropout
from seqlab.losses import linear_cross_entropy
from seqlab.recurrent import Recurrent, map_state
from seqlab.recurrent import select_state as _select
from seqlab.shared_weights import StepLinear
from seqlab.vocab import PAD

State = Tensor | tuple[Tensor, Tensor]


@dataclass
class Memory:
    """What the decoder reads from the encoder: B source sentences, read by N = B * copies
    decoder rows (row i reads sentence i // copies; copies > 1 in a beam or when sampling
    several outputs per sentence, see `index_select`)."""

    states: Tensor  # (B, S, M) encoder outputs, zero at padding
    keys: Tensor | None  # (B, S, K) attention keys precomputed from `states` (None: no attention)
    source_mask: Tensor  # (B, S) bool, True at real source tokens
    final: State  # encoder top layer's final state, both directions: (B, M) [or (h, c)]
    copies: int = 1  # consecutive decoder rows that read each sentence

    @property
    def mask(self) -> Tensor:
        """(N, S) bool: the source mask of each decoder row."""
        return self.per_row(self.source_mask)

    def per_row(self, x: State) -> State:
        """A per-sentence tensor (B, ...), or an LSTM's (h, c) -> per decoder row (N, ...)."""
        k = self.copies
        return x if k == 1 else map_state(x, lambda t: t.repeat_interleave(k, 0))

    def index_select(self, index: Tensor) -> Memory:
        """Decoder rows picked / repeated by index (N',), e.g. to expand each sentence for a
        beam, or to drop the finished sentences.

        The sentences are not copied per row when they need not be: an index that repeats
        every sentence k times in a row (arange(B).repeat_interleave(k), a beam of k) only
        sets copies = k, and an index that keeps whole blocks of those k rows in order (the
        beam dropping finished sentences) selects one stored copy per kept sentence. So the
        attention of a beam reads each source once for its k rows (`Decoder._attend`), and
        dropping a sentence moves 1/k of the data. Any other index copies the rows out."""
        B, k, n = self.source_mask.size(0), self.copies, index.numel()
        if k == 1 and n > B and n % B == 0 and torch.equal(
                index, torch.arange(B, device=index.device).repeat_interleave(n // B)):
            return Memory(self.states, self.keys, self.source_mask, self.final, n // B)
        if k > 1 and n % k == 0:
            blocks = index.view(-1, k)
            first = blocks[:, 0]
            if bool((first % k == 0).all()) and torch.equal(
                    blocks, first[:, None] + torch.arange(k, device=index.device)):
                return self._sentences(first // k, k)
        return self._sentences(index // k, 1)

    def _sentences(self, sentences: Tensor, copies: int) -> Memory:
        return Memory(_select(self.states, sentences, 0), _select(self.keys, sentences, 0),
                      _select(self.source_mask, sentences, 0), _select(self.final, sentences, 0),
                      copies)


@dataclass
class DecoderState:
    hidden: State  # (L, B, H) [or (h, c)]
    feed: Tensor | None  # (B, H) the last attentional vector a_{t-1} (input feeding), else None

    def index_select(self, index: Tensor) -> DecoderState:
        return DecoderState(_select(self.hidden, index, 1), _select(self.feed, index, 0))


class Encoder(nn.Module):
    """Embeddings and a (bi)directional recurrent stack: src (B, S) -> states (B, S, D*H)."""

    def __init__(self, *, vocab_size: int, embedding_size: int, hidden_size: int, cell: str,
                 num_layers: int, bidirectional: bool, dropout: float, backend: str,
                 reset_after: bool):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding_size, padding_idx=PAD)
        self.dropout = Dropout(dropout)
        self.rnn = Recurrent(cell, embedding_size, hidden_size, num_layers=num_layers,
                             bidirectional=bidirectional, dropout=dropout, backend=backend,
                             reset_after=reset_after)

    def forward(self, src: Tensor, lengths: Tensor) -> tuple[Tensor, State]:
        """-> states (B, S, D*H), final state of the top layer (B, D*H) [or (h, c)]."""
        states, final = self.rnn(self.dropout(self.embed(src)), lengths)
        D = self.rnn.directions

        def top(x):  # (L*D, B, H) -> (B, D*H): the last layer's directions side by side
            return x[-D:].transpose(0, 1).reshape(x.shape[1], -1)

        return states, (top(final[0]), top(final[1])) if isinstance(final, tuple) else top(final)


class Bridge(nn.Module):
    """Decoder's first state from the encoder's final one (B, M) -> (L, B, H).

    zero:    s_0 = 0
    last:    s_0 = h_enc (needs M == H), in every decoder layer
    learned: s_0 = tanh(W h_enc + b), a separate slice of W for each decoder layer
             (and a second map for the LSTM cell state)
    """

    def __init__(self, kind: str, memory_size: int, hidden_size: int, num_layers: int,
                 lstm: bool):
        super().__init__()
        if kind == "last" and memory_size != hidden_size:
            raise ValueError(f"bridge 'last' needs encoder output size {memory_size} == "
                             f"decoder hidden size {hidden_size}")
        self.kind, self.hidden_size = kind, hidden_size
        self.num_layers, self.lstm = num_layers, lstm
        if kind == "learned":
            self.h = nn.Linear(memory_size, num_layers * hidden_size)
            self.c = nn.Linear(memory_size, num_layers * hidden_size) if lstm else None

    def _map(self, x: Tensor, linear: nn.Linear | None) -> Tensor:
        L, B = self.num_layers, x.shape[0]
        if self.kind == "zero":
            return x.new_zeros(L, B, self.hidden_size)
        if self.kind == "last":
            return x.unsqueeze(0).expand(L, -1, -1).contiguous()
        return torch.tanh(linear(x)).view(B, L, self.hidden_size).transpose(0, 1).contiguous()

    def forward(self, final: State) -> State:
        if self.lstm:
            return self._map(final[0], self.h if self.kind == "learned" else None), \
                self._map(final[1], self.c if self.kind == "learned" else None)
        return self._map(final, self.h if self.kind == "learned" else None)


class StepMaps(NamedTuple):
    """The maps one decoder step applies: the modules themselves (`Decoder.step_maps`), or,
    in a loop over the target that back-propagates, `StepLinear`s of the same weights
    (`Decoder.loop_maps`: each weight's gradient summed over the loop in one product)."""

    rnn: Callable  # (x (B, I), hidden) -> (s (B, H), hidden)
    query: Callable | None  # s -> W s of the additive score (None: the attention's own)
    combine: Callable  # [s; c] (B, H + M) -> W_c [s; c] + b_c
    out: Callable  # a (B, H) -> logits W_o a + b_o (B, V)
    # the loop passes its step's share of the RNN's input product made from the gold
    # embeddings of all steps at once, W_e y_{t-1} + b (B, G*H), in place of the embedding
    # (input feeding; `Recurrent.stepper(given=E)`)
    embedded_product: bool = False


class Decoder(nn.Module):
    """One step at a time: (y_{t-1}, state, memory) -> (logits (B, V), state, weights (B, S))."""

    def __init__(self, *, vocab_size: int, embedding_size: int, hidden_size: int,
                 memory_size: int, cell: str, num_layers: int, dropout: float, attention: str,
                 style: str, input_feeding: bool, attention_size: int | None,
                 tie_embeddings: bool, backend: str, reset_after: bool):
        super().__init__()
        self.style = "context" if attention == "none" else style
        self.input_feeding = input_feeding and self.style == "luong"
        self.hidden_size = hidden_size
        self.embed = nn.Embedding(vocab_size, embedding_size, padding_idx=PAD)
        self.dropout = Dropout(dropout)
        extra = hidden_size if self.input_feeding else 0 if self.style == "luong" else memory_size
        self.rnn = Recurrent(cell, embedding_size + extra, hidden_size, num_layers=num_layers,
                             dropout=dropout, backend=backend, reset_after=reset_after)
        self.attention = (None if attention == "none" else
                          Attention(attention, hidden_size, memory_size, attention_size))
        self.combine = nn.Linear(hidden_size + memory_size, hidden_size)  # W_c
        self.out = nn.Linear(hidden_size, vocab_size)  # W_o
        if tie_embeddings:
            self.out.weight = self.embed.weight

    def precompute_keys(self, states: Tensor) -> Tensor | None:
        return None if self.attention is None else self.attention.precompute_keys(states)

    def _top(self, hidden: State) -> Tensor:
        return (hidden[0] if isinstance(hidden, tuple) else hidden)[-1]  # (B, H)

    def step_maps(self) -> StepMaps:
        """The modules a step applies (decoding, and loops without gradients)."""
        return StepMaps(self.rnn.step, None, self.combine, self.out)

    def loop_maps(self, projects_steps: bool, embedded_product: bool = False) -> StepMaps:
        """The same maps for one pass of a loop over the target that back-propagates: each
        weight a `StepLinear`, its gradient one product over the loop's steps, and the
        cells' equations for the recurrent step (`Recurrent.stepper`). Make one per pass.

        projects_steps: whether the loop applies the output layer at its steps (scheduled
        sampling); if not, `out` is the module itself, left unused by the loop. A StepLinear
        casts its weight when it is made: under autocast a (V, H) copy per pass, about 1.6 ms
        of a 175 ms bfloat16 step on the peers' model, for nothing when gold inputs are
        projected once after the loop.

        embedded_product (input feeding, gold inputs): the RNN's input [y_{t-1}; a_{t-1}]
        has its embedding part's product made for all steps before the loop (`StepMaps`)."""
        query = None
        if self.attention is not None and self.attention.kind == "additive":
            query = StepLinear(self.attention.query_proj.weight)
        out = StepLinear(self.out.weight, self.out.bias) if projects_steps else self.out
        given = self.embed.embedding_dim if embedded_product else 0
        return StepMaps(self.rnn.stepper(given), query,
                        StepLinear(self.combine.weight, self.combine.bias), out,
                        embedded_product)

    def advance(self, prev: Tensor, state: DecoderState, memory: Memory):
        """The step without the output layer: -> a_t (B, H), new state, weights (B, S) | None."""
        return self._advance(self.dropout(self.embed(prev)), state, memory, self.step_maps())

    def _advance(self, emb: Tensor, state: DecoderState, memory: Memory, maps: StepMaps):
        """`advance` from the embedded (and dropped-out) previous token emb (B, E), or its
        share of the RNN's input product (B, G*H) with maps.embedded_product."""
        weights = None
        if self.style == "luong":
            rnn_in = emb
            if self.input_feeding:
                rnn_in = (emb, state.feed) if maps.embedded_product else \
                    torch.cat([emb, state.feed], -1)
            s, hidden = maps.rnn(rnn_in, state.hidden)  # s: (B, H)
            context, weights = self._attend(s, memory, maps.query)
        else:
            if self.style == "bahdanau":
                query = self._top(state.hidden)  # s_{t-1}
                context, weights = self._attend(query, memory, maps.query)
            else:  # plain context-vector seq2seq
                final = memory.final[0] if isinstance(memory.final, tuple) else memory.final
                context = memory.per_row(final)
            s, hidden = maps.rnn(torch.cat([emb, context], -1), state.hidden)
        a = torch.tanh(maps.combine(torch.cat([s, context], -1)))  # (B, H)
        return a, DecoderState(hidden, a if self.input_feeding else None), weights

    def _attend(self, query: Tensor, memory: Memory,
                query_proj: Callable | None = None) -> tuple[Tensor, Tensor]:
        """One step's attention: query (N, Hq) -> context (N, M), weights (N, S).

        With memory.copies = k > 1, the k queries of a sentence attend to its one stored
        copy as the k "steps" of a (B, k, Hq) query: one (k, S) @ (S, M) product per sentence
        instead of k matrix-vector products over k copies of the source."""
        k = memory.copies
        if k == 1:
            return self.attention(query, memory.keys, memory.states, memory.source_mask,
                                  query_proj)
        context, weights = self.attention(query.view(-1, k, query.size(-1)), memory.keys,
                                          memory.states, memory.source_mask, query_proj)
        return context.flatten(0, 1), weights.flatten(0, 1)

    def project(self, a: Tensor) -> Tensor:
        """a (..., H) -> logits (..., V)."""
        return self.out(self.dropout(a))

    def project_with_loss(self, a: Tensor, targets: Tensor, label_smoothing: float = 0.0):
        """`project` and the summed cross-entropy against targets (N,) in one step (see
        seqlab.losses): a (N, H) -> logits (N, V) (no gradient through them), loss."""
        return linear_cross_entropy(self.dropout(a), self.out.weight, self.out.bias, targets,
                                    label_smoothing)

    def step(self, prev: Tensor, state: DecoderState, memory: Memory):
        a, state, weights = self.advance(prev, state, memory)
        return self.project(a), state, weights

    def forward(self, tgt_in: Tensor, state: DecoderState, memory: Memory,
                teacher_forcing: float = 1.0, generator: torch.Generator | None = None,
                keep: Tensor | None = None, project: bool = True):
        """Teacher-forced pass over tgt_in (B, T) -> logits (B, T, V), weights (B, T, S) | None.

        With teacher_forcing < 1, each sequence at each step t > 0 is fed the gold token
        y_{t-1} with that probability, else the model's own greedy choice (scheduled
        sampling, Bengio et al. 2015, drawn per step and per sequence).
        keep (B, T) bool: project only these positions (the real, non-padding targets), so
        logits are (N, V) for the N kept positions in row-major order; the output layer is
        the largest product of a step, and padding need not pay for it.
        project=False (gold inputs only): the attentional vectors a (B, T, H) or (N, H) in
        place of the logits, for `project_with_loss`.
        """
        B, T = tgt_in.shape
        sampling = teacher_forcing < 1.0
        if sampling and not project:
            raise ValueError("project=False needs teacher_forcing 1: sampling projects every "
                             "step to feed its own choice back")
        if not sampling and self.style == "luong" and not self.input_feeding:
            return self._parallel(tgt_in, state, memory, keep, project)
        # Gold inputs are embedded in one call: the embedding's gradient is then one sparse
        # update of the (V, E) table, not T dense (V, E) gradients summed step by step (a
        # seventh of a training step's time on the peers' model, benchmarks/README.md).
        # (its T steps are unbound once: indexing gold[:, t] at every step would give each
        # step's backward a zero (B, T, E) gradient to fill and add up, O(T^2) work)
        gold = None if sampling else self.dropout(self.embed(tgt_in))  # (B, T, E)
        if torch.is_grad_enabled():
            # with input feeding the RNN's input is [y_{t-1}; a_{t-1}]: the gold part of its
            # product W_e y_{t-1} + b is one product over all steps, only W_f a_{t-1} is
            # stepped (a bfloat16 training step of the peers' model 2-4% faster)
            maps = self.loop_maps(sampling, embedded_product=gold is not None and
                                  self.style == "luong" and self.input_feeding)
            if maps.embedded_product:
                gold = self.rnn.given_product(gold)  # (B, T, G*H)
        else:
            maps = self.step_maps()
        gold = None if gold is None else gold.unbind(1)  # T x (B, E) or (B, G*H)
        if memory.keys is not None and steps_in_float32(memory.keys):  # cast once, not per step
            memory = replace(memory, keys=memory.keys.float())
        outputs, all_weights, logits = [], [], []
        prev = tgt_in[:, 0]
        for t in range(T):
            emb = self.dropout(self.embed(prev)) if gold is None else gold[t]
            a, state, weights = self._advance(emb, state, memory, maps)
            outputs.append(a)
            all_weights.append(weights)
            if sampling:
                logits.append(maps.out(self.dropout(a)))
            if t + 1 < T:
                prev = tgt_in[:, t + 1]
                if sampling:
                    own = logits[-1].argmax(-1)
                    coin = torch.rand(B, generator=generator, device=tgt_in.device)
                    prev = torch.where(coin < teacher_forcing, prev, own)
        # with gold inputs only, one big output product for all T steps
        if sampling:
            out = torch.stack(logits, 1)
            out = out if keep is None else out[keep]
        else:
            out = self._project_kept(torch.stack(outputs, 1), keep, project)
        weights = None if self.attention is None else torch.stack(all_weights, 1)
        return out, weights

    def _project_kept(self, a: Tensor, keep: Tensor | None, project: bool = True) -> Tensor:
        """a (B, T, H) -> logits (B, T, V), or (N, V) for the positions in keep (without
        `project`: a itself, or its (N, H) kept rows)."""
        a = a if keep is None else a[keep]
        return self.project(a) if project else a

    def _parallel(self, tgt_in: Tensor, state: DecoderState, memory: Memory,
                  keep: Tensor | None = None, project: bool = True):
        """Luong without input feeding: the RNN sees only gold tokens, so it runs once over
        the whole target (fused), and attention takes all T queries at once."""
        s, _ = self.rnn(self.dropout(self.embed(tgt_in)), None, state.hidden)  # (B, T, H)
        context, weights = self.attention(s, memory.keys, memory.states, memory.source_mask)
        a = torch.tanh(self.combine(torch.cat([s, context], -1)))  # (B, T, H)
        return self._project_kept(a, keep, project), weights


class Seq2Seq(nn.Module):
    def __init__(self, encoder: Encoder, bridge: Bridge, decoder: Decoder):
        super().__init__()
        self.encoder, self.bridge, self.decoder = encoder, bridge, decoder

    def encode(self, src: Tensor, src_lengths: Tensor) -> Memory:
        """src (B, S) padded with PAD, src_lengths (B,) -> Memory."""
        states, final = self.encoder(src, src_lengths)
        mask = src != PAD  # (B, S)
        return Memory(states, self.decoder.precompute_keys(states), mask, final)

    def init_state(self, memory: Memory) -> DecoderState:
        hidden = self.bridge(memory.per_row(memory.final))  # one first state per decoder row
        h = hidden[0] if isinstance(hidden, tuple) else hidden
        feed = h.new_zeros(h.shape[1], self.decoder.hidden_size) if self.decoder.input_feeding \
            else None
        return DecoderState(hidden, feed)

    def step(self, prev: Tensor, state: DecoderState, memory: Memory):
        """prev (B,) -> logits (B, V), new state, attention weights (B, S) or None."""
        return self.decoder.step(prev, state, memory)

    def teacher_forced(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor,
                       teacher_forcing: float = 1.0, generator: torch.Generator | None = None,
                       keep: Tensor | None = None, project: bool = True):
        """Teacher-forced pass -> logits (B, T, V), attention (B, T, S) or None.
        With keep (B, T) bool, logits are (N, V): only the kept positions are projected.
        project=False: the decoder's attentional vectors instead (see Decoder.forward)."""
        memory = self.encode(src, src_lengths)
        return self.decoder(tgt_in, self.init_state(memory), memory, teacher_forcing, generator,
                            keep, project)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, targets: Tensor, *,
                label_smoothing: float = 0.0, teacher_forcing: float = 1.0,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The training pass and its loss: targets (B, T) = tgt_out, PAD after each row's end.

        -> logits (N, V) of the N real (non-PAD) target positions in row-major order, and the
        cross-entropy summed over them (optionally label-smoothed): the loss of
        p(y | x) = prod_t p(y_t | y_<t, x). Only the real positions are projected onto the
        vocabulary (the output layer is the largest product of a step), and with gold inputs
        the projection and the loss are one step (`Decoder.project_with_loss`); the logits
        then carry no gradient."""
        real = targets != PAD  # (B, T)
        if teacher_forcing >= 1.0:
            a, _ = self.teacher_forced(src, src_lengths, tgt_in, keep=real, project=False)
            return self.decoder.project_with_loss(a, targets[real], label_smoothing)
        logits, _ = self.teacher_forced(src, src_lengths, tgt_in, teacher_forcing, generator,
                                        keep=real)
        loss = F.cross_entropy(logits, targets[real], label_smoothing=label_smoothing,
                               reduction="sum")
        return logits, loss


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> Seq2Seq:
    """The one place that reads the model config."""
    directions = 2 if cfg.bidirectional else 1
    memory_size = cfg.hidden_size  # encoder output: D directions of hidden_size // D units
    common = dict(cell=cfg.cell, dropout=cfg.dropout, backend=cfg.backend,
                  reset_after=cfg.gru_reset_after)
    encoder = Encoder(vocab_size=src_vocab_size, embedding_size=cfg.embedding_size,
                      hidden_size=cfg.hidden_size // directions, num_layers=cfg.encoder_layers,
                      bidirectional=cfg.bidirectional, **common)
    bridge = Bridge(cfg.bridge, memory_size, cfg.hidden_size, cfg.decoder_layers,
                    lstm=cfg.cell == "lstm")
    decoder = Decoder(vocab_size=tgt_vocab_size, embedding_size=cfg.embedding_size,
                      hidden_size=cfg.hidden_size, memory_size=memory_size,
                      num_layers=cfg.decoder_layers, attention=cfg.attention,
                      style=cfg.attention_style, input_feeding=cfg.input_feeding,
                      attention_size=cfg.attention_size, tie_embeddings=cfg.tie_embeddings,
                      **common)
    return Seq2Seq(encoder, bridge, decoder)
