"""The tiny tool-use example (`experiments/tool_use/tiny.gin`) runs end to end: its SFT
warm start calls the calculator with the right operands and copies the result, GRPO
steps over calculator episodes keep calling it, and the tool calls are in the metrics
and the plots. The example file runs as it is except for its RL length: 4 RL steps
(one eval interval) instead of 24, since nothing here asserts the RL curve (see the
comment in the test) and the SFT warm start is what the accuracy assertion reads."""
import json
import os

import gin
import numpy as np
import pytest

from reasoning_jax.data.tasks.tool_word_problems import ToolWordProblemTask, terse
from reasoning_jax.training import config as C
from reasoning_jax.training.loop import Trainer
from reasoning_jax.training.codec import Codec
from reasoning_jax.training.setup import sft_arrays

GIN = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "tool_use",
                   "tiny.gin")


@pytest.mark.slow
def test_tiny_tool_example_trains_with_tool_calls(tmp_path):
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings(
        [GIN], ["RunConfig.progress = False", "RunConfig.reward_workers = 0",
                "RLConfig.steps = 4", "EvalConfig.every = 4"])
    exp = C.Experiment()
  finally:
    gin.clear_config()
  Trainer(exp, str(tmp_path)).run()
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  sft, total = exp.sft.steps, exp.total_steps
  evals = {r["step"]: r for r in rows if "eval/accuracy" in r}
  warm, final = evals[sft], evals[total]
  # The warm model calls the calculator with the right operands and mostly copies its
  # result (greedy). Whether RL then raises the sampled accuracy is not asserted: with
  # this seed it rose 0.375 -> 0.672 on jax 0.10 but only 0.4375 -> 0.5 on jax 0.12
  # (128 samples, standard error about 0.045), so the example does not yet learn
  # reliably (docs/tools.md); issue #41 stays open on it.
  assert warm["eval/greedy_accuracy"] >= 0.75, warm
  # The warm model already calls the calculator about once per problem (every
  # problem takes one call) and RL keeps calling it; most calls run ("ok").
  for ev in (warm, final):
    assert ev["eval/greedy_tools/calls_per_episode"] == 1.0
    assert ev["eval/tools/calls_per_episode"] >= 0.9
  rl = [r for r in rows if "tools/calls_per_episode" in r]
  assert len(rl) == exp.rl.steps
  assert all(0.5 <= r["tools/calls_per_episode"] <= 2.0 for r in rl)
  assert sum(r["tools/calls"] for r in rl) > 0
  assert sum(r.get("tools/calculator/ok", 0) for r in rl) > 0
  # `reasoning-jax plot` draws the tool metrics (one figure per metric group).
  assert (tmp_path / "plots" / "tools.png").exists()


def test_terse_prompt_keeps_the_numbers_and_operation_only():
  assert terse("eve has 368 marbles. she shares them equally with 1 friend and keeps "
               "one share. how many marbles does eve have now?") == (
                   "has 368. shares equally with 1 friend and keeps one share.")
  assert terse("bob has 12 pens. he buys 3 more pens. how many pens does bob have "
               "now?") == "has 12. buys 3 more."
  with pytest.raises(ValueError, match="not a word_problems prompt"):
    terse("what is 2+3?")


def test_single_call_problems_and_observations_kept_out_of_the_sft_loss():
  task = ToolWordProblemTask(1, 999, single_call=True, terse=True)
  exs = task.warmup_corpus(64, seed=0)
  codec = Codec(task.vocab(), None)
  arr = sft_arrays(exs, codec)
  for i, ex in enumerate(exs):
    assert ex.rationale.count("<tool_call>") == 1
    (start, end), = ex.metadata["observation_spans"]
    obs = ex.rationale[start:end]
    assert obs == "=" + ex.answer + "."  # the one call's output is the answer
    target = ex.rationale + "|" + ex.answer
    p = len(codec.prompt_ids(ex.prompt))
    row = arr["tokens"][i, p:p + len(target)].tolist()
    assert codec.decode(row) == target
    # Char tokens: the loss trains every target character but the observation's.
    want = np.ones(len(target) + 1, np.float32)  # + EOS
    want[start:end] = 0.0
    np.testing.assert_array_equal(arr["mask"][i, p:p + len(want)], want)
    assert not arr["mask"][i, :p].any() and not arr["mask"][i, p + len(want):].any()


def test_single_call_needs_one_step():
  with pytest.raises(ValueError, match="single_call=True needs num_steps=1"):
    ToolWordProblemTask(2, 99, single_call=True)
