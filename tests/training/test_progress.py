"""Progress off a terminal: one plain line per tenth of the run and at least every N
seconds (Jupyter/Colab, nohup, CI, `reasoning-jax train 2>log`)."""
import logging
import os
import re
import subprocess
import sys

from reasoning_jax.training.metrics import MetricsWriter
from reasoning_jax.training.progress import ProgressLog, make_visible


class Clock:
  def __init__(self):
    self.t = 0.0

  def __call__(self):
    return self.t


def test_a_line_per_tenth_with_values_and_a_hand_computed_eta():
  """100 steps at 1 s each, every_s=30: lines at the first step and at each tenth."""
  clock = Clock()
  p = ProgressLog(100, every_s=30.0, clock=clock)
  lines = {}
  for step in range(1, 101):
    row = {"reward/mean": step / 100, "throughput/tokens_per_s": 1234.0}
    if step == 40:
      row = {"eval/accuracy": 0.25}  # an evaluation row: carried into later lines
    line = p.update(step, row)
    if line is not None:
      lines[step] = line
    clock.t += 1.0
  assert sorted(lines) == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
  # Steps 1..50 took 49 s after the first line: 1 step/s, 50 steps left.
  assert lines[50] == ("step 50/100 (50%) | reward 0.5 | acc 0.250 | 1.23e+03 tok/s | "
                       "ETA 00:50")
  assert lines[1] == "step 1/100 (1%) | reward 0.01 | 1.23e+03 tok/s | ETA ?"
  assert lines[100].endswith("| ETA 00:00")


def test_a_line_at_least_every_n_seconds():
  """1000 steps at 10 s each: tenths are 1000 s apart, so the 30 s limit decides."""
  clock = Clock()
  p = ProgressLog(1000, every_s=30.0, clock=clock)
  due = []
  for step in range(1, 11):
    if p.update(step, {"sft/loss": 2.0}) is not None:
      due.append(step)
    clock.t += 10.0
  assert due == [1, 4, 7, 10]


def test_sft_loss_gives_way_to_reward_after_the_warm_up():
  p = ProgressLog(4, every_s=0.0, clock=Clock())
  assert p.update(1, {"sft/loss": 1.5}).startswith("step 1/4 (25%) | loss 1.5 |")
  assert "loss" not in p.update(2, {"reward/mean": 0.75})


def test_writer_off_a_terminal_logs_lines_and_draws_no_bar(tmp_path, capsys, caplog,
                                                           monkeypatch):
  """stderr is not a TTY: the default progress is lines, not a bar."""
  monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
  caplog.set_level(logging.INFO, logger="reasoning_jax.progress")
  with MetricsWriter(tmp_path, is_primary=True, tensorboard=False, total_steps=4) as w:
    for s in range(1, 5):
      w.write(s, {"reward/mean": s / 4})
  got = [r.getMessage() for r in caplog.records if r.name == "reasoning_jax.progress"]
  want = [f"step {s}/4 ({25 * s}%)" for s in range(1, 5)]
  assert [m.split(" |")[0] for m in got] == want
  assert "\r" not in capsys.readouterr().err  # no tqdm bar


def test_a_level_the_user_chose_is_kept():
  logger = logging.getLogger("reasoning_jax.test_progress_child")
  parent = logging.getLogger("reasoning_jax")
  old = parent.level
  try:
    parent.setLevel(logging.WARNING)
    make_visible(logger)
    assert not logger.isEnabledFor(logging.INFO)
    parent.setLevel(logging.NOTSET)
    make_visible(logger)
    assert logger.isEnabledFor(logging.INFO) and logger.hasHandlers()
  finally:
    parent.setLevel(old)
    logger.setLevel(logging.NOTSET)
    logger.handlers.clear()


TINY = ["ModelSpec.overrides = (('d_model', 32), ('n_layers', 1), ('n_heads', 2), "
        "('n_kv_heads', 1), ('head_dim', 16), ('ffw_dim', 64), ('max_seq_len', 64))",
        "TaskSpec.kwargs = (('num_digits', 2),)", "TaskSpec.num_warmup = 32",
        "TaskSpec.num_train = 16", "TaskSpec.num_eval = 4", "SFTConfig.steps = 8",
        "SFTConfig.batch_size = 8", "RLConfig.steps = 2", "RLConfig.prompts_per_step = 2",
        "RLConfig.group_size = 2", "RLConfig.max_new_tokens = 12",
        "EvalConfig.num_prompts = 4", "EvalConfig.samples = 2", "RunConfig.plots = False",
        "RunConfig.reward_workers = 0"]


def test_cli_train_writes_a_line_per_tenth_to_redirected_stderr(tmp_path):
  """`reasoning-jax train ... 2>log`: 10 steps, so every step is a tenth of the run."""
  argv = [sys.executable, "-m", "reasoning_jax.cli", "train", "--workdir",
          str(tmp_path / "run")]
  for b in TINY:
    argv += ["--gin_param", b]
  log = tmp_path / "log"
  with open(log, "w") as err:
    subprocess.run(argv, stderr=err, stdout=subprocess.DEVNULL, check=True, timeout=300,
                   cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  text = log.read_text()
  steps = [int(m) for m in re.findall(r"reasoning_jax\.progress: step (\d+)/10 ", text)]
  # A line per step (an extra one may come from the 30 s rule on a slow machine).
  assert set(steps) == set(range(1, 11)) and steps == sorted(steps), text
  sft = re.search(r"step 4/10 \(40%\) \| loss [0-9.e+-]+ \| ETA \d\d:\d\d\n", text)
  rl = re.search(r"step 10/10 \(100%\) \| reward [0-9.e+-]+ \| acc [0-9.]+ \| "
                 r"[0-9.e+]+ tok/s \| ETA 00:00\n", text)
  assert sft and rl, text
