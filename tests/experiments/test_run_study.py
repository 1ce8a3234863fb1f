"""experiments/tsallis_cold_start/run_study.py: the study's matrix and the directory
names report.py reads (the contract in the module docstring)."""
import collections
import importlib.util
import os

import pytest

STUDY = os.path.join(os.path.dirname(__file__), "..", "..", "experiments",
                     "tsallis_cold_start")


@pytest.fixture(scope="module")
def rs():
  spec = importlib.util.spec_from_file_location("run_study",
                                                os.path.join(STUDY, "run_study.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_the_matrix_has_every_cell_once(rs):
  cells = rs.plan(range(5), rs.SETTINGS, sgd_baselines=False)
  assert len(cells) == len(set(cells))
  # Per seed and setting: Adam 6 methods (+2 lr controls in cold1/warm), SGD 4 GARL q.
  # 5 seeds x (4 settings x 10 + 2 settings x 2) = 220.
  assert len(cells) == 220
  count = collections.Counter((s, o, m) for s, o, m, _ in cells)
  assert set(count.values()) == {5}
  assert {s for s, _, _ in count} == {"cold1", "cold2", "reverse", "warm"}
  assert {m for _, o, m in count if o == "sgd"} == {"garl_q0", "garl_q0.5",
                                                    "garl_q0.75", "garl_q1"}
  assert {m for _, o, m in count if o == "adam"} == {
      "grpo", "garl_q0", "garl_q0.5", "garl_q0.75", "garl_q1", "paft_q0.75",
      "garl_q0_lr1e2", "garl_q0_lr1e4"}
  assert {s for s, _, m in count if m.endswith("lr1e4")} == {"cold1", "warm"}
  with_baselines = rs.plan(range(5), rs.SETTINGS, sgd_baselines=True)
  assert len(with_baselines) == 220 + 5 * 4 * 2


def test_every_setting_has_its_gin_file_and_the_old_names_are_gone(rs):
  for s in rs.SETTINGS:
    assert os.path.exists(os.path.join(STUDY, f"{s}.gin")), s
  assert not os.path.exists(os.path.join(STUDY, "cold.gin"))


def test_methods_and_optimizers_bind_what_the_names_say(rs):
  assert 'RLConfig.objective_overrides = ((\'q\', 0.75),)' in rs.METHODS["paft_q0.75"]
  assert rs.METHODS["garl_q0_lr1e4"] == rs.METHODS["garl_q0"]  # lr set per run
  assert rs.LR_CONTROL == {"garl_q0_lr1e2": 1e2, "garl_q0_lr1e4": 1e4}
  assert "RLConfig.kl_coef" not in " ".join(rs.METHODS["grpo"])
  assert "('kl_coef', 0.0)" in rs.METHODS["grpo"][1]
  sgd = rs.optimizer_bindings("sgd", 0.01)
  assert 'RLConfig.optimizer = "sgd"' in sgd and "RLConfig.grad_clip = 0.0" in sgd
  assert "RLConfig.learning_rate = 0.01" in sgd and "RLConfig.momentum = 0.9" in sgd


def test_sgd_runs_start_from_the_warm_up_params_with_a_fresh_sgd_state(rs, tmp_path):
  """The shared warm-up stores a fresh AdamW state for RL; the SGD copy has the same
  params and a fresh SGD state, and an SGD run resumes from it (decision 0030)."""
  import jax
  import numpy as np
  from reasoning_jax.training.checkpoint import CheckpointManager
  small = ("SFTConfig.steps = 2", "SFTConfig.batch_size = 8", "RLConfig.steps = 1",
           "RLConfig.prompts_per_step = 2", "RLConfig.group_size = 2",
           "EvalConfig.num_prompts = 2", "EvalConfig.samples = 0",
           "TaskSpec.num_warmup = 64", "TaskSpec.num_train = 16", "TaskSpec.num_eval = 4")
  sft = str(tmp_path / "sft")
  sft_b = small + tuple(rs.METHODS["garl_q1"]) + tuple(rs.optimizer_bindings(
      "adam", None)) + ("RLConfig.steps = 0",)
  rs.work(rs.Job("train", sft, rs._files("cold1"), sft_b))
  sgd = str(tmp_path / "sft_sgd")
  sgd_b = small + tuple(rs.METHODS["garl_q1"]) + tuple(rs.optimizer_bindings("sgd", 1.0))
  rs.work(rs.Job("sgd_state", sgd, rs._files("cold1"), sgd_b, source=sft,
                 source_bindings=sft_b))
  with CheckpointManager(sft, read_only=True) as a, CheckpointManager(
      sgd, read_only=True) as b:
    pa, pb = a.restore(2).state, b.restore(2).state
  for x, y in zip(jax.tree.leaves(pa["params"]), jax.tree.leaves(pb["params"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bit-identical
  assert "nu" in str(pa["opt_state"]) and "nu" not in str(pb["opt_state"])
  trace = jax.tree.leaves(pb["opt_state"])
  assert trace and all(not np.any(np.asarray(t)) for t in trace)  # momentum 0
  run = str(tmp_path / "run")
  rs.work(rs.Job("train", run, rs._files("cold1"), sgd_b, source=sgd, head="[]"))
  assert rs._finished(run, 3)
