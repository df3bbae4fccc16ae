"""seqlab.allocator: freed CPU memory is reused instead of faulted in again."""

import subprocess
import sys

import pytest

# Eight "steps", each holding the same twelve tensors of 1-40 MiB until its end, as a
# training step holds its activations until backward: by default glibc maps a block above
# its dynamic threshold (at most 32 MiB) afresh and trims its heap's free top, so every step
# faults pages in again (74-80 thousand in the last four steps, ten runs); kept, the later
# steps reuse the earlier ones' memory (1.2-11 thousand: the heap still grows now and then).
STEPS = """
import resource, sys, torch
from seqlab.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
sizes = torch.randint(1 << 20, 40 << 20, (12,), generator=torch.Generator().manual_seed(0))
faults = []
for step in [sizes.tolist()] * 8:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = [torch.empty(n, dtype=torch.uint8).fill_(1) for n in step]
    del held
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[4:]))  # the last four steps
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_is_reused_without_page_faults():
    from seqlab.allocator import _is_glibc

    if not _is_glibc():
        pytest.skip("not glibc: keep_freed_memory does nothing here")
    default = faults("default")
    if default < 20_000:  # e.g. transparent huge pages always on: few faults anyway
        pytest.skip(f"fresh memory costs only {default} faults here; nothing to measure")
    assert faults("keep") < default // 4


def test_does_nothing_off_linux(monkeypatch):
    from seqlab import allocator

    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
