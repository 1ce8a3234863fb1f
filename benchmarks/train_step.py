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
bf16 x bf16 -> float32 GEMM measured in the same process right before every timed
step: the model's largest matmul shape (tokens x d_model x ffw) and a 4096^3 square
one; each step's ratio is taken against the faster of the two, and the table shows
the median ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from reasoning_jax import model as rjm
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


class GemmReference:
  """bf16 [m,k] x [k,n] GEMMs accumulating in float32, compiled once, timed on demand."""

  def __init__(self, *shapes: tuple[int, int, int]):
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    self.cases = []
    for m, k, n in shapes:
      ka, kb = jax.random.split(jax.random.key(0))
      a = jax.random.normal(ka, (m, k), jnp.bfloat16)
      b = jax.random.normal(kb, (k, n), jnp.bfloat16)
      f(a, b).block_until_ready()
      self.cases.append((f, a, b, 2.0 * m * k * n))

  def rates(self, reps: int = 3) -> list[float]:
    """Best-of-`reps` FLOP/s of each shape, measured now."""
    out = []
    for f, a, b, flops in self.cases:
      best = float("inf")
      for _ in range(reps):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
      out.append(flops / best)
    return out


def step_time(remat: str, steps: int, chunk: int, flops: float,
              ref: GemmReference) -> tuple[float, float, float]:
  """(compile + first step s, median warm step s, median ratio of a step's FLOP/s to
  the GEMM reference measured right before it) for one remat policy.

  The reference is re-measured before every step because this machine's speed drifts
  by up to 30% within minutes; a ratio to a GEMM timed once at the start mixes that
  drift into the result.
  """
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
  times, ratios = [], []
  for _ in range(steps):
    gemm = max(ref.rates())
    t0 = time.perf_counter()
    params, opt, m = step(params, opt, tokens, positions, mask)
    float(m["sft/loss"])
    times.append(time.perf_counter() - t0)
    ratios.append(flops / times[-1] / gemm)
  return first, statistics.median(times), statistics.median(ratios)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--remat", nargs="+", default=["none", "layer", "dots"])
  ap.add_argument("--steps", type=int, default=4)
  ap.add_argument("--chunk", type=int, default=256, help="log-prob chunk (positions)")
  a = ap.parse_args()
  cfg = rjm.preset("smollm2_135m")
  flops = model_flops(cfg, B * T, T)
  shape = (B * T, cfg.d_model, cfg.ffw_dim)
  ref = GemmReference(shape, (4096, 4096, 4096))
  ref_model, ref_square = ref.rates(reps=10)
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; SmolLM2-135M shape, "
        f"batch {B} x {T}, bf16 compute / f32 master weights / AdamW")
  print(f"model FLOPs per step {flops / 1e12:.3f} TFLOP")
  print(f"bf16 GEMM (f32 accumulation), at the start: {ref_model / 1e9:.0f} GFLOP/s at "
        f"{shape}, {ref_square / 1e9:.0f} GFLOP/s at 4096^3")
  print("| remat | first step s | warm step s | GFLOP/s | vs bf16 GEMM (before each step) |")
  print("|---|---|---|---|---|")
  for remat in a.remat:
    first, warm, ratio = step_time(remat, a.steps, a.chunk, flops, ref)
    print(f"| {remat} | {first:.1f} | {warm:.2f} | {flops / warm / 1e9:.0f} | {ratio:.0%} |",
          flush=True)


if __name__ == "__main__":
  main()
