"""Quantized base weights (QLoRA): int8 or 4-bit storage, dequantized per use.

Quantization itself is `qwix` (`qwix.quantize` / `qwix.dequantize` and its `QArray`
pytree, absmax scales per channel or per block). What qwix's model-level API cannot
do for a pure-functional model (it intercepts flax modules) is done here: a
`QuantizedWeight` leaf that `matmul.dense` dequantizes to the compute dtype right
before the product, so under the layer scan only one layer's weights are ever held
dequantized.

Scales: one per output channel and per layer; the last contracted axis is split into
blocks of `block` inputs with a scale each (0: one block), the usual QLoRA layout.

Shape key as in `params`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import qwix

from reasoning_jax.model.matmul import WeightOp, dense

# Storage kinds: qwix qtypes. "nf4" is QLoRA's 4-bit NormalFloat, "int4" plain 4-bit.
QTYPES = {"int8": jnp.int8, "int4": jnp.int4, "nf4": "nf4"}
# Contracted (input) axes of each stacked layer weight, after the layers axis.
N_IN = {"wq": 1, "wk": 1, "wv": 1, "wo": 2, "w_gate": 1, "w_up": 1, "w_down": 1}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedWeight(WeightOp):
  """A weight held as a qwix `QArray`; `dense` dequantizes it to x's dtype per use."""
  q: Any  # qwix.QArray, [L, *in, *out] (or one layer's slice inside the scan)

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.q.shape)

  @property
  def dtype(self):
    return self.q.dtype

  def dequantize(self) -> jax.Array:
    """The weight's values in its scales' dtype."""
    return qwix.dequantize(self.q)

  def apply(self, x, n_in, b, out_dtype):
    return dense(x, self.dequantize().astype(x.dtype), n_in, b, out_dtype=out_dtype)

  def astype(self, dtype) -> "QuantizedWeight":
    return QuantizedWeight(self.q.astype(dtype))  # the scales; the integers stay


def quantize_weight(w: jax.Array, kind: str, n_in: int, block: int) -> QuantizedWeight:
  """`w` `[L, *in, *out]` quantized to `kind` (a `QTYPES` name): absmax scales per
  layer and output channel, and per `block` inputs along the last input axis (one
  block when `block` is 0 or does not divide that axis)."""
  if kind not in QTYPES:
    raise ValueError(f"quantization {kind!r}: use one of {sorted(QTYPES)}")
  last_in = n_in  # axis 0 is layers; inputs are axes 1..n_in
  channel = tuple(i for i in range(w.ndim) if i != last_in)
  tiled = {last_in: block} if block and w.shape[last_in] % block == 0 else {}
  return QuantizedWeight(qwix.quantize(w, QTYPES[kind], channelwise_axes=channel,
                                       tiled_axes=tiled))


def quantize_layers(params, names, kind: str, block: int):
  """`params` (`model.Params`) with the layer weights `names` quantized; the
  embedding, head and norms stay as they are (QLoRA quantizes the projections)."""
  layers = params.layers
  new = {n: quantize_weight(getattr(layers, n), kind, N_IN[n], block) for n in names}
  return params.replace(layers=dataclasses.replace(layers, **new))


def dequantized(w) -> jax.Array:
  """A weight leaf as a plain array (dequantized when it is a `QuantizedWeight`)."""
  return w.dequantize() if isinstance(w, QuantizedWeight) else w
