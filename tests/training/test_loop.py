"""The training loop end to end on a tiny config: every objective, outputs, resume."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from reasoning_jax.objectives import OBJECTIVES
from reasoning_jax.rewards import BatchResult, Outcome
from reasoning_jax.training import config as C
from reasoning_jax.training.checkpoint import CheckpointManager
from reasoning_jax.training.loop import Trainer

TINY = (("d_model", 32), ("n_layers", 1), ("n_heads", 2), ("n_kv_heads", 1),
        ("head_dim", 16), ("ffw_dim", 64), ("max_seq_len", 64))


def tiny_exp(objective="grpo", sft_steps=2, rl_steps=2, **rl):
  return C.Experiment(
      model=C.ModelSpec(overrides=TINY),
      task=C.TaskSpec(kwargs=(("num_digits", 2),), num_warmup=64, num_train=32, num_eval=4),
      sft=C.SFTConfig(steps=sft_steps, batch_size=8),
      rl=C.RLConfig(objective=objective, steps=rl_steps, prompts_per_step=2, group_size=4,
                    max_new_tokens=16, **rl),
      eval=C.EvalConfig(every=100, num_prompts=4, samples=2),
      run=C.RunConfig(checkpoint_every=100, reward_workers=0, progress=False,
                      plots=False))


class CoinRunner:
  """A reward runner that scores each completion 0 or 1 at random: an untrained model
  earns no real reward, and the objectives need groups with mixed outcomes."""

  def __init__(self, seed=0):
    self.rng = np.random.default_rng(seed)

  def score(self, reward, items):
    return BatchResult(tuple(Outcome(float(self.rng.random() < 0.5)) for _ in items))

  def close(self):
    pass


@pytest.mark.parametrize("name", sorted(n for n, o in OBJECTIVES.items()
                                         if "teacher_logp_BT" not in o.needs))
def test_every_objective_trains(name, tmp_path):
  """Two RL steps of each registry objective: finite loss, params move (the
  distillation objectives, which need a teacher: tests/training/test_distill_training.py)."""
  exp = tiny_exp(name, sft_steps=0, rl_steps=2)
  t = Trainer(exp, str(tmp_path))
  t.runner.close()
  t.runner = CoinRunner()
  try:
    t.resume()
    before = jax.tree.map(np.asarray, t.params)
    for step in range(2):
      m = t.rl(step)
      assert np.isfinite(m["loss/total"]) and m["loss/finite"] == 1.0, m
  finally:
    t.ckpt.close()
    t.runner.close()
    t.writer.close()
  moved = sum(float(np.abs(np.asarray(a) - b).sum())
              for a, b in zip(jax.tree.leaves(t.params), jax.tree.leaves(before)))
  assert moved > 0


def test_run_writes_the_run_directory(tmp_path):
  exp = tiny_exp(sft_steps=3, rl_steps=2).__class__(
      **{**tiny_exp(sft_steps=3, rl_steps=2).__dict__,
         "run": C.RunConfig(checkpoint_every=2, reward_workers=1, progress=False)})
  final = Trainer(exp, str(tmp_path), "# config").run()
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  steps = [r["step"] for r in rows]
  assert steps == sorted(steps) and steps[-1] == 5
  assert any("eval/accuracy" in r for r in rows) and "eval/accuracy" in final
  assert any("sft/loss" in r for r in rows) and any("reward/mean" in r for r in rows)
  assert CheckpointManager(tmp_path, read_only=True).latest_step() == 5
  assert os.listdir(tmp_path / "tensorboard")
  assert any(p.endswith(".png") for p in os.listdir(tmp_path / "plots"))
  assert (tmp_path / "config.gin").read_text() == "# config"
  # Running the finished experiment again trains nothing and says so.
  assert Trainer(exp, str(tmp_path)).run() == {}


_CHILD = """
import sys
from tests.training.test_loop import tiny_exp
from reasoning_jax.training import config as C
from reasoning_jax.training.loop import train
exp = tiny_exp(sft_steps=4, rl_steps=6)
exp = C.Experiment(model=exp.model, task=exp.task, sft=exp.sft, rl=exp.rl, eval=exp.eval,
                   run=C.RunConfig(checkpoint_every=2, reward_workers=1, progress=False,
                                   plots=False))
if __name__ == "__main__":
  train(exp, sys.argv[1])
"""


def _final_params(workdir):
  m = CheckpointManager(workdir, read_only=True)
  state = m.restore().state
  m.close()
  return jax.tree.map(np.asarray, state["params"])


def _metric_rows(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [(r["step"], r.get("reward/mean"), r.get("sft/loss")) for r in rows]


def _run_with_kills(script, workdir, delays, env):
  """Start the child on `workdir` and SIGKILL it after each delay of `delays` that it
  outlives (each rerun resumes from the last committed checkpoint); then run it to the
  end. Returns the number of kills that landed mid-run."""
  kills = 0
  for d in delays:
    proc = subprocess.Popen([sys.executable, str(script), workdir], env=env)
    try:
      proc.wait(timeout=d)
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGKILL)
      proc.wait(timeout=60)
      kills += 1
      continue
    assert proc.returncode == 0
    break  # finished before this kill
  subprocess.run([sys.executable, str(script), workdir], check=True, env=env, timeout=600)
  return kills


@pytest.mark.slow
def test_sigkill_at_20_random_moments_resumes_bitwise_identically(tmp_path):
  """SIGKILL at 20 random moments (seeded; during start-up, steps, saves, evaluation),
  rerunning the same command after each: every rerun resumes, the final params are
  bitwise equal to an uninterrupted run's and the metrics have no duplicate rows."""
  script = tmp_path / "child.py"
  script.write_text(_CHILD)
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  full = str(tmp_path / "full")
  t0 = time.time()
  subprocess.run([sys.executable, str(script), full], check=True, env=env, timeout=600)
  span = time.time() - t0
  rng = np.random.default_rng(0)
  kills, runs = 0, 0
  while kills < 20:
    workdir = str(tmp_path / f"killed{runs}")
    kills += _run_with_kills(script, workdir, rng.uniform(0.3, span, 20 - kills), env)
    runs += 1
    a, b = _final_params(full), _final_params(workdir)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y)
    assert _metric_rows(full) == _metric_rows(workdir)


def test_trainer_runs_on_a_mesh(tmp_path):
  """The same experiment on a (data=4, fsdp=2) mesh: params stay sharded, steps run."""
  base = tiny_exp(sft_steps=2, rl_steps=2)
  exp = C.Experiment(model=base.model, task=base.task, sft=base.sft, rl=base.rl,
                     eval=base.eval,
                     run=C.RunConfig(mesh=(4, 2, 1), checkpoint_every=100, reward_workers=0,
                                     progress=False, plots=False))
  t = Trainer(exp, str(tmp_path))
  final = t.run()
  assert "eval/accuracy" in final
  wq = t.params.layers.wq
  assert len(wq.sharding.device_set) == 8 and wq.sharding.spec[1] == "fsdp"
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(t.params))
