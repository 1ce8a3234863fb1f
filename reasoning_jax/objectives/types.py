"""Inputs, outputs and validation shared by every objective.

Dimension key: B batch (rows = rollouts), G group size (rollouts per prompt, also M in
the Tsallis family), T tokens, K resample draws.

Every loss returns a `Weighted` loss (a sum and its denominator) and a dict of `Metric`s,
so micro-batches combine exactly: sum the totals and the denominators, divide once.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

_FLOAT_UPCAST = (jnp.bfloat16, jnp.float16)


@dataclasses.dataclass(frozen=True)
class ObjectiveInputs:
  """Everything an objective may read, as one pytree (arrays traced, group_size static).

  Only `logp_BT` and `mask_BT` are always required; each objective lists what else it
  needs in `Objective.needs`, and `validate` says which field is missing.

  Attributes:
    logp_BT: log pi_theta of each completion token, with gradient. float32 (bf16/f16 are
      upcast; float64 is kept for exact tests).
    mask_BT: loss mask, 1 on tokens that are trained (completion tokens, forced tokens
      if the caller wants them trained), 0 on prompt and padding.
    old_logp_BT: log-probs of the sampler / old policy (no gradient is taken through
      them). None means on-policy: `stop_gradient(logp_BT)`.
    ref_logp_BT: log-probs of the reference policy, for a KL term or penalty.
    teacher_logp_BT: log-probs of a teacher model on the same tokens (on-policy
      distillation, `distill.py`); no gradient is taken through them.
    advantages: per-sequence `[B]` or per-token `[B, T]` advantages, usually filled by
      `Objective.prepare` from `rewards_B`.
    rewards_B: scalar reward per rollout.
    entropy_BT: token entropy of pi_theta (from logits, by the caller). Needed only for
      an entropy bonus; reported as a metric when present.
    rationale_mask_BT: Tsallis family, tokens of the rationale z (incl. forced </think>).
    answer_mask_BT: Tsallis family, tokens of the teacher-forced gold answer y*.
    resample_counts_B: PAFT, how many of the K draws picked each rollout.
    group_size: rollouts per prompt (static). Rows of one group are consecutive.
  """
  logp_BT: Array
  mask_BT: Array
  old_logp_BT: Array | None = None
  ref_logp_BT: Array | None = None
  teacher_logp_BT: Array | None = None
  advantages: Array | None = None
  rewards_B: Array | None = None
  entropy_BT: Array | None = None
  rationale_mask_BT: Array | None = None
  answer_mask_BT: Array | None = None
  resample_counts_B: Array | None = None
  group_size: int | None = dataclasses.field(default=None, metadata=dict(static=True))

  def replace(self, **changes: Any) -> "ObjectiveInputs":
    """Returns a copy with `changes` applied."""
    return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(ObjectiveInputs)


@dataclasses.dataclass(frozen=True)
class Weighted:
  """A quantity kept as (total, weight) so that micro-batches add exactly."""
  total: Array
  weight: Array

  @property
  def value(self) -> Array:
    """total / weight, 0 when the weight is 0 (an empty micro-batch)."""
    return self.total / jnp.maximum(self.weight, _tiny(self.weight))

  def __add__(self, other: "Weighted") -> "Weighted":
    return Weighted(self.total + other.total, self.weight + other.weight)


jax.tree_util.register_dataclass(Weighted)


@dataclasses.dataclass(frozen=True)
class Metric:
  """A metric that merges exactly across micro-batches.

  reduce="mean": total/weight; "max"/"min": the extreme in `total` (weight counts
  entries, and an empty metric holds -inf/+inf); "std": sqrt(E[x^2] - E[x]^2) with the
  sum of squares in `total_sq`.
  """
  total: Array
  weight: Array
  total_sq: Array
  reduce: str = dataclasses.field(default="mean", metadata=dict(static=True))

  @property
  def value(self) -> Array:
    """The metric's value."""
    if self.reduce in ("max", "min"):
      return jnp.where(self.weight > 0, self.total, 0.0)
    w = jnp.maximum(self.weight, _tiny(self.weight))
    mean = self.total / w
    if self.reduce == "mean":
      return mean
    return jnp.sqrt(jnp.maximum(self.total_sq / w - mean * mean, 0.0))

  def merge(self, other: "Metric") -> "Metric":
    """Combines the metric of two disjoint micro-batches."""
    if self.reduce != other.reduce:
      raise ValueError(f"cannot merge a {self.reduce!r} metric with a {other.reduce!r} one")
    if self.reduce == "max":
      total = jnp.maximum(self.total, other.total)
    elif self.reduce == "min":
      total = jnp.minimum(self.total, other.total)
    else:
      total = self.total + other.total
    return Metric(total, self.weight + other.weight, self.total_sq + other.total_sq,
                  self.reduce)


jax.tree_util.register_dataclass(Metric)


def _tiny(x: Array) -> Array:
  return jnp.asarray(jnp.finfo(jnp.result_type(x, jnp.float32)).tiny, x.dtype)


def masked_metric(x_BT: Array, mask_BT: Array, reduce: str = "mean") -> Metric:
  """A metric over the entries of `x` where `mask` is 1 (x and mask of equal shape)."""
  x = jax.lax.stop_gradient(x_BT.astype(jnp.float32))
  m = mask_BT.astype(jnp.float32)
  count = jnp.sum(m)
  on = m > 0
  if reduce == "max":
    return Metric(jnp.max(jnp.where(on, x, -jnp.inf)), count, jnp.zeros(()), "max")
  if reduce == "min":
    return Metric(jnp.min(jnp.where(on, x, jnp.inf)), count, jnp.zeros(()), "min")
  xm = jnp.where(on, x, 0.0)
  return Metric(jnp.sum(xm), count, jnp.sum(xm * xm), reduce)


def merge_metrics(a: dict[str, Metric], b: dict[str, Metric]) -> dict[str, Metric]:
  """Merges two metric dicts of disjoint micro-batches (keys must match)."""
  if a.keys() != b.keys():
    raise ValueError(f"metric keys differ: {sorted(a)} vs {sorted(b)}")
  return {k: a[k].merge(b[k]) for k in a}


def metric_values(metrics: dict[str, Metric]) -> dict[str, Array]:
  """Final scalar values of a metric dict."""
  return {k: m.value for k, m in metrics.items()}


# ---------------------------------------------------------------------------------------
# Validation: runs at trace time on static shapes, so errors are raised before jit runs.


def as_float_logp(x: Array, name: str) -> Array:
  """Upcasts half-precision log-probs to float32; rejects non-float input."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{name} must be a floating log-probability array, got dtype {x.dtype}")
  if x.dtype in _FLOAT_UPCAST:
    x = x.astype(jnp.float32)
  return x


def validate(inputs: ObjectiveInputs, needs: frozenset[str] | tuple[str, ...] = (),
             name: str = "objective") -> ObjectiveInputs:
  """Checks shapes and required fields; returns inputs with float log-probs and masks.

  Masked-out log-probs are replaced by 0 (with zero gradient), so garbage or -inf on
  padding can never leak into a loss through exp() or 0 * inf.

  Raises:
    ValueError: missing field, shape mismatch, or a group size that does not divide B.
    TypeError: non-float log-probs.
  """
  for field in needs:
    if getattr(inputs, field) is None:
      raise ValueError(f"{name} needs ObjectiveInputs.{field}; it is None. "
                       f"Fill it (or run Objective.prepare) before calling the loss.")
  logp = as_float_logp(inputs.logp_BT, "logp_BT")
  if logp.ndim != 2:
    raise ValueError(f"logp_BT must have shape [B, T], got {logp.shape}")
  B, T = logp.shape
  dtype = logp.dtype
  mask = jnp.asarray(inputs.mask_BT)
  _check_shape("mask_BT", mask, (B, T))
  mask = mask.astype(dtype)
  out: dict[str, Any] = {}
  for f in ("old_logp_BT", "ref_logp_BT", "teacher_logp_BT", "entropy_BT"):
    v = getattr(inputs, f)
    if v is not None:
      v = as_float_logp(v, f)
      _check_shape(f, v, (B, T))
      out[f] = jnp.where(mask > 0, v.astype(dtype), 0.0)
  for f in ("rationale_mask_BT", "answer_mask_BT"):
    v = getattr(inputs, f)
    if v is not None:
      v = jnp.asarray(v)
      _check_shape(f, v, (B, T))
      out[f] = v.astype(dtype)
  # Rows without a single loss token are padding: their per-row values are zeroed so
  # that junk there (even inf) cannot reach a gradient as 0 * inf.
  row_on = jnp.sum(mask, axis=-1) > 0
  for f in ("rewards_B", "resample_counts_B"):
    v = getattr(inputs, f)
    if v is not None:
      v = jnp.asarray(v)
      _check_shape(f, v, (B,))
      out[f] = v.astype(dtype)
  if "resample_counts_B" in out:
    out["resample_counts_B"] = jnp.where(row_on, out["resample_counts_B"], 0.0)
  adv = inputs.advantages
  if adv is not None:
    adv = jnp.asarray(adv)
    if adv.shape not in ((B,), (B, T)):
      raise ValueError(f"advantages must have shape [B]={(B,)} or [B, T]={(B, T)}, "
                       f"got {adv.shape}")
    on = row_on if adv.ndim == 1 else mask > 0
    out["advantages"] = jnp.where(on, adv.astype(dtype), 0.0)
  g = inputs.group_size
  if g is not None:
    check_group_size(B, g)
  return inputs.replace(logp_BT=jnp.where(mask > 0, logp, 0.0), mask_BT=mask, **out)


def check_group_size(batch: int, group_size: int | None) -> int:
  """Checks that `group_size` is a positive int dividing `batch`; returns it."""
  if group_size is None:
    raise ValueError("this objective needs ObjectiveInputs.group_size (rollouts per "
                     "prompt, rows of a group consecutive)")
  if not isinstance(group_size, int) or group_size < 1:
    raise ValueError(f"group_size must be a positive int, got {group_size!r}")
  if batch % group_size:
    raise ValueError(f"group_size {group_size} does not divide the batch of {batch} rows; "
                     f"pass whole groups (B = num_prompts * group_size)")
  return group_size


def check_q(q: float) -> float:
  """Checks the Tsallis index q lies in [0, 1]."""
  if not 0.0 <= float(q) <= 1.0:
    raise ValueError(f"Tsallis q must lie in [0, 1], got {q}")
  return float(q)


def _check_shape(name: str, x: Array, shape: tuple[int, ...]) -> None:
  if tuple(x.shape) != tuple(shape):
    raise ValueError(f"{name} has shape {tuple(x.shape)} but logp_BT implies {shape}; "
                     f"all per-token arrays must be [B, T] and per-row arrays [B]")


def old_logp(inputs: ObjectiveInputs) -> Array:
  """The behaviour log-probs, defaulting to on-policy stop_gradient(logp)."""
  if inputs.old_logp_BT is None:
    return jax.lax.stop_gradient(inputs.logp_BT)
  return jax.lax.stop_gradient(inputs.old_logp_BT)


def token_advantages(inputs: ObjectiveInputs) -> Array:
  """Advantages as [B, T] (per-sequence ones broadcast over tokens), no gradient."""
  adv = jax.lax.stop_gradient(inputs.advantages)
  if adv.ndim == 1:
    adv = jnp.broadcast_to(adv[:, None], inputs.logp_BT.shape)
  return adv
