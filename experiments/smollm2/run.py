"""SmolLM2-135M-Instruct post-trained by RL on word problems and CHAMP (issue 40).

    python experiments/smollm2/run.py --size reduced --out runs/smollm2_reduced
    python experiments/smollm2/run.py --size full --out runs/smollm2_full
    python experiments/smollm2/run.py --report --out runs/smollm2_reduced

Matrix: task {word_problems, champ} x start {warm, cold} x method {grpo, garl_q0,
garl_q0.75, garl_q1, paft_q0.75} x seeds (>= 2), each run composed of the gin files
beside this one: base.gin + tasks/<task>.gin + starts/<start>.gin + methods/<method>.gin
+ sizes/<size>.gin. `--size reduced` defaults to the part of the matrix that fits
60 minutes on 2 CPU cores (`REDUCED_MATRIX`); `--tasks/--starts/--methods/--seeds`
choose any other part. docs/experiments.md ("SmolLM2") gives the sizing.

Each run starts from the instruct checkpoint (no SFT), is evaluated on held-out
problems never trained on before its first RL step (step 0) and after its last
(pass@1 = `eval/accuracy`, `eval/maj@8`, `eval/pass@8`, `eval/greedy_accuracy`), and
writes
  <out>/<task>/<start>/<method>/seed<s>/metrics.jsonl   the run's rows
  <out>/study.json    size, matrix, per-run wall seconds, the command
  <out>/report.md     (--report, also written after a study) before/after per run and
                      the mean change per (task, start, method) with a t 95% CI
RL seed s sets the sampling and evaluation keys: the methods of one seed start from
the same weights and are evaluated before training on the same samples. Runs execute
in `--jobs` worker processes; the study is resumable (a run with its final evaluation
row is skipped).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = ("word_problems", "champ")
STARTS = ("warm", "cold")
METHODS = ("grpo", "garl_q0", "garl_q0.75", "garl_q1", "paft_q0.75")
SIZES = ("reduced", "full")
# What `--size reduced` runs by default: word problems, both starts, GRPO and GARL
# q=0.75, 2 seeds (8 runs; the sizing is in docs/experiments.md "SmolLM2"); `--size
# full` runs all 40.
REDUCED_MATRIX = {"tasks": ("word_problems",), "starts": STARTS,
                  "methods": ("grpo", "garl_q0.75"), "seeds": (0, 1)}
FULL_MATRIX = {"tasks": TASKS, "starts": STARTS, "methods": METHODS, "seeds": (0, 1)}
EVAL_KEYS = ("eval/accuracy", "eval/maj@8", "eval/pass@8", "eval/greedy_accuracy")


def gin_files(task: str, start: str, method: str, size: str) -> list[str]:
  """The experiment files of one run, in the order they are parsed."""
  for name, value, allowed in (("task", task, TASKS), ("start", start, STARTS),
                               ("method", method, METHODS), ("size", size, SIZES)):
    if value not in allowed:
      raise ValueError(f"unknown {name} {value!r}; choose one of {allowed}")
  return [os.path.join(HERE, "base.gin"), os.path.join(HERE, "tasks", f"{task}.gin"),
          os.path.join(HERE, "starts", f"{start}.gin"),
          os.path.join(HERE, "methods", f"{method}.gin"),
          os.path.join(HERE, "sizes", f"{size}.gin")]


def experiment(files: list[str], bindings: list[str]):
  """(Experiment, resolved gin text) of `files` then `bindings`, validated."""
  import gin
  from reasoning_jax.training.config import Experiment
  from reasoning_jax.training.validate import validate_experiment
  # The bindings are dropped once the Experiment is built: gin-configurable configs
  # read them at construction, so left bound they would change every later one in
  # this process (a test's, another run's).
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings(files, bindings)
    exp = Experiment()
    validate_experiment(exp)
    return exp, gin.operative_config_str()
  finally:
    gin.clear_config()


def work(workdir: str, files: list[str], bindings: list[str]) -> float:
  """Train one run in this worker process; returns its wall seconds."""
  import logging
  logging.getLogger("reasoning_jax").setLevel(logging.WARNING)
  from reasoning_jax.training.loop import Trainer
  t0 = time.time()
  exp, text = experiment(files, bindings)
  Trainer(exp, workdir, text).run()
  return time.time() - t0


def rows(path: str) -> list[dict]:
  """The JSON rows of a metrics.jsonl ([] when absent)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def before_after(workdir: str) -> tuple[dict, dict] | None:
  """(first, last) evaluation rows of a finished run, None if it has not finished."""
  evals = [r for r in rows(os.path.join(workdir, "metrics.jsonl")) if "eval/accuracy" in r]
  if len(evals) < 2 or evals[0]["step"] != 0:
    return None
  return evals[0], evals[-1]


def plan(a) -> list[tuple[str, str, str, int]]:
  """Every (task, start, method, seed), seed-major so a partial study is balanced."""
  return [(t, st, m, s) for s in a.seeds for t in a.tasks for st in a.starts
          for m in a.methods]


def run_dir(out: str, task: str, start: str, method: str, seed: int) -> str:
  return os.path.join(out, task, start, method, f"seed{seed}")


def run_study(a) -> dict[str, float]:
  """Trains every planned run that has not finished; returns wall seconds per run."""
  todo = []
  for task, start, method, seed in plan(a):
    wd = run_dir(a.out, task, start, method, seed)
    total = experiment(gin_files(task, start, method, a.size), a.gin_param)[0].total_steps
    done = before_after(wd)
    if done is not None and done[1]["step"] == total:
      continue
    todo.append((wd, gin_files(task, start, method, a.size),
                 [*a.gin_param, f"RunConfig.seed = {seed}"]))
  wall: dict[str, float] = {}
  t0 = time.time()
  ctx = multiprocessing.get_context("spawn")  # never fork a process that ran jax
  with cf.ProcessPoolExecutor(a.jobs, mp_context=ctx, max_tasks_per_child=8) as pool:
    futures = {pool.submit(work, *job): job[0] for job in todo}
    for fut in cf.as_completed(futures):
      name = os.path.relpath(futures[fut], a.out)
      wall[name] = fut.result()
      print(f"[{time.time() - t0:7.0f}s] done {name} ({wall[name]:.0f}s)", flush=True)
  return wall


def report(out: str) -> str:
  """Markdown: before/after per run and the mean change per (task, start, method)."""
  from reasoning_jax.evaluation.stats import t_mean_ci
  lines = ["| task | start | method | seed | " + " | ".join(
      f"{k[5:]} before -> after" for k in EVAL_KEYS) + " |",
           "|---|---|---|---|" + "---|" * len(EVAL_KEYS)]
  deltas: dict[tuple, dict[str, list[float]]] = {}
  for task in TASKS:
    for start in STARTS:
      for method in METHODS:
        for seed in range(100):
          ba = before_after(run_dir(out, task, start, method, seed))
          if ba is None:
            continue
          b, f = ba
          lines.append(f"| {task} | {start} | {method} | {seed} | " + " | ".join(
              f"{b.get(k, math.nan):.3f} -> {f.get(k, math.nan):.3f}" for k in EVAL_KEYS)
              + " |")
          d = deltas.setdefault((task, start, method), {k: [] for k in EVAL_KEYS})
          for k in EVAL_KEYS:
            d[k].append(f.get(k, math.nan) - b.get(k, math.nan))
  lines += ["", "Mean change (after - before) over seeds, t 95% CI (n >= 2):", "",
            "| task | start | method | n | " + " | ".join(k[5:] for k in EVAL_KEYS) + " |",
            "|---|---|---|---|" + "---|" * len(EVAL_KEYS)]
  for (task, start, method), d in deltas.items():
    cells = []
    for k in EVAL_KEYS:
      x = d[k]
      mean = sum(x) / len(x)
      ci = f" [{t_mean_ci(x)[0]:+.3f}, {t_mean_ci(x)[1]:+.3f}]" if len(x) >= 2 else ""
      cells.append(f"{mean:+.3f}{ci}")
    n = len(d[EVAL_KEYS[0]])
    lines.append(f"| {task} | {start} | {method} | {n} | " + " | ".join(cells)
                 + " |")
  return "\n".join(lines) + "\n"


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--size", choices=SIZES, default="reduced")
  ap.add_argument("--out", default="")
  ap.add_argument("--tasks", nargs="+", choices=TASKS)
  ap.add_argument("--starts", nargs="+", choices=STARTS)
  ap.add_argument("--methods", nargs="+", choices=METHODS)
  ap.add_argument("--seeds", type=int, nargs="+")
  ap.add_argument("--jobs", type=int, default=1,
                  help="worker processes (one uses every core of a CPU or the GPU)")
  ap.add_argument("--gin_param", action="append", default=[],
                  help="extra binding for every run")
  ap.add_argument("--report", action="store_true", help="only write <out>/report.md")
  a = ap.parse_args()
  a.out = a.out or f"runs/smollm2_{a.size}"
  default = REDUCED_MATRIX if a.size == "reduced" else FULL_MATRIX
  for key in ("tasks", "starts", "methods", "seeds"):
    setattr(a, key, tuple(getattr(a, key) or default[key]))
  os.makedirs(a.out, exist_ok=True)
  if not a.report:
    t0 = time.time()
    wall = run_study(a)
    path = os.path.join(a.out, "study.json")
    old = json.load(open(path)) if os.path.exists(path) else {}
    with open(path, "w") as f:
      json.dump({"size": a.size, "tasks": a.tasks, "starts": a.starts,
                 "methods": a.methods, "seeds": a.seeds, "gin_param": a.gin_param,
                 "wall_s": {"total": time.time() - t0, "per_run": wall,
                            "previous_invocations": old.get("wall_s")},
                 "command": " ".join([os.path.basename(sys.executable), *sys.argv])},
                f, indent=1)
  text = report(a.out)
  with open(os.path.join(a.out, "report.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()
