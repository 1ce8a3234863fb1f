"""Logits equal transformers' on tiny random checkpoints of every family, both ways."""
import numpy as np
import pytest

from reasoning_jax import model as rjm
from tests.model.hf_tiny import FAMILIES, hf_logits, make_tiny

pytestmark = pytest.mark.reference


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_import_and_export_match_transformers(family, tmp_path):
  import transformers
  hf_model = make_tiny(family, tmp_path / "hf")
  tokens = np.random.default_rng(1).integers(0, 96, size=(2, 12)).astype(np.int32)
  want = hf_logits(hf_model, tokens)

  cfg, params = rjm.load_hf_checkpoint(str(tmp_path / "hf"), dtype="float32")
  got = np.asarray(rjm.compute_logits(params, cfg, tokens))
  assert got.dtype == np.float32 and got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)

  rjm.save_hf_checkpoint(params, cfg, str(tmp_path / "export"))
  back = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path / "export"), attn_implementation="eager", dtype="float32").eval()
  np.testing.assert_allclose(hf_logits(back, tokens), want, atol=1e-4, rtol=0)
