"""Pallas attention from jax's kernel library (`jax.experimental.pallas.ops.tpu`
splash attention), behind the model's attention seam (`model.attention.attention`).

The seam hands over what the XLA reference uses: queries `[B, T, N, H]`, heads-major
keys and values `[B, K, S, H]`, the queries' and keys' positions and the layer's
boolean mask `[B, T, S]`. Splash attention takes static masks over indices plus
per-token segment ids, so each case maps the position masks onto those exactly:

- Training and scoring (no cache, `T == S`): a causal (or sliding-window) index mask
  and segment ids 1 on real tokens, 0 on padding. Real tokens of a row have
  consecutive positions (left or right padding only), so index order is position
  order, and a real query sees exactly the real keys the position mask allows.
  Padding queries attend to padding keys only; their outputs are never read.
- One token per row over a cache (decode): a full index mask, and the row's mask as
  the keys' segment ids (1 where the query may attend). A row with no valid key (a
  batch filler) attends to slot 0, so no row divides by zero.

Sequences are padded at the end to whole 128-token tiles (segment 0, attended by no
real token). Other cases (a prefill into a longer cache, a mesh that does not divide
rows or heads) return None, and the seam runs the XLA reference instead.

GQA is native (queries `[N, T, H]` against `[K, S, H]` keys); queries are multiplied by
the scale before the kernel (splash has no scale argument) and soft-capping is the
kernel's own (`attn_logits_soft_cap`). `interpret=True` runs the kernel in Pallas'
interpreter, which is how tests check it on a CPU.

Shape key: B batch, T queries, S keys, N query heads, K kv heads, H head dim.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

# Tiles: the largest power of two up to 512 dividing the sequence. Splash computes
# keys in tiles that are a multiple of 128 (TPU lanes), interpreted or not; queries
# may be one tile of the whole (short) sequence, as in decode.
_BLOCKS = (512, 256, 128)
_LANES = 128


def _block(n: int, *, keys: bool) -> int | None:
  """A tile size for a sequence of `n`, or None where none fits the kernel."""
  for b in _BLOCKS:
    if n % b == 0:
      return b
  return None if keys or n > _LANES else n


def _kernel(kind: str, T: int, S: int, N: int, window: int | None,
            softcap: float | None, interpret: bool):
  """A splash MHA kernel for `[N, T, H]` queries against `[K, S, H]` keys under the
  index mask `kind` ("causal", "local" or "full"); None where no tiling fits.

  Made anew per trace, never cached: the kernel holds arrays of its mask's block
  structure, which inside a trace are that trace's values."""
  from jax.experimental.pallas.ops.tpu import splash_attention as sa
  bq, bkv = _block(T, keys=False), _block(S, keys=True)
  if bq is None or bkv is None:
    return None
  if kind == "causal":
    head = sa.CausalMask((T, S))
  elif kind == "local":
    head = sa.LocalMask((T, S), window_size=(window - 1, 0), offset=0)
  else:
    head = sa.FullMask((T, S))
  blocks = sa.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv,
                         block_q_dkv=bq, block_kv_dkv=bkv, block_kv_dkv_compute=bkv,
                         block_q_dq=bq, block_kv_dq=bkv)
  return sa.make_splash_mha(sa.MultiHeadMask([head] * N), block_sizes=blocks,
                            head_shards=1, q_seq_shards=1,
                            attn_logits_soft_cap=softcap, interpret=interpret)


def _run(kernel, q_BTNH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS):
  """The kernel over every row (vmapped), back in `[B, T, N, H]`."""
  from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds

  def one(q, k, v, qs, ks):
    return kernel(q.swapaxes(0, 1), k, v, segment_ids=SegmentIds(q=qs, kv=ks))

  o_BNTH = jax.vmap(one)(q_BTNH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS)
  return o_BNTH.swapaxes(1, 2)


def _over_mesh(B: int, N: int, K: int, batch_axes: tuple[str, ...], head_axis: str):
  """`(run, local_heads)`: `run(kernel, q, k, v, q_seg, kv_seg)` under `shard_map`
  over the context mesh (set by `jax.set_mesh`), rows over `batch_axes` and heads over
  `head_axis`, so each device runs the kernel on its own block (XLA does not partition
  a Mosaic kernel), and the query heads each device holds. With no mesh or one
  device, `_run` itself and N; None where the mesh does not divide the rows or heads
  (the caller then takes the XLA path)."""
  from jax.sharding import PartitionSpec as P
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return _run, N
  rows = tuple(a for a in batch_axes if mesh.shape.get(a, 1) > 1)
  heads = head_axis if mesh.shape.get(head_axis, 1) > 1 else None
  n_rows = math.prod(mesh.shape[a] for a in rows)
  n_heads = mesh.shape[heads] if heads else 1
  if B % n_rows or N % n_heads or K % n_heads:
    return None
  b = rows or None
  specs = dict(in_specs=(P(b, None, heads, None), P(b, heads, None, None),
                         P(b, heads, None, None), P(b, None), P(b, None)),
               out_specs=P(b, None, heads, None))

  def run(kernel, *xs):
    return jax.shard_map(functools.partial(_run, kernel), mesh=mesh, check_vma=False,
                         **specs)(*xs)
  return run, N // n_heads


def splash_attention(q_BTNH: jax.Array, k_BKSH: jax.Array, v_BKSH: jax.Array,
                     q_pos_BT: jax.Array, k_pos_BS: jax.Array, mask_BTS: jax.Array,
                     is_local: jax.Array, *, scale: float, softcap: float | None,
                     window: int | None, has_local: bool, decode: bool,
                     batch_axes: tuple[str, ...] = (), head_axis: str = "",
                     interpret: bool = False) -> jax.Array | None:
  """Attention `[B, T, N, H]` (q's dtype) by splash attention, or None where the case
  or shapes are not ones it computes exactly (see the module docstring).

  Args:
    q_BTNH, k_BKSH, v_BKSH: queries, heads-major keys and values.
    q_pos_BT, k_pos_BS: positions (negative on padding / empty slots).
    mask_BTS: the layer's boolean mask (used for decode's segment ids).
    is_local: traced per-layer flag: the sliding-window mask instead of the causal.
    scale, softcap, window: the model's query scale, soft cap and window.
    has_local: whether any layer is local (else `is_local` is always False).
    decode: one query per row over a cache.
    batch_axes, head_axis: the mesh axes rows and heads are sharded over, for a
      program traced under `jax.set_mesh` (see `_sharded`).
    interpret: run in Pallas' interpreter (CPU tests).
  """
  B, T, N, H = q_BTNH.shape
  K, S = k_BKSH.shape[1], k_BKSH.shape[2]

  split = _over_mesh(B, N, K, batch_axes, head_axis)
  if split is None:
    return None
  over_mesh, n = split
  q = (q_BTNH.astype(jnp.float32) * scale).astype(q_BTNH.dtype)
  if decode:
    if T != 1:
      return None
    allowed_BS = mask_BTS[:, 0]
    filler_B = ~jnp.any(allowed_BS, axis=1)
    allowed_BS = allowed_BS.at[:, 0].set(allowed_BS[:, 0] | filler_B)
    # Slots padded to whole key tiles are not allowed (segment 0).
    k, v, kv_seg = (_pad(x, 2 if x.ndim == 4 else 1, _LANES)
                    for x in (k_BKSH, v_BKSH, allowed_BS.astype(jnp.int32)))
    kernel = _kernel("full", T, k.shape[2], n, None, softcap, interpret)
    if kernel is None:
      return None
    return over_mesh(kernel, q, k, v, jnp.ones((B, T), jnp.int32), kv_seg)
  if T != S:
    return None
  # Sequences padded to whole tiles at the end: the padding is segment 0, which no
  # real token (segment 1) attends to, and its outputs are cut off.
  args = (_pad(q, 1, _LANES), _pad(k_BKSH, 2, _LANES), _pad(v_BKSH, 2, _LANES),
          _pad((q_pos_BT >= 0).astype(jnp.int32), 1, _LANES),
          _pad((k_pos_BS >= 0).astype(jnp.int32), 1, _LANES))
  Tp = args[0].shape[1]
  causal = _kernel("causal", Tp, Tp, n, None, softcap, interpret)
  if causal is None:
    return None
  if not has_local:
    return over_mesh(causal, *args)[:, :T]
  local = _kernel("local", Tp, Tp, n, window, softcap, interpret)
  return lax.cond(is_local, lambda: over_mesh(local, *args),
                  lambda: over_mesh(causal, *args))[:, :T]


def _pad(x: jax.Array, axis: int, multiple: int) -> jax.Array:
  """`x` padded with zeros along `axis` to a multiple of `multiple`."""
  extra = -x.shape[axis] % multiple
  if not extra:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, extra)
  return jnp.pad(x, widths)
