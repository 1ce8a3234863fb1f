"""Token log-probabilities of given sequences, computed in chunks over the sequence.

The full `[B, T, V]` logits of a training batch are the usual out-of-memory cause in
RL trainers (vocabularies of 150K-260K). Here the final hidden states are cut into
chunks of `chunk` positions; each chunk's logits are formed, reduced to the target
token's log-probability (and the entropy), and dropped. With `jax.checkpoint` on the
chunk function, the backward pass recomputes one chunk's logits at a time too; a single
chunk keeps its logits instead. The log-softmax statistics have a hand-written
backward pass (one fused pass over the chunk's logits).

Shape key: B batch, T tokens, C chunks, K chunk length, D model, V vocab.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from reasoning_jax.model.config import ModelConfig
from reasoning_jax.model.forward import forward_hidden, logits_from_hidden
from reasoning_jax.model.params import Params

F32 = jnp.float32


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _softmax_stats(logits, tgt, inv_temp, with_entropy: bool):
  """(log p(tgt), entropy) of softmax(logits * inv_temp) along the last axis."""
  out, _ = _softmax_stats_fwd(logits, tgt, inv_temp, with_entropy)
  return out


def _softmax_stats_fwd(logits, tgt, inv_temp, with_entropy):
  z = logits * inv_temp
  logz = jax.nn.logsumexp(z, axis=-1)
  logp = jnp.take_along_axis(z, tgt[..., None], axis=-1)[..., 0] - logz
  ent = None
  if with_entropy:  # a second pass of exp over the chunk: skipped when unused
    ent = logz - jnp.sum(jnp.exp(z - logz[..., None]) * z, axis=-1)
  return (logp, ent), (logits, tgt, inv_temp, logz, ent)


def _softmax_stats_bwd(with_entropy, res, g):
  # One fused pass over the chunk instead of autodiff's several (exp again, a
  # zero-filled scatter for the gather, the entropy's product rule):
  #   d logp / dz = onehot(tgt) - p,   d H / dz = -p (log p + H).
  logits, tgt, inv_temp, logz, ent = res
  g_lp, g_ent = g
  z = logits * inv_temp
  logp_all = z - logz[..., None]
  p = jnp.exp(logp_all)
  onehot = lax.broadcasted_iota(jnp.int32, z.shape, z.ndim - 1) == tgt[..., None]
  dz = g_lp[..., None] * (onehot.astype(F32) - p)
  if with_entropy:
    dz = dz - g_ent[..., None] * p * (logp_all + ent[..., None])
  return dz * inv_temp, None, None  # no gradient for targets or the temperature


_softmax_stats.defvjp(_softmax_stats_fwd, _softmax_stats_bwd)


def _chunk_stats(params: Params, cfg: ModelConfig, h_BKD: jax.Array, tgt_BK: jax.Array,
                 temperature: jax.Array, with_entropy: bool
                 ) -> tuple[jax.Array, jax.Array | None]:
  logits = logits_from_hidden(params, h_BKD, cfg)
  return _softmax_stats(logits, tgt_BK, 1.0 / temperature, with_entropy)


def token_logprobs(params: Params, cfg: ModelConfig, tokens_BT: jax.Array,
                   positions_BT: jax.Array, *, chunk: int = 256,
                   temperature: float | jax.Array = 1.0, with_entropy: bool = True,
                   first: int = 0) -> tuple[jax.Array, jax.Array | None]:
  """Per-token log-probabilities and entropies under the model, float32 `[B, T]`.

  Entry t is `log p(tokens[t] | tokens[<t])` (and the entropy of that distribution);
  entry 0 has no context and is 0. Logits are divided by `temperature` first, so the
  result matches a sampler that drew at that temperature.

  Args:
    params, cfg: the model.
    tokens_BT: int32 sequences (prompt and completion, padding anywhere masked by the
      caller's loss mask; left pads marked by negative positions).
    positions_BT: int32 positions, negative on left padding (see `forward_hidden`).
    chunk: positions per logits chunk; `chunk >= T` computes everything at once.
    temperature: sampling temperature the log-probabilities refer to.
    with_entropy: also return the entropies; False returns None in their place and
      saves a pass over the logits (SFT needs only the log-probabilities).
    first: the first entry to score (static); entries before it are 0 and no logits
      are formed for them. The vocabulary projection is the widest matmul of the
      model, so a caller whose loss mask starts at the completion skips it on every
      prompt position; the hidden states still run over the whole sequence (the
      scored tokens attend to the prompt), so the entries scored are unchanged.
  """
  B, T = tokens_BT.shape
  first = min(max(int(first), 1), T - 1) if T > 1 else 1
  h, _ = forward_hidden(params, tokens_BT, positions_BT, cfg)
  h, tgt = h[:, first - 1:-1], tokens_BT[:, first:]
  n = T - first
  k = max(1, min(chunk, n))
  c = -(-n // k)
  pad = c * k - n
  h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
  tgt = jnp.pad(tgt, ((0, 0), (0, pad)))
  h_CBKD = h.reshape(B, c, k, -1).swapaxes(0, 1)
  tgt_CBK = tgt.reshape(B, c, k).swapaxes(0, 1)
  temperature = jnp.asarray(temperature, F32)
  fn = lambda hc, tc: _chunk_stats(params, cfg, hc, tc, temperature,  # noqa: E731
                                   with_entropy)
  if c == 1:
    # One chunk: keep its logits for the backward pass instead of recomputing them
    # (chunk >= T asks for everything at once; saves a vocabulary GEMM and a pass).
    logp_CBK, ent_CBK = jax.tree.map(lambda x: x[None], fn(h_CBKD[0], tgt_CBK[0]))
  else:
    fn = jax.checkpoint(fn)
    logp_CBK, ent_CBK = jax.lax.map(lambda xs: fn(*xs), (h_CBKD, tgt_CBK))
  zero = jnp.zeros((B, first), F32)
  unchunk = lambda x_CBK: jnp.concatenate(  # noqa: E731
      [zero, x_CBK.swapaxes(0, 1).reshape(B, c * k)[:, :n]], axis=1)
  return unchunk(logp_CBK), (unchunk(ent_CBK) if with_entropy else None)
