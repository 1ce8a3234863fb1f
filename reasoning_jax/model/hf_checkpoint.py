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


def _safe_open(file: str):
  """`safe_open`, with a truncated or non-safetensors file named in the error."""
  try:
    return safe_open(file, framework="np")
  except Exception as e:  # SafetensorError / OSError: header or length do not parse
    raise ValueError(f"{file} is not a readable safetensors file ({e}); it may be "
                     "truncated: download or convert it again") from e


def _read_json(file: str) -> Any:
  try:
    with open(file, encoding="utf-8") as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{file} is not valid JSON ({e})") from e


class _TensorFiles:
  """Name -> tensor over one or several safetensors files, opened lazily.

  Records which names were read, so the loader can refuse tensors it never used.
  """

  def __init__(self, path: str):
    index = os.path.join(path, _INDEX)
    single = os.path.join(path, _SINGLE)
    if os.path.exists(index):
      weight_map = _read_json(index)
      if not isinstance(weight_map, dict) or not isinstance(
          weight_map.get("weight_map"), dict):
        raise ValueError(f"{index} has no 'weight_map' object")
      self.where = {k: os.path.join(path, v) for k, v in weight_map["weight_map"].items()}
      missing = sorted({v for v in self.where.values() if not os.path.exists(v)})
      if missing:
        raise FileNotFoundError(f"{_INDEX} in {path} names shard files that are missing: "
                                f"{[os.path.basename(m) for m in missing]}")
    elif os.path.exists(single):
      with _safe_open(single) as f:
        self.where = {k: single for k in f.keys()}
    else:
      raise FileNotFoundError(f"{path} has neither {_SINGLE} nor {_INDEX}; a Hugging "
                              "Face checkpoint directory needs its safetensors weights")
    self.path = path
    self.used: set[str] = set()
    self._open: dict[str, Any] = {}

  def has(self, name: str) -> bool:
    return name in self.where

  def get(self, name: str) -> np.ndarray:
    if name not in self.where:
      raise ValueError(f"checkpoint {self.path} is missing tensor {name!r}")
    file = self.where[name]
    if file not in self._open:
      self._open[file] = _safe_open(file)
    self.used.add(name)
    try:
      return self._open[file].get_tensor(name)
    except Exception as e:  # SafetensorError: the data region is cut short
      raise ValueError(f"{file}: tensor {name!r} cannot be read ({e}); the file may be "
                       "truncated") from e

  def check_all_used(self, ignore: tuple[str, ...] = ()) -> None:
    """Raise naming the files and tensors that were never read."""
    unused = sorted(n for n in set(self.where) - self.used
                    if not n.endswith(ignore))
    if unused:
      files = sorted({os.path.basename(self.where[n]) for n in unused})
      raise ValueError(
          f"{self.path}: {files} hold {len(unused)} tensors the config does not use: "
          f"{unused[:8]}{' and more' if len(unused) > 8 else ''}. config.json does not "
          "describe these weights (e.g. fewer num_hidden_layers than the files hold); "
          "fix config.json or use the matching checkpoint.")


def read_hf_config(path: str) -> dict[str, Any]:
  """The parsed config.json of a checkpoint directory, with a clear error if absent."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint directory {path!r} does not exist")
  cfg_path = os.path.join(path, "config.json")
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f"{path} has no config.json; a Hugging Face checkpoint "
                            "directory needs config.json next to the safetensors files")
  d = _read_json(cfg_path)
  if not isinstance(d, dict):
    raise ValueError(f"{cfg_path} must hold a JSON object, got {type(d).__name__}")
  return d


def load_hf_checkpoint(path: str, dtype: str = "float32") -> tuple[ModelConfig, Params]:
  """Load a transformers checkpoint directory into `(config, params)`.

  Every tensor of the files must be used and every one the config implies present
  (else ValueError naming the file and the tensor); a config.json or safetensors file
  that does not parse is named in the error.

  Args:
    path: directory holding config.json and model.safetensors (or a sharded index).
    dtype: "float32" or "bfloat16", the dtype of the returned params and activations.
  """
  try:
    cfg = config_from_hf(read_hf_config(path), dtype=str(jnp.dtype(dtype)))
  except (ValueError, TypeError) as e:
    raise ValueError(f"{os.path.join(path, 'config.json')}: {e}") from e
  files = _TensorFiles(path)
  np_dtype = jnp.dtype(cfg.dtype)
  layer_names = _layer_names(cfg)

  def get(name: str) -> np.ndarray:
    return files.get(name).astype(np.float32).astype(np_dtype)

  def layer(ours: str, i: int) -> np.ndarray:
    name = f"model.layers.{i}.{layer_names[ours]}"
    w = get(name)
    try:
      return _to_ours(ours, w, cfg)
    except ValueError as e:  # a reshape to config.json's heads
      raise ValueError(f"{files.where[name]}: tensor {name!r} of shape {w.shape} does "
                       f"not fit config.json ({e})") from e

  layers = {ours: np.stack([layer(ours, i) for i in range(cfg.n_layers)])
            for ours in param_specs(cfg).layers.present()}
  params = Params(embed=get("model.embed_tokens.weight"),
                  final_norm=get("model.norm.weight"), layers=LayerParams(**layers),
                  lm_head=None if cfg.tie_embeddings else get("lm_head.weight").T)
  if cfg.tie_embeddings and files.has("lm_head.weight"):
    # Some exports store the tied head too; it is the embedding, or the config is wrong.
    if not np.array_equal(get("lm_head.weight"), params.embed):
      raise ValueError(f"{path}: config.json says tie_word_embeddings=true but "
                       "lm_head.weight differs from model.embed_tokens.weight; set "
                       "tie_word_embeddings to false")
  # Rotary inverse frequencies are a buffer some old exports saved, recomputed here.
  files.check_all_used(ignore=("rotary_emb.inv_freq",))
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
