"""Building a run's parts from an `Experiment`: task, codec, model, data, objective."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from reasoning_jax import model as rjm
from reasoning_jax.data.tasks import ColdStart, get_task
from reasoning_jax.objectives import ObjectiveInputs, reference_coefficients
from reasoning_jax.objectives.registry import get_objective
from reasoning_jax.training.codec import ChatFormat, Codec
from reasoning_jax.training.compile_mode import compiler_options
from reasoning_jax.training.config import Experiment

# Objectives whose rollouts are rationales with a teacher-forced gold answer.
TSALLIS_LAYOUT = ("garl", "paft", "garl_distill")


def build_task(exp: Experiment):
  """The task with its cold-start format and training reward (`TaskSpec.reward`,
  checked here, before any data or model work)."""
  t = exp.task
  cold = ColdStart(kind=t.cold_start, depth=t.cold_start_depth,
                   depths=tuple(t.cold_start_depths))
  task = get_task(t.name, cold_start=cold, **dict(t.kwargs))
  if not t.reward:
    if t.reward_kwargs:
      raise ValueError("TaskSpec.reward_kwargs is set but TaskSpec.reward is empty; "
                       "name the reward those options are for")
    return task
  if exp.rl.objective in TSALLIS_LAYOUT:
    raise ValueError(f"TaskSpec.reward = {t.reward!r} has no effect with objective "
                     f"{exp.rl.objective!r}: GARL/PAFT weight rationales by the gold "
                     "answer's likelihood and score no rollouts; unset it, or use "
                     f"{exp.rl.objective}_binary")
  return task.use_reward(t.reward, t.reward_kwargs, field="TaskSpec.reward")


CHAT_TEMPLATE_MODES = ("auto", "on", "off")


def chat_format(exp: Experiment, inner) -> ChatFormat | None:
  """The run's prompt chat format (`TaskSpec.chat_template`), or None for raw text."""
  t = exp.task
  if t.chat_template not in CHAT_TEMPLATE_MODES:
    raise ValueError(f"TaskSpec.chat_template={t.chat_template!r}; use one of "
                     f"{CHAT_TEMPLATE_MODES}")
  has = bool(getattr(inner, "chat_template", None))
  if t.chat_template == "on" and not has:
    raise ValueError(f"TaskSpec.chat_template='on' but the tokenizer "
                     f"({t.tokenizer!r}) has no chat template; set it to 'off' or "
                     "'auto', or use a tokenizer that carries one")
  if t.chat_template == "off" or not has:
    return None
  return ChatFormat(system=t.system_prompt, response_prefix=t.response_prefix,
                    kwargs=tuple(t.chat_template_kwargs))


def build_codec(exp: Experiment, task) -> Codec:
  """The text codec: the task's char vocabulary, the checkpoint's, or a path; with the
  tokenizer's chat template applied to prompts where `chat_format` says so."""
  name = exp.task.tokenizer
  if name == "char":
    inner = task.vocab()
  else:
    from reasoning_jax.data.tokenizer import load_tokenizer, smollm2_gguf_path
    if name == "checkpoint":
      ckpt = exp.model.checkpoint
      if not ckpt:
        raise ValueError("TaskSpec.tokenizer='checkpoint' needs ModelSpec.checkpoint")
      name = smollm2_gguf_path() if ckpt == "smollm2" else ckpt
    inner = load_tokenizer(name)
  return Codec(inner, chat_format(exp, inner))


def init_params(cfg: rjm.ModelConfig, key: jax.Array, compile_mode: str = "auto"):
  """`model.init_params` as one program compiled under the run's compile mode.

  Run eagerly it compiles a random-normal program for every distinct weight shape, in
  every fresh process; one jitted program compiles once. The values are the same bits
  (threefry is integer arithmetic; checked in tests/training/test_steps.py).
  """
  n = sum(x.size for x in jax.tree.leaves(rjm.abstract_params(cfg)))
  opts = compiler_options(compile_mode, n, jax.default_backend())
  return jax.jit(rjm.init_params, static_argnums=0, compiler_options=opts)(cfg, key)


def build_model(exp: Experiment, codec: Codec, key: jax.Array):
  """(config, params): a random preset sized to the codec, or a loaded checkpoint."""
  m = exp.model
  ckpt = m.checkpoint
  if ckpt:
    if ckpt == "smollm2":
      from reasoning_jax.model.gguf_checkpoint import smollm2_gguf_path
      ckpt = smollm2_gguf_path()
    if not os.path.exists(ckpt):
      raise FileNotFoundError(f"ModelSpec.checkpoint {ckpt!r} does not exist")
    if ckpt.endswith(".gguf"):
      cfg, params = rjm.load_gguf_checkpoint(ckpt, dtype=m.dtype)
    else:
      cfg, params = rjm.load_hf_checkpoint(ckpt, dtype=m.dtype)
  else:
    over = dict(m.overrides)
    over.setdefault("vocab_size", codec.vocab_size)
    cfg = rjm.preset(m.preset, dtype=m.dtype, param_dtype=m.param_dtype or None, **over)
    params = init_params(cfg, key, exp.run.compile_mode)
  cfg = cfg.replace(param_dtype=m.param_dtype or None, remat=m.remat,
                    attention_backend=m.attention_backend)
  if cfg.weight_dtype != params.final_norm.dtype:
    params = jax.tree.map(lambda x: x.astype(cfg.weight_dtype), params)
  if codec.vocab_size > cfg.vocab_size:
    raise ValueError(f"the tokenizer has {codec.vocab_size} tokens but the model's "
                     f"vocabulary has {cfg.vocab_size} rows; use the model's own "
                     "tokenizer (TaskSpec.tokenizer='checkpoint')")
  return cfg, params


def build_objective(exp: Experiment):
  """(objective, its config, rollout layout)."""
  obj = get_objective(exp.rl.objective)
  fields = {f.name for f in dataclasses.fields(obj.config_cls)}
  over = dict(exp.rl.objective_overrides)
  unknown = sorted(set(over) - fields)
  if unknown:
    raise ValueError(f"objective {obj.name!r} has no options {unknown}; it has "
                     f"{sorted(fields)}")
  layout = "tsallis" if obj.name in TSALLIS_LAYOUT else "completion"
  return obj, obj.config(**over), layout


_YES, _NO = ("yes", "true", True), ("no", "false", False)


def uses_reference(exp: Experiment, ocfg: Any) -> bool:
  """Whether a frozen reference policy is kept: "auto" when a KL coefficient the
  objective's config declares (`objectives.reference_coefficients`) is non-zero.

  Raises ValueError for `RLConfig.reference = "no"` while such a coefficient is set:
  the objective would otherwise train without its KL term.
  """
  ref = exp.rl.reference
  if ref not in _YES + _NO + ("auto",):
    raise ValueError(f"RLConfig.reference = {ref!r}; use 'auto', 'yes' or 'no'")
  needed = reference_coefficients(ocfg)
  if ref in _NO and needed:
    raise ValueError(f"RLConfig.reference = {ref!r}, but objective {exp.rl.objective!r} "
                     f"needs reference log-probs for {needed}; set reference = 'auto' "
                     "or those coefficients to 0 (RLConfig.objective_overrides)")
  return ref in _YES or bool(needed)


def sft_arrays(examples, codec: Codec, answer_noise: float = 0.0,
               seed: int = 0) -> dict[str, np.ndarray]:
  """Token, position and loss-mask arrays of warm-up examples (loss on the target).

  With `answer_noise > 0`, that fraction of examples (chosen by `seed`) gets another
  example's answer after its rationale (see `SFTConfig.answer_noise`). An example's
  `metadata["observation_spans"]` (`[start, end)` in its rationale: tool outputs, e.g.
  `tool_word_problems`) are encoded on their own and kept out of the loss, as an RL
  episode's observations are.
  """
  if not 0.0 <= answer_noise < 1.0:
    raise ValueError(f"answer_noise must be in [0, 1), got {answer_noise}")
  rng = np.random.default_rng(seed)
  noisy = rng.random(len(examples)) < answer_noise
  donors = rng.integers(0, len(examples), len(examples))
  seqs, starts = [], []
  for i, ex in enumerate(examples):
    answer = examples[donors[i]].answer if noisy[i] else ex.answer
    p = codec.prompt_ids(ex.prompt)
    r, keep = _rationale_ids(codec, ex)
    t = r + codec.encode(ex.rationale_end) + codec.encode(answer) + [codec.eos_id]
    seqs.append(p + t)
    starts.append((len(p), keep + [True] * (len(t) - len(r))))
  L = max(len(s) for s in seqs)
  tokens = np.full((len(seqs), L), codec.pad_id, np.int32)
  mask = np.zeros((len(seqs), L), np.float32)
  for i, (s, (st, keep)) in enumerate(zip(seqs, starts)):
    tokens[i, :len(s)] = s
    mask[i, st:len(s)] = keep
  positions = np.broadcast_to(np.arange(L, dtype=np.int32), tokens.shape).copy()
  return {"tokens": tokens, "positions": positions, "mask": mask}


def _rationale_ids(codec: Codec, ex) -> tuple[list[int], list[bool]]:
  """The rationale's ids and, per id, whether the SFT loss trains it (False inside the
  example's `observation_spans`, each encoded on its own like an episode's)."""
  spans = (ex.metadata or {}).get("observation_spans", ())
  ids: list[int] = []
  keep: list[bool] = []
  at = 0
  for start, end in [*spans, (len(ex.rationale), len(ex.rationale))]:
    if not at <= start <= end <= len(ex.rationale):
      raise ValueError(f"observation_spans {list(spans)} of example {ex.prompt[:40]!r} "
                       "are not ordered [start, end) spans of its rationale")
    for piece, trained in ((ex.rationale[at:start], True), (ex.rationale[start:end], False)):
      piece_ids = codec.encode(piece) if piece else []
      ids += piece_ids
      keep += [trained] * len(piece_ids)
    at = end
  return ids, keep


def objective_inputs(roll, group: int) -> ObjectiveInputs:
  """ObjectiveInputs of host rollouts (logp_BT is a placeholder the step replaces)."""
  return ObjectiveInputs(
      logp_BT=np.zeros(roll.tokens.shape, np.float32), mask_BT=roll.mask,
      rewards_B=roll.rewards, rationale_mask_BT=roll.rationale_mask,
      answer_mask_BT=roll.answer_mask, group_size=group)
