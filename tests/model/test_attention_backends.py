"""The attention backend seam: the Pallas kernel (splash attention, run in Pallas'
interpreter on this CPU) against the XLA reference, and "auto"'s choice.

Rounding budgets. float32: the kernel's online softmax sums in another order and
multiplies q by the scale before the product (the reference scales the scores), a few
float32 ulps per value: 2e-5 absolute on outputs and gradients of magnitude ~1.
bfloat16: the scaled q is rounded to bf16 before the product (2^-9 relative) and the
probabilities are rounded to bf16 for the weighted sum on both sides but from
slightly different float32 values: 2e-2 absolute on outputs of magnitude ~1 (a few
bf16 ulps).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax import model as rjm
from reasoning_jax.model.attention import Positions, attention

T = 128  # splash tiles keys by 128 (TPU lanes); other lengths are padded to it
BUDGET = {jnp.float32: 2e-5, jnp.bfloat16: 2e-2}

GQA = rjm.ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                      head_dim=16, ffw_dim=48, tie_embeddings=False)
# Gemma-2-like: sliding-window local layers, attention soft cap, MQA (one kv head).
LOCAL = GQA.replace(family="gemma2", n_kv_heads=1, attn_softcap=20.0, sliding_window=7,
                    layer_is_local=(True, False), norm_offset=1.0, post_norms=True)


def _positions(B: int, pads: tuple[int, ...]) -> jax.Array:
  """Left-padded rows: `pads[b]` padding slots (position -1), then 0, 1, ..."""
  idx = jnp.arange(T, dtype=jnp.int32)[None]
  pad = jnp.asarray(pads, jnp.int32)[:, None]
  return jnp.where(idx < pad, -1, idx - pad)[:B]


def _qkv(cfg, dtype, B=2, S=T, T_q=T, seed=0):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(kq, (B, T_q, cfg.n_heads, cfg.head_dim), jnp.float32)
  k = jax.random.normal(kk, (B, cfg.n_kv_heads, S, cfg.head_dim), jnp.float32)
  v = jax.random.normal(kv, (B, cfg.n_kv_heads, S, cfg.head_dim), jnp.float32)
  return q.astype(dtype), k.astype(dtype), v.astype(dtype)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("cfg,is_local", [(GQA, False), (LOCAL, True), (LOCAL, False)],
                         ids=["gqa", "local-softcap", "global-softcap"])
def test_pallas_training_attention_equals_xla(cfg, is_local, dtype):
  """Forward and the gradients of q, k and v on real rows, with left padding."""
  pos_BT = _positions(2, (0, 37))
  pos = Positions.of(pos_BT, pos_BT, cfg)
  q, k, v = _qkv(cfg, dtype)
  real = (pos_BT >= 0)[:, :, None, None]
  g = jax.random.normal(jax.random.key(9), q.shape, jnp.float32)

  def run(backend):
    c = cfg.replace(attention_backend=backend, dtype=jnp.dtype(dtype).name)

    def loss(q, k, v):
      o = attention(q, k, v, pos, jnp.asarray(is_local), c)
      return jnp.sum(jnp.where(real, o.astype(jnp.float32) * g, 0.0)), o
    (_, o), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    return [np.asarray(x, np.float32) for x in (o, *grads)]

  want, got = run("xla"), run("pallas")
  tol = BUDGET[dtype]
  mask = np.asarray(real)
  for name, w, x in zip(("out", "dq", "dk", "dv"), want, got):
    if name in ("out", "dq"):  # per query: padding queries' rows are never read
      w, x = np.where(mask, w, 0), np.where(mask, x, 0)
    assert np.abs(w).max() > 0.1, name
    np.testing.assert_allclose(x, w, rtol=0, atol=tol * max(1.0, np.abs(w).max()),
                               err_msg=name)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_pallas_decode_attention_equals_xla(dtype):
  """One query per row over a cache of 128 slots with left padding, empty slots and
  a sliding window; a batch filler row (no valid slot) stays finite."""
  cfg = LOCAL
  k_pos = jnp.stack([jnp.where(jnp.arange(T) < 50, jnp.arange(T), -1),
                     jnp.where((jnp.arange(T) >= 10) & (jnp.arange(T) < 90),
                               jnp.arange(T) - 10, -1),
                     jnp.full((T,), -1)]).astype(jnp.int32)
  q_pos = jnp.asarray([[49], [79], [-1]], jnp.int32)
  q, k, v = _qkv(cfg, dtype, B=3, T_q=1)
  for is_local in (False, True):
    pos = Positions.of(q_pos, k_pos, cfg, decode=True)
    outs = [np.asarray(attention(q, k, v, pos, jnp.asarray(is_local),
                                 cfg.replace(attention_backend=b,
                                             dtype=jnp.dtype(dtype).name)), np.float32)
            for b in ("xla", "pallas")]
    assert np.isfinite(outs[1]).all()
    np.testing.assert_allclose(outs[1][:2], outs[0][:2], rtol=0, atol=BUDGET[dtype])


def test_pallas_model_forward_and_cached_decode_equal_xla():
  """The whole model (float32, GQA + local layers + soft caps): a padded full forward
  and a 128-slot cached prefill + decode give the XLA backend's logits on real rows."""
  cfg = LOCAL
  params = rjm.init_params(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, T), 0, cfg.vocab_size)
  pos = _positions(2, (0, 20))
  logits = {}
  for b in ("xla", "pallas"):
    c = cfg.replace(attention_backend=b)
    full, _ = rjm.forward(params, tokens, pos, c)
    cache = rjm.init_cache(c, batch=2, length=T)
    _, cache = rjm.forward(params, tokens[:, :-1], pos[:, :-1], c, cache)
    step, _ = rjm.forward(params, tokens[:, -1:], pos[:, -1:], c, cache)
    logits[b] = np.asarray(full), np.asarray(step)
  real = np.asarray(pos >= 0)[:, :, None]
  np.testing.assert_allclose(np.where(real, logits["pallas"][0], 0),
                             np.where(real, logits["xla"][0], 0), rtol=0, atol=1e-4)
  np.testing.assert_allclose(logits["pallas"][1], logits["xla"][1], rtol=0, atol=1e-4)


def test_auto_is_the_xla_program_off_a_tpu():
  """On CPU, "auto" computes exactly what "xla" does, and its program contains no
  Mosaic kernel call."""
  cfg = GQA
  params = rjm.init_params(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, T), 0, cfg.vocab_size)
  pos = _positions(2, (0, 5))
  auto = jax.jit(rjm.forward, static_argnums=3)
  got = auto(params, tokens, pos, cfg)[0]
  want = rjm.forward(params, tokens, pos, cfg.replace(attention_backend="xla"))[0]
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  hlo = auto.lower(params, tokens, pos, cfg).as_text()
  assert "tpu_custom_call" not in hlo


def test_unknown_backend_is_named():
  with pytest.raises(ValueError, match="attention_backend 'flash'.*'auto', 'xla', 'pallas'"):
    GQA.replace(attention_backend="flash")


def test_pallas_pads_lengths_that_are_not_whole_tiles():
  """100 tokens (and a 100-slot cache) are padded to a 128 tile inside the kernel
  call; real rows' logits are the XLA backend's (float32 budget above)."""
  cfg = GQA
  params = rjm.init_params(cfg, jax.random.key(0))
  n = 100
  tokens = jax.random.randint(jax.random.key(1), (2, n), 0, cfg.vocab_size)
  pos = _positions(2, (0, 9))[:, T - n:] - (T - n)
  pos = jnp.where(pos < 0, -1, pos)
  out = {}
  for b in ("xla", "pallas"):
    c = cfg.replace(attention_backend=b)
    cache = rjm.init_cache(c, batch=2, length=n)
    _, cache = rjm.forward(params, tokens[:, :-1], pos[:, :-1], c, cache)
    out[b] = (np.asarray(rjm.forward(params, tokens, pos, c)[0]),
              np.asarray(rjm.forward(params, tokens[:, -1:], pos[:, -1:], c, cache)[0]))
  real = np.asarray(pos >= 0)[:, :, None]
  np.testing.assert_allclose(np.where(real, out["pallas"][0], 0),
                             np.where(real, out["xla"][0], 0), rtol=0, atol=1e-4)
  np.testing.assert_allclose(out["pallas"][1], out["xla"][1], rtol=0, atol=1e-4)
