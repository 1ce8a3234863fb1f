"""Start-up checks of the RL sampling settings and the GRPO-family thinking budget."""
import logging

import jax
import numpy as np
import pytest

from reasoning_jax.training.loop import Trainer

from tests.training.test_loop import CoinRunner, tiny_exp


def test_thinking_budget_forces_the_marker_in_grpo_rollouts(tmp_path):
  """With a 3-token budget every completion closes its rationale within 3 sampled
  tokens plus the forced marker (the char vocabulary: one token per character), or
  ended (EOS) before; the answer is sampled after the marker."""
  t = Trainer(tiny_exp("grpo", sft_steps=0, rl_steps=1, thinking_budget=3),
              str(tmp_path))
  t.runner.close()
  t.runner = CoinRunner()
  try:
    t.resume()
    roll, _, warm, _, _ = t._collect(0, jax.random.key(3), np.float32(1.0), None)
    for th in warm:
      th.join()
    marker = t.parts.task.rationale_end
    for text, n in zip(roll.texts, roll.row_stats["length"]):
      # The marker within the budget, or EOS sampled before the budget ran out.
      assert marker in text[:3 + len(marker)] or n <= 3, (text, n)
    assert roll.metrics["rollout/forced_frac"] > 0.5  # an untrained model rarely stops
  finally:
    t.close()


@pytest.mark.parametrize("objective, rl, match", [
    ("grpo", {"thinking_budget": -1}, "RLConfig.thinking_budget = -1: must be >= 0"),
    ("garl", {"thinking_budget": 4}, "RLConfig.thinking_budget = 4: is for the GRPO "
     "family"),
    ("grpo", {"thinking_budget": 15}, "leaves no answer tokens"),
])
def test_bad_thinking_budgets_are_named(tmp_path, objective, rl, match):
  with pytest.raises(ValueError, match=match):
    Trainer(tiny_exp(objective, sft_steps=0, rl_steps=1, **rl), str(tmp_path))


def test_tsallis_runs_warn_at_temperature_other_than_one(tmp_path, caplog):
  with caplog.at_level(logging.WARNING, logger="reasoning_jax"):
    Trainer(tiny_exp("garl", sft_steps=0, rl_steps=1, temperature=0.7),
            str(tmp_path / "a")).close()
  assert "RLConfig.temperature = 0.7 with garl" in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="reasoning_jax"):
    Trainer(tiny_exp("garl", sft_steps=0, rl_steps=1), str(tmp_path / "b")).close()
  assert "RLConfig.temperature" not in caplog.text
