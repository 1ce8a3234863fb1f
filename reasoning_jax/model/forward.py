"""The forward pass: pure functions of (params, tokens, positions, config, cache).

One function serves full-sequence scoring (no cache), prefill (a cache, many tokens)
and decode (a cache, one token per row). Layers run under `lax.scan` over the stacked
layer params, so compile time does not grow with depth. Matmuls accumulate in float32
(`preferred_element_type`), norms and softmax run in float32, logits are float32. The
forward branches only on the static config; attention goes through the backend seam
(`attention.attention`, `ModelConfig.attention_backend`).

Shape key: B batch, T tokens, S keys (cache slots, or T without a cache), D model,
N query heads, K kv heads, G = N // K, H head dim, F ffw, V vocab, L layers.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from reasoning_jax.model.attention import Positions, attention
from reasoning_jax.model.cache import KVCache, load, store, value_dtype
from reasoning_jax.model.config import ModelConfig
from reasoning_jax.model.layers import apply_rope, mlp, rms_norm, rope_tables
from reasoning_jax.model.matmul import DENSE, dense, dense_transposed
from reasoning_jax.model.params import LayerParams, Params

F32 = jnp.float32
# `kv_fn(k_BTKH, v_BTKH) -> (keys, values)`, each `[B, K, S, H]`: a layer's keys and
# values as attention reads them (its own tokens', or the layer's whole cache).
KVFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def _heads_major(x_BTKH: jax.Array) -> jax.Array:
  """`[B, T, K, H]` as `[B, K, T, H]`; for one token a reshape, not a transpose:
  XLA:CPU gives the transpose of a size-1 axis a layout of its own, which the cache
  write then copies back value by value."""
  B, T, K, H = x_BTKH.shape
  return x_BTKH.reshape(B, K, T, H) if T == 1 else x_BTKH.swapaxes(1, 2)


def _remat(body, policy: str):
  """The layer body under the config's rematerialisation policy (training only).

  "none" keeps every intermediate of every layer for the backward pass (fastest when
  it fits); "layer" keeps only each layer's input and recomputes the layer in the
  backward pass (activation memory ~ L x B x T x D); "dots" keeps the outputs of
  matmuls without batch dimensions (the projections) and recomputes the cheap
  element-wise work and attention.
  """
  if policy == "none":
    return body
  if policy == "layer":
    return jax.checkpoint(body, prevent_cse=False)
  if policy == "dots":  # every `dense` output, by name (see `matmul.dense`)
    return jax.checkpoint(body, prevent_cse=False,
                          policy=jax.checkpoint_policies.save_only_these_names(DENSE))
  raise ValueError(f"remat policy {policy!r}: use 'none', 'layer' or 'dots'")


def _rope(positions_BT: jax.Array, cfg: ModelConfig):
  """`(cos, sin)` `[B, T, H]` tables of global layers and of local ones (the same
  tables unless local layers have their own RoPE, Gemma 3)."""
  glob = rope_tables(positions_BT, cfg.rope.inv_freq(cfg.head_dim))
  if not cfg.local_rope:
    return glob, glob
  return glob, rope_tables(positions_BT, cfg.local_rope.inv_freq(cfg.head_dim))


def block(h_BTD: jax.Array, p: LayerParams, is_local: jax.Array, pos: Positions,
          rope, kv_fn: KVFn, cfg: ModelConfig) -> jax.Array:
  """One transformer layer: pre-norm attention and MLP, each with a residual add
  (Gemma's post-norms on both outputs where configured). `rope` is `_rope`'s pair."""
  with jax.named_scope("attention"):
    x = rms_norm(h_BTD, p.attn_norm, cfg)
    q = dense(x, p.wq, 1, p.bq)
    k = dense(x, p.wk, 1, p.bk)
    v = dense(x, p.wv, 1, p.bv)
    if cfg.qk_norm:
      q = rms_norm(q, p.q_norm, cfg)
      k = rms_norm(k, p.k_norm, cfg)
    (cos, sin), (cos_l, sin_l) = rope
    if cfg.local_rope:
      cos, sin = jnp.where(is_local, cos_l, cos), jnp.where(is_local, sin_l, sin)
    q = apply_rope(q, cos, sin)
    keys, values = kv_fn(apply_rope(k, cos, sin), v)
    o = attention(q, keys.astype(q.dtype), values.astype(q.dtype), pos, is_local, cfg)
    o = dense(o, p.wo, 2)
    if cfg.post_norms:
      o = rms_norm(o, p.post_attn_norm, cfg)
    h_BTD = h_BTD + o
  with jax.named_scope("mlp"):
    y = mlp(rms_norm(h_BTD, p.mlp_norm, cfg), p.w_gate, p.w_up, p.w_down, cfg)
    if cfg.post_norms:
      y = rms_norm(y, p.post_mlp_norm, cfg)
    return h_BTD + y


def _embed(params: Params, tokens_BT: jax.Array, cfg: ModelConfig) -> jax.Array:
  dtype = jnp.dtype(cfg.dtype)
  h = jnp.take(params.embed, tokens_BT, axis=0).astype(dtype)
  if cfg.embed_scale:
    # Gemma rounds the normaliser to the activation dtype before multiplying.
    h = h * jnp.asarray(math.sqrt(cfg.d_model), dtype)
  return h


def _cached_layers(h_BTD: jax.Array, layers: LayerParams, pos: Positions,
                   cache: KVCache, cfg: ModelConfig) -> tuple[jax.Array, KVCache]:
  """The layer scan with a cache: each layer writes its tokens' keys and values into
  slots `[index, index + T)` and attends over all of its slots.

  The whole cache rides in the scan carry and each layer updates its own slice in
  place (`dynamic_update_slice` on a carried buffer), so a decode step never copies
  the cache; scanning it as xs/ys would rebuild it every step. Weights may arrive as
  storage bits (`params.decode_params`) and are loaded per layer.
  """
  rope = _rope(pos.q_BT, cfg)

  def layer(carry, xs):
    h, k_all, v_all, l = carry
    p, is_local = xs
    p = jax.tree.map(load, p)
    new = {}

    def write(k_BTKH, v_BTKH):
      at = (l, 0, 0, cache.index, 0)
      put = lambda buf, x: lax.dynamic_update_slice(  # noqa: E731
          buf, store(_heads_major(x)[None].astype(value_dtype(buf.dtype))), at)
      new["k"], new["v"] = put(k_all, k_BTKH), put(v_all, v_BTKH)
      return (load(lax.dynamic_index_in_dim(new["k"], l, keepdims=False)),
              load(lax.dynamic_index_in_dim(new["v"], l, keepdims=False)))

    h = block(h, p, is_local, pos, rope, write, cfg)
    return (h, new["k"], new["v"], l + 1), None

  carry = (h_BTD, cache.k_LBKSH, cache.v_LBKSH, jnp.zeros((), jnp.int32))
  (h, k_all, v_all, _), _ = lax.scan(layer, carry, (layers, jnp.asarray(cfg.local_flags)))
  return h, KVCache(k_LBKSH=k_all, v_LBKSH=v_all, pos_BS=pos.k_BS,
                    index=cache.index + h_BTD.shape[1])


def forward_hidden(params: Params, tokens_BT: jax.Array, positions_BT: jax.Array,
                   cfg: ModelConfig, cache: KVCache | None = None
                   ) -> tuple[jax.Array, KVCache | None]:
  """Final-norm hidden states `[B, T, D]` and the updated cache.

  Args:
    params: the parameters of `cfg` (`param_specs`), or their decode form
      (`decode_params`: compute dtype, layer weights as storage bits).
    tokens_BT: int32 token ids.
    positions_BT: int32 logical positions; a negative position marks a padding token,
      which no other token attends to.
    cfg: the model config (static under jit).
    cache: None to attend within `tokens_BT` only; else a `KVCache` whose slots
      `[index, index + T)` receive these tokens' keys and values, and every query
      attends over all valid slots.
  """
  h = _embed(params, tokens_BT, cfg)
  if cache is None:
    pos = Positions.of(positions_BT, positions_BT, cfg)
    rope = _rope(positions_BT, cfg)
    heads_major = lambda k, v: (k.swapaxes(1, 2), v.swapaxes(1, 2))  # noqa: E731
    body = _remat(lambda c, xs: (block(c, *xs, pos, rope, heads_major, cfg), None),
                  cfg.remat)
    h, _ = lax.scan(body, h, (params.layers, jnp.asarray(cfg.local_flags)))
  else:
    k_pos_BS = lax.dynamic_update_slice(cache.pos_BS, positions_BT.astype(jnp.int32),
                                        (0, cache.index))
    pos = Positions.of(positions_BT, k_pos_BS, cfg, decode=tokens_BT.shape[1] == 1)
    h, cache = _cached_layers(h, params.layers, pos, cache, cfg)
  return rms_norm(h, params.final_norm, cfg), cache


def logits_from_hidden(params: Params, h_BTD: jax.Array, cfg: ModelConfig) -> jax.Array:
  """Output logits `[B, T, V]` in float32 from final hidden states (soft cap applied)."""
  if cfg.tie_embeddings:
    logits = dense_transposed(h_BTD, params.embed, out_dtype=F32)
  else:
    logits = dense(h_BTD, params.lm_head, out_dtype=F32)
  if cfg.final_softcap:
    logits = jnp.tanh(logits / cfg.final_softcap) * cfg.final_softcap
  return logits


def forward(params: Params, tokens_BT: jax.Array, positions_BT: jax.Array,
            cfg: ModelConfig, cache: KVCache | None = None
            ) -> tuple[jax.Array, KVCache | None]:
  """Float32 logits `[B, T, V]` and the updated cache (see `forward_hidden`)."""
  h, cache = forward_hidden(params, tokens_BT, positions_BT, cfg, cache)
  return logits_from_hidden(params, h, cfg), cache
