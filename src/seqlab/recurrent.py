"""A recurrent layer for any cell: stacked, bidirectional, batch-first, variable lengths.

Two backends share one set of parameters:

* `cells`: the equations of `seqlab.cells`, stepped in Python. Readable, and the only
  way to run the original (reset-before) GRU.
* `fused`: `torch.nn.RNN` / `LSTM` / `GRU` on packed sequences (oneDNN on CPU, cuDNN on
  GPU). Same math for every cell except the reset-before GRU.

The parameters live in a `torch.nn.RNN` / `LSTM` / `GRU` module (`self.rnn`), used as the
container in both backends: names `weight_ih_l{k}[_reverse]`, `weight_hh_l{k}[_reverse]`,
`bias_ih_l{k}[_reverse]`, `bias_hh_l{k}[_reverse]`, gate order as in `seqlab.cells`. So a
checkpoint made with one backend loads into the other, and `layer.rnn.load_state_dict(
torch_lstm.state_dict())` copies weights from torch.

Shapes: B batch, S steps, I input size, H hidden size, L layers, D directions (1 or 2).
Final states use torch's layout: h (L*D, B, H) with row k*D + d for layer k direction d
(and c alike for the LSTM).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqlab.cells import gru_step, gru_update, lstm_step, lstm_update, rnn_step, rnn_update
from seqlab.dropout import dropout
from seqlab.precision import linear_bucketed
from seqlab.shared_weights import StepLinear

log = logging.getLogger(__name__)

State = Tensor | tuple[Tensor, Tensor]  # h, or (h, c) for the LSTM


def map_state(state, fn):
    """`fn` applied to a tensor, or to each of an LSTM's (h, c); None stays None."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(fn(s) for s in state)
    return fn(state)


def select_state(state, index: Tensor, dim: int):
    """Rows of a tensor or of an LSTM's (h, c) picked / repeated by index along `dim`."""
    return map_state(state, lambda s: s.index_select(dim, index))
CELLS = ("rnn", "lstm", "gru")
BACKENDS = ("auto", "cells", "fused")


def choose_backend(cell: str, backend: str, reset_after: bool) -> str:
    """`auto` -> `fused` whenever it computes the same function as the cells, else `cells`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    fusable = not (cell == "gru" and not reset_after)
    if backend == "fused" and not fusable:
        raise ValueError(
            "the fused backend (torch.nn.GRU / cuDNN) implements the reset-after GRU only; "
            "use backend='cells' or 'auto' for reset_after=False"
        )
    if backend == "auto":
        return "fused" if fusable else "cells"
    return backend


class Recurrent(nn.Module):
    """Stacked (bi)directional recurrent layer.

    `layer(x (B, S, I), lengths (B,) or None, state or None) -> (outputs (B, S, D*H), final)`

    Padded steps (t >= lengths[b]) never change a sequence's state: its final state is
    that of its last real step (for the reverse direction: of its first step), and its
    outputs there are zero. Dropout with probability `dropout` is applied between layers
    (not after the last), in training only.
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        backend: str = "auto",
        reset_after: bool = True,
        nonlinearity: str = "tanh",
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, not {cell!r}")
        self.cell = cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.directions = 2 if bidirectional else 1
        self.dropout = dropout
        self.reset_after = reset_after
        self.nonlinearity = nonlinearity
        self.backend = choose_backend(cell, backend, reset_after)
        if backend == "auto":
            log.info("recurrent layer (%s): backend auto -> %s", cell, self.backend)
        common = dict(
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        if cell == "lstm":
            self.rnn = nn.LSTM(input_size, hidden_size, **common)
        elif cell == "gru":
            self.rnn = nn.GRU(input_size, hidden_size, **common)
        else:
            self.rnn = nn.RNN(input_size, hidden_size, nonlinearity=nonlinearity, **common)

    @property
    def output_size(self) -> int:
        return self.directions * self.hidden_size

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, reset_after={self.reset_after}"

    # ------------------------------------------------------------------ whole sequences
    def forward(
        self, x: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State]:
        if self.backend == "fused":
            return self._forward_fused(x, lengths, state)
        return self._forward_cells(x, lengths, state)

    def _forward_fused(self, x: Tensor, lengths: Tensor | None, state: State | None):
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # torch's fused layer on the CPU would make every step's recurrent product a small
            # autocast product (the state cast at every step, and a new bfloat16 kernel built
            # for every new packed row count); in float32 it is faster (forward and backward
            # of the peers' encoder 0.91x) and its state is never rounded. The layers after it
            # still multiply in bfloat16.
            with torch.autocast("cpu", enabled=False):
                return self._run_fused(x.float(), lengths, map_state(state, Tensor.float))
        return self._run_fused(x, lengths, state)

    def _run_fused(self, x: Tensor, lengths: Tensor | None, state: State | None):
        B, S, _ = x.shape
        if lengths is None or bool((lengths == S).all()):
            return self.rnn(x, state)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=S)  # (B, S, D*H)
        return out, final

    def _forward_cells(self, x: Tensor, lengths: Tensor | None, state: State | None):
        B, S, _ = x.shape
        L, D, H = self.num_layers, self.directions, self.hidden_size
        if state is None:
            zeros = x.new_zeros(L * D, B, H)
            state = (zeros, zeros) if self.cell == "lstm" else zeros
        # mask (S, B, 1): True where step t is real for sequence b
        mask = None
        if lengths is not None:
            steps = torch.arange(S, device=x.device)
            mask = (steps[:, None] < lengths.to(x.device)[None, :]).unsqueeze(-1)
        finals = []
        layer_input = x
        for k in range(L):
            outputs = []
            for d in range(D):
                row = k * D + d
                init = (state[0][row], state[1][row]) if self.cell == "lstm" else state[row]
                out, final = self._run_direction(layer_input, init, k, d, mask)
                outputs.append(out)
                finals.append(final)
            layer_input = torch.cat(outputs, dim=-1) if D == 2 else outputs[0]
            if k < L - 1 and self.dropout > 0:
                layer_input = dropout(layer_input, self.dropout, self.training)
        if self.cell == "lstm":
            final_state = (torch.stack([f[0] for f in finals]), torch.stack([f[1] for f in finals]))
        else:
            final_state = torch.stack(finals)
        return layer_input, final_state

    def _weights(self, layer: int, direction: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        suffix = f"l{layer}" + ("_reverse" if direction else "")
        return tuple(getattr(self.rnn, f"{name}_{suffix}") for name in
                     ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def _step(self, gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor) -> State:
        if self.cell == "lstm":
            return lstm_step(gx, state, w_hh, b_hh)
        if self.cell == "gru":
            return gru_step(gx, state, w_hh, b_hh, self.reset_after)
        return rnn_step(gx, state, w_hh, b_hh, self.nonlinearity)

    def _recurrence(self, layer: int, direction: int):
        """(gx = W_ih x + b_ih, state) -> new state, for one layer and direction of a loop
        over time: the recurrent product W_hh h + b_hh is a `StepLinear`, its gradient summed
        over the loop in one product (the reset-before GRU, whose product splits around r,
        steps `gru_step` as it is). Make one per pass."""
        _, w_hh, _, b_hh = self._weights(layer, direction)
        if self.cell == "gru" and not self.reset_after:
            return lambda gx, h: gru_step(gx, h, w_hh, b_hh, reset_after=False)
        hh = StepLinear(w_hh, b_hh)
        if self.cell == "lstm":
            return lambda gx, state: lstm_update(gx, hh(state[0]), state[1])
        if self.cell == "gru":
            return lambda gx, h: gru_update(gx, hh(h), h)
        return lambda gx, h: rnn_update(gx, hh(h), self.nonlinearity)

    def _run_direction(self, x: Tensor, state: State, layer: int, direction: int, mask):
        """One layer, one direction over all steps. x: (B, S, I) -> out (B, S, H), final."""
        w_ih, _, b_ih, _ = self._weights(layer, direction)
        # all input products at once, one (B, G*H) tensor per step: unbind's backward is one
        # stack, where indexing gx[t] at every step would make a zero (S, B, G*H) gradient
        # per step and add them up (O(S^2) work in back-propagation)
        gx = linear_bucketed(x, w_ih, b_ih).unbind(1)
        recurrence = self._recurrence(layer, direction)
        S = len(gx)
        steps = range(S - 1, -1, -1) if direction else range(S)
        outs: list[Tensor] = [None] * S  # type: ignore[list-item]
        for t in steps:
            new = recurrence(gx[t], state)
            if mask is not None:  # padded step: keep the state, output zero
                m = mask[t]
                if self.cell == "lstm":
                    new = (torch.where(m, new[0], state[0]), torch.where(m, new[1], state[1]))
                else:
                    new = torch.where(m, new, state)
            state = new
            h = state[0] if self.cell == "lstm" else state
            outs[t] = h if mask is None else h * mask[t]
        return torch.stack(outs, dim=1), state

    # ------------------------------------------------------------------ one step
    def step(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One time step of a unidirectional stack, for decoders.

        x: (B, I), state (L, B, H) [or (h, c)] -> output of the top layer (B, H), new state.
        """
        if self.directions != 1:
            raise ValueError("step() needs a unidirectional layer")
        if self.backend == "fused":
            out, state = self.rnn(x.unsqueeze(1), state)
            return out[:, 0], state
        return self.stepper()(x, state)

    def stepper(self, given: int = 0):
        """`step` for a loop over time: (x (B, I), state or None) -> (output (B, H), state),
        the cells' equations whichever the backend, every product a `StepLinear` (its weight
        gradient summed over the loop in one product; seqlab.shared_weights). Make one per
        pass through the loop, before it.

        given > 0: the first `given` features u_t of the first layer's input x_t = [u_t; f_t]
        are known for every step before the loop (a decoder's gold embeddings, beside the
        input feeding f_t made by the loop). W_ih x_t + b_ih = (W_u u_t + b_ih) + W_f f_t,
        and the first part is one product over all steps (`given_product`); the stepper
        then takes x = (W_u u_t + b_ih (B, G*H), f_t (B, I - given))."""
        if self.directions != 1:
            raise ValueError("stepper() needs a unidirectional layer")
        layers = []
        for k in range(self.num_layers):
            w_ih, _, b_ih, _ = self._weights(k, 0)
            ih = _plus_rest(StepLinear(w_ih[:, given:])) if k == 0 and given else \
                StepLinear(w_ih, b_ih)  # W_f f_t added to the given part, or W_ih x_t + b_ih
            layers.append((ih, self._recurrence(k, 0)))
        return lambda x, state: self._step_layers(layers, x, state)

    def given_product(self, u: Tensor) -> Tensor:
        """u (B, T, k) -> W_u u + b_ih (B, T, G*H), W_u = the first layer's W_ih[:, :k]: the
        part of its input product known before a loop, for all steps at once (`stepper`)."""
        w_ih, _, b_ih, _ = self._weights(0, 0)
        return linear_bucketed(u, w_ih[:, :u.shape[-1]], b_ih)

    def _step_layers(self, layers, x, state: State | None) -> tuple[Tensor, State]:
        first = x[1] if isinstance(x, tuple) else x  # (given product, rest) or x itself
        B = first.shape[0]
        if state is None:
            zeros = first.new_zeros(self.num_layers, B, self.hidden_size)
            state = (zeros, zeros) if self.cell == "lstm" else zeros
        new_states = []
        layer_input = x
        for k, (ih, recurrence) in enumerate(layers):
            prev = (state[0][k], state[1][k]) if self.cell == "lstm" else state[k]
            new = recurrence(ih(layer_input), prev)
            new_states.append(new)
            layer_input = new[0] if self.cell == "lstm" else new
            if k < self.num_layers - 1 and self.dropout > 0:
                layer_input = dropout(layer_input, self.dropout, self.training)
        if self.cell == "lstm":
            return layer_input, (torch.stack([s[0] for s in new_states]),
                                 torch.stack([s[1] for s in new_states]))
        return layer_input, torch.stack(new_states)


def _plus_rest(rest: StepLinear):
    """x = (given product (B, G*H), rest f_t) -> given product + W_f f_t (see `stepper`)."""
    return lambda x: x[0] + rest(x[1])
