"""Meshes, rule tables and sharded forward passes equal to one device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from reasoning_jax import model as rjm
from reasoning_jax import sharding as rjs

CFG = rjm.ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=8, n_kv_heads=4,
                      head_dim=8, ffw_dim=64, qk_norm=True, tie_embeddings=False)
MESHES = [(8, 1, 1), (2, 4, 1), (1, 2, 4), (2, 2, 2)]


def test_eight_cpu_devices():
  assert jax.device_count() == 8


def test_rules_tables():
  assert rjs.logical_to_spec(("layers", "embed", "q_heads", "head_dim"),
                             rjs.TRAIN_RULES) == P(None, "fsdp", "tensor", None)
  assert rjs.logical_to_spec(("layers", "embed", "q_heads", "head_dim"),
                             rjs.ROLLOUT_RULES) == P(None, None, "tensor", None)
  assert rjs.logical_to_spec(("batch", None), rjs.TRAIN_RULES) == P(("data", "fsdp"), None)


def test_collision_is_an_error():
  rules = rjs.ShardingRules((("embed", "tensor"), ("mlp", "tensor")))
  with pytest.raises(ValueError, match="'embed' and 'mlp' both map to mesh axis 'tensor'"):
    rjs.logical_to_spec(("embed", "mlp"), rules)


def test_mesh_size_mismatch_lists_fitting_shapes():
  with pytest.raises(ValueError, match=r"= 6 devices, but 8 are available.*data=1, fsdp=1, "
                                       r"tensor=8"):
    rjs.make_mesh(data=2, fsdp=3)


def test_indivisible_heads_name_the_axis():
  mesh = rjs.make_mesh(fsdp=1, tensor=8)
  with pytest.raises(ValueError, match=r"'kv_heads' of size 4 .* total size 8.*\[1, 2, 4\]"):
    rjm.param_shardings(CFG, mesh, rjs.TRAIN_RULES)


@pytest.mark.parametrize("shape", MESHES)
@pytest.mark.parametrize("rules", ["train", "rollout"])
def test_sharded_forward_equals_single_device(shape, rules):
  rules = rjs.TRAIN_RULES if rules == "train" else rjs.ROLLOUT_RULES
  params = rjm.init_params(CFG, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (8, 12), 0, CFG.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(12, dtype=jnp.int32)[None], (8, 12))
  fwd = jax.jit(rjm.forward, static_argnums=3)
  want = fwd(params, tokens, pos, CFG)[0]

  mesh = rjs.make_mesh(*shape)
  sharded = rjm.shard_params(params, CFG, mesh, rules)
  batch = rjs.batch_sharding(mesh, rules, tokens.shape)
  got = fwd(sharded, jax.device_put(tokens, batch), jax.device_put(pos, batch), CFG)[0]
  assert sharded.layers.wq.sharding.spec == rjs.logical_to_spec(
      ("layers", "embed", "q_heads", "head_dim"), rules)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)


def test_batch_not_divisible_is_an_error():
  mesh = rjs.make_mesh(data=8)
  with pytest.raises(ValueError, match=r"'batch' of size 6 .* \('data', 'fsdp'\) of total "
                                       r"size 8"):
    rjs.batch_sharding(mesh, rjs.TRAIN_RULES, (6, 4))
