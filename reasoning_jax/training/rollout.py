"""Host side of an RL step: sample, decode, score, and lay rollouts out for the update.

Two layouts:
- "completion" (GRPO family, binary Tsallis variants): each row is
  `[left-padded prompt | sampled completion | padding]`; the loss mask covers the
  sampled (and, if asked, forced) tokens.
- "tsallis" (GARL, PAFT): the sampler draws only the rationale, which ends with the
  end-of-rationale marker (forced when the budget runs out); the gold answer and EOS
  are appended right after it and teacher-forced. The rationale and answer masks
  tell the objective which tokens carry the score term and which the pathwise term.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from reasoning_jax.rewards import RewardRunner, score_examples
from reasoning_jax.sampling import LENGTH, SampleOutput, bucket
from reasoning_jax.sampling import episodes as sep

LAYOUTS = ("completion", "tsallis")


@dataclasses.dataclass
class Rollouts:
  """One step's rollouts as host arrays (rows prompt-major: prompt i owns i*G..)."""
  tokens: np.ndarray          # int32 [R, T]
  positions: np.ndarray       # int32 [R, T], -1 on left padding
  mask: np.ndarray            # float32 [R, T] trained tokens
  rationale_mask: np.ndarray  # float32 [R, T] (tsallis layout; else zeros)
  answer_mask: np.ndarray     # float32 [R, T] (tsallis layout; else zeros)
  sampler_logp: np.ndarray    # float32 [R, T] sampler's logprobs (0 where not sampled)
  rewards: np.ndarray         # float32 [R]
  texts: list[str]            # decoded completions (rationale only in tsallis layout)
  metrics: dict[str, float]
  # Per-row values and outcome counts the metrics come from (`summarize`); with
  # several processes they are gathered first, so metrics are the global batch's.
  row_stats: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  counts: dict[str, float] = dataclasses.field(default_factory=dict)


def summarize(row_stats: dict[str, np.ndarray], counts: dict[str, float], group: int
              ) -> dict[str, float]:
  """Rollout metrics from per-row values (`Rollouts.row_stats`) and outcome counts."""
  lens = row_stats["length"]
  metrics: dict[str, float] = {
      "rollout/length_mean": float(lens.mean()),
      "rollout/truncated_frac": float(np.mean(row_stats["truncated"])),
      "rollout/forced_frac": float(np.mean(row_stats["forced"])),
  }
  metrics.update(counts)
  if "reward" in row_stats:
    rewards = row_stats["reward"]
    g = rewards.reshape(-1, group)
    metrics["reward/mean"] = float(rewards.mean())
    metrics["reward/std"] = float(rewards.std())
    metrics["reward/zero_variance_groups"] = float(np.mean(g.std(axis=1) == 0))
  if "rationale_correct" in row_stats:
    metrics["rollout/rationale_correct"] = float(np.mean(row_stats["rationale_correct"]))
  if "consistent" in row_stats:
    metrics["rollout/consistent"] = float(np.mean(row_stats["consistent"]))
  for key, name in (("tool_calls", "tools/calls_per_episode"),
                    ("turns", "episode/turns_mean"), ("void", "episode/void_frac")):
    if key in row_stats:
      metrics[name] = float(np.mean(row_stats[key]))
  return metrics


def _rationale_stats(rows: Sequence[Any], texts: list[str], layout: str
                     ) -> dict[str, np.ndarray]:
  """Per row: `rationale_correct` (the worked rationale exactly) and `consistent` (the
  answer is what the row's own rationale implies, right or wrong: sampled in the
  completion layout, the teacher-forced gold in the tsallis one), where the examples
  can tell (worked rationales; a task reader for `consistent`)."""
  if not all(getattr(ex, "rationale", "") for ex in rows):
    return {}
  out = {"rationale_correct": np.asarray(
      [bool(ex.rationale_correct(t)) for ex, t in zip(rows, texts)])}
  gold = layout == "tsallis"
  said = [ex.consistent(t, ex.answer if gold else None) if hasattr(ex, "consistent")
          else None for ex, t in zip(rows, texts)]
  if all(c is not None for c in said):
    out["consistent"] = np.asarray(said, bool)
  return out


def _lay_out(prompt_ids, toks, lens, slogp, forced, pad_id: int, *, group: int, P: int,
             A: int, answer_ids, train_forced: bool):
  """(tokens, positions, mask, rationale mask, answer mask, sampler logprobs), each
  `[R, P + N + A]`: `[left-padded prompt | sample | gold answer (tsallis) | padding]`,
  from the sampler's tokens, lengths, logprobs and forced flags (host arrays)."""
  R, N = toks.shape
  T = P + N + A
  tokens = np.full((R, T), pad_id, np.int32)
  positions = np.full((R, T), -1, np.int32)
  mask, rat, ans, samp = (np.zeros((R, T), np.float32) for _ in range(4))
  for r in range(R):
    i = r // group
    p = np.asarray(prompt_ids[i], np.int32)
    n, L = len(p), int(lens[r])
    tokens[r, P - n:P] = p
    tokens[r, P:P + L] = toks[r, :L]
    mask[r, P:P + L] = ~forced[r, :L] if not train_forced else np.ones(L, bool)
    samp[r, P:P + L] = np.where(forced[r, :L], 0.0, slogp[r, :L])
    if answer_ids is not None:
      rat[r, P:P + L] = 1.0
      a = np.asarray(answer_ids[i], np.int32)
      end = P + L
      tokens[r, end:end + len(a)] = a
      ans[r, end:end + len(a)] = 1.0
      mask[r, end:end + len(a)] = 1.0
    # Positions run on through the right padding; those tokens are masked out of the
    # loss and, being later, cannot influence earlier ones.
    positions[r, P - n:] = np.arange(T - (P - n), dtype=np.int32)
  return tokens, positions, mask, rat, ans, samp


def build_rollouts(examples: Sequence[Any], prompt_ids: Sequence[Sequence[int]],
                   out: SampleOutput, codec, runner: RewardRunner | None, *,
                   group: int, layout: str, marker_ids: Sequence[int] = (),
                   answer_ids: Sequence[Sequence[int]] | None = None,
                   train_forced: bool = True, prompt_bucket: int | None = None,
                   answer_bucket: int | None = None) -> Rollouts:
  """Lay one step's samples out for the update and score them.

  Args:
    examples: one task example per prompt.
    prompt_ids: the prompts' token ids (as sampled).
    out: the sampler's output for those prompts with `group` samples each.
    codec: the text codec (`encode`, `decode`, `eos_id`, `pad_id`).
    runner: the reward runner; None skips verification (rewards 0; tsallis layout).
    layout: "completion" or "tsallis" (see module docstring).
    marker_ids: the end-of-rationale marker's ids (tsallis layout).
    answer_ids: per prompt, the gold answer's ids followed by EOS (tsallis layout).
    train_forced: whether budget-forced tokens are in the loss mask.
    prompt_bucket, answer_bucket: the prompt / answer column widths; default the
      bucket of the longest given (processes holding parts of one batch pass the
      global ones, so every part has the same columns).
  """
  if layout not in LAYOUTS:
    raise ValueError(f"unknown rollout layout {layout!r}; use one of {LAYOUTS}")
  P = prompt_bucket or bucket(max(len(p) for p in prompt_ids))
  A = 0
  if layout == "tsallis":
    if answer_ids is None:
      raise ValueError("the tsallis layout needs the gold answers' token ids")
    A = answer_bucket or bucket(max(len(a) for a in answer_ids))
  toks, lens, slogp, forced = (np.asarray(x) for x in (out.tokens, out.lengths,
                                                        out.logprobs, out.forced_mask))
  rows = _lay_out(prompt_ids, toks, lens, slogp, forced, codec.pad_id, group=group, P=P,
                  A=A, answer_ids=answer_ids if layout == "tsallis" else None,
                  train_forced=train_forced)
  texts = [codec.decode(toks[r, :n].tolist()) for r, n in enumerate(lens)]
  # Truncated: cut by the length limit (completion layout) or by the rationale budget,
  # which forced the marker (tsallis layout).
  cut = (forced.any(axis=1) if layout == "tsallis"
         else np.asarray(out.finish_reason) == LENGTH)
  stats = {"length": lens, "truncated": cut, "forced": forced.any(axis=1)}
  R = len(texts)
  rewards = np.zeros(R, np.float32)
  counts: dict[str, float] = {}
  if runner is not None and layout == "completion":
    rep = [examples[r // group] for r in range(R)]
    rewards, counts = score_examples(rep, texts, lens, runner)
    stats["reward"] = rewards
  stats.update(_rationale_stats([examples[r // group] for r in range(R)], texts, layout))
  tokens, positions, mask, rat, ans, samp = rows
  return Rollouts(tokens, positions, mask, rat, ans, samp, rewards, texts,
                  summarize(stats, counts, group), stats, counts)


def final_turn_text(codec, tokens: np.ndarray, model_mask: np.ndarray, length: int) -> str:
  """The text of an episode's last model turn: its tokens after the last observation
  (the verifier reads the final answer there, never a tool's output)."""
  length = int(length)
  obs = np.flatnonzero(~np.asarray(model_mask[:length], bool))
  start = int(obs[-1]) + 1 if len(obs) else 0
  return codec.decode(np.asarray(tokens[start:length]).tolist())


def build_episode_rollouts(examples: Sequence[Any], prompt_ids: Sequence[Sequence[int]],
                           eps: sep.Episodes, codec, runner: RewardRunner | None, *,
                           group: int, prompt_bucket: int | None = None,
                           calls: np.ndarray | None = None,
                           tool_counts: dict[str, float] | None = None,
                           void: Callable[[list[str]], np.ndarray] | None = None,
                           drop_void: bool = False) -> Rollouts:
  """Lay multi-turn episodes (`sampling.run_episodes`) out for the update and score
  them: rows `[left-padded prompt | episode tokens | padding]`, the loss mask the
  episode's `model_mask` (observation tokens are never trained and carry sampler
  log-prob 0), the reward the verifier on the final turn plus the turns' rewards.

  Args:
    calls: [E] tool calls run per episode (for `tools/calls_per_episode`).
    tool_counts: the environment's `ToolCounts.metrics()` (summed like outcome counts).
    void: texts of the final turns -> [E] bool, episodes with a void turn
      (`training.episodes.void_episodes`); `drop_void` masks them out of the loss.
  """
  P = prompt_bucket or bucket(max(len(p) for p in prompt_ids))
  E = len(eps.lengths)
  texts = [final_turn_text(codec, eps.tokens[e], eps.model_mask[e], eps.lengths[e])
           for e in range(E)]
  stats: dict[str, np.ndarray] = {
      "length": eps.lengths, "truncated": eps.finish_reason == sep.LENGTH,
      "forced": np.zeros(E, bool), "turns": eps.turns}
  trained = eps.model_mask
  if void is not None:
    stats["void"] = np.asarray(void(texts), bool)
    if drop_void:
      trained = trained & ~stats["void"][:, None]
  if calls is not None:
    stats["tool_calls"] = np.asarray(calls)
  # `_lay_out` trains the unforced tokens: here the model's own, kept ones.
  rows = _lay_out(prompt_ids, eps.tokens, eps.lengths, eps.logprobs, ~trained,
                  codec.pad_id, group=group, P=P, A=0, answer_ids=None,
                  train_forced=False)
  rewards = np.zeros(E, np.float32)
  counts: dict[str, float] = dict(tool_counts or {})
  for i, name in enumerate(sep.EPISODE_REASONS):
    counts[f"episode/finish_{name}"] = float(np.sum(eps.finish_reason == i))
  if runner is not None:
    rep = [examples[e // group] for e in range(E)]
    rewards, scored = score_examples(rep, texts, eps.lengths, runner)
    counts.update(scored)
    rewards = rewards + eps.turn_rewards.sum(axis=1).astype(np.float32)
    stats["reward"] = rewards
  tokens, positions, mask, rat, ans, samp = rows
  return Rollouts(tokens, positions, mask, rat, ans, samp, rewards, texts,
                  summarize(stats, counts, group), stats, counts)
