"""Sharded training and rollouts on the 8 CPU devices equal one device.

Each mesh places params and Adam state under TRAIN_RULES (`reasoning_jax.sharding`),
shards a synthetic GRPO / GARL batch over data x fsdp, runs two jitted `rl_update`s
with explicit output shardings, and compares with the same steps on one device;
greedy rollouts from params resharded train -> rollout on device give the same tokens.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax import model as rjm
from reasoning_jax import sampling as rs
from reasoning_jax import sharding as rjs
from reasoning_jax.objectives import OBJECTIVES, ObjectiveInputs
from reasoning_jax.training import compile_mode as cm
from reasoning_jax.training import multihost as mh
from reasoning_jax.training.steps import SeqBatch, jit_steps, make_optimizer

CFG = rjm.ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=8, n_kv_heads=4,
                      head_dim=8, ffw_dim=64, qk_norm=True, tie_embeddings=False,
                      max_seq_len=64)
MESHES = [(8, 1, 1), (2, 4, 1), (1, 2, 4), (2, 2, 2)]
B, T, G, PROMPT = 16, 12, 4, 5
# eps 1e-4 bounds Adam's g / (|g| + eps) amplification of reduction-order noise in
# near-zero gradients, so params can be compared at 1e-5 after an update.
TX = make_optimizer(3e-3, total_steps=10, eps=1e-4)
# The XLA options a run gives a model this small on CPU (compile_mode "auto"): they
# compile ~3x faster, and the comparison holds under either.
FAST = cm.compiler_options("fast", 1, "cpu")
# The reference is one micro-batch; GRPO on the (2, 2, 2) mesh runs two (slices of
# sharded rows; accumulation is exact, so it must match too). One such variant keeps
# compile time down.
def _micro(name, shape):
  return 2 if (name, shape) == ("grpo", (2, 2, 2)) else 1


def _batch(objective: str) -> SeqBatch:
  """Synthetic rollouts: left-padded prompts of 3..5 tokens, then 7 completion tokens
  (the last 3 are the GARL gold answer), rewards in {0, 1}, reference log-probs for
  GRPO's KL term."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, CFG.vocab_size, (B, T)).astype(np.int32)
  pad = rng.integers(0, 3, B)
  positions = np.tile(np.arange(T, dtype=np.int32), (B, 1)) - pad[:, None]
  positions = np.where(positions < 0, -1, positions).astype(np.int32)
  comp = np.zeros((B, T), np.float32)
  comp[:, PROMPT:] = 1.0
  rewards = rng.integers(0, 2, B).astype(np.float32)
  sampler = np.where(comp > 0, -rng.uniform(0.5, 3.0, (B, T)), 0.0).astype(np.float32)
  ref = np.where(comp > 0, -rng.uniform(3.0, 5.0, (B, T)), 0.0).astype(np.float32)
  inputs = ObjectiveInputs(logp_BT=jnp.zeros((B, T)), mask_BT=jnp.asarray(comp),
                           ref_logp_BT=jnp.asarray(ref), rewards_B=jnp.asarray(rewards),
                           group_size=G)
  if objective == "garl":
    answer = np.zeros((B, T), np.float32)
    answer[:, T - 3:] = 1.0
    inputs = inputs.replace(rationale_mask_BT=jnp.asarray(comp - answer),
                            answer_mask_BT=jnp.asarray(answer))
  obj = OBJECTIVES[objective]
  inputs = obj.prepare(inputs, obj.config())
  return SeqBatch(jnp.asarray(tokens), jnp.asarray(positions), inputs,
                  jnp.asarray(sampler))


def _state_shardings(mesh):
  """(param, optimizer-state) shardings of the train layout on `mesh`."""
  p_sh = rjm.param_shardings(CFG, mesh, rjs.TRAIN_RULES)
  return rjs.state_shardings(TX, rjm.abstract_params(CFG), p_sh, mesh)


def _two_updates(rl, params, opt_state, batch):
  params, opt_state, m1 = rl(params, opt_state, batch)
  params, opt_state, m2 = rl(params, opt_state, batch)
  return params, opt_state, m1, m2


@pytest.fixture(scope="module")
def params0():
  return rjm.init_params(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def single(params0):
  """Two updates per objective on one device (the reference)."""
  out = {}
  for name in ("grpo", "garl"):
    obj = OBJECTIVES[name]
    _, rl, _ = jit_steps(CFG, TX, obj, obj.config(), compiler_options=FAST)
    p = jax.tree.map(jnp.copy, params0)
    p, o, m1, m2 = _two_updates(rl, p, TX.init(p), _batch(name))
    out[name] = jax.device_get((p, o, m1, m2))
  return out


def _close(got, want, atol):
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got),
                          jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("shape", MESHES)
@pytest.mark.parametrize("name", ["grpo", "garl"])
def test_sharded_rl_update_equals_single_device(shape, name, params0, single):
  mesh = rjs.build_mesh(shape)
  obj = OBJECTIVES[name]
  p_sh, o_sh = _state_shardings(mesh)
  _, rl, _ = jit_steps(CFG, TX, obj, obj.config(), micro_batches=_micro(name, shape),
                       compiler_options=FAST,
                       state_shardings=(p_sh, o_sh))
  params = rjm.shard_params(jax.tree.map(jnp.copy, params0), CFG, mesh, rjs.TRAIN_RULES)
  opt_state = rjs.init_opt_state(TX, params, p_sh, mesh)
  batch = _batch(name)
  rjs.check_batch(B, mesh, micro_batches=_micro(name, shape), group=G)
  batch = rjs.shard_batch(batch, mesh)
  assert batch.tokens_BT.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"), None)
  assert batch.inputs.rewards_B.sharding.spec == jax.sharding.PartitionSpec(("data",
                                                                             "fsdp"))
  p, o, m1, m2 = _two_updates(rl, params, opt_state, batch)

  # State stays in the layout it went in (what donation and the next step rely on).
  for got, want in zip(jax.tree.leaves(p), jax.tree.leaves(p_sh)):
    assert got.sharding == want
  for got, want in zip(jax.tree.leaves(o), jax.tree.leaves(o_sh)):
    assert got.sharding == want
  want_p, want_o, want_m1, want_m2 = single[name]
  _close(p, want_p, 1e-5)
  _close(o, want_o, 1e-5)
  for m, w in ((m1, want_m1), (m2, want_m2)):
    assert m.keys() == w.keys()
    for k in m:
      np.testing.assert_allclose(np.asarray(m[k]), w[k], rtol=1e-5, atol=1e-6, err_msg=k)
  assert float(m1["loss/finite"]) == 1.0
  # The update did something (so equality is not of two untouched copies).
  assert np.max(np.abs(np.asarray(want_p.layers.wq - params0.layers.wq))) > 1e-3


@pytest.mark.parametrize("shape", MESHES)
def test_rollout_from_train_layout_equals_single_device(shape, params0):
  prompts = [[1, 5, 9], [2, 7], [3, 3, 3, 3], [4]]
  kw = dict(key=jax.random.key(3), max_new_tokens=6, num_samples=2, temperature=0.0,
            compiler_options=FAST)
  want = rs.generate(params0, CFG, prompts, **kw)
  mesh = rjs.build_mesh(shape)
  train = rjm.shard_params(params0, CFG, mesh, rjs.TRAIN_RULES)
  roll = rjm.shard_params(train, CFG, mesh, rjs.ROLLOUT_RULES)  # device to device
  # Device-to-device: the rollout copy lives on the same mesh, weights whole along embed.
  assert roll.layers.wq.sharding.spec == rjs.logical_to_spec(
      ("layers", "embed", "q_heads", "head_dim"), rjs.ROLLOUT_RULES)
  assert roll.layers.wq.sharding.mesh == mesh
  got = rs.generate(roll, CFG, prompts, sharding=rs.RolloutSharding(mesh), **kw)
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_array_equal(got.lengths, want.lengths)
  np.testing.assert_allclose(got.model_logprobs, want.model_logprobs, atol=1e-5, rtol=0)
  # Forward under the train layout too.
  tokens = jnp.asarray(np.arange(2 * 8 * 6).reshape(16, 6) % CFG.vocab_size, jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(6, dtype=jnp.int32), (16, 6))
  fwd = jax.jit(rjm.forward, static_argnums=3)
  ref = fwd(params0, tokens, pos, CFG)[0]
  sh = rjs.shard_batch({"t": tokens, "p": pos}, mesh)
  np.testing.assert_allclose(np.asarray(fwd(train, sh["t"], sh["p"], CFG)[0]),
                             np.asarray(ref), atol=1e-5, rtol=0)


def test_opt_state_mirrors_param_shardings():
  mesh = rjs.build_mesh((2, 2, 2))
  p_sh, o_sh = _state_shardings(mesh)
  params_like = [s for s in jax.tree.leaves(o_sh) if s.spec != jax.sharding.PartitionSpec()]
  # Adam's mu and nu: two param-shaped copies; every leaf's layout is its param's.
  sharded_params = [s for s in jax.tree.leaves(p_sh) if s.spec != jax.sharding.PartitionSpec()]
  assert len(params_like) == 2 * len(sharded_params)
  adam = o_sh[1][0]
  assert adam.mu.layers.w_up == p_sh.layers.w_up
  assert adam.nu.embed == p_sh.embed
  assert adam.count.spec == jax.sharding.PartitionSpec()


def test_build_mesh_shapes_and_errors():
  one = rjs.build_mesh((1, 1, 1))  # the default config: the first device only
  assert one.devices.size == 1 and one.devices.flat[0] == jax.devices()[0]
  assert dict(rjs.build_mesh((-1, 1, 2)).shape) == {"data": 4, "fsdp": 1, "tensor": 2}
  with pytest.raises(ValueError, match=r"= 6 devices, but 8 are available.*data=1, fsdp=1"):
    rjs.build_mesh((2, 3, 1))
  with pytest.raises(ValueError, match=r"\(data, fsdp, tensor\)"):
    rjs.build_mesh((8, 1))
  with pytest.raises(ValueError, match="at most one axis may be -1"):
    rjs.build_mesh((-1, -1, 2))
  with pytest.raises(ValueError, match=r"fixed axes \(3 devices\) do not divide"):
    rjs.build_mesh((-1, 3, 1))


def test_indivisible_heads_and_batch_are_clear_errors(params0):
  with pytest.raises(ValueError, match=r"'kv_heads' of size 4 .* total size 8.*\[1, 2, 4\]"):
    rjm.shard_params(params0, CFG, rjs.build_mesh((1, 1, 8)), rjs.TRAIN_RULES)
  mesh = rjs.build_mesh((4, 2, 1))
  with pytest.raises(ValueError, match=r"12 rows, which the batch axis \('data', 'fsdp'\) "
                                       r"of size 8 .*multiple of 8, e.g. 8 or 16.*"
                                       r"total size in \[1, 2, 3, 4, 6\]"):
    rjs.check_batch(12, mesh, group=4)
  with pytest.raises(ValueError, match=r"16 rows per micro-batch \(4 of them\).*"
                                       r"multiple of 32"):
    rjs.check_batch(16, mesh, micro_batches=4, group=4)
  with pytest.raises(ValueError, match=r"groups of 6"):
    rjs.check_batch(16, mesh, group=6)
  rjs.check_batch(16, mesh, micro_batches=2, group=4)  # fits
  with pytest.raises(ValueError, match=r"'batch' of size 12 .* \('data', 'fsdp'\)"):
    rjs.shard_batch({"t": jnp.zeros((12, 3))}, mesh)


def test_maybe_initialize_only_on_multihost():
  calls = []
  init = lambda: calls.append(1)  # noqa: E731
  assert not mh.maybe_initialize("auto", env={}, initialize=init)
  # A single-host TPU VM (v5e-8) lists one worker: no distributed start-up.
  assert not mh.maybe_initialize("auto", env={"TPU_WORKER_HOSTNAMES": "t1k-w-0"},
                                 initialize=init)
  assert calls == []
  assert mh.maybe_initialize("auto", env={"TPU_WORKER_HOSTNAMES": "w-0,w-1,w-2,w-3"},
                             initialize=init)
  assert mh.maybe_initialize("auto", env={"CLOUD_TPU_TASK_ID": "3"}, initialize=init)
  assert mh.maybe_initialize("on", env={}, initialize=init)
  assert not mh.maybe_initialize("off", env={"CLOUD_TPU_TASK_ID": "3"}, initialize=init)
  assert len(calls) == 3
  with pytest.raises(ValueError, match="use 'auto', 'on' or 'off'"):
    mh.maybe_initialize("yes", env={}, initialize=init)
