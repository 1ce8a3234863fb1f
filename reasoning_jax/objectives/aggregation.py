"""Loss aggregation modes as (sum, denominator), and exact gradient accumulation.

Each mode turns per-token losses L_BT into a `Weighted(total, weight)` whose value is the
batch loss, and whose totals and weights add across micro-batches to the full-batch ones.
That makes accumulation exact: sum grad(total) and weight over micro-batches, divide once
(not a mean of per-micro-batch means, which is wrong whenever denominators differ).

Modes (m = mask, i = sequence, t = token):
  token-mean:            sum_{i,t} m L / sum_{i,t} m                   (DAPO, CISPO, GPPO)
  seq-mean-token-mean:   sum_i [sum_t m L / sum_t m] / #seqs            (GRPO paper, GSPO)
  seq-mean-token-sum:    sum_i sum_t m L / #seqs                        (Tsallis family)
  seq-sum-const:         sum_{i,t} m L / (#seqs * norm_const)           (Dr. GRPO)

"#seqs" counts rows with at least one unmasked token, so an all-padding row never
changes a loss. `norm_const` is the constant per-sequence length (Dr. GRPO's L_max, the
max completion length); None uses the padded T, which then depends on padding.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from reasoning_jax.objectives.types import Array, Weighted

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-sum-const")


def check_agg_mode(mode: str) -> str:
  """Raises a ValueError naming the allowed modes if `mode` is unknown."""
  if mode not in AGG_MODES:
    raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {AGG_MODES}")
  return mode


def num_valid_seqs(mask_BT: Array) -> Array:
  """Rows with at least one unmasked token."""
  return jnp.sum((jnp.sum(mask_BT, axis=-1) > 0).astype(mask_BT.dtype))


def aggregate(loss_BT: Array, mask_BT: Array, mode: str,
              norm_const: int | None = None) -> Weighted:
  """Aggregates per-token losses with `mode` (see module docstring) into (total, weight)."""
  check_agg_mode(mode)
  m = mask_BT.astype(loss_BT.dtype)
  # where, not multiply: a masked inf/nan must not turn into nan.
  lm = jnp.where(m > 0, loss_BT, 0.0) * m
  with jax.named_scope(f"aggregate_{mode}"):
    if mode == "token-mean":
      return Weighted(jnp.sum(lm), jnp.sum(m))
    n_seq = jax.lax.stop_gradient(num_valid_seqs(m))
    seq_sum_B = jnp.sum(lm, axis=-1)
    if mode == "seq-mean-token-mean":
      len_B = jnp.sum(m, axis=-1)
      return Weighted(jnp.sum(seq_sum_B / jnp.maximum(len_B, 1.0)), n_seq)
    if mode == "seq-mean-token-sum":
      return Weighted(jnp.sum(seq_sum_B), n_seq)
    const = loss_BT.shape[-1] if norm_const is None else norm_const
    if const <= 0:
      raise ValueError(f"norm_const must be positive, got {norm_const}")
    return Weighted(jnp.sum(seq_sum_B), n_seq * float(const))


def aggregate_seq(loss_B: Array, mask_BT: Array) -> Weighted:
  """Mean over valid sequences of a per-sequence loss (GSPO, Tsallis per-row losses)."""
  valid = (jnp.sum(mask_BT, axis=-1) > 0).astype(loss_B.dtype)
  return Weighted(jnp.sum(jnp.where(valid > 0, loss_B, 0.0)), jnp.sum(valid))


def accumulate_value_and_grad(
    fn: Callable[..., tuple[Weighted, dict]], params, micro_batches: Sequence,
) -> tuple[Array, dict, object]:
  """Exact loss, metrics and gradient over micro-batches of one batch.

  Args:
    fn: `fn(params, micro_batch) -> (Weighted loss, metrics dict of Metric)`, e.g. the
      model forward followed by `Objective.loss_terms`.
    params: the parameters to differentiate.
    micro_batches: the micro-batches (each holding whole groups for group objectives).

  Returns:
    (loss, metrics, grads) equal to those of the full batch: gradients of the summed
    totals divided by the summed weights (the weights carry no gradient).
  """
  from reasoning_jax.objectives.types import merge_metrics  # pylint: disable=g-import-not-at-top

  def total_fn(p, mb):
    w, met = fn(p, mb)
    return w.total, (w.weight, met)

  # Not jitted here: the trainer jits its whole step around this (or around `fn`).
  grad_fn = jax.value_and_grad(total_fn, has_aux=True)
  total, weight, metrics, grads = None, None, None, None
  for mb in micro_batches:
    (t, (w, met)), g = grad_fn(params, mb)
    if total is None:
      total, weight, metrics, grads = t, w, met, g
    else:
      total, weight = total + t, weight + w
      metrics = merge_metrics(metrics, met)
      grads = jax.tree.map(jnp.add, grads, g)
  if total is None:
    raise ValueError("accumulate_value_and_grad needs at least one micro-batch")
  denom = jnp.maximum(jax.lax.stop_gradient(weight), jnp.finfo(jnp.float32).tiny)
  return total / denom, metrics, jax.tree.map(lambda x: x / denom.astype(x.dtype), grads)


# The value an empty max/min metric holds (the identity of its merge).
_EMPTY = {"max": -float("inf"), "min": float("inf")}


def scan_value_and_grad(fn: Callable[..., tuple[Weighted, dict]], params, stacked
                        ) -> tuple[Array, dict, object]:
  """`accumulate_value_and_grad` over micro-batches stacked on a leading axis, as a
  `lax.scan`: one micro-batch's activations are live at a time, so peak memory falls
  with the number of micro-batches (an unrolled loop lets XLA schedule them
  together). The sums run in the same order from an exact zero, so the result is the
  unrolled one's.

  Args:
    fn: as in `accumulate_value_and_grad`.
    params: the parameters to differentiate.
    stacked: a pytree whose leaves have the micro-batches on axis 0 (at least one).
  """
  from reasoning_jax.objectives.types import Metric, merge_metrics  # pylint: disable=g-import-not-at-top

  def total_fn(p, mb):
    w, met = fn(p, mb)
    return w.total, (w.weight, met)

  grad_fn = jax.value_and_grad(total_fn, has_aux=True)
  # The carry starts empty (zeros, and -inf/+inf for max/min metrics: `Metric.merge`'s
  # identities), so every micro-batch runs inside the loop: a loop of one trip would
  # be inlined and scheduled together with the first micro-batch.
  shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], stacked))
  carry = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
  (total, (weight, metrics)), grads = carry
  metrics = {k: Metric(jnp.full(m.total.shape, _EMPTY.get(m.reduce, 0.0), m.total.dtype),
                       m.weight, m.total_sq, m.reduce) for k, m in metrics.items()}

  def body(carry, mb):
    t, w, met, g = carry
    (t2, (w2, met2)), g2 = grad_fn(params, mb)
    return (t + t2, w + w2, merge_metrics(met, met2), jax.tree.map(jnp.add, g, g2)), None

  (total, weight, metrics, grads), _ = jax.lax.scan(
      body, (total, weight, metrics, grads), stacked)
  denom = jnp.maximum(jax.lax.stop_gradient(weight), jnp.finfo(jnp.float32).tiny)
  return total / denom, metrics, jax.tree.map(lambda x: x / denom.astype(x.dtype), grads)
