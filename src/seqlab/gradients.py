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

`layer` is a one-direction `seqlab.recurrent.Recurrent` of any cell and depth; its own cell
equations (seqlab.cells) are stepped so that every h_t (of the top layer) is kept.
`language_model_profile(model, ids)` does it for a language model of the lm problem, the loss
being that of its last prediction. Shapes: B batch, T steps, I input size, H hidden size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from seqlab.recurrent import Recurrent


def hidden_states(layer: Recurrent, x: Tensor) -> list[Tensor]:
    """h_1..h_T (each (B, H)) of the top layer of a one-direction stack over x (B, T, I), from
    a zero state, every layer stepped in lockstep with its cell equations (the graph keeps
    every h_t; no dropout between layers, as in evaluation)."""
    if layer.directions != 1:
        raise ValueError("state_gradient_norms needs a one-direction layer (a bidirectional "
                         "one reads the future too)")
    weights = [layer._weights(k, 0) for k in range(layer.num_layers)]
    zeros = x.new_zeros(x.shape[0], layer.hidden_size)
    states = [(zeros, zeros) if layer.cell == "lstm" else zeros for _ in weights]
    gx0 = F.linear(x, weights[0][0], weights[0][2])  # (B, T, G*H): layer 1's inputs at once

    def h(state):  # a layer's output: h, or the h of the LSTM's (h, c)
        return state[0] if layer.cell == "lstm" else state

    out = []
    for t in range(x.shape[1]):
        for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
            gx = gx0[:, t] if k == 0 else F.linear(h(states[k - 1]), w_ih, b_ih)
            states[k] = layer._step(gx, states[k], w_hh, b_hh)
        out.append(h(states[-1]))
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


def language_model_profile(model, ids: list[int]) -> Tensor:
    """A trained (or fresh) `RNNLanguageModel` reading ids x_1..x_T+1: ||dL/dh_t|| of its top
    layer for t = 1..T, L = -log p(x_{T+1} | x_1..x_T), the loss of the last prediction."""
    if len(ids) < 3:
        raise ValueError("need a text of at least 3 tokens")
    model.eval()
    inputs = torch.tensor([ids[:-1]])
    target = torch.tensor([ids[-1]])
    x = model.embed(inputs)  # (1, T, E)
    return state_gradient_norms(
        model.rnn, x, lambda h: F.cross_entropy(model.out(h), target, reduction="sum"))
