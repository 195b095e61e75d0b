"""host_memory.keep_freed_memory: an executable's temporary buffer is reused from one call to the
next instead of being mapped and faulted in afresh (each case in its own process: the allocator
settings are process-wide)."""

import json
import platform
import subprocess
import sys

import pytest

# A 64 MiB temporary (the [4096, 4096] operand of a dot), five calls after ten to warm up, and
# the minor page faults they caused.
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
for _ in range(10):  # the heap settles into the layout it keeps (within ~6 calls)
    f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    f(x).block_until_ready()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
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
    # 5 x 64 MiB in 4 KiB pages is ~82,000 faults when each call maps its buffer afresh (fewer
    # where the kernel backs it with huge pages); with the buffer kept, none once the heap has
    # settled (a quarter leaves room for one late call that still grows it).
    assert kept["faults"] < max(200, default["faults"] / 4), (default, kept)
