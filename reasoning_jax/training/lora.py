"""LoRA / QLoRA in a training run (`LoRASpec`): the frozen base, the adapters as the
train state, the policy used for rollouts, the memory estimate and the exports.

With adapters the RL train state is the adapters and their optimizer state only. The
base is frozen: the SFT warm start when the run has SFT steps (written once to
`<workdir>/lora_base/` at the phase change, because no later checkpoint holds it), or
the params `ModelSpec.checkpoint` / the preset's init key rebuild at every start.
The same base array serves the policy (base + adapters), the old policy and the KL
reference (the base alone), so no reference copy exists.

Rollouts, old-policy scoring and evaluation use `LoRARun.policy`: the adapters merged
into the base once per RL step (a plain `Params`, decoded by the base's programs;
docs/decisions/0021-lora-adapters-at-the-dense-seam.md), except
over a quantized base, whose point is never to hold the full weights: there the
sampler runs base + adapters unmerged.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from reasoning_jax import model as rjm
from reasoning_jax import sharding as rjs
from reasoning_jax.model import lora as L
from reasoning_jax.model import quant as Q
from reasoning_jax.training.checkpoint import CheckpointManager
from reasoning_jax.training.config import LoRASpec
from reasoning_jax.training.memory import MemoryEstimate, tree_bytes_per_device

BASE_DIR = "lora_base"  # <workdir>/lora_base/checkpoints/<sft steps>/


def lora_config(spec: LoRASpec) -> L.LoRAConfig | None:
  """The model-level adapter config of `spec`, or None when `spec.rank` is 0."""
  if not spec.rank:
    return None
  return L.LoRAConfig(rank=spec.rank, alpha=spec.alpha, targets=tuple(spec.targets),
                      dtype=spec.dtype)


@dataclasses.dataclass(frozen=True)
class LoRARun:
  """A run's adapter settings and the programs that use them.

  Attributes:
    spec: the gin section; lcfg: its model-level config.
    cfg, mesh: the model and the mesh.
    shardings: the adapters' NamedShardings (train rules).
    policy_shardings: where merged policy params go (the rollout layout on several
      devices, else the train layout).
  """
  spec: LoRASpec
  lcfg: L.LoRAConfig
  cfg: rjm.ModelConfig
  mesh: Mesh
  shardings: Any
  policy_shardings: Any

  @property
  def merges(self) -> bool:
    """Whether the policy is merged once per step (not over a quantized base)."""
    return self.spec.quantize == "none"

  def freeze(self, params: rjm.Params) -> rjm.Params:
    """The frozen base from full params: quantized where `LoRASpec.quantize` says."""
    if self.merges:
      return params
    return jax.jit(functools.partial(Q.quantize_layers, names=self.lcfg.names(),
                                     kind=self.spec.quantize,
                                     block=self.spec.block_size))(params)

  def init(self, key: jax.Array) -> L.Adapters:
    """Initial adapters (`b = 0`), created in their sharded layout."""
    return jax.jit(L.init_adapters, static_argnums=(0, 1),
                   out_shardings=self.shardings)(self.cfg, self.lcfg, key)

  def policy(self, base: rjm.Params, adapters: L.Adapters) -> rjm.Params:
    """The params the sampler and scoring use: merged (a plain `Params` in the base's
    dtype), or base + adapters unmerged over a quantized base."""
    if not self.merges:
      return L.with_adapters(base, adapters, self.lcfg)
    return _merge_program(self.lcfg, self.policy_shardings)(base, adapters)

  def combine(self, base: rjm.Params, adapters: L.Adapters) -> rjm.Params:
    """Base + adapters for the train step (`steps.rl_update`'s `frozen`)."""
    return L.with_adapters(base, adapters, self.lcfg)


@functools.lru_cache(maxsize=8)
def _merge_program(lcfg: L.LoRAConfig, out_shardings):
  return jax.jit(functools.partial(L.merge, lora=lcfg), out_shardings=out_shardings)


def lora_run(spec: LoRASpec, cfg: rjm.ModelConfig, mesh: Mesh,
             rollout_param_shardings=None) -> LoRARun | None:
  """The run's `LoRARun`, or None without adapters (`LoRASpec.rank` 0)."""
  lcfg = lora_config(spec)
  if lcfg is None:
    return None
  lcfg.names()  # a pattern that matches nothing fails here, before any work
  policy = rollout_param_shardings or rjm.param_shardings(cfg, mesh, rjs.TRAIN_RULES)
  return LoRARun(spec, lcfg, cfg, mesh,
                 L.adapter_shardings(cfg, lcfg, mesh, rjs.TRAIN_RULES), policy)


def base_store(workdir: str, read_only: bool = False) -> CheckpointManager:
  """Where a run with SFT steps keeps its frozen base (written once, synchronously)."""
  return CheckpointManager(os.path.join(workdir, BASE_DIR), max_to_keep=None,
                           async_save=False, read_only=read_only)


def lora_memory(est: MemoryEstimate, run: LoRARun, tx: optax.GradientTransformation,
                micro_batches: int) -> MemoryEstimate:
  """`est` (a full fine-tune's estimate) with the adapters as the train state: the
  base (quantized where asked) plus adapters, Adam over adapters only, adapter
  gradients, no reference copy, and the merged policy as the rollout copy."""
  cfg, lcfg = run.cfg, run.lcfg
  abstract = rjm.abstract_params(cfg)
  base = jax.eval_shape(run.freeze, abstract) if not run.merges else abstract
  adapters = L.abstract_adapters(cfg, lcfg)
  a_bytes = tree_bytes_per_device(adapters, run.shardings)
  base_bytes = (tree_bytes_per_device(base, rjm.param_shardings(cfg, run.mesh,
                                                                rjs.TRAIN_RULES))
                if run.merges else _unsharded_bytes(base) // run.mesh.devices.size)
  opt = tree_bytes_per_device(jax.eval_shape(tx.init, adapters),
                              rjs.opt_state_shardings(tx, adapters, run.shardings,
                                                      run.mesh))
  roll = tree_bytes_per_device(abstract, run.policy_shardings) if run.merges else 0
  return dataclasses.replace(est, params=base_bytes + a_bytes, opt_state=opt,
                             grads=a_bytes * (2 if micro_batches > 1 else 1),
                             reference=0, rollout_params=roll)


def _unsharded_bytes(tree) -> int:
  """Bytes of a tree, 4-bit integers counted as half a byte (numpy's itemsize says 1)."""
  def bits(d):
    return jnp.iinfo(d).bits if jnp.issubdtype(d, jnp.integer) else 8 * d.itemsize
  return sum(x.size * bits(x.dtype) // 8 for x in jax.tree.leaves(tree))


# ------------------------------------------------------------------------ exports

def export_params(base: rjm.Params, adapters: L.Adapters, lcfg: L.LoRAConfig,
                  merged: bool = True) -> rjm.Params:
  """Plain params for a Hugging Face export: the adapters merged into the base, or
  (`merged` False, for a PEFT adapter beside it) the base alone; a quantized base is
  dequantized, in the adapters' dtype."""
  if merged:
    return L.merge(base, adapters, lcfg)
  layers = {n: Q.dequantized(getattr(base.layers, n)).astype(lcfg.dtype)
            for n in adapters.present()}
  return base.replace(layers=dataclasses.replace(base.layers, **layers))


def save_peft_adapter(adapters: L.Adapters, cfg: rjm.ModelConfig, lcfg: L.LoRAConfig,
                      out: str, base_model: str = "") -> None:
  """Write `adapters` as a PEFT LoRA adapter directory (`adapter_model.safetensors`
  and `adapter_config.json`) for the Hugging Face export of the base
  (`PeftModel.from_pretrained(model, out)`). PEFT stores `lora_A.weight` `[R, in]` and
  `lora_B.weight` `[out, R]` per module, in the base's `[out, in]` convention."""
  from safetensors.numpy import save_file
  os.makedirs(out, exist_ok=True)
  tensors = {}
  for n, pair in adapters.present().items():
    a, b = np.asarray(pair.a, np.float32), np.asarray(pair.b, np.float32)
    for i in range(cfg.n_layers):
      stem = f"base_model.model.model.layers.{i}.{L.HF_PARENT[n]}.{L.HF_NAMES[n]}"
      r = a.shape[-1]
      tensors[f"{stem}.lora_A.weight"] = np.ascontiguousarray(a[i].reshape(-1, r).T)
      tensors[f"{stem}.lora_B.weight"] = np.ascontiguousarray(b[i].reshape(r, -1).T)
  save_file(tensors, os.path.join(out, "adapter_model.safetensors"),
            metadata={"format": "pt"})
  config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lcfg.rank,
            "lora_alpha": lcfg.alpha, "lora_dropout": 0.0, "bias": "none",
            "target_modules": [L.HF_NAMES[n] for n in adapters.present()],
            "fan_in_fan_out": False, "use_rslora": False, "inference_mode": True,
            "base_model_name_or_path": base_model}
  with open(os.path.join(out, "adapter_config.json"), "w") as f:
    json.dump(config, f, indent=2)
