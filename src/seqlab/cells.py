"""Recurrent cells written from their equations.

An RNN is a state-space model: a hidden state carries what the network has seen,

    x_t = f(x_{t-1}, u_t)        (state update: the cell)
    y_t = h(x_t)                 (read-out: a layer on top of the state)

with the same weights at every time step, trained by back-propagation through time.
In the code below the input u_t is called `x` and the state `h` (and `c` for the LSTM),
as in PyTorch.

Each cell comes in two layers:

* a pure step function of (input projection, state, recurrent weights) -> new state.
  The input projection `gx = W_ih x + b_ih` does not depend on the state, so a layer
  computes it for all time steps with one matrix product and only the recurrent part
  is stepped (this is what cuDNN does too);
* a module (`RNNCell`, `LSTMCell`, `GRUCell`) that owns the parameters and calls it.

Parameter names, shapes and gate order follow `torch.nn` (`weight_ih` (G*H, I),
`weight_hh` (G*H, H), `bias_ih` (G*H,), `bias_hh` (G*H,); LSTM gates i, f, g, o;
GRU gates r, z, n), so a state dict copies straight from `torch.nn.LSTMCell`,
`torch.nn.GRUCell` or `torch.nn.RNNCell`. Shapes: B batch, I input size, H hidden size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

LSTMState = tuple[Tensor, Tensor]

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def rnn_step(
    gx: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, nonlinearity: str = "tanh"
) -> Tensor:
    """Elman RNN:  h' = act(W_ih x + b_ih + W_hh h + b_hh),  act = tanh or relu.

    gx: (B, H) = W_ih x + b_ih;  h: (B, H)  ->  h': (B, H)
    """
    return rnn_update(gx, F.linear(h, w_hh, b_hh), nonlinearity)


def rnn_update(gx: Tensor, gh: Tensor, nonlinearity: str = "tanh") -> Tensor:
    """The Elman step from its two products gx = W_ih x + b_ih and gh = W_hh h + b_hh."""
    pre = gx + gh
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def lstm_step(gx: Tensor, state: LSTMState, w_hh: Tensor, b_hh: Tensor) -> LSTMState:
    """LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000):

        i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      input gate
        f = sigmoid(W_if x + b_if + W_hf h + b_hf)      forget gate
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)         cell candidate
        o = sigmoid(W_io x + b_io + W_ho h + b_ho)      output gate
        c' = f * c + i * g
        h' = o * tanh(c')

    gx: (B, 4H) = W_ih x + b_ih in gate order i, f, g, o;  state (h, c): (B, H) each.
    The additive cell path c' = f * c + ... is what lets gradients survive long spans.
    """
    h, c = state
    return lstm_update(gx, F.linear(h, w_hh, b_hh), c)


def lstm_update(gx: Tensor, gh: Tensor, c: Tensor) -> LSTMState:
    """The LSTM step from its two products gx = W_ih x + b_ih, gh = W_hh h + b_hh (B, 4H)
    and the cell state c (B, H)."""
    i, f, g, o = (gx + gh).chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new


def gru_step(gx: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, reset_after: bool = True) -> Tensor:
    """GRU (Cho et al. 2014):

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      reset gate
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)      update gate
        reset_after=False (Cho et al. 2014, the original):
            g = tanh(W_ig x + b_ig + W_hg (r * h) + b_hg)
        reset_after=True (cuDNN, torch.nn.GRU):
            g = tanh(W_ig x + b_ig + r * (W_hg h + b_hg))
        h' = z * h + (1 - z) * g

    gx: (B, 3H) = W_ih x + b_ih in gate order r, z, n (torch calls g "n");  h: (B, H).
    The two forms differ only in where r is applied. reset_after=True lets the three
    recurrent products W_h{r,z,g} h be one matrix product before r is known (one GEMM
    per step instead of two dependent ones) and is the form cuDNN implements.
    """
    if reset_after:
        return gru_update(gx, F.linear(h, w_hh, b_hh), h)
    x_r, x_z, x_g = gx.chunk(3, dim=-1)
    hidden = h.shape[-1]
    h_r, h_z = F.linear(h, w_hh[: 2 * hidden], b_hh[: 2 * hidden]).chunk(2, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    g = torch.tanh(x_g + F.linear(r * h, w_hh[2 * hidden :], b_hh[2 * hidden :]))
    return z * h + (1 - z) * g


def gru_update(gx: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    """The reset-after GRU step from its two products gx = W_ih x + b_ih and
    gh = W_hh h + b_hh (B, 3H, gate order r, z, n) and the state h (B, H)."""
    x_r, x_z, x_g = gx.chunk(3, dim=-1)
    h_r, h_z, h_g = gh.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    g = torch.tanh(x_g + r * h_g)
    return z * h + (1 - z) * g


class _Cell(nn.Module):
    """Parameters shared by the three cells: torch.nn's names, shapes and initialisation
    (uniform in [-1/sqrt(H), 1/sqrt(H)])."""

    def __init__(self, input_size: int, hidden_size: int, gates: int):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(gates * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(gates * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _zeros(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.hidden_size)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class RNNCell(_Cell):
    """Vanilla (Elman) RNN cell: h' = act(W_ih x + b_ih + W_hh h + b_hh).

    `cell(x (B, I), h (B, H) or None) -> h' (B, H)`; state-dict compatible with
    `torch.nn.RNNCell`.
    """

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
        super().__init__(input_size, hidden_size, GATES["rnn"])
        self.nonlinearity = nonlinearity

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        h = self._zeros(x) if h is None else h
        gx = F.linear(x, self.weight_ih, self.bias_ih)
        return rnn_step(gx, h, self.weight_hh, self.bias_hh, self.nonlinearity)


class LSTMCell(_Cell):
    """LSTM cell (gates i, f, g, o); see `lstm_step` for the equations.

    `cell(x (B, I), (h, c) or None) -> (h', c')`, each (B, H); state-dict compatible
    with `torch.nn.LSTMCell`.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size, GATES["lstm"])

    def forward(self, x: Tensor, state: LSTMState | None = None) -> LSTMState:
        if state is None:
            state = (self._zeros(x), self._zeros(x))
        gx = F.linear(x, self.weight_ih, self.bias_ih)
        return lstm_step(gx, state, self.weight_hh, self.bias_hh)


class GRUCell(_Cell):
    """GRU cell (gates r, z, n); see `gru_step` for the equations.

    `cell(x (B, I), h (B, H) or None) -> h' (B, H)`.

    reset_after=True (the default) is the cuDNN / `torch.nn.GRUCell` form, so its state
    dict copies from torch and a layer of these cells can run on the fused kernels.
    reset_after=False is the original form of Cho et al. (2014), with the reset gate
    applied to h before the recurrent product; it has the same parameters but is a
    different function, and only the `cells` backend can run it.
    """

    def __init__(self, input_size: int, hidden_size: int, reset_after: bool = True):
        super().__init__(input_size, hidden_size, GATES["gru"])
        self.reset_after = reset_after

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        h = self._zeros(x) if h is None else h
        gx = F.linear(x, self.weight_ih, self.bias_ih)
        return gru_step(gx, h, self.weight_hh, self.bias_hh, self.reset_after)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reset_after={self.reset_after}"
