"""Import and export Hugging Face checkpoint directories (config.json + safetensors).

Tensor names follow transformers' `*ForCausalLM` modules. Linear weights are stored
`[out, in]` there and `[in, ...]` here; per-layer tensors are stacked on a leading
layers axis. Sharded checkpoints (`model.safetensors.index.json`) are read shard by
shard.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from reasoning_jax.model.config import ModelConfig
from reasoning_jax.model.hf_config import config_from_hf, config_to_hf
from reasoning_jax.model.params import LayerParams, Params, check_params, param_specs

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"


def _layer_names(cfg: ModelConfig) -> dict[str, str]:
  """Our per-layer leaf name -> transformers' module path under `model.layers.{i}`."""
  gemma = cfg.family in ("gemma2", "gemma3")
  names = {
      "attn_norm": "input_layernorm.weight",
      "wq": "self_attn.q_proj.weight", "wk": "self_attn.k_proj.weight",
      "wv": "self_attn.v_proj.weight", "wo": "self_attn.o_proj.weight",
      "bq": "self_attn.q_proj.bias", "bk": "self_attn.k_proj.bias",
      "bv": "self_attn.v_proj.bias",
      "q_norm": "self_attn.q_norm.weight", "k_norm": "self_attn.k_norm.weight",
      "w_gate": "mlp.gate_proj.weight", "w_up": "mlp.up_proj.weight",
      "w_down": "mlp.down_proj.weight",
  }
  if gemma:
    # Gemma's "post_attention_layernorm" normalises the attention *output*; the
    # pre-MLP norm is "pre_feedforward_layernorm".
    names.update(post_attn_norm="post_attention_layernorm.weight",
                 mlp_norm="pre_feedforward_layernorm.weight",
                 post_mlp_norm="post_feedforward_layernorm.weight")
  else:
    names["mlp_norm"] = "post_attention_layernorm.weight"
  return names


def _to_ours(name: str, w: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  """One layer's HF tensor in our layout."""
  D, N, K, H = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  if name == "wq":
    return w.T.reshape(D, N, H)
  if name in ("wk", "wv"):
    return w.T.reshape(D, K, H)
  if name == "wo":
    return w.T.reshape(N, H, D)
  if name in ("w_gate", "w_up", "w_down"):
    return w.T
  if name == "bq":
    return w.reshape(N, H)
  if name in ("bk", "bv"):
    return w.reshape(K, H)
  return w


def _to_hf(name: str, w: np.ndarray) -> np.ndarray:
  """One layer's tensor of ours in transformers' layout."""
  if name in ("wq", "wk", "wv"):
    return np.ascontiguousarray(w.reshape(w.shape[0], -1).T)
  if name == "wo":
    return np.ascontiguousarray(w.reshape(-1, w.shape[-1]).T)
  if name in ("w_gate", "w_up", "w_down"):
    return np.ascontiguousarray(w.T)
  if name in ("bq", "bk", "bv"):
    return w.reshape(-1)
  return w


class _TensorFiles:
  """Name -> tensor over one or several safetensors files, opened lazily."""

  def __init__(self, path: str):
    index = os.path.join(path, _INDEX)
    single = os.path.join(path, _SINGLE)
    if os.path.exists(index):
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
      self.where = {k: os.path.join(path, v) for k, v in weight_map.items()}
      missing = sorted({v for v in self.where.values() if not os.path.exists(v)})
      if missing:
        raise FileNotFoundError(f"{_INDEX} in {path} names shard files that are missing: "
                                f"{[os.path.basename(m) for m in missing]}")
    elif os.path.exists(single):
      with safe_open(single, framework="np") as f:
        self.where = {k: single for k in f.keys()}
    else:
      raise FileNotFoundError(f"{path} has neither {_SINGLE} nor {_INDEX}; a Hugging "
                              "Face checkpoint directory needs its safetensors weights")
    self._open: dict[str, Any] = {}

  def has(self, name: str) -> bool:
    return name in self.where

  def get(self, name: str) -> np.ndarray:
    if name not in self.where:
      raise ValueError(f"checkpoint is missing tensor {name!r}")
    file = self.where[name]
    if file not in self._open:
      self._open[file] = safe_open(file, framework="np")
    return self._open[file].get_tensor(name)


def read_hf_config(path: str) -> dict[str, Any]:
  """The parsed config.json of a checkpoint directory, with a clear error if absent."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint directory {path!r} does not exist")
  cfg_path = os.path.join(path, "config.json")
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f"{path} has no config.json; a Hugging Face checkpoint "
                            "directory needs config.json next to the safetensors files")
  with open(cfg_path) as f:
    return json.load(f)


def load_hf_checkpoint(path: str, dtype: str = "float32") -> tuple[ModelConfig, Params]:
  """Load a transformers checkpoint directory into `(config, params)`.

  Args:
    path: directory holding config.json and model.safetensors (or a sharded index).
    dtype: "float32" or "bfloat16", the dtype of the returned params and activations.
  """
  cfg = config_from_hf(read_hf_config(path), dtype=str(jnp.dtype(dtype)))
  files = _TensorFiles(path)
  np_dtype = jnp.dtype(cfg.dtype)
  layer_names = _layer_names(cfg)
  specs = param_specs(cfg)

  def get(name: str) -> np.ndarray:
    return files.get(name).astype(np.float32).astype(np_dtype)

  layers = {}
  for ours in specs.layers.present():
    stacked = []
    for i in range(cfg.n_layers):
      stacked.append(_to_ours(ours, get(f"model.layers.{i}.{layer_names[ours]}"), cfg))
    layers[ours] = np.stack(stacked)
  params = Params(embed=get("model.embed_tokens.weight"),
                  final_norm=get("model.norm.weight"), layers=LayerParams(**layers),
                  lm_head=None if cfg.tie_embeddings else get("lm_head.weight").T)
  check_params(params, cfg, where=f"tensors in {path}")
  return cfg, jax.tree.map(jnp.asarray, params)


def save_hf_checkpoint(params: Params, config: ModelConfig, path: str) -> None:
  """Write `params` as a transformers checkpoint directory (config.json + safetensors).

  The tensors keep the params' dtype; `transformers.AutoModelForCausalLM` loads the
  directory and computes the same logits.
  """
  check_params(params, config)
  os.makedirs(path, exist_ok=True)
  host = jax.tree.map(np.asarray, jax.device_get(params))
  names = _layer_names(config)
  tensors: dict[str, np.ndarray] = {
      "model.embed_tokens.weight": host.embed, "model.norm.weight": host.final_norm}
  for ours, stacked in host.layers.present().items():
    for i in range(config.n_layers):
      tensors[f"model.layers.{i}.{names[ours]}"] = _to_hf(ours, stacked[i])
  if not config.tie_embeddings:
    tensors["lm_head.weight"] = np.ascontiguousarray(host.lm_head.T)
  tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
  # Write to a temporary name first so a crash never leaves a half-written file that
  # looks like a checkpoint.
  tmp = os.path.join(path, _SINGLE + ".tmp")
  save_file(tensors, tmp, metadata={"format": "pt"})
  os.replace(tmp, os.path.join(path, _SINGLE))
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config_to_hf(config), f, indent=2)
