"""host_memory.keep_freed_memory: an executable's temporary buffer is reused from one call to the
next instead of being mapped and faulted in afresh (each case in its own process: the allocator
settings are process-wide)."""

import json
import platform
import subprocess
import sys

import pytest

# A 64 MiB temporary (the [4096, 4096] operand of a dot): the minor page faults of each of nine
# calls after five to warm up.
_PROBE = r"""
import json, resource, sys
kept = False
if sys.argv[1] == "keep":
    from bert_jax import host_memory
    kept = host_memory.keep_freed_memory()
import jax, jax.numpy as jnp

@jax.jit
def f(x):
    return jnp.sin(x[:, None] * x[None, :]) @ x

x = jnp.linspace(0.0, 1.0, 4096)
for _ in range(5):
    f(x).block_until_ready()
faults = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)


def _probe(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc_only
def test_freed_temporary_is_reused():
    default, kept = _probe("default"), _probe("keep")
    assert kept["kept"] and not default["kept"]
    # 64 MiB in 4 KiB pages is ~16,400 faults for a call that maps its buffer afresh (fewer where
    # the kernel backs it with huge pages): by default every call. With the buffer kept, calls
    # reuse it; some still fault while the heap grows, and under load (the suite's other worker)
    # runs of faulting calls were seen late too ([0, 0, 0, 0, 16384, 16385, ...]). So: by default
    # no call without faults, kept at least three of the nine.
    default_median = sorted(default["faults"])[4]
    if default_median < 1000:
        pytest.skip(f"this kernel maps the buffer without 4 KiB page faults: {default}")
    few = default_median / 10
    assert sum(f < few for f in default["faults"]) == 0, default
    assert sum(f < few for f in kept["faults"]) >= 3, (default, kept)
