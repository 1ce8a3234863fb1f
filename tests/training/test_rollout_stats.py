"""Rollout rationale metrics (`training.rollout`): rationale correctness and
rationale-answer consistency per row, on hand-written completions."""
import numpy as np

from reasoning_jax.data.tasks import ArithmeticTask, ColdStart
from reasoning_jax.data.tasks.base import Problem
from reasoning_jax.training.rollout import _rationale_stats, summarize


def _example(cs=ColdStart("suffix", 1)):
  task = ArithmeticTask(cold_start=cs)
  return task._finish(Problem("567+847=", "14,11,14", "1414"), "train", True)


def test_completion_layout_reads_the_sampled_answer():
  ex = _example()  # gold 1414!
  texts = ["14,11,14|1414!", "14,10,14|1404!", "14,10,14|1414!", "14,11,1"]
  got = _rationale_stats([ex] * 4, texts, "completion")
  np.testing.assert_array_equal(got["rationale_correct"], [True, False, False, False])
  np.testing.assert_array_equal(got["consistent"], [True, True, False, False])
  m = summarize({"length": np.ones(4), "truncated": np.zeros(4), "forced": np.zeros(4),
                 **got}, {}, group=4)
  assert m["rollout/rationale_correct"] == 0.25 and m["rollout/consistent"] == 0.5


def test_tsallis_layout_checks_the_teacher_forced_gold():
  ex = _example(ColdStart("reverse"))  # gold 4141
  got = _rationale_stats([ex] * 2, ["14,11,14|", "14,10,14|"], "tsallis")
  np.testing.assert_array_equal(got["consistent"], [True, False])


def test_examples_without_a_worked_rationale_log_neither():
  ex = _example()
  bare = Problem("1+1=", "", "2")
  task = ArithmeticTask()
  assert _rationale_stats([ex, task._finish(bare, "train", True)], ["a", "b"],
                          "completion") == {}
