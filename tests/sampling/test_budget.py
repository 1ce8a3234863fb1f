"""Thinking/answer budgets and forced tokens against the host reference state machine.

Every case runs the three prompts in one batch (greedy), so rows that switch phase or
finish at different steps share one decode loop, and compares each row with
`greedy_reference` (full forward pass per step, budget rules written out plainly).
"""
import jax
import numpy as np
import pytest

from reasoning_jax import sampling as rs
from tests.sampling.conftest import PROMPTS
from tests.sampling.reference import full_logits, greedy_reference, log_softmax

N_NEW = 12


def _check_rows(out, refs):
  for i, ref in enumerate(refs):
    n = len(ref.tokens)
    assert int(out.lengths[i]) == n, f"row {i} length"
    assert np.asarray(out.tokens[i, :n]).tolist() == ref.tokens, f"row {i} tokens"
    assert np.asarray(out.forced_mask[i, :n]).tolist() == ref.forced, f"row {i} forced"
    assert not np.asarray(out.forced_mask[i, n:]).any()
    assert rs.FINISH_REASONS[int(out.finish_reason[i])] == ref.reason, f"row {i} reason"
    assert int(out.think_lengths[i]) == ref.think_len, f"row {i} think length"


def _run(tiny, budget, stop=()):
  cfg, params = tiny
  out = rs.generate(params, cfg, PROMPTS, key=jax.random.key(0), max_new_tokens=N_NEW,
                    temperature=0.0, stop_tokens=stop, budget=budget)
  refs = [greedy_reference(params, cfg, p, N_NEW, stop=stop, think=budget.think_tokens,
                           end=budget.end_think, answer=budget.answer_tokens)
          for p in PROMPTS]
  return out, refs


@pytest.fixture(scope="module")
def free(tiny):
  """Unconstrained greedy continuations, to pick end sequences the model does or does
  not emit on its own."""
  cfg, params = tiny
  return [greedy_reference(params, cfg, p, N_NEW).tokens for p in PROMPTS]


def _unused_pair(free):
  seen = {t for row in free for t in row}
  unused = [t for t in range(64) if t not in seen]
  return tuple(unused[:2])


@pytest.mark.parametrize("answer", [None, 4])
def test_end_of_thinking_is_forced_after_the_budget(tiny, free, answer):
  end = _unused_pair(free)
  budget = rs.ThinkingBudget(think_tokens=3, end_think=end, answer_tokens=answer)
  out, refs = _run(tiny, budget)
  _check_rows(out, refs)
  for i in range(3):
    assert np.asarray(out.tokens[i, 3:5]).tolist() == list(end)
    assert np.asarray(out.forced_mask[i]).tolist()[:6] == [0, 0, 0, 1, 1, 0]
  want_len = N_NEW if answer is None else 3 + 2 + answer
  np.testing.assert_array_equal(out.lengths, [want_len] * 3)
  # Forced tokens come from a point mass; the model's own logprob is still reported.
  cfg, params = tiny
  np.testing.assert_array_equal(np.asarray(out.logprobs)[np.asarray(out.forced_mask)], 0.0)
  gen = np.asarray(out.tokens[0, :want_len])
  n = len(PROMPTS[0])
  logits = full_logits(params, cfg, PROMPTS[0] + gen.tolist())[n - 1:n - 1 + want_len]
  want = log_softmax(logits)[np.arange(want_len), gen]
  np.testing.assert_allclose(out.model_logprobs[0, :want_len], want, rtol=0, atol=1e-5)


def test_rationale_only_mode_stops_right_after_end_of_thinking(tiny, free):
  end = _unused_pair(free)
  out, refs = _run(tiny, rs.ThinkingBudget(think_tokens=3, end_think=end, answer_tokens=0))
  _check_rows(out, refs)
  np.testing.assert_array_equal(out.lengths, [5, 5, 5])
  np.testing.assert_array_equal(out.finish_reason, [rs.BUDGET] * 3)
  np.testing.assert_array_equal(out.think_lengths, [5, 5, 5])


def test_zero_thinking_budget_forces_immediately(tiny, free):
  end = _unused_pair(free)
  out, refs = _run(tiny, rs.ThinkingBudget(think_tokens=0, end_think=end, answer_tokens=2))
  _check_rows(out, refs)
  np.testing.assert_array_equal(out.tokens[:, :2], [list(end)] * 3)
  np.testing.assert_array_equal(out.lengths, [4, 4, 4])


@pytest.mark.parametrize("answer", [3, 0])
def test_model_emitting_end_of_thinking_switches_phase_early(tiny, free, answer):
  row0 = free[0]
  # A bigram the model emits itself in row 0 at steps 2-3 (the first time it appears).
  end = tuple(row0[2:4])
  budget = rs.ThinkingBudget(think_tokens=9, end_think=end, answer_tokens=answer)
  out, refs = _run(tiny, budget)
  _check_rows(out, refs)
  first = next(j for j in range(1, N_NEW) if tuple(row0[j - 1:j + 1]) == end)
  assert int(out.think_lengths[0]) == first + 1 < 9
  assert not np.asarray(out.forced_mask[0]).any()
  assert int(out.lengths[0]) == first + 1 + answer
  assert len(set(np.asarray(out.lengths).tolist())) > 1, "rows should end apart"


def test_stop_token_inside_the_answer_phase(tiny, free):
  end = _unused_pair(free)
  cfg, params = tiny
  # The first token the model samples after a forced end at step 2, in row 1.
  after = greedy_reference(params, cfg, PROMPTS[1], N_NEW, think=2, end=end).tokens[4:]
  budget = rs.ThinkingBudget(think_tokens=2, end_think=end, answer_tokens=6)
  out, refs = _run(tiny, budget, stop=(after[1],))
  _check_rows(out, refs)
  assert rs.FINISH_REASONS[int(out.finish_reason[1])] == "stop"
  assert int(out.lengths[1]) <= 6
