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
  assert "RuntimeError: verifier exploded" in p.stderr, p.stderr[-2000:]


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


def test_an_over_long_jsonl_row_is_named_at_start_up(tmp_path):
  """One row too long for the model's positions: the run refuses before any step,
  naming the row's id, instead of crashing at whatever step draws it."""
  import os

  import pytest

  import reasoning_jax.data as d
  from reasoning_jax.training import config as C
  path = tmp_path / "rows.jsonl"
  with open(path, "w") as f:
    for i in range(40):
      q = "What is 2 plus 2? " * (200 if i == 5 else 1)
      f.write(json.dumps({"id": f"row{i}", "question": q, "answer": "4"}) + "\n")
  sp = os.path.join(os.path.dirname(d.__file__), "assets", "synthetic_sp.model")
  exp = C.Experiment(
      model=C.ModelSpec(overrides=(("d_model", 32), ("n_layers", 1), ("n_heads", 2),
                                   ("n_kv_heads", 1), ("head_dim", 16), ("ffw_dim", 64),
                                   ("max_seq_len", 128))),
      task=C.TaskSpec(name="dataset", tokenizer=sp, num_warmup=0, num_train=38,
                      num_eval=2, kwargs=(("source", f"jsonl:{path}"), ("eval_split", ""))),
      sft=C.SFTConfig(steps=0),
      rl=C.RLConfig(steps=1, prompts_per_step=2, group_size=2, max_new_tokens=16),
      eval=C.EvalConfig(every=100, num_prompts=2, samples=0),
      run=C.RunConfig(reward_workers=0, progress=False, plots=False))
  with pytest.raises(ValueError, match=r"id 'row5'.*max_seq_len is 128"):
    Trainer(exp, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_file_where_the_plots_folder_belongs_does_not_fail_the_run(tmp_path, caplog):
  import logging

  from reasoning_jax.training import config as C
  base = tiny_exp("grpo", sft_steps=0, rl_steps=1)
  exp = C.Experiment(model=base.model, task=base.task, sft=base.sft, rl=base.rl,
                     eval=base.eval, run=C.RunConfig(checkpoint_every=100, reward_workers=0,
                                                    progress=False, plots=True))
  (tmp_path / "plots").write_text("not a folder")
  t = Trainer(exp, str(tmp_path))
  t.runner.close()
  t.runner = CoinRunner()
  with caplog.at_level(logging.WARNING, logger="reasoning_jax"):
    final = t.run()
  assert "eval/accuracy" in final
  assert "plots not written" in caplog.text
  assert (tmp_path / "plots").read_text() == "not a folder"
