"""Which torch device to run on, checked before any work starts.

    pick_device("auto")    -> cuda if a CUDA device is available, else cpu
    pick_device("cuda:1")  -> torch.device("cuda:1"), or a one-line ConfigError when torch
                              does not know the name or this machine has no such device

torch is imported inside the function, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seqlab.config import ConfigError

if TYPE_CHECKING:
    import torch


def pick_device(name: str = "auto", what: str = "train.device") -> torch.device:
    """The device called `name` (auto: cuda if available, else cpu), known to be present.
    `what` names the setting in messages ("train.device", "--device")."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{what}: {name!r} is not a device torch knows "
                          "(auto, cpu, cuda, cuda:1, mps, ...)") from None
    problem = _absent(device)
    if problem:
        raise ConfigError(f"{what}: {name}, but {problem}")
    return device


def _absent(device: torch.device) -> str | None:
    """Why `device` cannot be used on this machine, or None when it can."""
    import torch

    if device.type == "cpu":
        return None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return "no CUDA device is available here"
        if device.index is not None and device.index >= count:
            names = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            return f"this machine has {count} CUDA device(s): {names}"
        return None
    if device.type == "mps":
        return None if torch.backends.mps.is_available() else "no MPS device is available here"
    try:  # any other kind: try to put a tensor there
        torch.empty(0, device=device)
    except Exception as exc:  # AssertionError (torch built without it), RuntimeError
        return f"torch cannot use it here ({' '.join(str(exc).split())})"
    return None


def describe_machine(device: torch.device | str = "cpu") -> dict:
    """What a run ran on, for its results.json and report: CPU model, cores, torch build and
    threads, the device (and the GPU's name on CUDA)."""
    import os
    import platform

    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    out = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "device": str(device),
           "python": platform.python_version()}
    if torch.device(device).type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out
