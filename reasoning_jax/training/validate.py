"""Checking a whole resolved `Experiment` before any work, file or compile.

`validate_experiment(exp)` checks every field of every section of
`training.config`: its type (from the dataclass annotation), its range or allowed
values, and the rules that tie fields together (minibatches that split the batch into
whole groups, an objective's smallest group, objective options that exist). It raises
one `ConfigError` listing every problem, one line each, in the form

    RLConfig.steps = 'three': expected an integer
    RLConfig.group_size = 1: grpo needs group_size >= 2 (...); raise RLConfig.group_size

with the gin name a user writes in an experiment file and the fix. `RULES` holds one
rule per field; a field without one is a test failure (tests/training/test_validate.py),
so a new setting cannot skip validation. What needs the data, tokenizer or devices
(the longest prompt, the memory estimate, the mesh against the device count) is
checked later, in `training.build`, still before any compile.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

from reasoning_jax.data.tasks import COLD_START_KINDS, DATA_TASKS, TASKS
from reasoning_jax.model.config import ATTENTION_BACKENDS, PRESETS, ModelConfig
from reasoning_jax.objectives import OBJECTIVES, reference_coefficients
from reasoning_jax.rewards.spec import parse_reward_spec
from reasoning_jax.training.chips import parse_topology
from reasoning_jax.training.compile_mode import COMPILE_MODES
from reasoning_jax.training.config import Experiment
from reasoning_jax.training.config_rules import (ANY, Rule, _hints, _pairs_problem, _rule,
                                                   _show, above, at_least, interval,
                                                   one_of, pairs, type_problem)
from reasoning_jax.training.episodes import TOOL_CHECKS
from reasoning_jax.training.setup import CHAT_TEMPLATE_MODES, TSALLIS_LAYOUT
from reasoning_jax.training.steps import OPTIMIZERS


class ConfigError(ValueError):
  """An experiment's settings are invalid; the message lists every problem, one a
  line, each naming the gin setting (`RLConfig.steps`) and the fix."""


# ---------------------------------------------------------------------- ModelSpec

# ModelConfig fields ModelSpec sets itself (an override would clash with them).
_MODEL_OWN = ("dtype", "param_dtype", "remat", "attention_backend")


def _model_overrides(v, exp: Experiment) -> str | None:
  names = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in _MODEL_OWN]
  bad = _pairs_problem(v)
  if bad:
    return bad
  owned = [k for k, _ in v if k in _MODEL_OWN]
  if owned:
    return f"{owned} are ModelSpec's own settings: set ModelSpec.{owned[0]} instead"
  bad = _pairs_problem(v, names)
  if bad:
    return bad
  hints = _hints(ModelConfig)
  for k, x in v:
    wrong = type_problem(x, hints[k])
    if wrong:
      return f"{k} = {_show(x)}: {wrong}"
    if hints[k] is int and x < 1:
      return f"{k} = {x}: must be >= 1"
  m = exp.model
  if m.checkpoint or m.preset not in PRESETS:
    return None  # a checkpoint brings its own shapes; a bad preset is reported alone
  try:
    over = dict(v)
    over.setdefault("vocab_size", 256)  # the tokenizer's size in the run
    PRESETS[m.preset]().replace(**over)
  except (ValueError, TypeError) as e:
    return f"gives an invalid model with ModelSpec.preset = {m.preset!r}: {e}"
  return None


MODEL_RULES = {
    "preset": one_of(sorted(PRESETS), " (a reasoning_jax.model preset)"),
    "checkpoint": ANY,  # a path, checked where it is opened (compile runs without it)
    "dtype": one_of(("float32", "bfloat16")),
    "param_dtype": one_of(("", "float32", "bfloat16"), " ('' means ModelSpec.dtype)"),
    "remat": one_of(("none", "layer", "dots")),
    "attention_backend": one_of(ATTENTION_BACKENDS),
    "overrides": _rule(_model_overrides),
}


# ----------------------------------------------------------------------- TaskSpec

def _task_kwargs(v, exp: Experiment) -> str | None:
  bad = _pairs_problem(v)
  if bad:
    return bad
  name = exp.task.name
  cls = TASKS.get(name) or DATA_TASKS.get(name)
  if name == "dataset":
    from reasoning_jax.data.tasks import DatasetTask
    cls = DatasetTask
  if cls is None:
    return None  # the unknown task is reported on TaskSpec.name
  if any(k == "cold_start" for k, _ in v):
    return "cold_start is TaskSpec.cold_start (and cold_start_depth/_depths)"
  params = inspect.signature(cls).parameters
  if any(p.kind is p.VAR_KEYWORD for p in params.values()):
    return None
  names = [n for n in params if n not in ("self", "cold_start")]
  bad = _pairs_problem(v, names)
  if bad:
    return f"{bad} (the arguments of TaskSpec.name = {name!r})"
  need = [n for n in names if params[n].default is inspect.Parameter.empty
          and params[n].kind is not params[n].VAR_POSITIONAL]
  missing = [n for n in need if n not in dict(v)]
  if missing:
    return f"TaskSpec.name = {name!r} needs {missing}, e.g. (('{missing[0]}', ...),)"
  return None


def _depths(v, exp: Experiment) -> str | None:
  bad = [d for d in v if isinstance(d, bool) or not isinstance(d, int) or d < 0]
  return f"every depth must be an integer >= 0, got {bad}" if bad else None


def _tokenizer(v, exp: Experiment) -> str | None:
  if not v:
    return "must be 'char', 'checkpoint' or a tokenizer path"
  if v == "checkpoint" and not exp.model.checkpoint:
    return "'checkpoint' needs ModelSpec.checkpoint; set it, or use 'char' or a path"
  return None


def _count(lo_when: Callable[[Experiment], int], why: str) -> Rule:
  """An integer >= lo_when(exp) (a count that must be non-zero when it is used)."""
  return _rule(lambda v, exp: None if v >= lo_when(exp) else
               f"must be >= {lo_when(exp)}{why}")


def _reward(v, exp: Experiment) -> str | None:
  if v and exp.rl.objective in TSALLIS_LAYOUT:
    return (f"has no effect with RLConfig.objective = {exp.rl.objective!r} (GARL/PAFT "
            "score no rollouts); unset it, or use "
            f"RLConfig.objective = '{exp.rl.objective}_binary'")
  if v and isinstance(exp.task.reward_kwargs, (tuple, list)):
    try:
      parse_reward_spec(v, exp.task.reward_kwargs, field="TaskSpec.reward")
    except (ValueError, TypeError) as e:
      return str(e)
  return None


def _reward_kwargs(v, exp: Experiment) -> str | None:
  if v and not exp.task.reward:
    return "is set but TaskSpec.reward is empty; name the reward these options are for"
  return _pairs_problem(v)


TASK_RULES = {
    "name": one_of(sorted(TASKS) + sorted(DATA_TASKS) + ["dataset"],
                   " (a reasoning_jax.data.tasks task)"),
    "kwargs": _rule(_task_kwargs),
    "cold_start": one_of(COLD_START_KINDS),
    "cold_start_depth": at_least(0),
    "cold_start_depths": _rule(_depths),
    "tokenizer": _rule(_tokenizer),
    "chat_template": one_of(CHAT_TEMPLATE_MODES),
    "system_prompt": ANY,
    "response_prefix": ANY,
    "chat_template_kwargs": pairs(),
    "num_warmup": _count(lambda e: 1 if e.sft.steps else 0,
                         " while SFTConfig.steps > 0 (the warm-up corpus)"),
    "num_train": at_least(1, " (the RL prompts)"),
    "num_eval": at_least(1, " (the held-out prompts)"),
    "data_seed": at_least(0),
    "reward": _rule(_reward),
    "reward_kwargs": _rule(_reward_kwargs),
}


SFT_RULES = {
    "steps": at_least(0, " (0 skips the warm start)"),
    "answer_noise": interval(0.0, 1.0, hi_open=True),
    "batch_size": at_least(1),
    "learning_rate": above(0.0),
    "warmup_steps": at_least(0),
    "weight_decay": at_least(0.0),
    "grad_clip": at_least(0.0, " (0 turns clipping off)"),
}


# ----------------------------------------------------------------------- RLConfig

# Objectives whose advantages need more than one rollout per group beyond what their
# config says (`adv_ddof` adds itself): leave-one-out baselines and GARL's coefficients.
_MIN_GROUP = {"rloo": 2, "garl_binary": 2}


def min_group_size(name: str, ocfg: Any) -> int:
  """The fewest rollouts per prompt objective `name` with config `ocfg` works with:
  group-normalised advantages need 1 + adv_ddof (a Bessel-corrected std needs two),
  leave-one-out baselines two (checked against each objective in the tests)."""
  need = _MIN_GROUP.get(name, 1)
  if hasattr(ocfg, "adv_ddof"):
    need = max(need, 1 + ocfg.adv_ddof)
  if getattr(ocfg, "estimator", None) == "rloo":
    need = max(need, 2)
  return need


def _objective(exp: Experiment):
  name = exp.rl.objective
  return OBJECTIVES.get(name) if isinstance(name, str) else None


def objective_config(exp: Experiment) -> tuple[Any, str | None]:
  """(the objective's config, None) or (None, the problem with the overrides)."""
  obj = _objective(exp)
  over = exp.rl.objective_overrides
  if obj is None or not isinstance(over, (tuple, list)):
    return None, None  # reported on their own fields
  fields = [f.name for f in dataclasses.fields(obj.config_cls)]
  bad = _pairs_problem(over, fields)
  if bad:
    return None, f"{bad} (the options of RLConfig.objective = {obj.name!r})"
  hints = _hints(obj.config_cls)
  for k, x in over:
    wrong = type_problem(x, hints[k])
    if wrong:
      return None, f"{k} = {_show(x)}: {wrong}"
  try:
    return obj.config(**dict(over)), None
  except (ValueError, TypeError) as e:
    return None, f"RLConfig.objective = {obj.name!r} rejects them: {e}"


def _objective_overrides(v, exp: Experiment) -> str | None:
  return objective_config(exp)[1]


def _group_size(v, exp: Experiment) -> str | None:
  if v < 1:
    return "must be >= 1 (rollouts per prompt)"
  ocfg, _ = objective_config(exp)
  obj = _objective(exp)
  if obj is None:
    return None
  ocfg = obj.config() if ocfg is None else ocfg  # bad overrides: judge by defaults
  need = min_group_size(exp.rl.objective, ocfg)
  if v < need:
    return (f"RLConfig.objective = {exp.rl.objective!r} needs group_size >= {need} (its "
            "advantages compare rollouts of one prompt); raise RLConfig.group_size")
  return None


def _ints(exp: Experiment, *names: str) -> list | None:
  """The RLConfig values `names` when each is a positive int (else None: the type or
  range problem is reported on the field itself)."""
  vals = [getattr(exp.rl, n) for n in names]
  if all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in vals):
    return vals
  return None


def _minibatches(v, exp: Experiment) -> str | None:
  if v < 1:
    return "must be >= 1 (optimizer updates per pass over a step's rollouts)"
  got = _ints(exp, "prompts_per_step")
  if got and got[0] % v:
    fits = [d for d in range(1, got[0] + 1) if got[0] % d == 0]
    return (f"must divide RLConfig.prompts_per_step = {got[0]} so that each minibatch "
            f"holds whole groups; use one of {fits}")
  return None


def _micro_batches(v, exp: Experiment) -> str | None:
  if v < 1:
    return "must be >= 1 (gradient-accumulation chunks per update)"
  got = _ints(exp, "prompts_per_step", "minibatches")
  if got and got[0] % got[1] == 0 and (got[0] // got[1]) % v:
    per = got[0] // got[1]
    fits = [d for d in range(1, per + 1) if per % d == 0]
    return (f"must divide the {per} prompts of a minibatch (RLConfig.prompts_per_step / "
            f"RLConfig.minibatches) so that each micro-batch holds whole groups; use one "
            f"of {fits}")
  return None


_YES_NO = ("auto", "yes", "no", "true", "false", True, False)


def _reference(v, exp: Experiment) -> str | None:
  if v not in _YES_NO:
    return "must be one of ['auto', 'yes', 'no'] (or True / False)"
  ocfg, _ = objective_config(exp)
  needed = reference_coefficients(ocfg) if ocfg is not None else {}
  if v in ("no", "false", False) and needed:
    return (f"RLConfig.objective = {exp.rl.objective!r} needs reference log-probs for "
            f"{needed}; "
            "set reference = 'auto' or those coefficients to 0 "
            "(RLConfig.objective_overrides)")
  return None


def _thinking_budget(v, exp: Experiment) -> str | None:
  if v < 0:
    return "must be >= 0 (0: no budget)"
  if v and exp.rl.objective in TSALLIS_LAYOUT:
    return (f"is for the GRPO family; RLConfig.objective = {exp.rl.objective!r} samples "
            "the rationale up to RLConfig.max_new_tokens and forces the marker there: "
            "set it to 0")
  got = _ints(exp, "max_new_tokens")
  if v and got and v >= got[0]:
    return (f"leaves no answer tokens in RLConfig.max_new_tokens = {got[0]}; lower the "
            "budget or raise max_new_tokens")
  return None


def _teacher(v, exp: Experiment) -> str | None:
  obj = _objective(exp)  # (the path itself is checked where it is opened)
  if obj is None or ("teacher_logp_BT" in obj.needs) == bool(v):
    return None
  if not v:
    return (f"RLConfig.objective = {exp.rl.objective!r} distils from a teacher: set it to "
            "a Hugging Face directory, a .gguf file or a reasoning_jax run directory")
  return (f"has no effect with RLConfig.objective = {exp.rl.objective!r}; only the "
          "distillation objectives score with a teacher: unset it")


RL_RULES = {
    "objective": one_of(sorted(OBJECTIVES), " (reasoning_jax.objectives.OBJECTIVES)"),
    "objective_overrides": _rule(_objective_overrides),
    "steps": at_least(0, " (0 skips RL)"),
    "prompts_per_step": at_least(1),
    "group_size": _rule(_group_size),
    "max_new_tokens": at_least(1, " (the generation budget per rollout)"),
    "temperature": above(0.0, " (the trainer's log-probs divide by it; greedy rollouts "
                         "have no policy gradient)"),
    "top_k": at_least(0, " (0 turns top-k off)"),
    "top_p": interval(0.0, 1.0, lo_open=True, why=" (1 turns nucleus sampling off)"),
    "learning_rate": above(0.0),
    "warmup_steps": at_least(0),
    "weight_decay": at_least(0.0),
    "grad_clip": at_least(0.0, " (0 turns clipping off)"),
    "adam_b2": interval(0.0, 1.0, hi_open=True),
    "adam_eps": above(0.0),
    "optimizer": one_of(OPTIMIZERS, " (the RL update rule; SFT always uses AdamW)"),
    "momentum": interval(0.0, 1.0, hi_open=True,
                         why=" (SGD's heavy-ball coefficient; 0: plain SGD)"),
    "epochs": at_least(1, " (passes over each batch of rollouts)"),
    "minibatches": _rule(_minibatches),
    "micro_batches": _rule(_micro_batches),
    "reference": _rule(_reference, typed=False),
    "train_forced_tokens": ANY,
    "logprob_chunk": at_least(1, " (positions per logits chunk)"),
    "refill_rounds": at_least(-1, " (-1: auto)"),
    "thinking_budget": _rule(_thinking_budget),
    "teacher": _rule(_teacher),
    **{name: _rule(check) for name, check in TOOL_CHECKS.items()},
}


EVAL_RULES = {
    "every": at_least(1, " (RL steps between evaluations)"),
    "num_prompts": at_least(1),
    "samples": at_least(0, " (0: greedy accuracy only)"),
    "temperature": at_least(0.0, " (0: greedy)"),
    "max_new_tokens": at_least(0, " (0: RLConfig.max_new_tokens)"),
}


# ---------------------------------------------------------------------- RunConfig

def _mesh(v, exp: Experiment) -> str | None:
  ok = (len(v) == 3 and all(isinstance(x, int) and not isinstance(x, bool)
                            and (x >= 1 or x == -1) for x in v))
  if not ok:
    return ("must be (data, fsdp, tensor): three integers >= 1, one of which may be -1 "
            "(whatever the device count leaves), e.g. (-1, 1, 1)")
  if list(v).count(-1) > 1:
    return "may have at most one -1 axis"
  return None


RUN_RULES = {
    "seed": at_least(0),
    "checkpoint_every": at_least(1, " (steps between checkpoints)"),
    "keep_checkpoints": at_least(1),
    "log_every": at_least(1),
    "mesh": _rule(_mesh),
    "progress": ANY,
    "plots": ANY,
    "zero_reward_patience": at_least(1),
    "truncation_warn": interval(0.0, 1.0, why=" (a fraction of completions)"),
    "reward_workers": at_least(0, " (0 scores in the calling thread)"),
    "reward_timeout": above(0.0, " (seconds)"),
    "distributed": one_of(("auto", "on", "off")),
    "compilation_cache": ANY,  # a directory ('' turns the cache off)
    "compile_ahead": ANY,
    "compile_mode": one_of(COMPILE_MODES),
    "memory_check": one_of(("error", "warn", "off")),
    "memory_limit_gib": at_least(0.0, " (0: 90% of the device's memory)"),
}


def _topology(v, exp: Experiment) -> str | None:
  if not v:
    return None
  try:
    parse_topology(v)
  except ValueError as e:
    return str(e)
  return None


COMPILE_RULES = {
    "topology": _rule(_topology),
    "prompt_tokens": at_least(0, " (0: measure the task's prompts)"),
    "answer_tokens": at_least(0),
    "usable_hbm": interval(0.0, 1.0, lo_open=True),
}


def _targets(v, exp: Experiment) -> str | None:
  bad = [t for t in v if not isinstance(t, str) or not t]
  return f"every target must be a projection-name pattern, got {bad}" if bad else None


LORA_RULES = {
    "rank": at_least(0, " (0: full fine-tuning)"),
    "alpha": above(0.0),
    "targets": _rule(_targets),
    "dtype": one_of(("float32", "bfloat16")),
    "quantize": one_of(("none", "int8", "int4", "nf4")),  # model.quant.QTYPES + "none"
    "block_size": at_least(0, " (0: one scale per output channel)"),
}


# The rules of each section, by the class gin binds.
RULES: dict[str, dict[str, Rule]] = {
    "ModelSpec": MODEL_RULES, "TaskSpec": TASK_RULES, "SFTConfig": SFT_RULES,
    "RLConfig": RL_RULES, "EvalConfig": EVAL_RULES, "RunConfig": RUN_RULES,
    "CompileSpec": COMPILE_RULES, "LoRASpec": LORA_RULES,
}


def sections() -> list[tuple[str, type]]:
  """(Experiment field, section class) of every section of an experiment."""
  hints = _hints(Experiment)
  return [(f.name, hints[f.name]) for f in dataclasses.fields(Experiment)]


def missing_rules() -> list[str]:
  """Gin names of the fields that have no rule (a test keeps this empty)."""
  out = []
  for _, cls in sections():
    rules = RULES.get(cls.__name__, {})
    out += [f"{cls.__name__}.{f.name}" for f in dataclasses.fields(cls)
            if f.name not in rules]
  return out


def problems(exp: Experiment) -> list[str]:
  """Every problem with `exp`, one line each: `Section.field = value: what to do`."""
  out = []
  for attr, cls in sections():
    section = getattr(exp, attr)
    if not isinstance(section, cls):
      out.append(f"Experiment.{attr} = {_show(section)}: expected a {cls.__name__}")
      continue
    hints, rules = _hints(cls), RULES.get(cls.__name__, {})
    for f in dataclasses.fields(cls):
      value, rule = getattr(section, f.name), rules.get(f.name, ANY)
      bad = type_problem(value, hints[f.name]) if rule.typed else None
      if bad is None:
        try:
          bad = rule.check(value, exp)
        except Exception as e:  # noqa: BLE001 -- a rule that trips on a value names it
          bad = f"cannot be checked ({type(e).__name__}: {e})"
      if bad:
        out.append(f"{cls.__name__}.{f.name} = {_show(value)}: {bad}")
  return out


def validate_experiment(exp: Experiment) -> None:
  """Raise `ConfigError` listing every problem with `exp` (see the module docstring);
  return None when it has none."""
  found = problems(exp)
  if found:
    head = "invalid experiment configuration" + (
        f" ({len(found)} problems)" if len(found) > 1 else "")
    raise ConfigError(head + ":\n  " + "\n  ".join(found))
