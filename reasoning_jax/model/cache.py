"""The KV cache: a pytree that the forward pass reads and returns updated.

Every slot carries the logical position of the token written there; -1 marks an empty
slot or a padding token. Attention masks come from these positions alone, so left
padding, ragged prompts and shared group prefixes need no separate mask arrays.

Shape key: L layers, B batch, S cache length, K kv heads, H head dim.
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
    k_LBSKH, v_LBSKH: keys (after RoPE) and values.
    pos_BS: int32 logical position of each slot; -1 for empty or padding slots.
    index: int32 scalar, the next slot to write (all rows write in lockstep).
  """
  k_LBSKH: jax.Array
  v_LBSKH: jax.Array
  pos_BS: jax.Array
  index: jax.Array

  @property
  def length(self) -> int:
    """S, the number of slots."""
    return self.pos_BS.shape[1]


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=None) -> KVCache:
  """An empty cache of `length` slots for `batch` rows (dtype defaults to cfg.dtype)."""
  if batch < 1 or length < 1:
    raise ValueError(f"cache needs batch >= 1 and length >= 1, got {batch}, {length}")
  dtype = jnp.dtype(dtype or cfg.dtype)
  shape = (cfg.n_layers, batch, length, cfg.n_kv_heads, cfg.head_dim)
  return KVCache(k_LBSKH=jnp.zeros(shape, dtype), v_LBSKH=jnp.zeros(shape, dtype),
                 pos_BS=jnp.full((batch, length), -1, jnp.int32),
                 index=jnp.zeros((), jnp.int32))


def repeat_cache(cache: KVCache, n: int) -> KVCache:
  """Each row repeated `n` times in a row (a prompt's prefix shared by its n samples)."""
  return KVCache(k_LBSKH=jnp.repeat(cache.k_LBSKH, n, axis=1),
                 v_LBSKH=jnp.repeat(cache.v_LBSKH, n, axis=1),
                 pos_BS=jnp.repeat(cache.pos_BS, n, axis=0), index=cache.index)


def cache_shardings(cfg: ModelConfig, mesh, rules, batch: int, length: int) -> KVCache:
  """A KVCache of NamedShardings: rows over the batch axes, kv heads over tensor."""
  from reasoning_jax.sharding import named_sharding, replicated
  kv = named_sharding("KV cache", (cfg.n_layers, batch, length, cfg.n_kv_heads,
                                   cfg.head_dim),
                      ("layers", "batch", "cache_seq", "kv_heads", "head_dim"), mesh, rules)
  return KVCache(k_LBSKH=kv, v_LBSKH=kv,
                 pos_BS=named_sharding("cache positions", (batch, length),
                                       ("batch", "cache_seq"), mesh, rules),
                 index=replicated(mesh))
