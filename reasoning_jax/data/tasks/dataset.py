"""A task over real data: a prepared tfds split or a JSONL file in the common schema.

Examples keep the synthetic tasks' contract (`Example`): the model writes a rationale,
the end-of-rationale marker (default `</think>`), then the answer. For RL prompts the
gold answer is written as `answer_format` (default `\\boxed{...}`), which is what the
GARL/PAFT layout teacher-forces after each sampled rationale; the verifier extracts
and compares answers (math equivalence, or SQuAD-style QA matching), so sampled
completions need not match the gold string exactly.
"""
from __future__ import annotations

import dataclasses
import random
import re
from typing import Any, Sequence

from reasoning_jax.data.tasks.base import Example
from reasoning_jax.rewards.base import RewardItem
from reasoning_jax.rewards.registry import VERIFIERS
from reasoning_jax.rewards.spec import RewardSpec, parse_reward_spec, reward_spec_for

# The metadata keys every dataset example carries (`DatasetTask._example`).
_METADATA = ("golds", "id", "split", "task")
# An opening tag the prompt template ends in (the default `...\n<think>`).
_OPEN_TAG = re.compile(r"<([A-Za-z][\w-]*)>\s*$")


@dataclasses.dataclass(frozen=True)
class DatasetExample(Example):
  """An Example whose verifier compares against the dataset's gold answer(s), not the
  formatted answer string the model is trained to write.

  `scored_prefix`: the opening tag the prompt ends in (`<think>`), put back in front
  of the completion before scoring, so format rewards (TRL's think regex, RLCR's
  layout) see the tag the model's text continues; the answer rewards read after the
  closing marker and are unaffected.
  """
  scored_prefix: str = ""

  def reward_item(self, completion: str, num_tokens: int | None = None) -> RewardItem:
    """A RewardItem with every gold alias of the record."""
    return RewardItem(self.scored_prefix + completion, list(self.metadata["golds"]),
                      num_tokens, dict(self.metadata))


class DatasetTask:
  """A task whose problems come from a dataset instead of a generator.

  Args:
    source: "tfds:<name>" (one of the builders in `reasoning_jax.data.tfds_builders`,
      prepared under `data_dir`, or prepared now from `manual_dir`) or "jsonl:<path>".
    train_split, eval_split: split names (tfds) or JSONL paths for held-out prompts
      ("jsonl:" sources use `eval_split` as a path; empty means the last 5% of rows).
    reward: the verifier, a correctness reward (`rewards.registry.VERIFIERS`: "math"
      (answer extraction + sympy equivalence), "gsm8k", a QA reward ("qa_exact_match",
      "qa_substring", "qa_f1"), ...); evaluation counts a score > 0.5 as correct. A
      shaped training reward (LASER, RLCR, format, weighted sums) is chosen with
      `use_reward` (`TaskSpec.reward`).
    reward_kwargs: the verifier's options ((name, value) pairs or a dict); its
      `answer_after` defaults to `rationale_end`.
    prompt_template: formats a record (`{question}`, `{context}`) into the prompt.
    rationale_end: the end-of-rationale marker.
    answer_format: formats the gold answer as the model must write it.
  """
  name = "dataset"

  def __init__(self, source: str, *, train_split: str = "train", eval_split: str = "test",
               data_dir: str | None = None, manual_dir: str | None = None,
               reward: str = "math", prompt_template: str = "{question}\n<think>",
               rationale_end: str = "</think>", answer_format: str = " \\boxed{{{answer}}}",
               cold_start: Any = None, reward_kwargs: Any = ()):
    if cold_start is not None and getattr(cold_start, "kind", "none") != "none":
      raise ValueError("cold-start formats are defined for the synthetic tasks only")
    kind, _, where = source.partition(":")
    if kind not in ("tfds", "jsonl") or not where:
      raise ValueError(f"dataset source {source!r}: use 'tfds:<name>' or 'jsonl:<path>'")
    self.kind, self.where = kind, where
    self.train_split, self.eval_split = train_split, eval_split
    self.data_dir, self.manual_dir = data_dir, manual_dir
    if reward not in VERIFIERS:
      raise ValueError(f"DatasetTask reward {reward!r} is not a correctness verifier; "
                       f"choose one of {list(VERIFIERS)} (a shaped training reward such "
                       "as 'laser' or 'rlcr' goes in TaskSpec.reward)")
    verifier = parse_reward_spec(reward, reward_kwargs, field="TaskSpec.kwargs reward",
                                 allow_task=False)
    self.reward, self.prompt_template = reward, prompt_template
    self.rationale_end, self.answer_format = rationale_end, answer_format
    self.verifier = verifier.resolve({"answer_after": rationale_end}, ("", {}))
    self.reward_spec: RewardSpec | None = None
    tag = _OPEN_TAG.search(prompt_template)
    self.scored_prefix = prompt_template[tag.start():] if tag else ""
    self._cache: dict[str, Sequence[dict[str, Any]]] = {}

  def use_reward(self, name: str, options=(), *, field: str = "TaskSpec.reward"
                 ) -> "DatasetTask":
    """Sets the RL training reward of the train split's examples (see
    `rewards.spec`; "task" is the verifier); held-out examples keep the verifier, so
    evaluation accuracy stays a correctness count. Returns self."""
    self.reward_spec = reward_spec_for(name, options, field=field, metadata=_METADATA,
                                       source="dataset")
    return self

  def _records(self, split: str) -> Sequence[dict[str, Any]]:
    if split in self._cache:
      return self._cache[split]
    if self.kind == "tfds":
      from reasoning_jax.data.tfds_builders import data_source
      if not self.data_dir:
        raise ValueError("a tfds source needs data_dir (and manual_dir to prepare it)")
      recs = data_source(self.where, split, self.data_dir, self.manual_dir)
    else:
      from reasoning_jax.data.jsonl import load_examples
      if split == self.train_split or not self.eval_split:
        rows = load_examples(self.where)
        cut = max(1, len(rows) // 20)
        recs = rows[:-cut] if split == self.train_split else rows[-cut:]
      else:
        recs = load_examples(self.eval_split)
    self._cache[split] = recs
    return recs

  def _example(self, rec: dict[str, Any], split: str, training: bool) -> Example:
    golds = [rec["answer"], *rec.get("answer_aliases", [])]
    name, kwargs = self.verifier
    if training and self.reward_spec is not None:
      name, kwargs = self.reward_spec.resolve({"answer_after": self.rationale_end},
                                              self.verifier)
    return DatasetExample(
        prompt=self.prompt_template.format(question=rec["question"],
                                           context=rec.get("context", "")),
        rationale=rec.get("rationale", ""), answer=self.answer_format.format(
            answer=rec["answer"]), rationale_end=self.rationale_end, reward=name,
        reward_kwargs=kwargs, scored_prefix=self.scored_prefix,
        metadata={"task": f"{self.kind}:{self.where}", "split": split,
                  "id": rec.get("id", ""), "golds": golds})

  def _sample(self, split: str, n: int, seed: int) -> list[Example]:
    recs = self._records(split)
    if n > len(recs):
      raise ValueError(f"asked for {n} examples but split {split!r} of {self.kind}:"
                       f"{self.where} has {len(recs)}")
    idx = list(range(len(recs)))
    random.Random(f"{self.where}:{split}:{seed}").shuffle(idx)
    training = split == self.train_split
    return [self._example(recs[i], split, training) for i in idx[:n]]

  def warmup_corpus(self, n: int, seed: int = 0) -> list[Example]:
    """n training examples that have a rationale (for the SFT warm start)."""
    ex = [e for e in self._sample(self.train_split, len(self._records(self.train_split)),
                                  seed) if e.rationale]
    if len(ex) < n:
      raise ValueError(f"only {len(ex)} training examples carry a rationale; lower "
                       "TaskSpec.num_warmup or set SFTConfig.steps = 0")
    return ex[:n]

  def rl_prompts(self, n: int, seed: int = 0, split: str = "train") -> list[Example]:
    """n RL examples from the train split, or from the eval split for "heldout"."""
    return self._sample(self.eval_split if split == "heldout" else self.train_split, n,
                        seed)

  def vocab(self):
    """Real data needs a real tokenizer (TaskSpec.tokenizer = "checkpoint" or a path)."""
    raise ValueError("dataset tasks have no character vocabulary; set TaskSpec.tokenizer "
                     "to 'checkpoint' or a tokenizer path")
