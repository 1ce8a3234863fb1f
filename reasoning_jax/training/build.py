"""Building a run: everything a training run holds fixed, made once from an `Experiment`.

`build_run` does the start-up in order (multi-host initialize before any device is
touched, then the task, codec, model, mesh, optimizers, jitted programs, checkpoint
manager, metrics writer and reward runner) and returns a `RunParts` with the initial
params placed on the mesh. The loop (`training.loop.Trainer`) holds the parts and the
state that advances: params, optimizer state, data iterators.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from reasoning_jax import model as rjm
from reasoning_jax.model import lora as L
from reasoning_jax import sampling
from reasoning_jax import sharding as rjs
from reasoning_jax.objectives import Objective
from reasoning_jax.rewards import RewardRunner
from reasoning_jax.training import multihost as mh
from reasoning_jax.training import setup as S
from reasoning_jax.training.checkpoint import CheckpointManager
from reasoning_jax.training.codec import Codec
from reasoning_jax.training.compile_cache import enable_compilation_cache
from reasoning_jax.training.compile_mode import compiler_options
from reasoning_jax.training.config import Experiment
from reasoning_jax.training.health import HealthConfig, HealthMonitor
from reasoning_jax.training.lock import RunLock
from reasoning_jax.training.paths import run_path
from reasoning_jax.training.lora import lora_memory, lora_run
from reasoning_jax.training.memory import (DoesNotFit, check_fits, device_memory,
                                           memory_estimate)
from reasoning_jax.training.metrics import MetricsWriter
from reasoning_jax.training.steps import jit_steps, make_optimizer
from reasoning_jax.training.teacher import load_teacher
from reasoning_jax.training.validate import validate_experiment

log = logging.getLogger("reasoning_jax")


@dataclasses.dataclass(frozen=True)
class RunData:
  """The run's examples: SFT warm-up corpus (and its arrays), RL prompts, held-out
  prompts, and the end-of-rationale marker's token ids."""
  warmup: list
  train: list
  eval: list
  marker_ids: list[int]
  sft_arrays: dict[str, np.ndarray] | None


@dataclasses.dataclass(frozen=True)
class Programs:
  """The run's jitted programs: SFT update, RL update, scoring (log-probs of a batch)
  and the objective's preparation of its inputs (advantages, baselines, resampling)."""
  sft_step: Any
  rl_step: Any
  score: Any
  prepare: Any


@dataclasses.dataclass
class RunParts:
  """What a training run holds fixed (see `build_run`). `runner` may be replaced
  before the run starts (tests score with a stand-in)."""
  exp: Experiment
  workdir: str
  task: Any
  codec: Codec
  cfg: rjm.ModelConfig
  mesh: Mesh
  param_shardings: Any  # the train layout (TRAIN_RULES)
  compiler_options: dict | None
  objective: Objective
  ocfg: Any
  layout: str  # "completion" or "tsallis" (`training.rollout`)
  data: RunData
  sft_tx: optax.GradientTransformation
  rl_tx: optax.GradientTransformation
  programs: Programs
  rollout_sharding: rjs.RolloutSharding | None  # None on one device
  rollout_param_shardings: Any  # the rollout layout (ROLLOUT_RULES); None on one device
  ckpt: CheckpointManager
  writer: MetricsWriter
  health: HealthMonitor
  runner: Any  # a `rewards.RewardRunner` or anything with its score/close
  run_key: jax.Array
  eval_key: jax.Array
  lora: Any = None  # a `training.lora.LoRARun` when the RL phase trains adapters
  teacher: Any = None  # a `training.teacher.Teacher` for the distillation objectives
  lock: RunLock | None = None  # the run directory's writer lock (training runs)
  read_only: bool = False  # opened to evaluate / sample / export: nothing is written
  config_text: str = ""  # the resolved gin config, written as config.gin at the start


def build_data(exp: Experiment, task, codec: Codec) -> RunData:
  """The warm-up corpus (only when SFT runs), RL and held-out prompts."""
  t = exp.task
  warmup = task.warmup_corpus(t.num_warmup, seed=t.data_seed) if exp.sft.steps else []
  return RunData(
      warmup=warmup, train=task.rl_prompts(t.num_train, seed=t.data_seed + 1),
      eval=task.rl_prompts(t.num_eval, seed=t.data_seed + 2, split="heldout"),
      marker_ids=codec.encode(task.rationale_end),
      sft_arrays=(S.sft_arrays(warmup, codec, exp.sft.answer_noise, t.data_seed)
                  if warmup else None))


def build_optimizers(exp: Experiment):
  """(SFT optimizer, RL optimizer): SFT AdamW, RL `RLConfig.optimizer`, with the
  phases' own schedules."""
  s, r = exp.sft, exp.rl
  sft = make_optimizer(s.learning_rate, total_steps=s.steps, warmup_steps=s.warmup_steps,
                       schedule="cosine", weight_decay=s.weight_decay,
                       grad_clip=s.grad_clip)
  rl = make_optimizer(r.learning_rate, total_steps=r.steps, warmup_steps=r.warmup_steps,
                      b2=r.adam_b2, eps=r.adam_eps, weight_decay=r.weight_decay,
                      grad_clip=r.grad_clip, optimizer=r.optimizer, momentum=r.momentum)
  return sft, rl


def check_batches(exp: Experiment, mesh: Mesh) -> None:
  """Raise a clear ValueError unless the RL minibatches and SFT batches split evenly
  over the mesh's batch axes."""
  r = exp.rl
  rows = r.prompts_per_step * r.group_size
  rjs.check_batch(rows // r.minibatches, mesh, micro_batches=r.micro_batches,
                  group=r.group_size, name="RL minibatch")
  if exp.sft.steps:
    rjs.check_batch(exp.sft.batch_size, mesh, name="SFT batch")


def check_sampling(exp: Experiment, layout: str, marker_ids: list[int]) -> None:
  """Raise a ValueError naming the field for a thinking budget that cannot work, and
  warn for GARL/PAFT sampled at a temperature other than 1."""
  r = exp.rl
  if r.thinking_budget < 0:
    raise ValueError(f"RLConfig.thinking_budget must be >= 0, got {r.thinking_budget}")
  if r.thinking_budget and layout == "tsallis":
    raise ValueError(f"RLConfig.thinking_budget is for the GRPO family; {r.objective} "
                     "samples the rationale up to RLConfig.max_new_tokens and forces "
                     "the marker there: set thinking_budget = 0")
  if r.thinking_budget and r.thinking_budget + len(marker_ids) >= r.max_new_tokens:
    raise ValueError(f"RLConfig.thinking_budget = {r.thinking_budget} plus the "
                     f"{len(marker_ids)}-token marker leaves no answer tokens in "
                     f"RLConfig.max_new_tokens = {r.max_new_tokens}; lower the budget "
                     "or raise max_new_tokens")
  if layout == "tsallis" and r.temperature != 1.0:
    log.warning("RLConfig.temperature = %g with %s: its weights w_m are the model's "
                "answer likelihoods only at temperature 1; at %g the run optimises J_Q of "
                "the tempered policy (docs/objectives.md, 'Sampling temperature')",
                r.temperature, r.objective, r.temperature)


def build_programs(exp: Experiment, cfg: rjm.ModelConfig, params, p_sh, mesh: Mesh,
                   txs, objective: Objective, ocfg, options, lora=None) -> Programs:
  """The jitted SFT and RL updates (state in and out in the train layout), the
  scoring program and the objective's preparation program. With `lora` (a
  `training.lora.LoRARun`) the RL update's state is the adapters."""
  r, (sft_tx, rl_tx) = exp.rl, txs
  rl_params, rl_sh = params, p_sh
  if lora is not None:
    rl_params, rl_sh = L.abstract_adapters(cfg, lora.lcfg), lora.shardings
  sft_step, _, _ = jit_steps(
      cfg, sft_tx, chunk=r.logprob_chunk, compiler_options=options,
      state_shardings=rjs.state_shardings(sft_tx, params, p_sh, mesh))
  # Completion-layout rows are [prompt | max_new_tokens sampled columns]: every loss
  # mask lies in those columns, so no logits are formed over the prompt.
  tail = r.max_new_tokens if objective.name not in S.TSALLIS_LAYOUT and not r.tools else 0
  _, rl_step, score = jit_steps(
      cfg, rl_tx, objective, ocfg, r.micro_batches, r.temperature, chunk=r.logprob_chunk,
      compiler_options=options, combine=lora and lora.combine, scored_tail=tail,
      state_shardings=rjs.state_shardings(rl_tx, rl_params, rl_sh, mesh))
  # One program for the advantage/baseline preparation: run eagerly, each of its ops
  # would compile a small program of its own.
  prepare = jax.jit(lambda inputs, k: objective.prepare(inputs, ocfg, k),
                    compiler_options=options)
  return Programs(sft_step, rl_step, score, prepare)


@dataclasses.dataclass(frozen=True)
class Longest:
  """The run's longest RL prompt and gold answer (+ EOS) in tokens, and the example
  with the longest prompt over the RL and held-out prompts (for error messages)."""
  prompt: int
  answer: int
  any_prompt: int
  example: Any


def longest(codec: Codec, data: RunData, layout: str) -> Longest:
  """Token lengths of the run's prompts and (tsallis layout) gold answers."""
  lens = [len(codec.prompt_ids(e.prompt)) for e in data.train]
  held = [len(codec.prompt_ids(e.prompt)) for e in data.eval]
  every = lens + held
  i = int(np.argmax(every))
  answer = (max(len(codec.encode(e.answer)) for e in data.train) + 1
            if layout == "tsallis" else 0)
  return Longest(max(lens), answer, every[i], (data.train + data.eval)[i])


def check_lengths(exp: Experiment, cfg, size: Longest) -> None:
  """Raise a ValueError naming the example when the longest prompt plus the generation
  budget exceeds the model's `max_seq_len`, before any work (the sampler would refuse
  it mid-run, at whatever step drew it, and again at every resume)."""
  r, e = exp.rl, exp.eval
  new = max(r.max_new_tokens, e.max_new_tokens or 0) + size.answer
  if size.any_prompt + new <= cfg.max_seq_len:
    return
  ex = size.example
  meta = dict(getattr(ex, "metadata", {}) or {})
  where = ", ".join(f"{k} {meta[k]!r}" for k in ("task", "split", "id") if meta.get(k))
  raise ValueError(
      f"a prompt ({where or repr(ex.prompt[:60])}) has {size.any_prompt} tokens; with "
      f"{new} generated tokens (RLConfig/EvalConfig.max_new_tokens"
      f"{' + the gold answer' if size.answer else ''}) it needs "
      f"{size.any_prompt + new} positions but the model's max_seq_len is "
      f"{cfg.max_seq_len}; drop or shorten the example, lower max_new_tokens, or raise "
      "max_seq_len (ModelSpec.overrides) if the model supports it")


def _estimate(exp: Experiment, cfg, mesh: Mesh, tx, size: Longest, reference: bool,
              lora=None, **change):
  """The run's per-device memory estimate (`training.memory`) at its longest RL
  sequences; `change` replaces `remat` / `micro_batches` to try other settings."""
  r = exp.rl
  rows = r.prompts_per_step * r.group_size
  seq = sampling.bucket(size.prompt) + r.max_new_tokens + sampling.bucket(size.answer)
  est = memory_estimate(
      cfg, mesh, tx, rows=rows // r.minibatches, seq_len=seq,
      micro_batches=change.get("micro_batches", r.micro_batches), chunk=r.logprob_chunk,
      rollout_rows=rows, remat=change.get("remat"),
      cache_len=sampling.bucket(size.prompt) + sampling.bucket(r.max_new_tokens))
  # One device samples with the train params themselves (no rollout-layout copy).
  roll = est.rollout_params if mesh.devices.size > 1 else 0
  est = dataclasses.replace(est, reference=est.params if reference else 0,
                            rollout_params=roll)
  if lora is not None:  # adapters as the train state; the base is the reference
    est = lora_memory(est, lora, tx, change.get("micro_batches", r.micro_batches))
  return est


def _alternatives(exp: Experiment, cfg, estimate) -> list:
  """(gin setting, estimate) of more micro-batches, then remat "layer" with them."""
  r = exp.rl
  rows = r.prompts_per_step * r.group_size // r.minibatches
  micro = [m for m in (2, 4, 8, 16, 32) if m > r.micro_batches and rows % m == 0]
  out = [(f"RLConfig.micro_batches = {m}", estimate(micro_batches=m)) for m in micro]
  if cfg.remat != "layer":
    for m in [r.micro_batches] + micro:
      out.append((f'ModelSpec.remat = "layer" and RLConfig.micro_batches = {m}',
                  estimate(remat="layer", micro_batches=m)))
  return out


def check_memory(exp: Experiment, cfg, mesh: Mesh, tx, size: Longest,
                 reference: bool, lora=None) -> None:
  """Log the per-device memory estimate and, unless `RunConfig.memory_check` is "off",
  compare its peak with the device's memory (`RunConfig.memory_limit_gib`, default 90%
  of what the device reports): "error" raises `DoesNotFit` naming a setting that fits,
  "warn" logs it. A run that cannot fit stops here, before any compile or step."""
  run = exp.run
  estimate = functools.partial(_estimate, exp, cfg, mesh, tx, size, reference, lora)
  est = estimate()
  log.info("per-device memory estimate:\n%s", est.format())
  if run.memory_check == "off":
    return
  dev = mesh.devices.flat[0]
  limit = (int(run.memory_limit_gib * 2**30) if run.memory_limit_gib else
           device_memory(dev, len(jax.local_devices())))
  if limit is None:
    return
  limit = limit if run.memory_limit_gib else int(0.9 * limit)
  what = ("RunConfig.memory_limit_gib" if run.memory_limit_gib
          else f"90% of a {dev.platform} device's memory")
  try:
    check_fits(est, limit, what=what, alternatives=_alternatives(exp, cfg, estimate))
  except DoesNotFit as e:
    if run.memory_check == "error":
      raise
    log.warning("%s", e)


def _start(exp: Experiment, workdir: str):
  """Process start-up: multi-host initialize (a no-op unless this is a pod worker or a
  `reasoning-jax launch` child; before anything touches a device) and the compilation
  cache. Nothing is written to the run directory (local or `gs://`,
  `checkpoint.check_workdir`) until every check has passed (`_claim`)."""
  from reasoning_jax.training.checkpoint import check_workdir
  path = check_workdir(workdir)  # a bad URL fails before any device is touched
  mh.maybe_initialize(exp.run.distributed)
  enable_compilation_cache(exp.run.compilation_cache)
  return path


def _lock(path) -> RunLock | None:
  """Take the run directory's writer lock (`training.lock`; the primary process
  alone), creating the directory if needed. Nothing else is written here: the run
  writes its config.gin once it has really started (`write_config`)."""
  if not mh.is_primary():
    return None
  path.mkdir(parents=True, exist_ok=True)
  return RunLock(path).acquire(record=False)


def write_config(parts: "RunParts") -> None:
  """Record the run's config.gin atomically (a temporary file renamed over it) and the
  lock holder's pid and host; called by the primary process when a training run has
  passed every check and restored its state."""
  if parts.read_only or parts.lock is None:
    return
  path = run_path(parts.workdir)
  tmp = path / "config.gin.tmp"
  tmp.write_text(parts.config_text)
  tmp.replace(path / "config.gin")
  parts.lock.write_record()


def _model_on_mesh(exp: Experiment, codec: Codec, key: jax.Array):
  """(cfg, params placed under TRAIN_RULES, their shardings, mesh, compiler options)."""
  cfg, params = S.build_model(exp, codec, key)
  mesh = rjs.build_mesh(exp.run.mesh)
  if jax.process_count() > 1:
    mh.check_mesh_order(mesh)
  options = compiler_options(exp.run.compile_mode,
                             sum(x.size for x in jax.tree.leaves(params)),
                             mesh.devices.flat[0].platform)
  p_sh = rjm.param_shardings(cfg, mesh, rjs.TRAIN_RULES)
  return cfg, jax.device_put(params, p_sh), p_sh, mesh, options


def _rollout_layout(cfg: rjm.ModelConfig, mesh: Mesh) -> dict[str, Any]:
  """Where rollouts run on a mesh of several devices: rows over the batch axes and
  params under ROLLOUT_RULES (heads over tensor, weights whole along the model
  dimension, so decode never all-gathers a weight per token)."""
  if mesh.devices.size == 1:
    return {"rollout_sharding": None, "rollout_param_shardings": None}
  return {"rollout_sharding": rjs.RolloutSharding(mesh),
          "rollout_param_shardings": rjm.param_shardings(cfg, mesh, rjs.ROLLOUT_RULES)}


def build_run(exp: Experiment, workdir: str, config_text: str = "", *,
              read_only: bool = False) -> tuple[RunParts, Any]:
  """Build a run's fixed parts and its initial params (placed on the mesh).

  Every check runs before the run directory is touched; then a training run claims it
  (lock, config.gin). `read_only` opens an existing run to evaluate, sample or export
  it: nothing in the directory is written (it may be read-only) and no lock is taken.
  """
  validate_experiment(exp)  # every setting, before any file, device or compile
  path = _start(exp, workdir)
  run = exp.run
  init_key, run_key, eval_key = jax.random.split(jax.random.key(run.seed), 3)
  task = S.build_task(exp)
  codec = S.build_codec(exp, task)
  cfg, params, p_sh, mesh, options = _model_on_mesh(exp, codec, init_key)
  objective, ocfg, layout = S.build_objective(exp)
  data = build_data(exp, task, codec)
  check_sampling(exp, layout, data.marker_ids)
  txs = build_optimizers(exp)
  check_batches(exp, mesh)
  roll = _rollout_layout(cfg, mesh)
  lora = lora_run(exp.lora, cfg, mesh, roll["rollout_param_shardings"])
  programs = build_programs(exp, cfg, params, p_sh, mesh, txs, objective, ocfg, options,
                            lora)
  size = longest(codec, data, layout)
  check_lengths(exp, cfg, size)
  check_memory(exp, cfg, mesh, txs[1], size,
               S.uses_reference(exp, ocfg) and exp.rl.steps > 0, lora)
  teacher = load_teacher(exp, cfg, mesh, options)
  lock = None if read_only else _lock(path)
  parts = RunParts(
      exp=exp, workdir=workdir, task=task, codec=codec, cfg=cfg, mesh=mesh,
      param_shardings=p_sh, compiler_options=options, objective=objective, ocfg=ocfg,
      layout=layout, data=data, sft_tx=txs[0], rl_tx=txs[1], programs=programs,
      **roll, lora=lora, teacher=teacher, lock=lock, read_only=read_only,
      config_text=config_text,
      ckpt=CheckpointManager(workdir, max_to_keep=run.keep_checkpoints,
                             read_only=read_only),
      writer=MetricsWriter(workdir, is_primary=False if read_only else None,
                           progress=None if run.progress else False,
                           total_steps=exp.total_steps),
      health=HealthMonitor(HealthConfig(zero_reward_patience=run.zero_reward_patience,
                                        truncation_threshold=run.truncation_warn)),
      runner=RewardRunner(num_workers=run.reward_workers, timeout_s=run.reward_timeout),
      run_key=run_key, eval_key=eval_key)
  return parts, params
