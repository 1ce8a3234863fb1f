"""Run metrics: `W/metrics.jsonl`, TensorBoard events, PNG plots and a progress bar.

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
"""
from __future__ import annotations

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
from reasoning_jax.training.plots import plot_from_jsonl, read_jsonl

__all__ = ["HealthConfig", "HealthMonitor", "HealthReport", "MetricsWriter",
           "plot_from_jsonl", "read_jsonl", "to_jsonable"]


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


class MetricsWriter:
  """Writes scalar metrics of a run under the run directory W.

  Files: `W/metrics.jsonl`, `W/tensorboard/` (tensorboardX events), `W/plots/*.png`.
  """

  def __init__(self, workdir: str | os.PathLike, *, is_primary: bool | None = None,
               tensorboard: bool = True, total_steps: int | None = None,
               progress: bool | None = None,
               progress_keys: Iterable[str] = ("reward/mean",)):
    """Opens the writer (append mode: existing lines are kept).

    Args:
      workdir: the run directory W.
      is_primary: whether this process writes; None means `jax.process_index() == 0`.
      tensorboard: also write TensorBoard event files.
      total_steps: the step count shown in the progress bar (ETA needs it).
      progress: show a tqdm progress bar; None means only when stderr is a TTY.
      progress_keys: metrics shown live next to the bar (those present in a step).
    """
    self.workdir = os.fspath(workdir)
    self.is_primary = _default_primary() if is_primary is None else bool(is_primary)
    self.jsonl_path = os.path.join(self.workdir, "metrics.jsonl")
    self.tensorboard_dir = os.path.join(self.workdir, "tensorboard")
    self.plots_dir = os.path.join(self.workdir, "plots")
    self._use_tb = tensorboard
    self._tb = None
    self._total = total_steps
    self._progress = sys.stderr.isatty() if progress is None else progress
    self._progress_keys = tuple(progress_keys)
    self._bar = None
    self._file = None
    if self.is_primary:
      os.makedirs(self.workdir, exist_ok=True)
      self._file = open(self.jsonl_path, "a", encoding="utf-8")

  # -- writing ---------------------------------------------------------------------
  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Logs `metrics` (name -> scalar) for `step` to JSONL, TensorBoard and the bar."""
    if not self.is_primary:
      return
    step = int(step)
    if "step" in metrics or "time" in metrics:
      raise ValueError("metric names 'step' and 'time' are reserved by MetricsWriter")
    row = {"step": step, "time": round(time.time(), 3)}
    row.update({k: to_jsonable(k, v) for k, v in metrics.items()})
    self._file.write(json.dumps(row, allow_nan=False) + "\n")
    self._file.flush()
    if self._use_tb:
      tb = self._tensorboard()
      for k, v in row.items():
        if k in ("step", "time") or (isinstance(v, str) and v not in ("inf", "-inf")):
          continue  # free text has no scalar curve
        tb.add_scalar(k, float("nan") if v is None else float(v), step)
      tb.flush()
    self._update_bar(step, row)

  def _tensorboard(self, purge_step: int | None = None):
    if self._tb is None:
      SummaryWriter = _summary_writer_class()
      # tensorboardX names files by the second and host; a writer reopened within the
      # same second (a fast resume) would overwrite the earlier file without a suffix.
      self._tb = SummaryWriter(self.tensorboard_dir, purge_step=purge_step,
                               filename_suffix=f".{os.getpid()}.{time.time_ns()}")
    return self._tb

  def _update_bar(self, step: int, row: Mapping[str, Any]) -> None:
    if not self._progress:
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

    Rewrites the JSONL atomically (tmp file + rename) and reopens TensorBoard with
    `purge_step=step + 1` so its later events hide the dropped ones. Returns the
    number of JSONL lines dropped.
    """
    if not self.is_primary:
      return 0
    step = int(step)
    self._file.close()
    kept, dropped = [], 0
    with open(self.jsonl_path, encoding="utf-8") as f:
      for n, line in enumerate(f, 1):
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
    tmp = self.jsonl_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(kept)
    os.replace(tmp, self.jsonl_path)
    self._file = open(self.jsonl_path, "a", encoding="utf-8")
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
    self._file.flush()
    return plot_from_jsonl(self.jsonl_path, out_dir or self.plots_dir)

  def close(self) -> None:
    """Flushes and closes files, TensorBoard and the progress bar."""
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> "MetricsWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
