"""Host-facing entry points of the model: input validation and jitted scoring."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from reasoning_jax.model.config import ModelConfig
from reasoning_jax.model.forward import forward
from reasoning_jax.model.params import Params


def validate_tokens(tokens, cfg: ModelConfig, name: str = "tokens") -> np.ndarray:
  """Check a host token batch: 2-D, integer, ids in [0, vocab_size). Returns int32."""
  arr = np.asarray(tokens)
  if arr.ndim != 2:
    raise ValueError(f"{name} must be a 2-D [batch, length] array, got shape {arr.shape}")
  if arr.size == 0:
    raise ValueError(f"{name} is empty (shape {arr.shape})")
  if not np.issubdtype(arr.dtype, np.integer):
    raise TypeError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
  lo, hi = int(arr.min()), int(arr.max())
  if lo < 0 or hi >= cfg.vocab_size:
    raise ValueError(f"{name} has ids outside [0, {cfg.vocab_size}) (min {lo}, max {hi}); "
                     "the tokenizer does not match the model's vocabulary")
  return arr.astype(np.int32)


@functools.partial(jax.jit, static_argnums=(1,))
def _logits(params: Params, cfg: ModelConfig, tokens_BT: jax.Array) -> jax.Array:
  B, T = tokens_BT.shape
  positions_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32)[None, :], (B, T))
  return forward(params, tokens_BT, positions_BT, cfg)[0]


def compute_logits(params: Params, config: ModelConfig, tokens) -> jax.Array:
  """Float32 logits `[B, T, V]` of an unpadded int32 batch `[B, T]` (positions 0..T-1)."""
  if isinstance(tokens, jax.core.Tracer):
    raise TypeError("compute_logits validates its input on the host; inside jit call "
                    "reasoning_jax.model.forward directly")
  return _logits(params, config, jnp.asarray(validate_tokens(tokens, config)))
