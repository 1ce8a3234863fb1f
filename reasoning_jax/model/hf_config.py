"""Hugging Face `config.json` <-> `ModelConfig`, for every supported family.

Reads both the transformers 4.x keys (`rope_theta`, `rope_scaling`,
`rope_local_base_freq`, `sliding_window_pattern`) and the 5.x keys (`rope_parameters`,
`layer_types`); writes the 4.x keys, which both versions load.
"""
from __future__ import annotations

from typing import Any

from reasoning_jax.model.config import ModelConfig, RopeConfig

# model_type -> (family, architecture class written on export)
SUPPORTED = {
    "llama": ("llama", "LlamaForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "gemma2": ("gemma2", "Gemma2ForCausalLM"),
    "gemma3_text": ("gemma3", "Gemma3ForCausalLM"),
}
_ACT = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu_tanh"}


def _rope(params: dict[str, Any] | None, theta: float) -> RopeConfig:
  """A RopeConfig from a `rope_scaling` / `rope_parameters` dict (None = plain RoPE)."""
  if not params:
    return RopeConfig(theta=float(theta))
  kind = params.get("rope_type", params.get("type", "default"))
  theta = float(params.get("rope_theta", theta))
  if kind == "default":
    return RopeConfig(theta=theta)
  if kind == "linear":
    return RopeConfig(theta=theta, kind="linear", factor=float(params["factor"]))
  if kind == "llama3":
    return RopeConfig(theta=theta, kind="llama3", factor=float(params["factor"]),
                      low_freq_factor=float(params["low_freq_factor"]),
                      high_freq_factor=float(params["high_freq_factor"]),
                      original_max_position=int(params["original_max_position_embeddings"]))
  raise ValueError(f"RoPE type {kind!r} is not supported (supported: default, linear, "
                   "llama3); convert the checkpoint without it or add the scaling to "
                   "reasoning_jax.model.config.RopeConfig")


def _need(d: dict[str, Any], key: str) -> Any:
  if key not in d:
    raise ValueError(f"config.json has no {key!r}; is this a decoder-only LM config?")
  return d[key]


def config_from_hf(d: dict[str, Any], dtype: str = "float32") -> ModelConfig:
  """Translate a transformers config dict into a `ModelConfig`."""
  mt = d.get("model_type")
  if mt == "gemma3" and "text_config" in d:
    raise ValueError("multimodal gemma3 checkpoints are not supported; export the text "
                     "model (Gemma3ForCausalLM, model_type 'gemma3_text')")
  if mt not in SUPPORTED:
    raise ValueError(f"unknown model_type {mt!r}; supported: {sorted(SUPPORTED)}")
  family = SUPPORTED[mt][0]
  n_layers = int(_need(d, "num_hidden_layers"))
  n_heads = int(_need(d, "num_attention_heads"))
  d_model = int(_need(d, "hidden_size"))
  head_dim = int(d.get("head_dim") or d_model // n_heads)
  act = d.get("hidden_activation") or d.get("hidden_act") or "silu"
  if act not in _ACT:
    raise ValueError(f"activation {act!r} is not supported (supported: {sorted(_ACT)})")
  if d.get("mlp_bias"):
    raise ValueError("mlp_bias=True is not supported")
  gemma = family in ("gemma2", "gemma3")
  rp = d.get("rope_parameters")
  if family == "gemma3":
    full = (rp or {}).get("full_attention") if rp else None
    local = (rp or {}).get("sliding_attention") if rp else None
    rope = _rope(full if full is not None else d.get("rope_scaling"),
                 d.get("rope_theta", 1e6))
    local_rope = _rope(local, d.get("rope_local_base_freq", 10000.0))
  else:
    rope = _rope(rp if rp is not None else d.get("rope_scaling"), d.get("rope_theta", 1e4))
    local_rope = None
  if family == "qwen2" and d.get("use_sliding_window"):
    raise ValueError("Qwen2 use_sliding_window=True is not supported")
  layer_is_local = None
  if gemma:
    types = d.get("layer_types")
    if types:
      layer_is_local = tuple(t == "sliding_attention" for t in types)
    elif family == "gemma2":
      layer_is_local = tuple(i % 2 == 0 for i in range(n_layers))
    else:
      pattern = int(d.get("sliding_window_pattern", 6))
      layer_is_local = tuple(bool((i + 1) % pattern) for i in range(n_layers))
  tie_default = gemma
  return ModelConfig(
      family=family, vocab_size=int(_need(d, "vocab_size")), d_model=d_model,
      n_layers=n_layers, n_heads=n_heads,
      n_kv_heads=int(d.get("num_key_value_heads") or n_heads), head_dim=head_dim,
      ffw_dim=int(_need(d, "intermediate_size")),
      norm_eps=float(d.get("rms_norm_eps", 1e-6)), norm_offset=1.0 if gemma else 0.0,
      rope=rope, local_rope=local_rope,
      tie_embeddings=bool(d.get("tie_word_embeddings", tie_default)),
      qkv_bias=family == "qwen2" or bool(d.get("attention_bias", False)),
      qk_norm=family in ("qwen3", "gemma3"), post_norms=gemma, embed_scale=gemma,
      attn_scale=float(_need(d, "query_pre_attn_scalar")) ** -0.5 if gemma else None,
      attn_softcap=d.get("attn_logit_softcapping") if family == "gemma2" else None,
      final_softcap=d.get("final_logit_softcapping") if gemma else None,
      sliding_window=d.get("sliding_window") if gemma else None,
      layer_is_local=layer_is_local, activation=_ACT[act],
      max_seq_len=int(d.get("max_position_embeddings", 2048)), dtype=dtype)


def _rope_scaling_dict(r: RopeConfig) -> dict[str, Any] | None:
  if r.kind == "default":
    return None
  if r.kind == "linear":
    return {"rope_type": "linear", "factor": r.factor}
  return {"rope_type": "llama3", "factor": r.factor, "low_freq_factor": r.low_freq_factor,
          "high_freq_factor": r.high_freq_factor,
          "original_max_position_embeddings": r.original_max_position}


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
  """A transformers config dict for `cfg` (4.x keys, which 5.x also reads)."""
  by_family = {fam: (mt, arch) for mt, (fam, arch) in SUPPORTED.items()}
  if cfg.family not in by_family:
    raise ValueError(f"family {cfg.family!r} has no transformers export")
  mt, arch = by_family[cfg.family]
  gemma = cfg.family in ("gemma2", "gemma3")
  d: dict[str, Any] = {
      "architectures": [arch], "model_type": mt, "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.d_model, "num_hidden_layers": cfg.n_layers,
      "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
      "head_dim": cfg.head_dim, "intermediate_size": cfg.ffw_dim,
      "rms_norm_eps": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
      "max_position_embeddings": cfg.max_seq_len, "rope_theta": cfg.rope.theta,
      "rope_scaling": _rope_scaling_dict(cfg.rope),
      "torch_dtype": cfg.dtype, "attention_dropout": 0.0,
  }
  act_key = "hidden_activation" if gemma else "hidden_act"
  d[act_key] = "silu" if cfg.activation == "silu" else "gelu_pytorch_tanh"
  if cfg.family == "llama":
    d.update(attention_bias=cfg.qkv_bias, mlp_bias=False)
  if cfg.family == "qwen3":
    d.update(attention_bias=cfg.qkv_bias, use_sliding_window=False)
  if cfg.family == "qwen2":
    d.update(use_sliding_window=False)
  if gemma:
    qpas = cfg.query_scale ** -2
    # transformers validates this field as an int (it is one in every released Gemma).
    qpas = int(round(qpas)) if abs(qpas - round(qpas)) < 1e-6 else qpas
    d.update(query_pre_attn_scalar=qpas,
             sliding_window=cfg.sliding_window,
             layer_types=["sliding_attention" if f else "full_attention"
                          for f in cfg.local_flags],
             final_logit_softcapping=cfg.final_softcap)
  if cfg.family == "gemma2":
    d["attn_logit_softcapping"] = cfg.attn_softcap
  if cfg.family == "gemma3":
    d["rope_local_base_freq"] = (cfg.local_rope or cfg.rope).theta
    d["attn_logit_softcapping"] = None
  return d
