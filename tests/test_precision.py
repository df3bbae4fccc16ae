"""Number formats: train.precision (bfloat16 autocast; auto measures before it chooses) and
decoding precision (a copy of the model with int8 output layers, or with the decoder's
products in bfloat16)."""

import math

import pytest
import torch
from torch import nn

from seqlab import precision as P
from seqlab.config import config_from_dict
from seqlab.errors import ConfigError
from seqlab.synthetic import make_dataset
from seqlab.train import train
from seqlab.translate import Translator

CPU = torch.device("cpu")


def test_float32_and_bfloat16_are_taken_as_configured():
    assert P.resolve_precision("float32", CPU) == ("float32", "as configured")
    assert P.resolve_precision("bfloat16", CPU)[0] == "bfloat16"
    with pytest.raises(ConfigError, match="float16"):
        P.resolve_precision("float16", CPU)


@pytest.mark.parametrize("fp32_ms, bf16_ms, chosen", [(2.0, 1.0, "bfloat16"),
                                                      (1.0, 2.0, "float32"),
                                                      (1.05, 1.0, "float32")])
def test_auto_measures_both_formats_and_says_why(monkeypatch, fp32_ms, bf16_ms, chosen):
    """auto on the CPU: bfloat16 only when its probe matmul is >= PROBE_MARGIN faster."""
    times = {torch.float32: fp32_ms, torch.bfloat16: bf16_ms}
    monkeypatch.setattr(P, "matmul_ms", lambda dtype, device: times[dtype])
    name, why = P.resolve_precision("auto", CPU)
    assert name == chosen
    assert f"{fp32_ms / bf16_ms:.2f}x" in why


def test_the_probe_times_a_real_product():
    assert 0 < P.matmul_ms(torch.float32, CPU, shape=(64, 32, 64), repeats=2) < 1000


def _config(precision: str, steps: int = 40, train_size: int = 300,
            label_smoothing: float = 0.0):
    return config_from_dict({
        "data": {"synthetic": "reverse", "synthetic_train_size": train_size,
                 "synthetic_eval_size": 30},
        "tokenizer": {"kind": "word"},
        "model": {"embedding_size": 16, "hidden_size": 32, "dropout": 0.0},
        "train": {"batch_tokens": 400, "lr": 0.01, "max_steps": steps, "max_epochs": 1000,
                  "log_every": 10, "valid_every": steps, "valid_samples": 0,
                  "precision": precision, "early_stopping_metric": "exact_match",
                  "label_smoothing": label_smoothing},
        "search": {"batch_size": 50},
    })


def _losses(run) -> list[float]:
    import json

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in rows if "train_loss" in r]


def test_bfloat16_training_runs_the_forward_pass_under_autocast(tmp_path):
    """Same seed, same batches: the bfloat16 run learns (its loss falls) but not bit for bit
    like the float32 one (its products were rounded to bf16), and its weights stay float32."""
    train(_config("float32"), tmp_path / "fp32", quiet=True)
    train(_config("bfloat16"), tmp_path / "bf16", quiet=True)
    fp32, bf16 = _losses(tmp_path / "fp32"), _losses(tmp_path / "bf16")
    assert bf16 != fp32
    assert bf16[-1] < 0.8 * bf16[0]
    assert abs(bf16[-1] - fp32[-1]) < 0.25 * fp32[0]
    model = torch.load(tmp_path / "bf16" / "last.pt", weights_only=True)["model"]
    assert {t.dtype for t in model.values()} == {torch.float32}


def test_bfloat16_training_with_label_smoothing(tmp_path):
    """The Multi30k recipe's combination: label smoothing under bfloat16 autocast, where the
    decoder's attentional vectors reach the loss in bfloat16 (its smoothing term once
    multiplied them with the float32 weights and stopped the run at the first step)."""
    train(_config("bfloat16", steps=10, label_smoothing=0.1), tmp_path / "run", quiet=True)
    losses = _losses(tmp_path / "run")
    assert len(losses) == 1 and math.isfinite(losses[0])  # logged at step 10


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A model that has learned 30 reversals by heart (test_train's overfitting run)."""
    run = tmp_path_factory.mktemp("int8") / "run"
    cfg = _config("float32", steps=250, train_size=30)
    train(cfg, run, quiet=True)
    pairs = make_dataset("reverse", 30, seed=cfg.train.seed, split="train")
    return Translator.from_checkpoint(run / "last.pt", device="cpu"), pairs


def test_int8_decoding_quantizes_a_copy_of_the_output_layers(learned):
    translator, pairs = learned
    sources = [s for s, _ in pairs]
    fp32 = translator.translate(sources, beam_size=3)
    int8 = translator.translate(sources, beam_size=3, precision="int8")
    quantized = translator._copies["int8"].decoder
    assert "quantized" in type(quantized.out).__module__  # torch.ao.nn.quantized.dynamic
    assert "quantized" in type(quantized.combine).__module__
    assert type(translator.model.decoder.out) is nn.Linear  # the float32 model is untouched
    assert translator.model.decoder.out.weight.dtype == torch.float32
    # a confident model: rounding its output layer to int8 changes no output
    assert int8 == fp32 == [t for _, t in pairs]
    assert translator.translate(sources, precision="bfloat16") == fp32


def test_int8_needs_the_cpu(learned):
    translator, pairs = learned
    translator.device = torch.device("cuda")  # only the check reads it
    try:
        with pytest.raises(ConfigError, match="int8 runs on the cpu"):
            translator.translate([pairs[0][0]], precision="int8")
    finally:
        translator.device = CPU


KERNELS = [False] + ([True] if P.bf16_kernels(CPU) else [])  # packed oneDNN kernels, if here


def _no_packing(monkeypatch, packed: bool):
    if not packed:
        monkeypatch.setattr(P, "bf16_kernels", lambda device: False)


@pytest.mark.parametrize("packed", KERNELS)
def test_bfloat16_linear_is_the_product_of_the_rounded_factors(monkeypatch, packed):
    """y = bf16(x) bf16(W)^T + bf16(b), accumulated in high precision and rounded to bfloat16
    once, returned float32, for 1, 7 and 70 rows and a (2, 3, I) input."""
    _no_packing(monkeypatch, packed)
    g = torch.Generator().manual_seed(0)
    linear = nn.Linear(48, 40)
    layer = P.BFloat16Linear.from_linear(linear)
    assert layer.packed == packed

    def rounded(t):
        return t.detach().bfloat16().double()

    for shape in [(1, 48), (7, 48), (70, 48), (2, 3, 48)]:
        x = torch.randn(*shape, generator=g)
        y = layer(x)
        want = rounded(x) @ rounded(linear.weight).T + rounded(linear.bias)
        assert y.dtype == torch.float32 and y.shape == (*shape[:-1], 40)
        # rounding the result to bfloat16 once: at most half a unit in the last of 8 bits
        assert ((y.double() - want).abs() <= want.abs() * 2 ** -8 + 1e-6).all()


def _parts(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("packed", KERNELS)
@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn_tanh", "rnn_relu"])
def test_bfloat16_recurrent_steps_like_the_torch_layer_it_replaces(monkeypatch, packed, kind):
    _no_packing(monkeypatch, packed)
    torch.manual_seed(0)
    common = dict(num_layers=2, batch_first=True)
    rnn = {"gru": lambda: nn.GRU(12, 16, **common), "lstm": lambda: nn.LSTM(12, 16, **common),
           "rnn_tanh": lambda: nn.RNN(12, 16, **common),
           "rnn_relu": lambda: nn.RNN(12, 16, nonlinearity="relu", **common)}[kind]()
    bf16 = P.BFloat16Recurrent(rnn)
    x = torch.randn(3, 5, 12)
    h0 = torch.randn(2, 3, 16)
    state = (h0, torch.randn(2, 3, 16)) if kind == "lstm" else h0
    with torch.no_grad():
        for given in (None, state):
            want_out, want_state = rnn(x, given)
            out, new_state = bf16(x, given)
            torch.testing.assert_close(out, want_out, atol=3e-2, rtol=0)
            for got, want in zip(_parts(new_state), _parts(want_state), strict=True):
                torch.testing.assert_close(got, want, atol=3e-2, rtol=0)
        # one step at a time (as a decoder calls it) = the whole sequence
        s, steps = state, []
        for t in range(5):
            o, s = bf16(x[:, t:t + 1], s)
            steps.append(o)
        torch.testing.assert_close(torch.cat(steps, 1), bf16(x, state)[0])
    with pytest.raises(ValueError, match="unidirectional"):
        P.BFloat16Recurrent(nn.GRU(12, 16, bidirectional=True, batch_first=True))


def test_bfloat16_decoding_converts_a_copy_of_the_decoder_products(learned):
    translator, pairs = learned
    sources = [s for s, _ in pairs]
    fp32 = translator.translate(sources, beam_size=3)
    assert translator.translate(sources, beam_size=3, precision="bfloat16") == fp32
    decoder = translator._copies["bfloat16"].decoder
    for layer in (decoder.out, decoder.combine, decoder.attention.query_proj,
                  decoder.attention.key_proj):
        assert type(layer) is P.BFloat16Linear
    assert type(decoder.rnn.rnn) is P.BFloat16Recurrent
    assert type(translator.model.decoder.out) is nn.Linear  # the float32 model is untouched
    assert type(translator.model.decoder.rnn.rnn) is nn.GRU
    assert translator.model.decoder.out.weight.dtype == torch.float32


def test_bfloat16_decoding_keeps_a_cells_backend_recurrent_stack(learned):
    """The original GRU (reset_after=False) runs on the cells backend only, which reads the
    stack's weights itself: its products stay float32, the linear layers still convert."""
    translator, _ = learned
    backend = translator.model.decoder.rnn.backend
    try:
        translator.model.decoder.rnn.backend = "cells"
        linears, recurrents = translator._bf16_layers()
    finally:
        translator.model.decoder.rnn.backend = backend
    assert recurrents == [] and "decoder.out" in linears


# ---------------------------------------------------------------------------- row buckets
@pytest.mark.parametrize("dtype, autocast, padded", [
    (torch.float32, False, False), (torch.float32, True, True),
    (torch.bfloat16, False, True), (torch.float16, False, True), (torch.float64, False, False)])
def test_bucket_rows_pads_only_for_reduced_precision_products_on_the_cpu(dtype, autocast,
                                                                         padded):
    x = torch.randn(70, 3).to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = P.bucket_rows(x)
    assert y.shape == ((128 if padded else 70), 3)
    assert torch.equal(y[:70], x) and not y[70:].any()  # zero rows appended
    assert P.bucket_rows(torch.randn(128, 3).bfloat16()).shape == (128, 3)
    assert P.bucket_rows(torch.randn(5, 3).bfloat16(), multiple=8).shape == (8, 3)


@pytest.mark.parametrize("dtype, padded", [(torch.float32, False), (torch.bfloat16, True)])
def test_cat_bucketed_is_bucket_rows_of_the_cat(dtype, padded):
    parts = [torch.randn(n, 3).to(dtype) for n in (30, 20, 20)]
    y = P.cat_bucketed(parts)
    assert y.shape == ((128 if padded else 70), 3)
    assert torch.equal(y, P.bucket_rows(torch.cat(parts)))
    assert P.cat_bucketed([torch.randn(64, 3).bfloat16()]).shape == (64, 3)


def test_linear_bucketed_is_f_linear_with_repeating_row_counts(monkeypatch):
    """Under bfloat16 autocast the product sees B*S rows padded to TRAIN_ROW_BUCKET; the
    outputs and gradients are those of F.linear (the same rounded products per row)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 16, generator=g, requires_grad=True)  # 21 rows
    w = torch.randn(5, 16, generator=g, requires_grad=True)
    b = torch.randn(5, generator=g, requires_grad=True)
    rows = []
    linear = P.F.linear
    monkeypatch.setattr(P.F, "linear", lambda x, *a: rows.append(x.shape[0]) or linear(x, *a))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = P.linear_bucketed(x, w, b)
        want = linear(x, w, b)
    assert got.shape == want.shape == (3, 7, 5) and rows == [P.TRAIN_ROW_BUCKET]
    torch.testing.assert_close(got, want)
    grads = torch.autograd.grad(got.float().square().sum(), [x, w, b])
    for g_got, g_want in zip(grads, torch.autograd.grad(want.float().square().sum(), [x, w, b])):
        torch.testing.assert_close(g_got, g_want, rtol=2e-2, atol=2e-2 * g_want.abs().max())
    rows.clear()
    P.linear_bucketed(x, w, b)  # float32: F.linear itself, rows as they are
    assert rows == [3]  # (3, 7, 16) passed whole


def test_a_bfloat16_training_step_multiplies_in_row_buckets(monkeypatch):
    """The products over whole sequences of a bfloat16 training step (the attention keys over
    B*S source positions, the decoder loop's weight gradients over T*B steps) see row counts
    in multiples of TRAIN_ROW_BUCKET: oneDNN builds a kernel for every new shape."""
    import seqlab.attention
    import seqlab.shared_weights
    from seqlab.config import ModelConfig
    from seqlab.model import build_model

    seen = {}

    def spy(where, real):
        def bucket(x, *a):
            y = real(x, *a)
            seen.setdefault(where, []).append(y.shape[0])
            return y
        return bucket

    monkeypatch.setattr(seqlab.shared_weights, "cat_bucketed", spy("loop", P.cat_bucketed))
    monkeypatch.setattr(P, "bucket_rows", spy("keys", P.bucket_rows))  # linear_bucketed's
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=16, embedding_size=8, attention="additive",
                                    input_feeding=True), 30, 30).train()
    src = torch.randint(4, 30, (5, 7))
    tgt = torch.randint(4, 30, (5, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = model(src, torch.tensor([7, 6, 5, 3, 2]), tgt[:, :-1], tgt[:, 1:])
    loss.backward()
    assert seen.keys() == {"loop", "keys"}
    assert all(n % P.TRAIN_ROW_BUCKET == 0 for n in seen["loop"] + seen["keys"]), seen
