"""training.host_malloc: with the tuning, freed large blocks are reused, not re-faulted.

The measurement runs in fresh subprocesses, because the tuning only takes effect
before JAX starts its backend (and this test process started it long ago).
"""
import os
import subprocess
import sys

import pytest

from reasoning_jax.training import host_malloc

# The mechanism the tuning relies on, measured without JAX's timing in the way: a
# worker thread (XLA's allocate from worker threads) mallocs, touches and frees a
# 64 MiB block, again and again. Untuned, glibc maps a fresh block every time (16 Ki
# page faults); tuned, the heap keeps the freed block and the next malloc reuses it.
# (With jitted calls in place of malloc the count is the same when the machine is
# quiet, but under load JAX frees buffers late and the heap sometimes grows instead.)
_SCRIPT = """
import ctypes, resource, statistics, threading
from reasoning_jax.training.host_malloc import tune_host_malloc
applied = tune_host_malloc()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size, faults = 64 << 20, []
def work():
  for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
t = threading.Thread(target=work)
t.start()
t.join()
print(applied, statistics.median(faults[1:]))
"""


def _faults(tuned: bool) -> tuple[str, float]:
  """(whether the tuning applied, median page faults per 64 MiB block after the
  first) in a fresh process."""
  env = dict(os.environ, REASONING_JAX_HOST_MALLOC="1" if tuned else "0",
             JAX_PLATFORMS="cpu", XLA_FLAGS="")
  out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                       text=True, timeout=120, check=True).stdout.split()
  return out[-2], float(out[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuned_malloc_reuses_large_blocks_instead_of_refaulting():
  applied, untuned = _faults(tuned=False)
  assert applied == "False"
  # The premise: 64 MiB of fresh pages (4 KiB each) per block = 16 Ki faults.
  assert untuned >= 16384 * 0.9, untuned
  applied, tuned = _faults(tuned=True)
  assert applied == "True"
  assert tuned < 100, (tuned, untuned)


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
