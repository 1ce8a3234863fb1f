"""The study v2 report's plots (matplotlib, Agg), written beside study_v2.md.

Each `draw_*` returns the file name it wrote, or None when the runs hold nothing to draw.
Curves are per seed (thin) with their mean over seeds (thick); steps are RL steps.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

import report as R  # noqa: E402  (the sibling script: loading, summaries, the law)

PREFIX = "study_v2_"


def _colours(names) -> dict:
  cmap = plt.get_cmap("tab10")
  order = sorted(set(names), key=lambda n: R.Method.parse(n).order)
  return {n: cmap(i % 10) for i, n in enumerate(order)}


def _grid(panels: list, title: str):
  """A figure with one axis per panel: rows by optimizer, columns by setting."""
  settings = sorted({s for s, _ in panels}, key=lambda s: R.SETTINGS.index(s)
                    if s in R.SETTINGS else 9)
  opts = sorted({o for _, o in panels})
  fig, axes = plt.subplots(len(opts), len(settings), squeeze=False, sharex=True,
                           figsize=(4.2 * len(settings), 3.3 * len(opts)))
  fig.suptitle(title, fontsize=10)
  ax_of = {}
  for i, o in enumerate(opts):
    for j, s in enumerate(settings):
      ax_of[(s, o)] = axes[i][j]
      axes[i][j].set_title(f"{s} · {o}", fontsize=9)
      axes[i][j].grid(alpha=0.3)
      if (s, o) not in panels:
        axes[i][j].set_visible(False)
  return fig, ax_of


def _save(fig, out_dir, name: str) -> str:
  fig.tight_layout()
  fig.savefig(str(out_dir / name), dpi=90)
  plt.close(fig)
  return name


def _curves(ax, seeds: dict, key: str, study, colour, label: str, rl_only: bool):
  """Thin line per seed, thick mean over the steps every seed has."""
  curves = [R.series(rows, key, study, rl_only=rl_only) for rows in seeds.values()]
  curves = [c for c in curves if len(c[0])]
  if not curves:
    return False
  for s, v in curves:
    ax.plot(s, v, color=colour, lw=0.6, alpha=0.3)
  common = sorted(set.intersection(*(set(s.tolist()) for s, _ in curves)))
  mean = [np.mean([v[list(s).index(t)] for s, v in curves]) for t in common]
  ax.plot(common, mean, color=colour, lw=1.8, label=f"{label} (n={len(curves)})")
  return True


def draw_metric(data, study, out_dir, key, ylabel, name, *, methods=None,
                rl_only=True, hline=None, title="") -> str | None:
  """One metric against RL step, a panel per (setting, optimizer)."""
  keys = [k for k in data if methods is None or methods(R.Method.parse(k[2]))]
  panels = sorted({(s, o) for s, o, _ in keys})
  if not panels:
    return None
  fig, ax_of = _grid(panels, title)
  col = _colours(k[2] for k in keys)
  drawn = False
  for s, o, m in sorted(keys, key=lambda k: R.Method.parse(k[2]).order):
    drawn |= _curves(ax_of[(s, o)], data[(s, o, m)], key, study, col[m], m, rl_only)
  if not drawn:
    plt.close(fig)
    return None
  for ax in ax_of.values():
    if hline is not None:
      ax.axhline(hline, color="k", ls="--", lw=0.8)
    ax.set_xlabel("RL step")
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=6)
  return _save(fig, out_dir, name)


def draw_escape_vs_q(summ, study, out_dir) -> str | None:
  """Escape (a) per seed against q, censored seeds at the budget, and the fitted law."""
  laws = {p: R.escape_vs_q(summ, *p) for p in R.groups({k: None for k in summ})}
  laws = {p: l for p, l in laws.items() if l is not None}
  if not laws:
    return None
  fig, ax_of = _grid(list(laws), "escape (a) vs q: dots seeds, ^ never escaped "
                     f"(drawn at {study.steps}), line censored median, dashed C·law(q)")
  for p, law in laws.items():
    ax = ax_of[p]
    for r in law["rows"]:
      t = np.array([study.steps if x is None else x for x in r["times"]], float)
      cens = np.array([x is None for x in r["times"]])
      jit = r["q"] + np.linspace(-0.015, 0.015, len(t))
      ax.plot(jit[~cens], t[~cens], "o", ms=3, color="C0", alpha=0.7)
      ax.plot(jit[cens], t[cens], "^", ms=4, mfc="none", color="C3")
    qs = [r["q"] for r in law["rows"]]
    med = [min(r["median"], study.steps) for r in law["rows"]]
    ax.plot(qs, med, "k-", lw=1)
    if law["scale"] is not None and law["log_p0"] < math.log(R.ESCAPE_W):
      grid = np.linspace(0, 1, 101)
      ax.plot(grid, [law["scale"] * R.escape_law(q, law["log_p0"]) for q in grid], "--",
              color="C2", label=f"fit at q={law['fit_q']:g}, p0={math.exp(law['log_p0']):.2g}")
      ax.legend(fontsize=6)
    ax.set_yscale("log")
    ax.set_ylim(0.8, study.steps * 3)
    ax.set_xlabel("q")
    ax.set_ylabel("escape step (a)")
  return _save(fig, out_dir, PREFIX + "escape_vs_q.png")


def draw_grad_ratio(pts: list[dict], out_dir) -> str | None:
  """Measured step-1 gradient-norm ratio against M^-q w̄0^-q, log-log with y = x."""
  if not pts:
    return None
  fig, ax = plt.subplots(figsize=(5.2, 4.6))
  marker = {"adam": "o", "sgd": "s"}   # colour by q, marker by optimizer
  for i, q in enumerate(sorted({p["q"] for p in pts})):
    for opt in sorted({p["optimizer"] for p in pts}):
      g = [p for p in pts if p["q"] == q and p["optimizer"] == opt]
      if g:
        face = "none" if opt == "sgd" else f"C{i}"
        ax.scatter([p["predicted"] for p in g], [p["measured"] for p in g], s=16,
                   facecolors=face, edgecolors=f"C{i}", marker=marker.get(opt, "D"),
                   label=f"q={q:g} {opt}", alpha=0.75)
  vals = [v for p in pts for v in (p["predicted"], p["measured"]) if v > 0]
  lo, hi = min(vals) / 2, max(vals) * 2
  ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
  ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
         xlabel="predicted M^-q w̄0^-q", ylabel="measured ‖∇‖(q) / ‖∇‖(q=0), RL step 1",
         title="step-1 gradient amplification (all settings, per seed)")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=6)
  return _save(fig, out_dir, PREFIX + "grad_ratio.png")


def draw_all(data: dict, summ: dict, study, out_dir) -> list[str]:
  """Every plot; returns the file names written into out_dir."""
  log_thr = math.log(R.ESCAPE_W)
  lr_groups = {(s, o) for s, o, m in data if R.Method.parse(m).lr_mult != 1.0}
  names = [
      draw_metric(data, study, out_dir, "loss/log_wbar", "batch mean log w̄",
                  PREFIX + "log_wbar.png", hline=log_thr,
                  methods=lambda m: m.lr_mult == 1.0,
                  title=f"log w̄ vs RL step (dashed: log {R.ESCAPE_W}; GRPO has no w̄)"),
      draw_metric(data, study, out_dir, "eval/accuracy", "held-out sampled accuracy",
                  PREFIX + "accuracy.png", rl_only=False,
                  methods=lambda m: m.lr_mult == 1.0,
                  title="held-out sampled pass@1 vs RL step (0 = warm-up model)"),
      draw_escape_vs_q(summ, study, out_dir),
      draw_grad_ratio(R.grad_ratio_points(summ, study), out_dir),
      draw_metric({k: v for k, v in data.items() if k[:2] in lr_groups}, study, out_dir,
                  "loss/log_wbar", "batch mean log w̄", PREFIX + "lr_control.png",
                  hline=log_thr, methods=lambda m: m.family == "garl" and m.q in (0, 0.75),
                  title="GARL q=0 at lr x1, x1e2, x1e4 (q=0.75 at x1 for reference)"),
  ]
  return [n for n in names if n]
