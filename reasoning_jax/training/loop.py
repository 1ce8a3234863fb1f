"""The training run: SFT warm start, then RL, with evaluation, checkpoints and resume.

One global step counter covers both phases: steps [0, sft.steps) are SFT updates and
[sft.steps, sft.steps + rl.steps) RL steps. A checkpoint at step s holds the state
after s steps, the data iterators' positions and the phase; the PRNG key of step s is
`fold_in(run_key, s)`, so a resumed run replays exactly what an uninterrupted run
would have done (bitwise on CPU).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reasoning_jax import sampling
from reasoning_jax.data.pipeline import PipelineConfig, make_dataset
from reasoning_jax.evaluation.loop import evaluate
from reasoning_jax.rewards import RewardRunner
from reasoning_jax.training import distributed as D
from reasoning_jax.training import multihost as MH
from reasoning_jax.training import setup as S
from reasoning_jax.training.checkpoint import CheckpointManager
from reasoning_jax.training.compile_ahead import compile_ahead
from reasoning_jax.training.compile_mode import compiler_options
from reasoning_jax.training.compile_cache import enable_compilation_cache
from reasoning_jax.training.config import Experiment
from reasoning_jax.training.health import HealthConfig, HealthMonitor
from reasoning_jax.training.host_malloc import tune_host_malloc
from reasoning_jax.training.metrics import MetricsWriter
from reasoning_jax.training.rollout import build_rollouts, summarize
from reasoning_jax.training.steps import SeqBatch, jit_steps, make_optimizer

log = logging.getLogger("reasoning_jax")


def _index_stream(n: int, batch: int, seed: int):
  """A resumable grain iterator over batches of example indices."""
  ds = make_dataset([{"i": i} for i in range(n)],
                    PipelineConfig(batch_size=batch, seed=seed, num_threads=0),
                    shard_index=0, shard_count=1)
  return iter(ds)


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
  """The rollout sampling knobs of the next RL steps (from `RLConfig`). They are traced
  values everywhere (sampler, scoring, update): replacing `Trainer.sampling` between
  steps (a temperature schedule, a curriculum) never recompiles."""
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0


class Trainer:
  """Owns a run's state and runs its phases; see the module docstring."""

  def __init__(self, exp: Experiment, workdir: str, config_text: str = ""):
    self.exp, self.workdir, self.config_text = exp, workdir, config_text
    run = exp.run
    if run.host_malloc:
      tune_host_malloc()  # before the backend starts its threads; see host_malloc
    # A no-op unless this is a multi-host pod or a `reasoning-jax launch` child.
    D.maybe_initialize(run.distributed)
    enable_compilation_cache(run.compilation_cache)
    os.makedirs(workdir, exist_ok=True)
    if MH.is_primary():  # one writer per run directory
      with open(os.path.join(workdir, "config.gin"), "w") as f:
        f.write(config_text)
    init_key, self.run_key, self.eval_key = jax.random.split(jax.random.key(run.seed), 3)
    self.task = S.build_task(exp)
    self.codec = S.build_codec(exp, self.task)
    self.cfg, self.params = S.build_model(exp, self.codec, init_key)
    self.mesh = D.build_mesh(run.mesh)
    self.compiler_options = compiler_options(
        run.compile_mode, sum(x.size for x in jax.tree.leaves(self.params)),
        self.mesh.devices.flat[0].platform)
    if jax.process_count() > 1:
      MH.check_mesh_order(self.mesh)
    self.params = D.place_params(self.params, self.cfg, self.mesh)
    self.objective, self.ocfg, self.layout = S.build_objective(exp)
    t = exp.task
    self.warmup = self.task.warmup_corpus(t.num_warmup, seed=t.data_seed) if exp.sft.steps else []
    self.train_ex = self.task.rl_prompts(t.num_train, seed=t.data_seed + 1)
    self.eval_ex = self.task.rl_prompts(t.num_eval, seed=t.data_seed + 2, split="heldout")
    self.marker_ids = self.codec.encode(self.task.rationale_end)
    self.sft_tx = make_optimizer(exp.sft.learning_rate, total_steps=exp.sft.steps,
                                 warmup_steps=exp.sft.warmup_steps, schedule="cosine",
                                 weight_decay=exp.sft.weight_decay,
                                 grad_clip=exp.sft.grad_clip)
    r = exp.rl
    self.sampling = SamplingSettings(r.temperature, r.top_k, r.top_p)
    self.rl_tx = make_optimizer(r.learning_rate, total_steps=r.steps,
                                warmup_steps=r.warmup_steps, b2=r.adam_b2, eps=r.adam_eps,
                                weight_decay=r.weight_decay, grad_clip=r.grad_clip)
    rows = r.prompts_per_step * r.group_size
    D.check_batch(rows // r.minibatches, self.mesh, micro_batches=r.micro_batches,
                  group=r.group_size, name="RL minibatch")
    if exp.sft.steps:
      D.check_batch(exp.sft.batch_size, self.mesh, name="SFT batch")
    self.sft_step, _, _ = jit_steps(
        self.cfg, self.sft_tx, chunk=r.logprob_chunk, compiler_options=self.compiler_options,
        state_shardings=D.state_shardings(self.sft_tx, self.cfg, self.mesh))
    _, self.rl_step, self.score = jit_steps(
        self.cfg, self.rl_tx, self.objective, self.ocfg, r.micro_batches, r.temperature,
        chunk=r.logprob_chunk, compiler_options=self.compiler_options,
        state_shardings=D.state_shardings(self.rl_tx, self.cfg, self.mesh))
    self.rollout_sharding = (sampling.RolloutSharding(self.mesh)
                             if self.mesh.devices.size > 1 else None)
    prompt_len = max(len(self.codec.prompt_ids(e.prompt)) for e in self.train_ex)
    answer_len = (max(len(self.codec.encode(e.answer)) for e in self.train_ex) + 1
                  if self.layout == "tsallis" else 0)
    seq = sampling.bucket(prompt_len) + r.max_new_tokens + sampling.bucket(answer_len)
    log.info("per-device memory estimate:\n%s", D.memory_estimate(
        self.cfg, self.mesh, self.rl_tx, rows=rows // r.minibatches, seq_len=seq,
        micro_batches=r.micro_batches, chunk=r.logprob_chunk, rollout_rows=rows,
        cache_len=sampling.bucket(prompt_len) + sampling.bucket(r.max_new_tokens)
    ).format())
    self.ckpt = CheckpointManager(workdir, max_to_keep=run.keep_checkpoints)
    self.writer = MetricsWriter(workdir, progress=None if run.progress else False,
                                total_steps=exp.total_steps)
    self.health = HealthMonitor(HealthConfig(zero_reward_patience=run.zero_reward_patience,
                                             truncation_threshold=run.truncation_warn))
    self._last_rewards = None
    self._compiled_ahead: set[int] = set()
    # One program for the advantage/baseline preparation: eager ops would compile one
    # small program each (~1 s of the first step on ref-tiny).
    self._prepare = jax.jit(lambda inputs, k: self.objective.prepare(inputs, self.ocfg, k),
                            compiler_options=self.compiler_options)
    self.runner = RewardRunner(num_workers=run.reward_workers, timeout_s=run.reward_timeout)
    self.ref_params = None
    self.sft_iter = _index_stream(len(self.warmup) or 1, exp.sft.batch_size, run.seed)
    log_dir = os.environ.get("REASONING_JAX_INDEX_LOG")
    self._index_log = (os.path.join(log_dir, f"indices.p{jax.process_index()}.jsonl")
                       if log_dir else None)
    self.rl_iter = _index_stream(len(self.train_ex), r.prompts_per_step, run.seed + 1)
    self.sft_data = (S.sft_arrays(self.warmup, self.codec, exp.sft.answer_noise, t.data_seed)
                     if self.warmup else None)

  # ------------------------------------------------------------------ state & resume
  def _phase(self, step: int) -> str:
    return "sft" if step < self.exp.sft.steps else "rl"

  def _state(self, step: int) -> dict[str, Any]:
    state = {"params": self.params, "opt_state": self.opt_state}
    if self.ref_params is not None:
      state["ref_params"] = self.ref_params
    return state

  def _init_opt(self, step: int) -> None:
    tx = self.sft_tx if self._phase(step) == "sft" else self.rl_tx
    self.opt_state = D.init_opt_state(tx, self.params, self.cfg, self.mesh)
    if self._phase(step) == "rl" and S.uses_reference(self.exp, self.ocfg):
      self.ref_params = jax.tree.map(jnp.copy, self.params)

  def save(self, step: int) -> None:
    """Checkpoint the state after `step` steps (async; committed atomically)."""
    meta = {"step": step, "phase": self._phase(step),
            "sft_iter": self.sft_iter.get_state(), "rl_iter": self.rl_iter.get_state()}
    if step not in self.ckpt.all_steps():
      self.ckpt.save(step, self._state(step), meta)

  def resume(self) -> int:
    """Restore the latest checkpoint if there is one; returns the step to start at."""
    self._init_opt(0)
    last = self.ckpt.latest_step()
    if last is None:
      return 0
    meta = self.ckpt.restore_meta(last)
    self._init_opt(last)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                           sharding=x.sharding),
                            self._state(last))
    restored = self.ckpt.restore(last, abstract)
    self.params, self.opt_state = restored.state["params"], restored.state["opt_state"]
    self.ref_params = restored.state.get("ref_params")
    self.sft_iter.set_state(meta["sft_iter"])
    self.rl_iter.set_state(meta["rl_iter"])
    self.writer.truncate_after(last)
    log.warning("resumed from checkpoint step %d in %s", last, self.ckpt.directory)
    return last

  # ------------------------------------------------------------------ phases
  def _take(self, it, step: int, phase: str) -> np.ndarray:
    """This process's example indices of the next global batch of `it`.

    Every process draws the same global index stream (same seed), so the data order
    and the iterator state do not depend on the process count; process p keeps its
    contiguous block of rows (`multihost.process_slice`), the rows its devices hold.
    """
    idx = np.asarray(next(it)["i"])
    idx = idx[MH.process_slice(len(idx), f"{phase} batch")]
    if self._index_log:  # REASONING_JAX_INDEX_LOG: what each process consumed (tests)
      with open(self._index_log, "a") as f:
        f.write(json.dumps({"step": step, "phase": phase, "indices": idx.tolist()}) + "\n")
    return idx

  def sft(self, step: int) -> dict[str, float]:
    """One SFT update on the next warm-up batch."""
    idx = self._take(self.sft_iter, step, "sft")
    d = D.shard_batch({k: v[idx] for k, v in self.sft_data.items()}, self.mesh)
    self.params, self.opt_state, m = self.sft_step(self.params, self.opt_state,
                                                   d["tokens"], d["positions"], d["mask"])
    return {k: float(v) for k, v in m.items()}

  def rl(self, step: int) -> dict[str, float]:
    """One RL step: rollouts, rewards, (reference / old-policy scoring), updates."""
    r, key = self.exp.rl, jax.random.fold_in(self.run_key, step)
    k_sample, k_prep = jax.random.split(key)
    knobs = self.sampling
    temp = jnp.float32(knobs.temperature)  # traced: a new value does not recompile
    t0 = time.perf_counter()
    exs = [self.train_ex[i] for i in self._take(self.rl_iter, step, "rl")]
    prompts = [self.codec.prompt_ids(e.prompt) for e in exs]
    self.last_prompts = prompts  # this process's prompt ids of the step (for inspection)
    tsallis = self.layout == "tsallis"
    answers = ([self.codec.encode(e.answer) + [self.codec.eos_id] for e in exs]
               if tsallis else None)
    # Column widths of the whole batch (every process's part must have the same).
    widths = MH.allgather([max(len(p) for p in prompts),
                           max(len(a) for a in answers) if answers else 0]).max(axis=0)
    prompt_bucket = sampling.bucket(int(widths[0]))
    answer_bucket = sampling.bucket(int(widths[1])) if tsallis else None
    warm = compile_ahead(self, prompt_bucket + r.max_new_tokens + (answer_bucket or 0),
                         temp, k_prep)
    budget = (sampling.ThinkingBudget(r.max_new_tokens - len(self.marker_ids),
                                      tuple(self.marker_ids), answer_tokens=0)
              if tsallis else None)
    # Rollouts run under the rollout layout (heads over tensor, no FSDP gathers per
    # token); the reshard happens on device.
    roll_params = (D.to_rollout_layout(self.params, self.cfg, self.mesh)
                   if self.rollout_sharding else self.params)
    out = sampling.generate(
        roll_params, self.cfg, prompts, sharding=self.rollout_sharding, key=k_sample,
        max_new_tokens=r.max_new_tokens, num_samples=r.group_size,
        temperature=knobs.temperature, top_k=knobs.top_k, top_p=knobs.top_p,
        stop_tokens=() if tsallis else (self.codec.eos_id,), budget=budget,
        pad_id=self.codec.pad_id, compiler_options=self.compiler_options)
    jax.block_until_ready(out.tokens)
    del roll_params
    t1 = time.perf_counter()
    roll = build_rollouts(exs, prompts, out, self.codec, self.runner, group=r.group_size,
                          layout=self.layout, marker_ids=self.marker_ids,
                          answer_ids=answers, train_forced=r.train_forced_tokens,
                          prompt_bucket=prompt_bucket, answer_bucket=answer_bucket)
    stats = roll.row_stats
    if jax.process_count() > 1:  # metrics and health checks of the global batch
      stats = {k: MH.allgather_rows(v) for k, v in stats.items()}
      counts = {k: float(MH.allgather(roll.counts.get(k, 0.0)).sum())
                for k in sorted(roll.counts)}
      roll.metrics = summarize(stats, counts, r.group_size)
    t2 = time.perf_counter()
    self._last_rewards = (stats.get("reward", roll.rewards) if self.layout == "completion"
                          else None)
    for th in warm:
      th.join()  # they compile the programs used next; never compile them twice
    batch, inputs = self._update_inputs(roll, temp, k_prep)
    jax.block_until_ready(inputs)  # so time/score is the scoring, not its dispatch
    t3 = time.perf_counter()
    metrics: dict[str, float] = {}
    rows, mb = batch.tokens_BT.shape[0], r.minibatches  # global rows
    size = rows // mb
    for _ in range(r.epochs):
      for j in range(mb):
        sl = slice(j * size, (j + 1) * size)
        sub = self._minibatch(batch, inputs, sl)
        self.params, self.opt_state, m = self.rl_step(self.params, self.opt_state, sub,
                                                      temp)
        metrics = {k: float(v) for k, v in m.items()}
    t4 = time.perf_counter()
    metrics.update(roll.metrics)
    ntok = float(MH.allgather(roll.mask.sum()).sum())
    metrics.update({"time/rollout": t1 - t0, "time/reward": t2 - t1, "time/score": t3 - t2,
                    "time/update": t4 - t3, "time/step": t4 - t0,
                    "throughput/tokens_per_s": float(stats["length"].sum())
                    / max(t1 - t0, 1e-9), "rollout/trained_tokens": ntok})
    return metrics

  def _update_inputs(self, roll, temp, k_prep, score=None) -> tuple[SeqBatch, Any]:
    """The sharded batch of a step's rollouts and the objective's prepared inputs
    (old-policy and reference log-probabilities scored where needed, by `score`,
    default the jitted scoring program)."""
    r = self.exp.rl
    score = score or self.score
    inputs = S.objective_inputs(roll, r.group_size)
    batch = D.shard_batch(SeqBatch(roll.tokens, roll.positions, inputs, roll.sampler_logp),
                          self.mesh)
    if jax.process_count() > 1:
      inputs = batch.inputs  # the global batch; `inputs` held this process's rows
    updates = r.epochs * r.minibatches
    if updates > 1 or self.objective.needs_key:
      old, _ = score(self.params, batch, temp)
      inputs = inputs.replace(old_logp_BT=old if updates > 1 else None, logp_BT=old)
    if self.ref_params is not None:
      inputs = inputs.replace(ref_logp_BT=score(self.ref_params, batch, temp)[0])
    inputs = self._prepare(inputs, k_prep if self.objective.needs_key else None)
    return batch, inputs

  def _minibatch(self, batch: SeqBatch, inputs, sl: slice) -> SeqBatch:
    """Rows `sl` of the batch with the prepared inputs, sharded for the update."""
    sub = jax.tree.map(lambda x: x[sl] if getattr(x, "ndim", 0) else x,
                       SeqBatch(batch.tokens_BT, batch.positions_BT, inputs,
                                batch.sampler_logp_BT))
    return D.shard_batch(sub, self.mesh)

  def evaluate(self) -> dict[str, float]:
    """Held-out evaluation with the current params (see `evaluation.loop`)."""
    e, r = self.exp.eval, self.exp.rl
    return evaluate(self.params, self.cfg, self.eval_ex[:e.num_prompts], self.codec,
                    self.runner, key=self.eval_key,
                    max_new_tokens=e.max_new_tokens or r.max_new_tokens,
                    samples=e.samples, temperature=e.temperature,
                    compiler_options=self.compiler_options)

  def _check_health(self, step: int, m: dict[str, float]) -> None:
    """Loud warnings for the field's silent failures (the step itself already refused
    a non-finite update inside jit)."""
    if self._phase(step - 1) == "sft":
      self.health.check(step, loss=m["sft/loss"], grad_norm=m["sft/grad_norm"])
      return
    fails = sum(int(m.get(f"reward/{k}", 0)) for k in ("timeout", "exception",
                                                         "unparsable_gold"))
    scored = self._last_rewards is not None  # the tsallis layout runs no verifier
    self.health.check(step, rewards=self._last_rewards,
                      truncated=m.get("rollout/truncated_frac"), loss=m["loss/total"],
                      grad_norm=m["loss/grad_norm"], reward_failures=fails if scored else None)

  # ------------------------------------------------------------------ the run
  def run(self) -> dict[str, float]:
    """Train from the latest checkpoint (or scratch) to the end; returns last metrics."""
    exp = self.exp
    start = self.resume()
    total = exp.total_steps
    if start >= total:
      log.warning("the run in %s already finished at step %d; nothing to train",
                  self.workdir, start)
      return {}
    last: dict[str, float] = {}
    sft_steps, every = exp.sft.steps, exp.eval.every
    try:
      if start == 0 and sft_steps == 0:
        self.writer.write(0, self.evaluate())
      for step in range(start, total):
        m = self.sft(step) if self._phase(step) == "sft" else self.rl(step)
        self._check_health(step + 1, m)
        done = step + 1
        if done % exp.run.log_every == 0 or done == total:
          self.writer.write(done, m)
        if done == sft_steps:
          self._init_opt(done)  # phase change: fresh RL optimizer (and reference copy)
        if done >= sft_steps and (done - sft_steps) % every == 0 and done < total:
          self.writer.write(done, self.evaluate())
        if done % exp.run.checkpoint_every == 0 or done == sft_steps:
          self.save(done)  # after the metrics of `done`, so a resume never repeats them
        last = m
      final = self.evaluate()
      self.writer.write(total, final)
      last.update(final)
      self.save(total)
    finally:
      self.ckpt.wait()
      self.ckpt.close()
      self.runner.close()
      if exp.run.plots:
        self.writer.plot()
      self.writer.close()
    return last


def train(exp: Experiment, workdir: str, config_text: str = "") -> dict[str, float]:
  """Run (or resume) the experiment in `workdir`; returns the final metrics."""
  return Trainer(exp, workdir, config_text).run()
