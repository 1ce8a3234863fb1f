"""Rollout throughput with and without refilled rows on long-tailed lengths.

Episodes of a long-tailed length distribution (lognormal, p90/p50 >= 4, printed) are
decoded greedily with no stop token, so each ends exactly at its drawn length. Without
refill, the pool runs as consecutive static batches of `--batch` rows, each until its
longest row ends (what `generate` does). With refill (`EpisodeConfig.slots=batch`,
`chunk_steps=K`), a finished row takes the next episode every K steps. Both use the
same episode driver and programs, so the difference is the refill alone. Prints
generated tokens/s of each, the ratio, per K.

  python benchmarks/rollout_refill.py                         # batch 16 and 64
  python benchmarks/rollout_refill.py --batches 16 --chunks 8 16 32 --model tiny
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from reasoning_jax import model as rjm
from reasoning_jax.sampling import episodes as E


def lengths(n: int, median: int, longest: int, seed: int) -> np.ndarray:
  """n lognormal lengths with the given median, sigma 1.4 (p90/p50 = e^(1.4*1.28) ~ 6),
  clipped to [1, longest]."""
  rng = np.random.default_rng(seed)
  return np.clip(np.round(median * np.exp(1.4 * rng.standard_normal(n))), 1,
                 longest).astype(int)


def run(params, cfg, prompts, budgets, ec) -> tuple[float, int]:
  start = time.perf_counter()
  out = E.run_episodes(params, cfg, prompts, lambda q: [], ec, key=jax.random.key(0),
                       budgets=budgets)
  return time.perf_counter() - start, int(out.lengths.sum())


def static(params, cfg, prompts, budgets, batch, longest) -> tuple[float, int]:
  """Consecutive batches of `batch` episodes, each run until its longest row ends."""
  ec = E.EpisodeConfig(max_tokens=longest, temperature=0.0, slots=batch)
  secs = toks = 0
  for i in range(0, len(prompts), batch):
    s, t = run(params, cfg, prompts[i:i + batch], budgets[i:i + batch], ec)
    secs, toks = secs + s, toks + t
  return secs, toks


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--model", default="smollm2_135m", help="preset (random weights)")
  ap.add_argument("--batches", type=int, nargs="+", default=[16, 64])
  ap.add_argument("--pool", type=int, default=4, help="episodes = pool x batch")
  ap.add_argument("--median", type=int, default=24)
  ap.add_argument("--longest", type=int, default=192)
  ap.add_argument("--chunks", type=int, nargs="+", default=[16, 32, 64])
  args = ap.parse_args()
  cfg = rjm.preset(args.model)
  params = rjm.init_params(cfg, jax.random.key(0))
  print(f"{args.model} on {jax.devices()[0].platform}")
  for batch in args.batches:
    n = args.pool * batch
    lens = lengths(n, args.median, args.longest, seed=batch)
    p50, p90 = np.percentile(lens, [50, 90])
    rng = np.random.default_rng(1)
    prompts = [rng.integers(1, cfg.vocab_size, 16).tolist() for _ in range(n)]
    print(f"batch {batch}: {n} episodes, lengths p50 {p50:g} p90 {p90:g} "
          f"(p90/p50 {p90 / p50:.1f}), max {lens.max()}, total {lens.sum()}")
    static(params, cfg, prompts[:batch], lens[:batch], batch, args.longest)  # compile
    s, t = static(params, cfg, prompts, lens, batch, args.longest)
    print(f"  static batches: {t / s:9.1f} tokens/s ({s:.2f} s)")
    for k in args.chunks:
      ec = E.EpisodeConfig(max_tokens=args.longest, temperature=0.0, slots=batch,
                           chunk_steps=k)
      run(params, cfg, prompts[:2 * batch], lens[:2 * batch], ec)  # compile
      s2, t2 = run(params, cfg, prompts, lens, ec)
      print(f"  refill K={k:3d}:   {t2 / s2:9.1f} tokens/s ({s2:.2f} s), "
            f"{(t2 / s2) / (t / s):.2f}x")


if __name__ == "__main__":
  main()
