"""The decode forms of the params (`decode_params`): compute dtype, storage bits and
layouts that the cached forward (`forward.forward_hidden` with a cache) reads fastest.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from reasoning_jax.model import cpu_matvec as cpu_kernel
from reasoning_jax.model.cache import store
from reasoning_jax.model.config import ModelConfig
from reasoning_jax.model.params import Params


DECODE_LAYOUTS = ("stacked", "fused", "fused_t")
# The fused layer matrices and the separate stacks each concatenates on its output axis.
FUSED_PARTS = {"wqkv": ("wq", "wk", "wv"), "w_gate_up": ("w_gate", "w_up")}


def decode_params(params: Params, cfg: ModelConfig, *, layout: str = "stacked",
                  unstack: bool = False, cpu_matvec: bool = False,
                  packed: bool = False) -> Params:
  """The params as the cached forward reads them fastest: in the compute dtype, with
  the stacked layer weights held as their storage bits (bf16 as uint16, see
  `cache.storage_dtype`), in one of three layouts.

  Why the bits: when a scan slices a stacked bf16 weight and feeds the slice to a
  matmul, XLA:CPU's float normalisation converts the whole stack to float32 (hoisted
  out of the decode loop) and converts every slice back each step, so each step moves
  several times the weight bytes. An integer stack is sliced as-is and bitcast back
  per layer (with the heads-major cache, batch-1 decode went from 26% to 33% of the
  bandwidth bound in paired runs, docs/benchmarks.md); the bitcast of the stack costs
  one copy per call.

  Layouts (the cached forward, `forward_hidden` with a cache, reads all of them):
    "stacked": the weights as declared (bit-identical results).
    "fused": q/k/v as one `[L, D, (N + 2K) H]` matrix (`wqkv`, biases `bqkv`) and
      gate/up as one `[L, D, 2F]` (`w_gate_up`): 2 fewer products per layer. Each
      output column is still one float32-accumulated dot over the same inputs.
    "fused_t": "fused" with every layer matrix transposed to `[L, out, in]` (names
      with a `_t` suffix). For GPUs: there a batch-1 step is bound by the number of
      kernels (docs/benchmarks.md), and XLA:GPU runs a matrix-vector product whose
      contraction axis is minor as one reduction kernel, but one with fewer than ~1024
      output columns stored `[in, out]` as two (a multiply that writes every float32
      product, then the reduction): `benchmarks/gpu_kernels.py` counts the kernels.
  The fused layouts concatenate heads, so they are not for tensor-sharded weights.

  With `cpu_matvec` (a bf16 model decoded by the kernel of `model.cpu_matvec`, which
  reads bf16 or its bits alike) the layer stacks stay bf16, read in place by the
  kernel and by `cpu_matvec.take` in the prefill (`forward_hidden`), so no copy is
  made (the copy to bits cost ~150 ms per call for SmolLM2-135M on a 2-core CPU,
  page faults of its fresh buffer included), and the output head is added as
  `params["head_t"]`, one bf16 `[1, V, D]` matrix (the tied embedding as is, an
  untied head transposed) for `logits_from_hidden(..., cpu_matvec=True)`. With
  `packed` too (stacked layers only; where `cpu_matvec.packs`: CPUs with AVX-512 BF16),
  `params["packed"]` holds the `cpu_matvec.pack`ed form of each `[L, *in, *out]` layer
  matrix by name, and `params["head_p"]` the head's: one more copy of the weights per
  call, which the kernel multiplies 2.4x as fast as the stacks (docs/benchmarks.md).

  With `unstack`, `params["layers"]` becomes a tuple of per-layer trees (one copy per
  call), which the cached forward runs as an unrolled loop. For GPUs: a layer loop
  costs kernels of its own (counter, condition), and there GEMM operands (batch > 1)
  are copied out of a stacked weight every step, sliced in a loop or not (212 MB per
  SmolLM2-135M step); separate buffers are read in place.
  """
  if layout not in DECODE_LAYOUTS:
    raise ValueError(f"decode layout {layout!r}: use one of {DECODE_LAYOUTS}")
  params = jax.tree.map(lambda x: x.astype(cfg.dtype), params)
  layers = params["layers"]
  if layout != "stacked":
    layers = _fused(layers, transpose=layout == "fused_t")
  if not cpu_matvec:
    layers = jax.tree.map(store, layers)
  if unstack:
    layers = tuple(jax.tree.map(lambda x, i=i: x[i], layers) for i in range(cfg.n_layers))
  extra = {}
  if cpu_matvec and jnp.dtype(cfg.dtype) == jnp.bfloat16:
    head = params["embed"] if cfg.tie_embeddings else params["lm_head"].T
    extra["head_t"] = head[None]
    if packed and not unstack:  # the forward reads packed forms of stacked layers
      extra["packed"] = _packed(layers)
      if cpu_kernel.packs(*head.shape[::-1]):
        extra["head_p"] = cpu_kernel.pack(head.T[None])
  return dict(params, layers=layers, **extra)


def _packed(layers: Params) -> Params:
  """`cpu_matvec.pack` of each stacked bf16 `[L, *in, *out]` layer matrix that packs
  (the fused layout's `wqkv` and `w_gate_up` too), with separate q/k/v and gate/up
  stacks packed into one `wqkv` and one `w_gate_up` each.

  Why fuse: one kernel call per fused product instead of three and two (x rounded to
  bf16 once, one job for both cores; `forward` then splits q/k/v and gate/up inside
  the kernels that read them): a 30-layer `[16, 576]` chain of SmolLM2-135M's
  products took 9.5 vs 10.2 ms (docs/benchmarks.md, session 20). The packed forms
  are concatenated on their strip axis (a packed `[K, N1 + N2]` is the two packed
  matrices one after the other); session 18 concatenated the stacks before packing,
  which cost more than it saved. Each output column is the same float32 sum as
  unfused, bit for bit."""
  mats = {n: w for n, w in layers.items() if n in _PACKABLE and w.dtype == jnp.bfloat16}
  out = {}
  for name, w in mats.items():
    k = math.prod(w.shape[1:1 + (2 if name == "wo" else 1)])
    if cpu_kernel.packs(k, w[0].size // k):
      out[name] = cpu_kernel.pack(w.reshape(w.shape[0], k, -1))
  for fused, parts in FUSED_PARTS.items():
    if fused not in out and all(n in out for n in parts):
      out[fused] = jnp.concatenate([out.pop(n) for n in parts], axis=1)
  return out


_PACKABLE = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down", "wqkv", "w_gate_up")


def _fused(layers: Params, transpose: bool) -> Params:
  """The layer stack with q/k/v and gate/up each concatenated on the output axis; with
  `transpose`, every matrix as `[L, out, in]` under its name + "_t"."""
  layers = dict(layers)
  L, D = layers["wq"].shape[:2]
  flat = lambda name, *lead: layers.pop(name).reshape(*lead, -1)  # noqa: E731
  layers["wqkv"] = jnp.concatenate([flat(n, L, D) for n in ("wq", "wk", "wv")], -1)
  if "bq" in layers:
    layers["bqkv"] = jnp.concatenate([flat(n, L) for n in ("bq", "bk", "bv")], -1)
  layers["w_gate_up"] = jnp.concatenate([layers.pop("w_gate"), layers.pop("w_up")], -1)
  if transpose:
    layers["wo"] = layers.pop("wo").reshape(L, -1, D)  # [L, N H, D]
    for name in ("wqkv", "wo", "w_gate_up", "w_down"):
      layers[name + "_t"] = layers.pop(name).swapaxes(1, 2)
  return layers
