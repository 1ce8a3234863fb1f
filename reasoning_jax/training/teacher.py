"""The teacher of on-policy distillation (`RLConfig.teacher`, `objectives/distill.py`).

A frozen model that scores each RL step's rollouts with the run's own scoring function
(`steps.score`), like the reference policy: loaded once at start-up from a Hugging
Face directory, a GGUF file or a reasoning_jax run directory's latest checkpoint,
placed on the run's mesh in the train layout (TRAIN_RULES), never trained, never
checkpointed (a resumed run loads it again from its source). Its vocabulary must be
the student's: the objective compares the two models' log-probs of the same token ids.
"""
from __future__ import annotations

import dataclasses
import functools
import io
from typing import Any

import jax
import orbax.checkpoint as ocp
from gin import config_parser

from reasoning_jax import model as rjm
from reasoning_jax import sharding as rjs
from reasoning_jax.training import config as C
from reasoning_jax.training import setup as S
from reasoning_jax.training.paths import run_path
from reasoning_jax.training.steps import score


def uses_teacher(objective) -> bool:
  """Whether the objective reads a teacher's log-probs (the distillation family)."""
  return "teacher_logp_BT" in objective.needs


@dataclasses.dataclass(frozen=True)
class Teacher:
  """The loaded teacher: config, params (train layout) and its jitted scoring program,
  `score(params, batch, temperature) -> (log-probs, entropies)`."""
  source: str
  cfg: rjm.ModelConfig
  params: Any
  score: Any


class _Literal(config_parser.ParserDelegate):
  """Gin parsing without gin's registry: a run's config.gin is read for its values
  only, so loading a teacher never changes the gin configuration of this process."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return f"@{scoped_configurable_name}"

  def macro(self, macro_name):
    return f"%{macro_name}"


def run_bindings(text: str) -> dict[tuple[str, str], Any]:
  """{(section, field): value} of a run's config.gin (`rj.` prefixes dropped)."""
  parser = config_parser.ConfigParser(io.StringIO(text), _Literal())
  out = {}
  for st in parser:
    if isinstance(st, config_parser.BindingStatement):
      out[(st.selector.split(".")[-1], st.arg_name)] = st.value
  return out


def _section(cls, bindings, where: str):
  fields = {f.name for f in dataclasses.fields(cls)}
  got = {k: v for (s, k), v in bindings.items() if s == cls.__name__ and k in fields}
  try:
    return cls(**got)
  except (TypeError, ValueError) as e:
    raise ValueError(f"RLConfig.teacher: {where}: bad {cls.__name__}: {e}") from None


def _from_run(path, exp: C.Experiment):
  """(cfg, params) of a run directory's latest checkpoint, its model rebuilt from the
  run's config.gin (its ModelSpec and its TaskSpec's tokenizer)."""
  gin_file = path / "config.gin"
  if not gin_file.exists():
    raise FileNotFoundError(f"RLConfig.teacher {str(path)!r} has checkpoints/ but no "
                            "config.gin to rebuild its model from")
  b = run_bindings(gin_file.read_text())
  if b.get(("LoRASpec", "rank"), 0):
    raise ValueError(f"RLConfig.teacher {str(path)!r} trained LoRA adapters; its "
                     "checkpoints hold adapters, not a model: merge them first with "
                     f"`reasoning-jax convert --workdir {path} --out DIR` and set "
                     "RLConfig.teacher = DIR")
  texp = C.Experiment(model=_section(C.ModelSpec, b, str(gin_file)),
                      task=_section(C.TaskSpec, b, str(gin_file)), run=exp.run)
  codec = S.build_codec(texp, S.build_task(texp))
  m = texp.model
  if m.checkpoint:  # the run started from a checkpoint: it gives the config
    cfg, params = S.build_model(texp, codec, jax.random.key(0))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  else:  # a preset sized to the run's tokenizer, as `setup.build_model` makes it
    over = dict(m.overrides)
    over.setdefault("vocab_size", codec.vocab_size)
    cfg = rjm.preset(m.preset, dtype=m.dtype, param_dtype=m.param_dtype or None, **over)
    abstract = rjm.abstract_params(cfg)
  # Read onto one device; `load_teacher` then lays it out over the mesh.
  one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = {"params": jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), abstract)}
  mngr = ocp.CheckpointManager(path / "checkpoints", options=ocp.CheckpointManagerOptions(
      read_only=True, create=False), item_handlers={"state": ocp.PyTreeCheckpointHandler()})
  try:
    step = mngr.latest_step()
    if step is None:
      raise FileNotFoundError(f"RLConfig.teacher {str(path)!r}: no committed checkpoint "
                              "in checkpoints/; train it first")
    # Only the params: the run's optimizer state (and reference) are not read.
    try:
      state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
          partial_restore=True)))["state"]
    except ValueError as e:
      raise ValueError(f"RLConfig.teacher {str(path)!r}: checkpoint step {step} does not "
                       f"match the model its config.gin describes ({e})") from None
  finally:
    mngr.close()
  return cfg, state["params"]


def load_model(source: str, exp: C.Experiment):
  """(cfg, params) of `source`: a HF directory, a `.gguf` file ("smollm2": the packaged
  one) or a run directory (it has `checkpoints/`), in `ModelSpec.dtype`."""
  if source == "smollm2":
    from reasoning_jax.model.gguf_checkpoint import smollm2_gguf_path
    source = smollm2_gguf_path()
  path = run_path(source, what="RLConfig.teacher")
  if not path.exists():
    raise FileNotFoundError(f"RLConfig.teacher {source!r} does not exist; give a Hugging "
                            "Face directory, a .gguf file or a reasoning_jax run directory")
  if source.endswith(".gguf"):
    return rjm.load_gguf_checkpoint(source, dtype=exp.model.dtype)
  if (path / "checkpoints").is_dir():
    return _from_run(path, exp)
  return rjm.load_hf_checkpoint(source, dtype=exp.model.dtype)


def load_teacher(exp: C.Experiment, student: rjm.ModelConfig, mesh,
                 compiler_options=None) -> Teacher | None:
  """The run's teacher on `mesh` (None when `RLConfig.teacher` is empty).

  Raises:
    ValueError: the teacher's vocabulary differs from the student's (both named).
    FileNotFoundError: the source does not exist or holds no checkpoint.
  """
  source, r = exp.rl.teacher, exp.rl
  if not source:
    return None
  cfg, params = load_model(source, exp)
  if cfg.vocab_size != student.vocab_size:
    raise ValueError(
        f"RLConfig.teacher {source!r} has a vocabulary of {cfg.vocab_size} tokens but the "
        f"student (ModelSpec) has {student.vocab_size}; distillation compares the two "
        "models' log-probs of the same token ids, so the teacher must share the "
        "student's tokenizer")
  cfg = cfg.replace(remat="none", attention_backend=student.attention_backend)
  params = jax.device_put(params, rjm.param_shardings(cfg, mesh, rjs.TRAIN_RULES))
  program = jax.jit(functools.partial(score, cfg=cfg, default_temperature=r.temperature,
                                      chunk=r.logprob_chunk),
                    compiler_options=compiler_options)
  return Teacher(source, cfg, params, program)
