"""The launcher and the start-up checks, without a multi-process jax job (fast)."""
import io
import socket

import pytest

from reasoning_jax import launch as L
from reasoning_jax.training import multihost as MH


def test_child_env_replaces_the_device_count():
  env = L.child_env(1, 3, 4, 1234, heartbeat_timeout_s=12, base={
      "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_dump_to=/tmp/x"})
  assert env["XLA_FLAGS"].split() == ["--xla_dump_to=/tmp/x",
                                      "--xla_force_host_platform_device_count=4"]
  assert env[MH.ENV_COORDINATOR] == "127.0.0.1:1234"
  assert (env[MH.ENV_NUM_PROCESSES], env[MH.ENV_PROCESS_ID]) == ("3", "1")
  assert env[MH.ENV_HEARTBEAT] == "12" and env["JAX_PLATFORMS"] == "cpu"
  assert MH.launched(env) and not MH.launched({})


def test_port_in_use_is_named():
  with socket.socket() as s:
    s.bind(("0.0.0.0", 0))
    s.listen()
    port = s.getsockname()[1]
    with pytest.raises(RuntimeError, match=f"coordinator port 127.0.0.1:{port} is "
                       "already in use"):
      MH.check_port_free(f"127.0.0.1:{port}")
  MH.check_port_free(f"127.0.0.1:{L.free_port()}")  # a free one passes


def test_initialize_from_env_passes_the_launch_settings(monkeypatch):
  calls, updates = [], []
  # Recorded, not applied: this test process must keep its own collectives setting.
  monkeypatch.setattr(MH.jax.config, "update", lambda k, v: updates.append((k, v)))
  env = {MH.ENV_COORDINATOR: f"127.0.0.1:{L.free_port()}", MH.ENV_NUM_PROCESSES: "2",
         MH.ENV_PROCESS_ID: "1", MH.ENV_HEARTBEAT: "7", "JAX_PLATFORMS": "cpu"}
  MH.initialize_from_env(env, initialize=lambda **kw: calls.append(kw))
  assert calls == [{"coordinator_address": env[MH.ENV_COORDINATOR], "num_processes": 2,
                    "process_id": 1, "heartbeat_timeout_seconds": 7}]
  assert updates == [("jax_cpu_collectives_implementation", "gloo")]
  with pytest.raises(ValueError, match="REASONING_JAX_PROCESS_ID=2 is not in"):
    MH.initialize_from_env({**env, MH.ENV_PROCESS_ID: "2"}, initialize=print)


def test_a_failing_child_fails_the_launch():
  """Both children fail before jax starts (no run directory): the launcher returns 1
  and says which process failed and how, with every child line prefixed."""
  out, err = io.StringIO(), io.StringIO()
  rc = L.launch(["plot", "--workdir", "/nonexistent/run"], processes=2,
                devices_per_process=1, grace_s=5, stdout=out, stderr=err)
  text = err.getvalue()
  assert rc == 1
  assert "[launch] FAILED: process " in text and "exited with code 1" in text
  assert "[p0] error: /nonexistent/run/metrics.jsonl does not exist" in text
  assert "[p1] error: /nonexistent/run/metrics.jsonl does not exist" in text


def test_nothing_to_launch():
  with pytest.raises(ValueError, match="nothing to launch"):
    L.launch([], processes=2)


def test_launch_on_a_taken_port_fails_before_starting_children():
  """The launcher checks --port itself, at once, instead of letting every child wait
  for its coordinator connection to time out: no child starts (the interpreter given
  does not exist, so starting one would raise FileNotFoundError instead)."""
  with socket.socket() as s:
    s.bind(("0.0.0.0", 0))
    s.listen()
    port = s.getsockname()[1]
    with pytest.raises(MH.CoordinatorPortInUse, match=f"127.0.0.1:{port}"):
      L.launch(["train"], processes=2, port=port, python="/nonexistent/python")


def test_libtpus_warning_in_tpu_worker_hostnames_is_not_a_pod():
  """libtpu, loaded without TPU metadata, writes warning sentences into
  TPU_WORKER_HOSTNAMES and CLOUD_TPU_TASK_ID; child processes inherit them. They are
  not a worker list or a task number."""
  warning = ("WARNING: could not determine TPU worker hostnames or IP addresses, please "
             "set env var `TPU_WORKER_HOSTNAMES` manually, otherwise libtpu.so may not "
             "properly initialize.")
  assert not MH.on_multihost_tpu({"TPU_WORKER_HOSTNAMES": warning})
  assert not MH.on_multihost_tpu({"CLOUD_TPU_TASK_ID": "WARNING: could not determine "
                                   "TPU worker number, please set env var"})
  assert MH.on_multihost_tpu({"CLOUD_TPU_TASK_ID": "3"})
  assert MH.on_multihost_tpu({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2:8080"})
  assert MH.on_multihost_tpu({"TPU_WORKER_HOSTNAMES": "t1v-n-0-w-0,t1v-n-0-w-1"})
  assert not MH.on_multihost_tpu({"TPU_WORKER_HOSTNAMES": "10.130.0.12"})
