"""training.host_malloc: with the tuning, a repeated jitted call stops page-faulting.

The measurement runs in fresh subprocesses, because the tuning only takes effect
before JAX starts its backend (and this test process started it long ago).
"""
import os
import subprocess
import sys

import pytest

from reasoning_jax.training import host_malloc

# A jitted call whose 64 MiB output is dropped after each call: untuned, glibc maps a
# fresh block every call and the process faults 16 Ki pages; tuned, the heap keeps it.
_SCRIPT = """
import resource, sys
from reasoning_jax.training.host_malloc import tune_host_malloc
applied = tune_host_malloc()
import jax, jax.numpy as jnp
x = jnp.ones((4096, 4096), jnp.float32)
f = jax.jit(lambda x: x * 2.0)
for _ in range(6):  # the heap grows for the first few (freed outputs lag a call)
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(12):
  f(x).block_until_ready()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(applied, faults)
"""


def _faults(tuned: bool) -> tuple[str, int]:
  env = dict(os.environ, REASONING_JAX_HOST_MALLOC="1" if tuned else "0",
             JAX_PLATFORMS="cpu", XLA_FLAGS="")
  out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                       text=True, timeout=120, check=True).stdout.split()
  return out[-2], int(out[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuned_malloc_reuses_large_blocks_instead_of_refaulting():
  applied, untuned = _faults(tuned=False)
  assert applied == "False"
  # The premise: 12 calls x 64 MiB of fresh pages (4 KiB each) = 192 Ki faults.
  assert untuned >= 12 * 16384 * 0.9, untuned
  applied, tuned = _faults(tuned=True)
  assert applied == "True"
  # Mostly zero; the heap still grows now and then (an output freed a call late
  # leaves no block big enough), so allow three such growths of 16 Ki faults.
  assert tuned * 4 <= untuned, (tuned, untuned)


def test_skipped_once_the_backend_started_or_when_turned_off(monkeypatch):
  import jax
  jax.devices()  # this process's backend is up: arenas are bound, tuning is pointless
  monkeypatch.setattr(host_malloc, "_applied", False)
  assert host_malloc.tune_host_malloc() is False
  monkeypatch.setenv("REASONING_JAX_HOST_MALLOC", "0")
  monkeypatch.setattr(host_malloc, "_backend_started", lambda: False)
  assert host_malloc.tune_host_malloc() is False


def test_accelerator_hosts_are_left_alone(monkeypatch):
  monkeypatch.setattr(host_malloc, "_configured_platforms", lambda: "tpu,cpu")
  assert host_malloc._accelerator_host()
  monkeypatch.setattr(host_malloc, "_configured_platforms", lambda: "cpu")
  assert not host_malloc._accelerator_host()
  monkeypatch.setattr(host_malloc, "_configured_platforms", lambda: "")
  monkeypatch.setattr(host_malloc, "_ACCELERATOR_PLUGINS", ("json",))  # "installed"
  assert host_malloc._accelerator_host()
