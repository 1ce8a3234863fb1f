"""Multi-host for real on one machine: 2 jax processes x 4 CPU devices vs 1 x 8.

The test process never calls jax.distributed: every run is a subprocess
(`reasoning-jax launch` or `reasoning-jax train`) sharing the suite's compile cache.
The runs are module fixtures, shared by the tests that compare them:

  two    2 processes, SFT 2 + GARL 2 steps, a checkpoint after every step
  one    the same job in 1 process with 8 devices
  resumed2 / resumed1   `two`'s checkpoints of steps 1-3 (as if it had died after
         step 3) resumed to step 4 by 2 processes / by 1

GARL rather than GRPO: an untrained model earns no exact-match reward, so GRPO's
advantages are all 0 and its gradients are rounding noise (~1e-9) that Adam scales up
to learning-rate-sized steps; two correct runs then differ by ~1e-4 for a reason that
has nothing to do with processes. GARL's teacher-forced answer term gives real
gradients, and its rollouts exercise the same sampler, reward and batch paths.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

# Two local jax processes with gloo CPU collectives hang on jax 0.12.1 (a 2-process
# train of this file's job never finishes; seen at 4ae93d4 too, so not this code's
# change; jax 0.10.2 and 0.12.0.1 run it). Skipped on that release only, so a newer
# jax runs these tests again.
if jax.__version__ == "0.12.1":
  pytest.skip("jax 0.12.1: multi-process CPU (gloo) runs hang in this release",
              allow_module_level=True)

from reasoning_jax.training.checkpoint import CheckpointManager

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIN = """
ModelSpec.overrides = (("d_model", 32), ("n_layers", 1), ("n_heads", 2),
                       ("n_kv_heads", 1), ("head_dim", 16), ("ffw_dim", 64),
                       ("max_seq_len", 64))
TaskSpec.kwargs = (("num_digits", 2),)
TaskSpec.num_warmup = 64
TaskSpec.num_train = 32
TaskSpec.num_eval = 4
SFTConfig.steps = 2
SFTConfig.batch_size = 8
RLConfig.objective = "garl"
RLConfig.steps = 2
RLConfig.prompts_per_step = 8
RLConfig.group_size = 4
RLConfig.max_new_tokens = 16
EvalConfig.every = 100
EvalConfig.num_prompts = 4
EvalConfig.samples = 2
RunConfig.mesh = (2, 4, 1)
RunConfig.checkpoint_every = 1
RunConfig.keep_checkpoints = 10
RunConfig.reward_workers = 0
RunConfig.progress = False
RunConfig.plots = False
"""


def _env(devices=None):
  env = dict(os.environ)  # with conftest's JAX_COMPILATION_CACHE_DIR: the suite's cache
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.pop("REASONING_JAX_COORDINATOR", None)
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _train(workdir, gin, processes, *extra, timeout=300):
  """Run the job in `workdir` (resuming if it has checkpoints), each process logging
  the example indices it draws there; returns the output."""
  train = ["train", "--gin_file", str(gin), "--workdir", str(workdir),
           "--index_log", str(workdir), *extra]
  if processes == 1:
    cmd, env = [sys.executable, "-m", "reasoning_jax.cli", *train], _env(8)
  else:
    cmd = [sys.executable, "-m", "reasoning_jax.cli", "launch", "--processes",
           str(processes), "--devices_per_process", "4", "--", *train]
    env = _env()
  r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                     timeout=timeout)
  out = r.stdout + r.stderr
  assert r.returncode == 0, out[-6000:]
  return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("mh")
  gin = base / "job.gin"
  gin.write_text(GIN)
  w = {k: base / k for k in ("two", "one", "resumed2", "resumed1")}
  for p in w.values():
    p.mkdir()
  out = {"two": _train(w["two"], gin, 2), "one": _train(w["one"], gin, 1)}
  for k in ("resumed2", "resumed1"):
    shutil.copytree(w["two"] / "checkpoints", w[k] / "checkpoints")
    shutil.rmtree(w[k] / "checkpoints" / "4")  # died after step 3's checkpoint
  out["resumed2"] = _train(w["resumed2"], gin, 2)
  out["resumed1"] = _train(w["resumed1"], gin, 1)
  return w, out


def _params(workdir, step):
  """A checkpoint's params, restored onto one device of this (1-process) test."""
  m = CheckpointManager(workdir, read_only=True)
  try:
    meta = m._mngr.item_metadata(step)["state"]
    meta = getattr(meta, "tree", meta)
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev),
                            meta, is_leaf=lambda x: hasattr(x, "shape"))
    r = m.restore(step, abstract)
  finally:
    m.close()
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(r.state["params"])[0]}, r.meta


def _assert_close(a, b, atol=1e-5):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=0, atol=atol, err_msg=k)


def _indices(workdir, proc):
  with open(os.path.join(workdir, f"indices.p{proc}.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow  # the shared runs (fixture) take ~2 min on 2 cores
def test_two_processes_equal_one(runs):
  """Every step's params (SFT and RL) and data-iterator state: 2x4 == 1x8."""
  w, out = runs
  for step in (1, 2, 3, 4):
    p2, meta2 = _params(w["two"], step)
    p1, meta1 = _params(w["one"], step)
    _assert_close(p2, p1)
    assert meta2 == meta1
  # Only process 0 prints the run's report and its log lines.
  assert out["two"].count("final: eval/accuracy") == 1
  assert "[p0] final:" in out["two"] and "[p1] INFO" not in out["two"]


@pytest.mark.slow  # the shared runs (fixture) take ~2 min on 2 cores
def test_each_example_once_per_epoch(runs):
  """Each process fed its own contiguous half of every global batch; together they
  fed exactly the 1-process run's examples, none twice within the epoch."""
  w, _ = runs
  one = _indices(w["one"], 0)
  p0, p1 = _indices(w["two"], 0), _indices(w["two"], 1)
  assert [r["step"] for r in p0] == [r["step"] for r in p1] == [r["step"] for r in one]
  assert [r["phase"] for r in one] == ["sft", "sft", "rl", "rl"]
  for a, b, c in zip(p0, p1, one):
    assert len(a["indices"]) == len(b["indices"]) == len(c["indices"]) // 2
    assert a["indices"] + b["indices"] == c["indices"]
  for phase, size in (("sft", 64), ("rl", 32)):  # 2 steps stay within one epoch
    seen = [i for r in p0 + p1 if r["phase"] == phase for i in r["indices"]]
    assert len(seen) == len(set(seen)) == 16 and max(seen) < size


@pytest.mark.slow  # the shared runs (fixture) take ~2 min on 2 cores
def test_resume_on_two_and_on_one_process(runs):
  """A 2-process checkpoint (step 3) resumed by 2 processes and by 1 process both
  continue exactly as the uninterrupted run."""
  w, out = runs
  final = _params(w["two"], 4)
  for k in ("resumed2", "resumed1"):
    assert "resumed from checkpoint step 3" in out[k]
    got = _params(w[k], 4)
    _assert_close(got[0], final[0])
    assert got[1] == final[1]


def _wait_for(pred, timeout, what):
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    if pred():
      return
    time.sleep(0.2)
  raise AssertionError(f"timed out waiting for {what}")


def test_killed_peer_stops_the_survivor(tmp_path):
  """SIGKILL process 1 mid-run: process 0 exits non-zero within 60 s, its own log
  names the lost task, and the launcher says which process died and how."""
  gin = tmp_path / "job.gin"
  gin.write_text(GIN + "RLConfig.steps = 200\n")
  log_out, log_err = open(tmp_path / "out", "w"), open(tmp_path / "err", "w")
  # A long grace period, so the survivor's exit is its own, not the launcher's doing.
  cmd = [sys.executable, "-m", "reasoning_jax.cli", "launch", "--processes", "2",
         "--devices_per_process", "4", "--grace_s", "120", "--heartbeat_timeout_s", "10",
         "--", "train", "--gin_file", str(gin), "--workdir", str(tmp_path / "w"),
         "--index_log", str(tmp_path)]
  launcher = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=log_out, stderr=log_err)
  try:
    err = lambda: (tmp_path / "err").read_text()  # noqa: E731
    idx = tmp_path / "indices.p1.jsonl"
    _wait_for(lambda: idx.exists() and '"rl"' in idx.read_text(), 240, "an RL step")
    pid = int(err().split("process 1 started (pid ")[1].split(")")[0])
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    launcher.wait(timeout=90)
    elapsed = time.monotonic() - t0
  finally:
    if launcher.poll() is None:
      launcher.kill()
    log_out.close()
    log_err.close()
  text = err()
  assert launcher.returncode != 0
  assert elapsed < 60, elapsed
  assert "process 1 was killed by SIGKILL" in text
  # jax aborts the survivor (SIGABRT); never the launcher's SIGTERM after the grace.
  assert re.search(r"process 0 (was killed by SIGABRT|exited with code [1-9])", text), text
  assert "terminating process 0" not in text
  # jax's coordination service, in process 0's own stderr, names the lost task id.
  lines = [l[5:] for l in text.splitlines() if l.startswith("[p0] ")]
  i = next(i for i, l in enumerate(lines) if "stopped sending heartbeats" in l)
  assert lines[i + 1].strip() == "1", lines[i:i + 3]


def test_coordinator_port_in_use_is_named(tmp_path):
  with socket.socket() as s:
    s.bind(("0.0.0.0", 0))
    s.listen()
    port = s.getsockname()[1]
    r = subprocess.run(
        [sys.executable, "-m", "reasoning_jax.cli", "launch", "--processes", "2",
         "--devices_per_process", "4", "--port", str(port), "--grace_s", "2", "--",
         "train", "--workdir", str(tmp_path / "w")],
        env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0
  assert f"error: coordinator port 127.0.0.1:{port} is already in use" in r.stderr
  assert "Traceback" not in r.stderr  # a clear message, not a stack trace
  assert "started" not in r.stderr  # the launcher checked the port before any child
