"""The trainer's side of tool-integrated rollouts: `RLConfig.tools` turns each RL
rollout into a multi-turn episode (`sampling.run_episodes`) with the named tools.

- Tool calls are written in the tagged form `<tool_call>{"name": ..., "arguments":
  ...}</tool_call>` (both tools; `tools.environment.parse_tool_call`); the row stops
  at the ids of `</tool_call>`. A fenced block cannot be a stop sequence (its closing
  fence is also its opening one), so fenced calls are not offered here.
- With a chat template the observation is the template's own tool turn
  (`ToolEnvironment`); a char vocabulary has no template, so the task writes it
  (`task.tool_observation(output)`, e.g. the tool_word_problems task, whose worked
  rationales hold the same calls and observations for the SFT warm start).
- An episode is laid out as `[left-padded prompt | episode tokens | padding]` with its
  `model_mask` as the loss mask (`training.rollout.build_episode_rollouts`); the
  verifier scores the final turn; a turn's reward (`Observation.reward`) is added.
- SimpleTIR's void-turn filter (`RLConfig.drop_void_turns`): an episode with a turn
  that wrote neither a parsable tool call nor a final answer is dropped from the loss.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from reasoning_jax import sampling
from reasoning_jax.evaluation.loop import final_answer
from reasoning_jax.rewards import score_examples
from reasoning_jax.sampling import episodes as sep
from reasoning_jax.tools.base import OK, UNPARSABLE_CALL
from reasoning_jax.tools.environment import ToolEnvironment
from reasoning_jax.training import multihost as mh
from reasoning_jax.training.rollout import Rollouts, build_episode_rollouts, final_turn_text

TOOL_NAMES = ("calculator", "python")
CALL_END = "</tool_call>"
# Objectives whose rollouts teacher-force the gold answer after the rationale
# (training.setup.TSALLIS_LAYOUT; named here to keep validate's import light).
_TSALLIS = ("garl", "paft")


# ------------------------------------------------------------------ validation rules
# Each returns the problem with the value (validate.RL_RULES wraps them), or None.
def check_tools(v, exp) -> str | None:
  """`RLConfig.tools`: known names, no repeats, an objective and format that fit."""
  bad = [t for t in v if t not in TOOL_NAMES]
  if bad or len(set(v)) != len(v):
    return f"must be distinct names from {list(TOOL_NAMES)} (got {list(v)})"
  if v and exp.rl.objective in _TSALLIS:
    return (f"cannot be used with RLConfig.objective = {exp.rl.objective!r}: GARL/PAFT "
            "teacher-force the gold answer after a sampled rationale, and an episode's "
            "observations are not the policy's to score (docs/objectives.md, "
            f"'Episodes'); use {exp.rl.objective}_binary or the GRPO family")
  if v and exp.rl.thinking_budget:
    return "does not support RLConfig.thinking_budget inside episodes; set it to 0"
  if v and exp.task.response_prefix:
    return ("needs TaskSpec.response_prefix = '' (the tool turns are rendered from the "
            "conversation, which has no place for a prefix)")
  return None


def _at_least(what: str, lo: int):
  def check(v, exp) -> str | None:
    if v < lo:
      return f"must be >= {lo}{what}"
    return None
  return check


def _void(v, exp) -> str | None:
  return ("has no effect without RLConfig.tools; unset it"
          if v and not exp.rl.tools else None)


TOOL_CHECKS = {
    "tools": check_tools,
    "max_turns": _at_least(" (model turns per episode; with RLConfig.tools)", 1),
    "episode_slots": _at_least(" (0: every episode at once)", 0),
    "episode_chunk": _at_least(" (0: no refill chunks)", 0),
    "drop_void_turns": _void,
}


# ------------------------------------------------------------------ environment
def make_tools(names) -> dict[str, Any]:
  """The named tools (`TOOL_NAMES`) with their default limits."""
  from reasoning_jax.tools import Calculator, PythonSandbox
  made = {"calculator": Calculator, "python": PythonSandbox}
  return {n: made[n]() for n in names}


class RecordingEnvironment(ToolEnvironment):
  """`ToolEnvironment` that also keeps each episode's call reasons (void turns,
  calls per episode), and renders observations with `render` where the tokenizer
  has no chat template."""

  def __init__(self, *args, render=None, allowed: str | None = None, **kwargs):
    super().__init__(*args, **kwargs)
    self.render, self.allowed = render, allowed
    self.reasons: dict[int, list[str]] = {}
    self._results: list = []

  def observation_text(self, episode, turn_text, output):
    if self.render is None:
      return super().observation_text(episode, turn_text, output)
    if self.allowed is not None:  # a char vocabulary cannot encode other characters
      output = "".join(c if c in self.allowed else "?" for c in output)
    return self.render(output)

  def run_call(self, turn_text):
    name, result = super().run_call(turn_text)
    self._results.append(result)
    return name, result

  def __call__(self, requests):
    self._results = []
    out = super().__call__(requests)
    for req, result in zip(requests, self._results):
      self.reasons.setdefault(req.episode, []).append(result.reason)
    return out

  def calls(self, n: int) -> np.ndarray:
    """[n] tool calls run per episode."""
    return np.asarray([len(self.reasons.get(e, ())) for e in range(n)], np.int32)


def make_environment(exp, task, codec, examples, group: int) -> RecordingEnvironment:
  """The step's environment over `examples` (G episodes each)."""
  tools = make_tools(exp.rl.tools)
  if codec.chat is not None:
    convs = [codec.chat.messages(e.prompt) for e in examples]
    return RecordingEnvironment(codec.inner, convs, tools, group=group,
                                template_kwargs=dict(codec.chat.kwargs))
  render = getattr(task, "tool_observation", None)
  if render is None:
    raise ValueError(
        f"RLConfig.tools needs a chat template to render tool outputs, and task "
        f"{exp.task.name!r} with TaskSpec.tokenizer = {exp.task.tokenizer!r} has none: "
        "use a checkpoint tokenizer with a template, or a task that writes tool "
        "observations itself (TaskSpec.name = 'tool_word_problems')")
  return RecordingEnvironment(codec, [[] for _ in examples], tools, group=group,
                              render=render, allowed=getattr(codec.inner, "chars", None))


def episode_config(exp, codec, knobs, *, temperature=None) -> sep.EpisodeConfig:
  """`EpisodeConfig` of the run's episodes (budget: `RLConfig.max_new_tokens`)."""
  r = exp.rl
  return sep.EpisodeConfig(
      max_tokens=r.max_new_tokens, max_turns=r.max_turns, stop_tokens=(codec.eos_id,),
      tool_stops=(tuple(codec.encode(CALL_END)),), slots=r.episode_slots,
      chunk_steps=r.episode_chunk,
      temperature=knobs.temperature if temperature is None else temperature,
      top_k=knobs.top_k, top_p=knobs.top_p, pad_id=codec.pad_id)


# ------------------------------------------------------------------ one step's rollouts
@dataclasses.dataclass
class ToolSample:
  """One round's episodes with the environment that ran their tools."""
  episodes: sep.Episodes
  env: RecordingEnvironment

  @property
  def lengths(self) -> np.ndarray:
    return self.episodes.lengths


def void_episodes(examples, texts, eps: sep.Episodes, env: RecordingEnvironment
                  ) -> np.ndarray:
  """[E] bool: episodes with a void turn (SimpleTIR): a tool turn whose call could not
  be parsed, or a final turn (ended by EOS or the budget) without a final answer."""
  out = np.zeros(len(texts), bool)
  for e, text in enumerate(texts):
    if UNPARSABLE_CALL in env.reasons.get(e, ()):
      out[e] = True
    elif eps.finish_reason[e] in (sep.STOP, sep.LENGTH):
      out[e] = not final_answer(examples[e], text)
  return out


def sample(trainer, exs, k_sample, temp, k_prep):
  """`Trainer._sample` with tools: returns (prompt ids, None, ToolSample,
  (prompt column width, None), compile-ahead threads)."""
  if jax.process_count() > 1:
    raise NotImplementedError("RLConfig.tools runs episodes in one process for now "
                              "(docs/tools.md); unset it for multi-host runs")
  p, r = trainer.parts, trainer.exp.rl
  prompts = [p.codec.prompt_ids(e.prompt) for e in exs]
  trainer.last_prompts = prompts
  P = sampling.bucket(max(len(x) for x in prompts))
  warm = trainer._compile_ahead(P + r.max_new_tokens, temp, k_prep)
  env = make_environment(trainer.exp, p.task, p.codec, exs, r.group_size)
  params = getattr(trainer, "_policy_params", None)
  params = trainer.params if params is None else params
  eps = sep.run_episodes(params, trainer.cfg, prompts, env,
                         episode_config(trainer.exp, p.codec, trainer.sampling),
                         key=k_sample, num_samples=r.group_size)
  return prompts, None, ToolSample(eps, env), (P, None), warm


def score(trainer, exs, prompts, out: ToolSample, buckets) -> Rollouts:
  """`Trainer._score` of a `ToolSample`: the laid-out, scored episodes."""
  p, r = trainer.parts, trainer.exp.rl
  rep = [exs[i // r.group_size] for i in range(len(out.lengths))]
  return build_episode_rollouts(
      exs, prompts, out.episodes, p.codec, p.runner, group=r.group_size,
      prompt_bucket=buckets[0], calls=out.env.calls(len(rep)),
      tool_counts=out.env.counts.metrics(),
      void=lambda texts: void_episodes(rep, texts, out.episodes, out.env),
      drop_void=r.drop_void_turns)


def evaluate(trainer, prefix: str = "eval/") -> dict[str, float]:
  """Held-out accuracy of greedy episodes with the tools (and of sampled ones when
  `EvalConfig.samples` > 0), with their tool metrics."""
  p, e, exp = trainer.parts, trainer.exp.eval, trainer.exp
  exs = p.data.eval[:e.num_prompts]
  prompts = [p.codec.prompt_ids(x.prompt) for x in exs]
  policy = (trainer.policy_params if hasattr(trainer, "policy_params")
            else trainer._policy)()
  out: dict[str, float] = {}
  for name, n, temp in (("greedy_", 1, 0.0), ("", e.samples, e.temperature)):
    if n < 1:
      continue
    env = make_environment(exp, p.task, p.codec, exs, n)
    cfg = episode_config(exp, p.codec, trainer.sampling, temperature=temp)
    eps = sep.run_episodes(policy, trainer.cfg, prompts, env, cfg, key=p.eval_key,
                           num_samples=n)
    texts = [final_turn_text(p.codec, eps.tokens[i], eps.model_mask[i], eps.lengths[i])
             for i in range(len(eps.lengths))]
    scores, _ = score_examples([exs[i // n] for i in range(len(texts))], texts,
                               eps.lengths, trainer.runner)
    out[f"{prefix}{name}accuracy"] = float(np.mean(scores > 0.5))
    calls = env.calls(len(texts))
    out[f"{prefix}{name}tools/calls_per_episode"] = float(calls.mean())
    failed = env.counts.count() - env.counts.count(reason=OK)
    out[f"{prefix}{name}tools/failed"] = float(failed)
  if e.samples < 1:
    out[f"{prefix}accuracy"] = out[f"{prefix}greedy_accuracy"]
  return out

