"""Kernels per decode step of the sampler on an H100, compiled here without a GPU.

On a GPU a batch-1 decode step of a small model is bound by how many kernels it
launches, not by the bytes it reads (docs/benchmarks.md: ~700 kernels of ~1.7 us each
in a 1.22 ms step on an H100, against a 0.11-0.14 ms bandwidth bound). This script
compiles `sampling.generate`'s program for an H100 with XLA's deviceless ahead-of-time
path (a GPU topology from a target description, no device needed) and counts, in the
optimized HLO, the instructions that launch work per decode step: every fusion,
custom call (cuBLAS), copy and async start in the decode loop's body and condition,
with the layer loop's body counted once per layer. The count is what the optimizer
emits, not a timing: use it to compare program variants between GPU sessions.

Needs the jax CUDA plugin for the installed jax (no CUDA libraries or GPU are needed
to compile), best in a separate virtual environment:

  pip install --no-deps jax-cuda13-pjrt==$JAXV jax-cuda13-plugin==$JAXV
  python benchmarks/gpu_kernels.py                       # SmolLM2-135M, batch 1
  python benchmarks/gpu_kernels.py --batch 16 --show 40  # + the 40 largest kernel groups
"""
from __future__ import annotations

import argparse
import collections
import importlib
import os
import re

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host runs the tracing; no GPU here

import jax  # noqa: E402
from jax.experimental import topologies  # noqa: E402

from reasoning_jax import model as rjm  # noqa: E402

# The module (the package re-exports its `generate` function under the same name).
gen = importlib.import_module("reasoning_jax.sampling.generate")

# XLA's GpuTargetConfig for an H100 80GB HBM3 (the fields XLA reads when compiling
# without a device; the values are the H100's published/queried device properties).
H100 = """
gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132
  fpus_per_core: 128 block_dim_limit_x: 2147483647 block_dim_limit_y: 65535
  block_dim_limit_z: 65535 memory_bandwidth: 3352320000000 l2_cache_size: 52428800
  clock_rate_ghz: 1.98 device_memory_size: 84929347584
  shared_memory_per_block_optin: 232448 cuda_compute_capability { major: 9 }
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 7 }
runtime_version { major: 13 minor: 0 patch: 0 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""

# Instructions that launch nothing on the device (metadata, control, async completion).
FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
        "opt-barrier", "partition-id", "replica-id", "add-dependency"}
_COMP = re.compile(r"^(ENTRY )?%(\S+) .*\{$")
_INSTR = re.compile(r"^\s*(ROOT )?%(\S+) = (.+?) ([a-z][a-z0-9-]*)\((.*)$")


def parse(hlo: str) -> dict[str, list[tuple[str, str, str]]]:
  """Computation name -> its instructions as (name, opcode, rest of the line)."""
  comps, cur = {}, None
  for line in hlo.splitlines():
    m = _COMP.match(line)
    if m:
      cur = comps.setdefault(("ENTRY:" if m.group(1) else "") + m.group(2), [])
      continue
    m = _INSTR.match(line)
    if m and cur is not None:
      cur.append((m.group(2), m.group(4), m.group(5)))
  return comps


def _attr(rest: str, key: str) -> str | None:
  m = re.search(key + r"=%([\w.\-]+)", rest)
  return m.group(1) if m else None


def _branches(rest: str) -> list[str]:
  """The branch computations of a conditional instruction."""
  m = re.search(r"branch_computations=\{([^}]*)\}", rest)
  if m:
    return re.findall(r"%([\w.\-]+)", m.group(1))
  return [b for b in (_attr(rest, "true_computation"), _attr(rest, "false_computation"))
          if b]


def kernels(comps, name: str, counts: collections.Counter, weight: int = 1
            ) -> tuple[int, int]:
  """(fewest, most) kernels one run of computation `name` launches: loops with a known
  trip count are multiplied out, and a conditional adds its cheapest branch to the
  first figure and its dearest to the second (which branch runs depends on traced
  values, e.g. greedy vs sampling). Kinds outside conditionals go into `counts`."""
  lo = hi = 0
  for instr, op, rest in comps[name]:
    if op in FREE or op.endswith("-done"):
      continue
    if op == "while":
      trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
      n = int(trip.group(1)) if trip else 1
      for key in ("condition", "body"):
        a, b = kernels(comps, _attr(rest, key), counts, weight * n)
        lo, hi = lo + n * a, hi + n * b
      continue
    if op == "conditional":
      per = [kernels(comps, b, collections.Counter()) for b in _branches(rest)]
      counts["conditional"] += weight
      lo, hi = lo + 1 + min(a for a, _ in per), hi + 1 + max(b for _, b in per)
      continue
    if op == "call":
      a, b = kernels(comps, _attr(rest, "to_apply"), counts, weight)
      lo, hi = lo + a, hi + b
      continue
    kind = op
    if op == "fusion":
      kind = "fusion:" + re.sub(r"[.\d]+$", "", instr)
    elif op == "custom-call":
      target = re.search(r'custom_call_target="([^"]+)"', rest)
      kind = "custom-call:" + (target.group(1) if target else "?")
    counts[kind] += weight
    lo, hi = lo + 1, hi + 1
  return lo, hi


def decode_loop(comps) -> tuple[str, str]:
  """(condition, body) of the decode while loop: the while loop with the largest body
  (it holds the layer loop, or the unrolled layers)."""
  loops = [(len(comps.get(_attr(rest, "body"), [])), _attr(rest, "condition"),
            _attr(rest, "body")) for instrs in comps.values()
           for _, op, rest in instrs if op == "while"]
  if not loops:
    raise RuntimeError("the program has no while loop")
  _, cond, body = max(loops)
  return cond, body


def layer_loop(comps, body: str) -> tuple[str, int] | None:
  """(body, trip count) of the layer loop inside the decode loop's body, or None
  when the layers are unrolled."""
  for _, op, rest in comps[body]:
    if op == "while":
      trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
      return _attr(rest, "body"), int(trip.group(1)) if trip else 1
  return None


def compile_hlo(cfg: rjm.ModelConfig, batch: int, prompt: int, new: int) -> str:
  """The optimized HLO of `generate`'s program for `batch` prompts on an H100 (the
  attention backend is `cfg.attention_backend`'s choice for a GPU)."""
  topo = topologies.get_topology_desc(platform="cuda", target_config=H100,
                                      topology="1x1x1")
  mesh = topologies.make_mesh(topo, (1,), ("x",))
  on_gpu = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  abstract = lambda tree: jax.tree.map(  # noqa: E731
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_gpu), tree)
  captured = {}

  def capture(*args, **static):
    captured.update(args=args, static=static)
    raise StopIteration  # stop before anything runs on the host

  real = gen.program
  gen.program = lambda options=None: capture
  try:
    params = jax.eval_shape(lambda: rjm.init_params(cfg, jax.random.key(0)))
    gen.generate(params, cfg, [[1] * prompt] * batch, key=jax.random.key(0),
                 max_new_tokens=new, temperature=0.0)
  except StopIteration:
    pass
  finally:
    gen.program = real
  args = abstract(captured["args"])
  static = dict(captured["static"])
  lowered = real().trace(*args, **static).lower(lowering_platforms=("cuda",))
  return lowered.compile().as_text()


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--preset", default="smollm2_135m")
  ap.add_argument("--dtype", default="bfloat16")
  ap.add_argument("--batch", type=int, default=1)
  ap.add_argument("--prompt", type=int, default=32)
  ap.add_argument("--new", type=int, default=128)
  ap.add_argument("--show", type=int, default=25, help="kernel kinds to list")
  ap.add_argument("--attention_backend", default="auto", choices=rjm.ATTENTION_BACKENDS)
  ap.add_argument("--dump", default="", help="write the optimized HLO to this file")
  args = ap.parse_args()
  cfg = rjm.preset(args.preset, dtype=args.dtype,
                   attention_backend=args.attention_backend)
  try:
    hlo = compile_hlo(cfg, args.batch, args.prompt, args.new)
  except RuntimeError as e:
    if "cuda" not in str(e).lower():
      raise
    v = jax.__version__
    raise SystemExit(f"cannot compile for a GPU here ({e}); install the jax CUDA plugin "
                     f"of this jax: pip install --no-deps jax-cuda13-pjrt=={v} "
                     f"jax-cuda13-plugin=={v}") from None
  if args.dump:
    with open(args.dump, "w") as f:
      f.write(hlo)
  comps = parse(hlo)
  cond, body = decode_loop(comps)
  inner = layer_loop(comps, body)
  counts = collections.Counter()
  step = [a + b for a, b in zip(kernels(comps, cond, counts),
                                kernels(comps, body, counts))]
  span = f"{step[0]}" if step[0] == step[1] else f"{step[0]}-{step[1]}"
  layers = "the layers unrolled"
  if inner:
    layers = (f"{inner[1]} layers x {kernels(comps, inner[0], collections.Counter())[0]}"
              " in the layer loop")
  print(f"jax {jax.__version__}, {args.preset} {args.dtype}, batch {args.batch}, "
        f"attention backend {cfg.attention_backend}: "
        f"{span} kernels per decode step, {layers} (the rest: embedding, output head, "
        f"choosing the token; a range where conditionals on traced values pick between "
        f"branches)")
  for kind, n in counts.most_common(args.show):
    print(f"  {n:6d}  {n / cfg.n_layers:5.1f}/layer  {kind}")


if __name__ == "__main__":
  main()
