"""Training rewards chosen in a gin file: LASER, RLCR and a weighted sum each run a short
real training, and the logged reward equals the reward computed by hand from the
sampled completions and their token counts; bad choices stop before any work."""
import dataclasses
import json
import os
import re

import gin
import numpy as np
import pytest

import reasoning_jax.data as rj_data
from reasoning_jax.training import config as C
from reasoning_jax.training import setup as S
from reasoning_jax.training.loop import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SP = os.path.join(os.path.dirname(rj_data.__file__), "assets", "synthetic_sp.model")
NEW_TOKENS = 16

BASE = """
ModelSpec.overrides = (("d_model", 32), ("n_layers", 1), ("n_heads", 2),
                       ("n_kv_heads", 1), ("head_dim", 16), ("ffw_dim", 64),
                       ("max_seq_len", 64))
TaskSpec.name = "dataset"
TaskSpec.tokenizer = "{sp}"
TaskSpec.kwargs = (("source", "jsonl:{data}"), ("eval_split", ""))
TaskSpec.num_train = 8
TaskSpec.num_eval = 2
SFTConfig.steps = 0
RLConfig.objective = "grpo"
RLConfig.steps = 1
RLConfig.prompts_per_step = 2
RLConfig.group_size = 2
RLConfig.max_new_tokens = {new}
EvalConfig.every = 100
EvalConfig.num_prompts = 2
EvalConfig.samples = 2
RunConfig.progress = False
RunConfig.plots = False
RunConfig.reward_workers = {workers}
"""

def laser_by_hand(text, gold, n):
  """LASER: C(y) + 0.5 * 1[correct] * 1[n <= 8]; C = -1 without a box. The test
  tokenizer has no backslash, so the model can write no box."""
  assert "\\boxed" not in text
  return -1.0


def rlcr_by_hand(text, gold, n):
  """RLCR paper form 1[c] - (q - 1[c])^2, with the worst Brier term 1 when there is no
  confidence (this model writes none): 1[c] - 1, c the last <answer> == the gold."""
  assert "<confidence>" not in text
  answers = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
  return float(bool(answers) and answers[-1].strip() == gold) - 1.0


def weighted_by_hand(text, gold, n):
  """1.0 * math after </think> (0 with no marker or no number) + 0.5 * TRL's think
  format (the prompt's <think> opens the text: one <think>, then a </think>) + 2.0 *
  DAPO overlong (max 20, cache 16: 0 up to 4 tokens, then (4 - n) / 16)."""
  math = 0.0
  if "</think>" in text:
    after = text[text.rfind("</think>") + len("</think>"):]
    assert not re.search(r"<answer>|####|answer", after, re.IGNORECASE)
    numbers = re.findall(r"\d+", after)
    math = float(bool(numbers) and numbers[-1] == gold)
  think = float(text.startswith("<think>") and text.count("<think>") == 1
                and "</think>" in text)
  overlong = 0.0 if n <= 4 else (4 - n) / 16
  return 1.0 * math + 0.5 * think + 2.0 * overlong


# Per reward: the gin lines and the reward computed by hand from a completion (as
# scored: the prompt's `<think>` in front), its gold and its token count.
CASES = {
    "laser": ('TaskSpec.reward = "laser"\n'
              'TaskSpec.reward_kwargs = (("target_length", 8), ("alpha", 0.5))',
              laser_by_hand),
    "rlcr": ('TaskSpec.reward = "rlcr"\nTaskSpec.reward_kwargs = (("form", "paper"),)',
             rlcr_by_hand),
    "weighted": ('TaskSpec.reward = "weighted"\n'
                 'TaskSpec.reward_kwargs = (("components", ((1.0, "task"), '
                 '(0.5, "think_format"), (2.0, "dapo_overlong", (("max_length", 20), '
                 '("cache_length", 16))))),)',
                 weighted_by_hand),
}


@pytest.fixture()
def jsonl(tmp_path):
  path = tmp_path / "toy.jsonl"
  with open(path, "w") as f:
    for i in range(40):
      f.write(json.dumps({"question": f"What is {i} plus 7?", "answer": str(i + 7)}) + "\n")
  return str(path)


def _experiment(tmp_path, data, lines, workers=0):
  gin_file = tmp_path / "exp.gin"
  gin_file.write_text(BASE.format(sp=SP, data=data, new=NEW_TOKENS, workers=workers)
                      + lines + "\n")
  gin.clear_config()
  try:
    gin.parse_config_file(str(gin_file))
    return C.Experiment()
  finally:
    gin.clear_config()


class Recorder:
  """The trainer's reward runner, recording each batch it scores."""

  def __init__(self, runner):
    self.runner, self.calls = runner, []

  def score(self, reward, items):
    result = self.runner.score(reward, items)
    self.calls.append((reward, list(items), result))
    return result

  def close(self):
    self.runner.close()


@pytest.mark.parametrize("name", sorted(CASES))
def test_reward_from_gin_trains_and_logs_the_hand_computed_reward(name, jsonl, tmp_path):
  lines, hand = CASES[name]
  exp = _experiment(tmp_path, jsonl, lines, workers=1 if name == "weighted" else 0)
  assert exp.task.reward == name
  work = tmp_path / "run"
  t = Trainer(exp, str(work))
  train = t.parts.data.train
  assert all(e.reward == name for e in train)
  assert all(e.reward == "math" for e in t.parts.data.eval)  # evaluation: the verifier
  t.runner = rec = Recorder(t.runner)
  t.run()
  reward = train[0].make_reward()
  # The one RL step's rollouts: scored with the training reward (evaluation, before
  # and after, with the verifier).
  (items, result), = [(i, r) for w, i, r in rec.calls if w == reward]
  assert len(items) == exp.rl.prompts_per_step * exp.rl.group_size
  assert all(it.completion.startswith("<think>") for it in items)  # the prompt's tag
  assert all(0 < it.num_tokens <= NEW_TOKENS for it in items)     # token counts
  want = np.array([hand(it.completion, it.gold[0], it.num_tokens) for it in items])
  np.testing.assert_array_equal(result.scores, want)
  rows = [json.loads(line) for line in open(work / "metrics.jsonl")]
  logged = [r["reward/mean"] for r in rows if "reward/mean" in r]
  # The logged mean is of float32 rewards: a rounding budget of one float32 ulp at 1.
  assert logged == [pytest.approx(float(want.mean()), abs=2e-7)]


def test_bad_reward_choices_stop_before_any_work(jsonl, tmp_path):
  exp = _experiment(tmp_path, jsonl, 'TaskSpec.reward = "laser"\n'
                    'TaskSpec.reward_kwargs = (("target_len", 8),)')
  with pytest.raises(ValueError, match=r"TaskSpec\.reward_kwargs: reward 'laser' has no "
                     r"option 'target_len'; its options are \['alpha', 'target_length'\]"):
    Trainer(exp, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")
  exp = _experiment(tmp_path, jsonl, 'TaskSpec.reward = "rlcr"\n'
                    'RLConfig.objective = "garl"')
  with pytest.raises(ValueError, match=r"has no effect with objective 'garl'"):
    S.build_task(exp)
  exp = _experiment(tmp_path, jsonl, 'TaskSpec.reward_kwargs = (("alpha", 1.0),)')
  with pytest.raises(ValueError, match=r"TaskSpec\.reward is empty"):
    S.build_task(exp)


def test_shipped_example_selects_laser(monkeypatch):
  monkeypatch.chdir(ROOT)  # experiment files include each other by repository path
  gin.clear_config()
  try:
    gin.parse_config_file(os.path.join(ROOT, "experiments", "tpu",
                                       "qwen3_0_6b_gsm8k_laser.gin"))
    exp = C.Experiment()
  finally:
    gin.clear_config()
  task = S.build_task(exp)  # tfds data is read lazily: the choice is checked here
  assert task.reward_spec.name == "laser"
  assert dict(task.reward_spec.options) == {"target_length": 512, "alpha": 0.5}


def test_reinforce_pp_keeps_a_reference_for_its_kl_in_the_reward(tmp_path):
  """REINFORCE++'s reward_kl_coef (not a KL loss term) keeps a reference policy, whose
  log-probs reach the objective; refusing a reference while it is set is an error."""
  from tests.training.test_loop import CoinRunner, tiny_exp
  exp = tiny_exp("reinforce_pp", sft_steps=0, rl_steps=1)
  t = Trainer(exp, str(tmp_path / "run"))
  t.runner.close()
  t.runner = CoinRunner()
  try:
    t.resume()
    assert t.ref_params is not None
    m = t.rl(0)
    assert np.isfinite(m["loss/total"]) and "loss/ref_kl" in m
    # The reference is the starting policy and the step is on-policy: KL 0.
    assert m["loss/ref_kl"] == pytest.approx(0.0, abs=1e-6)
  finally:
    t.close()
  no_kl = dataclasses.replace(exp, rl=dataclasses.replace(
      exp.rl, objective_overrides=(("reward_kl_coef", 0.0),)))
  assert not S.uses_reference(no_kl, S.build_objective(no_kl)[1])
  refused = dataclasses.replace(exp, rl=dataclasses.replace(exp.rl, reference="no"))
  with pytest.raises(ValueError, match=r"needs reference log-probs for "
                     r"\{'reward_kl_coef': 0.001\}"):
    S.uses_reference(refused, S.build_objective(refused)[1])
