"""Greedy tokens equal transformers' `generate(do_sample=False)`, row by row.

Ragged prompts are left-padded into one batch on our side and generated one at a time,
unpadded, by transformers, so padding, positions and the cache are all checked.
"""
import jax
import numpy as np
import pytest

from reasoning_jax import model as rjm
from reasoning_jax import sampling as rs
from tests.model.hf_tiny import FAMILIES, make_tiny

pytestmark = pytest.mark.reference


def hf_greedy(model, prompt, max_new_tokens: int) -> list[int]:
  """transformers' greedy continuation of one unpadded prompt (no early stop)."""
  import torch
  ids = torch.tensor([list(prompt)], dtype=torch.long)
  with torch.no_grad():
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                         eos_token_id=None, pad_token_id=0)
  return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_greedy_matches_transformers_on_ragged_batch(family, tmp_path):
  hf_model = make_tiny(family, tmp_path / "hf")
  hf_model.generation_config.eos_token_id = None
  cfg, params = rjm.load_hf_checkpoint(str(tmp_path / "hf"), dtype="float32")
  rng = np.random.default_rng(7)
  prompts = [rng.integers(0, cfg.vocab_size, size=n).tolist() for n in (3, 9, 6)]
  n_new = 12
  out = rs.generate(params, cfg, prompts, key=jax.random.key(0), max_new_tokens=n_new,
                    temperature=0.0)
  got = np.asarray(out.tokens)
  assert got.shape == (3, n_new)
  np.testing.assert_array_equal(np.asarray(out.lengths), [n_new] * 3)
  np.testing.assert_array_equal(np.asarray(out.prompt_lengths), [3, 9, 6])
  for i, p in enumerate(prompts):
    assert got[i].tolist() == hf_greedy(hf_model, p, n_new), f"row {i}"
