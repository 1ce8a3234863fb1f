"""One writer per run directory: `W/train.lock`.

Two `train` commands on one run directory would race on checkpoints (orbax deletes the
other's in-flight step) and on `metrics.jsonl`. The primary process of a `train` holds
an exclusive lock for the whole run; a second writer gets `RunLocked` naming the
holder's pid and host, before it touches anything.

On a local filesystem the lock is `fcntl.flock` on the file: the kernel releases it when
the holder exits for any reason (kill -9 included), so a crashed run never leaves a
stale lock. Object stores (gs://, s3://) have no locks: there the file itself is the
lock (written if absent, removed on release), a crashed run leaves it behind, and the
message says how to remove it.

Within one process the lock is re-entrant (a notebook that builds a second trainer on
the same run, or a test): it guards against other processes, and is released when
the last holder in the process releases it.
"""
from __future__ import annotations

import json
import os
import socket
import time

from etils import epath

LOCK_NAME = "train.lock"

# Locks this process holds: path -> [holder count, fd or None (object stores)].
_HELD: dict[str, list] = {}


class RunLocked(RuntimeError):
  """Another process is writing this run directory."""


def _holder(text: str) -> str:
  try:
    info = json.loads(text)
    return f"pid {info['pid']} on host {info['host']} (since {info['since']})"
  except (ValueError, KeyError, TypeError):
    return "an unknown process"


def _record() -> str:
  return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                     "since": time.strftime("%Y-%m-%d %H:%M:%S")})


class RunLock:
  """The run directory's writer lock; `acquire` raises `RunLocked` if it is held."""

  def __init__(self, workdir: str | os.PathLike):
    self.path = epath.Path(workdir) / LOCK_NAME
    self._local = "://" not in os.fspath(workdir)
    self._fd: int | None = None
    self._remote = False
    self._held = False

  def acquire(self, record: bool = True) -> "RunLock":
    """Take the lock (the directory must exist); re-entrant within a process. With
    `record` False the holder's pid and host are written later (`write_record`)."""
    key = os.fspath(self.path)
    if key in _HELD:
      _HELD[key][0] += 1
    else:
      if self._local:
        self._acquire_local()
      else:
        self._acquire_remote()
      _HELD[key] = [1, self._fd]
    self._held = True
    if record:
      self.write_record()
    return self

  def _acquire_local(self) -> None:
    import fcntl
    fd = os.open(os.fspath(self.path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
      os.close(fd)
      raise RunLocked(f"{self.path.parent} is being written by {_holder(text)}; wait "
                      "for that run to finish or stop it, or use another --workdir") from None
    self._fd = fd

  def _acquire_remote(self) -> None:
    if self.path.exists():
      raise RunLocked(f"{self.path.parent} is being written by "
                      f"{_holder(self.path.read_text())} (an object-store lock file); "
                      f"if that run is gone, delete {self.path} and rerun")
    self.path.write_text(_record())
    self._remote = True

  def write_record(self) -> None:
    """Write this process's pid and host into the held lock file, for the message a
    second writer gets (called once the run has really started, so a command that
    fails at start-up leaves the file as it was)."""
    entry = _HELD.get(os.fspath(self.path))
    if entry is not None and entry[1] is not None:
      os.ftruncate(entry[1], 0)
      os.pwrite(entry[1], _record().encode(), 0)

  def release(self) -> None:
    """Release this holder's share (idempotent); the last one in the process unlocks
    (the local file stays, unlocked; an object-store lock file is removed)."""
    if not self._held:
      return
    self._held = False
    key = os.fspath(self.path)
    entry = _HELD[key]
    entry[0] -= 1
    if entry[0] > 0:
      return
    del _HELD[key]
    fd = entry[1]
    if fd is not None:
      import fcntl
      fcntl.flock(fd, fcntl.LOCK_UN)
      os.close(fd)
    elif not self._local:
      self.path.unlink(missing_ok=True)
    self._fd, self._remote = None, False

  def __enter__(self) -> "RunLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
