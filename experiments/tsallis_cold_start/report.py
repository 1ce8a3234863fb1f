"""Turn the Tsallis study v2's runs into docs/results/study_v2.md and its plots.

    python experiments/tsallis_cold_start/report.py --runs runs/tsallis_study_v2

Reads `<runs>/study.json` and `<runs>/<setting>/<optimizer>/<method>/seed<s>/metrics.jsonl`
(the layout run_study.py writes). Steps in metrics.jsonl are global (SFT first); the
report counts RL steps: RL step k is global step sft_steps + k, and RL step 0 is the
warm-up model's eval row. Rows past the budget (sft_steps + steps) are cut; a seed that
did not reach the budget is left out of every table and listed as incomplete.

Statistics (reasoning_jax/evaluation/stats.py, docs/decisions/0032-study-statistics.md):
mean ± std (ddof=1) over seeds with a Student-t 95% interval; paired per-seed differences
with a percentile-bootstrap 95% interval; escape steps with never-escaped seeds censored
at the budget (k/n escaped and the censored median). Writes the generated tables only;
docs/results.md is written by hand and cites them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re

import numpy as np
from etils import epath

from reasoning_jax.evaluation import stats

HERE = os.path.dirname(os.path.abspath(__file__))
ESCAPE_W = 0.1            # criterion (a): batch log w̄ >= log 0.1 (GRPO: reward mean >= 0.1)
LAST_K = 5                # RL steps averaged for the consistency / rationale columns
SETTINGS = ("cold1", "cold2", "reverse", "warm")
OPTIMIZERS = ("adam", "sgd")
_METHOD = re.compile(r"^(grpo|garl|paft)(?:_q([0-9.]+))?(?:_lr([0-9.e+-]+))?$")


@dataclasses.dataclass(frozen=True)
class Study:
  """study.json: the budget every run shares."""
  steps: int
  sft_steps: int
  group_size: int
  prompts_per_step: int
  eval_every: int
  seeds: list
  sgd_lr: float
  lr: dict
  wall_s: object
  command: str

  @property
  def budget(self) -> int:
    """Global step of the last RL step."""
    return self.sft_steps + self.steps


@dataclasses.dataclass(frozen=True)
class Method:
  """A method directory name parsed: family, q and learning-rate multiplier."""
  name: str
  family: str
  q: float | None
  lr_mult: float

  @classmethod
  def parse(cls, name: str) -> Method:
    m = _METHOD.match(name)
    if not m:
      return cls(name, "other", None, 1.0)
    return cls(name, m[1], float(m[2]) if m[2] else None, float(m[3]) if m[3] else 1.0)

  @property
  def order(self) -> tuple:
    """GRPO, GARL by q, PAFT, then the learning-rate controls."""
    fam = {"grpo": 0, "garl": 1, "paft": 2}.get(self.family, 3)
    return (self.lr_mult != 1.0, fam, self.q if self.q is not None else -1, self.lr_mult,
            self.name)


def read_study(runs: epath.Path) -> Study:
  """study.json, with a clear error for a missing file or field."""
  path = runs / "study.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: --runs must be the directory that "
                            "run_study.py --out wrote (it writes study.json first)")
  raw = json.loads(path.read_text())
  fields = [f.name for f in dataclasses.fields(Study)]
  missing = [f for f in fields if f not in raw]
  if missing:
    raise ValueError(f"{path} lacks {missing}; rerun run_study.py to rewrite it")
  return Study(**{f: raw[f] for f in fields})


def load(runs: epath.Path, study: Study) -> tuple[dict, list[str]]:
  """({(setting, optimizer, method): {seed: rows}}, incomplete run paths).

  Rows are cut at the budget; a seed whose rows stop before it is incomplete.
  """
  data: dict = {}
  incomplete = []
  for path in sorted(runs.glob("*/*/*/seed*/metrics.jsonl")):
    seed_dir = path.parent
    method_dir = seed_dir.parent
    key = (method_dir.parent.parent.name, method_dir.parent.name, method_dir.name)
    rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    rows = sorted((r for r in rows if r["step"] <= study.budget), key=lambda r: r["step"])
    if not rows or rows[-1]["step"] < study.budget:
      incomplete.append(f"{'/'.join(key)}/{seed_dir.name}")
      continue
    data.setdefault(key, {})[int(seed_dir.name[len("seed"):])] = rows
  return data, incomplete


def series(rows: list[dict], key: str, study: Study, *, rl_only: bool = True):
  """(RL steps, values) of a metric; RL rows only unless rl_only=False."""
  pts = [(r["step"] - study.sft_steps, float(r[key])) for r in rows
         if r.get(key) is not None and (r["step"] > study.sft_steps or not rl_only)]
  if not pts:
    return np.zeros(0, int), np.zeros(0)
  s, v = zip(*pts)
  return np.asarray(s), np.asarray(v)


def pass_key(rows: list[dict]) -> str | None:
  """The eval/pass@k key with the largest k, if any."""
  ks = {int(k.split("@")[1]) for r in rows for k in r if k.startswith("eval/pass@")}
  return f"eval/pass@{max(ks)}" if ks else None


@dataclasses.dataclass(frozen=True)
class SeedSummary:
  """One seed's numbers, every step an RL step (0 = the warm-up eval)."""
  escape_w: int | None        # criterion (a)
  escape_acc: int | None      # criterion (b)
  final: dict                 # the last eval row's eval/* values
  log_wbar1: float | None     # batch log w̄ at RL step 1
  grad1: float | None         # loss/grad_norm at RL step 1
  mean_log_wbar: float | None  # mean over RL steps of batch log w̄
  final_log_wbar: float | None
  consistent: float | None    # rollout/consistent, mean of the last LAST_K RL steps
  rationale_correct: float | None


def _first(rows, key, study):
  s, v = series(rows, key, study)
  return float(v[0]) if len(s) and s[0] == 1 else None


def _tail_mean(rows, key, study):
  _, v = series(rows, key, study)
  return float(v[-LAST_K:].mean()) if len(v) else None


def summarize(rows: list[dict], study: Study) -> SeedSummary:
  """Escape steps, final eval, step-1 numbers of one seed."""
  s_w, log_w = series(rows, "loss/log_wbar", study)
  if len(s_w):
    esc_w = stats.escape_step(s_w, log_w, math.log(ESCAPE_W))
  else:  # GRPO: the sampled exact-match rate is an unbiased estimate of w̄
    esc_w = stats.escape_step(*series(rows, "reward/mean", study), ESCAPE_W)
  s_e, acc = series(rows, "eval/accuracy", study, rl_only=False)
  evals = [r for r in rows if "eval/accuracy" in r]
  final = {k: float(v) for k, v in evals[-1].items() if k.startswith("eval/")} if evals else {}
  return SeedSummary(
      escape_w=esc_w, escape_acc=stats.first_nonzero_step(s_e, acc), final=final,
      log_wbar1=_first(rows, "loss/log_wbar", study),
      grad1=_first(rows, "loss/grad_norm", study),
      mean_log_wbar=float(log_w.mean()) if len(log_w) else None,
      final_log_wbar=float(log_w[-1]) if len(log_w) else None,
      consistent=_tail_mean(rows, "rollout/consistent", study),
      rationale_correct=_tail_mean(rows, "rollout/rationale_correct", study))


# ---------------------------------------------------------------- formatting


def fmt_num(x: float | None, digits: int = 3) -> str:
  return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def fmt_mean(vals: list, digits: int = 3, ci: bool = True) -> str:
  """`mean ± std [t 95% CI]` over seeds (std ddof=1); None values are skipped."""
  v = [x for x in vals if x is not None and np.isfinite(x)]
  if not v:
    return "—"
  if len(v) == 1:
    return f"{v[0]:.{digits}f}"
  out = f"{np.mean(v):.{digits}f} ± {stats.std(v):.{digits}f}"
  if ci:
    lo, hi = stats.t_mean_ci(v)
    out += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
  return out


def fmt_escape(times: list, steps: int) -> str:
  """`k/n, median m (per seed: 3, 5, >60)`, never-escaped censored at the budget."""
  k, n = sum(t is not None for t in times), len(times)
  med = stats.censored_median(times)
  med_txt = f">{steps}" if med == math.inf else f"{med:g}"
  seeds = ", ".join(f">{steps}" if t is None else str(t) for t in times)
  return f"{k}/{n}, median {med_txt} ({seeds})"


def _ordered(data: dict, setting: str, optimizer: str) -> list[Method]:
  return sorted((Method.parse(m) for (s, o, m) in data if (s, o) == (setting, optimizer)),
                key=lambda m: m.order)


def groups(data: dict) -> list[tuple[str, str]]:
  """(setting, optimizer) pairs present, known names first in the contract's order."""
  pairs = {(s, o) for s, o, _ in data}
  rank = lambda name, known: (known.index(name) if name in known else len(known), name)
  return sorted(pairs, key=lambda p: (rank(p[0], SETTINGS), rank(p[1], OPTIMIZERS)))


def main_table(data: dict, summ: dict, setting: str, optimizer: str,
               study: Study) -> list[str]:
  """Escape, final accuracy and rollout columns per method."""
  some = next(iter(data[(setting, optimizer, _ordered(data, setting, optimizer)[0].name)]
                   .values()))
  pk = pass_key(some)
  head = ["method", "n", f"escape (a): log w̄ ≥ log {ESCAPE_W}", "escape (b): eval acc > 0",
          "final sampled acc", "final greedy acc", f"final {pk[5:] if pk else 'pass@k'}",
          f"consistent (last {LAST_K})", "log w̄ at step 1"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for m in _ordered(data, setting, optimizer):
    ss = summ[(setting, optimizer, m.name)]
    col = lambda k: [s.final.get(k) for s in ss.values()]
    lines.append("| " + " | ".join([
        m.name, str(len(ss)),
        fmt_escape([s.escape_w for s in ss.values()], study.steps),
        fmt_escape([s.escape_acc for s in ss.values()], study.steps),
        fmt_mean(col("eval/accuracy")), fmt_mean(col("eval/greedy_accuracy")),
        fmt_mean(col(pk)) if pk else "—",
        fmt_mean([s.consistent for s in ss.values()], 2, ci=False),
        fmt_mean([s.log_wbar1 for s in ss.values()], 2, ci=False)]) + " |")
  return lines


PAIRED_METRICS = (("final sampled acc", lambda s: s.final.get("eval/accuracy")),
                  ("final greedy acc", lambda s: s.final.get("eval/greedy_accuracy")),
                  ("mean log w̄ over RL steps", lambda s: s.mean_log_wbar))


def paired_rows(a: dict, b: dict, label: str, *, n_boot: int, seed: int) -> list[str]:
  """Table rows of mean(a - b) over the seeds both have, per metric."""
  out = []
  common = sorted(set(a) & set(b))
  for name, get in PAIRED_METRICS:
    pairs = [(get(a[s]), get(b[s])) for s in common]
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
    if len(pairs) < 2:
      continue
    x, y = map(np.asarray, zip(*pairs))
    d = x - y
    lo, hi = stats.paired_bootstrap_ci(x, y, n_boot=n_boot, seed=seed)
    tlo, thi = stats.t_mean_ci(d)
    excl = "yes" if lo > 0 or hi < 0 else "no"
    out.append(f"| {label} | {name} | {len(d)} | {d.mean():+.3f} | "
               f"[{lo:+.3f}, {hi:+.3f}] | {excl} | [{tlo:+.3f}, {thi:+.3f}] |")
  return out


def paired_table(summ: dict, setting: str, optimizer: str, methods: list[Method], *,
                 n_boot: int, seed: int) -> list[str]:
  """Paired per-seed differences against garl_q0 and grpo."""
  lines = ["| comparison | metric | n pairs | mean diff | bootstrap 95% CI | CI excludes 0 "
           "| t 95% CI |", "|" + "---|" * 7]
  for base in ("garl_q0", "grpo"):
    if (setting, optimizer, base) not in summ:
      continue
    for m in methods:
      # Against GRPO only the methods at the study's lr (q=0 is already paired above).
      if m.name != base and (base == "garl_q0" or (m.lr_mult == 1.0 and m.name != "garl_q0")):
        lines += paired_rows(summ[(setting, optimizer, m.name)],
                             summ[(setting, optimizer, base)], f"{m.name} − {base}",
                             n_boot=n_boot, seed=seed)
  return lines if len(lines) > 2 else []


def grad_ratio_points(summ: dict, study: Study) -> list[dict]:
  """Per seed: step-1 grad-norm ratio of GARL q to q=0 and its M^-q w̄0^-q prediction."""
  pts = []
  for (setting, opt, name), ss in summ.items():
    m = Method.parse(name)
    base = summ.get((setting, opt, "garl_q0"))
    if m.family != "garl" or not m.q or m.lr_mult != 1.0 or base is None:
      continue
    for seed, s in ss.items():
      b = base.get(seed)
      if b is None or None in (s.grad1, b.grad1, s.log_wbar1) or not b.grad1:
        continue
      pred = study.group_size ** -m.q * math.exp(-m.q * s.log_wbar1)
      pts.append(dict(setting=setting, optimizer=opt, q=m.q, seed=seed,
                      measured=s.grad1 / b.grad1, predicted=pred,
                      dlog_w0=abs(s.log_wbar1 - b.log_wbar1) if b.log_wbar1 is not None
                      else None))
  return pts


def grad_ratio_table(pts: list[dict]) -> list[str]:
  """Geometric means over seeds of the measured and predicted ratios."""
  lines = ["| setting | optimizer | q | n | measured ratio (geo-mean) | predicted M^-q w̄0^-q "
           "(geo-mean) | measured / predicted: geo-mean [min, max] | max abs Δ log w̄0 "
           "vs q=0 |", "|" + "---|" * 8]
  keys = sorted({(p["setting"], p["optimizer"], p["q"]) for p in pts},
                key=lambda k: (SETTINGS.index(k[0]) if k[0] in SETTINGS else 9, k))
  for key in keys:
    g = [p for p in pts if (p["setting"], p["optimizer"], p["q"]) == key]
    meas, pred = np.array([p["measured"] for p in g]), np.array([p["predicted"] for p in g])
    r = meas / pred
    geo = lambda v: float(np.exp(np.log(v).mean()))
    dl = [p["dlog_w0"] for p in g if p["dlog_w0"] is not None]
    lines.append(f"| {key[0]} | {key[1]} | {key[2]:g} | {len(g)} | {geo(meas):.4g} | "
                 f"{geo(pred):.4g} | {geo(r):.3g} [{r.min():.3g}, {r.max():.3g}] | "
                 f"{f'{max(dl):.2g}' if dl else '—'} |")
  return lines


def escape_law(q: float, log_p0: float, p1: float = ESCAPE_W) -> float:
  """Gradient-flow time from w̄ = p0 to p1 under ṗ = p^{2-q}‖s‖², times ‖s‖².

  ∫_{p0}^{p1} p^{q-2} dp = (p0^{-(1-q)} - p1^{-(1-q)})/(1-q), log(p1/p0) at q=1: the
  objectives' Θ(p0^{-(1-q)}/(1-q)) law (its leading term for p0 ≪ p1) with the escape
  threshold p1 made explicit, so the curve is continuous at q=1.
  """
  if q == 1.0:
    return math.log(p1) - log_p0
  return (math.exp(-(1 - q) * log_p0) - p1 ** (q - 1)) / (1 - q)


def escape_vs_q(summ: dict, setting: str, optimizer: str) -> dict | None:
  """Per GARL q: escape (a) times, censored median and the fitted law.

  p0 is the warm-up w̄ (exp of the mean step-1 batch log w̄ over these runs); the scale
  C of T(q) = C·escape_law(q) is fitted to the largest q whose censored median is
  finite (q=1 when it escapes on most seeds). None for fewer than two q, or when p0 is
  already at the threshold (warm start).
  """
  runs = {m.q: summ[(setting, optimizer, m.name)] for m in
          (Method.parse(n) for (s, o, n) in summ if (s, o) == (setting, optimizer))
          if m.family == "garl" and m.q is not None and m.lr_mult == 1.0}
  logs = [s.log_wbar1 for ss in runs.values() for s in ss.values() if s.log_wbar1 is not None]
  if len(runs) < 2 or not logs or np.mean(logs) >= math.log(ESCAPE_W):
    return None  # a warm start at or above the threshold has nothing to escape
  log_p0 = float(np.mean(logs))
  rows = [dict(q=q, times=[s.escape_w for s in runs[q].values()],
               median=stats.censored_median([s.escape_w for s in runs[q].values()]))
          for q in sorted(runs)]
  fit = [r for r in rows if np.isfinite(r["median"])]
  fit_q = fit[-1]["q"] if fit else None
  scale = fit[-1]["median"] / escape_law(fit_q, log_p0) if fit else None
  for r in rows:
    r["predicted"] = scale * escape_law(r["q"], log_p0) if scale is not None else None
  return dict(log_p0=log_p0, fit_q=fit_q, scale=scale, rows=rows)


def escape_vs_q_lines(summ: dict, study: Study) -> list[str]:
  """One table per cold (setting, optimizer) with at least two GARL q."""
  lines = []
  for setting, opt in groups({k: None for k in summ}):
    law = escape_vs_q(summ, setting, opt)
    if law is None:
      continue
    fit = (f"C fitted at q={law['fit_q']:g}" if law["fit_q"] is not None else
           "no q escaped on most seeds: no fit")
    lines += [f"**{setting} · {opt}**: p0 = exp(mean step-1 log w̄) = "
              f"{math.exp(law['log_p0']):.3g} (log p0 = {law['log_p0']:.2f}); {fit}.", "",
              "| q | escape (a) | predicted C·law(q) |", "|---|---|---|"]
    for r in law["rows"]:
      lines.append(f"| {r['q']:g} | {fmt_escape(r['times'], study.steps)} | "
                   f"{fmt_num(r['predicted'], 1)} |")
    lines.append("")
  return lines


def fmt_lr(base: float | None, mult: float) -> str:
  return "—" if base is None else f"{base * mult:.3g}"


def lr_control_lines(data: dict, summ: dict, study: Study) -> list[str]:
  """GARL q=0 at lr x1, x1e2, x1e4 (and q=0.75 at x1 for reference)."""
  lines = []
  for setting, opt in groups(data):
    methods = _ordered(data, setting, opt)
    if not any(m.lr_mult != 1.0 for m in methods):
      continue
    keep = [m for m in methods if m.family == "garl" and m.q in (0.0, 0.75)]
    keep.sort(key=lambda m: (m.q, m.lr_mult))
    lines += [f"**{setting} · {opt}**", "",
              "| method | lr | n | escape (a) | escape (b) | final sampled acc | "
              "final log w̄ | step-1 grad norm |", "|" + "---|" * 8]
    for m in keep:
      ss = summ[(setting, opt, m.name)].values()
      lines.append(
          f"| {m.name} | {fmt_lr(study.lr.get(opt), m.lr_mult)} | {len(ss)} | "
          f"{fmt_escape([s.escape_w for s in ss], study.steps)} | "
          f"{fmt_escape([s.escape_acc for s in ss], study.steps)} | "
          f"{fmt_mean([s.final.get('eval/accuracy') for s in ss])} | "
          f"{fmt_mean([s.final_log_wbar for s in ss], 2, ci=False)} | "
          f"{fmt_mean([s.grad1 for s in ss], 3, ci=False)} |")
    lines.append("")
  return lines


def wall_text(wall) -> str:
  """study.json's wall_s in minutes: the last invocation, then any earlier ones.

  run_study.py resumes: each invocation records its own total and runs trained, and
  keeps the previous invocation's record under "previous_invocations".
  """
  if isinstance(wall, (int, float)):
    return f"{wall / 60:.1f} min"
  parts = []
  while isinstance(wall, dict) and isinstance(wall.get("total"), (int, float)):
    n = wall.get("runs_trained")
    parts.append(f"{wall['total'] / 60:.1f} min" + (f" ({n} runs trained)" if n is not None
                                                     else ""))
    wall = wall.get("previous_invocations")
  if not parts:
    return "not recorded"
  if len(parts) == 1:
    return parts[0]
  return f"{parts[0]}, after earlier invocations of {'; '.join(parts[1:])}"


def notes(study: Study, n_boot: int, seed: int) -> list[str]:
  return [
      "How to read: every step is an RL step (RL step 0 is the warm-up model's eval). "
      f"**Escape (a)** is the first RL step whose batch mean log w̄ is ≥ log {ESCAPE_W} "
      "(1-step resolution; GARL/PAFT log `loss/log_wbar`). GRPO has no w̄: its escape (a) "
      f"is the first RL step whose `reward/mean` is ≥ {ESCAPE_W}, the sampled exact-match "
      "rate, an unbiased estimate of w̄. **Escape (b)** is the paper's criterion: the "
      "first eval (every "
      f"{study.eval_every} RL steps, RL step 0 included) with non-zero sampled accuracy. "
      f"Both list k/n seeds escaped, the median with never-escaped seeds censored at the "
      f"budget ('>{study.steps}': they sort after every escaped seed, and the median is "
      f"'>{study.steps}' when the middle seed did not escape), and each seed's step in "
      "seed order.",
      "",
      "Accuracies are from the last eval (RL step "
      f"{study.steps}) as mean ± std (ddof=1) over seeds [Student-t 95% CI]. Paired "
      "differences are per seed (same warm start, same RL seed), mean of a − b with a "
      f"percentile bootstrap 95% CI ({n_boot} resamples of the per-seed differences, "
      f"numpy Generator seed {seed}) and, beside it, the t interval; with "
      f"{len(study.seeds)} seeds the bootstrap interval is the narrower (it cannot exceed the range of the "
      "differences), so read a bootstrap-only exclusion of 0 as weak.",
      ""]


def build_markdown(runs: epath.Path, study: Study, data: dict, summ: dict,
                   incomplete: list[str], plots: list[str], *, n_boot: int, seed: int) -> str:
  """The whole study_v2.md text; summ holds `summarize` of every seed of data."""
  lr = ", ".join(f"{o} {v:g}" for o, v in sorted(study.lr.items()) if v is not None)
  sgd = ("" if study.sgd_lr is None or study.lr.get("sgd") == study.sgd_lr else
         f" (sgd_lr {study.sgd_lr:g})")
  md = ["# Tsallis study v2: generated tables", "",
        f"Generated by `python experiments/tsallis_cold_start/report.py --runs {runs}` "
        f"from the runs of `{study.command}` (wall time {wall_text(study.wall_s)}). Do "
        "not edit: rerun the report.", "",
        f"Budget per run: {study.sft_steps} SFT warm-up steps, then {study.steps} RL steps "
        f"x {study.prompts_per_step} prompts x M = {study.group_size} rollouts; lr {lr}"
        f"{sgd}; eval every {study.eval_every} RL steps; seeds "
        f"{study.seeds}.", ""] + notes(study, n_boot, seed)
  for setting, opt in groups(data):
    md += [f"## {setting} · {opt}", ""] + main_table(data, summ, setting, opt, study) + [""]
    paired = paired_table(summ, setting, opt, _ordered(data, setting, opt),
                          n_boot=n_boot, seed=seed)
    md += (["Paired per-seed differences:", ""] + paired + [""]) if paired else []
  pts = grad_ratio_points(summ, study)
  md += ["## Step-1 gradient-norm ratio against Prop. 4.1", "",
         "`loss/grad_norm` at RL step 1 of GARL q over GARL q=0 on the same seed (same "
         "warm start), against M^-q w̄0^-q with w̄0 = exp(step-1 batch mean log w̄) of the "
         "q run; M^-q is Algorithm 1's normalisation. exp(mean log w̄) is the geometric "
         "mean over prompts, so the prediction is exact only when every prompt of the "
         "batch has the same w̄. The last column checks that both runs saw the same "
         "step-1 batch.", ""]
  md += (grad_ratio_table(pts) if pts else ["No GARL q>0 run with a q=0 partner."]) + [""]
  md += ["## Escape step (a) against q", "",
         "Predicted: T(q) = C·(p0^-(1-q) − 0.1^-(1-q))/(1−q) (log(0.1/p0) at q=1), the "
         "gradient-flow time from w̄ = p0 to the threshold 0.1 under ṗ = p^(2−q)‖s‖²; "
         "its leading term is the objectives' p0^-(1-q)/(1-q). It assumes plain gradient "
         "flow: SGD follows it, Adam's per-coordinate normalisation need not. Settings whose "
         f"warm-up w̄ is already ≥ {ESCAPE_W} (warm start) are left out.", ""]
  md += escape_vs_q_lines(summ, study)
  lr_lines = lr_control_lines(data, summ, study)
  if lr_lines:
    md += ["## GARL q=0 learning-rate control", ""] + lr_lines
  if plots:
    md += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
  if incomplete:
    md += ["## Incomplete runs (left out)", ""] + [f"- `{p}`" for p in incomplete] + [""]
  return "\n".join(md)


def main(argv: list[str] | None = None) -> str:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--runs", default="runs/tsallis_study_v2",
                  help="the directory run_study.py --out wrote")
  ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "docs", "results",
                                                "study_v2.md"),
                  help="the markdown file; plots go beside it")
  ap.add_argument("--n_boot", type=int, default=10000, help="bootstrap resamples")
  ap.add_argument("--seed", type=int, default=0, help="bootstrap Generator seed")
  ap.add_argument("--no_plots", action="store_true")
  a = ap.parse_args(argv)
  runs, out = epath.Path(a.runs), epath.Path(os.path.normpath(a.out))
  study = read_study(runs)
  data, incomplete = load(runs, study)
  if not data:
    raise SystemExit(f"no complete run under {runs} (expected "
                     "<setting>/<optimizer>/<method>/seed<s>/metrics.jsonl reaching step "
                     f"{study.budget}); incomplete: {incomplete}")
  out.parent.mkdir(parents=True, exist_ok=True)
  summ = {k: {s: summarize(r, study) for s, r in sorted(v.items())} for k, v in data.items()}
  plots = []
  if not a.no_plots:
    import report_plots  # beside this file: the plots need matplotlib, the tables do not
    plots = report_plots.draw_all(data, summ, study, out.parent)
  out.write_text(build_markdown(runs, study, data, summ, incomplete, plots,
                                n_boot=a.n_boot, seed=a.seed))
  print(f"wrote {out}" + (f" and {len(plots)} plots beside it" if plots else ""))
  return str(out)


if __name__ == "__main__":
  main()
