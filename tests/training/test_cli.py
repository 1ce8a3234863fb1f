"""`reasoning-jax` exits non-zero with a message naming the problem."""
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
  with pytest.raises(SystemExit) as e:
    cli.main(argv)
  msg = str(e.value.code) + capsys.readouterr().err
  assert e.value.code not in (0, None)
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
  assert "unknown objective 'ppo2'" in msg and "garl" in msg


def test_eval_without_checkpoints(tmp_path, capsys):
  msg = _fails(["eval", "--workdir", str(tmp_path)], capsys)
  assert "no checkpoints" in msg
