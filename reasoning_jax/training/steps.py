"""Jitted device steps: the optimizer, the SFT step, the RL update and the scoring pass.

Every step is a pure function of (params, optimizer state, batch); the runner jits it
once per run with the model config, objective and optimizer closed over (static), and
donates params and optimizer state so updates happen in place. A step whose loss or
gradient norm is not finite is refused: params and optimizer state come back as they
went in, and the `finite` metric says so.

Shape key: B rows, T tokens.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from reasoning_jax import model as rjm
from reasoning_jax import sharding as rjs
from reasoning_jax.objectives import ObjectiveInputs
from reasoning_jax.objectives.aggregation import (accumulate_value_and_grad,
                                                  scan_value_and_grad)
from reasoning_jax.objectives.objective import Objective
from reasoning_jax.objectives.types import masked_metric, metric_values


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SeqBatch:
  """Sequences to score or train on, and the objective's inputs for them.

  Attributes:
    tokens_BT, positions_BT: int32 sequences (prompt + completion [+ gold answer]);
      negative positions mark left padding.
    inputs: the objective's inputs; its `logp_BT` is a placeholder the step replaces
      with the policy's log-probabilities.
    sampler_logp_BT: the sampler's log-probabilities of the same tokens (0 where
      unknown), for the sampler-vs-trainer gap metric.
  """
  tokens_BT: jax.Array
  positions_BT: jax.Array
  inputs: ObjectiveInputs
  sampler_logp_BT: jax.Array


def global_norm(tree) -> jax.Array:
  """The L2 norm of all leaves together, as a float32 scalar (`optax.tree.norm`).

  Each leaf's sum of squares is a dot of the leaf with itself over all its axes, not
  a square and a reduction: XLA:CPU's fast-compile emitters (`compile_mode`) fused the
  reductions of every small leaf into one kernel and unrolled them, which made LLVM
  spend most of the RL update's compile time on the norm.
  The dot accumulates in float32 at full precision (TPUs otherwise multiply float32 in
  bf16 passes) and needs no reshape, so sharded leaves stay sharded.
  """
  total = jnp.zeros((), jnp.float32)
  for x in jax.tree.leaves(tree):
    axes = tuple(range(x.ndim))
    total = total + lax.dot_general(x, x, ((axes, axes), ((), ())),
                                    preferred_element_type=jnp.float32,
                                    precision=lax.Precision.HIGHEST)
  return jnp.sqrt(total)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  """`optax.clip_by_global_norm` with the norm from `global_norm` (same rule: updates
  pass unchanged when their norm is below `max_norm`, else are scaled to it)."""
  def update_fn(updates, state, params=None):
    del params
    g_norm = global_norm(updates)
    keep = g_norm < max_norm
    clip = lambda t: lax.select(keep, t, (t / g_norm.astype(t.dtype)) * max_norm)  # noqa: E731
    return jax.tree.map(clip, updates), state
  return optax.GradientTransformation(optax.init_empty_state, update_fn)


OPTIMIZERS = ("adamw", "sgd")


def _schedule(learning_rate: float, total_steps: int, warmup_steps: int, schedule: str):
  """The learning rate: warmup then constant, or warmup then cosine decay to 10%."""
  if schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup_steps, 1),
                                              max(total_steps, warmup_steps + 1),
                                              end_value=0.1 * learning_rate)
  if schedule != "constant":
    raise ValueError(f"unknown schedule {schedule!r}; use 'constant' or 'cosine'")
  if not warmup_steps:
    return learning_rate
  return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps),
                               optax.constant_schedule(learning_rate)], [warmup_steps])


def make_optimizer(learning_rate: float, *, total_steps: int, warmup_steps: int = 0,
                   schedule: str = "constant", b2: float = 0.999, eps: float = 1e-8,
                   weight_decay: float = 0.0, grad_clip: float = 1.0,
                   optimizer: str = "adamw", momentum: float = 0.9
                   ) -> optax.GradientTransformation:
  """Global-norm clipping (`grad_clip`, 0: off), then the update rule, under a warmup +
  (constant | cosine) schedule.

  `optimizer` "adamw": AdamW (`b2`, `eps`, decoupled `weight_decay`). "sgd": SGD with
  heavy-ball momentum (`optax.sgd`: trace m <- g + momentum * m, update -lr * m), with
  `weight_decay` as L2 added to the gradient before the trace; `b2`/`eps` are unused.
  Plain SGD keeps the gradient's scale, which Adam normalises away: the Tsallis study
  compares the two for exactly that reason (docs/decisions/0030).
  """
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {optimizer!r}; use one of {list(OPTIMIZERS)}")
  lr = _schedule(learning_rate, total_steps, warmup_steps, schedule)
  parts = [clip_by_global_norm(grad_clip)] if grad_clip else []
  if optimizer == "adamw":
    parts.append(optax.adamw(lr, b2=b2, eps=eps, weight_decay=weight_decay))
  else:
    if weight_decay:
      parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.sgd(lr, momentum=momentum or None))
  return optax.chain(*parts)


def _stack_rows(batch: SeqBatch, n: int, group: int, shards: int) -> SeqBatch:
  """The batch as `n` micro-batches stacked on a new leading axis, each of whole
  groups of `group` consecutive rows.

  With the rows split over `shards` devices, micro-batch i takes the i-th block of
  every device's rows where those blocks hold whole groups, so every micro-batch is
  spread over all devices and a scan over them moves no rows between devices; else
  it takes the i-th block of the batch. Losses are sums over whole groups, so the
  rows' order within a micro-batch changes nothing.
  """
  rows = batch.tokens_BT.shape[0]
  if rows % (n * group):
    raise ValueError(f"{rows} rows do not split into {n} micro-batches of whole groups "
                     f"of {group}; choose micro_batches dividing {rows // group}")
  spread = shards > 1 and rows % (n * shards) == 0 and (rows // (n * shards)) % group == 0
  d = shards if spread else 1

  def stack(x):
    if not x.ndim:
      return jnp.broadcast_to(x, (n,))
    y = x.reshape(d, n, rows // (d * n), *x.shape[1:]).swapaxes(0, 1)
    return y.reshape(n, rows // n, *x.shape[1:])
  return jax.tree.map(stack, batch)


def _guarded_update(params, opt_state, grads, loss, tx: optax.GradientTransformation):
  gnorm = global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
  updates, new_opt = tx.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  return keep(new_params, params), keep(new_opt, opt_state), gnorm, finite


def rl_update(params, opt_state, batch: SeqBatch, temperature=None, frozen=None, *,
              cfg: rjm.ModelConfig, objective: Objective, objective_cfg: Any,
              tx: optax.GradientTransformation, micro_batches: int = 1,
              default_temperature: float = 1.0, chunk: int = 256, batch_shards: int = 1,
              combine=None, scored_tail: int = 0):
  """One optimizer update of `objective` on `batch` (exact micro-batch accumulation).

  `temperature` (the rollouts' sampling temperature, which the policy log-probs
  refer to) is a traced scalar, so a run that changes it between steps does not
  recompile; None uses `default_temperature`.

  With adapters (`training.lora`), `params` are the trained adapters, `frozen` the
  frozen base and `combine(frozen, params)` the policy's params: only the adapters
  get gradients and optimizer updates.

  `scored_tail` (static): when > 0, only the last `scored_tail` columns of the batch
  can carry a loss mask (`_scored_from`), so no logits are formed before them.

  Returns:
    (params, opt_state, metrics): metrics hold the loss, the objective's metrics,
    the gradient norm, `finite` (0 when the update was refused) and the mean absolute
    gap between sampler and trainer log-probabilities on trained tokens.
  """
  group = batch.inputs.group_size or 1
  temperature = default_temperature if temperature is None else temperature

  def fn(p, mb: SeqBatch):
    p = p if combine is None else combine(frozen, p)
    logp, ent = rjm.token_logprobs(p, cfg, mb.tokens_BT, mb.positions_BT, chunk=chunk,
                                   temperature=temperature,
                                   first=_scored_from(mb.tokens_BT, scored_tail))
    w, mets = objective.loss_terms(mb.inputs.replace(logp_BT=logp, entropy_BT=ent),
                                   objective_cfg)
    # Sampled tokens only (forced and teacher-forced tokens carry a 0 sampler logprob).
    known = mb.inputs.mask_BT * (mb.sampler_logp_BT != 0)
    gap = masked_metric(jnp.abs(logp - mb.sampler_logp_BT), known)
    return w, dict(mets, sampler_trainer_gap=gap)

  if micro_batches == 1:
    loss, metrics, grads = accumulate_value_and_grad(fn, params, [batch])
  else:
    loss, metrics, grads = scan_value_and_grad(
        fn, params, _stack_rows(batch, micro_batches, group, batch_shards))
  params, opt_state, gnorm, finite = _guarded_update(params, opt_state, grads, loss, tx)
  out = {f"loss/{k}": v for k, v in metric_values(metrics).items()}
  out.update({"loss/total": loss, "loss/grad_norm": gnorm,
              "loss/finite": finite.astype(jnp.float32)})
  return params, opt_state, out


def _scored_from(tokens_BT: jax.Array, scored_tail: int) -> int:
  """The first column that may carry a loss mask: the completion layout's rows are
  `[left-padded prompt | max_new_tokens sampled columns]`, so with `scored_tail` =
  max_new_tokens the prompt columns are never scored (0: every column may be)."""
  return max(0, tokens_BT.shape[1] - scored_tail) if scored_tail else 0


def score(params, batch: SeqBatch, temperature=None, *, cfg: rjm.ModelConfig,
          default_temperature: float = 1.0, chunk: int = 256, scored_tail: int = 0
          ) -> tuple[jax.Array, jax.Array]:
  """Log-probabilities and entropies of the batch's tokens (no gradient; 0 before the
  last `scored_tail` columns when it is > 0); the temperature is traced as in
  `rl_update`."""
  temperature = default_temperature if temperature is None else temperature
  return rjm.token_logprobs(params, cfg, batch.tokens_BT, batch.positions_BT, chunk=chunk,
                            temperature=temperature,
                            first=_scored_from(batch.tokens_BT, scored_tail))


def sft_update(params, opt_state, tokens_BT, positions_BT, mask_BT, *,
               cfg: rjm.ModelConfig, tx: optax.GradientTransformation, chunk: int = 256):
  """One token-NLL step on `mask_BT` tokens (token-mean); returns metrics too."""
  def loss_fn(p):
    logp, _ = rjm.token_logprobs(p, cfg, tokens_BT, positions_BT, chunk=chunk,
                                 with_entropy=False)
    m = mask_BT.astype(jnp.float32)
    return -jnp.sum(logp * m) / jnp.maximum(jnp.sum(m), 1.0)

  loss, grads = jax.value_and_grad(loss_fn)(params)
  params, opt_state, gnorm, finite = _guarded_update(params, opt_state, grads, loss, tx)
  return params, opt_state, {"sft/loss": loss, "sft/grad_norm": gnorm,
                             "sft/finite": finite.astype(jnp.float32)}


def jit_steps(cfg: rjm.ModelConfig, tx: optax.GradientTransformation, objective=None,
              objective_cfg=None, micro_batches: int = 1, temperature: float = 1.0, *,
              state_shardings=None, chunk: int = 256, compiler_options=None,
              combine=None, scored_tail: int = 0):
  """The run's jitted (sft_update, rl_update, score), params/opt state donated.

  Args:
    state_shardings: optional (param shardings, optimizer-state shardings), e.g.
      `sharding.state_shardings`; the updated state is then returned in
      exactly that layout (metrics replicated), so donation reuses the input buffers
      and the next step sees the same layout. None lets XLA choose (one device).
    chunk: positions per logits chunk in `model.token_logprobs` (memory vs speed).
    compiler_options: optional XLA options for all three programs
      (`training.compile_mode`); None compiles with XLA's defaults.
    combine: with adapters, `(frozen base, adapters) -> params` (`training.lora`);
      the RL update then takes the base as its `frozen` argument (not donated).
    scored_tail: with > 0, the RL update and scoring form logits only for the last
      `scored_tail` columns of a batch (the completion layout's sampled columns, where
      every loss mask lies); 0 scores every column.
  """
  # No out_shardings at all (not None) unless asked: the unsharded path is today's.
  out = {"compiler_options": compiler_options}
  shards = 1
  if state_shardings is not None:
    p_sh, o_sh = state_shardings
    mesh = jax.tree.leaves(p_sh)[0].mesh
    shards = rjs.batch_shards(mesh)
    out["out_shardings"] = (p_sh, o_sh, jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))
  sft = jax.jit(functools.partial(sft_update, cfg=cfg, tx=tx, chunk=chunk),
                donate_argnums=(0, 1), **out)
  rl = None
  if objective is not None:
    rl = jax.jit(functools.partial(rl_update, cfg=cfg, objective=objective,
                                   objective_cfg=objective_cfg, tx=tx,
                                   micro_batches=micro_batches, batch_shards=shards,
                                   default_temperature=temperature, chunk=chunk,
                                   combine=combine, scored_tail=scored_tail),
                 donate_argnums=(0, 1), **out)
  sc = jax.jit(functools.partial(score, cfg=cfg, default_temperature=temperature,
                                 chunk=chunk, scored_tail=scored_tail),
               compiler_options=compiler_options)
  return sft, rl, sc
