"""LoRA adapters on the layer projections: declared once, applied at `matmul.dense`.

An adapter on projection `w` `[*in, *out]` is a pair `a` `[*in, R]`, `b` `[R, *out]`;
the adapted product is `x @ w + (alpha / R) * (x @ a) @ b`, summed in float32 before
the final cast (so `b = 0`, its initial value, gives the base's result bit for bit).
Adapters ride on the params themselves: `with_adapters` swaps each chosen weight leaf
for a `LoRAWeight` holding the base weight and its pair, which `dense` applies. The
forward, the sampler and the scoring code are the base model's, unchanged.

`adapter_specs` is the one declaration (shape, logical axes, initializer) that init,
abstract shapes and shardings derive from, as `params.param_specs` is for the base.

Shape key as in `params`; R the adapter rank.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from typing import Any

import jax
import jax.numpy as jnp

from reasoning_jax.model.config import ModelConfig
from reasoning_jax.model.matmul import F32, WeightOp, dense, matmul_precision
from reasoning_jax.model.params import Params, ParamSpec, init_from_specs, param_specs
from reasoning_jax.model.quant import N_IN, dequantized

# Our projection names and the Hugging Face module names PEFT targets.
HF_NAMES = {"wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "o_proj",
            "w_gate": "gate_proj", "w_up": "up_proj", "w_down": "down_proj"}
HF_PARENT = {"wq": "self_attn", "wk": "self_attn", "wv": "self_attn", "wo": "self_attn",
             "w_gate": "mlp", "w_up": "mlp", "w_down": "mlp"}
PROJECTIONS = tuple(HF_NAMES)


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
  """Which projections carry adapters, and their size (static under jit).

  Attributes:
    rank: R, the adapters' inner size (> 0).
    alpha: the adapters' output is scaled by alpha / rank (PEFT's convention).
    targets: fnmatch patterns over projection names, ours (`wq`, `w_down`) or Hugging
      Face's (`q_proj`, `down_proj`); each pattern must match at least one.
    dtype: the adapters' storage dtype (their products run in the compute dtype).
  """
  rank: int = 8
  alpha: float = 16.0
  targets: tuple[str, ...] = PROJECTIONS
  dtype: str = "float32"

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def names(self) -> tuple[str, ...]:
    """The targeted projections in declaration order; a ValueError for a pattern
    that matches none."""
    if self.rank < 1:
      raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
    hit = set()
    for pat in self.targets:
      got = {n for n in PROJECTIONS if fnmatch.fnmatch(n, pat)
             or fnmatch.fnmatch(HF_NAMES[n], pat)}
      if not got:
        raise ValueError(f"LoRA target {pat!r} matches no projection; the projections "
                         f"are {list(PROJECTIONS)} (or {list(HF_NAMES.values())})")
      hit |= got
    return tuple(n for n in PROJECTIONS if n in hit)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LoRAPair:
  """One projection's adapter: `a` `[L, *in, R]` and `b` `[L, R, *out]`."""
  a: Any
  b: Any


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Adapters:
  """The adapters of every targeted projection (None where there is none)."""
  wq: Any = None
  wk: Any = None
  wv: Any = None
  wo: Any = None
  w_gate: Any = None
  w_up: Any = None
  w_down: Any = None

  def present(self) -> dict[str, Any]:
    """Projection name -> `LoRAPair` of the targeted projections."""
    return {n: getattr(self, n) for n in PROJECTIONS if getattr(self, n) is not None}


def adapter_specs(cfg: ModelConfig, lora: LoRAConfig) -> Adapters:
  """The adapter tree with `ParamSpec` leaves: `a` normal (std 1/sqrt(fan_in)), `b`
  zeros, each with the logical axes of the weight it adapts plus "lora_rank"."""
  layers = param_specs(cfg).layers
  out = {}
  for n in lora.names():
    w, k = getattr(layers, n), N_IN[n]
    ins, outs = w.shape[1:1 + k], w.shape[1 + k:]
    ax_in, ax_out = w.axes[1:1 + k], w.axes[1 + k:]
    out[n] = LoRAPair(
        a=ParamSpec((w.shape[0], *ins, lora.rank), ("layers", *ax_in, "lora_rank"),
                    fan_in=math.prod(ins)),
        b=ParamSpec((w.shape[0], lora.rank, *outs), ("layers", "lora_rank", *ax_out),
                    "zeros"))
  return Adapters(**out)


def _is_spec(x) -> bool:
  return isinstance(x, ParamSpec)


def init_adapters(cfg: ModelConfig, lora: LoRAConfig, key: jax.Array) -> Adapters:
  """Initial adapters: `b = 0`, so the adapted model starts as the base."""
  return init_from_specs(adapter_specs(cfg, lora), key, jnp.dtype(lora.dtype),
                         lambda s: 1.0 / math.sqrt(s.fan_in))


def abstract_adapters(cfg: ModelConfig, lora: LoRAConfig) -> Adapters:
  """`jax.ShapeDtypeStruct` leaves of the adapters."""
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.dtype(lora.dtype)),
                      adapter_specs(cfg, lora), is_leaf=_is_spec)


def adapter_shardings(cfg: ModelConfig, lora: LoRAConfig, mesh, rules) -> Adapters:
  """A NamedSharding per adapter leaf under `rules` ("lora_rank" is replicated)."""
  from reasoning_jax.sharding import named_sharding
  return jax.tree_util.tree_map_with_path(
      lambda path, s: named_sharding(f"adapter {jax.tree_util.keystr(path)}", s.shape,
                                     s.axes, mesh, rules),
      adapter_specs(cfg, lora), is_leaf=_is_spec)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LoRAWeight(WeightOp):
  """A base weight (an array or a `quant.QuantizedWeight`) with its adapter pair;
  `dense` computes `x @ w + scale * (x @ a) @ b` with float32 accumulation."""
  w: Any
  a: Any
  b: Any
  scale: float = dataclasses.field(metadata=dict(static=True), default=1.0)

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.w.shape)

  def apply(self, x, n_in, bias, out_dtype):
    y = dense(x, self.w, n_in, bias, out_dtype=F32)
    low = dense(dense(x, self.a, n_in), self.b, 1, out_dtype=F32)
    return (y + self.scale * low).astype(out_dtype or x.dtype)

  def astype(self, dtype) -> "LoRAWeight":
    return LoRAWeight(self.w.astype(dtype), self.a.astype(dtype), self.b.astype(dtype),
                      self.scale)


def with_adapters(base: Params, adapters: Adapters, lora: LoRAConfig) -> Params:
  """`base` with each adapted projection as a `LoRAWeight` (no copy of any weight):
  the forward of the result is the adapted model, and its gradient with respect to
  `adapters` is the adapters' gradient."""
  new = {n: LoRAWeight(getattr(base.layers, n), p.a, p.b, lora.scale)
         for n, p in adapters.present().items()}
  return base.replace(layers=dataclasses.replace(base.layers, **new))


def delta(pair: LoRAPair, scale: float) -> jax.Array:
  """`scale * a @ b` as a `[L, *in, *out]` float32 weight update."""
  a, b = pair.a.astype(F32), pair.b.astype(F32)
  lead, r = a.shape[0], a.shape[-1]
  d = jnp.einsum("lir,lro->lio", a.reshape(lead, -1, r), b.reshape(lead, r, -1),
                 precision=matmul_precision(F32))
  return scale * d.reshape(a.shape[:-1] + b.shape[2:])


def merge(base: Params, adapters: Adapters, lora: LoRAConfig, dtype=None) -> Params:
  """Plain params with every adapter folded in: `w + scale * a @ b` (a quantized base
  weight is dequantized first), summed in float32 and stored in `dtype` (default the
  base weight's dtype, or the adapters' for a quantized base)."""
  new = {}
  for n, p in adapters.present().items():
    w = getattr(base.layers, n)
    to = dtype or (p.a.dtype if not isinstance(w, jax.Array) else w.dtype)
    new[n] = (dequantized(w).astype(F32) + delta(p, lora.scale)).astype(to)
  return base.replace(layers=dataclasses.replace(base.layers, **new))
