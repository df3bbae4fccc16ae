"""What every benchmark here records about the machine it ran on, shared by the scripts in
benchmarks/ (they run as `python benchmarks/bench_*.py`, so this directory is on sys.path):

    machine_info()      CPU, cores, torch build and threads, Python, platform
    uptime()            the `uptime` line (load averages), or os.getloadavg() without it
    announce(threads)   machine_info() printed as a header line, with a warning if busy
    ReferenceMatmul     a float32 matmul timed in the same run: the machine's own speed unit
    summary(samples)    median, quartiles, min, max, n of a list of timings
    run_main(main)      run a script's main(); a user's mistake (bad path, config, data) is
                        one line naming it, as with the seqlab command, not a traceback

Absolute times depend on the machine and on what else runs on it; a time divided by the
reference matmul's time, measured in the same run and close to it, depends much less on both.
The default matmul is bench_recurrent.py's, (1920, 256) x (256, 1024), so "x matmul" figures
of the different benchmarks are in the same unit.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

MATMUL_SHAPE = (1920, 256, 1024)  # (M, K, N): (M, K) x (K, N), bench_recurrent's (B*S, E, 4H)


def summary(samples: list[float]) -> dict:
    qs = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return {"median": statistics.median(samples), "q1": qs[0], "q3": qs[2],
            "min": min(samples), "max": max(samples), "n": len(samples)}


def machine_info() -> dict:
    from seqlab.device import describe_machine

    model = describe_machine("cpu")["cpu"]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": model, "logical_cores": os.cpu_count(), "usable_cores": usable,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(), "platform": platform.platform()}


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def announce(threads_option: int | None) -> dict:
    """machine_info() plus the --threads option; prints it, and warns when the machine is
    already busy (several torch threads per process then stall on each other)."""
    info = machine_info()
    info["threads_option"] = threads_option
    print(f"cpu: {info['cpu']} ({info['usable_cores']} usable cores), torch {info['torch']}, "
          f"threads {info['threads']}" + ("" if threads_option else " (torch default)"))
    if os.getloadavg()[0] > info["usable_cores"] - 0.5:
        print("warning: the machine is busy (1-min load average near the core count); times "
              "will be slow and noisy, more so with several threads (try --threads 1)")
    return info


class ReferenceMatmul:
    """A float32 (or `dtype`) (M, K) x (K, N) matmul on `device`; `sample()` times `inner`
    back-to-back calls and returns milliseconds per call (the inputs are made once, in the
    constructor)."""

    def __init__(self, shape: tuple[int, int, int] = MATMUL_SHAPE, device: str = "cpu",
                 inner: int = 10, dtype: torch.dtype = torch.float32):
        m, k, n = shape
        g = torch.Generator().manual_seed(0)
        self.a = torch.randn(m, k, generator=g).to(device, dtype)  # (M, K)
        self.b = torch.randn(k, n, generator=g).to(device, dtype)  # (K, N)
        self.shape, self.device, self.inner = shape, torch.device(device), inner
        self.dtype = dtype
        self.flop = 2 * m * k * n

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def sample(self) -> float:
        self._sync()
        t0 = time.perf_counter()
        for _ in range(self.inner):
            self.a @ self.b
        self._sync()
        return (time.perf_counter() - t0) / self.inner * 1e3

    def warm_up(self, samples: int = 2) -> None:
        for _ in range(samples):
            self.sample()

    def gflops(self, ms: float) -> float:
        return self.flop / (ms * 1e-3) / 1e9

    def describe(self) -> dict:
        m, k, n = self.shape
        return {"shape": [[m, k], [k, n]], "dtype": str(self.dtype).replace("torch.", ""),
                "device": str(self.device),
                "inner": self.inner}


def run_main(main) -> None:
    from seqlab.errors import USER_ERRORS

    try:
        sys.exit(main())
    except USER_ERRORS as e:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {e}")
