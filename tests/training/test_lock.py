"""One writer per run directory (`training.lock`)."""
import subprocess
import sys
import textwrap

import pytest

from reasoning_jax.training.lock import RunLock, RunLocked


def _try_lock(path) -> subprocess.CompletedProcess:
  code = textwrap.dedent(f"""
      from reasoning_jax.training.lock import RunLock, RunLocked
      try:
        RunLock({str(path)!r}).acquire()
      except RunLocked as e:
        print(e)
      else:
        print("acquired")
      """)
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=120)


def test_re_entrant_in_a_process_exclusive_across_processes(tmp_path):
  """A second holder in this process shares the lock; another process is refused
  until the last holder here releases it."""
  import os
  a = RunLock(tmp_path).acquire()
  b = RunLock(tmp_path).acquire()
  a.release()
  out = _try_lock(tmp_path).stdout
  assert f"being written by pid {os.getpid()} on host" in out
  b.release()
  b.release()  # idempotent
  assert _try_lock(tmp_path).stdout.strip() == "acquired"


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  """kill -9 of the holder releases the kernel lock: the next writer gets it."""
  code = textwrap.dedent(f"""
      import os, signal, sys
      from reasoning_jax.training.lock import RunLock
      RunLock({str(tmp_path)!r}).acquire()
      print("held", flush=True)
      os.kill(os.getpid(), signal.SIGKILL)
      """)
  p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                     timeout=120)
  assert p.stdout.strip() == "held" and p.returncode == -9
  RunLock(tmp_path).acquire().release()


def test_a_held_lock_in_another_process_is_refused(tmp_path):
  code = textwrap.dedent(f"""
      import sys, time
      from reasoning_jax.training.lock import RunLock
      RunLock({str(tmp_path)!r}).acquire()
      print("held", flush=True)
      sys.stdin.readline()
      """)
  p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, text=True)
  try:
    assert p.stdout.readline().strip() == "held"
    with pytest.raises(RunLocked, match=f"pid {p.pid} on host"):
      RunLock(tmp_path).acquire()
  finally:
    p.stdin.close()
    p.wait(timeout=60)
