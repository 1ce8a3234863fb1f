"""The model's element-wise building blocks: RMSNorm, rotary embeddings, the MLP.

All run their arithmetic in float32 and return the compute dtype. Shape key as in
`forward`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from reasoning_jax.model.config import ModelConfig
from reasoning_jax.model.matmul import dense, matmul_precision

F32 = jnp.float32


def _lead(w: jax.Array, ndim: int) -> jax.Array:
  """`w` reshaped with leading unit axes to rank `ndim` (rank promotion stays explicit)."""
  return w.reshape((1,) * (ndim - w.ndim) + w.shape)


@jax.custom_vjp
def scale_last(y: jax.Array, w: jax.Array) -> jax.Array:
  """`y * w` with `w` (shape `y.shape[-1:]`) broadcast over `y`'s leading axes.

  Its gradient is autodiff's, except that the weight's (a sum of `g * y` over every
  token) is computed as a `[1, N] x [N, W]` float32 matmul: XLA:CPU rewrites the
  plain reduction into a slow reduce-window (`benchmarks/train_step.py`), while a
  matmul with a ones vector is a GEMM on every backend and the same float32 sum.
  """
  return y * _lead(w, y.ndim)


def _scale_last_fwd(y, w):
  return scale_last(y, w), (y, w)


def _scale_last_bwd(res, g):
  y, w = res
  gy = (g.astype(F32) * y.astype(F32)).reshape(-1, w.shape[-1])
  dw = jnp.dot(jnp.ones((1, gy.shape[0]), F32), gy, preferred_element_type=F32,
               precision=matmul_precision(F32))  # a float32 column sum: exact
  return (g * _lead(w, g.ndim)).astype(y.dtype), dw.reshape(w.shape).astype(w.dtype)


scale_last.defvjp(_scale_last_fwd, _scale_last_bwd)


def rms_norm(x: jax.Array, w: jax.Array, cfg: ModelConfig) -> jax.Array:
  """RMSNorm over the last axis in float32, with Gemma's (1 + w) form when configured."""
  x32 = x.astype(F32)
  y = x32 * lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.norm_eps)
  if cfg.norm_offset:
    return scale_last(y, cfg.norm_offset + w.astype(F32)).astype(x.dtype)
  # Llama/Qwen cast back before scaling (transformers' LlamaRMSNorm order).
  return scale_last(y.astype(x.dtype), w.astype(x.dtype))


def rope_tables(pos_BT: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """cos and sin `[B, T, H]` for rotate-half RoPE at the given positions (float32)."""
  ang = pos_BT.astype(F32)[..., None] * _lead(jnp.asarray(inv_freq, F32), 3)
  ang = jnp.concatenate([ang, ang], axis=-1)
  return jnp.cos(ang), jnp.sin(ang)


def apply_rope(x_BTnH: jax.Array, cos_BTH: jax.Array, sin_BTH: jax.Array) -> jax.Array:
  """Rotate-half RoPE (the transformers convention), computed in float32.

  `x * cos + rotate_half(x) * sin` written per half: XLA:CPU fuses that without
  materialising the rotated input. The same products and sums; inside a larger fusion
  XLA may pair them into FMAs differently, so the last bit can differ."""
  x = x_BTnH.astype(F32)
  half = x.shape[-1] // 2
  x1, x2 = x[..., :half], x[..., half:]
  cos, sin = cos_BTH[:, :, None, :], sin_BTH[:, :, None, :]
  out = jnp.concatenate([x1 * cos[..., :half] - x2 * sin[..., :half],
                         x2 * cos[..., half:] + x1 * sin[..., half:]], axis=-1)
  return out.astype(x_BTnH.dtype)


def mlp(x_BTD: jax.Array, w_gate: jax.Array, w_up: jax.Array, w_down: jax.Array,
        cfg: ModelConfig) -> jax.Array:
  """The gated MLP `down(act(gate(x)) * up(x))`, the activation in float32."""
  gate = dense(x_BTD, w_gate)
  up = dense(x_BTD, w_up)
  if cfg.activation == "silu":
    act = jax.nn.silu(gate.astype(F32))
  else:
    act = jax.nn.gelu(gate.astype(F32), approximate=True)
  return dense((act * up.astype(F32)).astype(x_BTD.dtype), w_down)
