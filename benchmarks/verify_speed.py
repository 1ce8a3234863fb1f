"""How fast the reward runner verifies GSM8K-style answers.

Usage: python benchmarks/verify_speed.py [--n 1000] [--workers 2] [--repeats 5]

Builds n realistic GSM8K completions (a few lines of rationale with calculator
annotations, then `#### answer`; a mix of right, wrong, comma-formatted and missing
answers), scores them with the "gsm8k" reward in a RewardRunner, and prints the pool
start-up time, the first batch, and the median of `repeats` further batches. Also prints
in-process scoring (no pool) for comparison.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

from reasoning_jax.rewards import RewardRunner, get_reward, make_items, score_item


def gsm8k_batch(n: int, seed: int = 0):
  """n (completion, gold) pairs; about 60% right, 30% wrong, 10% with no answer."""
  rng = random.Random(seed)
  completions, golds = [], []
  for _ in range(n):
    a, b, c = rng.randint(2, 999), rng.randint(2, 99), rng.randint(1, 9999)
    gold = a * b + c
    lines = [f"Each box holds {a} items and there are {b} boxes, so {a}*{b} = "
             f"<<{a}*{b}={a * b}>>{a * b} items.",
             f"Adding the {c} loose items gives {a * b}+{c} = <<{a * b}+{c}={gold}>>"
             f"{gold}."]
    u = rng.random()
    if u < 0.6:
      lines.append(f"#### {gold:,}" if rng.random() < 0.5 else f"#### {gold}")
    elif u < 0.9:
      lines.append(f"#### {gold + rng.randint(1, 50)}")
    else:
      lines.append("So the total is unclear.")
    completions.append("\n".join(lines))
    golds.append(str(gold))
  return completions, golds


def math_batch(n: int, seed: int = 0):
  """n boxed LaTeX answers that are not string-equal to the gold: all reach sympy."""
  rng = random.Random(seed)
  completions, golds = [], []
  for _ in range(n):
    a, b = rng.randint(1, 50), rng.randint(2, 50)
    completions.append(f"The result is $\\boxed{{\\frac{{{2 * a}}}{{{2 * b}}}+\\sqrt{{{4 * b}}}}}$.")
    golds.append(f"\\frac{{{a}}}{{{b}}}+2\\sqrt{{{b}}}")
  return completions, golds


def main() -> None:
  """Runs the benchmark and prints the timings."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--n", type=int, default=1000)
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--n_math", type=int, default=200)
  args = p.parse_args()
  reward = get_reward("gsm8k")
  items = make_items(*gsm8k_batch(args.n))

  t0 = time.perf_counter()
  for it in items:
    score_item(reward, it)
  print(f"in-process (no pool, no timeout): {time.perf_counter() - t0:.3f} s "
        f"for {args.n} items")

  t0 = time.perf_counter()
  with RewardRunner(num_workers=args.workers, timeout_s=10.0) as runner:
    runner.wait_ready()
    print(f"pool start-up ({args.workers} workers, forkserver): "
          f"{time.perf_counter() - t0:.3f} s")
    first = runner.score(reward, items)
    print(f"first batch: {first.seconds:.3f} s for {args.n} items; {first.counts()}")
    times = [runner.score(reward, items).seconds for _ in range(args.repeats)]
    print(f"steady state: median {statistics.median(times):.3f} s, max {max(times):.3f} s "
          f"for {args.n} items ({args.repeats} batches)")
    math_items = make_items(*math_batch(args.n_math))
    res = runner.score(get_reward("math"), math_items)
    print(f"sympy path (LaTeX, not string-equal): {res.seconds:.3f} s for "
          f"{args.n_math} items; {res.counts()}")


if __name__ == "__main__":
  main()
