"""Checkpoints of a train state: orbax-checkpoint with async saves and keep-last-N.

Layout: `<workdir>/checkpoints/<step>/` holds three orbax items:
  state  the train-state pytree (params, optax state, step, PRNG key data, ...), written
         with `StandardSave` so every array keeps its sharding metadata and can be
         restored onto any other mesh;
  meta   small JSON chosen by the caller (data-iterator state, resolved gin text, ...);
  info   JSON written by this module (format version, PRNG implementations of typed keys).

Crash safety comes from orbax: a step is written under `<step>.orbax-checkpoint-tmp`
and renamed to `<step>` only after every file is on disk, so a process killed mid-save
leaves the previous step intact and the partial one invisible (tests kill a child with
SIGKILL during a save to prove it). Leftover tmp directories are removed when the next
manager opens the directory.

The run directory may be local or a `gs://` URL (`training.paths`): orbax writes arrays
to `gs://` with tensorstore's own GCS driver and everything else through `etils.epath`.
orbax-checkpoint writes arrays only to local paths and `gs://`; any other URL scheme
(`s3://`, ...) is refused here with the fix (mount the bucket and pass the mount path).

Typed PRNG keys (`jax.random.key(...)`) are stored as `jax.random.key_data` and turned
back into typed keys on restore when the abstract leaf is a key (or when no abstract
state is given), so a train state may hold either form.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from reasoning_jax.training.paths import run_path, scheme

_FORMAT = 1
#: URL schemes orbax-checkpoint can write arrays to (tensorstore's `gcs` kvstore); any
#: other URL fails deep inside orbax ("Checkpoint path should be absolute").
_ARRAY_SCHEMES = ("gs",)


class Restored(NamedTuple):
  """What `CheckpointManager.restore` returns."""
  step: int
  state: Any
  meta: dict[str, Any]


def _path_str(path) -> str:
  """A key path as `a/b/0/c`, the same for dict keys, attributes and sequence indices.

  Orbax stores namedtuples (optax states) as dicts and tuples as lists, so a plain
  `jax.tree_util.keystr` of the live tree and of the stored metadata would differ.
  """
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _is_key(x) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _key_data_abstract(leaf: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
  """Abstract key data for an abstract typed key, with a sharding over the extra axis."""
  data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
  sharding = getattr(leaf, "sharding", None)
  if isinstance(sharding, jax.sharding.NamedSharding):
    extra = data.ndim - len(leaf.shape)
    spec = jax.sharding.PartitionSpec(*sharding.spec, *([None] * (
        len(leaf.shape) - len(sharding.spec) + extra)))
    sharding = jax.sharding.NamedSharding(sharding.mesh, spec)
  return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)


def check_workdir(workdir: str | os.PathLike):
  """`workdir` as an `epath.Path` (`paths.run_path`) if checkpoints can be written there.

  Raises:
    ValueError: for a URL scheme other than `gs://` (orbax-checkpoint's tensorstore
      path writes arrays to local paths and GCS only), naming the fix.
  """
  s = scheme(workdir)
  if s is not None and s not in _ARRAY_SCHEMES:
    raise ValueError(
        f"workdir {os.fspath(workdir)!r}: orbax-checkpoint writes arrays only to local "
        f"paths and gs:// URLs, not {s}://; mount the bucket (e.g. mountpoint-s3, "
        "blobfuse2) and pass the mount path as the workdir")
  return run_path(workdir)


class CheckpointManager:
  """Saves and restores train states under `<workdir>/checkpoints/<step>/`.

  Saves are asynchronous by default: `save` returns once arrays are copied off the
  device (so the caller may donate or overwrite them) and the write continues in the
  background; `wait()` blocks until it is committed. Only the last `max_to_keep` steps
  are kept. Works in multi-process runs (orbax coordinates the hosts; every process
  must call `save`/`restore` with the same step).
  """

  def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int | None = 3,
               save_interval_steps: int = 1, async_save: bool = True,
               read_only: bool = False):
    """Opens (and, unless `read_only`, creates) `<workdir>/checkpoints`.

    Args:
      workdir: the run directory W (local or `gs://`); checkpoints go to
        `W/checkpoints`.
      max_to_keep: number of most recent steps kept on disk (None keeps all).
      save_interval_steps: `save` skips steps not divisible by this (unless forced).
      async_save: write in a background thread (orbax async checkpointing).
      read_only: open an existing directory for restore only (never creates it).
    """
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}")
    if save_interval_steps < 1:
      raise ValueError(f"save_interval_steps must be >= 1, got {save_interval_steps}")
    self.path = check_workdir(workdir) / "checkpoints"
    self.directory = os.fspath(self.path)
    options = ocp.CheckpointManagerOptions(
        # read_only forces these to None/0 (orbax warns when it has to override them).
        max_to_keep=None if read_only else max_to_keep,
        save_interval_steps=0 if read_only else save_interval_steps,
        enable_async_checkpointing=async_save, create=not read_only,
        read_only=read_only, cleanup_tmp_directories=not read_only)
    # Handlers given up front (not just item names) so restoring one item, e.g. only
    # `meta`, does not log a warning about the others.
    self._mngr = ocp.CheckpointManager(self.path, options=options, item_handlers={
        "state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler(),
        "info": ocp.JsonCheckpointHandler()})

  # -- queries ---------------------------------------------------------------------
  def latest_step(self) -> int | None:
    """The newest committed step, or None when there is none (tmp dirs never count)."""
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    """All committed steps, ascending."""
    return sorted(self._mngr.all_steps())

  # -- save ------------------------------------------------------------------------
  def save(self, step: int, state: Any, meta: Mapping[str, Any] | None = None, *,
           force: bool = False) -> bool:
    """Starts saving `state` (any pytree of arrays) and JSON `meta` as `step`.

    Returns True if a save was started (False when `step` is skipped by
    `save_interval_steps`). Raises ValueError if the step already exists.
    """
    step = int(step)
    if step in self._mngr.all_steps():
      raise ValueError(f"checkpoint step {step} already exists in {self.directory}; "
                       "saving it again would overwrite a committed checkpoint")
    impls = {}

    def to_data(path, x):
      if _is_key(x):
        impls[_path_str(path)] = str(jax.random.key_impl(x))
        return jax.random.key_data(x)
      return x

    state = jax.tree_util.tree_map_with_path(to_data, state)
    info = {"format": _FORMAT, "prng_impls": impls}
    return self._mngr.save(step, force=force, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta or {})),
        info=ocp.args.JsonSave(info)))

  def wait(self) -> None:
    """Blocks until every started save is committed (and raises its error, if any)."""
    self._mngr.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases orbax's threads."""
    self._mngr.close()

  def __enter__(self) -> "CheckpointManager":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def quarantine(self, step: int) -> str:
    """Move the (unreadable) committed `step` out of the way, to
    `<workdir>/checkpoints_quarantine/<step>[.n]`, so the run can save that step
    again; nothing is deleted. Returns the new location."""
    src = self.path / str(int(step))
    dst_dir = self.path.parent / "checkpoints_quarantine"
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst, n = dst_dir / str(int(step)), 0
    while dst.exists():
      n += 1
      dst = dst_dir / f"{int(step)}.{n}"
    src.rename(dst)
    self._mngr.reload()
    return os.fspath(dst)

  # -- restore ---------------------------------------------------------------------
  def _resolve_step(self, step: int | None) -> int:
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(
          f"no checkpoint found in {self.directory} (the directory is "
          f"{'empty' if self.path.is_dir() else 'missing'}); check the run "
          "directory, or start from scratch without restoring")
    if step is None:
      return steps[-1]
    if int(step) not in steps:
      raise FileNotFoundError(f"checkpoint step {step} not found in {self.directory}; "
                              f"available steps: {steps}")
    return int(step)

  def restore_meta(self, step: int | None = None) -> dict[str, Any]:
    """Only the JSON `meta` of `step` (default: latest), without reading arrays."""
    step = self._resolve_step(step)
    out = self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out["meta"] or {})

  def restore(self, step: int | None = None, abstract_state: Any = None) -> Restored:
    """Restores `step` (default: latest) as `Restored(step, state, meta)`.

    Args:
      step: the step to restore; None means the latest committed one.
      abstract_state: a pytree like the saved state whose leaves are
        `jax.ShapeDtypeStruct`s with `.sharding` (e.g. from `jax.eval_shape` plus the
        target shardings); arrays are read directly into those shardings and cast to
        those dtypes. None restores with the saved shardings (same topology only)
        and returns containers as orbax stores them: namedtuples (optax states) and
        tuples come back as dicts and lists, so pass an abstract state to resume.

    Raises:
      FileNotFoundError: no checkpoint, or `step` missing (the message has the path).
      ValueError: the abstract state's leaves or shapes differ from the saved ones
        (the message names each offending leaf).
    """
    step = self._resolve_step(step)
    info = self._mngr.restore(step, args=ocp.args.Composite(info=ocp.args.JsonRestore()))
    impls = dict((info["info"] or {}).get("prng_impls", {}))
    stored = self._stored_shapes(step)
    if abstract_state is None:
      state_args = ocp.args.StandardRestore()
      wrap = set(impls)
    else:
      abstract_state, wrap = self._prepare_abstract(abstract_state, stored, impls)
      state_args = ocp.args.StandardRestore(abstract_state)
    out = self._mngr.restore(step, args=ocp.args.Composite(
        state=state_args, meta=ocp.args.JsonRestore()))

    def from_data(path, x):
      p = _path_str(path)
      return jax.random.wrap_key_data(x, impl=impls[p]) if p in wrap else x

    state = jax.tree_util.tree_map_with_path(from_data, out["state"])
    return Restored(step, state, dict(out["meta"] or {}))

  def _stored_shapes(self, step: int) -> dict[str, tuple[int, ...] | None]:
    """Path -> stored shape (None for non-array leaves) from orbax's metadata."""
    tree = self._mngr.item_metadata(step)["state"]
    tree = getattr(tree, "tree", tree)
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
    return {_path_str(p): (tuple(x.shape) if hasattr(x, "shape") else None)
            for p, x in leaves}

  def _prepare_abstract(self, abstract_state, stored, impls):
    """Checks `abstract_state` against the stored tree; swaps typed keys for key data."""
    leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    wanted = {_path_str(p): x for p, x in leaves}
    problems = []
    missing = sorted(set(stored) - set(wanted))
    extra = sorted(set(wanted) - set(stored))
    if missing:
      problems.append(f"saved leaves absent from abstract_state: {missing}")
    if extra:
      problems.append(f"abstract_state leaves not in the checkpoint: {extra}")
    wrap = set()
    for p, x in wanted.items():
      if p not in stored or not hasattr(x, "shape"):
        continue
      shape = tuple(x.shape)
      if _is_key(x):
        shape = tuple(jax.eval_shape(
            jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape)
        wrap.add(p)
        if p not in impls:
          problems.append(f"leaf '{p}' is a typed PRNG key in abstract_state but was "
                          "saved as plain data; pass a uint32 ShapeDtypeStruct instead")
      if stored[p] is not None and shape != stored[p]:
        problems.append(f"leaf '{p}': checkpoint shape {stored[p]} != abstract shape "
                        f"{shape}")
    if problems:
      raise ValueError(f"cannot restore step from {self.directory}: "
                       + "; ".join(problems))

    def to_data(path, x):
      return _key_data_abstract(x) if _path_str(path) in wrap else x

    return jax.tree_util.tree_map_with_path(to_data, abstract_state), wrap
