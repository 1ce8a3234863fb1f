"""Per-device memory: the estimate against XLA's memory_analysis, and chunking's gain.

The state (params + Adam moments) is exact: it equals the bytes XLA aliases between the
donated inputs and the outputs of the compiled update. Activations are an estimate,
checked against the compiled step's temporary bytes on one device.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax import model as rjm
from reasoning_jax import sharding as rjs
from reasoning_jax.objectives import OBJECTIVES, ObjectiveInputs
from reasoning_jax.training.memory import memory_estimate
from reasoning_jax.training.steps import SeqBatch, jit_steps, make_optimizer

CFG = rjm.ModelConfig(vocab_size=4096, d_model=64, n_layers=2, n_heads=8, n_kv_heads=4,
                      head_dim=8, ffw_dim=256, tie_embeddings=False, max_seq_len=128)
B, T = 8, 128
TX = make_optimizer(1e-5, total_steps=10)


def _compiled(mesh, chunk):
  obj = OBJECTIVES["grpo"]
  p_sh, o_sh = rjs.state_shardings(TX, rjm.abstract_params(CFG),
                                   rjm.param_shardings(CFG, mesh, rjs.TRAIN_RULES), mesh)
  _, rl, _ = jit_steps(CFG, TX, obj, obj.config(kl_coef=0.0), state_shardings=(p_sh, o_sh),
                       chunk=chunk)
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
  i32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.int32)  # noqa: E731
  batch = SeqBatch(i32(B, T), i32(B, T), ObjectiveInputs(
      logp_BT=f32(B, T), mask_BT=f32(B, T), advantages=f32(B), group_size=4), f32(B, T))
  place = lambda t, s: jax.tree.map(  # noqa: E731
      lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), t, s)
  abstract = rjm.abstract_params(CFG)
  args = (place(abstract, p_sh), place(jax.eval_shape(TX.init, abstract), o_sh),
          place(batch, rjs.batch_sharding_tree(batch, mesh)))
  return rl.lower(*args).compile().memory_analysis()


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 4, 2)])
def test_state_bytes_are_exact(shape):
  mesh = rjs.build_mesh(shape, devices=jax.devices()[:int(np.prod(shape))])
  est = memory_estimate(CFG, mesh, TX, rows=B, seq_len=T, chunk=32)
  ma = _compiled(mesh, 32)
  assert est.state == ma.alias_size_in_bytes
  # Hand count: untied embed + head = 2*V*D, per layer 4 attention mats + 3 MLP mats
  # + 2 norms, final norm; Adam keeps mu and nu (plus int32 counts, replicated).
  n = CFG.num_params() + CFG.n_layers * 2 * CFG.d_model + CFG.d_model
  shards = shape[1] * shape[2]
  assert est.params == pytest.approx(4 * n / shards, rel=0.02)
  assert est.opt_state - 2 * est.params in (4, 8)  # Adam count (+ clip has no state)


def test_chunking_lowers_peak_and_estimate_tracks_it():
  mesh = rjs.build_mesh((1, 1, 1), devices=jax.devices()[:1])
  full, chunked = _compiled(mesh, T), _compiled(mesh, 32)
  logits_BTV = 4 * B * T * CFG.vocab_size
  # One full f32 logits tensor (16 MiB) is at least what chunking saves.
  assert full.temp_size_in_bytes - chunked.temp_size_in_bytes >= logits_BTV
  for ma, chunk in ((full, T), (chunked, 32)):
    est = memory_estimate(CFG, mesh, TX, rows=B, seq_len=T, chunk=chunk)
    ratio = (est.activations + est.grads) / ma.temp_size_in_bytes
    assert 0.7 < ratio < 1.3, (chunk, ratio)


def test_kv_cache_and_rollout_params_are_exact():
  mesh = rjs.build_mesh((2, 2, 2))
  est = memory_estimate(CFG, mesh, TX, rows=B, seq_len=T, rollout_rows=16,
                        cache_len=96)
  # K and V: L x rows/4 x S x K/2 x H float32 on each device; positions rows/4 x S
  # int32; the int32 write index.
  assert est.kv_cache == 2 * 2 * 4 * 96 * 2 * 8 * 4 + 4 * 96 * 4 + 4
  # Rollout layout: matrices whole along embed, split over tensor only (half the train
  # layout's fsdp x tensor = 4 ways); norms replicated in both.
  norms = 4 * (2 * CFG.n_layers + 1) * CFG.d_model
  assert est.rollout_params - norms == 2 * (est.params - norms)
  text = est.format()
  assert "KV cache" in text and "GiB" in text


def test_remat_keeps_one_layer_input_per_layer():
  mesh = rjs.build_mesh((1, 1, 1), devices=jax.devices()[:1])
  kw = dict(rows=B, seq_len=T, chunk=32)
  one = CFG.replace(n_layers=1)
  # One layer: remat keeps the layer input [B, T, D] on top of that layer's activations.
  assert (memory_estimate(one, mesh, TX, remat="layer", **kw).activations
          - memory_estimate(one, mesh, TX, **kw).activations) == B * T * 64 * 4
  plain = memory_estimate(CFG, mesh, TX, **kw)
  remat = memory_estimate(CFG, mesh, TX, remat="layer", **kw)
  assert remat.activations < plain.activations and remat.state == plain.state


# Activations dominate here (64 x 128 tokens, 4 layers, small vocabulary).
ACTS = rjm.ModelConfig(vocab_size=512, d_model=256, n_layers=4, n_heads=8, n_kv_heads=4,
                       head_dim=32, ffw_dim=1024, max_seq_len=128)


def _update_temps(cfg, micro_batches: int, rows: int = 64, t: int = 128):
  """Compiled temporary bytes of one GRPO update (one device) and the estimate."""
  mesh = rjs.build_mesh((1, 1, 1), devices=jax.devices()[:1])
  obj = OBJECTIVES["grpo"]
  abstract = rjm.abstract_params(cfg)
  p_sh, o_sh = rjs.state_shardings(TX, abstract, rjm.param_shardings(
      cfg, mesh, rjs.TRAIN_RULES), mesh)
  _, rl, _ = jit_steps(cfg, TX, obj, obj.config(kl_coef=0.0), micro_batches,
                       state_shardings=(p_sh, o_sh), chunk=32)
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
  i32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.int32)  # noqa: E731
  batch = SeqBatch(i32(rows, t), i32(rows, t), ObjectiveInputs(
      logp_BT=f32(rows, t), mask_BT=f32(rows, t), advantages=f32(rows), group_size=4),
      f32(rows, t))
  temps = rl.lower(abstract, jax.eval_shape(TX.init, abstract),
                   batch).compile().memory_analysis().temp_size_in_bytes
  est = memory_estimate(cfg, mesh, TX, rows=rows, seq_len=t,
                        micro_batches=micro_batches, chunk=32)
  return temps, est.activations + est.grads


def test_micro_batches_cut_the_update_peak_and_the_estimate_follows():
  """Micro-batches run as a scan, so only one micro-batch's activations are live:
  4 of them need under 40% of one's temporaries (an unrolled loop kept ~90%). The
  start-up estimate (activations + gradients) is within 25% of XLA's figure for each
  remat policy: it models the kept tensors, not XLA's buffer reuse."""
  one, est_one = _update_temps(ACTS, 1)
  four, est_four = _update_temps(ACTS, 4)
  assert four < 0.4 * one, (four, one)
  for temps, est in ((one, est_one), (four, est_four)):
    assert 0.75 < est / temps < 1.25, (est, temps)
  for policy in ("layer", "dots"):
    temps, est = _update_temps(ACTS.replace(remat=policy), 4)
    assert 0.75 < est / temps < 1.25, (policy, est, temps)


def _mem_exp(**run):
  from reasoning_jax.training import config as C
  from tests.training.test_loop import TINY
  return C.Experiment(
      model=C.ModelSpec(overrides=TINY),
      task=C.TaskSpec(kwargs=(("num_digits", 2),), num_warmup=64, num_train=32, num_eval=4),
      sft=C.SFTConfig(steps=0),
      rl=C.RLConfig(steps=1, prompts_per_step=8, group_size=8, max_new_tokens=16),
      eval=C.EvalConfig(every=100, num_prompts=4, samples=0),
      run=C.RunConfig(reward_workers=0, progress=False, plots=False, **run))


def test_a_run_over_its_memory_stops_before_work_naming_a_setting_that_fits(tmp_path):
  """With a limit between the estimate of 4 micro-batches and of 2, the trainer stops
  with `DoesNotFit` naming micro_batches = 4, before writing a checkpoint; "warn" starts."""
  from reasoning_jax.training import build
  from reasoning_jax.training.loop import Trainer
  from reasoning_jax.training.memory import DoesNotFit
  from reasoning_jax.training import setup as S
  exp = _mem_exp()
  task = S.build_task(exp)
  codec = S.build_codec(exp, task)
  cfg, _ = S.build_model(exp, codec, jax.random.key(0))
  mesh = rjs.build_mesh((1, 1, 1))
  data = build.build_data(exp, task, codec)
  size = build.longest(codec, data, "completion")
  est = lambda **c: build._estimate(exp, cfg, mesh, TX, size, False, **c).peak  # noqa
  # Activations dominate at 64 rows x ~24 tokens: more micro-batches, lower peaks.
  assert est(micro_batches=4) < est(micro_batches=2) < est()
  limit = (est(micro_batches=4) + est(micro_batches=2)) / 2 / 2**30
  with pytest.raises(DoesNotFit, match=r"set RLConfig.micro_batches = 4 \(estimated"):
    Trainer(_mem_exp(memory_limit_gib=limit), str(tmp_path / "a"))
  assert not (tmp_path / "a" / "checkpoints").exists()
  with pytest.raises(DoesNotFit, match="no remat / micro-batch setting fits"):
    Trainer(_mem_exp(memory_limit_gib=1e-6), str(tmp_path / "b"))
  t = Trainer(_mem_exp(memory_limit_gib=1e-6, memory_check="warn"), str(tmp_path / "c"))
  t.close()


def test_device_memory_of_a_cpu_is_the_hosts_share():
  from reasoning_jax.training.memory import device_memory
  dev = jax.devices("cpu")[0]
  one, two = device_memory(dev, 1), device_memory(dev, 2)
  assert one is not None and one > 2**28
  assert two == one // 2
