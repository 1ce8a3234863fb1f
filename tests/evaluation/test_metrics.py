"""pass@k and maj@k against hand-computed values and brute-force references."""
import itertools
import math
from collections import Counter

import numpy as np
import pytest

from reasoning_jax.evaluation.metrics import (length_summary, maj_at_k, majority_answer,
                                              mean_pass_at_k, pass_at_k, truncation_rate)


def test_pass_at_k_hand_values():
  assert pass_at_k(5, 2, 1) == pytest.approx(0.4, abs=1e-15)
  assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-15)  # 1 - C(3,2)/C(5,2)
  assert pass_at_k(4, 0, 2) == 0.0
  assert pass_at_k(3, 2, 2) == 1.0  # n - c < k: every pair holds a correct one
  assert pass_at_k(10, 10, 10) == 1.0
  # Product form stays exact where the binomials are astronomically large.
  assert pass_at_k(1000, 1, 1) == pytest.approx(1e-3, rel=1e-12)
  assert pass_at_k(2000, 3, 1000) == pytest.approx(
      1 - math.comb(1997, 1000) / math.comb(2000, 1000), rel=1e-12)


def test_pass_at_k_equals_combinatorial_formula():
  for n in range(1, 13):
    for c in range(n + 1):
      for k in range(1, n + 1):
        naive = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(naive, abs=1e-12), (n, c, k)


def test_pass_at_k_rejects_bad_arguments():
  with pytest.raises(ValueError, match="1 <= k <= n"):
    pass_at_k(4, 1, 5)
  with pytest.raises(ValueError, match="0 <= c <= n"):
    pass_at_k(4, 5, 1)
  with pytest.raises(TypeError, match="k must be an integer"):
    pass_at_k(4, 1, 1.0)


def test_mean_pass_at_k():
  correct = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
  # k=2: prompt 0: 1 - C(3,2)/C(4,2) = 0.5; prompt 1: 1 - 1/6; prompt 2: 0.
  assert mean_pass_at_k(correct, 2) == pytest.approx((0.5 + 5 / 6 + 0) / 3, abs=1e-15)
  assert mean_pass_at_k(correct, 1) == pytest.approx(correct.mean(), abs=1e-15)
  with pytest.raises(ValueError, match=r"\[P, N\] matrix"):
    mean_pass_at_k(np.zeros(4, bool), 1)
  with pytest.raises(ValueError, match="booleans or 0/1"):
    mean_pass_at_k(np.full((2, 2), 0.5), 1)


def test_majority_answer_first_seen_tie_and_abstentions():
  assert majority_answer(["b", "a", "a", "b"]) == 0  # 2-2 tie: "b" seen first
  assert majority_answer([None, "a", "b", "b"]) == 2
  assert majority_answer([None, None]) is None


def test_maj_at_k_exact_when_n_equals_k():
  answers = [["a", "b", "a"], ["b", "a", "a", "b"], [None, None, None], ["7", None, "7"]]
  gold = ["b", "b", "x", "7"]
  table = [[a == g for a in row] for row, g in zip(answers, gold)]
  # Prompt 0: "a" wins (wrong); 1: tie -> "b" first seen (right); 2: no votes; 3: right.
  assert maj_at_k(answers[:1], table[:1], 3) == 0.0
  assert maj_at_k([answers[1]], [table[1]], 4) == 1.0
  assert maj_at_k([answers[2]], [table[2]], 3) == 0.0
  assert maj_at_k([answers[3]], [table[3]], 3) == 1.0
  # Prompt 1 with k=3 < N=4: subsets (0,1,2) "a", (0,1,3) "b", (0,2,3) "b",
  # (1,2,3) "a": 1/2; prompt 0: 0. Mean 1/4.
  assert maj_at_k(answers[:2], lambda p, a: a == gold[p], 3) == 0.25
  assert maj_at_k([answers[1]], lambda p, a: a == "b", 4) == 1.0


def test_maj_at_k_over_all_subsets_by_hand():
  # k=2 of ["y", "x", "x"], gold x: (0,1) tie -> y, (0,2) tie -> y, (1,2) -> x: 1/3.
  assert maj_at_k([["y", "x", "x"]], [[False, True, True]], 2) == pytest.approx(1 / 3)
  # The correctness table is per sample: the vote takes its first occurrence's entry.
  assert maj_at_k([["x", "x"]], [[True, False]], 2) == 1.0
  assert maj_at_k([["x", "x"]], [[False, True]], 2) == 0.0


def _brute_maj(answers, gold, k):
  scores = []
  for p, row in enumerate(answers):
    hits = []
    for sub in itertools.combinations(range(len(row)), k):
      votes = Counter(row[i] for i in sub if row[i] is not None)
      # most_common keeps first-encountered order among equal counts.
      hits.append(bool(votes) and votes.most_common(1)[0][0] == gold[p])
    scores.append(np.mean(hits))
  return float(np.mean(scores))


def test_maj_at_k_matches_brute_force_and_pass_at_1():
  rng = np.random.default_rng(0)
  for trial in range(20):
    n = int(rng.integers(1, 8))
    k = int(rng.integers(1, n + 1))
    answers = [[None if rng.random() < 0.2 else str(rng.integers(0, 3)) for _ in range(n)]
               for _ in range(3)]
    gold = ["0", "1", "2"]
    table = np.array([[a == g for a in row] for row, g in zip(answers, gold)])
    expected = _brute_maj(answers, gold, k)
    assert maj_at_k(answers, table, k) == pytest.approx(expected, abs=1e-12), trial
    assert maj_at_k(answers, lambda p, a: a == gold[p], k) == pytest.approx(expected,
                                                                             abs=1e-12)
    # One vote is just that sample's correctness: maj@1 == pass@1.
    assert maj_at_k(answers, table, 1) == pytest.approx(mean_pass_at_k(table, 1),
                                                        abs=1e-12)


def test_maj_at_k_random_subsets_are_seeded_and_near_exact():
  rng = np.random.default_rng(1)
  answers = [[str(rng.integers(0, 3)) for _ in range(16)] for _ in range(6)]
  gold = ["0"] * 6
  table = [[a == "0" for a in row] for row in answers]
  exact = maj_at_k(answers, table, 4, max_subsets=math.comb(16, 4))  # all 1820 subsets
  assert exact == pytest.approx(_brute_maj(answers, gold, 4), abs=1e-12)
  est = maj_at_k(answers, table, 4, seed=3, max_subsets=200)
  assert est == maj_at_k(answers, table, 4, seed=3, max_subsets=200)
  assert est != maj_at_k(answers, table, 4, seed=4, max_subsets=200)
  # 6 prompts x 200 subsets: standard error <= 0.5 / sqrt(1200) ~ 0.015.
  assert abs(est - exact) < 0.06


def test_maj_at_k_rejects_bad_arguments():
  with pytest.raises(ValueError, match="k=3 and N=2 samples for prompt 0"):
    maj_at_k([["a", "b"]], [[True, False]], 3)
  with pytest.raises(ValueError, match="same"):
    maj_at_k([["a", "b"]], [[True]], 1)


def test_length_summary_and_truncation_rate():
  out = length_summary([1, 2, 3, 4], truncated=[False, False, True, False])
  assert out == {"length_mean": 2.5, "length_median": 2.5,
                 "length_p90": pytest.approx(3.7), "length_max": 4.0,
                 "truncated_frac": 0.25}
  assert truncation_rate(np.array([2, 1, 2]) != 1) == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="booleans or 0/1"):
    truncation_rate([2, 1])


def test_vote_key_merges_surface_forms_of_one_answer():
  from reasoning_jax.evaluation.loop import vote_key
  for same in (["1,000", "1000", " \\boxed{1000}", "1000.0", "$1000$", "1000."],
               ["x + 1", "X+1", "\\boxed{x+1}"], ["1/2", "0.5", "\\frac{1}{2}"]):
    assert len({vote_key(a) for a in same}) == 1, same
  assert vote_key("50%") != vote_key("50")  # the verifier's percent rule is its own
  assert vote_key("7") != vote_key("1000")
  assert vote_key(None) is None and vote_key("  ") is None


def test_evaluate_votes_on_normalised_answers_and_counts_samples(monkeypatch):
  """Four samples "7", "1,000", "1000", "$1000$" (gold 1000): raw strings would elect the
  first, "7" (maj@4 = 0); normalised votes elect 1000 (maj@4 = 1). The sampled
  completions' verifier counts are reported next to the greedy ones."""
  import jax
  from reasoning_jax.data.tasks.base import Example
  from reasoning_jax.evaluation import loop as L
  from reasoning_jax.rewards import RewardRunner
  ex = Example("q", "", "1000", "=>", "math", {}, {})
  greedy = ["a=>7"]
  sampled = ["a=>7", "b=>1,000", "c=>1000", "d=>$1000$"]

  def fake_generate(params, cfg, prompts, codec, *, samples, **kw):
    texts = greedy if samples == 1 else sampled
    return texts, np.full(len(texts), 5), np.zeros(len(texts), np.int32)

  monkeypatch.setattr(L, "_generate", fake_generate)

  class Codec:
    def prompt_ids(self, text):
      return [1]

  runner = RewardRunner(num_workers=0)
  try:
    out = L.evaluate(None, None, [ex], Codec(), runner, key=jax.random.key(0),
                     max_new_tokens=8, samples=4)
  finally:
    runner.close()
  assert out["eval/greedy_accuracy"] == 0.0
  assert out["eval/accuracy"] == 0.75  # pass@1 over the samples: 3 of 4
  assert out["eval/pass@4"] == 1.0
  assert out["eval/maj@4"] == 1.0
  assert out["eval/reward/ok"] == 1.0 and out["eval/sampled/reward/ok"] == 4.0
