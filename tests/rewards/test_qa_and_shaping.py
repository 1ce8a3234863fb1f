"""QA matching, format/length/calibration rewards, combination: hand-computed values."""
import numpy as np
import pytest

from reasoning_jax.rewards import (answer_format_reward, combine_rewards,
                                   dapo_overlong_penalty, laser_d_rewards,
                                   laser_d_targets, laser_rewards, parse_confidence,
                                   qa_exact_match, qa_f1, qa_normalize,
                                   qa_substring_match, rlcr_reward,
                                   think_format_reward)


def test_qa_normalize_is_squad():
  assert qa_normalize("  The  Eiffel-Tower, in PARIS! ") == "eiffeltower in paris"
  assert qa_normalize("An apple a day") == "apple day"


@pytest.mark.parametrize("pred,gold,em,sub,f1", [
    ("The Beatles", "Beatles", True, True, 1.0),
    ("the eiffel tower in paris", "Eiffel Tower", False, True, 2 * 0.5 * 1 / 1.5),
    ("Paris", ["London", "paris"], True, True, 1.0),
    ("it was 10 days", "1", False, False, 0.0),        # whole tokens only
    ("1.20", "1.2", True, True, 1.0),                  # numbers compared as numbers
    ("25%", "0.25", True, True, 1.0),
    ("yes it is", "yes", False, True, 0.0),            # HotPotQA yes/no rule
    ("no", "no", True, True, 1.0),
    ("Barack Obama", "Obama Barack", False, False, 1.0),
    ("New York City", "york", False, True, 0.5),
])
def test_qa_metrics(pred, gold, em, sub, f1):
  assert qa_exact_match(pred, gold) is em
  assert qa_substring_match(pred, gold) is sub
  assert qa_f1(pred, gold) == pytest.approx(f1)


def test_qa_bad_input():
  with pytest.raises(TypeError, match="gold must be a str or a non-empty sequence"):
    qa_f1("x", [])
  with pytest.raises(TypeError, match="predicted must be str"):
    qa_exact_match(None, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize("text,think,answer", [
    ("<think>reason</think>The answer is 4", 1.0, 0.0),
    ("<think>a</think><answer>4</answer>", 1.0, 1.0),
    ("<think>a</think>\n<answer>4</answer>\n", 1.0, 1.0),
    ("<think>a<think>b</think>", 0.0, 0.0),          # a second <think> is rejected
    ("reason</think>4", 0.0, 0.0),
    (" <think>a</think>4", 0.0, 0.0),                # must start with <think>
    ("<think>a</think><answer>4</answer> trailing", 1.0, 0.0),
])
def test_format_rewards(text, think, answer):
  assert think_format_reward(text) == think
  assert answer_format_reward(text) == answer


def test_dapo_overlong_hand_values():
  # max 100, cache 20: free up to 80, linear to -1 at 100, -1 beyond.
  got = dapo_overlong_penalty(np.array([0, 80, 81, 90, 100, 101]), 100, 20)
  np.testing.assert_allclose(got, [0, 0, -0.05, -0.5, -1.0, -1.0])
  with pytest.raises(ValueError, match="token counts"):
    dapo_overlong_penalty(np.array([1.5]), 100, 20)
  with pytest.raises(ValueError, match="cache_length"):
    dapo_overlong_penalty(np.array([1]), 10, 20)


def test_laser_and_laser_d():
  base = np.array([1.0, 1.0, -0.5, -1.0])
  correct = np.array([True, True, False, False])
  lengths = np.array([50, 150, 10, 10])
  np.testing.assert_allclose(laser_rewards(base, correct, lengths, 100, 0.5),
                             [1.5, 1.0, -0.5, -1.0])
  # Groups of 3: accuracies 1, 1/3, 0 -> easy, medium, hard.
  correct_BG = np.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=bool)
  targets = {"easy": 10, "medium": 20, "hard": 30}
  np.testing.assert_array_equal(laser_d_targets(correct_BG, targets), [10, 20, 30])
  lengths_BG = np.array([[5, 15, 10], [15, 5, 5], [5, 5, 5]])
  base_BG = np.where(correct_BG, 1.0, -0.5)
  np.testing.assert_allclose(
      laser_d_rewards(base_BG, correct_BG, lengths_BG, targets, alpha=0.5),
      [[1.5, 1.0, 1.5], [1.5, -0.5, -0.5], [-0.5, -0.5, -0.5]])
  with pytest.raises(ValueError, match="missing"):
    laser_d_targets(correct_BG, {"easy": 1})


@pytest.mark.parametrize("text,q", [
    ("<confidence>0.8</confidence>", 0.8), ("<confidence> 80% </confidence>", 0.8),
    ("<confidence>1.5</confidence>", None), ("<confidence>high</confidence>", None),
    ("no tag", None), ("<confidence>nan</confidence>", None),
])
def test_parse_confidence(text, q):
  assert parse_confidence(text) == (pytest.approx(q) if q is not None else None)


def test_rlcr_forms():
  assert rlcr_reward(True, 0.8, "paper") == pytest.approx(1 - 0.04)
  assert rlcr_reward(False, 0.8, "paper") == pytest.approx(-0.64)
  assert rlcr_reward(False, None, "paper") == -1.0
  assert rlcr_reward(True, 0.8, "official") == pytest.approx(0.5 + 0.5 + 0.5 * 0.96)
  assert rlcr_reward(False, 0.2, "official") == pytest.approx(0.5 + 0.5 * 0.96)
  assert rlcr_reward(True, None, "official") == 0.5
  assert rlcr_reward(True, 0.9, "official", format_ok=False) == 0.0
  with pytest.raises(ValueError, match="Unknown RLCR form"):
    rlcr_reward(True, 0.5, "brier")


def test_combine_rewards():
  got = combine_rewards({"acc": np.array([1.0, 0.0, np.nan]), "fmt": np.array([1, 1, 0])},
                        {"acc": 1.0, "fmt": 0.25})
  np.testing.assert_allclose(got, [1.25, 0.25, np.nan])
  with pytest.raises(ValueError, match="must name the same rewards"):
    combine_rewards({"acc": np.ones(2)}, {"fmt": 1.0})
  with pytest.raises(ValueError, match="shapes differ"):
    combine_rewards({"a": np.ones(2), "b": np.ones(3)}, {"a": 1.0, "b": 1.0})
