"""Aggregation modes by hand, and exact metric merging."""
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax.objectives import aggregation
from reasoning_jax.objectives.types import masked_metric, merge_metrics, metric_values

L = jnp.array([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0], [7.0, 7.0, 7.0]])
M = jnp.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # row 3 is all padding


@pytest.mark.parametrize("mode,total,weight", [
    ("token-mean", 10.0, 4.0),
    ("seq-mean-token-mean", 2.0 + 4.0, 2.0),
    ("seq-mean-token-sum", 10.0, 2.0),
    ("seq-sum-const", 10.0, 2.0 * 8),
])
def test_modes_by_hand(mode, total, weight):
  w = aggregation.aggregate(L, M, mode, norm_const=8)
  np.testing.assert_allclose(w.total, total, rtol=1e-6)
  np.testing.assert_allclose(w.weight, weight, rtol=1e-6)
  np.testing.assert_allclose(w.value, total / weight, rtol=1e-6)


def test_seq_sum_const_defaults_to_T_and_rejects_bad_modes():
  w = aggregation.aggregate(L, M, "seq-sum-const")
  np.testing.assert_allclose(w.weight, 2.0 * 3)
  with pytest.raises(ValueError, match="unknown loss aggregation"):
    aggregation.aggregate(L, M, "mean-of-means")


def test_masked_inf_does_not_poison_the_loss():
  bad = L.at[1, 2].set(jnp.inf).at[2, 0].set(jnp.nan)
  for mode in aggregation.AGG_MODES:
    np.testing.assert_allclose(aggregation.aggregate(bad, M, mode).value,
                               aggregation.aggregate(L, M, mode).value)


def test_metric_merge_is_exact():
  x = jnp.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
  m = jnp.array([[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 1.0]])
  full = {r: masked_metric(x, m, r) for r in ("mean", "std", "max", "min")}
  parts = [{r: masked_metric(x[i:i + 1], m[i:i + 1], r) for r in full} for i in range(2)]
  merged = metric_values(merge_metrics(*parts))
  vals = np.array([1, 2, 4, 5, 7, 8], np.float64)
  np.testing.assert_allclose(merged["mean"], vals.mean(), rtol=1e-6)
  np.testing.assert_allclose(merged["std"], vals.std(), rtol=1e-5)
  assert merged["max"] == 8.0 and merged["min"] == 1.0
  for k, v in metric_values(full).items():
    np.testing.assert_allclose(merged[k], v, rtol=1e-5)
  with pytest.raises(ValueError, match="keys differ"):
    merge_metrics(full, {"mean": full["mean"]})
