"""Token log-probabilities of given sequences, computed in chunks over the sequence.

The full `[B, T, V]` logits of a training batch are the usual out-of-memory cause in
RL trainers (vocabularies of 150K-260K). Here the final hidden states are cut into
chunks of `chunk` positions; each chunk's logits are formed, reduced to the target
token's log-probability (and the entropy), and dropped. With `jax.checkpoint` on the
chunk function, the backward pass recomputes one chunk's logits at a time too.

Shape key: B batch, T tokens, C chunks, K chunk length, D model, V vocab.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from reasoning_jax.model.config import ModelConfig
from reasoning_jax.model.forward import forward_hidden, logits_from_hidden
from reasoning_jax.model.params import Params

F32 = jnp.float32


def _chunk_stats(params: Params, cfg: ModelConfig, h_BKD: jax.Array, tgt_BK: jax.Array,
                 temperature: jax.Array, with_entropy: bool
                 ) -> tuple[jax.Array, jax.Array | None]:
  logits = logits_from_hidden(params, h_BKD, cfg) / temperature
  logz = jax.nn.logsumexp(logits, axis=-1)
  tgt = jnp.take_along_axis(logits, tgt_BK[..., None], axis=-1)[..., 0]
  if not with_entropy:  # a second pass of exp over B x K x V: skipped when unused
    return tgt - logz, None
  p = jnp.exp(logits - logz[..., None])
  entropy = logz - jnp.sum(p * logits, axis=-1)
  return tgt - logz, entropy


def token_logprobs(params: Params, cfg: ModelConfig, tokens_BT: jax.Array,
                   positions_BT: jax.Array, *, chunk: int = 256,
                   temperature: float | jax.Array = 1.0, with_entropy: bool = True
                   ) -> tuple[jax.Array, jax.Array | None]:
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
  """
  B, T = tokens_BT.shape
  h, _ = forward_hidden(params, tokens_BT, positions_BT, cfg)
  h, tgt = h[:, :-1], tokens_BT[:, 1:]
  n = T - 1
  k = max(1, min(chunk, n))
  c = -(-n // k)
  pad = c * k - n
  h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
  tgt = jnp.pad(tgt, ((0, 0), (0, pad)))
  h_CBKD = h.reshape(B, c, k, -1).swapaxes(0, 1)
  tgt_CBK = tgt.reshape(B, c, k).swapaxes(0, 1)
  temperature = jnp.asarray(temperature, F32)
  fn = jax.checkpoint(lambda hc, tc: _chunk_stats(params, cfg, hc, tc, temperature,
                                                  with_entropy))
  logp_CBK, ent_CBK = jax.lax.map(lambda xs: fn(*xs), (h_CBKD, tgt_CBK))
  zero = jnp.zeros((B, 1), F32)
  unchunk = lambda x_CBK: jnp.concatenate(  # noqa: E731
      [zero, x_CBK.swapaxes(0, 1).reshape(B, c * k)[:, :n]], axis=1)
  return unchunk(logp_CBK), (unchunk(ent_CBK) if with_entropy else None)
