"""Parameters declared once: shape, dtype, logical axes and initializer per leaf.

Initial values, abstract shapes (`jax.ShapeDtypeStruct`) and shardings are all derived
from `param_specs(cfg)`, so the three can never disagree. Layers are stacked on a
leading "layers" axis so the forward pass runs them with `lax.scan`.

Shape key: L layers, D model, N query heads, K kv heads, H head dim, F ffw, V vocab.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from reasoning_jax.model.config import ModelConfig

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ParamSpec:
  """Declaration of one parameter leaf.

  Attributes:
    shape: the leaf's shape.
    axes: one logical axis name (or None) per dimension, mapped to mesh axes by
      `reasoning_jax.sharding` rules.
    init: "normal" (std `scale / sqrt(fan_in)`), "zeros" or "ones".
    fan_in: the input size that normal init divides by.
  """
  shape: tuple[int, ...]
  axes: tuple[str | None, ...]
  init: str = "normal"
  fan_in: int = 1

  def __post_init__(self):
    if len(self.shape) != len(self.axes):
      raise ValueError(f"shape {self.shape} and axes {self.axes} differ in rank")


def param_specs(cfg: ModelConfig) -> Params:
  """The parameter tree of `cfg` as `ParamSpec` leaves."""
  L, D, N, K, H, F, V = (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads,
                         cfg.head_dim, cfg.ffw_dim, cfg.vocab_size)
  # Gemma's norms compute x * (1 + w): a zero weight is the identity there.
  norm_init = "zeros" if cfg.norm_offset else "ones"

  def norm(*lead):
    return ParamSpec((*lead, D), (*(("layers",) if lead else ()), "norm"), norm_init)

  layers: Params = {
      "attn_norm": norm(L),
      "wq": ParamSpec((L, D, N, H), ("layers", "embed", "q_heads", "head_dim"), fan_in=D),
      "wk": ParamSpec((L, D, K, H), ("layers", "embed", "kv_heads", "head_dim"), fan_in=D),
      "wv": ParamSpec((L, D, K, H), ("layers", "embed", "kv_heads", "head_dim"), fan_in=D),
      "wo": ParamSpec((L, N, H, D), ("layers", "q_heads", "head_dim", "embed"),
                      fan_in=N * H),
      "mlp_norm": norm(L),
      "w_gate": ParamSpec((L, D, F), ("layers", "embed", "mlp"), fan_in=D),
      "w_up": ParamSpec((L, D, F), ("layers", "embed", "mlp"), fan_in=D),
      "w_down": ParamSpec((L, F, D), ("layers", "mlp", "embed"), fan_in=F),
  }
  if cfg.qkv_bias:
    layers["bq"] = ParamSpec((L, N, H), ("layers", "q_heads", "head_dim"), "zeros")
    layers["bk"] = ParamSpec((L, K, H), ("layers", "kv_heads", "head_dim"), "zeros")
    layers["bv"] = ParamSpec((L, K, H), ("layers", "kv_heads", "head_dim"), "zeros")
  if cfg.qk_norm:
    layers["q_norm"] = ParamSpec((L, H), ("layers", "head_dim"), norm_init)
    layers["k_norm"] = ParamSpec((L, H), ("layers", "head_dim"), norm_init)
  if cfg.post_norms:
    layers["post_attn_norm"] = norm(L)
    layers["post_mlp_norm"] = norm(L)
  tree: Params = {
      "embed": ParamSpec((V, D), ("vocab", "embed"), fan_in=1),
      "final_norm": norm(),
      "layers": layers,
  }
  if not cfg.tie_embeddings:
    tree["lm_head"] = ParamSpec((D, V), ("embed", "vocab"), fan_in=D)
  return tree


def _is_spec(x) -> bool:
  return isinstance(x, ParamSpec)


def logical_axes(cfg: ModelConfig) -> Params:
  """Per-leaf logical axis tuples, with the structure of the params."""
  return jax.tree.map(lambda s: s.axes, param_specs(cfg), is_leaf=_is_spec)


def abstract_params(cfg: ModelConfig) -> Params:
  """`jax.ShapeDtypeStruct` leaves: the params' shapes without allocating them."""
  dtype = jnp.dtype(cfg.weight_dtype)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), param_specs(cfg),
                      is_leaf=_is_spec)


def init_params(cfg: ModelConfig, key: jax.Array, scale: float = 1.0) -> Params:
  """Random initial params: normal with std `scale/sqrt(fan_in)`; norms per family.

  A tied embedding gets std `scale/sqrt(D)` so that the first logits (normalised hidden
  state times the embedding) have about unit scale; an untied one gets std `scale`.
  """
  specs = param_specs(cfg)
  leaves, treedef = jax.tree.flatten(specs, is_leaf=_is_spec)
  keys = jax.random.split(key, len(leaves))
  dtype = jnp.dtype(cfg.weight_dtype)

  def one(spec: ParamSpec, k):
    if spec.init == "zeros":
      return jnp.zeros(spec.shape, dtype)
    if spec.init == "ones":
      return jnp.ones(spec.shape, dtype)
    std = scale / math.sqrt(spec.fan_in)
    if spec.axes[:2] == ("vocab", "embed"):
      std = scale / math.sqrt(cfg.d_model) if cfg.tie_embeddings else scale
    return (std * jax.random.normal(k, spec.shape, jnp.float32)).astype(dtype)

  return jax.tree.unflatten(treedef, [one(s, k) for s, k in zip(leaves, keys)])


def check_params(params: Params, cfg: ModelConfig, where: str = "params") -> None:
  """Raise a clear error if `params` does not have the tree and shapes `cfg` declares."""
  specs = param_specs(cfg)
  want = {jax.tree_util.keystr(p): s.shape
          for p, s in jax.tree_util.tree_leaves_with_path(specs, is_leaf=_is_spec)}
  have = {jax.tree_util.keystr(p): tuple(x.shape)
          for p, x in jax.tree_util.tree_leaves_with_path(params)}
  missing = sorted(set(want) - set(have))
  extra = sorted(set(have) - set(want))
  if missing or extra:
    raise ValueError(f"{where} do not match the config: missing {missing}, unexpected "
                     f"{extra}. Check that the config (family, tie_embeddings, qkv_bias, "
                     "qk_norm, post_norms) matches the checkpoint.")
  bad = [f"{k}: got {have[k]}, config says {want[k]}" for k in want if have[k] != want[k]]
  if bad:
    raise ValueError(f"{where} have shapes that do not match the config: " + "; ".join(bad))


def param_shardings(cfg: ModelConfig, mesh, rules) -> Params:
  """A NamedSharding per param leaf under `rules` (a `reasoning_jax.sharding`
  table), checked for divisibility on `mesh` with an error that names the axis."""
  from reasoning_jax.sharding import named_sharding
  return jax.tree_util.tree_map_with_path(
      lambda path, s: named_sharding(f"param {jax.tree_util.keystr(path)}", s.shape,
                                     s.axes, mesh, rules),
      param_specs(cfg), is_leaf=_is_spec)


def shard_params(params: Params, cfg: ModelConfig, mesh, rules) -> Params:
  """`params` placed on `mesh` under `rules` (an on-device reshard if already placed)."""
  return jax.device_put(params, param_shardings(cfg, mesh, rules))
