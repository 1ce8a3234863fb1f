"""Several jax processes as one run: start-up, failure detection, host-side helpers.

Two ways a run becomes multi-process:
- `reasoning-jax launch` (`reasoning_jax/launch.py`) starts N local processes and gives
  each `REASONING_JAX_COORDINATOR` (host:port), `REASONING_JAX_NUM_PROCESSES` and
  `REASONING_JAX_PROCESS_ID`; `initialize_from_env` then calls
  `jax.distributed.initialize` with them and turns on gloo collectives on CPU, so one
  CPU machine runs the same multi-host code path as a pod.
- On a TPU pod slice every worker runs the same command and `jax.distributed.initialize()`
  reads everything from the TPU runtime (`maybe_initialize`).

Lost peers: jax's coordination service gets a heartbeat from every process; when one
stops (killed, crashed, preempted) for `heartbeat_timeout_s`, every survivor aborts
(exit code 134) with `The following tasks are unhealthy (stopped sending heartbeats):`
followed by the lost process ids, or, when the lost one is process 0 (the coordinator,
"the leader task"), at once with `Failed to send RPC to coordination service. Either the
leader task was preempted/died`. A survivor blocked in a collective waiting for the lost
peer is aborted the same way, so no process hangs. jax's default is 100 s; we pass 30 s.
"""
from __future__ import annotations

import errno
import inspect
import logging
import os
import re
import socket
from collections.abc import Mapping

import jax
import numpy as np

log = logging.getLogger("reasoning_jax")

ENV_COORDINATOR = "REASONING_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "REASONING_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "REASONING_JAX_PROCESS_ID"
ENV_HEARTBEAT = "REASONING_JAX_HEARTBEAT_TIMEOUT"
DEFAULT_HEARTBEAT_S = 30
# Set by the Cloud TPU runtime on every worker of a multi-host slice.
_TPU_ENV = ("TPU_WORKER_HOSTNAMES", "CLOUD_TPU_TASK_ID", "MEGASCALE_COORDINATOR_ADDRESS")


def launched(env: Mapping[str, str] | None = None) -> bool:
  """True when this process was started by `reasoning_jax.launch` (the env is set)."""
  env = os.environ if env is None else env
  return bool(env.get(ENV_COORDINATOR))


class CoordinatorPortInUse(RuntimeError):
  """The jax.distributed coordinator port is already taken (the message names it)."""


def check_port_free(address: str) -> None:
  """Raise `CoordinatorPortInUse` naming `host:port` when the port is taken.

  jax's coordinator binds `[::]:port`; if something already listens there, jax fails
  deep inside gRPC (or, worse, the other processes connect to the wrong server and wait
  for the initialization timeout). Binding it ourselves first gives a clear message.
  """
  host, _, port = address.rpartition(":")
  try:
    port_n = int(port)
  except ValueError:
    raise ValueError(f"coordinator address {address!r} must be host:port") from None
  for family, bind_host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    try:
      s = socket.socket(family, socket.SOCK_STREAM)
    except OSError:  # no IPv6 on this machine
      continue
    try:
      s.bind((bind_host, port_n))
    except OSError as e:
      if e.errno in (errno.EADDRINUSE, errno.EACCES):
        raise CoordinatorPortInUse(
            f"coordinator port {host}:{port_n} is already in use (another run, or a "
            f"process that has not exited yet); pick another port, e.g. "
            f"`reasoning-jax launch --port 0` chooses a free one") from None
      if family == socket.AF_INET6:
        continue  # e.g. EADDRNOTAVAIL where IPv6 is disabled
      raise
    finally:
      s.close()


def _initialize_kwargs(heartbeat_timeout_s: int) -> dict:
  """`heartbeat_timeout_seconds` when this jax's `initialize` takes it (0.4.2x - 0.12)."""
  params = inspect.signature(jax.distributed.initialize).parameters
  if "heartbeat_timeout_seconds" in params:
    return {"heartbeat_timeout_seconds": int(heartbeat_timeout_s)}
  log.warning("this jax's distributed.initialize has no heartbeat_timeout_seconds; a "
              "lost peer is detected after jax's default timeout")
  return {}


def initialize_from_env(env: Mapping[str, str] | None = None, initialize=None) -> None:
  """`jax.distributed.initialize` for a process started by `reasoning_jax.launch`.

  Reads the coordinator address, process count and id from the environment, checks
  (on process 0) that the coordinator port is free, selects gloo CPU collectives (the
  default CPU backend has no cross-process collectives) and sets the heartbeat timeout
  that bounds how long a survivor waits for a lost peer.
  """
  env = os.environ if env is None else env
  address = env[ENV_COORDINATOR]
  try:
    n, pid = int(env[ENV_NUM_PROCESSES]), int(env[ENV_PROCESS_ID])
  except (KeyError, ValueError):
    raise ValueError(f"{ENV_COORDINATOR} is set, so {ENV_NUM_PROCESSES} and "
                     f"{ENV_PROCESS_ID} must be integers too (set by "
                     "`reasoning-jax launch`)") from None
  if not 0 <= pid < n:
    raise ValueError(f"{ENV_PROCESS_ID}={pid} is not in [0, {n})")
  heartbeat = int(env.get(ENV_HEARTBEAT, DEFAULT_HEARTBEAT_S))
  if pid == 0:
    check_port_free(address)
  platforms = env.get("JAX_PLATFORMS", "")
  if not platforms or "cpu" in platforms:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  (initialize or jax.distributed.initialize)(
      coordinator_address=address, num_processes=n, process_id=pid,
      **_initialize_kwargs(heartbeat))


def on_multihost_tpu(env: Mapping[str, str] | None = None) -> bool:
  """True when the environment says this process is one worker of a multi-host TPU.

  `TPU_WORKER_HOSTNAMES` lists every worker of the slice (one name on a single-host
  VM such as a v5e-8, so it alone is not enough); `CLOUD_TPU_TASK_ID` and
  `MEGASCALE_COORDINATOR_ADDRESS` are only set on multi-host / multi-slice jobs.
  """
  env = os.environ if env is None else env
  hosts = [h.strip() for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
  # libtpu, once loaded without TPU metadata (e.g. compiling for a topology on a CPU
  # host), writes warning sentences into TPU_WORKER_HOSTNAMES and CLOUD_TPU_TASK_ID
  # (with C setenv, so os.environ does not show them but child processes inherit
  # them): only real host names, a task number and an address count.
  hosts = [h for h in hosts if re.fullmatch(r"[A-Za-z0-9._:\[\]-]+", h)]
  task = env.get("CLOUD_TPU_TASK_ID", "").strip()
  coordinator = env.get("MEGASCALE_COORDINATOR_ADDRESS", "").strip()
  return (len(hosts) > 1 or task.isdigit()
          or bool(re.fullmatch(r"[A-Za-z0-9._:\[\]-]+", coordinator)))


def maybe_initialize(mode: str = "auto", env: Mapping[str, str] | None = None,
                     initialize=None) -> bool:
  """Call `jax.distributed.initialize()` when this is a multi-host run.

  Must run before anything touches a device. On a TPU pod every worker runs the same
  command; with no arguments jax reads the coordinator, process count and id from the
  TPU metadata, so nothing has to be passed per worker.

  Args:
    mode: "auto" (initialize when `on_multihost_tpu(env)` or when started by
      `reasoning-jax launch`), "on" (always; e.g. GPU clusters with
      `JAX_COORDINATOR_ADDRESS` etc. set), "off" (never).
    env: the environment to read (default `os.environ`).
    initialize: the function to call (default `jax.distributed.initialize`); tests
      pass a recorder.

  Returns:
    Whether it initialized.
  """
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"distributed mode {mode!r}: use 'auto', 'on' or 'off'")
  if mode != "off" and launched(env):
    # A local multi-process run (`reasoning-jax launch`): coordinator, count and id
    # come from the launcher's environment; gloo collectives on CPU.
    initialize_from_env(env, initialize)
  elif mode == "off" or (mode == "auto" and not on_multihost_tpu(env)):
    return False
  else:
    (initialize or jax.distributed.initialize)()
  quiet_non_primary()
  log.info("jax.distributed initialized: process %d of %d, %d devices (%d local)",
           jax.process_index(), jax.process_count(), jax.device_count(),
           jax.local_device_count())
  return True


def quiet_non_primary() -> None:
  """Only process 0 logs progress: other processes keep errors only."""
  if jax.process_index() != 0:
    logging.getLogger("reasoning_jax").setLevel(logging.ERROR)


def is_primary() -> bool:
  """Whether this is process 0 (the one that prints, logs and writes run files)."""
  return jax.process_index() == 0


# ----------------------------------------------------------------------------- data
def process_slice(n: int, what: str = "batch") -> slice:
  """This process's contiguous rows of a global batch of `n` rows.

  Process p of P owns rows [p*n/P, (p+1)*n/P): exactly the rows whose devices it holds
  when the batch is split over the mesh's batch axes (jax orders devices by process).
  """
  p, count = jax.process_index(), jax.process_count()
  if n % count:
    raise ValueError(f"the {what} of {n} rows does not split evenly over {count} "
                     f"processes; use a multiple of {count}")
  size = n // count
  return slice(p * size, (p + 1) * size)


def allgather(x) -> np.ndarray:
  """Host values of every process stacked on a new leading axis `[P, ...]`."""
  if jax.process_count() == 1:
    return np.asarray(x)[None]
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(np.asarray(x)))


def allgather_rows(x) -> np.ndarray:
  """Per-process row blocks `[n_p, ...]` concatenated in process order (the global
  batch, when each process holds its `process_slice`)."""
  if jax.process_count() == 1:
    return np.asarray(x)
  g = allgather(x)
  return g.reshape((-1,) + g.shape[2:])


def check_mesh_order(mesh) -> None:
  """Raise unless the mesh's devices, flattened, run process by process, so that the
  contiguous row split of `process_slice` is the split the batch sharding makes."""
  procs = [d.process_index for d in mesh.devices.flat]
  if procs != sorted(procs):
    raise ValueError(f"the mesh's devices are not ordered by process ({procs}); the "
                     "per-process batch slices would not match the batch sharding")
