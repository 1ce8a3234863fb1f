"""Pure-functional decoder-only transformers (Llama, Qwen2/3, Gemma 2/3) and checkpoints."""
from reasoning_jax.model.api import compute_logits, validate_tokens
from reasoning_jax.model.cache import KVCache, cache_shardings, init_cache, repeat_cache
from reasoning_jax.model.config import (ATTENTION_BACKENDS, PRESETS, ModelConfig,
                                        RopeConfig, preset)
from reasoning_jax.model.forward import forward, forward_hidden, logits_from_hidden
from reasoning_jax.model.hf_checkpoint import load_hf_checkpoint, save_hf_checkpoint
from reasoning_jax.model.scoring import token_logprobs
from reasoning_jax.model.params import (LayerParams, Params, ParamSpec, abstract_params,
                                        check_params, decode_params, init_params,
                                        logical_axes, param_shardings, param_specs,
                                        shard_params)

__all__ = [
    "ATTENTION_BACKENDS", "KVCache", "LayerParams", "ModelConfig", "Params", "ParamSpec",
    "PRESETS", "RopeConfig", "abstract_params", "cache_shardings", "check_params",
    "compute_logits", "decode_params", "forward", "forward_hidden", "init_cache",
    "init_params", "load_gguf_checkpoint", "load_hf_checkpoint", "logical_axes",
    "logits_from_hidden", "param_shardings", "param_specs", "preset", "repeat_cache", "save_hf_checkpoint",
    "shard_params", "token_logprobs", "validate_tokens",
]


def load_gguf_checkpoint(path, dtype="float32"):
  """Load a GGUF file of a Llama-architecture model into `(config, params)`.

  Imported lazily so that `gguf` is only needed by users who read GGUF files.
  """
  from reasoning_jax.model.gguf_checkpoint import load_gguf_checkpoint as _load
  return _load(path, dtype=dtype)
