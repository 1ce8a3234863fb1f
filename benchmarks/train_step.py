"""Train-step throughput at the SmolLM2-135M shape against the machine's bf16 GEMM rate.

    python benchmarks/train_step.py                  # remat none, layer and dots
    python benchmarks/train_step.py --remat layer --steps 5

One step = forward + backward + AdamW (global-norm clipping) on a batch of 8 x 256
tokens of random ids, through `training.steps.sft_update` (the trainer's jitted SFT
step: chunked log-probabilities, token-mean NLL), with bf16 compute, float32
accumulation and float32 master weights (`param_dtype="float32"`), params and
optimizer state donated.

Model FLOPs per step (matmuls only, the usual MFU convention): 3 x 2 x (layer matmul
weights + the tied output head) per token, plus attention (QK^T and PV over all T
keys, causal mask not discounted, x 3 for the backward). The reference rate is a
bf16 x bf16 -> float32 GEMM measured in the same process: the model's largest
matmul shape (tokens x d_model x ffw) and a 4096^3 square one; the ratio is taken
against the faster of the two.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

from reasoning_jax import model as rjm
from reasoning_jax.training.host_malloc import tune_host_malloc
from reasoning_jax.training.steps import make_optimizer, sft_update

B, T = 8, 256


def model_flops(cfg: rjm.ModelConfig, tokens: int, seq: int) -> float:
  """Matmul FLOPs of one forward + backward over `tokens` tokens."""
  d, h = cfg.d_model, cfg.head_dim
  layer = d * h * (2 * cfg.n_heads + 2 * cfg.n_kv_heads) + 3 * d * cfg.ffw_dim
  head = d * cfg.vocab_size
  attn = 2 * 2 * seq * cfg.n_heads * h  # per token per layer: scores + weighted sum
  fwd = 2 * (cfg.n_layers * layer + head) + cfg.n_layers * attn
  return 3.0 * fwd * tokens


def gemm_rate(m: int, k: int, n: int, reps: int = 10) -> float:
  """Best-of-`reps` FLOP/s of a bf16 [m,k] x [k,n] GEMM accumulating in float32."""
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (m, k), jnp.bfloat16)
  b = jax.random.normal(kb, (k, n), jnp.bfloat16)
  f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2.0 * m * k * n / best


def step_time(remat: str, steps: int, chunk: int) -> tuple[float, float]:
  """(compile + first step seconds, median warm step seconds) for one remat policy."""
  cfg = rjm.preset("smollm2_135m", dtype="bfloat16", param_dtype="float32", remat=remat)
  params = rjm.init_params(cfg, jax.random.key(0))
  tx = make_optimizer(1e-4, total_steps=100)
  opt = tx.init(params)
  tokens = jax.random.randint(jax.random.key(1), (B, T), 0, cfg.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
  mask = jnp.ones((B, T), jnp.float32)
  step = jax.jit(lambda p, o, t, q, m: sft_update(p, o, t, q, m, cfg=cfg, tx=tx,
                                                  chunk=chunk), donate_argnums=(0, 1))
  t0 = time.perf_counter()
  params, opt, m = step(params, opt, tokens, positions, mask)
  float(m["sft/loss"])
  first = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    params, opt, m = step(params, opt, tokens, positions, mask)
    float(m["sft/loss"])
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--remat", nargs="+", default=["none", "layer", "dots"])
  ap.add_argument("--steps", type=int, default=4)
  ap.add_argument("--chunk", type=int, default=256, help="log-prob chunk (positions)")
  ap.add_argument("--no_host_malloc", action="store_true",
                  help="leave glibc malloc untuned (training.host_malloc), for A/B runs")
  a = ap.parse_args()
  if a.no_host_malloc:
    os.environ["REASONING_JAX_HOST_MALLOC"] = "0"
  host_malloc = tune_host_malloc()
  cfg = rjm.preset("smollm2_135m")
  flops = model_flops(cfg, B * T, T)
  shape = (B * T, cfg.d_model, cfg.ffw_dim)
  ref_model = gemm_rate(*shape)
  ref_square = gemm_rate(4096, 4096, 4096, reps=4)
  ref = max(ref_model, ref_square)
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; SmolLM2-135M shape, "
        f"batch {B} x {T}, bf16 compute / f32 master weights / AdamW; "
        f"host malloc tuned: {host_malloc}")
  print(f"model FLOPs per step {flops / 1e12:.3f} TFLOP")
  print(f"bf16 GEMM (f32 accumulation): {ref_model / 1e9:.0f} GFLOP/s at {shape}, "
        f"{ref_square / 1e9:.0f} GFLOP/s at 4096^3")
  print("| remat | first step s | warm step s | GFLOP/s | vs bf16 GEMM |")
  print("|---|---|---|---|---|")
  for remat in a.remat:
    first, warm = step_time(remat, a.steps, a.chunk)
    rate = flops / warm
    print(f"| {remat} | {first:.1f} | {warm:.2f} | {rate / 1e9:.0f} | {rate / ref:.0%} |",
          flush=True)


if __name__ == "__main__":
  main()
