"""Forward-pass properties: cached decode == full pass, causality, padding, dtypes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax import model as rjm

# A config exercising every switch at once: GQA, q/k norms, biases, post norms, soft
# caps, local/global layers with their own RoPE, Gemma norm offsets, untied head.
MIXED = rjm.ModelConfig(
    family="gemma3", vocab_size=64, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2,
    head_dim=8, ffw_dim=48, norm_offset=1.0, rope=rjm.RopeConfig(theta=1e4),
    local_rope=rjm.RopeConfig(theta=100.0, kind="linear", factor=2.0),
    tie_embeddings=False, qkv_bias=True, qk_norm=True, post_norms=True, embed_scale=True,
    attn_softcap=20.0, final_softcap=15.0, sliding_window=3,
    layer_is_local=(True, False, True), activation="gelu_tanh")
CONFIGS = {"tiny": rjm.preset("tiny"), "mixed": MIXED}


def _params(cfg, seed=0):
  # Scale 1 random norms/biases too, so every code path moves the logits.
  p = rjm.init_params(cfg, jax.random.key(seed))
  leaves, tree = jax.tree.flatten(p)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape, x.dtype)
                                   for x, k in zip(leaves, keys)])


def _full(params, cfg, tokens):
  B, T = tokens.shape
  pos = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32)[None], (B, T))
  return rjm.forward(params, tokens, pos, cfg)[0]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cached_decode_equals_full_forward(name):
  cfg = CONFIGS[name]
  params = _params(cfg)
  tokens = jax.random.randint(jax.random.key(3), (2, 10), 0, cfg.vocab_size)
  want = _full(params, cfg, tokens)
  step = jax.jit(rjm.forward, static_argnums=3)
  cache = rjm.init_cache(cfg, batch=2, length=16)
  # Prefill 4 tokens, then one token at a time.
  pos = jnp.broadcast_to(jnp.arange(4, dtype=jnp.int32)[None], (2, 4))
  logits, cache = step(params, tokens[:, :4], pos, cfg, cache)
  got = [logits]
  for t in range(4, 10):
    logits, cache = step(params, tokens[:, t:t + 1], jnp.full((2, 1), t, jnp.int32), cfg,
                         cache)
    got.append(logits)
  np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=1e-5, rtol=0)
  assert int(cache.index) == 10


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_left_padding_is_invisible(name):
  """A left-padded row (positions -1 on pads) gives the unpadded row's logits."""
  cfg = CONFIGS[name]
  params = _params(cfg)
  row = jax.random.randint(jax.random.key(4), (1, 6), 0, cfg.vocab_size)
  want = _full(params, cfg, row)
  padded = jnp.concatenate([jnp.full((1, 3), 7, jnp.int32), row], axis=1)
  pos = jnp.concatenate([jnp.full((1, 3), -1, jnp.int32),
                         jnp.arange(6, dtype=jnp.int32)[None]], axis=1)
  got = rjm.forward(params, padded, pos, cfg)[0][:, 3:]
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_causality_by_gradient(name):
  """d logits[t] / d input embedding[s] is exactly zero for every s > t."""
  # Untied, with distinct tokens, so an embedding row only enters through its position.
  cfg = CONFIGS[name].replace(tie_embeddings=False)
  params = _params(cfg)
  tokens = jax.random.permutation(jax.random.key(5), cfg.vocab_size)[:8][None]
  tokens = tokens.astype(jnp.int32)
  pos = jnp.arange(8, dtype=jnp.int32)[None]

  @jax.jit
  def grad_norms(t):
    def f(rows):
      p = params.replace(embed=params.embed.at[tokens[0]].set(rows))
      return rjm.forward(p, tokens, pos, cfg)[0][0, t].sum()
    return jnp.abs(jax.grad(f)(params.embed[tokens[0]])).sum(-1)

  for t in (0, 3, 6):
    norms = np.asarray(grad_norms(t))
    assert np.all(norms[t + 1:] == 0.0), (t, norms)
    assert np.all(norms[:t + 1] > 0), (t, norms)


def test_sliding_window_limits_attention():
  """On an all-local model, token 0 cannot influence logits `window` or more later."""
  cfg = MIXED.replace(layer_is_local=(True, True, True))
  params = _params(cfg)
  a = jax.random.randint(jax.random.key(6), (1, 9), 0, cfg.vocab_size)
  b = a.at[0, 0].set((a[0, 0] + 1) % cfg.vocab_size)
  la, lb = _full(params, cfg, a), _full(params, cfg, b)
  diff = np.asarray(jnp.abs(la - lb).max(-1))[0]
  reach = cfg.n_layers * (cfg.sliding_window - 1)   # receptive field of 3 local layers
  assert np.all(diff[reach + 1:] == 0.0) and diff[reach] > 0


def test_bfloat16_params_close_to_float32():
  cfg = rjm.preset("tiny")
  params = _params(cfg)
  cfg16 = cfg.replace(dtype="bfloat16")
  p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  tokens = np.arange(12, dtype=np.int32).reshape(2, 6) % cfg.vocab_size
  l32 = np.asarray(rjm.compute_logits(params, cfg, tokens))
  l16 = rjm.compute_logits(p16, cfg16, tokens)
  assert l16.dtype == jnp.float32
  # bf16 keeps 8 mantissa bits: 2^-8 relative per op, a few ops deep.
  assert np.abs(np.asarray(l16) - l32).max() < 0.05 * np.abs(l32).max()


@pytest.mark.parametrize("param_dtype", [None, "float32"])
def test_decode_params_are_bit_identical(param_dtype):
  """`decode_params` (compute dtype, layer weights as uint16 bits) changes nothing in
  the cached forward's results, with bf16 weights and with float32 master weights."""
  cfg = MIXED.replace(dtype="bfloat16", param_dtype=param_dtype)
  params = jax.tree.map(lambda x: x.astype(cfg.weight_dtype), _params(MIXED))
  fast = rjm.decode_params(params, cfg)
  assert fast.layers.wq.dtype == jnp.uint16 and fast.layers.bq.dtype == jnp.uint16
  assert fast.embed.dtype == jnp.bfloat16
  cast = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  tokens = jax.random.randint(jax.random.key(3), (2, 6), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(6, dtype=jnp.int32)[None], (2, 6))
  step = jax.jit(rjm.forward, static_argnums=3)
  outs = []
  for p in (cast, fast):
    cache = rjm.init_cache(cfg, batch=2, length=8)
    prefill, cache = step(p, tokens[:, :5], pos[:, :5], cfg, cache)
    decode, _ = step(p, tokens[:, 5:], pos[:, 5:], cfg, cache)
    outs.append(np.concatenate([prefill, decode], axis=1))
  assert np.abs(outs[0]).max() > 0
  np.testing.assert_array_equal(outs[0], outs[1])


def test_compute_logits_rejects_bad_tokens():
  cfg = rjm.preset("tiny")
  params = rjm.init_params(cfg, jax.random.key(0))
  with pytest.raises(ValueError, match=r"outside \[0, 64\)"):
    rjm.compute_logits(params, cfg, np.array([[1, 64]]))
  with pytest.raises(ValueError, match="2-D"):
    rjm.compute_logits(params, cfg, np.array([1, 2]))
  with pytest.raises(TypeError, match="integer"):
    rjm.compute_logits(params, cfg, np.array([[1.0, 2.0]]))


def test_config_validation_messages():
  with pytest.raises(ValueError, match="multiple of n_kv_heads"):
    rjm.ModelConfig(n_heads=4, n_kv_heads=3)
  with pytest.raises(ValueError, match="one flag per layer"):
    rjm.ModelConfig(n_layers=2, layer_is_local=(True,), sliding_window=4)
  with pytest.raises(ValueError, match="unknown model preset"):
    rjm.preset("gpt5")


def test_params_declared_once():
  cfg = MIXED
  specs = rjm.param_specs(cfg)
  params = rjm.init_params(cfg, jax.random.key(0))
  abstract = rjm.abstract_params(cfg)
  axes = rjm.logical_axes(cfg)
  assert jax.tree.structure(params) == jax.tree.structure(abstract)
  for p, a, ax in zip(jax.tree.leaves(params), jax.tree.leaves(abstract),
                      jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))):
    assert p.shape == a.shape and len(ax) == p.ndim
  assert set(specs.layers.present()) >= {"bq", "q_norm", "post_attn_norm"}
  n = sum(x.size for x in jax.tree.leaves(params))
  norms_and_biases = sum(x.size for k, x in params.layers.present().items()
                         if "norm" in k or k.startswith("b")) + cfg.d_model
  assert n - norms_and_biases == cfg.num_params() - 0  # matrices counted by num_params


def test_check_params_names_the_problem():
  cfg = rjm.preset("tiny")
  params = rjm.init_params(cfg, jax.random.key(0))
  bad = params.replace(embed=params.embed[:10])
  with pytest.raises(ValueError, match=r"\.embed: got \(10, 64\)"):
    rjm.check_params(bad, cfg)
  with pytest.raises(TypeError, match="must be a `reasoning_jax.model.Params`"):
    rjm.check_params({"embed": params.embed}, cfg)


@pytest.mark.parametrize("shape,dtype,tol", [((3, 5, 16), jnp.float32, 1e-6),
                                             ((2, 4, 3, 8), jnp.float32, 1e-6),
                                             ((3, 5, 16), jnp.bfloat16, 1e-2)])
def test_scale_last_gradient_equals_autodiff(shape, dtype, tol):
  # scale_last's weight gradient is a ones-vector matmul, not autodiff's reduction;
  # both must give the same numbers (bf16: autodiff rounds the products to bf16).
  from reasoning_jax.model.layers import scale_last
  ky, kw, kg = jax.random.split(jax.random.key(0), 3)
  y = jax.random.normal(ky, shape, dtype)
  w = jax.random.normal(kw, shape[-1:], dtype)
  g = jax.random.normal(kg, shape, dtype)
  plain = lambda y, w: y * w.reshape((1,) * (y.ndim - 1) + w.shape)  # noqa: E731
  out, vjp = jax.vjp(scale_last, y, w)
  ref_out, ref_vjp = jax.vjp(plain, y, w)
  np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(ref_out, np.float32))
  (dy, dw), (rdy, rdw) = vjp(g), ref_vjp(g)
  assert dy.dtype == rdy.dtype == dtype and dw.dtype == rdw.dtype == dtype
  np.testing.assert_array_equal(np.asarray(dy, np.float32), np.asarray(rdy, np.float32))
  exact = np.sum(np.asarray(g, np.float64) * np.asarray(y, np.float64),
                 axis=tuple(range(len(shape) - 1)))
  np.testing.assert_allclose(np.asarray(dw, np.float64), exact, rtol=tol, atol=tol)
  np.testing.assert_allclose(np.asarray(rdw, np.float64), exact, rtol=10 * tol, atol=10 * tol)


def test_init_params_keys_follow_the_leaf_names():
  """Leaf keys are ranked by name path (embed, final_norm, layers.attn_norm, ...,
  layers.wq, layers.wv), not by declaration order, so a key gives the weights it gave
  when params were a dict: the tiny preset's `wq` is the 10th of 11 split keys."""
  cfg = rjm.preset("tiny")
  key = jax.random.key(7)
  got = rjm.init_params(cfg, key).layers.wq
  std = 1.0 / np.sqrt(cfg.d_model)
  want = std * jax.random.normal(jax.random.split(key, 11)[9], got.shape, jnp.float32)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
