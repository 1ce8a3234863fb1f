"""Fuzzing extraction and equivalence with adversarial strings (hypothesis).

Extraction is pure regex/brace scanning and is called in-process: it must never raise
and never return an empty string. Equivalence can reach sympy, which can hang, so it is
fuzzed through the runner: every item must come back with a known reason, within the
per-item timeout.
"""
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reasoning_jax.rewards import (REASONS, STYLES, RewardRunner, check_equivalence,
                                   extract_answer,
                                   get_reward, make_items, qa_f1)

# Pieces that stress the parsers: unbalanced braces, nested boxes, LaTeX commands,
# huge exponents, markers, unicode, separators.
PIECES = ["\\boxed{", "\\fbox{", "}", "{", "\\frac", "\\sqrt", "^", "^{", "9", "1,000",
          "####", "<answer>", "</answer>", "Answer:", "$", "\\", "(", ")", "[", "]",
          "-", ".", "/", "%", "e", "x", "\\infty", "=", ",", " ", "\n", "\\left(",
          "\\right)", "\\{", "\\}", "é", "∞", "\x00", "!", "10^{10^{10}}", "\\text{",
          "<think>", "</think>", "\\pi", "0.", "1e309", "nan", "inf"]
ADVERSARIAL = st.lists(st.sampled_from(PIECES), max_size=30).map("".join) | st.text(
    max_size=200)


@settings(max_examples=400, deadline=None)
@given(text=ADVERSARIAL, style=st.sampled_from(STYLES))
def test_extraction_never_raises(text, style):
  out = extract_answer(text, style)
  assert out is None or (isinstance(out, str) and out)


@settings(max_examples=200, deadline=None)
@given(pred=ADVERSARIAL, gold=ADVERSARIAL)
def test_qa_f1_never_raises_and_is_a_probability(pred, gold):
  if gold:
    assert 0.0 <= qa_f1(pred, gold) <= 1.0


NUMBERISH = st.from_regex(r"[-+]?[0-9,]{0,12}(\.[0-9]{0,6})?(e[-+]?[0-9]{1,3})?%?/?[0-9]{0,4}",
                          fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(pred=NUMBERISH, gold=NUMBERISH)
def test_number_fast_path_never_raises(pred, gold):
  # Number-like strings take the in-process fast path (or sympy on bounded input).
  verdict = check_equivalence(pred, gold)
  assert verdict.reason in REASONS
  if pred == gold and verdict.reason == "ok":
    assert verdict.match
  if verdict.reason != "ok":
    assert not verdict.match and verdict.detail


TIMEOUT_S = 2.0


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(texts=st.lists(ADVERSARIAL | ADVERSARIAL.map(lambda s: f"\\boxed{{{s}}}"),
                      min_size=1, max_size=8),
       golds=st.lists(ADVERSARIAL, min_size=8, max_size=8))
def test_equivalence_always_reports_a_reason_in_time(runner, texts, golds):
  items = make_items(texts, golds[:len(texts)])
  t0 = time.monotonic()
  res = runner.score(get_reward("math"), items)
  elapsed = time.monotonic() - t0
  assert len(res.outcomes) == len(items)
  assert all(o.reason in REASONS for o in res.outcomes)
  for o in res.outcomes:
    if o.reason in ("ok", "unparsable_answer"):
      assert o.score in (0.0, 1.0)            # a verdict (no answer is a wrong answer)
    else:
      assert math.isnan(o.score) and o.detail  # no score, and it says why
  # Worst case: every item of a worker's share times out, one after another.
  assert elapsed < len(items) * TIMEOUT_S + 3.0


@pytest.fixture(scope="module")
def runner():
  with RewardRunner(num_workers=2, timeout_s=TIMEOUT_S) as r:
    r.wait_ready()
    yield r
