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

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from reasoning_jax import model as rjm
from reasoning_jax import sharding as rjs
from reasoning_jax.training import multihost

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
    mode: "auto" (initialize when `on_multihost_tpu(env)` or when started by
      `reasoning-jax launch`), "on" (always; e.g. GPU clusters with
      `JAX_COORDINATOR_ADDRESS` etc. set), "off" (never).
    env: the environment to read (default `os.environ`).
    initialize: the function to call (default `jax.distributed.initialize`); tests
      pass a recorder.

  Returns:
    Whether it initialized.
  """
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"distributed mode {mode!r}: use 'auto', 'on' or 'off'")
  if mode != "off" and multihost.launched(env):
    # A local multi-process run (`reasoning-jax launch`): coordinator, count and id
    # come from the launcher's environment; gloo collectives on CPU.
    multihost.initialize_from_env(env, initialize)
  elif mode == "off" or (mode == "auto" and not on_multihost_tpu(env)):
    return False
  else:
    (initialize or jax.distributed.initialize)()
  multihost.quiet_non_primary()
  log.info("jax.distributed initialized: process %d of %d, %d devices (%d local)",
           jax.process_index(), jax.process_count(), jax.device_count(),
           jax.local_device_count())
  return True


def build_mesh(shape: Sequence[int], devices=None) -> Mesh:
  """The (data, fsdp, tensor) mesh of `RunConfig.mesh`.

  A product different from the device count raises a ValueError listing shapes that
  fit (`sharding.make_mesh`). `(-1, 1, 1)`-style shapes are accepted: one -1 takes
  whatever the other axes leave, so the same experiment file runs on any slice size.
  `(1, 1, 1)`, the default, means the first device alone (with a warning when there
  are more).
  """
  shape = tuple(shape)
  if len(shape) != 3:
    raise ValueError(f"RunConfig.mesh must be (data, fsdp, tensor), got {shape}")
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if shape == (1, 1, 1) and n > 1:
    # The default config: one device, as before meshes existed (tests run with 8 CPU
    # devices and the default). Say so, since on a TPU it leaves chips idle.
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
  return rjs.make_mesh(*shape, devices=devices)


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
  rep = rjs.replicated(mesh)
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
  return math.prod(mesh.shape[n] for n in _names(rules.lookup("batch")))


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
  """A pytree of `[B, ...]` arrays placed with its rows over the batch axes.

  With several processes, host (numpy) leaves are this process's rows of the global
  batch (`multihost.process_slice`) and become global arrays of P times as many rows
  (`jax.make_array_from_process_local_data`); leaves that are already global jax
  arrays are resharded on device; scalars are the same on every process.
  """
  if jax.process_count() == 1:
    return jax.device_put(batch, batch_sharding_tree(batch, mesh, rules))
  n = jax.process_count()

  def one(path, x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return x  # already global: resharded below
    x = np.asarray(x)
    if x.ndim == 0:
      return jax.make_array_from_process_local_data(rjs.replicated(mesh), x, ())
    shape = (x.shape[0] * n,) + x.shape[1:]
    sh = rjs.batch_sharding(mesh, rules, shape, name=jax.tree_util.keystr(path))
    return jax.make_array_from_process_local_data(sh, x, shape)

  batch = jax.tree_util.tree_map_with_path(one, batch)
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


# ----------------------------------------------------------------------------- memory
def tree_bytes_per_device(tree, shardings=None) -> int:
  """Bytes one device holds of a pytree of arrays / ShapeDtypeStructs, sharded as they
  are (or by `shardings`, a matching tree of Shardings)."""
  leaves = jax.tree.leaves(tree)
  shs = (jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
         if shardings is not None else [getattr(x, "sharding", None) for x in leaves])
  total = 0
  for x, s in zip(leaves, shs):
    shape = s.shard_shape(x.shape) if s is not None else x.shape
    total += math.prod(shape) * x.dtype.itemsize
  return total


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Per-device bytes of a training run (see `memory_estimate`).

  params, opt_state, rollout_params (the ROLLOUT_RULES copy used while sampling) and
  kv_cache are exact (shard shapes of the declared arrays); grads counts one gradient
  tree in the train layout; activations is an estimate of what one micro-batch's
  forward keeps for the backward pass (per layer: the residual stream, q/k/v, f32
  attention scores and probabilities, the MLP's hidden units), one logits chunk and,
  under FSDP, the all-gathered weights of one layer and of the embedding/head with
  their unreduced gradients. XLA's own peak can differ (it may replicate a chunk's
  logits over the vocab shards, or overlap buffers); measured within ~5% on one
  device and within 2x on a (2, 2, 2) CPU mesh (docs/benchmarks.md, Memory).
  """
  params: int
  opt_state: int
  grads: int
  activations: int
  rollout_params: int = 0
  kv_cache: int = 0

  @property
  def state(self) -> int:
    """Params + optimizer state: what lives on the device between steps."""
    return self.params + self.opt_state

  @property
  def update_peak(self) -> int:
    """State + gradients + activations: the estimated peak of the update step."""
    return self.state + self.grads + self.activations

  @property
  def rollout_peak(self) -> int:
    """State + the rollout copy of the params + the KV cache, while sampling."""
    return self.state + self.rollout_params + self.kv_cache

  def format(self) -> str:
    """One line per item, in GiB, for the start-up log."""
    gib = lambda n: f"{n / 2**30:8.3f} GiB"  # noqa: E731
    rows = [("params", self.params), ("optimizer state", self.opt_state),
            ("gradients", self.grads), ("activations (est.)", self.activations),
            ("rollout params", self.rollout_params), ("KV cache", self.kv_cache),
            ("update peak (est.)", self.update_peak),
            ("rollout peak", self.rollout_peak)]
    return "\n".join(f"  {k:<20}{gib(v)}" for k, v in rows)


def _names(axes) -> tuple[str, ...]:
  return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)


def _div(n: int, mesh: Mesh, rules, logical: str) -> int:
  """n split over the mesh axes `logical` maps to (when they divide it)."""
  names = _names(rules.lookup(logical))
  size = math.prod(mesh.shape[a] for a in names)
  return n // size if size > 1 and n % size == 0 else n


def memory_estimate(cfg: rjm.ModelConfig, mesh: Mesh, tx: optax.GradientTransformation,
                    *, rows: int, seq_len: int, micro_batches: int = 1,
                    chunk: int = 256, rollout_rows: int = 0, cache_len: int = 0,
                    remat: str | None = None, rules=rjs.TRAIN_RULES) -> MemoryEstimate:
  """Per-device memory of params, Adam state, gradients, activations and KV cache.

  Args:
    cfg, mesh, tx: the model, the mesh and the optimizer.
    rows, seq_len: the rows and tokens of one optimizer update (prompts x group /
      minibatches; prompt + completion length).
    micro_batches: gradient-accumulation chunks (activations are per micro-batch).
    chunk: positions per logits chunk in `token_logprobs`.
    rollout_rows, cache_len: the sampler's batch (prompts x group) and cache slots;
      0 leaves the rollout terms out.
    remat: the remat policy to model ("none", "layer", "dots"); None reads
      `cfg.remat`. "layer" keeps only each layer's input, plus one layer's
      activations during backward; "dots" keeps the projection outputs of every layer.
  """
  policy = cfg.remat if remat is None else remat
  abstract = rjm.abstract_params(cfg)
  p_sh = param_shardings(cfg, mesh, rules)
  params = tree_bytes_per_device(abstract, p_sh)
  opt = tree_bytes_per_device(jax.eval_shape(tx.init, abstract),
                              opt_state_shardings(tx, cfg, mesh, rules))
  a = jax.numpy.dtype(cfg.dtype).itemsize
  b = max(1, _div(rows // micro_batches, mesh, rules, "batch"))
  n = _div(cfg.n_heads, mesh, rules, "q_heads")
  k = _div(cfg.n_kv_heads, mesh, rules, "kv_heads")
  f = _div(cfg.ffw_dim, mesh, rules, "mlp")
  v = _div(cfg.vocab_size, mesh, rules, "vocab")
  h, d, t = cfg.head_dim, cfg.d_model, seq_len
  per_token = a * (4 * d + 2 * (n + 2 * k) * h + 3 * f) + 4 * 2 * n * t
  if policy == "layer":
    layers = cfg.n_layers * b * t * d * a + b * t * per_token
  elif policy == "dots":  # q, k, v, attention-out, gate, up and down projections
    dots = a * ((n + 2 * k) * h + 2 * d + 2 * f)
    layers = cfg.n_layers * b * t * dots + b * t * per_token
  else:
    layers = cfg.n_layers * b * t * per_token
  logits = 3 * 4 * b * min(chunk, max(t - 1, 1)) * v  # f32 logits, probs, their grad
  hidden = 2 * 4 * b * t * d  # final hidden states and their gradient, f32
  # FSDP all-gathers weights for use: one layer at a time inside the scan, plus the
  # embedding and output head; their gradients exist unreduced before reduce-scatter.
  fsdp = math.prod(mesh.shape[m] for m in _names(rules.lookup("embed")))
  gathered = 0
  if fsdp > 1:
    t_size = mesh.shape["tensor"]
    layer_w = sum(math.prod(x.shape[1:]) * x.dtype.itemsize
                  for x in jax.tree.leaves(abstract["layers"]))
    other = sum(math.prod(x.shape) * x.dtype.itemsize
                for k, x in abstract.items() if k != "layers")
    gathered = 2 * (layer_w + other) // t_size
  kv = 0
  roll = 0
  if rollout_rows and cache_len:
    kv = tree_bytes_per_device(
        jax.eval_shape(lambda: rjm.init_cache(cfg, rollout_rows, cache_len)),
        rjm.cache_shardings(cfg, mesh, rjs.ROLLOUT_RULES, rollout_rows, cache_len))
    roll = tree_bytes_per_device(abstract, param_shardings(cfg, mesh, rjs.ROLLOUT_RULES))
  return MemoryEstimate(params=params, opt_state=opt, grads=params,
                        activations=layers + logits + hidden + gathered, rollout_params=roll,
                        kv_cache=kv)
