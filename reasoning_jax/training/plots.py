"""PNG plots of a run's `metrics.jsonl`: one figure per metric group, one panel per metric.

A metric `reward/mean` belongs to group `reward`, `eval/pass@1` to `eval`, and a name
without a slash (`loss`) is its own group. Figures are drawn with matplotlib's
object API on an Agg canvas, never through pyplot, so plotting from a training loop or
a notebook neither switches the user's backend nor leaks global figures. Paths may be
local or URLs (`gs://`, ...): files are read and written through `etils.epath`.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import re
from collections.abc import Iterable

from reasoning_jax.training.paths import run_path

_RESERVED = ("step", "time")
_NONFINITE = {"inf": math.inf, "-inf": -math.inf}


def _decode(value):
  if value is None:
    return math.nan
  if isinstance(value, str):
    return _NONFINITE.get(value, value)
  return value


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """Rows of a metrics JSONL, with null -> NaN and "inf"/"-inf" -> float infinities.

  A malformed line (e.g. the last one, cut short by a crash) is skipped with a warning
  naming file and line, since plots of a dead run are exactly when they matter.
  """
  path = run_path(path, what="metrics file")
  if not path.exists():
    raise FileNotFoundError(f"metrics file {path} does not exist; pass the run's "
                            "W/metrics.jsonl")
  rows = []
  with path.open("r") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        int(row["step"])
      except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        logging.warning("skipping malformed metrics line %s:%d", path, n)
        continue
      rows.append({k: _decode(v) for k, v in row.items()})
  return rows


def group_metrics(names: Iterable[str]) -> dict[str, list[str]]:
  """Metric names (numeric curves) by group, groups and names sorted."""
  groups: dict[str, list[str]] = {}
  for name in names:
    if name in _RESERVED:
      continue
    groups.setdefault(name.split("/", 1)[0], []).append(name)
  return {g: sorted(set(v)) for g, v in sorted(groups.items())}


def _series(rows: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
  """name -> (steps ascending, values); a repeated step keeps its last value."""
  per: dict[str, dict[int, float]] = {}
  for row in rows:
    step = int(row["step"])
    for k, v in row.items():
      if k in _RESERVED or isinstance(v, str) or not isinstance(v, (int, float)):
        continue
      per.setdefault(k, {})[step] = float(v)
  return {k: (sorted(d), [d[s] for s in sorted(d)]) for k, d in per.items()}


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.@-]+", "_", name).strip("_") or "metrics"


def plot_from_jsonl(jsonl_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                    groups: Iterable[str] | None = None,
                    max_panels: int = 9) -> list[str]:
  """Writes `<out_dir>/<group>.png` for each metric group; returns the paths written.

  Args:
    jsonl_path: a `metrics.jsonl` written by `MetricsWriter`.
    out_dir: where the PNGs go (created if needed).
    groups: only these groups (default: all with at least one numeric value).
    max_panels: panels per figure; a bigger group is split into `<group>_2.png`, ...
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  series = _series(read_jsonl(jsonl_path))
  by_group = group_metrics(series)
  if groups is not None:
    wanted = set(groups)
    by_group = {g: v for g, v in by_group.items() if g in wanted}
  out = run_path(out_dir, what="plots directory")
  out.mkdir(parents=True, exist_ok=True)
  paths = []
  for group, names in by_group.items():
    for part in range(0, len(names), max_panels):
      chunk = names[part:part + max_panels]
      cols = min(3, len(chunk))
      rows = math.ceil(len(chunk) / cols)
      fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
      FigureCanvasAgg(fig)
      for i, name in enumerate(chunk):
        ax = fig.add_subplot(rows, cols, i + 1)
        steps, values = series[name]
        ax.plot(steps, values, marker="." if len(steps) < 50 else None, lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
      fig.suptitle(group)
      suffix = "" if part == 0 else f"_{part // max_panels + 1}"
      path = out / f"{_safe(group)}{suffix}.png"
      png = io.BytesIO()  # one write: an object store cannot seek or append
      fig.savefig(png, format="png", dpi=90)
      path.write_bytes(png.getvalue())
      paths.append(os.fspath(path))
  return paths
