"""Shared fixtures: one tiny random model for every sampler test (shapes kept few, so
the handful of compiled programs is reused across tests)."""
import jax
import pytest

from reasoning_jax import model as rjm

PROMPTS = [[5, 9, 2], [7, 1, 3, 3, 8, 12, 4, 11, 6], [30, 31, 32, 33, 34]]


@pytest.fixture(scope="session")
def tiny():
  """(config, params) of the 64-token tiny preset with non-trivial random weights."""
  cfg = rjm.preset("tiny")
  return cfg, rjm.init_params(cfg, jax.random.key(3), scale=2.0)
