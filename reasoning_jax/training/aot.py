"""Compiling every program of an experiment for a TPU topology, without the TPU.

`compile_experiment` builds the run's programs exactly as training does (the same
`build_programs`, shardings, remat and micro-batches), over abstract params (no
weights are loaded or made) on a mesh of deviceless TPU devices, lowers and compiles
each for the largest shapes the run will see, and reports per program: per-device HBM
from XLA's `memory_analysis()` (arguments, outputs, temporaries, generated code, less
donated buffers) against the chip's, the model FLOPs and minimum HBM bytes per device,
and the roofline time they imply on the chip. `reasoning-jax compile` prints it and
fails when a program does not fit.

FLOPs are counted from the model (2 per weight per token, attention's two products,
x3 for a backward pass, +1 forward under remat): XLA's `cost_analysis()` counts a
while loop's body once, and the layers run in a scan, so it under-counts by the
number of layers.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from reasoning_jax import model as rjm
from reasoning_jax import sampling
from reasoning_jax import sharding as rjs
from reasoning_jax.training import build
from reasoning_jax.training import setup as S
from reasoning_jax.training.chips import Chip, topology_devices
from reasoning_jax.training.config import Experiment
from reasoning_jax.training.memory import DoesNotFit  # noqa: F401  (re-exported)
from reasoning_jax.training.steps import SeqBatch
from reasoning_jax.training.validate import validate_experiment


log = logging.getLogger("reasoning_jax")


@dataclasses.dataclass(frozen=True)
class ProgramReport:
  """One compiled program's per-device figures (bytes, FLOPs, seconds)."""
  name: str
  arguments: int
  outputs: int
  temporaries: int
  code: int
  aliased: int
  flops: float
  min_bytes: float
  attention: str  # "pallas" where the program holds a Mosaic kernel, else "xla"

  @property
  def peak(self) -> int:
    """Bytes live at once: arguments + outputs (less the donated ones) + temporaries
    + generated code."""
    return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

  def roofline_s(self, chip: Chip) -> float:
    """The larger of compute time at peak FLOP/s and HBM time at full bandwidth."""
    return max(self.flops / chip.bf16_flops, self.min_bytes / chip.hbm_bandwidth)


def _abstract(tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      tree, shardings)


def _like(x, sharding) -> jax.ShapeDtypeStruct:
  x = jnp.asarray(x) if not hasattr(x, "dtype") else x
  return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def model_config(exp: Experiment, codec=None) -> rjm.ModelConfig:
  """The run's model config without loading or making weights: the checkpoint's own
  config where the checkpoint is on this machine, else `ModelSpec.preset` (which a
  pod experiment sets to its checkpoint's architecture), with `ModelSpec.overrides`."""
  m = exp.model
  path = m.checkpoint
  if path == "smollm2":
    from reasoning_jax.model.gguf_checkpoint import smollm2_gguf_path
    path = smollm2_gguf_path()
  if path and os.path.exists(path):
    if path.endswith(".gguf"):
      import gguf
      from reasoning_jax.model.gguf_checkpoint import gguf_config
      cfg = gguf_config(gguf.GGUFReader(path), dtype=m.dtype)
    else:
      from reasoning_jax.model.hf_checkpoint import read_hf_config
      from reasoning_jax.model.hf_config import config_from_hf
      cfg = config_from_hf(read_hf_config(path), dtype=m.dtype)
  else:
    if path:
      log.info("checkpoint %s is not on this machine: compiling the architecture of "
               "ModelSpec.preset = %r", path, m.preset)
    over = dict(m.overrides)
    if codec is not None:
      over.setdefault("vocab_size", codec.vocab_size)
    cfg = rjm.preset(m.preset, dtype=m.dtype, **over)
  return cfg.replace(param_dtype=m.param_dtype or None, remat=m.remat,
                     attention_backend=m.attention_backend)


def model_flops(cfg: rjm.ModelConfig, rows: int, seq: int, *, train: bool) -> float:
  """Matmul FLOPs of `rows` sequences of `seq` tokens (causal attention: half the
  score matrix), x3 with a backward pass and one more forward under remat."""
  dense = 2.0 * cfg.num_params() * rows * seq
  attn = 2.0 * 2 * rows * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq * seq / 2
  passes = (3 + (cfg.remat != "none")) if train else 1
  return (dense + attn) * passes


def _compile(mesh, jitted, *args, **kw):
  """`jitted` lowered and compiled for `args` under `jax.set_mesh(mesh)` (so kernels
  that run per shard, `kernels.attention`, see the mesh). Only the lowering runs in
  the mesh context: an eager op there would try to run on the deviceless TPU."""
  with jax.set_mesh(mesh):
    return jitted.lower(*args, **kw).compile()


def _report(name: str, compiled, flops: float, min_bytes: float) -> ProgramReport:
  m = compiled.memory_analysis()
  kernel = "pallas" if "tpu_custom_call" in compiled.as_text() else "xla"
  return ProgramReport(name, m.argument_size_in_bytes, m.output_size_in_bytes,
                       m.temp_size_in_bytes, m.generated_code_size_in_bytes,
                       m.alias_size_in_bytes, flops, min_bytes, kernel)


@dataclasses.dataclass(frozen=True)
class _Run:
  """What the programs are compiled from."""
  exp: Experiment
  cfg: rjm.ModelConfig
  mesh: Any
  params: Any      # abstract, train layout
  programs: build.Programs
  txs: tuple
  objective: Any
  ocfg: Any
  layout: str
  prompt_len: int
  answer_len: int
  opt_states: tuple  # abstract (SFT, RL) optimizer states, train layout


def _lengths(exp: Experiment, layout: str) -> tuple[int, int, Any]:
  """(longest prompt, longest gold answer + EOS (tsallis layout), codec or None).

  From `CompileSpec.prompt_tokens` / `answer_tokens` where set (compiling where the
  task's data or tokenizer is not at hand), else measured on the task's RL prompts.
  """
  c = exp.compile
  if c.prompt_tokens:
    if layout == "tsallis" and not c.answer_tokens:
      raise ValueError("CompileSpec.answer_tokens must be set with prompt_tokens for "
                       f"objective {exp.rl.objective!r} (its gold answer is "
                       "teacher-forced after each rationale)")
    return c.prompt_tokens, (c.answer_tokens if layout == "tsallis" else 0), None
  task = S.build_task(exp)
  codec = S.build_codec(exp, task)
  t = exp.task
  train = task.rl_prompts(t.num_train, seed=t.data_seed + 1)
  prompt = max(len(codec.prompt_ids(e.prompt)) for e in train)
  answer = (max(len(codec.encode(e.answer)) for e in train) + 1
            if layout == "tsallis" else 0)
  return prompt, answer, codec


def _setup(exp: Experiment, devices) -> _Run:
  objective, ocfg, layout = S.build_objective(exp)
  prompt_len, answer_len, codec = _lengths(exp, layout)
  cfg = model_config(exp, codec)
  mesh = rjs.build_mesh(exp.run.mesh, devices=devices)
  p_sh = rjm.param_shardings(cfg, mesh, rjs.TRAIN_RULES)
  params = _abstract(rjm.abstract_params(cfg), p_sh)
  txs = build.build_optimizers(exp)
  build.check_batches(exp, mesh)
  programs = build.build_programs(exp, cfg, params, p_sh, mesh, txs, objective, ocfg,
                                  None)
  # Outside any mesh context: optax makes some of its state eagerly.
  opt_states = tuple(_opt_state(params, tx, mesh) for tx in txs)
  return _Run(exp, cfg, mesh, params, programs, txs, objective, ocfg, layout,
              prompt_len, answer_len, opt_states)


def _opt_state(params, tx, mesh) -> Any:
  p_sh = jax.tree.map(lambda a: a.sharding, params)
  o_sh = rjs.opt_state_shardings(tx, params, p_sh, mesh)
  return _abstract(jax.eval_shape(tx.init, params), o_sh)


def _param_bytes(params, mesh) -> float:
  """Bytes of the params held by one device."""
  total = 0.0
  for a in jax.tree.leaves(params):
    shard = a.sharding.shard_shape(a.shape)
    total += math.prod(shard) * a.dtype.itemsize
  return total


def compile_rollout(run: _Run) -> ProgramReport:
  """The sampler's program (prefill + decode loop) for a step's prompts, params in
  the rollout layout, rows over the batch axes."""
  r = run.exp.rl
  prompts = [[1] * run.prompt_len] * r.prompts_per_step
  roll = rjs.RolloutSharding(run.mesh) if run.mesh.devices.size > 1 else None
  call = sampling.plan_call(run.cfg, prompts, key=jax.random.key(0),
                            max_new_tokens=r.max_new_tokens, num_samples=r.group_size,
                            sharding=roll, max_len=1 << 30)
  rep = NamedSharding(run.mesh, PartitionSpec())
  params = _abstract(rjm.abstract_params(run.cfg),
                     rjm.param_shardings(run.cfg, run.mesh, rjs.ROLLOUT_RULES))
  arrays = [_like(a, rjs.batch_sharding(run.mesh, rjs.ROLLOUT_RULES, a.shape, "prompts"))
            for a in (call.tokens, call.positions, call.lengths, call.valid)]
  knobs = jax.tree.map(lambda x: _like(x, rep), call.knobs)
  compiled = _compile(run.mesh, sampling.loop.sample_program, params, *arrays, knobs,
                      **call.static, constrain=None if roll is None else roll.constrain)
  rows = call.tokens.shape[0] * r.group_size
  seq = call.tokens.shape[1] + call.static["new_bucket"]
  n_dev = run.mesh.devices.size
  flops = model_flops(run.cfg, rows, seq, train=False) / n_dev
  cache = (2 * run.cfg.n_layers * rows * seq * run.cfg.n_kv_heads * run.cfg.head_dim
           * jnp.dtype(run.cfg.dtype).itemsize / n_dev)
  # Each decode step reads the weights in the compute dtype and, at most, the cache.
  weights = _param_bytes(params, run.mesh) * (
      jnp.dtype(run.cfg.dtype).itemsize / jnp.dtype(run.cfg.weight_dtype).itemsize)
  min_bytes = call.static["new_bucket"] * (weights + cache)
  return _report("rollout", compiled, flops, min_bytes)


def _seq_len(run: _Run) -> int:
  r = run.exp.rl
  return (sampling.bucket(run.prompt_len) + r.max_new_tokens
          + (sampling.bucket(run.answer_len) if run.answer_len else 0))


def _batch(run: _Run, rows: int) -> SeqBatch:
  """An abstract update batch of `rows` rows, with the prepared inputs' shapes."""
  T = _seq_len(run)
  z = np.zeros((rows, T), np.float32)
  fake = dataclasses.make_dataclass("Fake", ["tokens", "mask", "rewards",
                                             "rationale_mask", "answer_mask"])(
      np.zeros((rows, T), np.int32), z, np.zeros(rows, np.float32), z, z)
  inputs = S.objective_inputs(fake, run.exp.rl.group_size)
  r = run.exp.rl
  if r.epochs * r.minibatches > 1 or run.objective.needs_key:
    inputs = inputs.replace(old_logp_BT=z if r.epochs * r.minibatches > 1 else None)
  if S.uses_reference(run.exp, run.ocfg):
    inputs = inputs.replace(ref_logp_BT=z)
  key = jax.random.key(0) if run.objective.needs_key else None
  inputs = jax.eval_shape(lambda i, k: run.objective.prepare(i, run.ocfg, k), inputs, key)
  batch = SeqBatch(np.zeros((rows, T), np.int32), np.zeros((rows, T), np.int32), inputs,
                   z)
  shardings = rjs.batch_sharding_tree(batch, run.mesh)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      batch, shardings)


def _temperature(run: _Run) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((), jnp.float32,
                              sharding=NamedSharding(run.mesh, PartitionSpec()))


def needs_score(run: _Run) -> bool:
  """Whether the run scores its rollouts before updating (a reference model, an
  old policy for several updates per batch, or an objective's own key)."""
  r = run.exp.rl
  return (S.uses_reference(run.exp, run.ocfg) or r.epochs * r.minibatches > 1
          or run.objective.needs_key)


def compile_score(run: _Run) -> ProgramReport:
  """The scoring pass (reference / old-policy log-probabilities) of a step's rows."""
  r = run.exp.rl
  rows = r.prompts_per_step * r.group_size
  compiled = _compile(run.mesh, run.programs.score, run.params, _batch(run, rows),
                      _temperature(run))
  flops = model_flops(run.cfg, rows, _seq_len(run), train=False) / run.mesh.devices.size
  return _report("score", compiled, flops, _param_bytes(run.params, run.mesh))


def compile_update(run: _Run) -> ProgramReport:
  """One optimizer update on a minibatch (its micro-batches accumulated)."""
  r = run.exp.rl
  sub = r.prompts_per_step * r.group_size // r.minibatches
  opt = run.opt_states[1]
  compiled = _compile(run.mesh, run.programs.rl_step, run.params, opt, _batch(run, sub),
                      _temperature(run))
  # An update reads the params and Adam's moments and writes all three.
  state = _param_bytes(run.params, run.mesh) + _param_bytes(opt, run.mesh)
  flops = model_flops(run.cfg, sub, _seq_len(run), train=True) / run.mesh.devices.size
  return _report("update", compiled, flops, 2 * state)


def compile_sft(run: _Run, seq: int) -> ProgramReport:
  """The SFT update on a batch of `seq`-token rows."""
  s = run.exp.sft
  sh = rjs.batch_sharding(run.mesh, rjs.TRAIN_RULES, (s.batch_size, seq))
  a = lambda dt: jax.ShapeDtypeStruct((s.batch_size, seq), dt, sharding=sh)  # noqa: E731
  opt = run.opt_states[0]
  compiled = _compile(run.mesh, run.programs.sft_step, run.params, opt, a(jnp.int32),
                      a(jnp.int32), a(jnp.float32))
  state = _param_bytes(run.params, run.mesh) + _param_bytes(opt, run.mesh)
  flops = model_flops(run.cfg, s.batch_size, seq, train=True) / run.mesh.devices.size
  return _report("sft", compiled, flops, 2 * state)


def compile_experiment(exp: Experiment, topology: str) -> tuple[Chip, list[ProgramReport]]:
  """Compile every program of `exp` for `topology` (e.g. "v5e:2x4"), deviceless.

  Raises `DoesNotFit` naming the program when one fails to compile or partition, and
  `ConfigError` (before anything is built) for invalid settings.
  """
  validate_experiment(exp)
  chip, devices = topology_devices(topology)
  run = _setup(exp, devices)
  steps = [("rollout", lambda: compile_rollout(run))]
  if needs_score(run):
    steps.append(("score", lambda: compile_score(run)))
  steps.append(("update", lambda: compile_update(run)))
  if exp.sft.steps:
    steps.insert(0, ("sft", lambda: compile_sft(run, _seq_len(run))))
  reports = []
  for name, fn in steps:
    try:
      reports.append(fn())
    except Exception as e:  # noqa: BLE001 -- any compile failure is named
      first = str(e).splitlines()[0][:300] if str(e) else ""
      raise DoesNotFit(f"the {name} program does not compile for {topology} on mesh "
                       f"{dict(run.mesh.shape)}: {type(e).__name__}: {first}") from e
  return chip, reports


def _size(n: float) -> str:
  return f"{n / 2**30:.2f}G" if n >= 2**30 else f"{n / 2**20:.1f}M"


def format_reports(chip: Chip, topology: str, reports: list[ProgramReport]) -> str:
  """A table: per program, per-device HBM against the chip's, FLOPs, roofline."""
  lines = [f"{topology} ({chip.name}, {_size(chip.hbm_bytes)} HBM, "
           f"{chip.bf16_flops / 1e12:.0f} TFLOP/s bf16, "
           f"{chip.hbm_bandwidth / 1e9:.0f} GB/s) per device:",
           f"{'program':<8} {'args':>8} {'out':>8} {'temp':>8} {'code':>7} {'peak':>8} "
           f"{'headroom':>8} {'TFLOP':>8} {'roofline':>9} {'attention':>9}"]
  for r in reports:
    lines.append(
        f"{r.name:<8} {_size(r.arguments):>8} {_size(r.outputs):>8} "
        f"{_size(r.temporaries):>8} {_size(r.code):>7} {_size(r.peak):>8} "
        f"{_size(chip.hbm_bytes - r.peak):>8} {r.flops / 1e12:8.3f} "
        f"{r.roofline_s(chip) * 1e3:7.1f}ms {r.attention:>9}")
  return "\n".join(lines)


def check_fits(chip: Chip, topology: str, reports: list[ProgramReport],
               usable: float = 1.0) -> None:
  """Raise `DoesNotFit` with a one-line message for the first program over `usable`
  (a fraction) of the chip's HBM."""
  limit = usable * chip.hbm_bytes
  for r in reports:
    if r.peak > limit:
      gib = 2.0 ** 30
      raise DoesNotFit(f"the {r.name} program needs {r.peak / gib:.2f} GiB per device on "
                       f"{topology} but {usable:.0%} of a {chip.name}'s "
                       f"{chip.hbm_bytes / gib:.0f} GiB is {limit / gib:.2f} GiB (short by "
                       f"{(r.peak - limit) / gib:.2f} GiB); shard more "
                       "(RunConfig.mesh fsdp/tensor), or use remat, micro-batches, "
                       "smaller batches or a larger topology")
