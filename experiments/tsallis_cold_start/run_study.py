"""The Tsallis cold-start study (issue 8): GRPO vs GARL q-sweep vs PAFT, cold and warm.

    python experiments/tsallis_cold_start/run_study.py --out runs/tsallis_cold_start
    python experiments/tsallis_cold_start/report.py --runs runs/tsallis_cold_start

For each warm-up seed the SFT warm start runs ONCE (`sft/seed{s}`, RL steps = 0); its
checkpoint at step `SFTConfig.steps` is copied into every RL run of that seed, and the
trainer resumes from it (the phase follows from the step; the checkpoint already holds
a fresh RL optimizer state). Every method therefore starts from bit-identical weights
and differs only in its RL objective. The warmed-up model is evaluated once per seed
and setting (`reasoning-jax eval`), and that row is written at the SFT step of each RL
run's metrics.jsonl, so each run's curve starts at the warm-up accuracy.

RL seeds are separate from warm-up seeds (`RunConfig.seed = 1000 + s` for RL). The
study is resumable: a finished run (final eval row present) is skipped, a partial one
is restarted from its copied checkpoint. Timings go to `<out>/timings.json`.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "base.gin")
SETTINGS = {s: os.path.join(HERE, f"{s}.gin") for s in ("cold", "warm", "cold2")}


def _method(objective: str, **over) -> list[str]:
  pairs = ", ".join(f"({k!r}, {v!r})" for k, v in over.items())
  return [f'RLConfig.objective = "{objective}"',
          f"RLConfig.objective_overrides = ({pairs},)" if over else
          "RLConfig.objective_overrides = ()"]


# GRPO's default KL (beta 0.04) is zeroed: the Tsallis objectives have none, and a
# reference copy would change the checkpoint layout the shared warm-up relies on.
METHODS = {
    "grpo": _method("grpo", kl_coef=0.0),
    **{f"garl_q{q}": _method("garl", q=q) for q in (0.0, 0.25, 0.5, 0.75, 1.0)},
    "paft_q0.75": _method("paft", q=0.75),
}


def _cli(args: list[str], log: str) -> str:
  """Run `reasoning-jax ARGS` in a subprocess; returns stdout, raises with the log."""
  with open(log, "w") as f:
    p = subprocess.run([sys.executable, "-m", "reasoning_jax.cli", *args],
                       stdout=subprocess.PIPE, stderr=f, text=True)
  if p.returncode:
    raise RuntimeError(f"reasoning-jax {args[0]} failed (rc {p.returncode}); see {log}")
  return p.stdout


def _rows(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  return [json.loads(l) for l in open(path) if l.strip()]


def _finished(workdir: str, total: int) -> bool:
  return any(r["step"] == total and "eval/accuracy" in r
             for r in _rows(os.path.join(workdir, "metrics.jsonl")))


def _gin(setting: str, extra: list[str]) -> list[str]:
  out = ["--gin_file", BASE, "--gin_file", SETTINGS[setting]]
  for p in extra:
    out += ["--gin_param", p]
  return out


def warm_up(out: str, seed: int, sft_steps: int, extra: list[str]) -> str:
  """The seed's SFT run (once); returns its workdir."""
  wd = os.path.join(out, "sft", f"seed{seed}")
  if not os.path.isdir(os.path.join(wd, "checkpoints", str(sft_steps))):
    shutil.rmtree(wd, ignore_errors=True)
    os.makedirs(wd)
    _cli(["train", *_gin("cold", extra + METHODS["garl_q0.75"] + [
        "RLConfig.steps = 0", f"RunConfig.seed = {seed}"]), "--workdir", wd],
         os.path.join(wd, "..", f"seed{seed}.log"))
  return wd


def seed_run(sft_wd: str, wd: str, sft_steps: int, head: list[dict]) -> None:
  """Put the warm-up checkpoint and its metric rows into a fresh RL workdir."""
  shutil.rmtree(wd, ignore_errors=True)
  os.makedirs(os.path.join(wd, "checkpoints"))
  shutil.copytree(os.path.join(sft_wd, "checkpoints", str(sft_steps)),
                  os.path.join(wd, "checkpoints", str(sft_steps)))
  with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
    for r in head:
      f.write(json.dumps(r) + "\n")


def warm_eval(out: str, sft_wd: str, setting: str, seed: int, sft_steps: int,
              extra: list[str]) -> dict:
  """Held-out eval of the warmed-up model in this setting's answer format (cached)."""
  path = os.path.join(out, "warm_eval", f"{setting}_seed{seed}.json")
  if os.path.exists(path):
    return json.load(open(path))
  wd = os.path.join(out, "warm_eval", f"{setting}_seed{seed}")
  seed_run(sft_wd, wd, sft_steps, [])
  text = _cli(["eval", *_gin(setting, extra + [f"RunConfig.seed = {1000 + seed}"]),
               "--workdir", wd], wd + ".log")
  row = {"step": sft_steps}
  for line in text.splitlines():
    k, _, v = line.partition(": ")
    if k.startswith("eval/"):
      row[k] = float(v)
  shutil.rmtree(wd)
  with open(path, "w") as f:
    json.dump(row, f)
  return row


def rl_run(out: str, setting: str, method: str, seed: int, sft_wd: str, sft_steps: int,
           total: int, head: list[dict], extra: list[str]) -> tuple[str, float]:
  """One RL run from the shared warm-up checkpoint; returns (workdir, wall seconds)."""
  wd = os.path.join(out, setting, method, f"seed{seed}")
  if _finished(wd, total):
    return wd, 0.0
  seed_run(sft_wd, wd, sft_steps, head)
  t = time.time()
  _cli(["train", *_gin(setting, extra + METHODS[method] + [
      f"RunConfig.seed = {1000 + seed}"]), "--workdir", wd], wd + ".log")
  shutil.rmtree(os.path.join(wd, "checkpoints"), ignore_errors=True)  # 5 MB each
  return wd, time.time() - t


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default="runs/tsallis_cold_start")
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--settings", nargs="+", default=["cold", "warm"], choices=SETTINGS)
  ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
  ap.add_argument("--jobs", type=int, default=2, help="RL runs in parallel")
  ap.add_argument("--gin_param", action="append", default=[],
                  help="extra binding for every run (e.g. 'RLConfig.adam_eps = 1e-4'); "
                       "SFT/model/task bindings change the shared warm-up too")
  a = ap.parse_args()
  import gin  # the study's step counts, read from the same files the runs use
  from reasoning_jax.training.config import Experiment
  gin.parse_config_files_and_bindings([BASE], a.gin_param)
  exp = Experiment()
  sft_steps, total = exp.sft.steps, exp.total_steps
  os.makedirs(a.out, exist_ok=True)
  t0 = time.time()
  timings: dict[str, float] = {}
  for seed in a.seeds:
    ts = time.time()
    sft_wd = warm_up(a.out, seed, sft_steps, a.gin_param)
    timings[f"sft/seed{seed}"] = time.time() - ts
    sft_rows = [r for r in _rows(os.path.join(sft_wd, "metrics.jsonl"))
                if r["step"] <= sft_steps and "eval/accuracy" not in r]
    jobs = []
    with cf.ThreadPoolExecutor(a.jobs) as pool:
      for setting in a.settings:
        head = sft_rows + [warm_eval(a.out, sft_wd, setting, seed, sft_steps, a.gin_param)]
        for m in a.methods:
          jobs.append(pool.submit(rl_run, a.out, setting, m, seed, sft_wd, sft_steps,
                                  total, head, a.gin_param))
      for j in cf.as_completed(jobs):
        wd, wall = j.result()
        timings[os.path.relpath(wd, a.out)] = wall
        print(f"[{time.time() - t0:7.0f}s] done {wd} ({wall:.0f}s)", flush=True)
  timings["total"] = time.time() - t0
  with open(os.path.join(a.out, "timings.json"), "w") as f:
    json.dump(timings, f, indent=1)
  print(f"study finished in {timings['total']:.0f}s; now run "
        f"python experiments/tsallis_cold_start/report.py --runs {a.out}")


if __name__ == "__main__":
  main()
