"""Vocabulary-wide selections without a sort: argmax, top-k and top-p masks.

A decode step picks tokens from `[B, V]` logits with V up to ~150k. XLA:CPU runs the
obvious programs slowly: `jnp.argmax`'s (value, index) reduction goes element by
element, and a sort with the ids riding along calls a comparator per comparison (157 ms
for [16, 49152]; 10 ms per row). Everything here is built from plain reductions over
blocks of `BLOCK` entries, which vectorise:

- `argmax`: each block's max, then the first block and entry holding the maximum.
- `truncate`: the top-k and top-p cut-offs found by bisection on the logits' order
  (32 counting passes, 5 ms at [16, 49152]), ties at the cut broken by token id.

Shape key: B rows, V vocab, N blocks, K = BLOCK entries per block.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

F32 = jnp.float32
I32 = jnp.int32
BLOCK = 256
_MIN, _MAX = jnp.iinfo(I32).min, jnp.iinfo(I32).max


def blocks(x_BV: jax.Array, fill) -> jax.Array:
  """`x` as `[B, N, K]`, the tail padded with `fill`."""
  B, V = x_BV.shape
  nb = -(-V // BLOCK)
  return jnp.pad(x_BV, ((0, 0), (0, nb * BLOCK - V)),
                 constant_values=fill).reshape(B, nb, BLOCK)


def _first(hit_BN: jax.Array) -> jax.Array:
  """The first index along the last axis where `hit` is True (the length if none)."""
  iota_BN = lax.broadcasted_iota(I32, hit_BN.shape, 1)
  return jnp.min(jnp.where(hit_BN, iota_BN, hit_BN.shape[1]), axis=-1)


def take(x_BN: jax.Array, i_B: jax.Array) -> jax.Array:
  """`x[b, i[b]]` for a 2-D x, or the row `x[b, i[b], :]` for a 3-D one."""
  idx = i_B.reshape(i_B.shape + (1,) * (x_BN.ndim - 1))
  return jnp.take_along_axis(x_BN, idx, axis=1)[:, 0]


def argmax(x_BV: jax.Array) -> jax.Array:
  """`jnp.argmax(x, axis=-1)` as int32: the first index of the maximum.

  One pass takes each block's max; only the `[B, N]` maxima and the winning block are
  then searched for the first hit (0.15 ms for [16, 49152] against jnp.argmax's 1.8 ms).
  A row holding NaN gets an index in range, a NaN's or the finite maximum's (XLA:CPU's
  max need not propagate NaN); its `token_logprobs` are NaN, which the trainer's
  health check reports.
  """
  x_BNK = blocks(x_BV, -jnp.inf)
  bmax_BN = jnp.max(x_BNK, axis=-1)
  m_B = jnp.max(bmax_BN, axis=-1)
  blk_B = _first((bmax_BN == m_B[:, None]) | jnp.isnan(bmax_BN))
  row_BK = take(x_BNK, blk_B)
  return blk_B * BLOCK + _first((row_BK == m_B[:, None]) | jnp.isnan(row_BK))


def nth_true(mask_BV: jax.Array, n_B: jax.Array) -> jax.Array:
  """The index of each row's `n`-th True (1-based; `n` must not exceed the count):
  a running count over the blocks picks the block, one inside it the entry."""
  m_BNK = blocks(mask_BV.astype(I32), 0)
  cnt_BN = jnp.sum(m_BNK, axis=-1)
  run_BN = jnp.cumsum(cnt_BN, axis=-1)
  blk_B = jnp.minimum(_first(run_BN >= n_B[:, None]), run_BN.shape[1] - 1)
  before_B = take(run_BN, blk_B) - take(cnt_BN, blk_B)
  run_BK = jnp.cumsum(take(m_BNK, blk_B), axis=-1) + before_B[:, None]
  return blk_B * BLOCK + _first(run_BK >= n_B[:, None])


def _order_key(x_BV: jax.Array) -> jax.Array:
  """int32 keys ordered as the float32 values (-0.0 counts as +0.0)."""
  # A select, not `x + 0.0`: XLA folds the addition away, keeping -0.0's sign bit.
  i = lax.bitcast_convert_type(jnp.where(x_BV == 0, 0.0, x_BV).astype(F32), I32)
  return jnp.where(i < 0, i ^ jnp.int32(_MAX), i)


def _largest(pred, shape, unroll: bool | None = None) -> jax.Array:
  """The largest int32 `t` with `pred(t)` True, per row, for a `pred` that is True up
  to some t and False after (True at the int32 minimum): 32 halvings of the range.
  `unroll`: the halvings as an unrolled loop (None: off CPU only)."""
  def halve(_, lo_hi):
    lo, hi = lo_hi
    mid = (lo >> 1) + (hi >> 1) + ((lo | hi) & 1)  # ceil((lo + hi) / 2), no overflow
    ok = pred(mid)
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)
  init = (jnp.full(shape, _MIN, I32), jnp.full(shape, _MAX, I32))
  # Unrolled off CPU: on a GPU each pass of a rolled loop launches its own kernels
  # (the pass's reduction, the updates, the counter and the condition), 7 per pass in
  # all, and 224 per bisection at every decode step (benchmarks/gpu_kernels.py).
  rolled = lambda x: lax.fori_loop(0, 32, halve, x)  # noqa: E731
  unrolled = lambda x: lax.fori_loop(0, 32, halve, x, unroll=True)  # noqa: E731
  if unroll is None:
    return lax.platform_dependent(init, cpu=rolled, default=unrolled)[0]
  return (unrolled if unroll else rolled)(init)[0]


def _keep_prefix(key_BV, cut_B, ties_B, eligible_BV):
  """Entries ranked above the cut key, and the first `ties` by id of those at it."""
  at_BV = eligible_BV & (key_BV == cut_B[:, None])
  last_B = jnp.where(ties_B > 0, nth_true(at_BV, jnp.maximum(ties_B, 1)), -1)
  iota_BV = lax.broadcasted_iota(I32, key_BV.shape, 1)
  return eligible_BV & ((key_BV > cut_B[:, None]) | (at_BV & (iota_BV <= last_B[:, None])))


def _top_k(key_BV: jax.Array, k: jax.Array) -> jax.Array:
  """The k highest entries (ties broken by id): exactly min(k, V) survive."""
  k = jnp.minimum(k, key_BV.shape[1])
  count = lambda t: jnp.sum(key_BV >= t[:, None], axis=-1)  # noqa: E731
  cut_B = _largest(lambda t: count(t) >= k, key_BV.shape[:1])
  above_B = jnp.sum(key_BV > cut_B[:, None], axis=-1)
  return _keep_prefix(key_BV, cut_B, k - above_B, jnp.ones(key_BV.shape, bool))


def _top_p(x_BV: jax.Array, key_BV: jax.Array, keep_BV: jax.Array, p: jax.Array):
  """The smallest prefix (by rank) of the kept entries' renormalised distribution
  whose mass reaches p: an entry stays while the mass ranked strictly before it is
  below p. The top entry always stays."""
  probs_BV = jax.nn.softmax(jnp.where(keep_BV, x_BV, -jnp.inf), axis=-1)
  above = lambda t: jnp.sum(jnp.where(key_BV > t[:, None], probs_BV, 0.0), axis=-1)  # noqa: E731
  # The smallest key whose higher-ranked mass is below p: every entry above it stays,
  # and of the entries tied at it those whose running mass is still below p.
  cut_B = _largest(lambda t: above(t) >= p, key_BV.shape[:1])
  cut_B = jnp.where(cut_B == _MAX, _MAX, cut_B + 1)
  mass_B = above(cut_B)
  at_BV = keep_BV & (key_BV == cut_B[:, None])
  q_B = jnp.max(jnp.where(at_BV, probs_BV, 0.0), axis=-1)
  ties_B = jnp.ceil((p - mass_B) / jnp.where(q_B > 0, q_B, 1.0)).astype(I32)
  ties_B = jnp.where(q_B > 0, jnp.clip(ties_B, 0, jnp.sum(at_BV, axis=-1)), 0)
  keep_p = _keep_prefix(key_BV, cut_B, ties_B, keep_BV)
  iota_BV = lax.broadcasted_iota(I32, key_BV.shape, 1)
  return keep_p | (iota_BV == argmax(x_BV)[:, None])


# Rows per chunk of `truncate` on CPU. Each bisection step reads the whole [B, V] key
# (and for top-p the probabilities): 8 bytes per entry, 32 to 64 times. Four rows of a
# 49152-token vocabulary (1.6 MB) stay in a core's L2 cache through all the passes;
# a [64, 49152] batch (25 MB) streams from memory each pass. Measured at top_p 0.95,
# [64, 49152]: 43.9 -> 16.9 ms (chunks of 1, 2, 8 rows: 22.3, 18.2, 21.6 ms); [16,
# 49152] 5.6 -> 5.1 ms. Accelerators keep the whole batch (a sequential map over row
# chunks would serialise their vector units and, under a batch-sharded mesh, gather).
CPU_ROWS = 4


def truncate(logits_BV: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
  """Logits with top-k, then top-p, applied: removed entries are -inf (token order).

  Args:
    logits_BV: float32 (already tempered) logits.
    top_k: int32 scalar; keep the k highest, ties broken by token id so exactly k
      stay (0 = off).
    top_p: float32 scalar; then keep the smallest prefix, in the same ranking, of the
      top-k renormalised distribution whose mass reaches top_p (>= 1 = off). The top
      token always stays.

  Rows are independent: on CPU they are processed `CPU_ROWS` at a time (the same
  values, faster; see `CPU_ROWS`).
  """
  b, v = logits_BV.shape
  if b <= CPU_ROWS:
    return _truncate_rows(logits_BV, top_k, top_p)

  def chunked(logits_BV, top_k, top_p):
    padded = jnp.pad(logits_BV, ((0, -b % CPU_ROWS), (0, 0)))
    out = lax.map(lambda x: _truncate_rows(x, top_k, top_p),
                  padded.reshape(-1, CPU_ROWS, v))
    return out.reshape(-1, v)[:b]

  # Chosen by the platform the program is compiled for (not jax's default backend,
  # which differs for CPU-placed arrays on a GPU host or a deviceless GPU compile).
  return lax.platform_dependent(logits_BV, top_k, top_p, cpu=chunked,
                                default=_truncate_rows)


def _truncate_rows(logits_BV: jax.Array, top_k: jax.Array, top_p: jax.Array
                   ) -> jax.Array:
  """`truncate` on all rows at once."""
  key_BV = _order_key(logits_BV)
  everything = jnp.ones(logits_BV.shape, bool)
  keep_BV = lax.cond(top_k > 0, lambda: _top_k(key_BV, top_k), lambda: everything)
  keep_BV = lax.cond(top_p < 1.0, lambda: _top_p(logits_BV, key_BV, keep_BV, top_p),
                     lambda: keep_BV)
  return jnp.where(keep_BV, logits_BV, -jnp.inf)
