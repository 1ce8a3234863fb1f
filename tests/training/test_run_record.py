"""The run directory is a record only a successful `train` start changes (issue #39).

Each failing command is checked for its exit code, a message naming the field / file
/ directory, and a run directory byte-identical to before (same files, same bytes).
`eval`, `sample` and `convert` never write into the run.
"""
import os
import shutil
import subprocess
import sys
import textwrap

import gin
import pytest

from reasoning_jax import cli

TINY = ["ModelSpec.overrides = (('d_model', 32), ('n_layers', 1), ('n_heads', 2), "
        "('n_kv_heads', 1), ('head_dim', 16), ('ffw_dim', 64), ('max_seq_len', 64))",
        "TaskSpec.kwargs = (('num_digits', 2),)", "TaskSpec.num_warmup = 32",
        "TaskSpec.num_train = 16", "TaskSpec.num_eval = 4", "SFTConfig.steps = 2",
        "SFTConfig.batch_size = 8", "RLConfig.steps = 2", "RLConfig.prompts_per_step = 2",
        "RLConfig.group_size = 2", "RLConfig.max_new_tokens = 12",
        "EvalConfig.num_prompts = 4", "EvalConfig.samples = 2", "RunConfig.plots = False",
        "RunConfig.reward_workers = 0", "RunConfig.checkpoint_every = 1",
        "RunConfig.keep_checkpoints = 5", "RunConfig.progress = False"]


@pytest.fixture(autouse=True)
def _fresh_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _argv(cmd, workdir, extra=()):
  argv = [cmd, "--workdir", str(workdir)]
  for b in list(TINY) + list(extra):
    argv += ["--gin_param", b]
  return argv


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A finished tiny run with checkpoints at steps 1..4 (copied per test)."""
  w = tmp_path_factory.mktemp("run") / "w"
  gin.clear_config()
  assert cli.main(_argv("train", w)) == 0
  gin.clear_config()
  return w


@pytest.fixture()
def run(trained, tmp_path):
  w = tmp_path / "w"
  shutil.copytree(trained, w)
  return w


def snapshot(root):
  """Every file under `root`: relative path -> (bytes, mtime)."""
  out = {}
  for dirpath, _, files in os.walk(root):
    for f in files:
      p = os.path.join(dirpath, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, root)] = (fh.read(), os.stat(p).st_mtime_ns)
  return out


def _fails(argv, capsys):
  gin.clear_config()
  try:
    rc = cli.main(argv)
  except SystemExit as e:
    rc = e.code if isinstance(e.code, int) else 1
    msg = "" if isinstance(e.code, int) else str(e.code)
  else:
    msg = ""
  assert rc not in (0, None)
  return rc, msg + capsys.readouterr().err


@pytest.mark.parametrize("binding, named", [
    ("RLConfig.objective = 'grpoo'", "RLConfig.objective = 'grpoo'"),
    ("RLConfig.steps = -5", "RLConfig.steps = -5"),
    ("RLConfig.group_size = 0", "RLConfig.group_size = 0"),
    ("RLConfig.minibatches = 0", "RLConfig.minibatches = 0"),
    ("RunConfig.checkpoint_every = 0", "RunConfig.checkpoint_every = 0"),
    ("EvalConfig.every = 0", "EvalConfig.every = 0"),
    ("RLConfig.steps = 2.5", "RLConfig.steps = 2.5"),
    ("RLConfig.steps = 'three'", "RLConfig.steps = 'three'"),
    ("RLConfig.max_new_tokens = 0", "RLConfig.max_new_tokens = 0"),
    ("RLConfig.temperature = -1.0", "RLConfig.temperature = -1.0"),
    ("RLConfig.top_p = 1.5", "RLConfig.top_p = 1.5"),
    ("ModelSpec.dtype = 'float16x'", "ModelSpec.dtype"),
])
def test_a_rejected_rerun_leaves_the_run_untouched(run, capsys, binding, named):
  before = snapshot(run)
  rc, msg = _fails(_argv("train", run, [binding]), capsys)
  assert rc == 1 and named in msg and msg.count("Traceback") == 0
  assert snapshot(run) == before


def test_eval_sample_convert_never_write_into_the_run(run, tmp_path, capsys):
  """Overrides go to the command's own output; config.gin (and everything else) keeps
  its bytes and times, so later commands see the run's real configuration."""
  before = snapshot(run)
  gin.clear_config()
  assert cli.main(["eval", "--workdir", str(run),
                   "--gin_param", "ModelSpec.dtype = 'bfloat16'"]) == 0
  gin.clear_config()
  assert cli.main(["sample", "--workdir", str(run), "--prompt", "12+34="]) == 0
  gin.clear_config()
  assert cli.main(["convert", "--workdir", str(run), "--out", str(tmp_path / "hf")]) == 0
  assert "eval/accuracy" in capsys.readouterr().out
  assert snapshot(run) == before


def test_sample_and_convert_refuse_a_run_without_a_committed_checkpoint(run, tmp_path,
                                                                          capsys):
  for d in os.listdir(run / "checkpoints"):
    shutil.rmtree(run / "checkpoints" / d)
  before = snapshot(run)
  for argv in (["sample", "--workdir", str(run), "--prompt", "1+2="],
               ["convert", "--workdir", str(run), "--out", str(tmp_path / "hf")],
               ["eval", "--workdir", str(run)]):
    rc, msg = _fails(argv, capsys)
    assert rc == 1 and "no committed checkpoint" in msg and str(run) in msg
  assert not (tmp_path / "hf").exists()
  assert snapshot(run) == before


def _corrupt(step_dir, how):
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs]
  state = [f for f in files if os.sep + "state" + os.sep in f and "manifest" not in f
           and os.path.getsize(f) > 64]
  if how == "truncate":
    for f in state:
      with open(f, "r+b") as fh:
        fh.truncate(os.path.getsize(f) // 2)
  elif how == "zero":
    for f in state:
      size = os.path.getsize(f)
      with open(f, "wb") as fh:
        fh.write(b"\0" * size)
  elif how == "no_state":
    shutil.rmtree(os.path.join(step_dir, "state"))
  elif how == "empty":
    shutil.rmtree(step_dir)
    os.makedirs(step_dir)
  elif how == "manifest":
    for f in files:
      if "manifest" in os.path.basename(f) or f.endswith("_METADATA"):
        with open(f, "wb") as fh:
          fh.write(b"garbage")


@pytest.mark.parametrize("how", ["truncate", "zero", "no_state", "empty", "manifest"])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_newest_intact(run, capsys, how,
                                                                      caplog):
  """Resume skips the broken step 4 (saying which and why), restores step 3, moves
  step 4 to checkpoints_quarantine/ (nothing deleted) and finishes the run again."""
  import logging
  _corrupt(run / "checkpoints" / "4", how)
  gin.clear_config()
  with caplog.at_level(logging.WARNING, logger="reasoning_jax"):
    assert cli.main(_argv("train", run)) == 0
  assert "checkpoint step 4" in caplog.text and "unreadable" in caplog.text
  assert (run / "checkpoints_quarantine" / "4").is_dir()
  assert "resumed from checkpoint step 3" in caplog.text
  assert (run / "checkpoints" / "4").is_dir()  # saved again by the rerun


def test_every_checkpoint_unreadable_is_an_error_not_a_fresh_start(run, capsys):
  for d in os.listdir(run / "checkpoints"):
    _corrupt(run / "checkpoints" / d, "no_state")
  before = snapshot(run)
  rc, msg = _fails(_argv("train", run), capsys)
  assert rc == 1 and "no readable checkpoint" in msg and "step 1" in msg
  assert snapshot(run) == before


def test_a_second_writer_is_refused_and_the_run_kept(run, capsys):
  code = textwrap.dedent(f"""
      import sys
      from reasoning_jax.training.lock import RunLock
      RunLock({str(run)!r}).acquire()
      print("held", flush=True)
      sys.stdin.readline()
      """)
  holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    before = snapshot(run)
    rc, msg = _fails(_argv("train", run, ["RLConfig.steps = 3"]), capsys)
    assert rc == 1 and f"pid {holder.pid}" in msg and "another --workdir" in msg
    assert snapshot(run) == before
  finally:
    holder.stdin.close()
    holder.wait(timeout=60)


def test_debug_shows_the_traceback(tmp_path, capsys):
  rc, msg = _fails(_argv("train", tmp_path / "w", ["RLConfig.steps = -5"]), capsys)
  assert "Traceback" not in msg
  gin.clear_config()
  with pytest.raises(ValueError, match="RLConfig.steps = -5"):
    cli.main(_argv("train", tmp_path / "w", ["RLConfig.steps = -5"]) + ["--debug"])


def test_bad_model_files_are_named(tmp_path, capsys):
  """`convert --hf` on a truncated safetensors file or a garbage config.json: exit 1,
  the file named, no traceback."""
  import jax

  from reasoning_jax import model as rjm
  cfg = rjm.ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
                        head_dim=8, ffw_dim=32)
  d = tmp_path / "m"
  rjm.save_hf_checkpoint(rjm.init_params(cfg, jax.random.key(0)), cfg, str(d))
  (d / "config.json").write_text("{not json")
  rc, msg = _fails(["convert", "--hf", str(d), "--out", str(tmp_path / "o")], capsys)
  assert rc == 1 and "config.json" in msg and "Traceback" not in msg
  rjm.save_hf_checkpoint(rjm.init_params(cfg, jax.random.key(0)), cfg, str(d))
  st = next(p for p in os.listdir(d) if p.endswith(".safetensors"))
  with open(d / st, "r+b") as fh:
    fh.truncate(os.path.getsize(d / st) // 2)
  rc, msg = _fails(["convert", "--hf", str(d), "--out", str(tmp_path / "o2")], capsys)
  assert rc == 1 and st in msg and "Traceback" not in msg


def test_sample_with_a_character_outside_the_vocabulary_is_named(run, capsys):
  before = snapshot(run)
  rc, msg = _fails(["sample", "--workdir", str(run), "--prompt", "12+34=é"], capsys)
  assert rc == 1 and "'é' is not in this task's alphabet" in msg
  assert snapshot(run) == before


def test_launch_with_zero_processes_is_one_line(capsys):
  rc, msg = _fails(["launch", "--processes", "0", "--", "train"], capsys)
  assert rc == 1 and "processes >= 1" in msg and "Traceback" not in msg


def test_a_file_where_the_run_directory_belongs_is_named(tmp_path, capsys):
  (tmp_path / "w").write_text("a file")
  rc, msg = _fails(_argv("train", tmp_path / "w"), capsys)
  assert rc == 1 and str(tmp_path / "w") in msg and "Traceback" not in msg
  assert (tmp_path / "w").read_text() == "a file"
