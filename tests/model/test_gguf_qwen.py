"""Qwen2 and Qwen3 GGUF files import with the weights and logits of the same model's
Hugging Face directory.

Each test builds a tiny random transformers model, writes its weights as a GGUF the way
llama.cpp's converter does for these architectures (tensor names from the `gguf`
package's own name map, q/k NOT permuted: llama.cpp permutes only `llama`), and imports
both files with reasoning_jax.
"""
import numpy as np
import pytest

import jax

from reasoning_jax import model as rjm
from tests.model.hf_tiny import COMMON, FAMILIES, hf_logits

pytestmark = pytest.mark.reference


def make_tiny_model(family: str, path, **overrides):
  """A tiny transformers model of `family` with every parameter randomised, saved."""
  import torch
  import transformers
  cfg_cls, model_cls, extra = FAMILIES[family]
  cfg = getattr(transformers, cfg_cls)(**{**COMMON, **extra, **overrides},
                                       attn_implementation="eager")
  torch.manual_seed(0)
  model = getattr(transformers, model_cls)(cfg).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.copy_((1.0 if "norm" in name else 0.0) + 0.15 * torch.randn_like(p))
  model.save_pretrained(str(path), safe_serialization=True)
  return model


def write_gguf(model, arch: str, path, *, head_dim_key: bool, block_count=None,
               add_metadata=None):
  """Write `model`'s float32 weights and llama.cpp's metadata for `arch` as a GGUF;
  `add_metadata(writer)` may add more (a tokenizer)."""
  import gguf
  c = model.config
  w = gguf.GGUFWriter(str(path), arch)
  w.add_context_length(c.max_position_embeddings)
  w.add_embedding_length(c.hidden_size)
  w.add_block_count(c.num_hidden_layers if block_count is None else block_count)
  w.add_feed_forward_length(c.intermediate_size)
  w.add_head_count(c.num_attention_heads)
  w.add_head_count_kv(c.num_key_value_heads)
  w.add_rope_freq_base(c.rope_parameters["rope_theta"] if hasattr(c, "rope_parameters")
                       and c.rope_parameters else c.rope_theta)
  w.add_layer_norm_rms_eps(c.rms_norm_eps)
  if head_dim_key:  # llama.cpp writes key/value_length when the config has head_dim
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
  if add_metadata is not None:
    add_metadata(w)
  names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], c.num_hidden_layers)
  for hf_name, t in model.state_dict().items():
    if hf_name == "lm_head.weight" and c.tie_word_embeddings:
      continue  # tied: llama.cpp writes no output tensor
    name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    assert name is not None, hf_name
    w.add_tensor(name, t.float().numpy().copy())
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


CASES = {
    # Qwen2: q/k/v biases, tied embeddings, head_dim = d_model / n_heads (no key_length).
    "qwen2": dict(overrides={}, head_dim_key=False),
    # Qwen3: q/k norms, untied head, head_dim (24) != d_model / n_heads (16) as in the
    # released Qwen3 models, so it must come from `qwen3.attention.key_length`.
    "qwen3": dict(overrides=dict(head_dim=24), head_dim_key=True),
}


@pytest.mark.parametrize("arch", sorted(CASES))
def test_gguf_equals_hf_import(arch, tmp_path):
  case = CASES[arch]
  hf_model = make_tiny_model(arch, tmp_path / "hf", **case["overrides"])
  write_gguf(hf_model, arch, tmp_path / "m.gguf", head_dim_key=case["head_dim_key"])
  cfg_hf, params_hf = rjm.load_hf_checkpoint(str(tmp_path / "hf"), dtype="float32")
  cfg_gg, params_gg = rjm.load_gguf_checkpoint(str(tmp_path / "m.gguf"), dtype="float32")
  assert cfg_gg == cfg_hf
  assert cfg_gg.qkv_bias == (arch == "qwen2") and cfg_gg.qk_norm == (arch == "qwen3")
  # Same float32 bits in both files and no arithmetic on the way in: params bitwise equal.
  for a, b in zip(jax.tree.leaves(params_hf), jax.tree.leaves(params_gg), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  tokens = np.random.default_rng(1).integers(0, 96, size=(2, 12)).astype(np.int32)
  got = np.asarray(rjm.compute_logits(params_gg, cfg_gg, tokens))
  # Equal params and config run the same program: logits bitwise equal to the HF import.
  np.testing.assert_array_equal(got, np.asarray(rjm.compute_logits(params_hf, cfg_hf,
                                                                   tokens)))
  # And against torch: the 1e-4 budget of tests/model/test_hf_parity.py (float32 sums
  # in another order over 3 layers, logits of magnitude ~10).
  np.testing.assert_allclose(got, hf_logits(hf_model, tokens), atol=1e-4, rtol=0)


def test_block_count_below_the_files_blocks_is_an_error(tmp_path):
  hf_model = make_tiny_model("qwen2", tmp_path / "hf")
  path = tmp_path / "m.gguf"
  write_gguf(hf_model, "qwen2", path, head_dim_key=False, block_count=2)
  with pytest.raises(ValueError, match=r"m\.gguf holds tensors the model does not use: "
                                       r"\['blk\.2\.attn_k\.bias'"):
    rjm.load_gguf_checkpoint(str(path))


def test_block_count_above_the_files_blocks_names_the_missing_tensor(tmp_path):
  hf_model = make_tiny_model("qwen3", tmp_path / "hf", head_dim=24)
  path = tmp_path / "m.gguf"
  write_gguf(hf_model, "qwen3", path, head_dim_key=True, block_count=4)
  with pytest.raises(ValueError, match=r"m\.gguf is missing tensor 'blk\.3\.attn_norm"):
    rjm.load_gguf_checkpoint(str(path))


def test_truncated_gguf_names_the_file(tmp_path):
  hf_model = make_tiny_model("qwen2", tmp_path / "hf")
  path = tmp_path / "m.gguf"
  write_gguf(hf_model, "qwen2", path, head_dim_key=False)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) - 1000])
  with pytest.raises(ValueError, match=r"m\.gguf is not a readable GGUF file"):
    rjm.load_gguf_checkpoint(str(path))
