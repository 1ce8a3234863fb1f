"""Synthetic task machinery: examples, cold-start formats, splits, the Task base class.

A task turns a seed into problems deterministically. Each `Example` keeps the rationale
and the answer apart, joined by an end-of-rationale marker: the model's target is
`rationale + rationale_end + answer` (EOS is the tokenizer's). GARL/PAFT teacher-force
the gold `answer` after each sampled rationale, so the answer string here is exactly
what the model must emit after the marker, in the RL (possibly cold-start) format.
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import random
from typing import Any, Callable, Mapping

from reasoning_jax.data.tasks.vocab import CharVocab
from reasoning_jax.rewards.base import RewardItem
from reasoning_jax.rewards.registry import get_reward
from reasoning_jax.rewards.spec import RewardSpec, parse_reward_spec

COLD_START_KINDS = ("none", "suffix", "prefix", "reverse")

# task name -> reader(rationale, answer width) -> the warm-format answer a worked
# rationale implies (None if unreadable); tasks register theirs where they are defined.
RATIONALE_READERS: dict[str, Callable[[str, int], "str | None"]] = {}


@dataclasses.dataclass(frozen=True)
class Example:
  """One problem. `answer` is the gold string exactly as the model must emit it.

  `reward`/`reward_kwargs` name the verifier (`get_reward(reward, **reward_kwargs)`);
  `metadata` carries what the verifier needs (e.g. Countdown's numbers) and task facts
  (difficulty, split, cold-start depth, the warm-up-format answer).
  """
  prompt: str
  rationale: str
  answer: str
  rationale_end: str
  reward: str
  reward_kwargs: Mapping[str, Any]
  metadata: Mapping[str, Any]

  @property
  def target(self) -> str:
    """What the model should write after the prompt: rationale, marker, answer."""
    return self.rationale + self.rationale_end + self.answer

  @property
  def text(self) -> str:
    """Prompt and target, one string (for SFT on a character-level model)."""
    return self.prompt + self.target

  def make_reward(self):
    """The verifier for this example (a picklable reward for `RewardRunner`)."""
    return get_reward(self.reward, **self.reward_kwargs)

  def reward_item(self, completion: str, num_tokens: int | None = None) -> RewardItem:
    """A RewardItem scoring `completion` (text after the prompt) against this example."""
    return RewardItem(completion, self.answer, num_tokens, dict(self.metadata))

  def rationale_correct(self, completion: str) -> bool:
    """True iff the text before the last marker is exactly the worked rationale.

    Exact match alone hides rationale collapse (cold-start notes); log this next to it.
    """
    i = completion.rfind(self.rationale_end)
    return i >= 0 and completion[:i] == self.rationale

  def implied_answer(self, rationale: str) -> str | None:
    """The answer `rationale` implies, in this example's (possibly cold-start) format,
    right or wrong; None when the task has no reader (`RATIONALE_READERS`) or the
    rationale is unreadable. The format is recovered from the warm-up answer and the
    gold, so it needs no task settings."""
    reader = RATIONALE_READERS.get(self.metadata.get("task", ""))
    warm = self.metadata.get("warmup_answer")
    implied = reader(rationale, len(warm)) if reader and warm is not None else None
    if implied is None:
      return None
    kind, gold = self.metadata.get("cold_start", "none"), self.answer
    if kind == "suffix":
      return implied + gold[len(warm):]
    if kind == "prefix":
      return gold[:len(gold) - len(warm)] + implied
    return implied[::-1] if kind == "reverse" else implied

  def consistent(self, completion: str, answer: str | None = None) -> bool | None:
    """Whether the answer (the text after the last marker, or `answer` when given:
    the teacher-forced gold of GARL/PAFT rollouts) is what the completion's own
    rationale implies, correct or not (False without a readable rationale); None
    when the task has no reader."""
    if self.metadata.get("task", "") not in RATIONALE_READERS:
      return None
    i = completion.rfind(self.rationale_end)
    implied = self.implied_answer(completion[:i]) if i >= 0 else None
    if implied is None:  # no marker, or a rationale that implies no answer
      return False
    said = completion[i + len(self.rationale_end):] if answer is None else answer
    return implied.strip() == said.strip()  # the exact reward's comparison

  def to_record(self, index: int = 0) -> dict[str, Any]:
    """The data layer's common schema (id, question, answer, rationale, context,
    answer_aliases) plus `rationale_end`, `reward` and JSON `metadata`."""
    return {"id": f"{self.metadata.get('task', 'task')}/{self.metadata.get('split', '')}/"
                  f"{index}",
            "question": self.prompt, "answer": self.answer, "rationale": self.rationale,
            "context": "", "answer_aliases": [], "rationale_end": self.rationale_end,
            "reward": self.reward, "reward_kwargs": json.dumps(dict(self.reward_kwargs)),
            "metadata": json.dumps(dict(self.metadata), sort_keys=True)}


@dataclasses.dataclass(frozen=True)
class ColdStart:
  """How the RL answer format differs from the warm-up format (the paper's cold start).

  kind: "none"; "suffix" (`depth` marker characters after the answer, which warm-up
    never wrote: like a required closing tag); "prefix" (before it); "reverse" (digits
    reversed). Each extra marker multiplies the warmed-up model's answer likelihood by a
    small factor, so `depth` sets log w; the gold stays reachable (non-zero likelihood)
    because the marker is in the vocabulary.
  depths: if non-empty, each example draws its depth from this tuple (deterministic in
    the prompt), to mix very different P in one batch; `cue_in_prompt` then appends the
    depth's markers to the prompt so the format is inferable.
  """
  kind: str = "none"
  depth: int = 1
  marker: str = "!"
  depths: tuple[int, ...] = ()
  cue_in_prompt: bool = True

  def __post_init__(self):
    if self.kind not in COLD_START_KINDS:
      raise ValueError(f"Unknown cold-start kind {self.kind!r}; choose one of "
                       f"{COLD_START_KINDS}.")
    if len(self.marker) != 1:
      raise ValueError(f"cold-start marker must be one character (one token for a "
                       f"char-level model), got {self.marker!r}.")
    for d in (self.depth, *self.depths):
      if not isinstance(d, int) or d < 0:
        raise ValueError(f"cold-start depths must be ints >= 0, got {d!r}.")

  def depth_for(self, prompt: str) -> int:
    """The depth used for this prompt."""
    if not self.depths:
      return self.depth
    return self.depths[_hash01(prompt, "depth") * len(self.depths) // (1 << 32)]

  def apply(self, answer: str, depth: int) -> str:
    """The RL-format answer from the warm-up-format answer."""
    if self.kind == "suffix":
      return answer + self.marker * depth
    if self.kind == "prefix":
      return self.marker * depth + answer
    if self.kind == "reverse":
      return answer[::-1]
    return answer


def _hash01(text: str, salt: str) -> int:
  """A stable 32-bit hash (Python's hash() is salted per process)."""
  return int.from_bytes(hashlib.sha256(f"{salt}:{text}".encode()).digest()[:4], "big")


@dataclasses.dataclass(frozen=True)
class Problem:
  """What a task generator returns: warm-up-format texts and verifier metadata."""
  prompt: str
  rationale: str
  answer: str
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Task(abc.ABC):
  """A synthetic task family. Subclasses implement `_problem`, `_verifier`, `alphabet`.

  Splits are decided by a stable hash of the prompt (`heldout_fraction` of all possible
  prompts are held out), so the warm-up corpus, the RL train prompts and the held-out
  prompts never overlap, whatever the seeds.

  Rewards: every example is scored by the task's verifier (`_verifier`), unless
  `use_reward` chose a training reward; that one scores the train split's examples
  (the RL rollouts) while held-out examples keep the verifier, so evaluation accuracy
  stays a correctness count whatever the training reward.
  """
  name = "task"
  reward_spec: RewardSpec | None = None

  def __init__(self, *, cold_start: ColdStart = ColdStart(), rationale_end: str = "|",
               heldout_fraction: float = 0.05):
    if not isinstance(cold_start, ColdStart):
      raise TypeError(f"cold_start must be a ColdStart, got {type(cold_start).__name__}.")
    if not rationale_end:
      raise ValueError("rationale_end must be a non-empty marker string.")
    if not 0.0 < heldout_fraction < 1.0:
      raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}.")
    self.cold_start, self.rationale_end = cold_start, rationale_end
    self.heldout_fraction = heldout_fraction

  @abc.abstractmethod
  def _problem(self, rng: random.Random) -> Problem:
    """Draws one problem in the warm-up format."""

  @abc.abstractmethod
  def _verifier(self, cold: bool, depth: int) -> tuple[str, dict[str, Any]]:
    """(reward name, kwargs) that accept exactly the right answers in that format."""

  @abc.abstractmethod
  def _base_chars(self) -> str:
    """The task's own characters (the markers are added by `alphabet`)."""

  @property
  def alphabet(self) -> str:
    """Every character any prompt, rationale or answer of this task can contain."""
    chars = self._base_chars()
    for c in self.rationale_end + self.cold_start.marker:
      if c not in chars:
        chars += c
    return chars

  def use_reward(self, name: str, options=(), *, field: str = "TaskSpec.reward"
                 ) -> "Task":
    """Sets the RL training reward (see `rewards.spec`; "task" is this task's
    verifier, e.g. in a weighted sum with a length penalty); returns self.

    A reward that reads markup this task's alphabet cannot write (LASER's `\\boxed{}`,
    RLCR's tags), or metadata its examples do not carry, is refused: it would score
    every rollout alike, which trains nothing.
    """
    spec = parse_reward_spec(name, options, field=field)
    missing = sorted(set("".join(spec.text())) - set(self.alphabet))
    if missing:
      raise ValueError(f"{field} = {name!r} reads {sorted(set(spec.text()))}, which task "
                       f"{self.name!r} cannot write (no {''.join(missing)!r} in its "
                       "alphabet); use it with a dataset task, or weight 'task' with "
                       "length rewards such as 'dapo_overlong'")
    have = set(self._problem(random.Random(0)).metadata)
    lacking = sorted(set(spec.metadata()) - have)
    if lacking:
      raise ValueError(f"{field} = {name!r} needs example metadata {lacking}, which task "
                       f"{self.name!r} does not provide (it has {sorted(have)})")
    self.reward_spec = spec
    return self

  def vocab(self) -> CharVocab:
    """A char-level vocabulary covering this task (pad/bos/eos + alphabet)."""
    return CharVocab(self.alphabet)

  def split_of(self, prompt: str) -> str:
    """"heldout" or "train", from a stable hash of the prompt."""
    held = _hash01(prompt, self.name) < self.heldout_fraction * (1 << 32)
    return "heldout" if held else "train"

  def _examples(self, n: int, seed: int, split: str, cold: bool) -> list[Example]:
    if not isinstance(n, int) or n < 0:
      raise ValueError(f"n must be an int >= 0, got {n!r}.")
    if split not in ("train", "heldout"):
      raise ValueError(f"split must be 'train' or 'heldout', got {split!r}.")
    rng = random.Random(f"{self.name}:{seed}:{split}:{int(cold)}")
    seen, out = set(), []
    attempts, max_attempts = 0, 200 * n + 1000
    while len(out) < n:
      attempts += 1
      if attempts > max_attempts:
        raise ValueError(f"{self.name}: found only {len(out)} distinct {split} problems "
                         f"of {n} requested; raise the difficulty or ask for fewer.")
      p = self._problem(rng)
      if p.prompt in seen or self.split_of(p.prompt) != split:
        continue
      seen.add(p.prompt)
      out.append(self._finish(p, split, cold))
    return out

  def _finish(self, p: Problem, split: str, cold: bool) -> Example:
    depth = self.cold_start.depth_for(p.prompt) if cold else 0
    use_cold = cold and self.cold_start.kind != "none"
    answer = self.cold_start.apply(p.answer, depth) if use_cold else p.answer
    prompt = p.prompt
    if use_cold and self.cold_start.depths and self.cold_start.cue_in_prompt:
      prompt = prompt + self.cold_start.marker * depth
    name, kwargs = self._verifier(use_cold, depth)
    if split == "train" and self.reward_spec is not None:
      marker = {"marker": self.rationale_end, "answer_after": self.rationale_end}
      name, kwargs = self.reward_spec.resolve(marker, (name, kwargs))
    meta = {"task": self.name, "split": split, "warmup_answer": p.answer,
            "cold_start": self.cold_start.kind if use_cold else "none",
            "cold_start_depth": depth if use_cold else 0, **p.metadata}
    return Example(prompt, p.rationale, answer, self.rationale_end, name, kwargs, meta)

  def warmup_corpus(self, n: int, seed: int = 0) -> list[Example]:
    """n warm-up SFT examples (train split, warm-up answer format)."""
    return self._examples(n, seed, "train", cold=False)

  def rl_prompts(self, n: int, seed: int = 0, split: str = "train") -> list[Example]:
    """n RL examples of `split` ("train" or "heldout"), answers in the RL format
    (the cold-start format when `cold_start.kind != "none"`)."""
    return self._examples(n, seed, split, cold=True)
