"""Run metrics: `W/metrics.jsonl`, TensorBoard events, PNG plots and progress.

Only the primary process (`jax.process_index() == 0`, overridable) writes anything; on
the others every method is a no-op, so the trainer calls them unconditionally.

JSONL format: one object per logged step, `{"step": int, "time": unix seconds, ...}`.
Values are converted to plain Python (`jax`/`numpy` scalars and one-element arrays to
int/float/bool). Non-finite floats, which strict JSON cannot hold, are written as
`null` for NaN and the strings `"inf"` / `"-inf"` for infinities; `read_jsonl` turns
them back into floats. NaN as null keeps the file readable by any JSON tool (jq,
pandas) while `"inf"` keeps the sign of a blow-up visible.

Metric names follow `<group>/<name>` (`reward/mean`, `eval/pass@1`, `time/step_s`);
plots are one figure per group (see `plots.py`).

Resume: `truncate_after(step)` drops JSONL lines with a larger step and reopens the
TensorBoard writer with `purge_step=step + 1`, so a run killed after its last checkpoint
and resumed from it has no duplicated steps in either.

Run directory: local or a URL (`gs://`, `s3://`; `training.paths`), reached through
`etils.epath`. An object store cannot append, so on a URL the JSONL is kept in memory
and uploaded whole at most every `sync_every_s` seconds and on `flush`/`plot`/`close`;
TensorBoard event files are written through epath too (`_EpathEventFile`, registered
with tensorboardX for the URL schemes), uploaded on the same schedule
(docs/decisions/0017-cloud-run-directories.md).

Progress: on a terminal a tqdm bar; elsewhere (Jupyter/Colab, `nohup`, CI, `2>log`)
one plain line through the `reasoning_jax.progress` logger at INFO every 10% of the run
and at least every `progress_every_s` seconds (`ProgressLog`;
docs/decisions/0018-progress-lines-off-a-terminal.md).
"""
from __future__ import annotations

import io
import json
import math
import numbers
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from reasoning_jax.training.health import HealthConfig, HealthMonitor, HealthReport
from reasoning_jax.training.paths import run_path, scheme
from reasoning_jax.training.plots import plot_from_jsonl, read_jsonl
from reasoning_jax.training.progress import ProgressLog, make_visible, progress_log

__all__ = ["HealthConfig", "HealthMonitor", "HealthReport", "MetricsWriter",
           "ProgressLog", "plot_from_jsonl", "read_jsonl", "to_jsonable"]


def _float(v: float) -> float | str | None:
  if math.isnan(v):
    return None
  if math.isinf(v):
    return "inf" if v > 0 else "-inf"
  return v


def to_jsonable(key: str, value: Any) -> Any:
  """One metric value as plain JSON (see the module docstring for non-finite floats).

  Raises:
    TypeError: for arrays with more than one element or unsupported types (the
      message names the metric), rather than writing something unreadable.
  """
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, str) or value is None:
    return value
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, numbers.Real):
    return _float(float(value))
  if hasattr(value, "shape") and hasattr(value, "dtype"):  # jax or numpy array
    arr = np.asarray(value)
    if arr.size != 1:
      raise TypeError(f"metric '{key}' is an array of shape {arr.shape}; log scalars "
                      "only (reduce it first, e.g. mean or max)")
    return to_jsonable(key, arr.reshape(()).item())
  raise TypeError(f"metric '{key}' has unsupported type {type(value).__name__}; log "
                  "numbers, bools or strings")


def _default_primary() -> bool:
  import jax  # imported lazily: the rest of this module is plain host Python
  return jax.process_index() == 0


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without torch unless torch is loaded.

  tensorboardX's writer module imports torch when it is installed (Colab, or our test
  venv) only to annotate types; importing torch is slow, and every launched or resumed
  job would pay it. We write float scalars only, so torch is hidden from that one
  import (a None entry in sys.modules makes `import torch` raise ImportError, which
  tensorboardX catches) unless the process already has it.
  """
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None  # type: ignore[assignment]
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter



class _Jsonl:
  """`metrics.jsonl` on a local disk (append + flush per row) or an object store
  (rows in memory, the whole object uploaded by `flush`)."""

  def __init__(self, path, *, remote: bool):
    self.path, self.remote = path, remote
    self._lines: list[str] = []
    self._dirty = False
    self._file = None
    if remote:
      self._lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    else:
      path.parent.mkdir(parents=True, exist_ok=True)
      self._file = path.open("a")

  def read_lines(self) -> list[str]:
    """The file's lines (empty when it does not exist)."""
    if self.remote:
      return list(self._lines)
    self._file.flush()
    return self.path.read_text().splitlines(keepends=True)

  def append(self, line: str) -> None:
    if self._file is not None:
      self._file.write(line)
      self._file.flush()
      return
    self._lines.append(line)
    self._dirty = True

  def flush(self) -> None:
    """Makes every appended row durable (an upload of the whole file on a URL)."""
    if self._file is not None:
      self._file.flush()
    elif self._dirty:
      self.path.write_text("".join(self._lines))
      self._dirty = False

  def rewrite(self, lines: list[str]) -> None:
    """Replaces the content atomically (tmp + rename locally; one upload on a URL)."""
    if self.remote:
      self._lines, self._dirty = list(lines), True
      self.flush()
      return
    self._file.close()
    tmp = self.path.parent / (self.path.name + ".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(self.path)
    self._file = self.path.open("a")

  def close(self) -> None:
    self.flush()
    if self._file is not None:
      self._file.close()
      self._file = None


class _EpathEventFile:
  """A tensorboardX event file at a URL: bytes kept in memory, the whole file uploaded
  through epath on `flush` (an object store cannot append).

  Used instead of tensorboardX's own `gs://` writer, which needs google-cloud-storage,
  serves only GCS, and uploads again from `__del__` after `close` (at interpreter exit,
  or against a bucket already gone).
  """

  def __init__(self, path: str):
    self._path = run_path(path, what="TensorBoard event file")
    self._data = io.BytesIO()
    self._closed = False

  def write(self, data: bytes) -> None:
    self._data.write(data)

  def flush(self) -> None:
    if not self._closed:
      self._path.write_bytes(self._data.getvalue())

  def close(self) -> None:
    self.flush()
    self._closed = True


class _EpathEventFiles:
  """tensorboardX's writer-factory interface (`record_writer.register_writer_factory`)
  over `_EpathEventFile`."""

  def open(self, path: str) -> _EpathEventFile:
    return _EpathEventFile(path)

  def directory_check(self, path: str) -> None:
    run_path(path, what="TensorBoard directory").mkdir(parents=True, exist_ok=True)


class MetricsWriter:
  """Writes scalar metrics of a run under the run directory W (local or a URL).

  Files: `W/metrics.jsonl`, `W/tensorboard/` (tensorboardX events), `W/plots/*.png`.
  """

  def __init__(self, workdir: str | os.PathLike, *, is_primary: bool | None = None,
               tensorboard: bool = True, total_steps: int | None = None,
               progress: bool | str | None = None,
               progress_keys: Iterable[str] = ("reward/mean",),
               progress_every_s: float = 30.0, sync_every_s: float = 30.0):
    """Opens the writer (append mode: existing lines are kept).

    Args:
      workdir: the run directory W: a local path or a `gs://` / `s3://` URL.
      is_primary: whether this process writes; None means `jax.process_index() == 0`.
      tensorboard: also write TensorBoard event files.
      total_steps: the run's step count (the bar's total, the lines' percentages, ETA).
      progress: None: a tqdm bar when stderr is a terminal, else `ProgressLog` lines;
        True or "bar": always the bar; "log": always the lines; False: neither.
      progress_keys: metrics shown live next to the bar (those present in a step).
      progress_every_s: a progress line is also due at the first write this many
        seconds after the last line.
      sync_every_s: on a URL, rows are uploaded at the first write this many seconds
        after the last upload (and always on `flush`, `plot` and `close`).
    """
    self._path = run_path(workdir)
    self._remote = scheme(self._path) is not None
    self.workdir = os.fspath(self._path)
    self.is_primary = _default_primary() if is_primary is None else bool(is_primary)
    self.jsonl_path = os.fspath(self._path / "metrics.jsonl")
    self.tensorboard_dir = os.fspath(self._path / "tensorboard")
    self.plots_dir = os.fspath(self._path / "plots")
    self._use_tb = tensorboard
    self._tb = None
    self._sync_every_s, self._synced = sync_every_s, time.monotonic()
    self._total = total_steps
    if progress is None:
      progress = "bar" if sys.stderr.isatty() else "log"
    self._progress = {True: "bar", False: None}.get(progress, progress)
    if self._progress not in ("bar", "log", None):
      raise ValueError(f"progress={progress!r}: expected None, True, False, 'bar' or "
                       "'log'")
    self._progress_keys = tuple(progress_keys)
    self._bar = None
    self._lines = None
    self._jsonl = None
    if self.is_primary:
      self._jsonl = _Jsonl(self._path / "metrics.jsonl", remote=self._remote)
      if self._progress == "log":
        make_visible(progress_log)
        self._lines = ProgressLog(total_steps, every_s=progress_every_s)

  # -- writing ---------------------------------------------------------------------
  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Logs `metrics` (name -> scalar) for `step` to JSONL, TensorBoard and progress."""
    if not self.is_primary:
      return
    step = int(step)
    if "step" in metrics or "time" in metrics:
      raise ValueError("metric names 'step' and 'time' are reserved by MetricsWriter")
    row = {"step": step, "time": round(time.time(), 3)}
    row.update({k: to_jsonable(k, v) for k, v in metrics.items()})
    self._jsonl.append(json.dumps(row, allow_nan=False) + "\n")
    tb = self._tensorboard()
    if tb is not None:
      for k, v in row.items():
        if k in ("step", "time") or (isinstance(v, str) and v not in ("inf", "-inf")):
          continue  # free text has no scalar curve
        tb.add_scalar(k, float("nan") if v is None else float(v), step)
      if not self._remote:
        tb.flush()  # on a URL every flush uploads the whole event file
    if self._remote and time.monotonic() - self._synced >= self._sync_every_s:
      self.flush()
    if self._lines is not None:
      self._lines.update(step, row)
    self._update_bar(step, row)

  def flush(self) -> None:
    """Makes everything written so far durable (uploads on a URL)."""
    if self._jsonl is not None:
      self._jsonl.flush()
    if self._tb is not None:
      self._tb.flush()
    self._synced = time.monotonic()

  def _tensorboard(self, purge_step: int | None = None):
    """The tensorboardX writer (opened on first use), or None when TensorBoard is off."""
    if self._tb is not None or not self._use_tb:
      return self._tb
    SummaryWriter = _summary_writer_class()
    if self._remote:
      from tensorboardX import record_writer
      record_writer.register_writer_factory(scheme(self._path), _EpathEventFiles())
    # tensorboardX names files by the second and host; a writer reopened within the
    # same second (a fast resume) would overwrite the earlier file without a suffix.
    self._tb = SummaryWriter(self.tensorboard_dir, purge_step=purge_step,
                             filename_suffix=f".{os.getpid()}.{time.time_ns()}")
    return self._tb

  def _update_bar(self, step: int, row: Mapping[str, Any]) -> None:
    if self._progress != "bar":
      return
    if self._bar is None:
      from tqdm import tqdm
      self._bar = tqdm(total=self._total, initial=step, unit="step", dynamic_ncols=True)
    self._bar.update(max(0, step - self._bar.n))
    live = {k.split("/")[-1] if k.count("/") == 1 else k: row[k]
            for k in self._progress_keys if k in row}
    if live:
      self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                             for k, v in live.items()}, refresh=False)

  # -- resume ----------------------------------------------------------------------
  def truncate_after(self, step: int) -> int:
    """Drops logged steps > `step` (call on resume from checkpoint `step`).

    Rewrites the JSONL atomically and reopens TensorBoard with `purge_step=step + 1`
    so its later events hide the dropped ones. Returns the number of JSONL lines
    dropped.
    """
    if not self.is_primary:
      return 0
    step = int(step)
    kept, dropped = [], 0
    for line in self._jsonl.read_lines():
      if not line.strip():
        continue
      try:
        row_step = json.loads(line)["step"]
      except (json.JSONDecodeError, KeyError):
        # A line cut short by a crash mid-write: it belongs to a step after the
        # checkpoint, and keeping it would break every reader.
        dropped += 1
        continue
      if row_step > step:
        dropped += 1
      else:
        kept.append(line if line.endswith("\n") else line + "\n")
    self._jsonl.rewrite(kept)
    if self._use_tb:
      if self._tb is not None:
        self._tb.close()
        self._tb = None
      self._tensorboard(purge_step=step + 1)
    return dropped

  # -- outputs ---------------------------------------------------------------------
  def plot(self, out_dir: str | os.PathLike | None = None) -> list[str]:
    """PNG plots of everything logged so far (default `W/plots`); returns the paths."""
    if not self.is_primary:
      return []
    self._jsonl.flush()
    return plot_from_jsonl(self.jsonl_path, out_dir or self.plots_dir)

  def close(self) -> None:
    """Flushes and closes files (uploading on a URL), TensorBoard and the progress
    bar."""
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None

  def __enter__(self) -> "MetricsWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
