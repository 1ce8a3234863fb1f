"""Logical-axis rules: one small table maps logical axis names to mesh axes.

Two tables: TRAIN_RULES shards weights over fsdp (ZeRO-3 style) and tensor (Megatron
style) and the batch over data x fsdp; ROLLOUT_RULES keeps weights whole along the
model dimension (no per-token all-gathers in decode) and shards heads and the MLP over
tensor, the batch over data x fsdp.
"""
from __future__ import annotations

import dataclasses
import math
from jax.sharding import Mesh, NamedSharding, PartitionSpec


MeshAxes = str | tuple[str, ...] | None


@dataclasses.dataclass(frozen=True)
class ShardingRules:
  """An ordered table `logical axis -> mesh axis, tuple of mesh axes, or None`."""
  rules: tuple[tuple[str, MeshAxes], ...]

  def lookup(self, logical: str | None) -> MeshAxes:
    """Mesh axes for one logical axis (None: replicated; unknown names: replicated)."""
    if logical is None:
      return None
    for name, mesh_axes in self.rules:
      if name == logical:
        return mesh_axes
    return None


_COMMON = (("layers", None), ("head_dim", None), ("norm", None), ("seq", None),
           ("cache_seq", None))
TRAIN_RULES = ShardingRules((
    ("batch", ("data", "fsdp")), ("embed", "fsdp"), ("vocab", "tensor"),
    ("q_heads", "tensor"), ("kv_heads", "tensor"), ("mlp", "tensor")) + _COMMON)
ROLLOUT_RULES = ShardingRules((
    ("batch", ("data", "fsdp")), ("embed", None), ("vocab", "tensor"),
    ("q_heads", "tensor"), ("kv_heads", "tensor"), ("mlp", "tensor")) + _COMMON)


def _as_tuple(m: MeshAxes) -> tuple[str, ...]:
  return () if m is None else (m,) if isinstance(m, str) else tuple(m)


def logical_to_spec(axes: tuple[str | None, ...], rules: ShardingRules) -> PartitionSpec:
  """A PartitionSpec for a tensor with these logical axes.

  Raises:
    ValueError: if two logical axes of the tensor land on the same mesh axis.
  """
  used: dict[str, str] = {}
  spec = []
  for logical in axes:
    mesh_axes = rules.lookup(logical)
    for m in _as_tuple(mesh_axes):
      if m in used:
        raise ValueError(f"logical axes {used[m]!r} and {logical!r} both map to mesh "
                         f"axis {m!r} in one tensor {axes}; fix the rules table")
      used[m] = logical
    spec.append(mesh_axes)
  return PartitionSpec(*spec)


def _check_divisible(name: str, shape, axes, spec: PartitionSpec, mesh: Mesh) -> None:
  for dim, logical, mesh_axes in zip(shape, axes, spec):
    names = _as_tuple(mesh_axes)
    size = math.prod(mesh.shape[m] for m in names)
    if size > 1 and dim % size:
      fits = [s for s in range(1, dim + 1) if dim % s == 0]
      raise ValueError(
          f"{name}: logical axis {logical!r} of size {dim} is sharded over mesh axes "
          f"{names} of total size {size}, which does not divide it; use a mesh whose "
          f"{'x'.join(names)} size is one of {fits}")


def check_divisible(name: str, shape, axes, spec: PartitionSpec, mesh: Mesh) -> None:
  """Raise a ValueError naming the axis and the sizes that work if `spec` can't split
  `shape` evenly on `mesh`."""
  _check_divisible(name, shape, axes, spec, mesh)


def named_sharding(name: str, shape, axes, mesh: Mesh, rules: ShardingRules
                   ) -> NamedSharding:
  """NamedSharding of one array with logical `axes`, checked for divisibility."""
  spec = logical_to_spec(tuple(axes), rules)
  _check_divisible(name, tuple(shape), tuple(axes), spec, mesh)
  return NamedSharding(mesh, spec)


def batch_sharding(mesh: Mesh, rules: ShardingRules, shape: tuple[int, ...],
                   name: str = "batch") -> NamedSharding:
  """Sharding of a `[B, ...]` array: batch axis per the rules, the rest replicated."""
  axes = ("batch",) + (None,) * (len(shape) - 1)
  spec = logical_to_spec(axes, rules)
  _check_divisible(name, shape, axes, spec, mesh)
  return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
  """A fully replicated sharding on `mesh`."""
  return NamedSharding(mesh, PartitionSpec())
