"""CHAMP's verifiable problems as an RL task, with a held-out split (docs/decisions/0034).

    task = get_task("champ", cold_start=ColdStart(kind="prefix", depth=2))
    train = task.rl_prompts(64, seed=1)                  # RL prompts, never held out
    held = task.rl_prompts(32, seed=2, split="heldout")  # evaluation only

The problems are the `number`, `expression` and `yes_no` kinds of `data.champ`
(170 of 270: the others have free-form answers no automatic verifier reads). A
problem's split is a stable hash of its CHAMP identifier, so train and held-out
problems never overlap, whatever the seeds or sizes asked for.

The model writes its reasoning, the end-of-rationale marker (default "|") and the
answer. Warm format: the verifier reads what follows the marker (math equivalence for
numbers and expressions, exact match for yes/no; the first line after the marker is
the answer), and the teacher-forced gold of
GARL/PAFT is the first gold alias. Cold format (`ColdStart(kind="prefix")`): the
answer must start with `depth` markers ("|!!42"); the verifier then reads only what
follows the marker and those prefix characters, so an answer in the warm format
("|42") is unparsable and scores 0. A suffix is not offered: math-verify would read
"42!!" as a double factorial.

CHAMP has no worked rationales in this form, so there is no SFT warm-up corpus.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any, Sequence

from reasoning_jax.data.champ import ChampProblem, load_champ
from reasoning_jax.data.tasks.base import ColdStart, Example, _hash01
from reasoning_jax.rewards.base import RewardItem
from reasoning_jax.rewards.spec import RewardSpec, reward_spec_for

CHAMP_KINDS = ("number", "expression", "yes_no")
_COLD_KINDS = ("none", "prefix")
# The metadata keys every CHAMP example carries (for `use_reward`'s check).
_METADATA = ("answer_kind", "category", "cold_start", "cold_start_depth", "golds", "id",
             "split", "task", "warmup_answer")


@dataclasses.dataclass(frozen=True)
class ChampExample(Example):
  """An Example scored against every gold alias of its CHAMP problem
  (`metadata["golds"]`), not only the teacher-forced `answer` string."""

  def reward_item(self, completion: str, num_tokens: int | None = None) -> RewardItem:
    """A RewardItem with all of the problem's gold aliases."""
    return RewardItem(completion, list(self.metadata["golds"]), num_tokens,
                      dict(self.metadata))


class ChampTask:
  """CHAMP problems of the given answer `kinds`, split by identifier hash.

  Args:
    kinds: answer kinds to keep, a subset of `CHAMP_KINDS`.
    cold_start: "none" (warm format) or "prefix" (the answer must start with
      `depth` copies of `marker`).
    rationale_end: the marker the answer follows.
    heldout_fraction: the share of problems held out for evaluation.
  """
  name = "champ"

  def __init__(self, kinds: Sequence[str] = CHAMP_KINDS, *,
               cold_start: ColdStart = ColdStart(), rationale_end: str = "|",
               heldout_fraction: float = 0.3):
    bad = [k for k in kinds if k not in CHAMP_KINDS]
    if not kinds or bad:
      raise ValueError(f"champ kinds must be a non-empty subset of {CHAMP_KINDS}, got "
                       f"{tuple(kinds)!r} (free_text answers have no verifier)")
    if not isinstance(cold_start, ColdStart):
      raise TypeError(f"cold_start must be a ColdStart, got {type(cold_start).__name__}.")
    if cold_start.kind not in _COLD_KINDS:
      raise ValueError(f"TaskSpec.cold_start = {cold_start.kind!r} is not defined for "
                       f"champ; use one of {_COLD_KINDS} (a suffix would be read as part "
                       "of a math answer, reversal is undefined for expressions)")
    if cold_start.depths:
      raise ValueError("TaskSpec.cold_start_depths is not supported by champ; set "
                       "TaskSpec.cold_start_depth")
    if not rationale_end or cold_start.marker in rationale_end:
      raise ValueError(f"rationale_end {rationale_end!r} must be non-empty and must not "
                       f"contain the cold-start marker {cold_start.marker!r}")
    if not 0.0 < heldout_fraction < 1.0:
      raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}.")
    self.kinds, self.cold_start = tuple(kinds), cold_start
    self.rationale_end, self.heldout_fraction = rationale_end, heldout_fraction
    self.reward_spec: RewardSpec | None = None
    self._problems: list[ChampProblem] | None = None

  # ------------------------------------------------------------------ problems
  def problems(self) -> list[ChampProblem]:
    """The kept problems (verifiable, of `kinds`), in CHAMP's file order."""
    if self._problems is None:
      self._problems = [p for p in load_champ()
                        if p.reward is not None and p.answer_kind in self.kinds]
    return self._problems

  def split_of(self, identifier: str) -> str:
    """"heldout" or "train", from a stable hash of the CHAMP identifier."""
    held = _hash01(identifier, self.name) < self.heldout_fraction * (1 << 32)
    return "heldout" if held else "train"

  @property
  def cold_prefix(self) -> str:
    """What the answer must start with in the RL format ("" when warm)."""
    cs = self.cold_start
    return cs.marker * cs.depth if cs.kind == "prefix" else ""

  def verifier(self, problem: ChampProblem) -> tuple[str, dict[str, Any]]:
    """(reward name, kwargs): the problem's verifier reading after the marker and,
    in the cold format, the required prefix."""
    # The answer is bare text after the marker (and prefix): read its first line, not
    # the last number in it ("auto" would take 1 from "(x^2+x+1)(x^2-x+1)").
    return problem.reward, {"answer_after": self.rationale_end + self.cold_prefix,
                            "style": "first_line"}

  def example(self, problem: ChampProblem, split: str, training: bool = False
              ) -> ChampExample:
    """The RL example of one problem (answer in the RL format)."""
    name, kwargs = self.verifier(problem)
    if training and self.reward_spec is not None:
      name, kwargs = self.reward_spec.resolve(dict(kwargs), (name, kwargs))
    cs = self.cold_start
    meta = {"task": self.name, "split": split, "id": problem.identifier,
            "category": problem.category, "answer_kind": problem.answer_kind,
            "golds": list(problem.golds), "warmup_answer": problem.golds[0],
            "cold_start": cs.kind, "cold_start_depth": cs.depth if self.cold_prefix else 0}
    return ChampExample(problem.problem, "", self.cold_prefix + problem.golds[0],
                        self.rationale_end, name, kwargs, meta)

  def rl_prompts(self, n: int, seed: int = 0, split: str = "train") -> list[Example]:
    """n distinct problems of `split` ("train" or "heldout"), shuffled by `seed`."""
    if split not in ("train", "heldout"):
      raise ValueError(f"split must be 'train' or 'heldout', got {split!r}.")
    pool = [p for p in self.problems() if self.split_of(p.identifier) == split]
    if not isinstance(n, int) or not 0 <= n <= len(pool):
      field = "TaskSpec.num_train" if split == "train" else "TaskSpec.num_eval"
      raise ValueError(f"champ has {len(pool)} {split} problems of kinds {self.kinds}; "
                       f"{n!r} were asked for: set {field} <= {len(pool)}")
    random.Random(f"{self.name}:{seed}:{split}").shuffle(pool)
    return [self.example(p, split, training=split == "train") for p in pool[:n]]

  # ------------------------------------------------------------------ the Task API
  def warmup_corpus(self, n: int, seed: int = 0) -> list[Example]:
    """CHAMP has no worked rationales to warm up on."""
    raise ValueError("champ has no worked rationales for an SFT warm-up; set "
                     "SFTConfig.steps = 0")

  def use_reward(self, name: str, options=(), *, field: str = "TaskSpec.reward"
                 ) -> "ChampTask":
    """Sets the RL training reward of train examples ("task" is the verifier);
    held-out examples keep the verifier. Returns self."""
    self.reward_spec = reward_spec_for(name, options, field=field, metadata=_METADATA,
                                       source="champ")
    return self

  def vocab(self):
    """Real text needs a real tokenizer."""
    raise ValueError("champ has no character vocabulary; set TaskSpec.tokenizer = "
                     "'checkpoint' (or a tokenizer path)")
