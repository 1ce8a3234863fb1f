"""Per-device memory of a training run, from shapes and shardings alone (nothing is
allocated): params, optimizer state, gradients, activations, the rollout copy of the
params and the KV cache.

Shape key: B rows, T tokens, D model, N query heads, K kv heads, H head dim, F ffw,
V vocab.
"""
from __future__ import annotations

import dataclasses
import math
import os

import jax
import optax
from jax.sharding import Mesh

from reasoning_jax import model as rjm
from reasoning_jax import sharding as rjs


class DoesNotFit(RuntimeError):
  """A program needs more memory per device than the device has (or did not compile)."""


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
  tree in the train layout (two with micro-batches: the running sum and one
  micro-batch's); activations is an estimate of what one micro-batch's
  forward keeps for the backward pass (per layer: the residual stream, q/k/v, f32
  attention scores and probabilities, the MLP's hidden units), one logits chunk and,
  under FSDP, the all-gathered weights of one layer and of the embedding/head with
  their unreduced gradients. XLA's own peak can differ (it may replicate a chunk's
  logits over the vocab shards, or overlap buffers); tests/scale/test_memory.py
  bounds the difference against XLA's own analysis.
  """
  params: int
  opt_state: int
  grads: int
  activations: int
  rollout_params: int = 0
  kv_cache: int = 0
  reference: int = 0  # the frozen reference policy's params, when one is kept

  @property
  def state(self) -> int:
    """Params, optimizer state and reference params: what lives on the device between
    steps."""
    return self.params + self.opt_state + self.reference

  @property
  def peak(self) -> int:
    """The larger of the update and rollout peaks."""
    return max(self.update_peak, self.rollout_peak)

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
            ("reference params", self.reference),
            ("gradients", self.grads), ("activations (est.)", self.activations),
            ("rollout params", self.rollout_params), ("KV cache", self.kv_cache),
            ("update peak (est.)", self.update_peak),
            ("rollout peak", self.rollout_peak)]
    return "\n".join(f"  {k:<20}{gib(v)}" for k, v in rows)


def _div(n: int, mesh: Mesh, rules, logical: str) -> int:
  """n split over the mesh axes `logical` maps to (when they divide it)."""
  size = rjs.axis_size(mesh, rules, logical)
  return n // size if size > 1 and n % size == 0 else n


def _activation_bytes(cfg: rjm.ModelConfig, mesh: Mesh, rules, *, rows: int, t: int,
                      chunk: int, policy: str) -> int:
  """One micro-batch of `rows` rows of `t` tokens: what the forward keeps for the
  backward under the remat `policy`, one logits chunk and the final hidden states."""
  a = jax.numpy.dtype(cfg.dtype).itemsize
  b = max(1, _div(rows, mesh, rules, "batch"))
  n = _div(cfg.n_heads, mesh, rules, "q_heads")
  k = _div(cfg.n_kv_heads, mesh, rules, "kv_heads")
  f = _div(cfg.ffw_dim, mesh, rules, "mlp")
  v = _div(cfg.vocab_size, mesh, rules, "vocab")
  h, d = cfg.head_dim, cfg.d_model
  # Per token and layer: the residual stream and projections in the compute dtype;
  # in float32 the two norms' input and output, RoPE'd q and k, the MLP gate's
  # activation and its product with the up projection, and attention scores and
  # probabilities over t keys.
  per_token = (a * (4 * d + 2 * (n + 2 * k) * h + 3 * f)
               + 4 * (4 * d + (n + k) * h + 2 * f + 2 * n * t))
  if policy == "layer":
    layers = cfg.n_layers * b * t * d * a + b * t * per_token
  elif policy == "dots":  # q, k, v, attention-out, gate, up and down projections
    dots = a * ((n + 2 * k) * h + 2 * d + 2 * f)
    layers = cfg.n_layers * b * t * dots + b * t * per_token
  else:
    layers = cfg.n_layers * b * t * per_token
  logits = 3 * 4 * b * min(chunk, max(t - 1, 1)) * v  # f32 logits, probs, their grad
  hidden = 2 * 4 * b * t * d  # final hidden states and their gradient, f32
  return layers + logits + hidden


def _gathered_bytes(cfg: rjm.ModelConfig, abstract, mesh: Mesh, rules) -> int:
  """FSDP all-gathers weights for use: one layer at a time inside the scan, plus the
  embedding and output head; their gradients exist unreduced before reduce-scatter."""
  if rjs.axis_size(mesh, rules, "embed") <= 1:
    return 0
  axes = jax.tree.leaves(rjm.logical_axes(cfg), is_leaf=lambda x: isinstance(x, tuple))
  total = 0
  for x, ax in zip(jax.tree.leaves(abstract), axes, strict=True):
    stacked = ax[:1] == ("layers",)  # one layer of a stacked leaf is gathered at a time
    total += math.prod(x.shape[1:] if stacked else x.shape) * x.dtype.itemsize
  return 2 * total // mesh.shape["tensor"]


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
  abstract = rjm.abstract_params(cfg)
  p_sh = rjm.param_shardings(cfg, mesh, rules)
  params = tree_bytes_per_device(abstract, p_sh)
  opt = tree_bytes_per_device(jax.eval_shape(tx.init, abstract),
                              rjs.opt_state_shardings(tx, abstract, p_sh, mesh))
  acts = _activation_bytes(cfg, mesh, rules, rows=rows // micro_batches, t=seq_len,
                           chunk=chunk, policy=cfg.remat if remat is None else remat)
  kv = roll = 0
  if rollout_rows and cache_len:
    kv = tree_bytes_per_device(
        jax.eval_shape(lambda: rjm.init_cache(cfg, rollout_rows, cache_len)),
        rjm.cache_shardings(cfg, mesh, rjs.ROLLOUT_RULES, rollout_rows, cache_len))
    roll = tree_bytes_per_device(abstract,
                                 rjm.param_shardings(cfg, mesh, rjs.ROLLOUT_RULES))
  # With micro-batches the update holds the summed gradients and one micro-batch's.
  grads = params * (2 if micro_batches > 1 else 1)
  return MemoryEstimate(params=params, opt_state=opt, grads=grads,
                        activations=acts + _gathered_bytes(cfg, abstract, mesh, rules),
                        rollout_params=roll, kv_cache=kv)


def _host_memory() -> int | None:
  """Bytes of memory this process may use on the host: the cgroup limit when one is set
  (containers, Colab), else the physical memory."""
  for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
      with open(path) as f:
        text = f.read().strip()
    except OSError:
      continue
    if text.isdigit() and int(text) < 2**60:  # "max" or a huge number: no limit
      return int(text)
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return None


def device_memory(device: jax.Device, local_devices: int = 1) -> int | None:
  """Bytes one device may hold: the accelerator's `bytes_limit`, or on a CPU the
  host's memory shared by the process's `local_devices` devices (None if unknown)."""
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:  # backends without memory statistics raise various errors
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  if device.platform == "cpu":
    host = _host_memory()
    return None if host is None else host // max(1, local_devices)
  return None


def check_fits(est: MemoryEstimate, limit: int, *, what: str,
               alternatives: list[tuple[str, MemoryEstimate]] = ()) -> None:
  """Raise `DoesNotFit` when the estimated peak exceeds `limit` bytes per device,
  naming the first of `alternatives` (a gin setting and its estimate) that fits."""
  if est.peak <= limit:
    return
  gib = 2.0 ** 30
  fits = [(name, e) for name, e in alternatives if e.peak <= limit]
  hint = (f"set {fits[0][0]} (estimated {fits[0][1].peak / gib:.2f} GiB)" if fits else
          "no remat / micro-batch setting fits: use fewer prompts_per_step or "
          "group_size, shard over more devices (RunConfig.mesh) or a larger device")
  raise DoesNotFit(
      f"the run needs an estimated {est.peak / gib:.2f} GiB per device "
      f"(update peak {est.update_peak / gib:.2f}, rollout peak "
      f"{est.rollout_peak / gib:.2f}) but {what} is {limit / gib:.2f} GiB; {hint}; "
      "or set RunConfig.memory_check = \"warn\" to start anyway")
