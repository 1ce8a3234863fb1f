"""LoRA in a training run: adapters are the whole train state, checkpoints hold only
them and resume bitwise, the base is the KL reference, and the PEFT export loads in
`peft` with transformers' logits equal to ours."""
import os

import jax
import numpy as np
import pytest

from reasoning_jax import model as rjm
from reasoning_jax.model import lora as L
from reasoning_jax.training import config as C
from reasoning_jax.training import lora as TL
from reasoning_jax.training.checkpoint import CheckpointManager
from reasoning_jax.training.loop import Trainer
from reasoning_jax.training.steps import SeqBatch, jit_steps, make_optimizer
from tests.training.test_loop import CoinRunner, tiny_exp


def lora_exp(sft_steps=2, rl_steps=4, checkpoint_every=2, **lora):
  e = tiny_exp(sft_steps=sft_steps, rl_steps=rl_steps)
  return C.Experiment(model=e.model, task=e.task, sft=e.sft, rl=e.rl, eval=e.eval,
                      run=C.RunConfig(checkpoint_every=checkpoint_every, reward_workers=0,
                                      progress=False, plots=False),
                      lora=C.LoRASpec(rank=4, **lora))


def _np(tree):
  return jax.tree.map(np.asarray, tree)


def test_rl_step_changes_only_adapters():
  """One jitted RL update with adapters: the adapters (and only they, with their Adam
  state) come back updated; the base passed beside them is untouched."""
  from reasoning_jax.objectives import ObjectiveInputs
  from reasoning_jax.objectives.registry import get_objective
  cfg = rjm.preset("tiny", vocab_size=32, d_model=32, n_layers=1, n_heads=2,
                   n_kv_heads=1, head_dim=16, ffw_dim=64)
  lcfg = L.LoRAConfig(rank=2, alpha=4.0)
  base = rjm.init_params(cfg, jax.random.key(0))
  ad = L.init_adapters(cfg, lcfg, jax.random.key(1))
  tx = make_optimizer(1e-2, total_steps=10)
  opt = tx.init(ad)
  obj = get_objective("grpo")
  ocfg = obj.config_cls(kl_coef=0.0)
  _, rl, _ = jit_steps(cfg, tx, obj, ocfg, combine=lambda b, a: L.with_adapters(
      b, a, lcfg))
  B, T = 4, 8
  tokens = jax.random.randint(jax.random.key(2), (B, T), 0, 32)
  mask = np.zeros((B, T), np.float32)
  mask[:, 4:] = 1
  inputs = ObjectiveInputs(logp_BT=np.zeros((B, T), np.float32), mask_BT=mask,
                           rewards_B=np.array([1.0, 0.0, 0.0, 1.0], np.float32),
                           group_size=4)
  inputs = obj.prepare(inputs, ocfg, None)
  batch = SeqBatch(tokens, np.broadcast_to(np.arange(T), (B, T)).astype(np.int32),
                   inputs, np.zeros((B, T), np.float32))
  before_base, before_ad = _np(base), _np(ad)
  new_ad, new_opt, m = rl(ad, opt, batch, None, base)
  assert m["loss/finite"] == 1.0
  assert jax.tree.structure(new_ad) == jax.tree.structure(before_ad)
  for x, y in zip(jax.tree.leaves(base), jax.tree.leaves(before_base)):
    np.testing.assert_array_equal(np.asarray(x), y)
  b_moved = [float(np.abs(np.asarray(p.b)).max()) for p in new_ad.present().values()]
  assert min(b_moved) > 0  # every adapter's b left zero (B = 0 gives A no gradient)
  sizes = sum(x.size for x in jax.tree.leaves(new_opt))
  assert sizes < 3 * sum(x.size for x in jax.tree.leaves(ad)) + 16  # Adam over adapters


def _state_names(workdir, step):
  m = CheckpointManager(workdir, read_only=True)
  tree = m._stored_shapes(step)  # path -> shape of what the checkpoint holds
  m.close()
  return tree


def test_adapter_checkpoint_resumes_bitwise(tmp_path):
  """SFT 2 steps (full), RL 4 steps with adapters, checkpoints every 2: a run stopped
  after step 4 and resumed ends with adapters bitwise equal to an uninterrupted run's;
  its checkpoints hold adapters and their Adam state only; the base is the SFT result,
  kept once in lora_base."""
  exp = lora_exp()
  full = Trainer(exp, str(tmp_path / "full"))
  full.run()
  want = _np(full.params)
  assert isinstance(full.params, L.Adapters)

  part = Trainer(exp, str(tmp_path / "part"))
  part.resume()
  for step in range(4):
    part._step(step)
  part.close()
  resumed = Trainer(exp, str(tmp_path / "part"))
  resumed.run()
  for x, y in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(x), y)
  for x, y in zip(jax.tree.leaves(resumed.base), jax.tree.leaves(full.base), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

  names = _state_names(str(tmp_path / "full"), 6)
  assert any(n.startswith("params/wq/a") for n in names)
  assert not any("embed" in n or n.startswith("ref_params") for n in names), names
  assert os.path.isdir(tmp_path / "full" / TL.BASE_DIR / "checkpoints" / "2")
  # The merged policy is the base plus the trained adapters' delta.
  merged = full.parts.lora.policy(full.base, full.params)
  d = L.delta(full.params.wq, exp.lora.alpha / exp.lora.rank)
  np.testing.assert_allclose(np.asarray(merged.layers.wq),
                             np.asarray(full.base.layers.wq) + np.asarray(d), atol=1e-6)


def test_kl_reference_is_the_base_without_a_copy(tmp_path):
  """GRPO's KL term (kl_coef 0.04 by default) with adapters keeps no reference
  params: the reference log-probs are scored with the base itself."""
  t = Trainer(lora_exp(sft_steps=0, rl_steps=1), str(tmp_path))
  t.resume()
  try:
    assert t.ref_params is None and t._ref_is_base and t.base is not None
    assert set(t._state()) == {"params", "opt_state"}
    m = t.rl(0)
    assert np.isfinite(m["loss/total"])
  finally:
    t.close()


def test_qlora_run_trains(tmp_path):
  """An int8 base: the frozen base holds int8 weights, RL steps run unmerged."""
  t = Trainer(lora_exp(sft_steps=0, rl_steps=2, quantize="int8"), str(tmp_path))
  t.runner.close()
  t.runner = CoinRunner()  # mixed rewards: an untrained model earns none
  t.run()
  assert t.base.layers.wq.q.qvalue.dtype == np.int8
  assert max(float(np.abs(np.asarray(p.b)).max()) for p in t.params.present().values()) > 0


@pytest.mark.reference
def test_peft_export_loads_with_equal_logits(tmp_path):
  """Our base exported to HF plus the adapters in PEFT format: `peft` loads them and
  transformers' logits equal ours with the adapters (f32: 1e-4, the HF parity budget)."""
  import torch
  import transformers
  from peft import PeftModel
  from tests.model.hf_tiny import hf_logits, make_tiny
  make_tiny("qwen3", tmp_path / "hf")
  cfg, base = rjm.load_hf_checkpoint(str(tmp_path / "hf"), dtype="float32")
  lcfg = L.LoRAConfig(rank=4, alpha=8.0, targets=("q_proj", "wo", "w_*"))
  ad = L.init_adapters(cfg, lcfg, jax.random.key(1))
  ad = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(5), x.shape), ad)
  TL.save_peft_adapter(ad, cfg, lcfg, str(tmp_path / "peft"), str(tmp_path / "hf"))
  tokens = np.random.default_rng(1).integers(0, 96, size=(2, 12)).astype(np.int32)
  ours = np.asarray(rjm.compute_logits(L.with_adapters(base, ad, lcfg), cfg, tokens))
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path / "hf"), attn_implementation="eager", dtype=torch.float32)
  model = PeftModel.from_pretrained(hf, str(tmp_path / "peft")).eval()
  got = hf_logits(model, tokens)
  plain = np.asarray(rjm.compute_logits(base, cfg, tokens))
  assert np.abs(ours - plain).max() > 0.1  # the adapters change the model
  np.testing.assert_allclose(got, ours, atol=1e-4, rtol=0)
