"""The worker-pool runner: order, reasons, timeouts with replacement, crashes, threads."""
import dataclasses
import math
import os
import threading
import time

import numpy as np
import pytest

from reasoning_jax.rewards import (RewardItem, RewardRunner, get_reward, make_items,
                                   score_item)

TIMEOUT_S = 1.0


@dataclasses.dataclass(frozen=True)
class Misbehave:
  """Test reward: hangs, crashes the process, or raises, depending on the completion."""

  def __call__(self, item):
    if item.completion == "hang":
      time.sleep(600)
    if item.completion == "crash":
      os._exit(3)
    if item.completion == "raise":
      raise KeyError("boom")
    return float(len(item.completion))


@pytest.fixture(scope="module")
def runner():
  with RewardRunner(num_workers=2, timeout_s=TIMEOUT_S, chunk_size=4) as r:
    r.wait_ready()
    yield r


def test_scores_match_in_process_and_keep_order(runner):
  reward = get_reward("math")
  completions = ["\\boxed{1/2}", "#### 1,000", "no answer", "\\boxed{x^2-1}",
                 "The answer is 7", "\\boxed{(0,1]}", "<answer>3</answer>"] * 5
  golds = ["0.5", "1000", "3", "(x-1)(x+1)", "8", "(0,1]", "\\frac{6}{2}"] * 5
  items = make_items(completions, golds)
  res = runner.score(reward, items)
  expected = [score_item(reward, it) for it in items]
  assert res.outcomes == tuple(expected)
  np.testing.assert_array_equal(res.scores, [1, 1, 0, 1, 0, 1, 1] * 5)
  assert res.counts()["unparsable_answer"] == 5
  assert res.metrics()["reward/ok"] == 30.0


def test_hang_times_out_and_pool_keeps_its_size(runner):
  texts = ["a", "bb", "hang", "ccc", "dddd", "hang", "e", "ff", "ggg"]
  t0 = time.monotonic()
  res = runner.score(Misbehave(), make_items(texts))
  elapsed = time.monotonic() - t0
  assert res.reasons == ("ok", "ok", "timeout", "ok", "ok", "timeout", "ok", "ok", "ok")
  np.testing.assert_array_equal(res.scores[[0, 1, 3, 4, 6, 7, 8]], [1, 2, 3, 4, 1, 2, 3])
  assert math.isnan(res.scores[2]) and math.isnan(res.scores[5])
  assert res.restarts == 2 and res.metrics()["reward/timeout"] == 2.0
  # The two hangs sit in different chunks, so they time out in parallel.
  assert elapsed < 2 * TIMEOUT_S + 3.0
  assert len(runner._workers) == 2 and all(w.proc.is_alive() for w in runner._workers)
  # And the refreshed pool still scores.
  assert runner.score(Misbehave(), make_items(["xyz"])).scores.tolist() == [3.0]


def test_real_sympy_hang_is_a_timeout(runner):
  # A tower of powers makes sympy compute a gigantic integer: an unkillable-thread case.
  res = runner.score(get_reward("math"),
                     make_items(["\\boxed{9^{9^{9^{9}}}}", "\\boxed{5}"], ["5", "5"]))
  assert res.reasons == ("timeout", "ok")
  assert res.scores[1] == 1.0


def test_crash_and_exception_are_reasons(runner):
  res = runner.score(Misbehave(), make_items(["ok", "crash", "raise", "tail"]))
  assert res.reasons == ("ok", "exception", "exception", "ok")
  assert "died" in res.outcomes[1].detail and "KeyError" in res.outcomes[2].detail
  assert res.scores[3] == 4.0


def test_unparsable_gold_is_nan_not_zero(runner):
  res = runner.score(get_reward("math"), make_items(["\\boxed{1}"], ["\\frac{"]))
  assert res.reasons == ("unparsable_gold",) and math.isnan(res.scores[0])
  assert res.filled(-1.0).tolist() == [-1.0]


def test_off_main_thread_and_submit(runner):
  items = make_items(["\\boxed{\\sqrt{8}}"], ["2\\sqrt{2}"])
  out = {}
  t = threading.Thread(target=lambda: out.setdefault("r", runner.score(
      get_reward("math"), items)))
  t.start()
  t.join(30)
  assert out["r"].scores.tolist() == [1.0]
  assert runner.submit(get_reward("math"), items).result(30).scores.tolist() == [1.0]


def test_in_process_mode_and_bad_input():
  with RewardRunner(num_workers=0) as r:
    assert r.score(get_reward("gsm8k"), make_items(["#### 4"], ["4"])).scores[0] == 1.0
    with pytest.raises(TypeError, match="expected RewardItem"):
      r.score(get_reward("gsm8k"), ["#### 4"])
  with pytest.raises(ValueError, match="num_workers"):
    RewardRunner(num_workers=-1)
  with pytest.raises(ValueError, match="timeout_s"):
    RewardRunner(num_workers=0, timeout_s=0)
  with pytest.raises(ValueError, match="golds has 1 entries but there are 2"):
    make_items(["a", "b"], ["a"])
  with pytest.raises(TypeError, match="completion must be str"):
    RewardItem(completion=3)  # type: ignore[arg-type]


def test_unpicklable_reward_is_a_clear_error(runner):
  with pytest.raises(TypeError, match="picklable"):
    runner.score(lambda item: 1.0, make_items(["a"]))


def test_worker_killed_while_idle_is_replaced(runner):
  victim = runner._workers[0].proc
  victim.kill()
  victim.join(5)
  res = runner.score(Misbehave(), make_items(["a", "bb", "ccc", "dddd"] * 3))
  assert res.scores.tolist() == [1.0, 2.0, 3.0, 4.0] * 3
  assert len(runner._workers) == 2 and all(w.proc.is_alive() for w in runner._workers)
