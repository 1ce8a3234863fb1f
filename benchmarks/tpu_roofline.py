"""The docs/scaling.md tables: every TPU experiment compiled for its topology without a
TPU, and what the Pallas attention kernel changes at long context.

For each `experiments/tpu/*.gin`: per program (rollout, score, update) the per-device
HBM from XLA's memory analysis and its headroom, the roofline time on the chip (model
FLOPs at peak vs minimum bytes at full bandwidth), the model-FLOPs utilisation that
time implies (an upper bound: the roofline is the best case) and, for the rollout, the
tokens/s per chip it bounds. Then a training forward + backward of Qwen3-0.6B at 4k
and 16k tokens on v5e:2x4 with XLA attention against splash attention: per-device
temporaries, and attention FLOPs per layer (XLA computes every score of the square;
splash skips the key tiles above the diagonal).

Needs libtpu: `pip install "jax[tpu]==<the installed jax>"`.

  python benchmarks/tpu_roofline.py            # markdown tables on stdout
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import sys

import gin
import jax
import jax.numpy as jnp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from reasoning_jax import model as rjm  # noqa: E402
from reasoning_jax import sharding as rjs  # noqa: E402
from reasoning_jax.training import aot  # noqa: E402
from reasoning_jax.training.chips import topology_devices  # noqa: E402
from reasoning_jax.training.config import Experiment  # noqa: E402

GIB = 2.0 ** 30


def experiment_rows(path: str) -> list[str]:
  gin.clear_config()
  gin.parse_config_files_and_bindings([path], [])
  exp = Experiment()
  topology = exp.compile.topology
  chip, reports = aot.compile_experiment(exp, topology)
  chips = len(topology_devices(topology)[1])
  r = exp.rl
  rows = []
  for rep in reports:
    t = rep.roofline_s(chip)
    mfu = rep.flops / (t * chip.bf16_flops)
    toks = ""
    if rep.name == "rollout":
      rollout_rows = r.prompts_per_step * r.group_size
      toks = f"{rollout_rows * r.max_new_tokens / t / chips:,.0f}"
    rows.append(f"| {os.path.basename(path)} | {topology} | {exp.run.mesh} | {rep.name} "
                f"| {rep.peak / GIB:.2f} | {(chip.hbm_bytes - rep.peak) / GIB:.2f} "
                f"| {t * 1e3:,.0f} | {mfu:.0%} | {toks} | {rep.attention} |")
  return rows


def attention_rows(seq: int) -> list[str]:
  """XLA vs splash attention in a remat'd training pass of Qwen3-0.6B, 8 rows."""
  _, devices = topology_devices("v5e:2x4")
  mesh = rjs.make_mesh(fsdp=8, devices=devices)
  out = []
  for backend in ("xla", "pallas"):
    cfg = rjm.preset("qwen3_0_6b", attention_backend=backend, param_dtype="float32",
                     remat="layer", max_seq_len=seq)
    sh = rjm.param_shardings(cfg, mesh, rjs.TRAIN_RULES)
    params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          rjm.abstract_params(cfg), sh)
    tok = jax.ShapeDtypeStruct((8, seq), jnp.int32, sharding=rjs.batch_sharding(
        mesh, rjs.TRAIN_RULES, (8, seq)))

    def loss(p, t, cfg=cfg):
      return jnp.sum(rjm.token_logprobs(p, cfg, t, t, chunk=128, with_entropy=False)[0])

    try:
      with jax.set_mesh(mesh):
        c = jax.jit(jax.grad(loss)).lower(params, tok).compile()
    except jax.errors.JaxRuntimeError as e:  # the TPU compiler's own out-of-memory
      need = re.search(r"temporaries \(([\d.]+)G\)", str(e))
      out.append(f"| {seq:,} | {backend} | does not fit: "
                 f"{need.group(1) if need else '?'} of temporaries | - |")
      continue
    temp = c.memory_analysis().temp_size_in_bytes
    # Forward attention FLOPs per layer and device: QK^T and PV over the square (XLA)
    # or, tile-skipping, the causal half (splash).
    square = 2 * 2 * 8 * cfg.n_heads * cfg.head_dim * seq * seq / 8
    flops = square if backend == "xla" else square / 2
    kernel = "tpu_custom_call" in c.as_text()
    out.append(f"| {seq:,} | {backend}{' (splash)' if kernel else ''} "
               f"| {temp / GIB:.2f} | {flops / 1e12:.2f} |")
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--attention_only", action="store_true",
                  help="only the XLA vs splash attention table")
  args = ap.parse_args()
  logging.getLogger("reasoning_jax").setLevel(logging.WARNING)
  if not args.attention_only:
    experiments_table()
  print("| tokens | attention | temporaries GiB/device | attention TFLOP/layer/device "
        "(forward) |")
  print("|---:|---|---:|---:|")
  for seq in (4096, 16384):
    for row in attention_rows(seq):
      print(row, flush=True)


def experiments_table():
  print("| experiment | topology | mesh | program | peak GiB/device | headroom GiB "
        "| roofline ms | MFU bound | rollout tok/s/chip bound | attention |")
  print("|---|---|---|---|---:|---:|---:|---:|---:|---|")
  for path in sorted(glob.glob(os.path.join(ROOT, "experiments", "tpu", "*.gin"))):
    for row in experiment_rows(path):
      print(row, flush=True)
  print()


if __name__ == "__main__":
  main()
