"""LoRA adapters and quantized (QLoRA) base weights at the `dense` seam."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax import model as rjm
from reasoning_jax import sampling
from reasoning_jax.model import lora as L
from reasoning_jax.model import quant as Q

CFG = rjm.preset("tiny", vocab_size=96, d_model=128, n_layers=2, n_heads=4, n_kv_heads=2,
                 head_dim=32, ffw_dim=256, qkv_bias=True)
LORA = L.LoRAConfig(rank=4, alpha=8.0)
TOK = jax.random.randint(jax.random.key(2), (4, 32), 0, 96)
POS = jnp.broadcast_to(jnp.arange(32), (4, 32))


def _logits(params, cfg=CFG):
  return jax.jit(lambda p: rjm.forward(p, TOK, POS, cfg)[0])(params)


def _trained(adapters, seed=3, size=0.05):
  """Adapters moved off their init (b != 0), as after some training."""
  leaves, tree = jax.tree.flatten(adapters)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [x + size * jax.random.normal(k, x.shape, x.dtype)
                                   for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_zero_b_leaves_logits_bit_identical(dtype):
  cfg = CFG.replace(dtype=dtype)
  base = rjm.init_params(cfg, jax.random.key(0))
  ad = L.init_adapters(cfg, LORA, jax.random.key(1))
  assert all(not np.asarray(p.b).any() for p in ad.present().values())
  assert np.asarray(ad.wq.a).std() > 0
  np.testing.assert_array_equal(_logits(L.with_adapters(base, ad, LORA), cfg),
                                _logits(base, cfg))


def test_merged_equals_base_plus_adapters():
  """f32: `x @ (w + s a b)` vs `x @ w + s (x a) b` differ only by the order of float32
  sums (~1e-7 relative per product over D = 128 terms, logits of size ~3): 1e-5."""
  base = rjm.init_params(CFG, jax.random.key(0))
  ad = _trained(L.init_adapters(CFG, LORA, jax.random.key(1)))
  adapted = _logits(L.with_adapters(base, ad, LORA))
  assert np.abs(adapted - _logits(base)).max() > 0.1  # the adapters do change the model
  np.testing.assert_allclose(_logits(L.merge(base, ad, LORA)), adapted, atol=1e-5, rtol=0)


def test_adapter_gradient_equals_merged_gradient():
  """d loss / d adapters through the seam equals autodiff through the merged weights."""
  base = rjm.init_params(CFG, jax.random.key(0))
  ad = _trained(L.init_adapters(CFG, LORA, jax.random.key(1)))
  loss = lambda f: lambda a: jnp.mean(jax.nn.log_softmax(  # noqa: E731
      rjm.forward(f(a), TOK, POS, CFG)[0])[..., 0])
  g_seam = jax.grad(loss(lambda a: L.with_adapters(base, a, LORA)))(ad)
  g_merge = jax.grad(loss(lambda a: L.merge(base, a, LORA)))(ad)
  for x, y in zip(jax.tree.leaves(g_seam), jax.tree.leaves(g_merge)):
    np.testing.assert_allclose(x, y, atol=1e-6, rtol=1e-4)


def test_targets_by_pattern_and_specs():
  lc = L.LoRAConfig(rank=2, targets=("q_proj", "w_*"))
  assert lc.names() == ("wq", "w_gate", "w_up", "w_down")
  specs = L.adapter_specs(CFG, lc)
  assert specs.wk is None and specs.wq.a.shape == (2, 128, 2)
  assert specs.wq.b.shape == (2, 2, 4, 32) and specs.wq.b.init == "zeros"
  assert specs.w_down.a.axes == ("layers", "mlp", "lora_rank")
  wo = L.adapter_specs(CFG, L.LoRAConfig(rank=3, targets=("wo",))).wo
  assert wo.a.shape == (2, 4, 32, 3) and wo.b.shape == (2, 3, 128)
  with pytest.raises(ValueError, match="matches no projection"):
    L.LoRAConfig(targets=("attn",)).names()


def test_sampler_with_unmerged_adapters_equals_merged():
  """The cached decode reads `LoRAWeight` leaves (as over a quantized base) and
  samples what the merged params sample (greedy, f32)."""
  base = rjm.init_params(CFG, jax.random.key(0))
  ad = _trained(L.init_adapters(CFG, LORA, jax.random.key(1)))
  run = lambda p: sampling.generate(p, CFG, [[1, 2, 3], [4, 5]],  # noqa: E731
                                    key=jax.random.key(0), max_new_tokens=6,
                                    temperature=0.0)
  a, b = run(L.with_adapters(base, ad, LORA)), run(L.merge(base, ad, LORA))
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_int8_weights_within_half_a_step():
  """absmax int8: every weight is within half a quantization step (scale / 2) of its
  value, per output channel (closed form of round-to-nearest). qwix maps the absmax
  to 127.5 steps (the largest value rounds to 128, clipped to 127: half a step)."""
  w = jax.random.normal(jax.random.key(0), (2, 128, 4, 32))
  q = Q.quantize_weight(w, "int8", 1, 0)
  scale = np.asarray(q.q.scale)
  assert scale.shape == (2, 1, 4, 32)
  np.testing.assert_allclose(scale, np.abs(np.asarray(w)).max(1, keepdims=True) / 127.5,
                             rtol=1e-6)
  err = np.abs(np.asarray(q.dequantize()) - np.asarray(w))
  # float32 w / scale and q * scale round at up to 128 steps x 2^-24: 8e-6 of a step
  assert (err <= scale * (0.5 + 2e-5)).all()
  assert Q.quantize_weight(w, "nf4", 1, 64).q.scale.shape == (2, 2, 4, 32)


# Budgets: relative RMS error of the logits against the bf16 forward of the same
# weights on this random model, measured 0.028 (int8, one scale per output channel)
# and 0.32 (nf4, blocks of 64); for scale, bf16 itself is 0.011 off float32 here.
# A random model amplifies weight noise more than a trained one (SmolLM2-135M figures
# in docs/benchmarks.md).
@pytest.mark.parametrize("kind,block,budget", [("int8", 0, 0.04), ("nf4", 64, 0.4)])
def test_qlora_forward_within_budget_of_bf16(kind, block, budget):
  cfg = CFG.replace(dtype="bfloat16")
  base = jax.tree.map(lambda x: x.astype(jnp.bfloat16), rjm.init_params(CFG,
                                                                       jax.random.key(0)))
  ref = _logits(base, cfg)
  qbase = Q.quantize_layers(base, LORA.names(), kind, block)
  assert qbase.layers.wq.q.qvalue.dtype != jnp.bfloat16
  ad = L.init_adapters(cfg, LORA, jax.random.key(1))
  got = _logits(L.with_adapters(qbase, ad, LORA), cfg)
  rel = float(jnp.sqrt(jnp.mean((got - ref) ** 2) / jnp.mean(ref ** 2)))
  assert 0 < rel <= budget
  # merged (dequantized + adapters) is the same model
  np.testing.assert_allclose(_logits(L.merge(qbase, ad, LORA, jnp.float32), cfg), got,
                             atol=0.05 * float(jnp.abs(ref).max()))
