"""Faults during a run: nothing lost, nothing silent (issue #39's battery, training part)."""
import json
import subprocess
import sys
import textwrap

from reasoning_jax.training.loop import Trainer

from tests.training.test_loop import CoinRunner, tiny_exp


def test_a_failing_first_rl_step_exits_with_its_error_not_sigabrt(tmp_path):
  """The first RL step raises while compile-ahead threads compile its programs: the
  process reports the error and exits 1 (close() joins the threads) instead of being
  aborted by a compile still running at interpreter exit."""
  script = textwrap.dedent(f"""
      from reasoning_jax.training.loop import Trainer
      from tests.training.test_loop import tiny_exp

      class Boom:
        def score(self, reward, items):
          raise RuntimeError("verifier exploded")
        def close(self):
          pass

      t = Trainer(tiny_exp("grpo", sft_steps=0, rl_steps=2), {str(tmp_path)!r})
      t.runner.close()
      t.runner = Boom()
      t.run()
      """)
  p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                     timeout=300)
  assert p.returncode == 1, p.stderr[-2000:]
  assert "RuntimeError: verifier exploded" in p.stderr


def _rows(workdir):
  with open(workdir / "metrics.jsonl") as f:
    return [json.loads(line) for line in f if line.strip()]


def _steps(workdir):
  return [r["step"] for r in _rows(workdir)]


def test_a_run_killed_before_its_first_checkpoint_logs_no_duplicate_rows(tmp_path):
  """Rows written before any checkpoint committed (the step-0 evaluation and step 1)
  are dropped when the rerun starts over at step 0, so each step appears once."""
  exp = tiny_exp("grpo", sft_steps=0, rl_steps=2)
  t = Trainer(exp, str(tmp_path))
  t.runner.close()
  t.runner = CoinRunner()
  t.resume()
  t.writer.write(0, t.evaluate())
  t._step(0)  # no checkpoint: checkpoint_every is 100
  t.writer.close()  # as a killed process leaves it: rows on disk, no checkpoint
  t.runner.close()
  assert _steps(tmp_path) == [0, 1]
  t = Trainer(exp, str(tmp_path))
  t.runner.close()
  t.runner = CoinRunner()
  t.run()
  # Each (step, metric) is logged once (step 2 has a training row and the final
  # evaluation's row, with disjoint metrics).
  seen = [(r["step"], k) for r in _rows(tmp_path) for k in r if k not in ("step", "time")]
  assert len(seen) == len(set(seen))
  assert sorted({s for s, _ in seen}) == [0, 1, 2]
