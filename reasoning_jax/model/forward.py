"""The forward pass: pure functions of (params, tokens, positions, config, cache).

One function serves full-sequence scoring (no cache), prefill (a cache, many tokens)
and decode (a cache, one token per row). Layers run under `lax.scan` over the stacked
layer params, so compile time does not grow with depth. Matmuls accumulate in float32
(`preferred_element_type`), norms and softmax run in float32, logits are float32.

Shape key: B batch, T tokens, S keys (cache slots, or T without a cache), D model,
N query heads, K kv heads, G = N // K, H head dim, F ffw, V vocab, L layers.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from reasoning_jax.model import cpu_matvec as cpu_kernel
from reasoning_jax.model.attention import attention
from reasoning_jax.model.cache import KVCache, load, store, value_dtype
from reasoning_jax.model.config import ModelConfig
from reasoning_jax.model.decode_layout import FUSED_PARTS
from reasoning_jax.model.matmul import dense, dense_transposed, matmul_precision
from reasoning_jax.model.params import Params

F32 = jnp.float32


def _lead(w: jax.Array, ndim: int) -> jax.Array:
  """`w` reshaped with leading unit axes to rank `ndim` (rank promotion stays explicit)."""
  return w.reshape((1,) * (ndim - w.ndim) + w.shape)


@jax.custom_vjp
def scale_last(y: jax.Array, w: jax.Array) -> jax.Array:
  """`y * w` with `w` (shape `y.shape[-1:]`) broadcast over `y`'s leading axes.

  Its gradient is autodiff's, except that the weight's (a sum of `g * y` over every
  token) is computed as a `[1, N] x [N, W]` float32 matmul: XLA:CPU rewrites the
  plain reduction into a reduce-window that took 2-4 ms per norm and layer at the
  SmolLM2 train shape (~200 ms of a ~5.8 s step, docs/benchmarks.md).
  """
  return y * _lead(w, y.ndim)


def _scale_last_fwd(y, w):
  return scale_last(y, w), (y, w)


def _scale_last_bwd(res, g):
  y, w = res
  gy = (g.astype(F32) * y.astype(F32)).reshape(-1, w.shape[-1])
  dw = jnp.dot(jnp.ones((1, gy.shape[0]), F32), gy, preferred_element_type=F32,
               precision=matmul_precision(F32))  # a float32 column sum: exact
  return (g * _lead(w, g.ndim)).astype(y.dtype), dw.reshape(w.shape).astype(w.dtype)


scale_last.defvjp(_scale_last_fwd, _scale_last_bwd)


def rms_norm(x: jax.Array, w: jax.Array, cfg: ModelConfig) -> jax.Array:
  """RMSNorm over the last axis in float32, with Gemma's (1 + w) form when configured."""
  x32 = x.astype(F32)
  y = x32 * lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.norm_eps)
  if cfg.norm_offset:
    return scale_last(y, cfg.norm_offset + w.astype(F32)).astype(x.dtype)
  # Llama/Qwen cast back before scaling (transformers' LlamaRMSNorm order).
  return scale_last(y.astype(x.dtype), w.astype(x.dtype))


def rope_tables(pos_BT: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """cos and sin `[B, T, H]` for rotate-half RoPE at the given positions (float32)."""
  ang = pos_BT.astype(F32)[..., None] * _lead(jnp.asarray(inv_freq, F32), 3)
  ang = jnp.concatenate([ang, ang], axis=-1)
  return jnp.cos(ang), jnp.sin(ang)


def apply_rope(x_BTnH: jax.Array, cos_BTH: jax.Array, sin_BTH: jax.Array) -> jax.Array:
  """Rotate-half RoPE (the transformers convention), computed in float32.

  `x * cos + rotate_half(x) * sin` written per half: XLA:CPU runs that fusion at twice
  the speed of one that concatenates the rotated input (3.6 vs 7.3 us at `[16, 1, 9,
  64]`, docs/benchmarks.md). The same products and sums; inside a larger fusion XLA
  may pair them into FMAs differently, so the last bit can differ."""
  x = x_BTnH.astype(F32)
  half = x.shape[-1] // 2
  x1, x2 = x[..., :half], x[..., half:]
  cos, sin = cos_BTH[:, :, None, :], sin_BTH[:, :, None, :]
  out = jnp.concatenate([x1 * cos[..., :half] - x2 * sin[..., :half],
                         x2 * cos[..., half:] + x1 * sin[..., half:]], axis=-1)
  return out.astype(x_BTnH.dtype)


def _heads_major(x_BTKH: jax.Array) -> jax.Array:
  """`[B, T, K, H]` as `[B, K, T, H]`; for one token a reshape, not a transpose: XLA:CPU
  gave the transpose of a size-1 axis a layout of its own, and the cache write that
  copied it back ran ~4 ns per value (docs/benchmarks.md)."""
  B, T, K, H = x_BTKH.shape
  return x_BTKH.reshape(B, K, T, H) if T == 1 else x_BTKH.swapaxes(1, 2)


class _InStack(NamedTuple):
  """Layer `layer` of a stacked bf16-bits matrix (`[L, *in, *out]`, or `[L, out, in]`
  under a "_t" name, or `cpu_matvec.pack`ed with output axes `out`), multiplied by
  the kernel of `model.cpu_matvec`."""
  stack: jax.Array
  layer: jax.Array
  out: tuple[int, ...] = ()


# The layer matrices (any decode layout) that `cpu_matvec` may multiply in place.
_MATRICES = frozenset({"wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down", "wqkv",
                       "w_gate_up", "wqkv_t", "wo_t", "w_gate_up_t", "w_down_t"})
# Each separate stack -> the fused matrix `decode_params(packed=True)` packs it into.
_FUSED_INTO = {n: fused for fused, parts in FUSED_PARTS.items() for n in parts}
# Input axes of the stacked `[L, *in, *out]` matrices that have more than one.
_IN_AXES = {"wo": 2}


def _packed_layer(p: Params, packed: Params, in_place: Params, l: jax.Array) -> Params:
  """Layer `l`'s packed matrices (`decode_params(packed=True)`) as `_InStack`s in
  place of its stacked ones; for a fused `wqkv` or `w_gate_up`, the separate
  matrices (and q/k/v biases, concatenated) leave `p` so that `block` takes the fused
  path."""
  new = {}
  for name, w in packed.items():
    if name in in_place:
      new[name] = _InStack(w, l, in_place[name].shape[1 + _IN_AXES.get(name, 1):])
    else:  # fused from separate stacks: one flat output axis
      new[name] = _InStack(w, l, (w.shape[1] * w.shape[3],))
      for n in FUSED_PARTS[name]:
        p.pop(n)
      if name == "wqkv" and "bq" in p:
        p["bqkv"] = jnp.concatenate([p.pop(b).reshape(-1) for b in ("bq", "bk", "bv")])
  return new


def _project(x: jax.Array, p: Params, name: str, n_in: int = 1,
             b: jax.Array | None = None, f32: bool = False,
             keep: jax.Array | None = None) -> jax.Array:
  """`dense(x, p[name], n_in, b)`, or with the weight stored transposed as a matrix
  `p[name + "_t"]` `[out, in]` (`decode_params(..., layout="fused_t")`) the same
  product from it, flattened to `[..., out]`; by `cpu_matvec` when the weight is an
  `_InStack` (in float32 as the kernel returns it with `f32`; a packed one multiplies
  only the rows of x where the flat bool `keep` is True, the others are 0)."""
  transposed = name + "_t" in p
  w = p[name + "_t"] if transposed else p[name]
  if not isinstance(w, _InStack):
    if not transposed:
      return dense(x, w, n_in, b)
    return dense_transposed(x.reshape(*x.shape[:x.ndim - n_in], -1), w, b=b)
  lead = x.shape[:x.ndim - n_in]
  x_MK = x.reshape(math.prod(lead), -1)
  if transposed:
    y = cpu_kernel.matvec_t(x_MK, w.stack, w.layer).reshape(*lead, -1)
  elif w.out:  # packed
    y = cpu_kernel.matvec(x_MK, w.stack, w.layer, keep).reshape(*lead, *w.out)
  else:
    stack = w.stack.reshape(w.stack.shape[0], x_MK.shape[1], -1)
    out = w.stack.shape[1 + n_in:]
    y = cpu_kernel.matvec(x_MK, stack, w.layer).reshape(*lead, *out)
  if b is not None:
    y = y + _lead(b.astype(F32), y.ndim)
  return y if f32 else y.astype(x.dtype)


def _split_heads(qkv_BTX: jax.Array, cfg: ModelConfig):
  """q `[B, T, N, H]`, k and v `[B, T, K, H]` from a fused `[B, T, (N + 2K) H]`."""
  B, T, _ = qkv_BTX.shape
  nq, nk = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
  q, k, v = jnp.split(qkv_BTX, [nq, nq + nk], axis=-1)
  return (q.reshape(B, T, cfg.n_heads, cfg.head_dim),
          k.reshape(B, T, cfg.n_kv_heads, cfg.head_dim),
          v.reshape(B, T, cfg.n_kv_heads, cfg.head_dim))


def _mlp(x_BTD: jax.Array, p: Params, cfg: ModelConfig,
         keep: jax.Array | None = None, f32: bool = False) -> jax.Array:
  names = ("w_gate", "w_up") if "w_gate" in p else ("w_gate_up",)
  if (cfg.activation == "silu" and x_BTD.dtype == jnp.bfloat16
      and all(isinstance(p.get(n), _InStack) for n in names)):
    # The kernel's products: silu(gate) * up in the kernel too (XLA:CPU ran it on one
    # thread, `cpu_matvec.silu_mul`), from the float32 products it rounds to bf16.
    parts = [_project(x_BTD, p, n, f32=True, keep=keep) for n in names]
    lead = parts[0].shape[:-1]
    act = cpu_kernel.silu_mul(*(y.reshape(-1, y.shape[-1]) for y in parts))
    return _project(act.reshape(*lead, -1), p, "w_down", keep=keep, f32=f32)
  if "w_gate" not in p:  # gate/up fused by `decode_params`
    gate, up = jnp.split(_project(x_BTD, p, "w_gate_up", keep=keep), 2, axis=-1)
  else:
    gate = _project(x_BTD, p, "w_gate", keep=keep)
    up = _project(x_BTD, p, "w_up", keep=keep)
  if cfg.activation == "silu":
    act = jax.nn.silu(gate.astype(F32))
  else:
    act = jax.nn.gelu(gate.astype(F32), approximate=True)
  return _project((act * up.astype(F32)).astype(x_BTD.dtype), p, "w_down", keep=keep)


def _masks(q_pos_BT: jax.Array, k_pos_BS: jax.Array, cfg: ModelConfig):
  """Causal masks from positions: (global, local-or-None), each `[B, T, S]` bool."""
  q = q_pos_BT[:, :, None]
  k = k_pos_BS[:, None, :]
  causal = (k >= 0) & (k <= q)
  local = causal & (q - k < cfg.sliding_window) if any(cfg.local_flags) else None
  return causal, local


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
  if policy == "dots":
    return jax.checkpoint(body, prevent_cse=False,
                          policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
  raise ValueError(f"remat policy {policy!r}: use 'none', 'layer' or 'dots'")


def forward_hidden(params: Params, tokens_BT: jax.Array, positions_BT: jax.Array,
                   cfg: ModelConfig, cache: KVCache | None = None, *,
                   sum_attention: bool = False,
                   cpu_matvec: bool = False) -> tuple[jax.Array, KVCache | None]:
  """Final-norm hidden states `[B, T, D]` and the updated cache.

  Args:
    params: the parameter tree of `cfg` (see `param_specs`), or with a cache also
      `decode_params`' forms (other layouts; unstacked layers, which then run as an
      unrolled Python loop).
    tokens_BT: int32 token ids.
    positions_BT: int32 logical positions; a negative position marks a padding token,
      which no other token attends to.
    cfg: the model config (static under jit).
    cache: None to attend within `tokens_BT` only; else a `KVCache` whose slots
      `[index, index + T)` receive these tokens' keys and values, and every query
      attends over all valid slots.
    sum_attention: attention's products as sums (`attention(..., by_sums=True)`;
      GPU decoding, no gradient).
    cpu_matvec: with a cache and stacked 16-bit layer matrices (bf16 or its bits,
      `decode_params`; any layout), on CPU only, without gradients: at most
      `cpu_matvec.max_rows()` tokens in all run their products with the kernel of
      `model.cpu_matvec`, each reading its layer in place from the stack; so do more
      tokens (a prefill) where `decode_params(packed=True)` packed every layer
      matrix; otherwise more tokens take each layer's matrices out of the stacks with
      `cpu_matvec.take` inside the loop, to the same bits as XLA's slicing of the
      stored bits. Either way the embedding rows come from `cpu_matvec.take`.
      Otherwise ignored.
  """
  dtype = jnp.dtype(cfg.dtype)
  in_place_ok = cpu_matvec and cache is not None
  if in_place_ok and params["embed"].dtype.itemsize == 2:
    # XLA:CPU would convert the whole bf16 table to float32 for the gather.
    B, T = tokens_BT.shape
    h = cpu_kernel.take(params["embed"], tokens_BT.reshape(-1)).reshape(B, T, -1)
    h = h.astype(dtype)
  else:
    h = jnp.take(params["embed"], tokens_BT, axis=0).astype(dtype)
  if cfg.embed_scale:
    # Gemma rounds the normaliser to the activation dtype before multiplying.
    h = h * jnp.asarray(math.sqrt(cfg.d_model), dtype)
  cos_g, sin_g = rope_tables(positions_BT, cfg.rope.inv_freq(cfg.head_dim))
  cos_l, sin_l = (rope_tables(positions_BT, cfg.local_rope.inv_freq(cfg.head_dim))
                  if cfg.local_rope else (cos_g, sin_g))
  if cache is None:
    k_pos_BS = positions_BT
  else:
    k_pos_BS = lax.dynamic_update_slice(cache.pos_BS, positions_BT.astype(jnp.int32),
                                        (0, cache.index))
  mask_g, mask_l = _masks(positions_BT, k_pos_BS, cfg)
  flags_L = jnp.asarray(cfg.local_flags)
  # One-token kernel steps of a model with Llama's norms and separate q/k/v run the
  # norms, residual adds and RoPE in `cpu_matvec` too; a packed prefill multiplies
  # only its real tokens' rows, flat `keep` (both set with the cache below).
  glue, keep = False, None

  def block(h_BTD, p, is_local, kv_fn):
    """One layer; `kv_fn(k_BTKH, v_BTKH) -> (keys, values)` `[B, K, S, H]` attends
    within the tokens (no cache) or writes them into the cache and returns the layer's
    cached keys/values. With `glue`, `h_BTD` is `(h, y)`, both `[B, D]`: the previous
    layer's MLP output y (float32) is added by this layer's norm kernel, and the layer
    returns `(h, its y)` (XLA ran the add as a fusion with a layout change, ~6 us a
    layer)."""
    if glue:  # carried 2-D: a [B, 1, D] carry took a layout copy per layer
      h_BTD, pending = h_BTD
      h_BTD = h_BTD.reshape(h_BTD.shape[0], 1, -1)
    B, _, D = h_BTD.shape
    with jax.named_scope("attention"):
      if cfg.local_rope:
        cos = jnp.where(is_local, cos_l, cos_g)
        sin = jnp.where(is_local, sin_l, sin_g)
      else:
        cos, sin = cos_g, sin_g
      if glue:
        h_BTD, x = (a.reshape(B, 1, D) for a in cpu_kernel.rms_norm(
            h_BTD.reshape(B, D), p["attn_norm"], cfg.norm_eps, pending.reshape(B, D)))
        if "wqkv" in p:  # packed as one (`decode_params(packed=True)`)
          qkv = _project(x, p, "wqkv", 1, p.get("bqkv"), f32=True)[:, 0]
          q, k, v = (y[:, None] for y in cpu_kernel.rope_qkv(
              qkv, cos[:, 0], sin[:, 0], cfg.n_heads, cfg.n_kv_heads))
        else:
          q, k = (cpu_kernel.rope(_project(x, p, n, 1, p.get(b), f32=True)[:, 0],
                                  cos[:, 0], sin[:, 0])[:, None]
                  for n, b in (("wq", "bq"), ("wk", "bk")))
          v = _project(x, p, "wv", 1, p.get("bv"))
      else:
        x = rms_norm(h_BTD, p["attn_norm"], cfg)
        if "wq" not in p:  # q/k/v fused by `decode_params`
          q, k, v = _split_heads(_project(x, p, "wqkv", 1, p.get("bqkv"), keep=keep), cfg)
        else:
          q, k, v = (_project(x, p, n, 1, p.get(b), keep=keep)
                     for n, b in (("wq", "bq"), ("wk", "bk"), ("wv", "bv")))
        if cfg.qk_norm:
          q = rms_norm(q, p["q_norm"], cfg)
          k = rms_norm(k, p["k_norm"], cfg)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
      k, v = kv_fn(k, v)
      mask = mask_g if mask_l is None else jnp.where(is_local, mask_l, mask_g)
      if isinstance(k, _InStack):  # one token over the cache, in place (`layer`)
        B, _, N, H = q.shape
        o = cpu_kernel.attend(q.reshape(B, N, H), k.stack, v.stack, k.layer,
                              mask[:, 0], cfg.query_scale, cfg.attn_softcap or 0.0)
        o = o.reshape(B, 1, N, H).astype(q.dtype)
      else:
        o = attention(q, k.astype(dtype), v.astype(dtype), mask, cfg,
                      by_sums=sum_attention)
      o = _project(o, p, "wo", 2, f32=glue, keep=keep)
      if glue:
        h_BTD, x = cpu_kernel.rms_norm(h_BTD.reshape(B, D), p["mlp_norm"], cfg.norm_eps,
                                       o.reshape(B, D))
        h_BTD, x = h_BTD.reshape(B, 1, D), x.reshape(B, 1, D)
      else:
        if cfg.post_norms:
          o = rms_norm(o, p["post_attn_norm"], cfg)
        h_BTD = h_BTD + o
        x = rms_norm(h_BTD, p["mlp_norm"], cfg)
    with jax.named_scope("mlp"):
      y = _mlp(x, p, cfg, keep, f32=glue)
      if cfg.post_norms:
        y = rms_norm(y, p["post_mlp_norm"], cfg)
      return (h_BTD.reshape(B, D), y.reshape(B, D)) if glue else h_BTD + y

  if cache is None:
    if isinstance(params["layers"], (list, tuple)):
      raise ValueError("unstacked layers (decode_params(..., unstack=True)) are for the "
                       "cached forward only; pass the stacked params")
    heads_major = lambda k, v: (k.swapaxes(1, 2), v.swapaxes(1, 2))  # noqa: E731
    body = _remat(lambda c, xs: (block(c, xs[0], xs[1], heads_major), None), cfg.remat)
    h, _ = lax.scan(body, h, (params["layers"], flags_L))
  else:
    # The whole cache rides in the scan carry and each layer updates its own slice in
    # place (dynamic_update_slice on a carried buffer), so a decode step never copies
    # the cache; scanning it as xs/ys would rebuild it every step.
    layers, in_place = params["layers"], {}
    packed = params.get("packed", {})
    # More rows than `max_rows()` (a prefill) run in the kernel too where every layer
    # matrix has a packed form: the packed kernel keeps its speed at 512 rows (~440
    # GFLOP/s on the 2-core Zen 4, XLA's GEMMs ~420 plus `take`'s copies: a
    # SmolLM2-135M prefill of 16 x 32 tokens lost ~100 ms, docs/benchmarks.md).
    all_packed = bool(packed) and isinstance(layers, dict) and all(
        n in packed or _FUSED_INTO.get(n) in packed for n, w in layers.items()
        if n in _MATRICES and w.dtype in (jnp.bfloat16, jnp.uint16))
    kernel_rows = in_place_ok and (tokens_BT.size <= cpu_kernel.max_rows() or all_packed)
    # One token per row with the products in the kernel: attention over each layer's
    # bf16 cache in the kernel too, which reads it in place (XLA copied both slices
    # out for its dots).
    kernel_attention = (kernel_rows and tokens_BT.shape[1] == 1
                        and cache.k_LBKSH.dtype in (jnp.bfloat16, jnp.uint16)
                        and cpu_kernel.attention_fits(cfg.head_dim, cache.length))
    glue = (kernel_attention and not cfg.qk_norm and not cfg.post_norms
            and cfg.norm_offset == 0 and dtype == jnp.bfloat16 and "wq" in layers)
    if kernel_rows and packed and tokens_BT.shape[1] > 1:
      # Nothing reads a padding token's products (its keys and values sit in slots
      # masked by position -1), so the packed kernel skips those rows: 125 of 512 in
      # the SmolLM2-135M benchmark's prefill, bit for bit the same real rows.
      keep = positions_BT.reshape(-1) >= 0
    if in_place_ok and isinstance(layers, dict):
      # The scan would slice each layer's matrix out of its stack: a copy per step,
      # and for a bf16 stack XLA:CPU's conversion of the whole stack to float32 before
      # the loop. Instead the kernel takes the whole stack and the layer index (up to
      # max_rows() rows), or `take` copies the layer's bits out inside the loop.
      in_place = {n: w for n, w in layers.items()
                  if n in _MATRICES and w.dtype in (jnp.bfloat16, jnp.uint16)}
      layers = {n: w for n, w in layers.items() if n not in in_place}

    def layer(carry, xs):
      h_BTD, k_all, v_all, l = carry
      p, is_local = xs
      p = jax.tree.map(load, p)  # weights may arrive as stored bits (`decode_params`)
      p.update({n: _InStack(w, l) if kernel_rows else load(cpu_kernel.take(w, l))
                for n, w in in_place.items()})
      if kernel_rows and packed:  # `decode_params(packed=True)`'s forms where made
        p.update(_packed_layer(p, packed, in_place, l))
      new = {}

      def write(k, v):
        at = (l, 0, 0, cache.index, 0)
        put = lambda buf, x: lax.dynamic_update_slice(  # noqa: E731
            buf, store(_heads_major(x)[None].astype(value_dtype(buf.dtype))), at)
        new["k"], new["v"] = put(k_all, k), put(v_all, v)
        if kernel_attention:
          return _InStack(new["k"], l), _InStack(new["v"], l)
        return (load(lax.dynamic_index_in_dim(new["k"], l, keepdims=False)),
                load(lax.dynamic_index_in_dim(new["v"], l, keepdims=False)))

      h_BTD = block(h_BTD, p, is_local, write)
      return (h_BTD, new["k"], new["v"], l + 1), None

    # With `glue` the first layer's norm adds a zero MLP output (exact).
    B, _, D = h.shape
    h0 = (h.reshape(B, D), jnp.zeros((B, D), F32)) if glue else h
    carry = (h0, cache.k_LBKSH, cache.v_LBKSH, jnp.zeros((), jnp.int32))
    if isinstance(params["layers"], (list, tuple)):  # `decode_params(unstack=True)`
      for i, p in enumerate(params["layers"]):
        carry, _ = layer(carry, (p, flags_L[i]))
    else:
      carry, _ = lax.scan(layer, carry, (layers, flags_L))
    h, k_all, v_all, _ = carry
    if glue:
      # The last layer's MLP output, added (rounded to bf16) by the norm kernel: an XLA
      # add fused into the final norm below kept the sum in float32 (excess precision)
      # and changed greedy tokens. Its norm here is unused (~3 us).
      h = cpu_kernel.rms_norm(h[0], params["final_norm"], cfg.norm_eps, h[1])[0]
      h = h.reshape(h.shape[0], 1, -1)
    cache = KVCache(k_LBKSH=k_all, v_LBKSH=v_all, pos_BS=k_pos_BS,
                    index=cache.index + tokens_BT.shape[1])
  h = rms_norm(h, params["final_norm"], cfg)
  return h, cache


def logits_from_hidden(params: Params, h_BTD: jax.Array, cfg: ModelConfig, *,
                       cpu_matvec: bool = False) -> jax.Array:
  """Output logits `[B, T, V]` in float32 from final hidden states (soft cap applied).

  With `cpu_matvec`, at most `cpu_matvec.max_rows()` rows and the bf16 head in
  `params["head_t"]` (`decode_params(..., cpu_matvec=True)`; its packed form
  `params["head_p"]` first where made), the product runs in the CPU kernel of
  `model.cpu_matvec`."""
  B, T, D = h_BTD.shape
  if cpu_matvec and "head_p" in params and B * T <= cpu_kernel.max_rows():
    logits = cpu_kernel.matvec(h_BTD.reshape(B * T, D), params["head_p"], 0)
    logits = logits.reshape(B, T, -1)
  elif cpu_matvec and "head_t" in params and B * T <= cpu_kernel.max_rows():
    logits = cpu_kernel.matvec_t(h_BTD.reshape(B * T, D), params["head_t"], 0)
    logits = logits.reshape(B, T, -1)
  elif cfg.tie_embeddings:
    logits = dense_transposed(h_BTD, params["embed"], out_dtype=F32)
  else:
    logits = dense(h_BTD, params["lm_head"], out_dtype=F32)
  if cfg.final_softcap:
    logits = jnp.tanh(logits / cfg.final_softcap) * cfg.final_softcap
  return logits


def forward(params: Params, tokens_BT: jax.Array, positions_BT: jax.Array,
            cfg: ModelConfig, cache: KVCache | None = None, *,
            sum_attention: bool = False,
            cpu_matvec: bool = False) -> tuple[jax.Array, KVCache | None]:
  """Float32 logits `[B, T, V]` and the updated cache (see `forward_hidden`)."""
  h, cache = forward_hidden(params, tokens_BT, positions_BT, cfg, cache,
                            sum_attention=sum_attention, cpu_matvec=cpu_matvec)
  return logits_from_hidden(params, h, cfg, cpu_matvec=cpu_matvec), cache
