"""Gradients through time, measured: how much the loss at the last step still reaches each
earlier hidden state ("the farther, the more it is forgotten", 멀수록 잊혀진다).

Back-propagation through time multiplies one Jacobian per step:

    dL/dh_t = dL/dh_T  prod_{k=t+1..T} dh_k/dh_{k-1}

For the plain RNN, dh_k/dh_{k-1} = diag(tanh'(.)) W_hh: when the largest singular value of
W_hh times the tanh slope stays below 1 the product shrinks geometrically with the distance
T - t (vanishing gradients), above 1 it can grow (exploding gradients, Bengio et al. 1994;
Pascanu et al. 2013). The LSTM's cell state c_k = f * c_{k-1} + i * g gives the path a factor
of the forget gate f alone, which training can hold near 1 (the constant error carousel).

    norms = state_gradient_norms(layer, x, loss_of_last)   # (T,): ||dL/dh_t||, t = 1..T
    cosine = update_cosine(grads, clipped)                  # what clipping did to the direction

`layer` is a one-layer, one-direction `seqlab.recurrent.Recurrent` of any cell; its own cell
equations (seqlab.cells) are stepped so that every h_t is kept. Shapes: B batch, T steps,
I input size, H hidden size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from seqlab.recurrent import Recurrent


def hidden_states(layer: Recurrent, x: Tensor) -> list[Tensor]:
    """h_1..h_T (each (B, H)) of a one-layer, one-direction layer over x (B, T, I), from a
    zero state, stepped with the layer's cell equations (the graph keeps every h_t)."""
    if layer.num_layers != 1 or layer.directions != 1:
        raise ValueError("state_gradient_norms needs a one-layer, one-direction layer")
    w_ih, w_hh, b_ih, b_hh = layer._weights(0, 0)
    gx = F.linear(x, w_ih, b_ih)  # (B, T, G*H): the input part of every step at once
    zeros = x.new_zeros(x.shape[0], layer.hidden_size)
    state = (zeros, zeros) if layer.cell == "lstm" else zeros
    out = []
    for t in range(x.shape[1]):
        state = layer._step(gx[:, t], state, w_hh, b_hh)
        out.append(state[0] if layer.cell == "lstm" else state)
    return out


def state_gradient_norms(layer: Recurrent, x: Tensor,
                         loss_of_last: Callable[[Tensor], Tensor]) -> Tensor:
    """||dL/dh_t|| for t = 1..T -> (T,), L = loss_of_last(h_T) (a scalar).

    dL/dh_t is the total derivative: every path from h_t to the loss, through the later
    states (and, for the LSTM, through the later cell states they feed). The norm is taken
    over the whole (B, H) gradient. Parameters get no gradient (nothing is accumulated)."""
    states = hidden_states(layer, x)
    loss = loss_of_last(states[-1])
    grads = torch.autograd.grad(loss, states)
    return torch.stack([g.norm() for g in grads]).detach()


def flat_gradient(parameters: Sequence[torch.nn.Parameter]) -> Tensor:
    """Every parameter's .grad in one vector (zeros where a parameter has none)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in parameters])


def update_cosine(before: Tensor, after: Tensor) -> float:
    """cos(angle) between a gradient and its clipped version: 1.0 when clipping only shrinks
    it (clipping by global norm), below 1 when it turns it (clipping each value)."""
    return float(F.cosine_similarity(before, after, dim=0))
