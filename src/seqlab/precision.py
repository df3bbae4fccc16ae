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

int8 (decoding, CPU only): dynamic quantization of the linear layers that need no access to
their weight tensor (`quantize_dynamic`, per-tensor int8 weights; activations quantized per
batch at run time, so no calibration data is needed). It covers the output layer, the largest
product of every decoder step. The recurrent cells and the attention stay float32.
"""

from __future__ import annotations

import contextlib
import time
import warnings

import torch
from torch import nn

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
