"""Mesh construction from named axis sizes.

Meshes are built with `AxisType.Auto` on purpose: shardings are declared on params,
batches and jit boundaries, and XLA propagates them through the model (GSPMD). Recent
jax makes `jax.make_mesh` default to Explicit axes, which would change typing rules
for every op, so the type is always given.
"""
from __future__ import annotations

import math

import jax
from jax.sharding import AxisType, Mesh

AXES = ("data", "fsdp", "tensor")


def _factorizations(n: int) -> list[tuple[int, int, int]]:
  out = []
  for d in range(1, n + 1):
    for f in range(1, n // d + 1):
      if n % (d * f) == 0:
        out.append((d, f, n // (d * f)))
  return out


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all devices).

  Raises:
    ValueError: if the axis sizes are not positive or their product differs from the
      number of devices (the message lists shapes that would fit).
  """
  sizes = (data, fsdp, tensor)
  if any(int(s) != s or s < 1 for s in sizes):
    raise ValueError(f"mesh axis sizes must be positive integers, got data={data}, "
                     f"fsdp={fsdp}, tensor={tensor}")
  devices = list(jax.devices() if devices is None else devices)
  if math.prod(sizes) != len(devices):
    examples = ", ".join(f"(data={d}, fsdp={f}, tensor={t})"
                         for d, f, t in _factorizations(len(devices))[:6])
    raise ValueError(f"mesh data={data} x fsdp={fsdp} x tensor={tensor} = "
                     f"{math.prod(sizes)} devices, but {len(devices)} are available; "
                     f"use sizes whose product is {len(devices)}, e.g. {examples}")
  return jax.make_mesh(sizes, AXES, devices=devices, axis_types=(AxisType.Auto,) * 3)
