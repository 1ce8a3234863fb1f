"""Checkpoint import errors name the problem (no transformers needed)."""
import json
import os

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from reasoning_jax import model as rjm

CFG = rjm.ModelConfig(family="qwen3", vocab_size=32, d_model=16, n_layers=2, n_heads=2,
                      n_kv_heads=1, head_dim=8, ffw_dim=24, qk_norm=True,
                      tie_embeddings=False)


@pytest.fixture()
def ckpt(tmp_path):
  path = str(tmp_path / "ckpt")
  params = rjm.init_params(CFG, jax.random.key(0))
  rjm.save_hf_checkpoint(params, CFG, path)
  return path, params


def test_round_trip_without_transformers(ckpt):
  path, params = ckpt
  cfg, back = rjm.load_hf_checkpoint(path)
  assert cfg == CFG.replace(max_seq_len=cfg.max_seq_len)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
    np.testing.assert_array_equal(a, b)


def test_missing_directory():
  with pytest.raises(FileNotFoundError, match="does not exist"):
    rjm.load_hf_checkpoint("/nonexistent/ckpt")


def test_missing_config(ckpt):
  path, _ = ckpt
  os.remove(os.path.join(path, "config.json"))
  with pytest.raises(FileNotFoundError, match="no config.json"):
    rjm.load_hf_checkpoint(path)


def test_missing_weights(ckpt):
  path, _ = ckpt
  os.remove(os.path.join(path, "model.safetensors"))
  with pytest.raises(FileNotFoundError, match="neither model.safetensors nor"):
    rjm.load_hf_checkpoint(path)


def test_sharded_index_with_a_missing_shard(ckpt):
  path, _ = ckpt
  tensors = load_file(os.path.join(path, "model.safetensors"))
  names = sorted(tensors)
  half = len(names) // 2
  save_file({k: tensors[k] for k in names[:half]},
            os.path.join(path, "model-00001-of-00002.safetensors"))
  save_file({k: tensors[k] for k in names[half:]},
            os.path.join(path, "model-00002-of-00002.safetensors"))
  os.remove(os.path.join(path, "model.safetensors"))
  index = {"weight_map": {k: f"model-0000{1 + (i >= half)}-of-00002.safetensors"
                          for i, k in enumerate(names)}}
  with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
    json.dump(index, f)
  cfg, params = rjm.load_hf_checkpoint(path)  # a complete sharded checkpoint loads
  assert cfg.n_layers == 2
  os.remove(os.path.join(path, "model-00002-of-00002.safetensors"))
  with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
    rjm.load_hf_checkpoint(path)


def _edit_config(path, **fields):
  """Overwrite fields of the checkpoint's config.json."""
  cfg_path = os.path.join(path, "config.json")
  d = json.load(open(cfg_path))
  d.update(fields)
  json.dump(d, open(cfg_path, "w"))


def test_unknown_model_type(ckpt):
  path, _ = ckpt
  _edit_config(path, model_type="mamba")
  with pytest.raises(ValueError, match="unknown model_type 'mamba'"):
    rjm.load_hf_checkpoint(path)


def test_shapes_that_do_not_match_the_config(ckpt):
  path, _ = ckpt
  _edit_config(path, intermediate_size=40)
  with pytest.raises(ValueError, match=r"w_gate.*got \(2, 16, 24\), config says "
                                       r"\(2, 16, 40\)"):
    rjm.load_hf_checkpoint(path)


def test_missing_tensor_is_named(ckpt):
  path, _ = ckpt
  f = os.path.join(path, "model.safetensors")
  tensors = load_file(f)
  del tensors["model.layers.1.self_attn.k_norm.weight"]
  save_file(tensors, f)
  with pytest.raises(ValueError, match="model.layers.1.self_attn.k_norm.weight"):
    rjm.load_hf_checkpoint(path)
