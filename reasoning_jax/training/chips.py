"""Accelerator facts for compiling ahead of time: memory, peak bf16 FLOP/s, bandwidth,
and how jax names their topologies.

Figures are the vendors' published per-chip numbers (dense bf16, HBM capacity and
bandwidth): the roofline of `training.aot` divides by them.
"""
from __future__ import annotations

import dataclasses
import os

GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip.

  Attributes:
    name: jax's device kind prefix, for messages.
    hbm_bytes: memory per device.
    bf16_flops: peak dense bf16 FLOP/s per device.
    hbm_bandwidth: bytes/s per device.
    platform: "tpu" or "cuda" (`jax.experimental.topologies`).
  """
  name: str
  hbm_bytes: float
  bf16_flops: float
  hbm_bandwidth: float
  platform: str = "tpu"


# One jax device per chip (v4 and v5p run megacore: one device for both cores).
CHIPS = {
    "v4": Chip("TPU v4", 32 * GiB, 275e12, 1.2e12),
    "v5e": Chip("TPU v5 lite", 16 * GiB, 197e12, 819e9),
    "v5p": Chip("TPU v5p", 95 * GiB, 459e12, 2.765e12),
    "v6e": Chip("TPU v6 lite", 32 * GiB, 918e12, 1.64e12),
    "h100": Chip("NVIDIA H100 SXM", 80 * GiB, 989e12, 3.35e12, "cuda"),
    "h200": Chip("NVIDIA H200 SXM", 141 * GiB, 989e12, 4.8e12, "cuda"),
}


def parse_topology(topology: str) -> tuple[Chip, str, int]:
  """`"v5e:2x4"` -> (the chip, jax's topology name, number of devices).

  Raises a ValueError naming the known chips or the expected form.
  """
  kind, _, shape = topology.partition(":")
  if kind not in CHIPS or not shape:
    raise ValueError(f"topology {topology!r}: use CHIP:AxB[xC] with CHIP one of "
                     f"{sorted(CHIPS)}, e.g. v5e:2x4 or v5p:2x2x4")
  try:
    dims = [int(d) for d in shape.split("x")]
  except ValueError:
    raise ValueError(f"topology {topology!r}: the shape {shape!r} must be integers "
                     "joined by 'x', e.g. 2x4") from None
  if not dims or min(dims) < 1:
    raise ValueError(f"topology {topology!r}: every dimension must be >= 1")
  n = 1
  for d in dims:
    n *= d
  return CHIPS[kind], topology, n


def topology_devices(topology: str):
  """(chip, devices) of a TPU topology, made without the hardware (deviceless AOT,
  which needs libtpu: `pip install "jax[tpu]==<the installed jax>"`, the `tpu` extra).

  GPU chips are in `CHIPS` for rooflines only: XLA compiles for a GPU without one
  only from a full target description (`benchmarks/gpu_kernels.py` carries an H100's).
  """
  chip, name, n = parse_topology(topology)
  if chip.platform != "tpu":
    raise ValueError(f"topology {topology!r}: ahead-of-time compiles here are for TPU "
                     f"topologies ({', '.join(k for k, c in CHIPS.items() if c.platform == 'tpu')})")
  # Describing a topology touches no chip, so several processes may do it at once
  # (libtpu otherwise takes a machine-wide lock, and a second process fails).
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies
  try:
    desc = topologies.get_topology_desc(topology_name=name, platform="tpu")
  except Exception as e:  # noqa: BLE001 -- a missing libtpu shows in many forms
    import jax
    raise RuntimeError(f"cannot describe topology {topology!r} without the hardware "
                       f"({type(e).__name__}: {e}); install libtpu: "
                       f"pip install \"jax[tpu]=={jax.__version__}\"") from None
  devices = list(desc.devices)
  if len(devices) != n:
    raise ValueError(f"topology {topology!r} has {len(devices)} devices, not {n}")
  return chip, devices
