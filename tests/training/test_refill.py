"""DAPO's dynamic sampling: zero-variance groups are replaced by over-sampled prompts up
to `RLConfig.refill_rounds` extra rounds (`training.refill`)."""
import jax
import numpy as np
import pytest

from reasoning_jax.objectives import get_objective
from reasoning_jax.rewards import BatchResult, Outcome
from reasoning_jax.training import refill
from reasoning_jax.training.loop import Trainer
from reasoning_jax.training.rollout import Rollouts

from tests.training.test_loop import tiny_exp


def _roll(width, rewards, tag):
  R = len(rewards)
  tokens = np.full((R, width), tag, np.int32)
  tokens[:, 0] = 100 + np.arange(R)  # row id in the first column
  pos = np.tile(np.arange(width, dtype=np.int32), (R, 1))
  ones = np.ones((R, width), np.float32)
  return Rollouts(tokens, pos, ones, ones * 0, ones * 0, ones * 0.5,
                  np.asarray(rewards, np.float32), [f"{tag}-{i}" for i in range(R)], {},
                  {"length": np.full(R, width), "reward": np.asarray(rewards, np.float32)},
                  {"reward/timeout": 1.0})


def test_informative_groups_and_picks():
  keep = refill.informative_groups(np.array([0, 0, 1, 0, 1, 1, 0.5, 0.5]), 2)
  np.testing.assert_array_equal(keep, [False, True, False, False])
  # Informative groups in sampling order first, then the earliest degenerate ones.
  picks = refill.pick_groups([np.array([False, True]), np.array([True, False])], 2)
  assert picks == [(0, 1), (1, 0)]
  picks = refill.pick_groups([np.array([False, False]), np.array([False, True])], 2)
  assert picks == [(1, 1), (0, 0)]
  assert refill.refill_rounds(-1, get_objective("dapo").config()) == refill.AUTO_ROUNDS
  assert refill.refill_rounds(-1, get_objective("grpo").config()) == 0
  assert refill.refill_rounds(2, get_objective("grpo").config()) == 2
  with pytest.raises(ValueError, match="RLConfig.refill_rounds"):
    refill.refill_rounds(-2, None)


def test_merge_widens_and_takes_the_picked_rows():
  a, b = _roll(3, [0, 0, 1, 0], tag=7), _roll(5, [1, 1, 0, 1], tag=9)
  out = refill.merge([a, b], [(1, 1), (0, 1)], group=2, pad_id=-5)
  assert out.tokens.shape == (4, 5)
  # b's group 1 (rows 2, 3) unchanged; a's group 1 (rows 2, 3) left-padded by 2.
  np.testing.assert_array_equal(out.tokens[0], [102, 9, 9, 9, 9])
  np.testing.assert_array_equal(out.tokens[2], [-5, -5, 102, 7, 7])
  np.testing.assert_array_equal(out.positions[3], [-1, -1, 0, 1, 2])
  np.testing.assert_array_equal(out.mask[2], [0, 0, 1, 1, 1])
  np.testing.assert_array_equal(out.rewards, [0, 1, 1, 0])
  assert out.texts == ["9-2", "9-3", "7-2", "7-3"]
  assert out.counts == {"reward/timeout": 2.0}  # the verifier's work of both rounds


class ScriptedRunner:
  """Rewards from a script, one array per scored batch (row order = group order)."""

  def __init__(self, script):
    self.script = list(script)

  def score(self, reward, items):
    r = self.script.pop(0)
    assert len(r) == len(items)
    return BatchResult(tuple(Outcome(float(x)) for x in r))

  def close(self):
    pass


def _trainer(tmp_path, rounds, script):
  t = Trainer(tiny_exp("dapo", sft_steps=0, rl_steps=1, refill_rounds=rounds),
              str(tmp_path), on_batch=lambda step, phase, idx: drawn.append(list(idx)))
  drawn = []
  t.runner.close()
  t.runner = ScriptedRunner(script)
  t.resume()
  return t, drawn


def test_trainer_refills_degenerate_groups(tmp_path):
  """Round 0: group 0 all wrong, group 1 mixed; round 1: group 0 mixed, group 1 all
  right. The batch is round 0's group 1 then round 1's group 0; no third round."""
  script = [[0, 0, 0, 0, 1, 0, 1, 0], [0, 1, 1, 1, 1, 1, 1, 1]]
  t, drawn = _trainer(tmp_path, -1, script)
  try:
    roll, _, warm, _, m = t._collect(0, jax.random.key(1), np.float32(1.0), None)
    for th in warm:
      th.join()
    assert len(drawn) == 2 and not t.runner.script
    np.testing.assert_array_equal(roll.rewards, [1, 0, 1, 0, 0, 1, 1, 1])
    assert m == {"refill/rounds": 2.0, "refill/prompts_sampled": 4.0,
                 "refill/informative_frac": 1.0}
    ex = t.parts.data.train
    want = [t.codec.prompt_ids(ex[drawn[0][1]].prompt),
            t.codec.prompt_ids(ex[drawn[1][0]].prompt)]
    assert t.last_prompts == want
    assert roll.metrics["reward/zero_variance_groups"] == 0.0
  finally:
    t.close()


def test_trainer_stops_at_the_oversampling_limit(tmp_path):
  """Every group degenerate: one extra round (the limit), then the batch is completed
  with round 0's groups, and one full RL step still trains."""
  script = [[1] * 8, [0] * 8]
  t, drawn = _trainer(tmp_path, 1, script)
  try:
    m = t.rl(0)
    assert len(drawn) == 2
    assert m["refill/rounds"] == 2.0 and m["refill/informative_frac"] == 0.0
    assert m["reward/mean"] == 1.0  # round 0's groups fill the batch
    assert np.isfinite(m["loss/total"])
  finally:
    t.close()
