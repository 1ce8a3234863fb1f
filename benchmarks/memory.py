"""Peak memory of a GRPO update with and without chunked log-probabilities.

Compiles (does not run) `training.steps.rl_update` for a big-vocabulary model and
prints XLA's `memory_analysis()` per device for each logits chunk size, next to
`training.memory.memory_estimate`. The full `[B, T, V]` logits are the usual OOM
in RL trainers; chunking bounds them to `[B, chunk, V]`.

  python benchmarks/memory.py                       # one device, chunk T vs 128
  python benchmarks/memory.py --mesh 2,2,2 --devices 8   # CPU, 8 virtual devices
"""
from __future__ import annotations

import argparse
import os
import sys


def _args():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--vocab", type=int, default=32768)
  p.add_argument("--seq", type=int, default=512)
  p.add_argument("--rows", type=int, default=8)
  p.add_argument("--group", type=int, default=4)
  p.add_argument("--d_model", type=int, default=256)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--chunks", default="", help="comma list; default: seq,128")
  p.add_argument("--mesh", default="1,1,1", help="data,fsdp,tensor")
  p.add_argument("--devices", type=int, default=0,
                 help="force this many host (CPU) devices (set before jax starts)")
  return p.parse_args()


def main() -> None:
  """Compile the update for each chunk size and print the memory table."""
  args = _args()
  if args.devices:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
  import jax
  import jax.numpy as jnp

  from reasoning_jax import model as rjm
  from reasoning_jax.objectives import OBJECTIVES, ObjectiveInputs
  from reasoning_jax import sharding as rjs
  from reasoning_jax.training.memory import memory_estimate
  from reasoning_jax.training.steps import SeqBatch, jit_steps, make_optimizer

  shape = tuple(int(s) for s in args.mesh.split(","))
  n = shape[0] * shape[1] * shape[2]
  mesh = rjs.build_mesh(shape, devices=jax.devices()[:n])
  cfg = rjm.ModelConfig(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers,
                        n_heads=8, n_kv_heads=4, head_dim=args.d_model // 8,
                        ffw_dim=4 * args.d_model, tie_embeddings=False,
                        max_seq_len=args.seq)
  tx = make_optimizer(1e-5, total_steps=10)
  obj = OBJECTIVES["grpo"]
  ocfg = obj.config(kl_coef=0.0)
  B, T = args.rows, args.seq
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
  i32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.int32)  # noqa: E731
  batch = SeqBatch(i32(B, T), i32(B, T),
                   ObjectiveInputs(logp_BT=f32(B, T), mask_BT=f32(B, T),
                                   advantages=f32(B), rewards_B=f32(B),
                                   group_size=args.group), f32(B, T))
  b_sh = rjs.batch_sharding_tree(batch, mesh)
  batch = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                       batch, b_sh)
  p_sh, o_sh = rjs.state_shardings(tx, rjm.abstract_params(cfg),
                                   rjm.param_shardings(cfg, mesh, rjs.TRAIN_RULES), mesh)
  params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        rjm.abstract_params(cfg), p_sh)
  opt = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                     jax.eval_shape(tx.init, rjm.abstract_params(cfg)), o_sh)
  chunks = [int(c) for c in args.chunks.split(",")] if args.chunks else [T, 128]
  mib = lambda x: f"{x / 2**20:9.1f}"  # noqa: E731
  print(f"model: {cfg.num_params() / 1e6:.1f}M params, vocab {cfg.vocab_size}, "
        f"B={B} T={T}, mesh {dict(mesh.shape)}, {jax.devices()[0].platform}")
  print(f"{'chunk':>6} {'temp MiB':>9} {'args MiB':>9} {'state MiB':>9} "
        f"{'est. act MiB':>12} {'logits BTV MiB':>14}")
  for chunk in chunks:
    _, rl, _ = jit_steps(cfg, tx, obj, ocfg, state_shardings=(p_sh, o_sh), chunk=chunk)
    ma = rl.lower(params, opt, batch).compile().memory_analysis()
    est = memory_estimate(cfg, mesh, tx, rows=B, seq_len=T, chunk=chunk)
    full = 4 * B * T * cfg.vocab_size / n
    print(f"{chunk:>6} {mib(ma.temp_size_in_bytes)} {mib(ma.argument_size_in_bytes)} "
          f"{mib(ma.alias_size_in_bytes)} {mib(est.activations + est.grads):>12} "
          f"{mib(full):>14}")
  sys.stdout.flush()


if __name__ == "__main__":
  main()
