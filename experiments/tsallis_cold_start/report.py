"""Turn the study's metrics.jsonl files into docs/results.md and PNG plots.

    python experiments/tsallis_cold_start/report.py --runs runs/tsallis_cold_start

Reads `<runs>/<setting>/<method>/seed<s>/metrics.jsonl` (the layout `run_study.py`
writes), keeps rows up to the study's last step (SFT + RL steps of base.gin, so runs
that trained longer are cut at the same budget), and writes:
  - `docs/results.md`: per setting a table (warm-up accuracy, final and best sampled
    accuracy, greedy, maj@4, steps to escape, seeds escaped, final mean log w and
    rationale correctness for GARL/PAFT), each as mean ± std over seeds, then the
    hand-written findings from `findings.md` next to this script;
  - `docs/results/<setting>_accuracy.png`, `<setting>_greedy.png`, `<setting>_logw.png`.
"""
from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ESCAPE = 0.5  # greedy exact match that counts as "escaped the cold start"


def load(runs: str, last_step: int) -> dict[str, dict[str, dict[int, list[dict]]]]:
  """{setting: {method: {seed: rows}}} with rows at steps <= last_step."""
  out: dict = {}
  for path in sorted(glob.glob(os.path.join(runs, "*", "*", "seed*", "metrics.jsonl"))):
    seed_dir = os.path.dirname(path)
    method_dir = os.path.dirname(seed_dir)
    setting = os.path.basename(os.path.dirname(method_dir))
    if setting in ("sft", "warm_eval"):
      continue
    rows = [json.loads(l) for l in open(path) if l.strip()]
    rows = [r for r in rows if r["step"] <= last_step]
    if not any(r["step"] == last_step and "eval/accuracy" in r for r in rows):
      continue  # unfinished (or shorter) run: not comparable at the study's budget
    seed = int(os.path.basename(seed_dir)[4:])
    out.setdefault(setting, {}).setdefault(os.path.basename(method_dir), {})[seed] = rows
  return out


def evals(rows: list[dict]) -> list[dict]:
  """Eval rows in step order."""
  return [r for r in rows if "eval/accuracy" in r]


def train_series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of a training metric."""
  pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
  if not pts:
    return np.zeros(0), np.zeros(0)
  s, v = zip(*pts)
  return np.asarray(s), np.asarray(v, float)


def fmt(vals: list[float], digits: int = 3) -> str:
  """`mean ± std` (or `mean` for one seed, `—` for none)."""
  v = [x for x in vals if x is not None and np.isfinite(x)]
  if not v:
    return "—"
  if len(v) == 1:
    return f"{v[0]:.{digits}f}"
  return f"{np.mean(v):.{digits}f} ± {np.std(v):.{digits}f}"


def method_order(name: str) -> tuple:
  """GRPO first, then GARL by q, then PAFT."""
  fam = {"grpo": 0, "garl": 1, "paft": 2}.get(name.split("_")[0], 3)
  return (fam, name)


def table(methods: dict, sft_steps: int) -> list[str]:
  """Markdown rows for one setting."""
  lines = ["| method | seeds | warm-up acc | final acc | best acc | final greedy | "
           f"final maj@4 | steps to greedy ≥ {ESCAPE} | escaped | final mean log w | "
           "final rationale correct |", "|" + "---|" * 11]
  for m in sorted(methods, key=method_order):
    seeds = methods[m]
    e = {s: evals(rows) for s, rows in seeds.items()}
    warm = [ev[0]["eval/accuracy"] for ev in e.values() if ev]
    final = [ev[-1]["eval/accuracy"] for ev in e.values() if ev]
    best = [max(r["eval/accuracy"] for r in ev) for ev in e.values() if ev]
    greedy = [ev[-1]["eval/greedy_accuracy"] for ev in e.values() if ev]
    maj = [ev[-1]["eval/maj@4"] for ev in e.values() if ev]
    esc = []
    for ev in e.values():
      hit = [r["step"] - sft_steps for r in ev if r["eval/greedy_accuracy"] >= ESCAPE]
      esc.append(hit[0] if hit else None)
    logw = [train_series(rows, "loss/log_wbar")[1][-1:] for rows in seeds.values()]
    logw = [float(v[0]) for v in logw if len(v)]
    ratc = [train_series(rows, "rollout/rationale_correct")[1][-5:] for rows in
            seeds.values()]
    ratc = [float(v.mean()) for v in ratc if len(v)]
    n_esc = sum(x is not None for x in esc)
    esc_txt = fmt([x for x in esc if x is not None], 0) if n_esc else "never"
    lines.append(f"| {m} | {len(seeds)} | {fmt(warm)} | {fmt(final)} | {fmt(best)} | "
                 f"{fmt(greedy)} | {fmt(maj)} | {esc_txt} | {n_esc}/{len(seeds)} | "
                 f"{fmt(logw, 1)} | {fmt(ratc, 2)} |")
  return lines


def plot(setting: str, methods: dict, sft_steps: int, out_dir: str) -> list[str]:
  """Accuracy, greedy accuracy and mean log w against RL step; returns file names."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names = []
  for key, label, train in (("eval/accuracy", "sampled exact match (T=1)", False),
                            ("eval/greedy_accuracy", "greedy exact match", False),
                            ("loss/log_wbar", "mean log w (GARL/PAFT batches)", True)):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = False
    for m in sorted(methods, key=method_order):
      curves = []
      for rows in methods[m].values():
        if train:
          s, v = train_series(rows, key)
        else:
          ev = evals(rows)
          s, v = np.asarray([r["step"] for r in ev]), np.asarray([r[key] for r in ev])
        if len(s):
          curves.append((s - sft_steps, v))
      if not curves:
        continue
      n = min(len(c[0]) for c in curves)
      steps = curves[0][0][:n]
      vals = np.stack([c[1][:n] for c in curves])
      line, = ax.plot(steps, vals.mean(0), marker="" if train else "o", ms=3,
                      label=f"{m} (n={len(curves)})")
      if len(curves) > 1:
        ax.fill_between(steps, vals.min(0), vals.max(0), color=line.get_color(), alpha=0.15)
      drawn = True
    if not drawn:
      plt.close(fig)
      continue
    ax.set_xlabel("RL step")
    ax.set_ylabel(label)
    ax.set_title(f"{setting}: {label} (mean over seeds, band = min..max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    name = f"{setting}_{key.split('/')[-1]}.png"
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=90)
    plt.close(fig)
    names.append(name)
  return names


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--runs", default="runs/tsallis_cold_start")
  ap.add_argument("--out", default="docs/results.md")
  ap.add_argument("--command", default="python experiments/tsallis_cold_start/run_study.py",
                  help="the study command, quoted in the report")
  ap.add_argument("--extra", action="append", default=[], metavar="LABEL=DIR",
                  help="another study's runs (e.g. a variant with other --gin_param), "
                       "reported as settings '<setting>_<LABEL>'")
  ap.add_argument("--findings", default=os.path.join(HERE, "findings.md"))
  a = ap.parse_args()
  import gin
  from reasoning_jax.training.config import Experiment
  gin.parse_config_files_and_bindings([os.path.join(HERE, "base.gin")], [])
  exp = Experiment()
  sft_steps, last = exp.sft.steps, exp.total_steps
  data = load(a.runs, last)
  for spec in a.extra:
    label, _, path = spec.partition("=")
    for setting, methods in load(path, last).items():
      data[f"{setting}_{label}"] = methods
  plot_dir = os.path.join(os.path.dirname(a.out), "results")
  os.makedirs(plot_dir, exist_ok=True)
  timings = os.path.join(a.runs, "timings.json")
  tm = json.load(open(timings)) if os.path.exists(timings) else {}
  wall = tm.get("total")
  trained = sum(1 for k, v in tm.items() if k.count("/") == 2 and v > 0)
  md = ["# Results: the Tsallis cold-start study at CPU scale", "",
        "Generated by `python experiments/tsallis_cold_start/report.py` from the runs of",
        f"`{a.command}`" + (f" (the last driver invocation took {wall / 60:.1f} min "
                            f"and trained {trained} RL runs; finished runs are skipped "
                            "on resume)." if wall else "."), "",
        f"Budget per run: {exp.rl.steps} RL steps x {exp.rl.prompts_per_step} prompts x "
        f"M = {exp.rl.group_size} rollouts, Adam lr {exp.rl.learning_rate}, eps "
        f"{exp.rl.adam_eps}; warm-up SFT {sft_steps} steps (shared by all methods of a "
        f"seed). Eval: {exp.eval.num_prompts} held-out prompts every {exp.eval.every} "
        f"RL steps; 'acc' is sampled exact match at T=1 ({exp.eval.samples} samples), "
        "maj@4 over those samples; steps to escape is the first eval where greedy "
        f"exact match ≥ {ESCAPE} (eval granularity {exp.eval.every} steps); mean log w "
        "is the last RL step's batch mean of log w̄ (GARL/PAFT only); rationale "
        "correct is the mean over the last 5 RL steps. ± is the std over seeds.", ""]
  for setting in sorted(data):
    md += [f"## Setting: {setting}", ""] + table(data[setting], sft_steps) + [""]
    for name in plot(setting, data[setting], sft_steps, plot_dir):
      rel = os.path.relpath(os.path.join(plot_dir, name), os.path.dirname(a.out))
      md.append(f"![{name}]({rel})")
    md.append("")
  if os.path.exists(a.findings):
    md += [open(a.findings).read().strip(), ""]
  with open(a.out, "w") as f:
    f.write("\n".join(md))
  print(f"wrote {a.out} and {plot_dir}/")


if __name__ == "__main__":
  main()
