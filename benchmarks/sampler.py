"""Sampler throughput: reasoning_jax.sampling.generate vs transformers.generate.

Both run greedy decoding of the same weights (random weights of the SmolLM2-135M shape,
exported once to a transformers checkpoint) on the same left-padded prompts, in the same
process, for exactly `--new` tokens per row (no stop token). Prints tokens/s of both,
their ratio, and at batch 1 the fraction of the memory-bandwidth bound: the bytes one
decode step must read (all weights plus the filled KV cache) divided by the machine's
bandwidth, measured here with a large on-device read and copy, against the measured step
time. Each side's figure is its best of `--reps` calls, the two sides' calls alternating
(a shared machine drifts within minutes; alternating, both see the same conditions).

  python benchmarks/sampler.py                       # batch 1, 16, 64; 128 new tokens
  python benchmarks/sampler.py --batches 1 --skip-hf  # ours only
  python benchmarks/sampler.py --temperature 1 --top_p 0.95  # sampling, both sides
  python benchmarks/sampler.py --hf_compile          # transformers' static cache (+ torch
                                                     # .compile on a GPU)

On a GPU transformers runs on CUDA too (`--hf_device`), timed after a synchronize.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from reasoning_jax import model as rjm
from reasoning_jax import sampling as rs


def measure_bandwidth(gib: float = 1.0, reps: int = 5) -> float:
  """Device memory bandwidth in bytes/s: the best of a jitted full read (a sum) and a
  jitted copy (x + 1, one read and one write) of a `gib` GiB array. The larger figure
  gives the stricter bound (a CPU copy pays page faults on its fresh output)."""
  n = int(gib * 2**30) // 4
  x = jnp.ones((n,), jnp.float32)
  best = 0.0
  read, copy = jax.jit(jnp.sum), jax.jit(lambda a: a + 1.0)
  for fn, bytes_moved in ((read, n * 4), (copy, 2 * n * 4)):
    jax.block_until_ready(fn(x))
    for _ in range(reps):
      t = time.perf_counter()
      jax.block_until_ready(fn(x))
      best = max(best, bytes_moved / (time.perf_counter() - t))
  return best


def make_prompts(batch: int, vocab: int, seed: int = 0) -> list[list[int]]:
  """Ragged prompts of 16..32 random token ids."""
  rng = np.random.default_rng(seed)
  return [rng.integers(3, vocab, size=int(rng.integers(16, 33))).tolist()
          for _ in range(batch)]


def ours_call(params, cfg, prompts, new: int, temperature: float = 0.0,
              top_p: float = 1.0):
  """`generate` compiled and run once; returns a function that runs it again and
  returns (wall seconds, tokens)."""
  kw = dict(key=jax.random.key(0), max_new_tokens=new, temperature=temperature,
            top_p=top_p)
  jax.block_until_ready(rs.generate(params, cfg, prompts, **kw))

  def run():
    t = time.perf_counter()
    out = jax.block_until_ready(rs.generate(params, cfg, prompts, **kw))
    dt = time.perf_counter() - t
    assert (np.asarray(out.lengths) == new).all()
    return dt, np.asarray(out.tokens)
  return run


def hf_call(model, prompts, new: int, temperature: float = 0.0, top_p: float = 1.0):
  """transformers' `generate` on the left-padded batch (greedy, or sampling with the
  same temperature and top-p and no top-k), on the model's device, warmed up; returns
  a function that runs it once and returns (wall seconds, new tokens)."""
  import torch
  n = max(len(p) for p in prompts)
  ids = torch.zeros((len(prompts), n), dtype=torch.long)
  mask = torch.zeros_like(ids)
  for i, p in enumerate(prompts):
    ids[i, n - len(p):] = torch.tensor(p)
    mask[i, n - len(p):] = 1
  ids, mask = ids.to(model.device), mask.to(model.device)
  # CUDA work is asynchronous: the clock is read only after the device is idle.
  sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
  kw = dict(attention_mask=mask, do_sample=False, max_new_tokens=new, min_new_tokens=new,
            eos_token_id=None, pad_token_id=0)
  if temperature > 0:
    kw.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
  with torch.inference_mode():
    model.generate(ids, **dict(kw, max_new_tokens=2, min_new_tokens=2))  # warm-up
    if getattr(model.generation_config, "cache_implementation", None) == "static":
      model.generate(ids, **kw)  # torch.compile: the full-length call compiles too

  def run():
    with torch.inference_mode():
      sync()
      t = time.perf_counter()
      out = model.generate(ids, **kw)
      sync()
      return time.perf_counter() - t, out[:, n:].cpu().numpy()
  return run


def best_times(calls, reps: int):
  """The best wall time of each call over `reps` rounds, the calls alternating within
  each round (this shared machine drifts by ~20% within minutes, docs/benchmarks.md:
  alternating, both sides see the same conditions), and each call's last output."""
  best, out = [float("inf")] * len(calls), [None] * len(calls)
  for _ in range(reps):
    for i, call in enumerate(calls):
      dt, out[i] = call()
      best[i] = min(best[i], dt)
  return best, out


def step_bytes(cfg: rjm.ModelConfig, context: int) -> int:
  """Bytes one batch-1 decode step must read: every weight once, plus the KV cache."""
  itemsize = jnp.dtype(cfg.dtype).itemsize
  kv = 2 * cfg.n_layers * context * cfg.n_kv_heads * cfg.head_dim * itemsize
  return cfg.num_params() * itemsize + kv


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--preset", default="smollm2_135m")
  ap.add_argument("--dtype", default="bfloat16")
  ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
  ap.add_argument("--new", type=int, default=128)
  ap.add_argument("--reps", type=int, default=1)
  ap.add_argument("--skip-hf", action="store_true")
  ap.add_argument("--temperature", type=float, default=0.0,
                  help="0 = greedy (default); > 0 samples on both sides")
  ap.add_argument("--top_p", type=float, default=1.0)
  ap.add_argument("--hf_device", default="auto",
                  help="transformers' device: auto (cuda when jax runs on a GPU and torch "
                  "sees one, else cpu), cpu or cuda")
  ap.add_argument("--hf_compile", action="store_true",
                  help="transformers with a static cache, which on a GPU makes generate "
                  "torch.compile its forward (its fastest documented path), instead of "
                  "the default dynamic cache")
  args = ap.parse_args()

  cfg = rjm.preset(args.preset, dtype=args.dtype)
  params = rjm.init_params(cfg, jax.random.key(0))
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  jax "
        f"{jax.__version__}  model: {args.preset} {args.dtype} "
        f"({cfg.num_params() / 1e6:.1f}M params)  new tokens: {args.new}  "
        f"temperature {args.temperature}  top_p {args.top_p}  "
        f"attention backend: {cfg.attention_backend}")
  hf_model = None
  if not args.skip_hf:
    import torch
    import transformers
    tmp = tempfile.mkdtemp()
    rjm.save_hf_checkpoint(params, cfg, tmp)
    hf_device = args.hf_device
    if hf_device == "auto":
      hf_device = ("cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available()
                   else "cpu")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp, dtype=getattr(torch, args.dtype), attn_implementation="sdpa"
    ).eval().to(hf_device)
    how = ""
    if args.hf_compile:
      # With a static cache on an accelerator, generate compiles the forward itself
      # (torch.compile, mode reduce-overhead: CUDA graphs); on CPU it does not.
      hf_model.generation_config.cache_implementation = "static"
      how = " (static cache, torch.compile)" if hf_device != "cpu" else " (static cache)"
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, on "
          f"{hf_device}{how}, {torch.get_num_threads()} threads")
  bw = measure_bandwidth()
  print(f"measured bandwidth: {bw / 1e9:.1f} GB/s (best of a jitted 1 GiB read and copy)")
  print(f"{'batch':>5} {'ours tok/s':>11} {'hf tok/s':>9} {'ratio':>6} {'same':>5}")
  for b in args.batches:
    prompts = make_prompts(b, cfg.vocab_size)
    knobs = dict(temperature=args.temperature, top_p=args.top_p)
    calls = [ours_call(params, cfg, prompts, args.new, **knobs)]
    if hf_model is not None:
      calls.append(hf_call(hf_model, prompts, args.new, **knobs))
    times, tokens = best_times(calls, args.reps)
    t_ours, tok_ours = times[0], tokens[0]
    line = f"{b:5d} {b * args.new / t_ours:11.1f}"
    if hf_model is not None:
      t_hf, tok_hf = times[1], tokens[1]
      # Greedy in bf16: rows may diverge after a near-tie, so report the agreement
      # (meaningless when sampling: two random streams).
      same = f"{np.mean(tok_hf == tok_ours):5.2f}" if args.temperature <= 0 else "    -"
      line += f" {b * args.new / t_hf:9.1f} {t_hf / t_ours:6.2f} {same}"
    print(line, flush=True)
    if b == 1:
      ctx = len(prompts[0]) + args.new // 2
      ideal = step_bytes(cfg, ctx) / bw
      per_step = t_ours / args.new
      print(f"      batch-1 step {per_step * 1e3:.2f} ms; bandwidth bound "
            f"{ideal * 1e3:.2f} ms ({step_bytes(cfg, ctx) / 1e6:.0f} MB/step): "
            f"{100 * ideal / per_step:.0f}% of the bound")


if __name__ == "__main__":
  main()
