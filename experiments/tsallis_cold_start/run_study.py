"""The Tsallis cold-start study v2 (issue 40): GARL q x cold start x optimizer x seeds.

    python experiments/tsallis_cold_start/run_study.py --out runs/tsallis_v2 --jobs 2

Matrix: GARL q in {0, 0.5, 0.75, 1} x setting {cold1, cold2, reverse, warm} (the gin
files beside this one) x optimizer {adam (AdamW, eps 1e-8), sgd (momentum 0.9, no
clipping, learning rate picked once)} x seeds; GRPO (KL 0) and PAFT q=0.75 with Adam
(`--sgd_baselines` adds them with SGD); and a learning-rate control, GARL q=0 with
Adam at the base learning rate x1e2 and x1e4, in cold1 and warm.

Output (read by report.py; do not change it):
  <out>/<setting>/<optimizer>/<method>/seed<s>/metrics.jsonl   one run's rows
  <out>/study.json      steps, sft_steps, group_size, prompts_per_step, eval_every,
                        seeds, sgd_lr, lr {optimizer: base lr}, wall_s, command
  <out>/sgd_lr.json     the SGD learning-rate pick (reused when present)
Each run's metrics.jsonl starts with its warm-up's SFT rows and the warmed-up model's
held-out evaluation row at the SFT step, in that run's setting.

Warm-up sharing: one SFT run per seed (`sft/seed<s>`, RL steps 0, RunConfig.seed = s);
every RL run of the seed starts from a copy of its checkpoint at the SFT step, so all
methods start from bit-identical weights (RL seed 1000 + s). That checkpoint holds a
fresh AdamW state for RL; the SGD runs start from `sft/seed<s>_sgd`, the same params
with a fresh SGD state, which is exact because the RL state at the SFT/RL boundary is
by construction the optimizer's init (docs/decisions/0030).

SGD learning rate: `--pick_sgd_lr` (also run first by the full study when
`<out>/sgd_lr.json` is missing) trains GARL q=1 in cold1 with SGD at each `--sgd_grid`
value on seed 0's warm-up with RL seed 2000 (not a study seed) and picks the value
with the highest mean `loss/log_wbar` over the last 10 steps (non-finite runs out).

Runs execute in `--jobs` worker processes that each train many runs in turn (one jax
import and an in-memory cache per worker; compiled programs also come from the
persistent compilation cache). The study is resumable: a run with its final
evaluation row is skipped.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import shutil
import sys
import time
from typing import NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "base.gin")
SETTINGS = ("cold1", "cold2", "reverse", "warm")
Q_VALUES = (0, 0.5, 0.75, 1)
LR_CONTROL = {"garl_q0_lr1e2": 1e2, "garl_q0_lr1e4": 1e4}  # x the Adam learning rate
LR_CONTROL_SETTINGS = ("cold1", "warm")
PICK_SEED, PICK_RL_SEED = 0, 2000


def _objective(name: str, **over) -> list[str]:
  pairs = ", ".join(f"({k!r}, {v!r})" for k, v in over.items())
  return [f'RLConfig.objective = "{name}"',
          f"RLConfig.objective_overrides = ({pairs},)" if over else
          "RLConfig.objective_overrides = ()"]


# GRPO's default KL (beta 0.04) is zeroed: the Tsallis objectives have none, and a
# reference copy would change the checkpoint layout the shared warm-up relies on.
METHODS = {
    "grpo": _objective("grpo", kl_coef=0.0),
    **{f"garl_q{q}": _objective("garl", q=float(q)) for q in Q_VALUES},
    "paft_q0.75": _objective("paft", q=0.75),
    **{m: _objective("garl", q=0.0) for m in LR_CONTROL},
}


def optimizer_bindings(opt: str, sgd_lr: float | None) -> list[str]:
  """Adam keeps base.gin's settings (clip 1, eps 1e-8); SGD turns clipping off so it
  cannot cap the P^-q amplification the comparison is about."""
  if opt == "adam":
    return ['RLConfig.optimizer = "adamw"', "RLConfig.adam_eps = 1e-8"]
  return ['RLConfig.optimizer = "sgd"', "RLConfig.momentum = 0.9",
          "RLConfig.grad_clip = 0.0", f"RLConfig.learning_rate = {sgd_lr!r}"]


class Job(NamedTuple):
  """One train (or warm-up evaluation) in a worker: gin files, bindings, directory."""
  kind: str  # "train", "eval" (warm-up model in a setting) or "sgd_state"
  workdir: str
  files: tuple
  bindings: tuple
  source: str = ""  # eval / sgd_state: the warm-up run directory
  source_bindings: tuple = ()  # sgd_state: the bindings the warm-up ran with
  head: str = ""  # train from `source`: the JSON rows its metrics.jsonl starts with


def _files(setting: str) -> tuple:
  return (BASE, os.path.join(HERE, f"{setting}.gin"))


def _experiment(job: Job):
  import gin
  from reasoning_jax.training.config import Experiment
  gin.clear_config()
  try:  # unbound afterwards: gin-configurable configs read bindings at construction
    gin.parse_config_files_and_bindings(list(job.files), list(job.bindings))
    return Experiment(), gin.operative_config_str()
  finally:
    gin.clear_config()


def _sgd_state(job: Job, exp, sft_steps: int) -> None:
  """The warm-up checkpoint with a fresh SGD state: params and iterators copied, the
  RL optimizer state re-initialised (it is the init at the SFT/RL boundary)."""
  import jax
  from reasoning_jax import sharding as rjs
  from reasoning_jax.training.build import build_optimizers
  from reasoning_jax.training.checkpoint import CheckpointManager
  from reasoning_jax.training.loop import Trainer
  source = _experiment(job._replace(bindings=job.source_bindings))[0]
  t = Trainer(source, job.source, read_only=True)
  try:
    if t.resume() != sft_steps:
      raise RuntimeError(f"{job.source} has no checkpoint at the SFT step {sft_steps}")
    tx = build_optimizers(exp)[1]
    opt = rjs.init_opt_state(tx, t.params, t.parts.param_shardings, t.mesh)
    meta = t.ckpt.restore_meta(sft_steps)
    shutil.rmtree(job.workdir, ignore_errors=True)
    with CheckpointManager(job.workdir, max_to_keep=1) as ck:
      ck.save(sft_steps, {"params": t.params, "opt_state": opt}, meta)
      ck.wait()
    jax.block_until_ready(opt)
  finally:
    t.close(plot=False)


def work(job: Job) -> tuple[dict, float]:
  """Run one job in this worker process; returns (result row, wall seconds)."""
  import logging
  logging.getLogger("reasoning_jax").setLevel(logging.ERROR)
  from reasoning_jax.training.loop import Trainer
  t0 = time.time()
  exp, text = _experiment(job)
  row: dict = {}
  if job.kind == "train":
    if job.source:
      seed_run(job.source, job.workdir, exp.sft.steps, json.loads(job.head))
    Trainer(exp, job.workdir, text).run()
    if job.source:  # the final checkpoint (params + optimizer state) is not studied
      shutil.rmtree(os.path.join(job.workdir, "checkpoints"), ignore_errors=True)
  elif job.kind == "eval":
    t = Trainer(exp, job.source, text, read_only=True)
    try:
      row = {"step": t.resume(), **t.evaluate()}
    finally:
      t.close(plot=False)
  else:
    _sgd_state(job, exp, exp.sft.steps)
  return row, time.time() - t0


# ---------------------------------------------------------------------- run files

def _rows(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  return [json.loads(line) for line in open(path) if line.strip()]


def _finished(workdir: str, total: int) -> bool:
  return any(r["step"] == total and "eval/accuracy" in r
             for r in _rows(os.path.join(workdir, "metrics.jsonl")))


def seed_run(src: str, wd: str, sft_steps: int, head: list[dict]) -> None:
  """A fresh RL run directory: the warm-up checkpoint and the head metric rows."""
  shutil.rmtree(wd, ignore_errors=True)
  os.makedirs(os.path.join(wd, "checkpoints"))
  shutil.copytree(os.path.join(src, "checkpoints", str(sft_steps)),
                  os.path.join(wd, "checkpoints", str(sft_steps)))
  with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
    for r in head:
      f.write(json.dumps(r) + "\n")


def plan(seeds, settings, sgd_baselines: bool) -> list[tuple[str, str, str, int]]:
  """Every (setting, optimizer, method, seed) of the study, seed-major."""
  garl = [f"garl_q{q}" for q in Q_VALUES]
  out = []
  for s in seeds:
    for setting in settings:
      adam = ["grpo", *garl, "paft_q0.75"]
      adam += list(LR_CONTROL) if setting in LR_CONTROL_SETTINGS else []
      sgd = (["grpo"] if sgd_baselines else []) + garl + (
          ["paft_q0.75"] if sgd_baselines else [])
      out += [(setting, "adam", m, s) for m in adam]
      out += [(setting, "sgd", m, s) for m in sgd]
  return out


# ---------------------------------------------------------------------- the study

class Study:
  """Schedules the study's jobs on a worker pool as their inputs become ready:
  warm-up per seed -> (SGD state, warm-up evaluations) -> the seed's runs; the SGD
  runs wait for the learning-rate pick."""

  def __init__(self, a, exp):
    self.a, self.out = a, a.out
    self.sft_steps, self.total = exp.sft.steps, exp.total_steps
    self.adam_lr = exp.rl.learning_rate
    self.todo = plan(a.seeds, a.settings, a.sgd_baselines)
    self.use_sgd = any(opt == "sgd" for _, opt, _, _ in self.todo) or a.pick_sgd_lr
    self.sgd_lr = self._load_pick()
    self.pending: dict = {}
    self.waiting: dict[int, int] = {}  # seed -> jobs left before its runs start
    self.deferred: list = []  # SGD runs waiting for the pick
    self.picks: dict[float, str] = {}
    self.wall: dict[str, float] = {}
    self.t0 = time.time()

  # -- helpers
  def _extra(self, *more: str) -> tuple:
    return tuple(self.a.gin_param) + more

  def _sft_dir(self, seed: int, opt: str = "adam") -> str:
    return os.path.join(self.out, "sft", f"seed{seed}" + ("_sgd" if opt == "sgd" else ""))

  def _sft_bindings(self, seed: int) -> tuple:
    return self._extra(*METHODS["garl_q0.75"], *optimizer_bindings("adam", None),
                       "RLConfig.steps = 0", f"RunConfig.seed = {seed}")

  def _load_pick(self) -> float | None:
    path = os.path.join(self.out, "sgd_lr.json")
    return json.load(open(path))["sgd_lr"] if os.path.exists(path) else None

  def submit(self, pool, job: Job, tag: tuple) -> None:
    self.pending[pool.submit(work, job)] = tag

  # -- stages
  def start(self, pool) -> None:
    seeds = [PICK_SEED] if self.a.pick_sgd_lr else self.a.seeds
    if self.use_sgd and self.sgd_lr is None and PICK_SEED not in seeds:
      seeds = [PICK_SEED, *seeds]
    for seed in seeds:
      wd = self._sft_dir(seed)
      if os.path.isdir(os.path.join(wd, "checkpoints", str(self.sft_steps))):
        self.after_sft(pool, seed)
        continue
      shutil.rmtree(wd, ignore_errors=True)
      self.submit(pool, Job("train", wd, _files("cold1"), self._sft_bindings(seed)),
                  ("sft", seed))

  def after_sft(self, pool, seed: int) -> None:
    jobs = []
    sgd_wd = self._sft_dir(seed, "sgd")
    if self.use_sgd and not os.path.isdir(
        os.path.join(sgd_wd, "checkpoints", str(self.sft_steps))):
      # The state's layout does not depend on the learning rate (constant schedule).
      jobs.append((Job("sgd_state", sgd_wd, _files("cold1"), self._extra(
          *METHODS["garl_q0.75"], *optimizer_bindings("sgd", 1.0)),
          source=self._sft_dir(seed), source_bindings=self._sft_bindings(seed)),
          ("sgd_state", seed)))
    if not self.a.pick_sgd_lr:
      for setting in self.a.settings:
        if not os.path.exists(self._warm_path(setting, seed)):
          jobs.append((Job("eval", "", _files(setting), self._extra(
              *METHODS["garl_q0.75"], *optimizer_bindings("adam", None),
              f"RunConfig.seed = {1000 + seed}"), source=self._sft_dir(seed)),
              ("eval", seed, setting)))
    self.waiting[seed] = len(jobs)
    for job, tag in jobs:
      self.submit(pool, job, tag)
    if not jobs:
      self.seed_ready(pool, seed)

  def _warm_path(self, setting: str, seed: int) -> str:
    return os.path.join(self.out, "warm_eval", f"{setting}_seed{seed}.json")

  def seed_ready(self, pool, seed: int) -> None:
    if seed == PICK_SEED and self.use_sgd and self.sgd_lr is None:
      self.submit_picks(pool)
    if self.a.pick_sgd_lr:
      return
    for setting, opt, method, s in self.todo:
      if s != seed:
        continue
      if opt == "sgd" and self.sgd_lr is None:
        self.deferred.append((setting, opt, method, s))
      else:
        self.submit_run(pool, setting, opt, method, s)

  def submit_picks(self, pool) -> None:
    for lr in self.a.sgd_grid:
      wd = os.path.join(self.out, "pick_sgd_lr", f"lr{lr:g}")
      self.picks[lr] = wd
      if _finished(wd, self.total):
        continue
      self.submit(pool, Job("train", wd, _files("cold1"), self._extra(
          *METHODS["garl_q1"], *optimizer_bindings("sgd", lr),
          f"RunConfig.seed = {PICK_RL_SEED}"), source=self._sft_dir(PICK_SEED, "sgd"),
          head="[]"), ("pick", lr))
    if not any(tag[0] == "pick" for tag in self.pending.values()):
      self.choose_lr(pool)

  def choose_lr(self, pool) -> None:
    """The grid value with the highest mean log w-bar over the last 10 RL steps."""
    import math
    scores = {}
    for lr, wd in self.picks.items():
      vals = [r["loss/log_wbar"] for r in _rows(os.path.join(wd, "metrics.jsonl"))
              if "loss/log_wbar" in r and r["step"] > self.total - 10]
      ok = vals and all(math.isfinite(v) for v in vals)
      scores[lr] = sum(vals) / len(vals) if ok else None
    good = {lr: v for lr, v in scores.items() if v is not None}
    if not good:
      raise RuntimeError(f"every SGD learning rate in {self.a.sgd_grid} diverged: "
                         f"{scores}; pass another --sgd_grid")
    self.sgd_lr = max(good, key=lambda lr: (good[lr], -lr))
    with open(os.path.join(self.out, "sgd_lr.json"), "w") as f:
      json.dump({"sgd_lr": self.sgd_lr, "grid": list(self.a.sgd_grid),
                 "mean_log_wbar_last10": {f"{k:g}": v for k, v in scores.items()},
                 "criterion": "highest mean loss/log_wbar over the last 10 RL steps; "
                              "GARL q=1, cold1, SGD momentum 0.9, no clipping, warm-up "
                              f"seed {PICK_SEED}, RL seed {PICK_RL_SEED}"}, f, indent=1)
    self.log(f"SGD learning rate {self.sgd_lr:g} (mean log w-bar {scores})")
    for spec in self.deferred:
      self.submit_run(pool, *spec)
    self.deferred = []

  def submit_run(self, pool, setting: str, opt: str, method: str, seed: int) -> None:
    wd = os.path.join(self.out, setting, opt, method, f"seed{seed}")
    if _finished(wd, self.total):
      return
    more = [*METHODS[method], *optimizer_bindings(opt, self.sgd_lr)]
    if method in LR_CONTROL:
      more.append(f"RLConfig.learning_rate = {self.adam_lr * LR_CONTROL[method]!r}")
    sft_rows = [r for r in _rows(os.path.join(self._sft_dir(seed), "metrics.jsonl"))
                if r["step"] <= self.sft_steps and "eval/accuracy" not in r]
    head = sft_rows + [json.load(open(self._warm_path(setting, seed)))]
    self.submit(pool, Job("train", wd, _files(setting), self._extra(
        *more, f"RunConfig.seed = {1000 + seed}"), source=self._sft_dir(seed, opt),
        head=json.dumps(head)), ("run", wd))

  # -- the event loop
  def log(self, text: str) -> None:
    print(f"[{time.time() - self.t0:7.0f}s] {text}", flush=True)

  def done(self, pool, tag: tuple, row: dict, wall: float) -> None:
    kind = tag[0]
    if kind == "sft":
      self.wall[f"sft/seed{tag[1]}"] = wall
      self.after_sft(pool, tag[1])
    elif kind in ("sgd_state", "eval"):
      if kind == "eval":
        os.makedirs(os.path.dirname(self._warm_path(tag[2], tag[1])), exist_ok=True)
        with open(self._warm_path(tag[2], tag[1]), "w") as f:
          json.dump(row, f)
      self.wall[f"{kind}/seed{tag[1]}" + (f"/{tag[2]}" if kind == "eval" else "")] = wall
      self.waiting[tag[1]] -= 1
      if not self.waiting[tag[1]]:
        self.seed_ready(pool, tag[1])
    elif kind == "pick":
      self.wall[f"pick_sgd_lr/lr{tag[1]:g}"] = wall
      if not any(t[0] == "pick" for t in self.pending.values()):
        self.choose_lr(pool)
    else:
      self.wall[os.path.relpath(tag[1], self.out)] = wall
    self.log(f"done {'/'.join(map(str, tag))} ({wall:.0f}s)")

  def run(self) -> None:
    # Spawn: never fork a process that ran jax. Workers live for the whole study:
    # Python 3.11's max_tasks_per_child hangs the pool when workers retire together.
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(self.a.jobs, mp_context=ctx) as pool:
      self.start(pool)
      while self.pending:
        finished, _ = cf.wait(list(self.pending), return_when=cf.FIRST_COMPLETED)
        for fut in finished:
          tag = self.pending.pop(fut)
          row, wall = fut.result()
          self.done(pool, tag, row, wall)


def write_summary(study: Study, exp, argv: list[str]) -> dict:
  """`<out>/study.json` (the report's contract; keys listed in the module docstring)."""
  runs = {k: v for k, v in study.wall.items() if k.split("/")[0] in SETTINGS}
  total = time.time() - study.t0
  path = os.path.join(study.out, "study.json")
  old = json.load(open(path)) if os.path.exists(path) else {}
  summary = {
      "steps": exp.rl.steps, "sft_steps": exp.sft.steps, "group_size": exp.rl.group_size,
      "prompts_per_step": exp.rl.prompts_per_step, "eval_every": exp.eval.every,
      "seeds": list(study.a.seeds), "settings": list(study.a.settings),
      "sgd_lr": study.sgd_lr, "lr": {"adam": study.adam_lr, "sgd": study.sgd_lr},
      "wall_s": {"total": total, "runs_trained": len(runs),
                 "run_mean": sum(runs.values()) / len(runs) if runs else None,
                 "per_job": study.wall, "previous_invocations": old.get("wall_s")},
      "command": " ".join([os.path.basename(sys.executable), *argv]),
  }
  with open(path, "w") as f:
    json.dump(summary, f, indent=1)
  return summary


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default="runs/tsallis_v2")
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
  ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
  ap.add_argument("--jobs", type=int, default=2, help="worker processes")
  ap.add_argument("--pick_sgd_lr", action="store_true",
                  help="only pick the SGD learning rate (written to <out>/sgd_lr.json)")
  ap.add_argument("--sgd_grid", type=float, nargs="+", default=[3e-3, 1e-2, 3e-2])
  ap.add_argument("--sgd_baselines", action="store_true",
                  help="also run GRPO and PAFT q=0.75 with SGD")
  ap.add_argument("--gin_param", action="append", default=[],
                  help="extra binding for every run; SFT/model/task bindings change the "
                       "shared warm-up too")
  a = ap.parse_args()
  import gin
  from reasoning_jax.training.config import Experiment
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([BASE], a.gin_param)
    exp = Experiment()
  finally:
    gin.clear_config()
  os.makedirs(a.out, exist_ok=True)
  study = Study(a, exp)
  study.run()
  summary = write_summary(study, exp, sys.argv)
  study.log(f"study finished in {summary['wall_s']['total']:.0f}s "
            f"({summary['wall_s']['runs_trained']} runs trained); see {a.out}/study.json")


if __name__ == "__main__":
  main()
