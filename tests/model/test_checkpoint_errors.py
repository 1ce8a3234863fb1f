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


def test_config_with_fewer_layers_than_the_file_is_an_error(ckpt):
  path, _ = ckpt
  _edit_config(path, num_hidden_layers=1)
  with pytest.raises(ValueError, match=r"\['model.safetensors'\] hold 11 tensors the "
                                       r"config does not use: \['model.layers.1\."):
    rjm.load_hf_checkpoint(path)


def test_config_with_more_layers_than_the_file_names_the_missing_tensor(ckpt):
  path, _ = ckpt
  _edit_config(path, num_hidden_layers=3)
  with pytest.raises(ValueError, match=r"ckpt is missing tensor "
                                       r"'model.layers.2.input_layernorm.weight'"):
    rjm.load_hf_checkpoint(path)


def test_extra_tensor_in_the_file_is_named(ckpt):
  path, _ = ckpt
  f = os.path.join(path, "model.safetensors")
  tensors = load_file(f)
  tensors["model.layers.0.mlp.extra.weight"] = np.zeros(3, np.float32)
  tensors["model.rotary_emb.inv_freq"] = np.zeros(4, np.float32)  # old exports: allowed
  save_file(tensors, f)
  with pytest.raises(ValueError, match=r"1 tensors the config does not use: "
                                       r"\['model.layers.0.mlp.extra.weight'\]"):
    rjm.load_hf_checkpoint(path)


def test_tied_config_over_a_different_head_is_an_error(ckpt):
  path, params = ckpt
  _edit_config(path, tie_word_embeddings=True)  # the file has an untied lm_head
  with pytest.raises(ValueError, match="tie_word_embeddings=true but lm_head.weight "
                                       "differs"):
    rjm.load_hf_checkpoint(path)
  # A stored head equal to the embedding (some exports write both) loads.
  f = os.path.join(path, "model.safetensors")
  tensors = load_file(f)
  tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
  save_file(tensors, f)
  cfg, back = rjm.load_hf_checkpoint(path)
  assert cfg.tie_embeddings and back.lm_head is None
  np.testing.assert_array_equal(back.embed, params.embed)


@pytest.mark.parametrize("keep", [5, -64], ids=["header", "data"])
def test_truncated_safetensors_names_the_file(ckpt, keep):
  path, _ = ckpt
  f = os.path.join(path, "model.safetensors")
  data = open(f, "rb").read()
  open(f, "wb").write(data[:keep])
  with pytest.raises(ValueError, match=r"ckpt/model\.safetensors.*truncated"):
    rjm.load_hf_checkpoint(path)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\xff\xfe"],
                         ids=["garbage", "a list", "not utf-8"])
def test_bad_config_json_names_the_file(ckpt, text):
  path, _ = ckpt
  with open(os.path.join(path, "config.json"), "w", encoding="latin-1") as f:
    f.write(text)
  with pytest.raises(ValueError, match=r"ckpt/config\.json"):
    rjm.load_hf_checkpoint(path)


def test_heads_that_do_not_fit_the_tensor_name_it(ckpt):
  path, _ = ckpt
  _edit_config(path, num_attention_heads=3)  # 3 heads x 8 do not divide q_proj's 16 rows
  with pytest.raises(ValueError, match=r"model\.safetensors: tensor "
                                       r"'model\.layers\.0\.self_attn\.q_proj\.weight' of "
                                       r"shape \(16, 16\) does not fit config\.json"):
    rjm.load_hf_checkpoint(path)
