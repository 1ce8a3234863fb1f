"""Named rewards: values on hand-made items, reasons, and clear errors."""
import math
import pickle
import subprocess
import sys

import pytest

from reasoning_jax.rewards import REWARDS, RewardItem, get_reward, score_item


def _s(reward, completion, gold=None, **kw):
  return score_item(reward, RewardItem(completion, gold, **kw))


def test_unknown_reward_lists_known_ones():
  with pytest.raises(ValueError, match=r"Unknown reward 'maths'.*'math'"):
    get_reward("maths")
  with pytest.raises(TypeError, match="Bad arguments for reward 'exact'"):
    get_reward("exact", nonsense=1)
  with pytest.raises(ValueError, match="Unknown extraction style"):
    get_reward("math", style="boxd")


def test_every_reward_is_picklable():
  for name in REWARDS:
    kwargs = {"components": ((1.0, "math"),)} if name == "weighted" else {}
    reward = get_reward(name, **kwargs)
    assert pickle.loads(pickle.dumps(reward)) == reward


def test_math_and_dapo_and_gsm8k():
  assert _s(get_reward("math"), "so \\boxed{0.5}", "\\frac12").score == 1.0
  assert _s(get_reward("math"), "so \\boxed{0.6}", ["1/2", "0.6"]).score == 1.0
  out = _s(get_reward("dapo_math"), "no box", "1")
  assert (out.score, out.reason) == (-1.0, "unparsable_answer")
  assert _s(get_reward("dapo_math"), "\\boxed{2}", "1").score == -1.0
  assert _s(get_reward("gsm8k"), "... #### 1,234", "1234").score == 1.0
  # answer_after: only text after </think> counts.
  r = get_reward("math", answer_after="</think>")
  assert _s(r, "<think>\\boxed{3}</think> it is \\boxed{4}", "4").score == 1.0
  assert _s(r, "<think>\\boxed{4}", "4").reason == "unparsable_answer"
  out = _s(get_reward("math"), "\\boxed{4}", None)
  assert out.reason == "unparsable_gold" and math.isnan(out.score)


def test_exact_qa_format():
  r = get_reward("exact", marker="|")
  assert _s(r, "14,13,08|0579", "0579").score == 1.0
  assert _s(r, "14,13,08|0579!", "0579").score == 0.0
  assert _s(r, "14,13,08 0579", "0579").reason == "unparsable_answer"
  assert _s(get_reward("qa_f1"), "<answer>Eiffel Tower Paris</answer>",
            "Eiffel Tower").score == pytest.approx(0.8)
  assert _s(get_reward("qa_exact_match"), "Answer: The Beatles", "beatles").score == 1.0
  assert _s(get_reward("qa_substring"), "it is the beatles", ["Beatles"]).score == 1.0
  assert _s(get_reward("think_format"), "<think>a</think>b").score == 1.0
  assert _s(get_reward("answer_format"), "<think>a</think>b").score == 0.0


def test_countdown_reward():
  r = get_reward("countdown", marker="|")
  meta = {"numbers": [50, 25, 4], "target": 100}
  assert _s(r, "..|(50-25)*4", metadata=meta).score == 1.0
  assert _s(r, "..|50*2", metadata=meta).score == 0.0          # 2 not given
  assert _s(r, "..|50+25+4", metadata=meta).score == 0.0       # wrong value
  assert _s(r, "..|__import__('os')", metadata=meta).reason == "unparsable_answer"
  assert _s(r, "..|(50-25)*4").reason == "unparsable_gold"      # no metadata


def test_laser_dapo_rlcr_weighted():
  laser = get_reward("laser", target_length=100, alpha=0.5)
  assert _s(laser, "<think>a</think>\\boxed{3}", "3", num_tokens=50).score == 1.5
  assert _s(laser, "<think>a</think>\\boxed{3}", "3", num_tokens=150).score == 1.0
  assert _s(laser, "<think>a</think>\\boxed{2}", "3", num_tokens=50).score == -0.5
  assert _s(laser, "<think>a</think> 3", "3", num_tokens=50).score == -1.0
  assert _s(laser, "<think>a</think>\\boxed{3}", "3").reason == "exception"
  dapo = get_reward("dapo_overlong", max_length=100, cache_length=20)
  assert _s(dapo, "x", num_tokens=90).score == pytest.approx(-0.5)
  text = ("<think>t</think><answer>4</answer><analysis>a</analysis>"
          "<confidence>0.75</confidence>")
  assert _s(get_reward("rlcr"), text, "4").score == pytest.approx(1 - 0.0625)
  assert _s(get_reward("rlcr"), text, "5").score == pytest.approx(-0.5625)
  assert _s(get_reward("rlcr", form="official"), text, "4").score == pytest.approx(
      0.5 + 0.5 + 0.5 * (1 - 0.0625))
  w = get_reward("weighted", components=((1.0, "math"), (0.5, "think_format")))
  assert _s(w, "<think>a</think>\\boxed{2}", "2").score == 1.5
  out = _s(w, "<think>a</think>no answer", "2")
  assert (out.score, out.reason) == (0.5, "unparsable_answer")
  with pytest.raises(ValueError, match="components"):
    get_reward("weighted")


def test_rewards_never_import_jax():
  code = ("import sys, reasoning_jax.rewards, reasoning_jax.rewards._worker; "
          "print('jax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == "False"
