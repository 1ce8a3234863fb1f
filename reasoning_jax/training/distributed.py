"""Putting a run on a mesh: multi-host start-up, state placement, batches, resharding.

The trainer holds params and optimizer state under TRAIN_RULES (weights over fsdp and
tensor, the batch over data x fsdp) and samples under ROLLOUT_RULES (weights whole
along the model dimension, heads over tensor). Everything here is host-side glue: it
builds shardings from the params' single declaration (`rjm.param_specs`) and places
arrays with `jax.device_put`, which reshards device-to-device when the input already
lives on the mesh (no host round trip).

Shape key: B rows (rollouts), T tokens, S cache slots.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence

import jax
import optax
from jax.sharding import Mesh, NamedSharding

from reasoning_jax import model as rjm
from reasoning_jax import sharding as rjs

log = logging.getLogger(__name__)

# Set by the Cloud TPU runtime on every worker of a multi-host slice.
_TPU_ENV = ("TPU_WORKER_HOSTNAMES", "CLOUD_TPU_TASK_ID", "MEGASCALE_COORDINATOR_ADDRESS")


def on_multihost_tpu(env: Mapping[str, str] | None = None) -> bool:
  """True when the environment says this process is one worker of a multi-host TPU.

  `TPU_WORKER_HOSTNAMES` lists every worker of the slice (one name on a single-host
  VM such as a v5e-8, so it alone is not enough); `CLOUD_TPU_TASK_ID` and
  `MEGASCALE_COORDINATOR_ADDRESS` are only set on multi-host / multi-slice jobs.
  """
  env = os.environ if env is None else env
  hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
  return len(hosts) > 1 or any(env.get(k) for k in _TPU_ENV[1:])


def maybe_initialize(mode: str = "auto", env: Mapping[str, str] | None = None,
                     initialize=None) -> bool:
  """Call `jax.distributed.initialize()` when this is a multi-host run.

  Must run before anything touches a device. On a TPU pod every worker runs the same
  command; with no arguments jax reads the coordinator, process count and id from the
  TPU metadata, so nothing has to be passed per worker.

  Args:
    mode: "auto" (initialize when `on_multihost_tpu(env)`), "on" (always; e.g. GPU
      clusters with `JAX_COORDINATOR_ADDRESS` etc. set), "off" (never).
    env: the environment to read (default `os.environ`).
    initialize: the function to call (default `jax.distributed.initialize`); tests
      pass a recorder.

  Returns:
    Whether it initialized.
  """
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"distributed mode {mode!r}: use 'auto', 'on' or 'off'")
  if mode == "off" or (mode == "auto" and not on_multihost_tpu(env)):
    return False
  (initialize or jax.distributed.initialize)()
  log.info("jax.distributed initialized: process %d of %d, %d devices (%d local)",
           jax.process_index(), jax.process_count(), jax.device_count(),
           jax.local_device_count())
  return True


def build_mesh(shape: Sequence[int], devices=None) -> Mesh:
  """The (data, fsdp, tensor) mesh of `RunConfig.mesh`.

  A product different from the device count raises a ValueError listing shapes that
  fit (`sharding.make_mesh`). `(-1, 1, 1)`-style shapes are accepted: one -1 takes
  whatever the other axes leave, so the same experiment file runs on any slice size.
  """
  shape = tuple(shape)
  if len(shape) != 3:
    raise ValueError(f"RunConfig.mesh must be (data, fsdp, tensor), got {shape}")
  n = len(jax.devices() if devices is None else devices)
  if shape.count(-1) > 1:
    raise ValueError(f"RunConfig.mesh {shape}: at most one axis may be -1")
  if -1 in shape:
    rest = math.prod(s for s in shape if s != -1)
    if rest < 1 or n % rest:
      raise ValueError(f"RunConfig.mesh {shape}: the fixed axes ({rest} devices) do not "
                       f"divide the {n} available devices")
    shape = tuple(n // rest if s == -1 else s for s in shape)
  return rjs.make_mesh(*shape, devices=devices)


def _replicated_scalars(mesh: Mesh):
  return rjs.replicated(mesh)


def param_shardings(cfg: rjm.ModelConfig, mesh: Mesh, rules=rjs.TRAIN_RULES):
  """NamedSharding per param leaf (divisibility checked; the error names the axis)."""
  return rjm.param_shardings(cfg, mesh, rules)


def place_params(params, cfg: rjm.ModelConfig, mesh: Mesh, rules=rjs.TRAIN_RULES):
  """`params` on `mesh` under `rules` (TRAIN_RULES by default)."""
  return jax.device_put(params, param_shardings(cfg, mesh, rules))


def opt_state_shardings(tx: optax.GradientTransformation, cfg: rjm.ModelConfig,
                        mesh: Mesh, rules=rjs.TRAIN_RULES):
  """Shardings of `tx.init(params)`: every params-shaped subtree (Adam's mu and nu)
  gets the params' shardings leaf by leaf; everything else (step counts, schedule
  state) is replicated."""
  p_sh = param_shardings(cfg, mesh, rules)
  abstract = jax.eval_shape(tx.init, rjm.abstract_params(cfg))
  rep = _replicated_scalars(mesh)
  return optax.tree_map_params(tx, lambda _, s: s, abstract, p_sh,
                               transform_non_params=lambda _: rep,
                               is_leaf=lambda x: isinstance(x, NamedSharding))


def init_opt_state(tx: optax.GradientTransformation, params, cfg: rjm.ModelConfig,
                   mesh: Mesh, rules=rjs.TRAIN_RULES):
  """`tx.init(params)` created directly in its sharded layout (never whole on one
  device: for an 8B model Adam's moments are 64 GB in float32)."""
  return jax.jit(tx.init, out_shardings=opt_state_shardings(tx, cfg, mesh, rules))(params)


def place_opt_state(opt_state, tx: optax.GradientTransformation, cfg: rjm.ModelConfig,
                    mesh: Mesh, rules=rjs.TRAIN_RULES):
  """An existing optimizer state moved onto its sharded layout."""
  return jax.device_put(opt_state, opt_state_shardings(tx, cfg, mesh, rules))


def batch_shards(mesh: Mesh, rules=rjs.TRAIN_RULES) -> int:
  """How many ways the rules split the batch axis on `mesh` (data x fsdp by default)."""
  axes = rules.lookup("batch")
  names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
  return math.prod(mesh.shape[n] for n in names)


def check_batch(rows: int, mesh: Mesh, rules=rjs.TRAIN_RULES, *, micro_batches: int = 1,
                group: int = 1, name: str = "RL batch") -> None:
  """Raise a ValueError (naming the axis and sizes that work) unless every
  micro-batch of `rows` rows splits evenly over the batch axes and holds whole groups.

  `rows` is prompts_per_step x group_size (divided by minibatches): each micro-batch
  slice must be a multiple of the batch shards, or XLA would move rows between devices
  on every slice.
  """
  n = batch_shards(mesh, rules)
  axes = rules.lookup("batch")
  unit = n * micro_batches
  if rows % unit == 0 and (rows // micro_batches) % group == 0:
    return
  per_mb = "" if micro_batches == 1 else f" per micro-batch ({micro_batches} of them)"
  lo, hi = (rows // unit) * unit, -(-rows // unit) * unit
  fits = sorted({d for d in range(1, len(mesh.devices.flat) + 1)
                 if rows % (d * micro_batches) == 0})
  raise ValueError(
      f"{name} has {rows} rows{per_mb}, which the batch axis {axes} of size {n} does not "
      f"split evenly (with groups of {group}); use a row count (prompts_per_step x "
      f"group_size / minibatches) that is a multiple of {unit}, e.g. {lo or unit} or "
      f"{hi}, or a mesh whose batch axes have a total size in {fits}")


def batch_sharding_tree(batch, mesh: Mesh, rules=rjs.TRAIN_RULES):
  """Shardings for a pytree of `[B, ...]` arrays (e.g. a `steps.SeqBatch`): rows over
  the batch axes, scalars replicated."""
  def one(path, x):
    if x.ndim == 0:
      return rjs.replicated(mesh)
    return rjs.batch_sharding(mesh, rules, x.shape, name=jax.tree_util.keystr(path))
  return jax.tree_util.tree_map_with_path(one, batch)


def shard_batch(batch, mesh: Mesh, rules=rjs.TRAIN_RULES):
  """A pytree of `[B, ...]` arrays placed with its rows over the batch axes."""
  return jax.device_put(batch, batch_sharding_tree(batch, mesh, rules))


def to_rollout_layout(params, cfg: rjm.ModelConfig, mesh: Mesh):
  """Params resharded from the train layout to ROLLOUT_RULES, device to device.

  Under TRAIN_RULES every weight is split over fsdp along the model dimension; decode
  would all-gather it for every token. The rollout layout gathers it once per RL step
  instead. The result is a new set of buffers (params stay in the train layout for the
  update), so sampling needs one extra weight copy of memory (per device: the params
  divided by the tensor size).
  """
  return jax.device_put(params, param_shardings(cfg, mesh, rjs.ROLLOUT_RULES))


def state_shardings(tx: optax.GradientTransformation, cfg: rjm.ModelConfig, mesh: Mesh,
                    rules=rjs.TRAIN_RULES):
  """(param shardings, optimizer-state shardings): the `state_shardings` argument of
  `steps.jit_steps`, so that updated state comes back in the layout it went in."""
  return param_shardings(cfg, mesh, rules), opt_state_shardings(tx, cfg, mesh, rules)
