"""Mesh construction: from named axis sizes or from a run's (data, fsdp, tensor) shape.

Meshes are built with `AxisType.Auto` on purpose: shardings are declared on params,
batches and jit boundaries, and XLA propagates them through the model (GSPMD). Recent
jax makes `jax.make_mesh` default to Explicit axes, which would change typing rules
for every op, so the type is always given.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import jax
from jax.sharding import AxisType, Mesh

AXES = ("data", "fsdp", "tensor")

log = logging.getLogger(__name__)


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


def build_mesh(shape: Sequence[int], devices=None) -> Mesh:
  """The (data, fsdp, tensor) mesh of a run's mesh setting (`RunConfig.mesh`).

  A product different from the device count raises a ValueError listing shapes that
  fit (`make_mesh`). One axis may be -1: it takes whatever the other axes leave, so
  the same experiment file runs on any slice size. `(1, 1, 1)`, the default, means the
  first device alone (with a warning when there are more).
  """
  shape = tuple(shape)
  if len(shape) != 3:
    raise ValueError(f"RunConfig.mesh must be (data, fsdp, tensor), got {shape}")
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if shape == (1, 1, 1) and n > 1:
    # The default config: one device, as before meshes existed (tests run with 8 CPU
    # devices and the default). Say so, since on an accelerator it leaves chips idle.
    log.warning("RunConfig.mesh = (1, 1, 1): using 1 of %d devices; set e.g. "
                "RunConfig.mesh = (-1, 1, 1) to use all of them", n)
    devices = devices[:1]
  if shape.count(-1) > 1:
    raise ValueError(f"RunConfig.mesh {shape}: at most one axis may be -1")
  if -1 in shape:
    rest = math.prod(s for s in shape if s != -1)
    if rest < 1 or n % rest:
      raise ValueError(f"RunConfig.mesh {shape}: the fixed axes ({rest} devices) do not "
                       f"divide the {n} available devices")
    shape = tuple(n // rest if s == -1 else s for s in shape)
  return make_mesh(*shape, devices=devices)
