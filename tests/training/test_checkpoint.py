"""CheckpointManager: round trips, keep-last-N, resharding, clear errors, crash safety."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

from reasoning_jax.sharding import make_mesh
from reasoning_jax.training.checkpoint import CheckpointManager


def _state(seed=0, sharding=None):
  rng = np.random.default_rng(seed)
  params = {"w": jnp.asarray(rng.standard_normal((8, 8), dtype=np.float32)),
            "b": jnp.asarray(rng.standard_normal((4,), dtype=np.float32))}
  if sharding is not None:
    params["w"] = jax.device_put(params["w"], sharding)
  opt = optax.adamw(1e-3)
  opt_state = opt.init(params)
  # One real update so mu/nu/count are not all zeros (a restore of zeros proves little).
  grads = jax.tree.map(jnp.ones_like, params)
  _, opt_state = opt.update(grads, opt_state, params)
  return {"params": params, "opt_state": opt_state, "step": jnp.int32(7),
          "key": jax.random.key(seed)}


def _abstract(state, sharding_fn):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                     sharding=sharding_fn(x)), state)


def _assert_bitwise(a, b):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert x.dtype == y.dtype


def test_round_trip_with_optax_state_key_and_meta(tmp_path):
  state = _state()
  meta = {"data_iter": {"next_index": 12, "epoch": 0}, "gin": "train.lr = 1e-3\n"}
  with CheckpointManager(tmp_path) as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(7, state, meta)
    ckpt.wait()
    assert os.path.isdir(tmp_path / "checkpoints" / "7")
    dev = SingleDeviceSharding(jax.devices()[0])
    out = ckpt.restore(abstract_state=_abstract(state, lambda x: dev))
  assert out.step == 7 and out.meta == meta
  _assert_bitwise(out.state, state)
  # optax namedtuples come back as namedtuples, so opt.update accepts them.
  assert type(out.state["opt_state"][0]) is type(state["opt_state"][0])
  assert jax.random.key_impl(out.state["key"]) == jax.random.key_impl(state["key"])
  np.testing.assert_array_equal(jax.random.uniform(out.state["key"], (3,)),
                                jax.random.uniform(state["key"], (3,)))
  # Without an abstract state: saved shardings, typed key restored from its impl name;
  # containers come back as orbax stores them (namedtuples as dicts), leaves equal.
  with CheckpointManager(tmp_path, read_only=True) as ckpt:
    plain = ckpt.restore().state
    assert jnp.issubdtype(plain["key"].dtype, jax.dtypes.prng_key)
    assert sorted(plain["opt_state"][0]) == ["count", "mu", "nu"]
    _assert_bitwise(jax.tree.leaves(plain), jax.tree.leaves(state))
    assert ckpt.restore_meta() == meta


def test_key_data_restores_as_uint32_when_abstract_says_so(tmp_path):
  state = {"key": jax.random.key_data(jax.random.key(3)), "x": jnp.arange(3.0)}
  with CheckpointManager(tmp_path, async_save=False) as ckpt:
    ckpt.save(1, state)
    out = ckpt.restore(abstract_state=jax.eval_shape(lambda: state)).state
  assert out["key"].dtype == jnp.uint32
  np.testing.assert_array_equal(out["key"], state["key"])


def test_keep_last_n_and_latest_step(tmp_path):
  with CheckpointManager(tmp_path, max_to_keep=2) as ckpt:
    for step in (1, 2, 3, 4):
      ckpt.save(step, {"x": jnp.full((3,), step, jnp.float32)}, {"s": step})
    ckpt.wait()
    assert ckpt.all_steps() == [3, 4] and ckpt.latest_step() == 4
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "4"]
    np.testing.assert_array_equal(ckpt.restore(3).state["x"], [3.0, 3.0, 3.0])
    assert ckpt.restore(3).meta == {"s": 3}
    with pytest.raises(ValueError, match="step 4 already exists"):
      ckpt.save(4, {"x": jnp.zeros(3)})


def test_sharded_save_restores_on_other_mesh_and_one_device(tmp_path):
  mesh_a = make_mesh(2, 4, 1)
  state = _state(1, NamedSharding(mesh_a, P("data", "fsdp")))
  assert len(state["params"]["w"].sharding.device_set) == 8
  with CheckpointManager(tmp_path) as ckpt:
    ckpt.save(3, state)
    ckpt.wait()
    mesh_b = make_mesh(8, 1, 1)
    shard_b = NamedSharding(mesh_b, P("data", None))
    repl_b = NamedSharding(mesh_b, P())
    abstract = _abstract(state, lambda x: shard_b if x.shape == (8, 8) else repl_b)
    out_b = ckpt.restore(3, abstract).state
    assert out_b["params"]["w"].sharding == shard_b
    assert out_b["opt_state"][0].mu["w"].sharding == shard_b
    _assert_bitwise(out_b, state)
    dev = SingleDeviceSharding(jax.devices()[5])
    out_1 = ckpt.restore(3, _abstract(state, lambda x: dev)).state
    assert out_1["params"]["w"].sharding == dev
    assert out_1["key"].sharding == dev
    _assert_bitwise(out_1, state)


def test_missing_and_empty_directories_name_the_path(tmp_path):
  missing = tmp_path / "nope"
  with pytest.raises(FileNotFoundError, match=f"{missing}/checkpoints.*missing"):
    CheckpointManager(missing, read_only=True).restore()
  with CheckpointManager(tmp_path / "empty") as ckpt:
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/empty/checkpoints.*empty"):
      ckpt.restore()
    ckpt.save(2, {"x": jnp.zeros(2)})
    ckpt.wait()
    with pytest.raises(FileNotFoundError, match=r"step 5 not found.*available steps: \[2\]"):
      ckpt.restore(5)


def test_relative_and_home_workdirs_resolve_to_absolute_paths(tmp_path, monkeypatch):
  """orbax refuses relative paths; a relative or `~` workdir is made absolute, never
  taken for a URL."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  with CheckpointManager("runs/rel", async_save=False) as ckpt:
    assert ckpt.directory == f"{tmp_path}/runs/rel/checkpoints"
    ckpt.save(1, {"x": jnp.arange(3.0)})
  with CheckpointManager("~/run", async_save=False) as ckpt:
    assert ckpt.directory == f"{tmp_path}/home/run/checkpoints"
  with CheckpointManager(str(tmp_path / "runs" / "rel"), read_only=True) as ckpt:
    np.testing.assert_array_equal(ckpt.restore().state["x"], [0.0, 1.0, 2.0])


def test_mismatched_abstract_state_names_the_leaf(tmp_path):
  state = _state()
  with CheckpointManager(tmp_path, async_save=False) as ckpt:
    ckpt.save(1, state)
    abstract = jax.eval_shape(lambda: state)
    abstract["params"]["w"] = jax.ShapeDtypeStruct((4, 8), jnp.float32)
    with pytest.raises(ValueError, match=r"leaf 'params/w': checkpoint shape \(8, 8\) "
                                         r"!= abstract shape \(4, 8\)"):
      ckpt.restore(1, abstract)
    abstract = jax.eval_shape(lambda: state)
    abstract["params"]["extra"] = jax.ShapeDtypeStruct((2,), jnp.float32)
    del abstract["params"]["b"]
    with pytest.raises(ValueError, match=r"absent from abstract_state: \['params/b'\].*"
                                         r"not in the checkpoint: \['params/extra'\]"):
      ckpt.restore(1, abstract)


_CHILD = textwrap.dedent("""
  import sys, numpy as np, jax.numpy as jnp
  from reasoning_jax.training.checkpoint import CheckpointManager
  ckpt = CheckpointManager(sys.argv[1], max_to_keep=5)
  rng = np.random.default_rng(1)
  small = {f"a{i}": jnp.asarray(rng.standard_normal((64, 128), dtype=np.float32))
           for i in range(4)}
  ckpt.save(1, small, {"step": 1}); ckpt.wait()
  # ~128 MB with the same leaf names, so the write of step 2 takes long enough
  # (about 0.5 s here) to be killed mid-way.
  # Random (incompressible) values, so the bytes on disk grow while it writes.
  big = {f"a{i}": jnp.asarray(rng.random((2048, 4096), dtype=np.float32))
         for i in range(4)}
  ckpt.save(2, big, {"step": 2})  # async: returns while the write is in flight
  print("SAVING", flush=True)
  ckpt.wait()
  print("DONE", flush=True)
""")


def _tmp_bytes(directory) -> int:
  total = 0
  for name in os.listdir(directory):
    if name.startswith("2."):
      for root, _, files in os.walk(directory / name):
        for f in files:
          try:
            total += os.path.getsize(os.path.join(root, f))
          except FileNotFoundError:  # orbax renames files while we look
            pass
  return total


def test_sigkill_during_save_leaves_previous_step_loadable(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                          text=True)
  try:
    line = proc.stdout.readline()
    assert line.strip() == "SAVING", f"child failed before saving: {line!r}"
    # Kill once the background write has put array bytes on disk (not just the
    # directory skeleton), so the crash lands in the middle of writing data.
    written, deadline = 0, time.time() + 30
    while written < (1 << 20) and time.time() < deadline:
      written = _tmp_bytes(tmp_path / "checkpoints")
    names = sorted(os.listdir(tmp_path / "checkpoints"))
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  # The kill landed mid-save: step 2 existed only as orbax's tmp directory.
  assert "2" not in names and any(n.startswith("2.") for n in names), names
  assert written >= 1 << 20, f"only {written} bytes of step 2 seen before the kill"
  rng = np.random.default_rng(1)
  expected = {f"a{i}": rng.standard_normal((64, 128), dtype=np.float32)
              for i in range(4)}
  with CheckpointManager(tmp_path, max_to_keep=5) as ckpt:
    assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1]
    out = ckpt.restore()
    assert out.step == 1 and out.meta == {"step": 1}
    for k, v in expected.items():
      np.testing.assert_array_equal(np.asarray(out.state[k]), v)
    # The run can go on: step 2 saves cleanly over the leftover tmp directory.
    ckpt.save(2, {"x": jnp.arange(4)}, {"step": 2})
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2]
    np.testing.assert_array_equal(ckpt.restore(2).state["x"], np.arange(4))


def test_buffers_may_be_freed_once_async_save_returns(tmp_path):
  # The trainer donates its state to the next step right after `save` returns.
  x = jnp.asarray(np.random.default_rng(0).random((512, 1024), dtype=np.float32))
  expected = np.asarray(x)
  with CheckpointManager(tmp_path) as ckpt:
    ckpt.save(1, {"x": x})
    x.delete()
    ckpt.wait()
    np.testing.assert_array_equal(np.asarray(ckpt.restore().state["x"]), expected)
