"""The KV cache: a pytree that the forward pass reads and returns updated.

Every slot carries the logical position of the token written there; -1 marks an empty
slot or a padding token. Attention masks come from these positions alone, so left
padding, ragged prompts and shared group prefixes need no separate mask arrays.

Shape key: L layers, B batch, K kv heads, S cache length, H head dim.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from reasoning_jax.model.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
  """Keys and values of every layer, plus the position held by each slot.

  Attributes:
    k_LBKSH, v_LBKSH: keys (after RoPE) and values, in storage form (`load` them;
      bf16 is held as uint16 bits). Slots are the second-minor axis so that a
      layer's `[B, K, S, H]` slice is attention's batched-matmul layout as stored;
      with slots outside the heads, XLA:CPU copied a transposed cache every layer
      and step (~20% of a batch-64 decode step, docs/benchmarks.md).
    pos_BS: int32 logical position of each slot; -1 for empty or padding slots.
    index: int32 scalar, the next slot to write (all rows write in lockstep).
  """
  k_LBKSH: jax.Array
  v_LBKSH: jax.Array
  pos_BS: jax.Array
  index: jax.Array

  @property
  def length(self) -> int:
    """S, the number of slots."""
    return self.pos_BS.shape[1]


# Value dtype -> the dtype its cache is stored in. bfloat16 is kept as its uint16 bit
# pattern: XLA:CPU has no bf16 arithmetic, so it wraps every update of a bf16 buffer in
# convert-to-f32 / convert-back over the whole buffer, which turns the in-place
# per-token write into a copy of every layer's cache. An integer buffer is updated in
# place; the bitcasts are free (also on TPU and GPU).
_STORED = {jnp.dtype(jnp.bfloat16): jnp.dtype(jnp.uint16)}
_VALUE = {v: k for k, v in _STORED.items()}


def storage_dtype(dtype) -> jnp.dtype:
  """The dtype a cache of `dtype` values is stored in (bfloat16 -> uint16)."""
  return _STORED.get(jnp.dtype(dtype), jnp.dtype(dtype))


def value_dtype(stored) -> jnp.dtype:
  """The value dtype of a buffer stored as `stored` (uint16 -> bfloat16)."""
  return _VALUE.get(jnp.dtype(stored), jnp.dtype(stored))


def store(x: jax.Array) -> jax.Array:
  """Values in their storage form (see `storage_dtype`)."""
  to = storage_dtype(x.dtype)
  return x if to == x.dtype else jax.lax.bitcast_convert_type(x, to)


def load(x: jax.Array) -> jax.Array:
  """Stored values back in their value dtype (see `value_dtype`)."""
  to = value_dtype(x.dtype)
  return x if to == x.dtype else jax.lax.bitcast_convert_type(x, to)


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=None) -> KVCache:
  """An empty cache of `length` slots for `batch` rows (dtype defaults to cfg.dtype;
  a bf16 cache is stored as uint16 bits, see `storage_dtype`)."""
  if batch < 1 or length < 1:
    raise ValueError(f"cache needs batch >= 1 and length >= 1, got {batch}, {length}")
  dtype = storage_dtype(dtype or cfg.dtype)
  shape = (cfg.n_layers, batch, cfg.n_kv_heads, length, cfg.head_dim)
  return KVCache(k_LBKSH=jnp.zeros(shape, dtype), v_LBKSH=jnp.zeros(shape, dtype),
                 pos_BS=jnp.full((batch, length), -1, jnp.int32),
                 index=jnp.zeros((), jnp.int32))


def repeat_cache(cache: KVCache, n: int) -> KVCache:
  """Each row repeated `n` times in a row (a prompt's prefix shared by its n samples)."""
  return KVCache(k_LBKSH=jnp.repeat(cache.k_LBKSH, n, axis=1),
                 v_LBKSH=jnp.repeat(cache.v_LBKSH, n, axis=1),
                 pos_BS=jnp.repeat(cache.pos_BS, n, axis=0), index=cache.index)


def cache_shardings(cfg: ModelConfig, mesh, rules, batch: int, length: int) -> KVCache:
  """A KVCache of NamedShardings: rows over the batch axes, kv heads over tensor."""
  from reasoning_jax.sharding import named_sharding, replicated
  kv = named_sharding("KV cache", (cfg.n_layers, batch, cfg.n_kv_heads, length,
                                   cfg.head_dim),
                      ("layers", "batch", "kv_heads", "cache_seq", "head_dim"), mesh, rules)
  return KVCache(k_LBKSH=kv, v_LBKSH=kv,
                 pos_BS=named_sharding("cache positions", (batch, length),
                                       ("batch", "cache_seq"), mesh, rules),
                 index=replicated(mesh))
