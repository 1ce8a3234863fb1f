"""`reasoning-jax` exits non-zero with a message naming the problem."""
import os

import gin
import jax
import pytest

from reasoning_jax import cli
from reasoning_jax import model as rjm


@pytest.fixture(autouse=True)
def _fresh_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _fails(argv, capsys):
  """Run the CLI; it must fail with one `error:` line (exit code 1 from the error
  boundary, or sys.exit with the message) and no traceback."""
  try:
    rc, msg = cli.main(argv), ""
  except SystemExit as e:
    rc, msg = e.code, str(e.code)
  msg += capsys.readouterr().err
  assert rc not in (0, None) and "error:" in msg and "Traceback" not in msg
  return msg


def test_malformed_gin_file(tmp_path, capsys):
  f = tmp_path / "bad.gin"
  f.write_text("RLConfig.steps = = 3\n")
  msg = _fails(["train", "--gin_file", str(f), "--workdir", str(tmp_path / "w")], capsys)
  assert "bad experiment configuration" in msg


def test_unknown_binding_is_named(tmp_path, capsys):
  msg = _fails(["train", "--gin_param", "RLConfig.stepz = 3", "--workdir",
                str(tmp_path / "w")], capsys)
  assert "stepz" in msg


def test_unknown_configurable_is_named(tmp_path, capsys):
  msg = _fails(["train", "--gin_param", "NoSuchThing.x = 1", "--workdir",
                str(tmp_path / "w")], capsys)
  assert "NoSuchThing" in msg


def test_missing_gin_file(tmp_path, capsys):
  msg = _fails(["train", "--gin_file", str(tmp_path / "nope.gin")], capsys)
  assert "does not exist" in msg


def test_missing_checkpoint(tmp_path, capsys):
  msg = _fails(["train", "--gin_param", f"ModelSpec.checkpoint = '{tmp_path}/absent'",
                "--workdir", str(tmp_path / "w")], capsys)
  assert "absent" in msg and "does not exist" in msg


def test_tokenizer_larger_than_model_vocab(tmp_path, capsys):
  cfg = rjm.ModelConfig(vocab_size=10, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
                        head_dim=8, ffw_dim=32)
  rjm.save_hf_checkpoint(rjm.init_params(cfg, jax.random.key(0)), cfg, str(tmp_path / "m"))
  msg = _fails(["train", "--gin_param", f"ModelSpec.checkpoint = '{tmp_path}/m'",
                "--workdir", str(tmp_path / "w")], capsys)
  assert "tokenizer has 18 tokens" in msg and "10 rows" in msg


def test_unknown_objective_lists_known(tmp_path, capsys):
  msg = _fails(["train", "--gin_param", "RLConfig.objective = 'ppo2'", "--workdir",
                str(tmp_path / "w")], capsys)
  assert "RLConfig.objective = 'ppo2'" in msg and "garl" in msg


def test_eval_without_checkpoints(tmp_path, capsys):
  msg = _fails(["eval", "--workdir", str(tmp_path)], capsys)
  assert "no checkpoints" in msg


def test_train_then_export_and_plot(tmp_path, capsys):
  """A tiny CLI run; `convert --workdir` exports params transformers-style, `plot` works."""
  import numpy as np
  from reasoning_jax.training.checkpoint import CheckpointManager
  w = str(tmp_path / "run")
  params = ["ModelSpec.overrides = (('d_model', 32), ('n_layers', 1), ('n_heads', 2), "
            "('n_kv_heads', 1), ('head_dim', 16), ('ffw_dim', 64), ('max_seq_len', 64))",
            "TaskSpec.kwargs = (('num_digits', 2),)", "TaskSpec.num_warmup = 32",
            "TaskSpec.num_train = 16", "TaskSpec.num_eval = 4", "SFTConfig.steps = 2",
            "SFTConfig.batch_size = 8", "RLConfig.steps = 1", "RLConfig.prompts_per_step = 2",
            "RLConfig.group_size = 2", "RLConfig.max_new_tokens = 12",
            "EvalConfig.num_prompts = 4", "EvalConfig.samples = 2", "RunConfig.plots = False",
            "RunConfig.reward_workers = 0"]
  argv = ["train", "--workdir", w]
  for b in params:
    argv += ["--gin_param", b]
  assert cli.main(argv) == 0
  assert "SFTConfig.answer_noise = 0.3" in open(f"{w}/config.gin").read()  # defaults too
  gin.clear_config()
  assert cli.main(["convert", "--workdir", w, "--out", str(tmp_path / "hf")]) == 0
  cfg, exported = rjm.load_hf_checkpoint(str(tmp_path / "hf"))
  m = CheckpointManager(w, read_only=True)
  saved = m.restore(None, None).state["params"]
  m.close()
  assert cfg.d_model == 32 and cfg.vocab_size == 18  # 3 specials + 15 task symbols
  # The checkpoint restores without a target as nested dicts; the export is `Params`.
  # Leaves are matched by name (field or key), never by flattening order.
  def by_name(tree):
    return {tuple(getattr(k, "name", getattr(k, "key", None)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
  exported, saved = by_name(exported), by_name(saved)
  assert exported.keys() == saved.keys()
  for k in exported:
    np.testing.assert_array_equal(np.asarray(exported[k]), np.asarray(saved[k]), err_msg=k)
  assert cli.main(["plot", "--workdir", w]) == 0
  assert any(p.endswith(".png") for p in os.listdir(f"{w}/plots"))
