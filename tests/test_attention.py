"""Attention: each score against a loop over positions, a hand-worked example, masking,
the multi-query form, and gradcheck through every kind."""

from __future__ import annotations

import math

import pytest
import torch

from seqlab.attention import KINDS, Attention, additive, attend, dot, general, scaled_dot

B, S, T, H, M, A = 2, 5, 3, 4, 6, 7


def _memory_and_mask(memory_size: int = M) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(B, S, memory_size, generator=g, dtype=torch.float64)
    lengths = torch.tensor([S, 3])
    mask = torch.arange(S)[None, :] < lengths[:, None]  # (B, S)
    return memory, mask


def _module(kind: str) -> Attention:
    torch.manual_seed(0)
    memory_size = H if kind in ("dot", "scaled_dot") else M
    attention_size = A if kind == "additive" else None
    return Attention(kind, H, memory_size, attention_size).double()


# --- score functions against loops over positions ---------------------------------------


def test_dot_matches_loop():
    q = torch.randn(B, H, dtype=torch.float64)
    keys = torch.randn(B, S, H, dtype=torch.float64)
    expected = torch.tensor(
        [[sum(q[b, i] * keys[b, j, i] for i in range(H)) for j in range(S)] for b in range(B)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(dot(q, keys), expected)


def test_scaled_dot_is_dot_over_sqrt_key_size():
    q = torch.randn(B, T, H, dtype=torch.float64)
    keys = torch.randn(B, S, H, dtype=torch.float64)
    torch.testing.assert_close(scaled_dot(q, keys), dot(q, keys) / math.sqrt(H))


def test_general_matches_loop():
    q = torch.randn(B, H, dtype=torch.float64)
    memory = torch.randn(B, S, M, dtype=torch.float64)
    w = torch.randn(H, M, dtype=torch.float64)
    expected = torch.empty(B, S, dtype=torch.float64)
    for b in range(B):
        for j in range(S):
            expected[b, j] = q[b] @ w @ memory[b, j]  # s^T W h
    torch.testing.assert_close(general(q, memory @ w.T), expected)


def test_additive_matches_loop():
    q = torch.randn(B, H, dtype=torch.float64)
    memory = torch.randn(B, S, M, dtype=torch.float64)
    w = torch.randn(A, H, dtype=torch.float64)
    u = torch.randn(A, M, dtype=torch.float64)
    v = torch.randn(A, dtype=torch.float64)
    expected = torch.empty(B, S, dtype=torch.float64)
    for b in range(B):
        for j in range(S):
            expected[b, j] = v @ torch.tanh(w @ q[b] + u @ memory[b, j])  # v^T tanh(W s + U h)
    torch.testing.assert_close(additive(q, memory @ u.T, w, v), expected)


@pytest.mark.parametrize("chunk", [1, 2 * S * A, 3 * 2 * S * A, 1 << 30],
                         ids=["row-by-row", "two-rows", "uneven-last-chunk", "one-go"])
def test_additive_without_autograd_by_chunks(monkeypatch, chunk):
    """Decoding (no autograd) scores by chunks of sentences (attention._additive_by_chunks):
    the same scores as the loop, for steps (B, T, Hq) queries too, at any chunk size."""
    from seqlab import attention

    monkeypatch.setattr(attention, "CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(5)
    B7, T = 7, 2
    q = torch.randn(B7, T, H, dtype=torch.float64, generator=g)
    memory = torch.randn(B7, S, M, dtype=torch.float64, generator=g)
    w, u = (torch.randn(A, n, dtype=torch.float64, generator=g) for n in (H, M))
    v = torch.randn(A, dtype=torch.float64, generator=g)
    expected = torch.empty(B7, T, S, dtype=torch.float64)
    for b in range(B7):
        for t in range(T):
            for j in range(S):
                expected[b, t, j] = v @ torch.tanh(w @ q[b, t] + u @ memory[b, j])
    with torch.no_grad():
        torch.testing.assert_close(additive(q, memory @ u.T, w, v), expected)
        torch.testing.assert_close(additive(q[:, 0], memory @ u.T, w, v), expected[:, 0])


@pytest.mark.parametrize("kind", KINDS)
def test_module_matches_loop_over_positions(kind):
    attn = _module(kind)
    memory, mask = _memory_and_mask(attn.memory_size)
    q = torch.randn(B, H, dtype=torch.float64)
    context, weights = attn(q, attn.precompute_keys(memory), memory, mask)
    for b in range(B):
        scores = []
        for j in range(int(mask[b].sum())):
            s, h = q[b], memory[b, j]
            if kind == "dot":
                scores.append(s @ h)
            elif kind == "scaled_dot":
                scores.append(s @ h / math.sqrt(H))
            elif kind == "general":
                scores.append(s @ attn.key_proj.weight @ h)
            else:
                w, u = attn.query_proj.weight, attn.key_proj.weight
                scores.append(attn.v @ torch.tanh(w @ s + u @ h))
        a = torch.softmax(torch.stack(scores), dim=0)
        n = len(scores)
        torch.testing.assert_close(weights[b, :n], a)
        torch.testing.assert_close(context[b], sum(a[j] * memory[b, j] for j in range(n)))


# --- a hand-worked example ------------------------------------------------------------


def test_hand_worked_example():
    # query (1, 0) against keys (1, 0) and (0, 1): scores 1 and 0,
    # weights e/(e+1) = 0.7311 and 1/(e+1) = 0.2689, context 10 a_1 + 20 a_2 = 12.689.
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    values = torch.tensor([[[10.0], [20.0]]], dtype=torch.float64)
    context, weights = attend(dot(q, keys), values, torch.tensor([[True, True]]))
    e = math.e
    torch.testing.assert_close(
        weights, torch.tensor([[e / (e + 1), 1 / (e + 1)]], dtype=torch.float64)
    )
    assert weights[0, 0].item() == pytest.approx(0.7310586, abs=1e-7)
    assert context[0, 0].item() == pytest.approx(10 * e / (e + 1) + 20 / (e + 1))
    assert context[0, 0].item() == pytest.approx(12.689414, abs=1e-6)
    # scaled by sqrt(2): scores 1/sqrt(2) and 0
    _, w2 = attend(scaled_dot(q, keys), values)
    p = 1 / (1 + math.exp(-1 / math.sqrt(2)))
    torch.testing.assert_close(w2, torch.tensor([[p, 1 - p]], dtype=torch.float64))


# --- masking and normalization --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps", [None, T])
def test_masked_positions_get_zero_weight_and_change_nothing(kind, steps):
    attn = _module(kind)
    memory, mask = _memory_and_mask(attn.memory_size)
    q = torch.randn((B, H) if steps is None else (B, T, H), dtype=torch.float64)
    context, weights = attn(q, attn.precompute_keys(memory), memory, mask)
    pad = ~mask if steps is None else (~mask)[:, None, :].expand_as(weights)
    assert torch.all(weights[pad] == 0.0)  # exactly zero, not just small
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1], dtype=torch.float64))

    garbage = memory.clone()
    garbage[~mask] = 1e3 * torch.randn(int((~mask).sum()), attn.memory_size, dtype=torch.float64)
    context2, weights2 = attn(q, attn.precompute_keys(garbage), garbage, mask)
    torch.testing.assert_close(context2, context, rtol=0, atol=0)
    torch.testing.assert_close(weights2, weights, rtol=0, atol=0)


def test_no_mask_attends_everywhere():
    scores = torch.randn(B, S)
    values = torch.randn(B, S, M)
    context, weights = attend(scores, values)
    torch.testing.assert_close(weights, torch.softmax(scores, -1))
    assert torch.all(weights > 0)
    assert context.shape == (B, M)


def test_mask_must_be_bool():
    with pytest.raises(TypeError, match="bool"):
        attend(torch.randn(B, S), torch.randn(B, S, M), torch.ones(B, S, dtype=torch.long))


# --- the multi-query form equals the loop of steps -----------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_multi_query_equals_loop_of_steps(kind):
    attn = _module(kind)
    memory, mask = _memory_and_mask(attn.memory_size)
    keys = attn.precompute_keys(memory)
    q = torch.randn(B, T, H, dtype=torch.float64)
    context, weights = attn(q, keys, memory, mask)
    assert context.shape == (B, T, attn.memory_size)
    assert weights.shape == (B, T, S)
    for t in range(T):
        c_t, w_t = attn(q[:, t], keys, memory, mask)
        assert c_t.shape == (B, attn.memory_size) and w_t.shape == (B, S)
        torch.testing.assert_close(context[:, t], c_t)
        torch.testing.assert_close(weights[:, t], w_t)


# --- gradients ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_through_every_kind_and_its_parameters(kind):
    attn = _module(kind)
    memory, mask = _memory_and_mask(attn.memory_size)
    memory.requires_grad_(True)
    q = torch.randn(B, T, H, dtype=torch.float64, requires_grad=True)
    params = tuple(attn.parameters())
    assert len(params) == {"dot": 0, "scaled_dot": 0, "general": 1, "additive": 3}[kind]

    # The parameters are passed as gradcheck inputs: gradcheck perturbs them in place,
    # which is what the module sees, and compares with their autograd gradients.
    def f(query, mem, *_params):
        return attn(query, attn.precompute_keys(mem), mem, mask)

    assert torch.autograd.gradcheck(f, (q, memory, *params))


# --- construction ---------------------------------------------------------------------


def test_constructor_errors():
    with pytest.raises(ValueError, match="unknown attention kind 'luong'"):
        Attention("luong", 4, 4)
    with pytest.raises(ValueError, match="query_size == memory_size"):
        Attention("dot", 4, 8)
    with pytest.raises(ValueError, match="query_size == memory_size"):
        Attention("scaled_dot", 4, 8)
    with pytest.raises(ValueError, match="attention_size"):
        Attention("general", 4, 8, attention_size=16)
    with pytest.raises(ValueError, match="query size == key size"):
        dot(torch.randn(B, 4), torch.randn(B, S, 8))


def test_parameter_shapes_and_defaults():
    general_attn = Attention("general", 4, 8)
    assert general_attn.key_proj.weight.shape == (4, 8)
    assert general_attn.precompute_keys(torch.randn(B, S, 8)).shape == (B, S, 4)
    add = Attention("additive", 4, 8)
    assert add.attention_size == 4  # default A = Hq
    add = Attention("additive", 4, 8, attention_size=16)
    assert add.key_proj.weight.shape == (16, 8)
    assert add.query_proj.weight.shape == (16, 4)
    assert add.v.shape == (16,)
    assert add.precompute_keys(torch.randn(B, S, 8)).shape == (B, S, 16)
    assert "additive" in repr(add)
    memory = torch.randn(B, S, 4)
    assert Attention("dot", 4, 4).precompute_keys(memory) is memory


def test_additive_without_autograd_under_bfloat16_autocast(monkeypatch):
    """Decoding with search.precision bfloat16 runs the chunked score under autocast: the
    products in bfloat16 as in the one-go form, whatever the dtypes of query, keys and v."""
    from seqlab import attention

    monkeypatch.setattr(attention, "CHUNK_ELEMENTS", S * A)  # one sentence per chunk
    g = torch.Generator().manual_seed(6)
    q = torch.randn(B, H, generator=g)
    keys = torch.randn(B, S, A, generator=g)
    w, v = torch.randn(A, H, generator=g), torch.randn(A, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            chunked = additive(q, keys, w, v)
            chunked_bf16_keys = additive(q, keys.bfloat16(), w, v)
        one_go = additive(q, keys, w, v.clone().requires_grad_())
    torch.testing.assert_close(chunked.float(), one_go.float(), atol=0.1, rtol=0.02)
    torch.testing.assert_close(chunked_bf16_keys.float(), one_go.float(), atol=0.1, rtol=0.02)


@pytest.mark.parametrize("kind", KINDS)
def test_one_step_under_cpu_autocast_attends_in_float32(kind):
    """A decoder step's attention under CPU bfloat16 autocast is the float32 computation (to
    float32 rounding); all T queries at once stay in bfloat16."""
    torch.manual_seed(0)
    att = Attention(kind, 8, 8)
    memory, query = torch.randn(3, 5, 8), torch.randn(3, 8)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4])
    keys = att.precompute_keys(memory)
    want = att(query, keys, memory, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = att(query, keys, memory, mask)
        steps, _ = att(query.unsqueeze(1).expand(3, 4, 8), keys, memory, mask)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
    assert steps.dtype == torch.bfloat16
