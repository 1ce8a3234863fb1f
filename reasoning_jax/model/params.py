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

from reasoning_jax.model.cache import store
from reasoning_jax.model.config import ModelConfig
from reasoning_jax.model.matmul import WeightOp

@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerParams:
  """The layers' leaves, each stacked on a leading layers axis `L`.

  Optional leaves are None where the config has no such part (`qkv_bias`, `qk_norm`,
  `post_norms`); None is an empty subtree, so tree maps skip it.
  """
  attn_norm: Any
  wq: Any  # [L, D, N, H]
  wk: Any  # [L, D, K, H]
  wv: Any  # [L, D, K, H]
  wo: Any  # [L, N, H, D]
  mlp_norm: Any
  w_gate: Any  # [L, D, F]
  w_up: Any    # [L, D, F]
  w_down: Any  # [L, F, D]
  bq: Any = None  # [L, N, H]
  bk: Any = None  # [L, K, H]
  bv: Any = None  # [L, K, H]
  q_norm: Any = None  # [L, H]
  k_norm: Any = None  # [L, H]
  post_attn_norm: Any = None
  post_mlp_norm: Any = None

  def present(self) -> dict[str, Any]:
    """Name -> leaf of every part this config has (the None parts left out)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Params:
  """A model's parameters: embedding `[V, D]`, final norm `[D]`, the stacked layers,
  and the output head `[D, V]` (None when tied to the embedding)."""
  embed: Any
  final_norm: Any
  layers: LayerParams
  lm_head: Any = None

  def replace(self, **kw) -> "Params":
    """A copy with some leaves replaced."""
    return dataclasses.replace(self, **kw)


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
  """The parameter tree of `cfg` with `ParamSpec` leaves: the one declaration that
  init, abstract shapes, logical axes and shardings derive from."""
  L, D, N, K, H, F, V = (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads,
                         cfg.head_dim, cfg.ffw_dim, cfg.vocab_size)
  # Gemma's norms compute x * (1 + w): a zero weight is the identity there.
  norm_init = "zeros" if cfg.norm_offset else "ones"

  def norm(*lead):
    return ParamSpec((*lead, D), (*(("layers",) if lead else ()), "norm"), norm_init)

  def bias(heads, axis):
    return ParamSpec((L, heads, H), ("layers", axis, "head_dim"), "zeros")

  def head_norm():
    return ParamSpec((L, H), ("layers", "head_dim"), norm_init)

  layers = LayerParams(
      attn_norm=norm(L),
      wq=ParamSpec((L, D, N, H), ("layers", "embed", "q_heads", "head_dim"), fan_in=D),
      wk=ParamSpec((L, D, K, H), ("layers", "embed", "kv_heads", "head_dim"), fan_in=D),
      wv=ParamSpec((L, D, K, H), ("layers", "embed", "kv_heads", "head_dim"), fan_in=D),
      wo=ParamSpec((L, N, H, D), ("layers", "q_heads", "head_dim", "embed"),
                   fan_in=N * H),
      mlp_norm=norm(L),
      w_gate=ParamSpec((L, D, F), ("layers", "embed", "mlp"), fan_in=D),
      w_up=ParamSpec((L, D, F), ("layers", "embed", "mlp"), fan_in=D),
      w_down=ParamSpec((L, F, D), ("layers", "mlp", "embed"), fan_in=F),
      bq=bias(N, "q_heads") if cfg.qkv_bias else None,
      bk=bias(K, "kv_heads") if cfg.qkv_bias else None,
      bv=bias(K, "kv_heads") if cfg.qkv_bias else None,
      q_norm=head_norm() if cfg.qk_norm else None,
      k_norm=head_norm() if cfg.qk_norm else None,
      post_attn_norm=norm(L) if cfg.post_norms else None,
      post_mlp_norm=norm(L) if cfg.post_norms else None)
  return Params(embed=ParamSpec((V, D), ("vocab", "embed"), fan_in=1),
                final_norm=norm(), layers=layers,
                lm_head=(None if cfg.tie_embeddings
                         else ParamSpec((D, V), ("embed", "vocab"), fan_in=D)))


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
  def std(spec: ParamSpec) -> float:
    if spec.axes[:2] == ("vocab", "embed"):
      return scale / math.sqrt(cfg.d_model) if cfg.tie_embeddings else scale
    return scale / math.sqrt(spec.fan_in)

  return init_from_specs(param_specs(cfg), key, jnp.dtype(cfg.weight_dtype), std)


def init_from_specs(specs, key: jax.Array, dtype, std) -> Any:
  """Arrays for a tree of `ParamSpec` leaves: zeros, ones, or normal with `std(spec)`.

  Leaf i draws key number rank[i] of the split, ranked by the leaf's name path: the
  same key then gives the same values whatever order the fields are declared in.
  """
  paths, treedef = jax.tree_util.tree_flatten_with_path(specs, is_leaf=_is_spec)
  leaves = [spec for _, spec in paths]
  names = [tuple(getattr(k, "name", getattr(k, "key", k)) for k in path)
           for path, _ in paths]
  rank = {n: i for i, n in enumerate(sorted(names))}
  split = jax.random.split(key, len(leaves))
  keys = [split[rank[n]] for n in names]

  def one(spec: ParamSpec, k):
    if spec.init == "zeros":
      return jnp.zeros(spec.shape, dtype)
    if spec.init == "ones":
      return jnp.ones(spec.shape, dtype)
    return (std(spec) * jax.random.normal(k, spec.shape, jnp.float32)).astype(dtype)

  return jax.tree.unflatten(treedef, [one(s, k) for s, k in zip(leaves, keys)])


def check_params(params: Params, cfg: ModelConfig, where: str = "params") -> None:
  """Raise a clear error if `params` does not have the tree and shapes `cfg` declares."""
  if not isinstance(params, Params):
    raise TypeError(f"{where} must be a `reasoning_jax.model.Params` (got "
                    f"{type(params).__name__}); build them with `init_params`, "
                    "`load_hf_checkpoint` or `Params(...)`")
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


def decode_params(params: Params, cfg: ModelConfig) -> Params:
  """The params as the cached forward reads them: in the compute dtype, with the
  stacked layer weights held as their storage bits (bf16 as uint16, `cache.store`).

  Why the bits: when a scan slices a stacked bf16 weight and feeds the slice to a
  matmul, XLA:CPU's float normalisation converts the whole stack to float32 (hoisted
  out of the decode loop) and every slice back each step; an integer stack is sliced
  as is and bitcast back per layer (`cache.load`), free on every backend. Values are
  unchanged: `forward` on these params computes what it computes on `params` cast to
  the compute dtype.
  """
  # A `WeightOp` leaf (adapters, quantized weights) casts its own float parts only.
  params = jax.tree.map(lambda x: x.astype(cfg.dtype), params,
                        is_leaf=lambda x: isinstance(x, WeightOp))
  return params.replace(layers=jax.tree.map(store, params.layers))
