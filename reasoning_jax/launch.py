"""Local multi-process runs: N copies of `reasoning-jax` as one jax job on one machine.

    reasoning-jax launch --processes 2 --devices_per_process 4 -- train --gin_file x.gin
    python -m reasoning_jax.launch --processes 2 -- train ...        # the same

Each child runs `python -m reasoning_jax.cli <argv>` with
`REASONING_JAX_COORDINATOR=127.0.0.1:PORT`, `REASONING_JAX_NUM_PROCESSES=N`,
`REASONING_JAX_PROCESS_ID=i` and `XLA_FLAGS=--xla_force_host_platform_device_count=K`;
the trainer's `maybe_initialize` turns those into `jax.distributed.initialize(...)` with
gloo collectives, so the run is one mesh of N*K CPU devices with real cross-process
collectives: the code path of a TPU pod, where instead every worker runs the plain
command and `jax.distributed.initialize()` reads the TPU runtime.

Output: every line of child i is printed as `[pi] line` (stdout and stderr kept apart).
Supervision: when a child exits non-zero or is killed, the launcher says which one and
how, gives the others `grace_s` seconds to exit on their own (their jax runtime notices
the lost peer, see `training/multihost.py`), then terminates them, and returns non-zero.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from reasoning_jax.training import multihost


def free_port() -> int:
  """A TCP port that was free a moment ago (bind to port 0 and let the OS choose)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def child_env(process_id: int, processes: int, devices_per_process: int, port: int,
              heartbeat_timeout_s: int | None = None,
              base: dict[str, str] | None = None) -> dict[str, str]:
  """The environment of child `process_id` (XLA_FLAGS' device count replaced)."""
  env = dict(os.environ if base is None else base)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
  env["XLA_FLAGS"] = " ".join(flags)
  env.setdefault("JAX_PLATFORMS", "cpu")
  env["PYTHONUNBUFFERED"] = "1"  # lines arrive as they are printed, in order
  env[multihost.ENV_COORDINATOR] = f"127.0.0.1:{port}"
  env[multihost.ENV_NUM_PROCESSES] = str(processes)
  env[multihost.ENV_PROCESS_ID] = str(process_id)
  if heartbeat_timeout_s is not None:
    env[multihost.ENV_HEARTBEAT] = str(int(heartbeat_timeout_s))
  return env


def _describe(rc: int) -> str:
  if rc < 0:
    try:
      return f"was killed by {signal.Signals(-rc).name}"
    except ValueError:
      return f"was killed by signal {-rc}"
  if rc > 128:  # a shell-style code, e.g. 134 = SIGABRT
    try:
      return f"exited with code {rc} ({signal.Signals(rc - 128).name})"
    except ValueError:
      pass
  return f"exited with code {rc}"


def _pump(stream, prefix: str, out) -> None:
  for line in iter(stream.readline, ""):
    out.write(prefix + line if line.endswith("\n") else prefix + line + "\n")
    out.flush()
  stream.close()


def launch(argv: Sequence[str], processes: int = 2, devices_per_process: int = 4,
           port: int = 0, *, grace_s: float = 30.0, heartbeat_timeout_s: int | None = None,
           python: str = sys.executable, stdout=None, stderr=None) -> int:
  """Run `reasoning-jax <argv>` as `processes` cooperating jax processes; returns the
  exit code (0 when every child succeeded).

  Args:
    argv: the `reasoning-jax` command line of every child, e.g. `["train", ...]`.
    processes, devices_per_process: N processes of K CPU devices each.
    port: the coordinator port on 127.0.0.1; 0 picks a free one.
    grace_s: after a child fails, how long the others may take to exit on their own
      before they are terminated (SIGTERM, then SIGKILL 5 s later).
    heartbeat_timeout_s: jax's peer heartbeat timeout (default 30 s, see multihost).
    python: the interpreter of the children.
    stdout, stderr: where prefixed child output goes (default sys.stdout / stderr).
  """
  if processes < 1 or devices_per_process < 1:
    raise ValueError(f"need processes >= 1 and devices_per_process >= 1, got "
                     f"{processes} and {devices_per_process}")
  if not argv:
    raise ValueError("nothing to launch: give a command after `--`, e.g. -- train ...")
  stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
  if port:  # taken: say so now, not after the children's connection timeout
    multihost.check_port_free(f"127.0.0.1:{port}")
  port = port or free_port()
  say = lambda msg: (stderr.write(f"[launch] {msg}\n"), stderr.flush())  # noqa: E731
  children, pumps = [], []
  for i in range(processes):
    env = child_env(i, processes, devices_per_process, port, heartbeat_timeout_s)
    p = subprocess.Popen([python, "-m", "reasoning_jax.cli", *argv], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         bufsize=1)
    children.append(p)
    say(f"process {i} started (pid {p.pid}), coordinator 127.0.0.1:{port}")
    for stream, out in ((p.stdout, stdout), (p.stderr, stderr)):
      t = threading.Thread(target=_pump, args=(stream, f"[p{i}] ", out), daemon=True)
      t.start()
      pumps.append(t)
  failed, deadline = None, None
  try:
    while True:
      codes = [p.poll() for p in children]
      if failed is None:
        for i, rc in enumerate(codes):
          if rc not in (None, 0):
            failed = i
            say(f"process {i} {_describe(rc)}; waiting up to {grace_s:.0f} s for the "
                "others to stop")
            deadline = time.monotonic() + grace_s
            break
      if all(rc is not None for rc in codes):
        break
      if deadline is not None and time.monotonic() > deadline:
        for i, p in enumerate(children):
          if p.poll() is None:
            say(f"terminating process {i} (pid {p.pid}): process {failed} failed")
            p.terminate()
        _reap(children, 5.0)
        break
      time.sleep(0.1)
  except KeyboardInterrupt:
    for p in children:
      if p.poll() is None:
        p.send_signal(signal.SIGINT)
    _reap(children, 10.0)
  for t in pumps:
    t.join(timeout=5.0)
  codes = [p.returncode for p in children]
  for i, rc in enumerate(codes):
    if rc != 0 and i != failed:
      say(f"process {i} {_describe(rc)}")
  if any(rc != 0 for rc in codes):
    first = failed if failed is not None else next(i for i, rc in enumerate(codes) if rc)
    say(f"FAILED: process {first} {_describe(codes[first])}")
    return 1
  return 0


def _reap(children, timeout_s: float) -> None:
  """Wait for the children; SIGKILL whatever is still alive after `timeout_s`."""
  end = time.monotonic() + timeout_s
  for p in children:
    try:
      p.wait(timeout=max(0.0, end - time.monotonic()))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The `launch` subcommand's options (shared by cli.py and `python -m`)."""
  p.add_argument("--processes", type=int, default=2, help="jax processes to start")
  p.add_argument("--devices_per_process", type=int, default=4,
                 help="CPU devices per process (XLA_FLAGS host device count)")
  p.add_argument("--port", type=int, default=0, help="coordinator port; 0 = a free one")
  p.add_argument("--grace_s", type=float, default=30.0,
                 help="seconds the others may take to stop after one fails")
  p.add_argument("--heartbeat_timeout_s", type=int, default=None,
                 help="jax's peer heartbeat timeout (default 30)")
  p.add_argument("command", nargs=argparse.REMAINDER,
                 help="-- then the reasoning-jax command of every process")


def run_args(a: argparse.Namespace) -> int:
  """`launch` from parsed arguments (strips the leading `--`)."""
  argv = list(a.command)
  if argv and argv[0] == "--":
    argv = argv[1:]
  return launch(argv, a.processes, a.devices_per_process, a.port, grace_s=a.grace_s,
                heartbeat_timeout_s=a.heartbeat_timeout_s)


if __name__ == "__main__":
  parser = argparse.ArgumentParser(prog="python -m reasoning_jax.launch",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  add_arguments(parser)
  sys.exit(run_args(parser.parse_args()))
