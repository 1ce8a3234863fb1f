"""The training run: SFT warm start, then RL, with evaluation, checkpoints and resume.

One global step counter covers both phases: steps [0, sft.steps) are SFT updates and
[sft.steps, sft.steps + rl.steps) RL steps. A checkpoint at step s holds the state
after s steps, the data iterators' positions and the phase; the PRNG key of step s is
`fold_in(run_key, s)`, so a resumed run replays exactly what an uninterrupted run
would have done (bitwise on CPU).

`training.build.build_run` makes the run's fixed parts; `Trainer` holds them with the
state that advances (params, optimizer state, reference params, data iterators) and
runs the phases.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reasoning_jax import sampling
from reasoning_jax import sharding as rjs
from reasoning_jax.evaluation.loop import evaluate
from reasoning_jax.training import episodes as tool_episodes
from reasoning_jax.training import multihost as mh
from reasoning_jax.training import refill
from reasoning_jax.training import setup as S
from reasoning_jax.training.build import build_run, write_config
from reasoning_jax.training.compile_ahead import compile_ahead
from reasoning_jax.training.config import Experiment
from reasoning_jax.training.indices import BatchCallback, index_stream
from reasoning_jax.training.lora import base_store as lora_base_store
from reasoning_jax.training.rollout import Rollouts, build_rollouts, summarize
from reasoning_jax.training.steps import SeqBatch

log = logging.getLogger("reasoning_jax")
LORA_KEY = 0x10AA  # folded into the eval key: the initial adapters' key


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
  """The rollout sampling knobs of the next RL steps (from `RLConfig`). They are traced
  values everywhere (sampler, scoring, update): replacing `Trainer.sampling` between
  steps (a temperature schedule, a curriculum) never recompiles."""
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0


def _part(name: str, settable: bool = False) -> property:
  """`Trainer.<name>`: the run part `RunParts.<name>`."""
  get = lambda self: getattr(self.parts, name)  # noqa: E731
  put = (lambda self, v: setattr(self.parts, name, v)) if settable else None
  return property(get, put, doc=f"`RunParts.{name}` of the run.")


class Trainer:
  """Holds a run's parts and state and runs its phases; see the module docstring.

  Args:
    exp, workdir, config_text: the experiment, its run directory and the config text
      saved there (`build_run`).
    on_batch: optional `indices.BatchCallback`, called for every batch of example
      indices a process draws (e.g. `indices.index_log`).
  """

  exp = _part("exp")
  workdir = _part("workdir")
  cfg = _part("cfg")
  codec = _part("codec")
  mesh = _part("mesh")
  compiler_options = _part("compiler_options")
  ckpt = _part("ckpt")
  writer = _part("writer")
  runner = _part("runner", settable=True)

  def __init__(self, exp: Experiment, workdir: str, config_text: str = "", *,
               on_batch: BatchCallback | None = None, read_only: bool = False):
    self.parts, self.params = build_run(exp, workdir, config_text, read_only=read_only)
    self.opt_state: Any = None
    self.ref_params: Any = None
    # With adapters (`training.lora`): the frozen base during RL (`params` are then the
    # adapters), whether the KL reference is that base, and this step's policy params.
    self.base: Any = None
    self._ref_is_base = False
    self._policy_params: Any = None
    r, seed = exp.rl, exp.run.seed
    self.sampling = SamplingSettings(r.temperature, r.top_k, r.top_p)
    self.sft_iter = index_stream(len(self.parts.data.warmup) or 1, exp.sft.batch_size,
                                 seed)
    self.rl_iter = index_stream(len(self.parts.data.train), r.prompts_per_step, seed + 1)
    self.on_batch = on_batch
    self.last_prompts: list[list[int]] = []  # this process's prompt ids of the last step
    self._last_rewards = None
    self._compiled_ahead: set[int] = set()
    # Compile-ahead threads not yet joined: `close` joins them, because a process that
    # exits while XLA compiles on a daemon thread aborts (SIGABRT) instead of
    # reporting the error that ended the run.
    self._threads: list = []

  # ------------------------------------------------------------------ state & resume
  def _phase(self, step: int) -> str:
    return "sft" if step < self.exp.sft.steps else "rl"

  def _state(self) -> dict[str, Any]:
    state = {"params": self.params, "opt_state": self.opt_state}
    if self.ref_params is not None:
      state["ref_params"] = self.ref_params
    return state

  def _init_opt(self, step: int) -> None:
    p = self.parts
    if p.lora is not None and self._phase(step) == "rl":
      self._init_adapters(step)
      return
    tx = p.sft_tx if self._phase(step) == "sft" else p.rl_tx
    self.opt_state = rjs.init_opt_state(tx, self.params, p.param_shardings, p.mesh)
    if self._phase(step) == "rl" and S.uses_reference(self.exp, p.ocfg):
      self.ref_params = jax.tree.map(jnp.copy, self.params)

  def _init_adapters(self, step: int) -> None:
    """Enter the RL phase with adapters: freeze the current params as the base (kept
    in `<workdir>/lora_base` when SFT made them), fresh adapters and their optimizer
    state; the KL reference, if any, is the base itself."""
    p, sft_steps = self.parts, self.exp.sft.steps
    if self.base is None:
      if sft_steps and step == sft_steps:
        with lora_base_store(self.workdir) as store:
          if sft_steps not in store.all_steps():
            store.save(sft_steps, {"params": self.params})
      self.base = p.lora.freeze(self.params)
    self.params = p.lora.init(jax.random.fold_in(p.eval_key, LORA_KEY))
    self.opt_state = rjs.init_opt_state(p.rl_tx, self.params, p.lora.shardings, p.mesh)
    self.ref_params = None
    self._ref_is_base = S.uses_reference(self.exp, p.ocfg)

  def _restore_base(self, last: int) -> None:
    """On resume into an adapter RL phase: the frozen base from `lora_base` (after
    SFT) or, without SFT, the start-up params as they are."""
    sft_steps = self.exp.sft.steps
    if self.parts.lora is None or self._phase(last) != "rl" or not sft_steps:
      return
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                           sharding=x.sharding),
                            {"params": self.params})
    with lora_base_store(self.workdir, read_only=self.parts.read_only) as store:
      self.params = store.restore(sft_steps, abstract).state["params"]

  def policy_params(self):
    """The params rollouts, old-policy scoring and evaluation use: the params, or
    with adapters the base + adapters (`LoRARun.policy`: merged once per call)."""
    if self.base is None:
      return self.params
    return self.parts.lora.policy(self.base, self.params)

  def _frozen(self) -> tuple:
    """The RL update's extra arguments: the frozen base with adapters, else none."""
    return () if self.base is None else (self.base,)

  def save(self, step: int) -> None:
    """Checkpoint the state after `step` steps (async; committed atomically)."""
    meta = {"step": step, "phase": self._phase(step),
            "sft_iter": self.sft_iter.get_state(), "rl_iter": self.rl_iter.get_state()}
    if step not in self.ckpt.all_steps():
      self.ckpt.save(step, self._state(), meta)

  def resume(self) -> int:
    """Restore the newest readable checkpoint if there is one; returns the step to
    start at. An unreadable newer step (truncated or missing files, a bad manifest)
    is skipped with a warning naming it and why, and moved to
    `checkpoints_quarantine/` (training runs); if every step is unreadable the run
    stops with each reason rather than silently restarting from scratch."""
    self._init_opt(0)
    steps = self.ckpt.all_steps()
    if not steps:
      # Killed before its first checkpoint committed: the run restarts at step 0, so
      # every logged row (the step-0 evaluation included) would be written again.
      self.writer.truncate_after(-1)
      return 0
    skipped = []
    for last in reversed(steps):
      try:
        self._restore(last)
        break
      except Exception as e:  # orbax and tensorstore raise many types for bad files
        skipped.append(f"step {last}: {type(e).__name__}: {str(e)[:300]}")
        log.warning("checkpoint step %d in %s is unreadable (%s: %s); trying the "
                    "previous one", last, self.ckpt.directory, type(e).__name__,
                    str(e)[:300])
    else:
      raise RuntimeError(f"no readable checkpoint in {self.ckpt.directory}: "
                         + "; ".join(skipped) + ". Move the broken steps away to "
                         "start from scratch, or restore the directory from a copy")
    if not self.parts.read_only and mh.is_primary():
      for bad in (s for s in steps if s > last):
        log.warning("moved unreadable checkpoint step %d to %s", bad,
                    self.ckpt.quarantine(bad))
    self.writer.truncate_after(last)
    log.warning("resumed from checkpoint step %d in %s", last, self.ckpt.directory)
    return last

  def _restore(self, step: int) -> None:
    """Restore the state and data iterators of checkpoint `step` (raises if it is
    unreadable; nothing is assigned before the arrays have been read)."""
    meta = self.ckpt.restore_meta(step)
    self._restore_base(step)
    self._init_opt(step)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                           sharding=x.sharding),
                            self._state())
    restored = self.ckpt.restore(step, abstract)
    sft_state, rl_state = meta["sft_iter"], meta["rl_iter"]
    self.params, self.opt_state = restored.state["params"], restored.state["opt_state"]
    self.ref_params = restored.state.get("ref_params")
    self.sft_iter.set_state(sft_state)
    self.rl_iter.set_state(rl_state)

  # ------------------------------------------------------------------ phases
  def _take(self, it, step: int, phase: str) -> np.ndarray:
    """This process's example indices of the next global batch of `it`.

    Every process draws the same global index stream (same seed), so the data order
    and the iterator state do not depend on the process count; process p keeps its
    contiguous block of rows (`multihost.process_slice`), the rows its devices hold.
    """
    idx = np.asarray(next(it)["i"])
    idx = idx[mh.process_slice(len(idx), f"{phase} batch")]
    if self.on_batch is not None:
      self.on_batch(step, phase, idx)
    return idx

  def sft(self, step: int) -> dict[str, float]:
    """One SFT update on the next warm-up batch."""
    idx = self._take(self.sft_iter, step, "sft")
    d = rjs.shard_batch({k: v[idx] for k, v in self.parts.data.sft_arrays.items()},
                        self.mesh)
    self.params, self.opt_state, m = self.parts.programs.sft_step(
        self.params, self.opt_state, d["tokens"], d["positions"], d["mask"])
    return {k: float(v) for k, v in m.items()}

  def rl(self, step: int) -> dict[str, float]:
    """One RL step: rollouts (refilled, `training.refill`), rewards, (reference /
    old-policy scoring), updates."""
    key = jax.random.fold_in(self.parts.run_key, step)
    k_sample, k_prep = jax.random.split(key)
    temp = jnp.float32(self.sampling.temperature)  # traced: a new value does not recompile
    t0 = time.perf_counter()
    # The step's sampling and old policy with adapters (merged once per step).
    self._policy_params = self.policy_params() if self.base is not None else None
    roll, stats, warm, times, refill_m = self._collect(step, k_sample, temp, k_prep)
    t2 = time.perf_counter()
    for th in warm:
      th.join()  # they compile the programs used next; never compile them twice
    self._threads = [th for th in self._threads if th.is_alive()]
    batch, inputs = self._update_inputs(roll, temp, k_prep)
    jax.block_until_ready(inputs)  # so time/score is the scoring, not its dispatch
    t3 = time.perf_counter()
    metrics = self._updates(batch, inputs, temp)
    t4 = time.perf_counter()
    metrics.update(roll.metrics)
    metrics.update(refill_m)
    ntok = float(mh.allgather(roll.mask.sum()).sum())
    metrics.update({"time/rollout": times[0], "time/reward": times[1],
                    "time/score": t3 - t2, "time/update": t4 - t3, "time/step": t4 - t0,
                    "throughput/tokens_per_s": times[2] / max(times[0], 1e-9),
                    "rollout/trained_tokens": ntok})
    return metrics

  def _collect(self, step: int, k_sample, temp, k_prep):
    """Sample and score rounds of prompts until the batch holds `prompts_per_step`
    informative groups or the over-sampling limit is reached (`training.refill`; one
    round unless the objective filters zero-variance groups). Returns (rollouts, their
    global row stats, compile-ahead threads, (sampling s, reward s, sampled tokens),
    refill metrics)."""
    p, r = self.parts, self.exp.rl
    rounds = refill.refill_rounds(r.refill_rounds, p.ocfg) if p.layout == "completion" else 0
    rolls, keeps, warm, prompt_sets = [], [], [], []
    t_sample = t_reward = tokens = 0.0
    for j in range(rounds + 1):
      t0 = time.perf_counter()
      exs = [p.data.train[i] for i in self._take(self.rl_iter, step, "rl")]
      k = k_sample if j == 0 else jax.random.fold_in(k_sample, j)
      prompts, answers, out, buckets, w = self._sample(exs, k, temp, k_prep)
      t1 = time.perf_counter()
      roll = self._score(exs, prompts, answers, out, buckets)
      t_sample, t_reward = t_sample + t1 - t0, t_reward + time.perf_counter() - t1
      tokens += float(mh.allgather(np.asarray(out.lengths).sum()).sum())
      rolls.append(roll)
      prompt_sets.append(prompts)
      warm += w
      if not rounds:
        break
      keeps.append(refill.informative_groups(roll.rewards, r.group_size))
      short = sum(int(k.sum()) for k in keeps) < len(exs)
      if not mh.allgather(np.int32(short)).max():
        break
    refill_m = {}
    if rounds:
      picks = refill.pick_groups(keeps, len(prompt_sets[0]))
      self.last_prompts = [prompt_sets[i][g] for i, g in picks]
      roll = refill.merge(rolls, picks, r.group_size, p.codec.pad_id)
      sampled = float(mh.allgather(sum(len(x) for x in prompt_sets)).sum())
      refill_m = {"refill/rounds": float(len(rolls)), "refill/prompts_sampled": sampled,
                  "refill/informative_frac": float(np.mean(refill.informative_groups(
                      roll.rewards, r.group_size)))}
    stats = self._summarize(roll)
    return roll, stats, warm, (t_sample, t_reward, tokens), refill_m

  def _sample(self, exs, k_sample, temp, k_prep):
    """Sample the step's rollouts (starting the compile-ahead threads first); returns
    (prompt ids, gold answer ids or None, sampler output, (prompt, answer) column
    widths, the compile-ahead threads)."""
    if self.exp.rl.tools:  # multi-turn episodes with tool calls (`training.episodes`)
      return tool_episodes.sample(self, exs, k_sample, temp, k_prep)
    p, r, knobs = self.parts, self.exp.rl, self.sampling
    prompts = [p.codec.prompt_ids(e.prompt) for e in exs]
    self.last_prompts = prompts
    tsallis = p.layout == "tsallis"
    answers = ([p.codec.encode(e.answer) + [p.codec.eos_id] for e in exs]
               if tsallis else None)
    # Column widths of the whole batch (every process's part must have the same).
    widths = mh.allgather([max(len(x) for x in prompts),
                           max(len(a) for a in answers) if answers else 0]).max(axis=0)
    prompt_bucket = sampling.bucket(int(widths[0]))
    answer_bucket = sampling.bucket(int(widths[1])) if tsallis else None
    warm = self._compile_ahead(prompt_bucket + r.max_new_tokens + (answer_bucket or 0),
                               temp, k_prep)
    marker = tuple(p.data.marker_ids)
    budget = None
    if tsallis:  # rationale only: the gold answer is teacher-forced after the marker
      budget = sampling.ThinkingBudget(r.max_new_tokens - len(marker), marker,
                                       answer_tokens=0)
    elif r.thinking_budget:  # the marker is forced after that many thinking tokens
      budget = sampling.ThinkingBudget(r.thinking_budget, marker)
    # Rollouts run under the rollout layout (heads over tensor, no FSDP gathers per
    # token); the reshard happens on device, once per step.
    # With adapters the merged policy is already in the rollout layout
    # (`LoRARun.policy`); over a quantized base it samples in the train layout.
    roll_params = (self._policy_params if self.base is not None else
                   jax.device_put(self.params, p.rollout_param_shardings)
                   if p.rollout_sharding else self.params)
    out = sampling.generate(
        roll_params, self.cfg, prompts, sharding=p.rollout_sharding, key=k_sample,
        max_new_tokens=r.max_new_tokens, num_samples=r.group_size,
        temperature=knobs.temperature, top_k=knobs.top_k, top_p=knobs.top_p,
        stop_tokens=() if tsallis else (p.codec.eos_id,), budget=budget,
        pad_id=p.codec.pad_id, compiler_options=self.compiler_options)
    jax.block_until_ready(out.tokens)
    return prompts, answers, out, (prompt_bucket, answer_bucket), warm

  def _score(self, exs, prompts, answers, out, buckets) -> Rollouts:
    """Lay this process's samples out for the update and score them."""
    p, r = self.parts, self.exp.rl
    if isinstance(out, tool_episodes.ToolSample):
      return tool_episodes.score(self, exs, prompts, out, buckets)
    return build_rollouts(exs, prompts, out, p.codec, p.runner, group=r.group_size,
                          layout=p.layout, marker_ids=p.data.marker_ids,
                          answer_ids=answers, train_forced=r.train_forced_tokens,
                          prompt_bucket=buckets[0], answer_bucket=buckets[1])

  def _summarize(self, roll: Rollouts) -> dict[str, np.ndarray]:
    """The step's metrics (into `roll.metrics`) and per-row stats of the global batch
    (gathered from every process), which the health checks read."""
    p, r = self.parts, self.exp.rl
    stats = roll.row_stats
    counts = roll.counts
    if jax.process_count() > 1:  # metrics and health checks of the global batch
      stats = {k: mh.allgather_rows(v) for k, v in stats.items()}
      counts = {k: float(mh.allgather(roll.counts.get(k, 0.0)).sum())
                for k in sorted(roll.counts)}
    roll.metrics = summarize(stats, counts, r.group_size)
    self._last_rewards = (stats.get("reward", roll.rewards) if p.layout == "completion"
                          else None)
    return stats

  def _updates(self, batch: SeqBatch, inputs, temp) -> dict[str, float]:
    """`epochs` passes of `minibatches` updates over the step's batch; returns the last
    update's metrics."""
    r, step_fn = self.exp.rl, self.parts.programs.rl_step
    size = batch.tokens_BT.shape[0] // r.minibatches  # global rows
    metrics: dict[str, float] = {}
    for _ in range(r.epochs):
      for j in range(r.minibatches):
        sub = self._minibatch(batch, inputs, slice(j * size, (j + 1) * size))
        self.params, self.opt_state, m = step_fn(self.params, self.opt_state, sub, temp,
                                                 *self._frozen())
        metrics = {k: float(v) for k, v in m.items()}
    return metrics

  def _compile_ahead(self, seq_len: int, temp, k_prep) -> list:
    """Start compiling the step's scoring and update programs for `seq_len`-token
    rollouts (once per length; single process only: several processes assemble their
    batches across processes)."""
    if (not self.exp.run.compile_ahead or jax.process_count() > 1
        or seq_len in self._compiled_ahead):
      return []
    self._compiled_ahead.add(seq_len)
    r, rl_step = self.exp.rl, self.parts.programs.rl_step
    threads = compile_ahead(
        r.prompts_per_step * r.group_size, seq_len, minibatches=r.minibatches,
        update_inputs=lambda roll, score=None: self._update_inputs(roll, temp, k_prep,
                                                                   score),
        minibatch=self._minibatch,
        lower_update=lambda sub: rl_step.lower(self.params, self.opt_state, sub, temp,
                                               *self._frozen()))
    self._threads += threads
    return threads

  def _update_inputs(self, roll: Rollouts, temp, k_prep, score=None
                     ) -> tuple[SeqBatch, Any]:
    """The sharded batch of a step's rollouts and the objective's prepared inputs
    (old-policy, reference and teacher log-probabilities scored where needed, by
    `score`, default the jitted scoring programs)."""
    p, r = self.parts, self.exp.rl
    teacher_score = score or (p.teacher.score if p.teacher is not None else None)
    score = score or p.programs.score
    inputs = S.objective_inputs(roll, r.group_size)
    batch = rjs.shard_batch(SeqBatch(roll.tokens, roll.positions, inputs,
                                     roll.sampler_logp), self.mesh)
    if jax.process_count() > 1:
      inputs = batch.inputs  # the global batch; `inputs` held this process's rows
    updates = r.epochs * r.minibatches
    if updates > 1 or p.objective.needs_key:
      old, _ = score(self.params if self.base is None else self._policy_params, batch,
                     temp)
      inputs = inputs.replace(old_logp_BT=old if updates > 1 else None, logp_BT=old)
    ref = self.base if self._ref_is_base else self.ref_params
    if ref is not None:
      inputs = inputs.replace(ref_logp_BT=score(ref, batch, temp)[0])
    if p.teacher is not None:  # frozen like the reference, at the rollouts' temperature
      inputs = inputs.replace(
          teacher_logp_BT=teacher_score(p.teacher.params, batch, temp)[0])
    inputs = p.programs.prepare(inputs, k_prep if p.objective.needs_key else None)
    return batch, inputs

  def _minibatch(self, batch: SeqBatch, inputs, sl: slice) -> SeqBatch:
    """Rows `sl` of the batch with the prepared inputs, sharded for the update."""
    sub = jax.tree.map(lambda x: x[sl] if getattr(x, "ndim", 0) else x,
                       SeqBatch(batch.tokens_BT, batch.positions_BT, inputs,
                                batch.sampler_logp_BT))
    return rjs.shard_batch(sub, self.mesh)

  def evaluate(self) -> dict[str, float]:
    """Held-out evaluation with the current params (see `evaluation.loop`)."""
    p, e, r = self.parts, self.exp.eval, self.exp.rl
    if r.tools:
      return tool_episodes.evaluate(self)
    return evaluate(self.policy_params(), self.cfg, p.data.eval[:e.num_prompts], self.codec,
                    self.runner, key=p.eval_key,
                    max_new_tokens=e.max_new_tokens or r.max_new_tokens,
                    samples=e.samples, temperature=e.temperature,
                    compiler_options=self.compiler_options)

  def _check_health(self, step: int, m: dict[str, float]) -> None:
    """Loud warnings for the field's silent failures (the step itself already refused
    a non-finite update inside jit)."""
    health = self.parts.health
    if self._phase(step - 1) == "sft":
      health.check(step, loss=m["sft/loss"], grad_norm=m["sft/grad_norm"])
      return
    fails = sum(int(m.get(f"reward/{k}", 0)) for k in ("timeout", "exception",
                                                         "unparsable_gold"))
    scored = self._last_rewards is not None  # the tsallis layout runs no verifier
    health.check(step, rewards=self._last_rewards,
                 truncated=m.get("rollout/truncated_frac"), loss=m["loss/total"],
                 grad_norm=m["loss/grad_norm"], reward_failures=fails if scored else None)

  # ------------------------------------------------------------------ the run
  def _step(self, step: int) -> dict[str, float]:
    """Train step `step` (SFT or RL) and do what follows it: health checks, metrics,
    the phase change, evaluation and checkpoints."""
    exp, sft_steps, total = self.exp, self.exp.sft.steps, self.exp.total_steps
    m = self.sft(step) if self._phase(step) == "sft" else self.rl(step)
    done = step + 1
    self._check_health(done, m)
    if done % exp.run.log_every == 0 or done == total:
      self.writer.write(done, m)
    if done == sft_steps:
      self._init_opt(done)  # phase change: fresh RL optimizer (and reference copy)
    if done >= sft_steps and (done - sft_steps) % exp.eval.every == 0 and done < total:
      self.writer.write(done, self.evaluate())
    # After the metrics of `done`, so a resume never repeats them. The last step's
    # checkpoint is saved by `run` after the final evaluation's row: a run killed
    # between the two must redo that evaluation, not skip it as already finished.
    if (done % exp.run.checkpoint_every == 0 or done == sft_steps) and done < total:
      self.save(done)
    return m

  def run(self) -> dict[str, float]:
    """Train from the latest checkpoint (or scratch) to the end; returns last metrics."""
    total = self.exp.total_steps
    try:
      start = self.resume()
    except BaseException:
      self.close(plot=False)  # a run that never started leaves its directory as it was
      raise
    write_config(self.parts)  # the run has really started: record its configuration
    if start >= total:
      log.warning("the run in %s already finished at step %d; nothing to train",
                  self.workdir, start)
      self.close(plot=False)
      return {}
    last: dict[str, float] = {}
    try:
      if start == 0 and self.exp.sft.steps == 0:
        self.writer.write(0, self.evaluate())
      for step in range(start, total):
        last = self._step(step)
      final = self.evaluate()
      self.writer.write(total, final)
      last.update(final)
      self.save(total)
    finally:
      self.close()
    return last

  def close(self, plot: bool = True) -> None:
    """Wait for pending checkpoints, stop the reward workers, write plots (if asked)
    and close the metrics writer."""
    for th in self._threads:
      th.join()
    self._threads = []
    self.ckpt.wait()
    self.ckpt.close()
    self.runner.close()
    if self.parts.lock is not None:
      self.parts.lock.release()
    if plot and self.exp.run.plots and not self.parts.read_only:
      try:  # plots are derived from metrics.jsonl; they never fail a finished run
        self.writer.plot()
      except OSError as e:
        log.warning("plots not written (%s); `reasoning-jax plot --workdir %s` "
                    "redraws them from metrics.jsonl", e, self.workdir)
    self.writer.close()


def train(exp: Experiment, workdir: str, config_text: str = "", *,
          on_batch: BatchCallback | None = None) -> dict[str, float]:
  """Run (or resume) the experiment in `workdir`; returns the final metrics."""
  return Trainer(exp, workdir, config_text, on_batch=on_batch).run()
