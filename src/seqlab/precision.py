"""Number formats: float32, bfloat16 autocast, and int8 dynamic quantization for decoding.

    train.precision    float32 | bfloat16 | auto
    search.precision   float32 | bfloat16 | int8        (seqlab translate --precision)

bfloat16 runs the matrix products under `torch.autocast(dtype=torch.bfloat16)`: weights,
gradients, optimizer state and the loss's softmax stay float32 (autocast keeps
log_softmax / cross-entropy in float32), so only the products lose precision (8 bits of
mantissa instead of 24). Whether that is faster depends on the hardware: GPUs with bf16 tensor
cores, and CPUs whose oneDNN bf16 kernels beat their float32 BLAS, gain; on a CPU without fast
bf16 arithmetic it is slower (see benchmarks/README.md, speed.py, for this machine). `auto`
therefore measures instead of guessing: on a CUDA device it takes bfloat16 when the device
supports it; on the CPU it times one (M, K) x (K, N) product of the size of an output layer in
both formats and takes bfloat16 only when it is faster by PROBE_MARGIN.

Decoding (search.precision) on the CPU works on a copy of the model made once, never on the
model itself (`Translator` keeps the copy):

* bfloat16: `bfloat16_copy` stores the weights of the decoder's products (output layer,
  combine layer, the attention's query and key projections, recurrent stack) in bfloat16,
  packed once into oneDNN's blocked layout where the CPU has bf16 kernels (AVX512-BF16 or
  AMX). Each product casts its input to bfloat16 and returns float32 (accumulated in
  float32, rounded to bfloat16 once); the gates, the attention and the log-softmax stay
  float32. Autocast would instead re-cast every weight at every step and put the
  elementwise work in bfloat16 too (on an AMX CPU it decoded 25% slower than this copy, see
  benchmarks/speed.py). On a GPU, bfloat16 decoding runs under autocast.
* int8: dynamic quantization of the linear layers that need no access to their weight tensor
  (`quantize_dynamic`, per-tensor int8 weights; activations quantized per batch at run time,
  so no calibration data is needed). It covers the output layer, the largest product of
  every decoder step. The recurrent cells and the attention stay float32.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqlab.cells import gru_update, lstm_update, rnn_update
from seqlab.errors import ConfigError

TRAIN_PRECISIONS = ("float32", "bfloat16", "auto")
PROBE_SHAPE = (512, 256, 8192)  # (M, K, N): a batch of decoder outputs x an output layer
PROBE_MARGIN = 1.1  # bfloat16 must be this many times faster than float32 to be chosen


def matmul_ms(dtype: torch.dtype, device: torch.device, shape=PROBE_SHAPE, repeats: int = 5
              ) -> float:
    """Median milliseconds of one (M, K) x (K, N) product in `dtype` on `device`."""
    m, k, n = shape
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(device, dtype)
    b = torch.randn(k, n, generator=g).to(device, dtype)
    times = []
    for i in range(repeats + 2):  # two warm-up calls
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1e3


def resolve_precision(name: str, device: torch.device) -> tuple[str, str]:
    """train.precision -> ("float32" | "bfloat16", why). Errors for a device that cannot."""
    if name not in TRAIN_PRECISIONS:
        raise ConfigError(f"precision {name!r} is not one of {', '.join(TRAIN_PRECISIONS)}")
    if name == "float32":
        return "float32", "as configured"
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        if name == "bfloat16" and not ok:
            raise ConfigError(f"train.precision: {device} does not support bfloat16")
        if name == "bfloat16":
            return "bfloat16", "as configured"
        return ("bfloat16", f"{device} supports it") if ok else \
            ("float32", f"{device} has no bfloat16")
    if name == "bfloat16":
        return "bfloat16", "as configured"
    fp32 = matmul_ms(torch.float32, device)
    bf16 = matmul_ms(torch.bfloat16, device)
    speedup = fp32 / bf16
    if speedup >= PROBE_MARGIN:
        return "bfloat16", f"bfloat16 matmul {speedup:.2f}x float32 on this {device.type}"
    return "float32", f"bfloat16 matmul only {speedup:.2f}x float32 on this {device.type}"


def autocast(precision: str, device: torch.device):
    """The context the forward pass (and its loss) runs in: autocast for bfloat16, else none."""
    if precision == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def quantize_int8(model: nn.Module, names: list[str]) -> nn.Module:
    """A copy of `model` whose linear layers named in `names` (dotted module names) are int8
    dynamically quantized; the original is untouched. CPU only."""
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch marks its quantized tensor constructors deprecated
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {name: default_dynamic_qconfig for name in names},
                                inplace=False)  # a quantized copy


# ------------------------------------------- bfloat16 products: row buckets, and decoding
PACK_ROWS = 64  # the row count oneDNN lays the packed weights out for (any count runs)
ROW_BUCKET = 8  # BFloat16Linear pads its rows to a multiple of this (see pad_rows)
TRAIN_ROW_BUCKET = 64  # training's products over whole sequences, see bucket_rows


def pad_rows(x: Tensor, multiple: int) -> Tensor:
    """x (N, K) with zero rows appended up to a multiple of `multiple` rows (x itself when N
    is one already). oneDNN builds (JIT-compiles) and caches a kernel for every new shape of a
    bfloat16 product, and a product's row count keeps changing: a decoding batch shrinks row
    by row as sentences finish, a training batch has a new number of target tokens at almost
    every step. Padding makes the shapes repeat (the first decoding pass over test2016:
    1.12 -> 1.00 s; training: +4-7% target tokens/s and less memory, see losses.py)."""
    return _cat_rows([x], multiple)


def _cat_rows(parts: list[Tensor], multiple: int) -> Tensor:
    """torch.cat(parts) of row blocks (n_i, K) with zero rows appended up to a multiple of
    `multiple` rows, in one copy (one block that needs none: the block itself)."""
    missing = -sum(p.shape[0] for p in parts) % multiple
    if missing:
        parts = [*parts, parts[0].new_zeros(missing, parts[0].shape[1])]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def product_dtype(x: Tensor) -> torch.dtype:
    """The dtype a product of x runs in: autocast's on x's device when it is on, else x's."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def bucket_rows(x: Tensor, multiple: int = TRAIN_ROW_BUCKET) -> Tensor:
    """x (N, K) padded with zero rows to a multiple of `multiple` (pad_rows) when a product
    of it runs in bfloat16 or float16 on the CPU, else x itself.

    In training the row count of the products over whole sequences changes from batch to
    batch (B*S source positions for the attention keys, T*B target steps for the weight
    gradients summed over a loop, seqlab.shared_weights), and each new count costs oneDNN
    1-3 ms to build the product's kernel: on the peers' model about 14 new shapes a step,
    13 ms of a 175 ms bfloat16 step (ONEDNN_VERBOSE). Zero rows add nothing to a sum over
    rows and their outputs are dropped."""
    return pad_rows(x, multiple) if _in_buckets(x) else x


def cat_bucketed(parts: list[Tensor], multiple: int = TRAIN_ROW_BUCKET) -> Tensor:
    """bucket_rows(torch.cat(parts)) for row blocks parts[i] (n_i, K), in one copy: the zero
    rows are the cat's last part."""
    return _cat_rows(parts, multiple) if _in_buckets(parts[0]) else torch.cat(parts)


def _in_buckets(x: Tensor) -> bool:
    """Whether products of x take their rows in buckets: reduced precision on the CPU."""
    return x.device.type == "cpu" and product_dtype(x) in (torch.bfloat16, torch.float16)


def linear_bucketed(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear(x, weight, bias) for x (..., I) with its rows in buckets (`bucket_rows`)."""
    rows = x.reshape(-1, x.shape[-1])
    padded = bucket_rows(rows)
    if padded is rows:
        return F.linear(x, weight, bias)
    return F.linear(padded, weight, bias)[:rows.shape[0]].view(*x.shape[:-1], -1)


def bf16_kernels(device: torch.device) -> bool:
    """Whether products can use oneDNN's packed bfloat16 kernels (a CPU with AVX512-BF16 or
    AMX); elsewhere `BFloat16Linear` falls back to torch's plain bfloat16 product. The packing
    ops are torch internals (those its inductor uses): a torch without them falls back too."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        ops = torch.ops.mkldnn
        return bool(ops._is_mkldnn_bf16_supported()) and all(
            hasattr(ops, name) for name in ("_reorder_linear_weight", "_linear_pointwise"))
    except (AttributeError, RuntimeError):
        return False


class BFloat16Linear(nn.Module):
    """y = x W^T + b with W and b stored once in bfloat16, for decoding (no gradients).

    x (..., I) in any float dtype -> y (..., O) float32: x is cast to bfloat16, the product
    accumulates in float32 and is rounded to bfloat16 once. With `bf16_kernels`, W is packed
    once into oneDNN's blocked layout (torch's own inductor does the same when it freezes a
    model), which saves re-laying it out at every call: at 64 rows x 256 -> 10,000 that halves
    the product's time on an AMX CPU; its rows are padded to a multiple of ROW_BUCKET."""

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        w = weight.detach().to(torch.bfloat16)
        self.packed = bf16_kernels(weight.device)
        self.weight = torch.ops.mkldnn._reorder_linear_weight(w, PACK_ROWS) if self.packed else w
        self.bias = None if bias is None else bias.detach().to(torch.bfloat16)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> BFloat16Linear:
        return cls(linear.weight, linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(torch.bfloat16)
        if not self.packed:
            return F.linear(x, self.weight, self.bias).float()
        rows = x.reshape(-1, self.in_features)
        y = torch.ops.mkldnn._linear_pointwise(pad_rows(rows, ROW_BUCKET), self.weight,
                                               self.bias, "none", [], "")
        return y[:rows.size(0)].float().view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, packed={self.packed}"


class BFloat16Recurrent(nn.Module):
    """A unidirectional, batch-first `nn.GRU` / `nn.LSTM` / `nn.RNN` for decoding, its input
    and recurrent products in bfloat16 (`BFloat16Linear`), its gates in float32 (the
    update functions of `seqlab.cells`; the GRU in its reset-after form, as torch's).

    `layer(x (B, T, I), state (L, B, H) [or (h, c)] or None) -> out (B, T, H), state`, the
    call signature of the module it replaces. No dropout: it is for decoding."""

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        if rnn.bidirectional or not rnn.batch_first or rnn.proj_size:
            raise ValueError("BFloat16Recurrent takes a unidirectional, batch-first layer")
        self.mode = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}.get(rnn.mode, rnn.mode)
        self.num_layers, self.hidden_size = rnn.num_layers, rnn.hidden_size
        self.input_products = nn.ModuleList(
            BFloat16Linear(getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"bias_ih_l{k}", None))
            for k in range(rnn.num_layers))
        self.recurrent_products = nn.ModuleList(
            BFloat16Linear(getattr(rnn, f"weight_hh_l{k}"), getattr(rnn, f"bias_hh_l{k}", None))
            for k in range(rnn.num_layers))

    def _update(self, gx: Tensor, gh: Tensor, state):
        if self.mode == "LSTM":
            return lstm_update(gx, gh, state[1])
        if self.mode == "GRU":
            return gru_update(gx, gh, state)
        return rnn_update(gx, gh, self.mode)

    def forward(self, x: Tensor, state=None):
        if isinstance(x, nn.utils.rnn.PackedSequence):
            raise TypeError("BFloat16Recurrent takes padded (B, T, I) input, not packed")
        B, T, _ = x.shape
        lstm = self.mode == "LSTM"
        if state is None:
            zeros = x.new_zeros(self.num_layers, B, self.hidden_size, dtype=torch.float32)
            state = (zeros, zeros) if lstm else zeros
        finals = []
        for k, (ih, hh) in enumerate(zip(self.input_products, self.recurrent_products,
                                         strict=True)):
            gx = ih(x)  # (B, T, G*H): all steps at once
            s = (state[0][k], state[1][k]) if lstm else state[k]
            outs = []
            for t in range(T):
                s = self._update(gx[:, t], hh(s[0] if lstm else s), s)
                outs.append(s[0] if lstm else s)
            x = torch.stack(outs, 1)  # (B, T, H): the next layer's input
            finals.append(s)
        if lstm:
            return x, (torch.stack([f[0] for f in finals]), torch.stack([f[1] for f in finals]))
        return x, torch.stack(finals)


def bfloat16_copy(model: nn.Module, linears: list[str], recurrents: list[str]) -> nn.Module:
    """A copy of `model` in eval mode whose modules named in `linears` (nn.Linear) become
    `BFloat16Linear` and in `recurrents` (nn.GRU / LSTM / RNN) `BFloat16Recurrent` (dotted
    module names); the original is untouched."""
    twin = copy.deepcopy(model).eval()
    for names, make in ((linears, BFloat16Linear.from_linear), (recurrents, BFloat16Recurrent)):
        for name in names:
            parent, _, leaf = name.rpartition(".")
            owner = twin.get_submodule(parent) if parent else twin
            setattr(owner, leaf, make(getattr(owner, leaf)))
    return twin
