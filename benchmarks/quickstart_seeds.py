"""Run the quickstart for several seeds and report eval accuracy before and after RL.

    python benchmarks/quickstart_seeds.py --seeds 0 1 2 --out /tmp/qs_seeds
    python benchmarks/quickstart_seeds.py --out /tmp/qs_fast \
        --gin_param 'ModelSpec.dtype = "bfloat16"' \
        --gin_param 'ModelSpec.param_dtype = "float32"' --gin_param 'ModelSpec.remat = "layer"'

Each seed is a full `reasoning-jax train` run (SFT warm start, then GRPO) in its own
run directory. "warm start" is the held-out evaluation right after SFT, "after RL" the
final one; accuracy is the expected exact match of one completion sampled at
temperature 1 (what the RL objective maximises), greedy accuracy is also shown.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def rows(workdir: str) -> list[dict]:
  """A run's metrics.jsonl rows, in step order."""
  return [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--out", default="runs/quickstart_seeds")
  ap.add_argument("--gin_file", default="experiments/quickstart.gin")
  ap.add_argument("--gin_param", action="append", default=[],
                  help="extra binding, e.g. 'ModelSpec.dtype = \"bfloat16\"'")
  a = ap.parse_args()
  extra = [x for p in a.gin_param for x in ("--gin_param", p)]
  print("| seed | wall s | RL step s | warm-start acc | after-RL acc | gain | greedy warm "
        "| greedy RL | maj@4 warm | maj@4 RL |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  gains = []
  for seed in a.seeds:
    wd = os.path.join(a.out, f"seed{seed}")
    t = time.time()
    subprocess.run([sys.executable, "-m", "reasoning_jax.cli", "train", "--gin_file",
                    a.gin_file, "--gin_param", f"RunConfig.seed = {seed}",
                    "--gin_param", "RunConfig.progress = False", *extra, "--workdir", wd],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - t
    rs = rows(wd)
    e = [r for r in rs if "eval/accuracy" in r]
    w, f = e[0], e[-1]
    gain = f["eval/accuracy"] - w["eval/accuracy"]
    gains.append(gain)
    step_s = statistics.median(r["time/step"] for r in rs if "time/step" in r)
    print(f"| {seed} | {wall:.0f} | {step_s:.3f} | {w['eval/accuracy']:.3f} | {f['eval/accuracy']:.3f} | "
          f"{gain:+.3f} | {w['eval/greedy_accuracy']:.3f} | {f['eval/greedy_accuracy']:.3f} "
          f"| {w['eval/maj@4']:.3f} | {f['eval/maj@4']:.3f} |", flush=True)
  print(f"mean gain {sum(gains) / len(gains):+.3f}, min {min(gains):+.3f}")


if __name__ == "__main__":
  main()
