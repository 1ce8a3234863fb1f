"""Tiny random transformers checkpoints of every supported family, built in the test.

Every parameter (norm weights and biases included) is randomised, so a wrong norm
offset, a missing bias or a transposed projection changes the logits.
"""
from __future__ import annotations

import numpy as np

COMMON = dict(vocab_size=96, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, intermediate_size=96,
              max_position_embeddings=128, rms_norm_eps=1e-6)

FAMILIES = {
    # Llama 3.1/3.2 style with the llama3 RoPE scaling (short original context so the
    # scaled and smoothed frequency bands are all exercised at these positions).
    "llama3": ("LlamaConfig", "LlamaForCausalLM", dict(
        rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                          high_freq_factor=4.0, original_max_position_embeddings=64))),
    "smollm2": ("LlamaConfig", "LlamaForCausalLM", dict(
        rope_theta=100000.0, tie_word_embeddings=True)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        rope_theta=1e6, tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(
        rope_theta=1e6, tie_word_embeddings=False)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(
        rope_theta=10000.0, query_pre_attn_scalar=24, sliding_window=4,
        attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
        hidden_activation="gelu_pytorch_tanh",
        layer_types=["sliding_attention", "full_attention", "sliding_attention"])),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        rope_theta=1e6, rope_local_base_freq=10000.0, query_pre_attn_scalar=24,
        sliding_window=4, rope_scaling=dict(rope_type="linear", factor=4.0),
        hidden_activation="gelu_pytorch_tanh",
        layer_types=["sliding_attention", "sliding_attention", "full_attention"])),
}


def make_tiny(family: str, path: str, seed: int = 0):
  """Build, randomise and save a tiny transformers model; return the torch model."""
  import torch
  import transformers
  cfg_cls, model_cls, extra = FAMILIES[family]
  cfg = getattr(transformers, cfg_cls)(**COMMON, **extra, attn_implementation="eager")
  torch.manual_seed(seed)
  model = getattr(transformers, model_cls)(cfg).eval()
  gemma = family.startswith("gemma")
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        base = 0.0 if gemma else 1.0
        p.copy_(base + 0.2 * torch.randn_like(p))
      else:
        p.copy_(0.15 * torch.randn_like(p))
  model.save_pretrained(path, safe_serialization=True)
  return model


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
  """float32 logits of a transformers model on an unpadded batch."""
  import torch
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens, dtype=torch.long))
  return out.logits.float().numpy()
