"""A sandboxed Python executor: each call runs in a fresh child process with limits.

What is guaranteed, and by what:
- Time: the parent kills the child's process group at `timeout_s` wall-clock seconds;
  RLIMIT_CPU stops a busy child at the same bound even if the parent is slow.
- Memory: RLIMIT_AS caps the child's address space at `memory_mb`.
- Output: the parent reads at most `output_bytes` (stdout and stderr together) and
  kills a child that prints more.
- Network: where the kernel allows unprivileged user namespaces (`unshare -rn` works),
  the child runs in a fresh network namespace with only a down loopback device: no
  route exists, whatever the code does. Everywhere, an audit hook in the child refuses
  socket creation, subprocesses and ctypes symbol lookups (so native code cannot be
  reached to undo the policy). `network_isolation` says which guarantee holds.
- Files: the audit hook refuses opening for writing, creating, renaming or removing
  any path outside the call's scratch directory (a fresh temporary directory, removed
  afterwards); RLIMIT_FSIZE caps the size of files written inside it.
The audit hook is a policy for model-written code, not a boundary against an attacker
who targets CPython itself; the namespace is the kernel-enforced part.
"""
from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reasoning_jax.tools import _child
from reasoning_jax.tools.base import (ERROR, MEMORY, OK, OUTPUT_LIMIT, REFUSED, TIMEOUT,
                                      ToolResult)

_CHILD = str(Path(_child.__file__).resolve())
# One BLAS thread: each BLAS thread reserves address space, which RLIMIT_AS counts.
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HOME": "/nonexistent"}


@functools.cache
def namespace_prefix() -> tuple[str, ...]:
  """`("unshare", "-rn")` when a fresh user + network namespace can be made here,
  else `()` (the audit hook alone then refuses sockets)."""
  exe = shutil.which("unshare")
  if exe is None:
    return ()
  try:
    ok = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return ()
  return (exe, "-rn") if ok.returncode == 0 else ()


class PythonSandbox:
  """Runs Python code in a separate, limited process; `run(code) -> ToolResult`.

  Args:
    timeout_s: wall-clock seconds per call (also the CPU-time limit, rounded up).
    memory_mb: address-space limit of the child.
    output_bytes: the most output read back; more is an `output_limit` result.
    file_mb: the largest file the code may write inside its scratch directory.
    scratch_root: where the per-call scratch directories are made (default: the
      system's temporary directory).
    isolate_network: use a network namespace when available (see module docstring).
  """
  name = "python"

  def __init__(self, timeout_s: float = 5.0, memory_mb: int = 512,
               output_bytes: int = 4096, file_mb: int = 16,
               scratch_root: str | os.PathLike | None = None, isolate_network: bool = True):
    if not timeout_s > 0:
      raise ValueError(f"PythonSandbox.timeout_s must be > 0, got {timeout_s!r}")
    if memory_mb < 64:
      raise ValueError(f"PythonSandbox.memory_mb must be >= 64 (the interpreter "
                       f"itself needs that much address space), got {memory_mb!r}")
    if output_bytes < 1 or file_mb < 0:
      raise ValueError(f"PythonSandbox.output_bytes must be >= 1 and file_mb >= 0, got "
                       f"{output_bytes!r} and {file_mb!r}")
    self.timeout_s, self.memory_mb = float(timeout_s), int(memory_mb)
    self.output_bytes, self.file_mb = int(output_bytes), int(file_mb)
    self.scratch_root = None if scratch_root is None else str(scratch_root)
    self._prefix = namespace_prefix() if isolate_network else ()

  @property
  def network_isolation(self) -> str:
    """"namespace" (kernel: no network device) or "audit-hook" (policy only)."""
    return "namespace" if self._prefix else "audit-hook"

  def _command(self, scratch: str) -> list[str]:
    cpu = max(1, int(-(-self.timeout_s // 1)))
    return [*self._prefix, sys.executable, "-I", _CHILD, scratch, str(cpu),
            str(self.memory_mb << 20), str(self.file_mb << 20)]

  def run(self, code: str) -> ToolResult:
    """Runs `code`; its printed output (and traceback, if it raised) is the result."""
    if not isinstance(code, str):
      return ToolResult("", ERROR, f"code must be a string, got {type(code).__name__}")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rj-tool-", dir=self.scratch_root) as scratch:
      proc = subprocess.Popen(self._command(scratch), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              cwd=scratch, env=_ENV, start_new_session=True)
      try:
        proc.stdin.write(code.encode("utf-8", "replace"))
        proc.stdin.close()
      except BrokenPipeError:
        pass
      out, cut = self._read(proc, start + self.timeout_s)
      code_ = proc.wait()
    seconds = time.monotonic() - start
    text = out.decode("utf-8", "replace")
    return ToolResult(text, *self._classify(code_, cut), seconds=seconds)

  def _read(self, proc, deadline: float) -> tuple[bytes, str]:
    """The child's output, and "" or why reading stopped early ("timeout", "output")."""
    fd, buf = proc.stdout.fileno(), bytearray()
    try:
      while True:
        left = deadline - time.monotonic()
        if left <= 0:
          return bytes(buf), self._kill(proc, "timeout")
        if not select.select([fd], [], [], left)[0]:
          continue
        chunk = os.read(fd, 65536)
        if not chunk:
          return bytes(buf), ""
        buf += chunk
        if len(buf) > self.output_bytes:
          return bytes(buf[:self.output_bytes]), self._kill(proc, "output")
    finally:
      proc.stdout.close()

  @staticmethod
  def _kill(proc, why: str) -> str:
    try:
      os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    return why

  def _classify(self, code: int, cut: str) -> tuple[str, str]:
    if cut == "timeout" or code == -signal.SIGXCPU:
      return TIMEOUT, f"killed after {self.timeout_s:g} s"
    if cut == "output":
      return OUTPUT_LIMIT, f"printed more than {self.output_bytes} bytes"
    if code == 0:
      return OK, ""
    if code == _child.EXIT_MEMORY or code == -signal.SIGKILL:
      return MEMORY, f"over the {self.memory_mb} MB memory limit"
    if code == _child.EXIT_REFUSED:
      return REFUSED, "the sandbox refused an action (see the output)"
    if code == -signal.SIGXFSZ:
      return REFUSED, f"wrote a file larger than {self.file_mb} MB"
    return ERROR, f"exit status {code}"
