"""Sampling functions draw from the exact tempered / top-k / top-p distribution.

The reference distribution is computed independently in numpy (float64) from the
definitions: softmax(logits / T), keep the k largest, renormalise, keep the smallest
prefix whose mass reaches p, renormalise.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from reasoning_jax import sampling as rs
from reasoning_jax.sampling import processors, vocab

LOGITS_V = np.array([2.0, 1.5, 1.2, 0.3, 0.0, -0.4, -1.0, -2.5], np.float32)


def reference_probs(logits, temperature, top_k, top_p) -> np.ndarray:
  """The sampling distribution in token order, float64."""
  z = np.asarray(logits, np.float64) / temperature
  order = np.argsort(-z, kind="stable")
  keep = np.ones(len(z), bool)
  if top_k > 0:
    keep[order[top_k:]] = False
  p = np.where(keep, np.exp(z - z.max()), 0.0)
  p /= p.sum()
  if top_p < 1.0:
    mass = 0.0
    for i in order:
      if mass >= top_p:
        keep[i] = False
      mass += p[i]
    p = np.where(keep, p, 0.0)
    p /= p.sum()
  return p


@jax.jit
def _draw(key, logits_V, temperature, top_k, top_p):
  n = 40_000
  keys = jax.random.split(key, n)
  logits_NV = jnp.broadcast_to(logits_V[None, :], (n, logits_V.shape[0]))
  return rs.sample(keys, logits_NV, temperature, top_k, top_p)


CASES = [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.6, 3, 1.0), (1.0, 0, 0.6), (0.5, 4, 0.8),
         (2.0, 0, 0.9)]


@pytest.mark.parametrize("temperature,top_k,top_p", CASES)
def test_samples_follow_the_truncated_tempered_distribution(temperature, top_k, top_p):
  want = reference_probs(LOGITS_V, temperature, top_k, top_p)
  tok, logp = _draw(jax.random.key(42), LOGITS_V, temperature, top_k, top_p)
  tok, logp = np.asarray(tok), np.asarray(logp)
  counts = np.bincount(tok, minlength=len(LOGITS_V))
  support = want > 0
  # Removed tokens are never drawn, and kept ones follow the distribution (chi-square).
  assert counts[~support].sum() == 0
  assert stats.chisquare(counts[support], want[support] * len(tok)).pvalue > 1e-3
  # The test has power: the untruncated, untempered distribution is rejected.
  plain = reference_probs(LOGITS_V, 1.0, 0, 1.0)
  if not np.allclose(plain, want, atol=0.02):
    assert stats.chisquare(counts, plain * len(tok)).pvalue < 1e-6
  # Each draw's logprob is its log-probability under the sampling distribution.
  np.testing.assert_allclose(logp, np.log(want[tok]), rtol=0, atol=2e-6)


def test_greedy_is_argmax_with_zero_logprob_and_first_id_on_ties():
  logits = jnp.array([[0.0, 3.0, 3.0, 1.0], [5.0, -1.0, 0.0, 0.0]])
  keys = jax.random.split(jax.random.key(0), 2)
  tok, logp = rs.sample(keys, logits, 0.0, 0, 1.0)
  np.testing.assert_array_equal(np.asarray(tok), [1, 0])
  np.testing.assert_array_equal(np.asarray(logp), [0.0, 0.0])


def test_top_k_keeps_exactly_k_tokens_on_ties_and_top_p_keeps_the_top_token():
  kept = lambda x, k, p: np.isfinite(np.asarray(_truncate(  # noqa: E731
      jnp.asarray(x, jnp.float32), jnp.int32(k), jnp.float32(p)))).tolist()
  # Ties at the k-th logit: the lowest ids stay, exactly k of them.
  assert kept([[1.0, 3.0, 3.0, 3.0, 0.0]], 2, 1.0) == [[False, True, True, False, False]]
  # top_p smaller than the top token's mass still keeps that token.
  assert kept([[0.0, 4.0, 1.0]], 0, 0.01) == [[False, True, False]]
  assert kept([[0.0, 4.0, 1.0]], 0, 0.0) == [[False, True, False]]
  # Four tied tokens of mass 1/4 each: top_p 0.5 keeps the first two by id (the mass
  # before the third is 0.5, not below 0.5); 0.51 keeps three.
  assert kept([[2.0, 2.0, 2.0, 2.0]], 0, 0.5) == [[True, True, False, False]]
  assert kept([[2.0, 2.0, 2.0, 2.0]], 0, 0.51) == [[True, True, True, False]]
  # -0.0 and 0.0 are one value: tied, so the lower id stays.
  assert kept([[-0.0, 0.0, -1.0]], 1, 1.0) == [[True, False, False]]


_truncate = jax.jit(rs.truncate)  # one compilation: the knobs are traced


def _truncate_reference(x, top_k, top_p) -> np.ndarray:
  """Which entries stay, by a stable sort in float64 (the definition)."""
  order = np.argsort(-x.astype(np.float64), kind="stable")
  keep = np.ones(len(x), bool)
  if top_k > 0:
    keep[order[top_k:]] = False
  p = np.where(keep, np.exp(x.astype(np.float64) - x.max()), 0.0)
  p /= p.sum()
  if top_p < 1.0:
    before = np.cumsum(p[order]) - p[order]
    drop = order[1:][before[1:] >= top_p]
    keep[drop] = False
  return keep


@pytest.mark.parametrize("top_k,top_p", [(50, 1.0), (0, 0.9), (300, 0.7), (7, 0.3),
                                         (1, 0.9), (0, 0.999)])
def test_truncate_matches_a_sort_on_a_large_vocabulary_with_ties(top_k, top_p):
  rng = np.random.default_rng(top_k)
  V = 3 * 256 + 11
  # Rounded logits make many exact ties, some at the cut points.
  # Seven rows: more than vocab.CPU_ROWS and not a multiple of it, so on CPU the rows
  # go through the chunked path, padding included.
  x = np.round(rng.normal(scale=2.0, size=(7, V)), 1).astype(np.float32)
  x[1, rng.choice(V, 100, replace=False)] = -np.inf
  got = np.isfinite(np.asarray(_truncate(jnp.asarray(x), jnp.int32(top_k),
                                         jnp.float32(top_p))))
  for b in range(len(x)):
    want = _truncate_reference(x[b], top_k, top_p)
    np.testing.assert_array_equal(got[b], want, err_msg=f"row {b}")
    if top_p >= 1.0:
      assert got[b].sum() == top_k


@pytest.mark.parametrize("temperature,top_k,top_p", CASES)
def test_processed_logprobs_match_reference(temperature, top_k, top_p):
  got = np.asarray(rs.processed_logprobs(jnp.asarray(LOGITS_V)[None], temperature, top_k,
                                         top_p))[0]
  want = reference_probs(LOGITS_V, temperature, top_k, top_p)
  np.testing.assert_array_equal(np.isfinite(got), want > 0)
  np.testing.assert_allclose(np.exp(got), want, rtol=0, atol=1e-6)


def test_token_logprobs_is_unmodified_log_softmax():
  logits = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
  tok = np.array([0, 5, 7], np.int32)
  want = logits[np.arange(3), tok] - np.log(np.exp(logits.astype(np.float64)).sum(-1))
  np.testing.assert_allclose(np.asarray(rs.token_logprobs(jnp.asarray(logits), tok)),
                             want, rtol=0, atol=1e-6)


def test_argmax_matches_jnp_argmax_across_blocks_ties_and_inf():
  rng = np.random.default_rng(0)
  V = 3 * vocab.BLOCK + 37  # three full blocks and a padded one
  x = rng.normal(size=(6, V)).astype(np.float32)
  x[1, [5, 600, 800]] = 9.0                 # ties across blocks: the first wins
  x[2, :] = -np.inf                         # nothing finite: index 0, as jnp.argmax
  x[3, [300, 700]] = 7.0                    # ties in different blocks, no padding
  x[4, V - 1] = 50.0                        # the winner in the padded last block
  x[5, :] = 1.0                             # all tied
  got = np.asarray(vocab.argmax(jnp.asarray(x)))
  np.testing.assert_array_equal(got, np.asarray(jnp.argmax(jnp.asarray(x), axis=-1)))
  np.testing.assert_array_equal(got, [np.argmax(x[0]), 5, 0, 300, V - 1, 0])
  # With NaN the index stays in range: a NaN's or the finite maximum's.
  x[0, [100, 400]] = np.nan
  i = int(vocab.argmax(jnp.asarray(x[:1]))[0])
  assert i in (100, int(np.nanargmax(x[0])))


def test_draw_follows_softmax_across_blocks_and_never_draws_removed_tokens():
  rng = np.random.default_rng(1)
  V = 2 * vocab.BLOCK + 100
  logits = rng.normal(scale=1.5, size=V).astype(np.float32)
  logits[rng.choice(V, size=200, replace=False)] = -np.inf   # removed tokens
  logits[V - 1] = 3.0                                          # mass in the padded block
  p = np.where(np.isfinite(logits), np.exp(logits.astype(np.float64) - 3.0), 0.0)
  p /= p.sum()
  n = 60_000
  keys = jax.random.split(jax.random.key(7), n)
  tok, logp = jax.jit(processors.draw)(keys, jnp.broadcast_to(jnp.asarray(logits), (n, V)))
  tok, logp = np.asarray(tok), np.asarray(logp)
  assert p[tok].min() > 0
  counts = np.bincount(tok, minlength=V)
  # Chi-square over 20 runs of consecutive ids of about equal mass (single tokens are
  # too rare for the test); the runs cross block boundaries.
  edges = np.unique(np.searchsorted(np.cumsum(p), np.linspace(0, 1, 21)[1:-1]))
  bins_c = [b.sum() for b in np.split(counts, edges)]
  bins_p = [b.sum() for b in np.split(p, edges)]
  assert stats.chisquare(bins_c, np.asarray(bins_p) * n).pvalue > 1e-3
  np.testing.assert_allclose(logp, np.log(p[tok]), rtol=0, atol=2e-6)


def test_bisection_unrolled_off_cpu_finds_the_same_cuts():
  """`vocab._largest` runs unrolled on GPUs and TPUs (fewer kernels per step); here,
  with unrolling forced, it finds the same per-row cuts as the rolled loop, and those
  are the exact k-th largest keys."""
  rng = np.random.default_rng(0)
  key = vocab._order_key(jnp.asarray(rng.normal(size=(5, 300)), jnp.float32))
  k = jnp.asarray([1, 7, 50, 299, 300], jnp.int32)
  count = lambda t: jnp.sum(key >= t[:, None], axis=-1) >= k  # noqa: E731
  cuts = [np.asarray(jax.jit(lambda u=u: vocab._largest(count, (5,), unroll=u))())
          for u in (False, True)]
  np.testing.assert_array_equal(cuts[0], cuts[1])
  want = np.sort(np.asarray(key), axis=-1)[np.arange(5), 300 - np.asarray(k)]
  np.testing.assert_array_equal(cuts[1], want)
