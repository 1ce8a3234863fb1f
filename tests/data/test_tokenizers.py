"""Tokenizer interface: the shipped synthetic SentencePiece model, tokenizer.json loading,
and the vocabulary-size check."""
import json

import pytest
import sentencepiece as spm

from reasoning_jax.data.tokenizer import (HFTokenizer, SentencePieceTokenizer, Tokenizer,
                                          check_vocab_size, load_tokenizer, synthetic_tokenizer)
from reasoning_jax.data.tokenizer import train_synthetic_sp


@pytest.fixture(scope="module")
def synth():
  return synthetic_tokenizer()


def test_synthetic_model_layout(synth):
  assert isinstance(synth, Tokenizer)
  assert synth.vocab_size == 128
  assert (synth.pad_id, synth.eos_id, synth.bos_id) == (0, 1, 2)
  # Reasoning markers and newline are single tokens with fixed ids.
  assert [synth.token_to_id(t) for t in ("<think>", "</think>", "<answer>", "</answer>", "\n")] == [
      4, 5, 6, 7, 8]
  assert synth.token_to_id("not-a-piece") is None
  assert synth.id_to_token(4) == "<think>" and synth.id_to_token(128) is None


def test_synthetic_round_trip_and_digit_split(synth):
  text = "What is (12 + 345) * 6?\n<think>12 + 345 = 357, 357 * 6 = 2142</think> <answer>2142</answer>"
  ids = synth.encode(text)
  assert synth.decode(ids) == text
  assert synth.unk_id not in ids
  digits = [synth.encode(d) for d in "0123456789"]
  assert all(len(d) == 1 for d in digits)
  assert synth.encode("2142") == [digits[2][0], digits[1][0], digits[4][0], digits[2][0]]
  assert synth.encode("a  b") == synth.encode("a") + [synth.token_to_id("▁")] * 2 + synth.encode("b")


def test_synthetic_special_tokens_in_text(synth):
  assert synth.encode("<bos>7<eos>") == [2, synth.token_to_id("7"), 1]
  assert synth.encode("7", add_bos=True) == [2, synth.token_to_id("7")]
  assert synth.decode([2, synth.token_to_id("7"), 1, 0]) == "<bos>7<eos><pad>"
  assert synth.decode([2, synth.token_to_id("7"), 1, 0], skip_special_tokens=True) == "7"


def test_training_script_reproduces_shipped_model(tmp_path):
  out = tmp_path / "sp.model"
  train_synthetic_sp.train(str(out), vocab_size=128, num_lines=20000, seed=0)
  shipped = synthetic_tokenizer()
  fresh = spm.SentencePieceProcessor(model_file=str(out))
  assert [fresh.id_to_piece(i) for i in range(fresh.get_piece_size())] == [
      shipped.id_to_token(i) for i in range(shipped.vocab_size)]


def test_check_vocab_size(synth):
  check_vocab_size(synth, 128)
  check_vocab_size(synth, 256)  # models pad their vocab: a smaller tokenizer is fine
  with pytest.raises(ValueError, match=r"\(128 tokens\) is larger than the model's vocabulary \(100"):
    check_vocab_size(synth, 100)
  with pytest.raises(ValueError, match="positive int"):
    check_vocab_size(synth, 0)


def test_check_vocab_size_special_id_out_of_range():
  class Tok:
    vocab_size, bos_id, eos_id, pad_id = 10, None, 12, 0
  with pytest.raises(ValueError, match="eos_id=12 is outside"):
    check_vocab_size(Tok(), 10)


def test_hf_tokenizer_config_and_jinja_file(qwen_dir, tmp_path):
  tok = HFTokenizer.from_dir(qwen_dir)
  assert tok.special_tokens == {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
  assert tok.chat_template.startswith("{%- for message in messages %}")
  # A separate chat_template.jinja (newer checkpoints) wins over the config's template;
  # special tokens written as AddedToken dicts are read too.
  for name in ("tokenizer.json",):
    (tmp_path / name).write_bytes((qwen_dir / name).read_bytes())
  cfg = {"eos_token": {"content": "<|endoftext|>", "special": True}, "bos_token": "<|im_start|>",
         "chat_template": "unused"}
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
  (tmp_path / "chat_template.jinja").write_text("{{ bos_token }}{{ messages[0]['content'] }}")
  tok = load_tokenizer(tmp_path)
  assert tok.chat_template == "{{ bos_token }}{{ messages[0]['content'] }}"
  assert (tok.bos_id, tok.eos_id) == (tok.token_to_id("<|im_start|>"), tok.token_to_id("<|endoftext|>"))
  assert tok.encode("hi", add_bos=True)[0] == tok.bos_id


def test_hf_tokenizer_errors(qwen_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="No tokenizer.json"):
    HFTokenizer.from_dir(tmp_path)
  (tmp_path / "tokenizer.json").write_bytes((qwen_dir / "tokenizer.json").read_bytes())
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<nope>"}))
  with pytest.raises(ValueError, match="eos_token='<nope>' is not in the tokenizer's vocabulary"):
    HFTokenizer.from_dir(tmp_path)
  tok = HFTokenizer.from_dir(qwen_dir)
  with pytest.raises(ValueError, match="no bos_token"):
    tok.encode("x", add_bos=True)
  with pytest.raises(TypeError, match="expects a str"):
    tok.encode(["x"])


def test_load_tokenizer_dispatch(qwen_dir, gemma_sp_dir):
  assert isinstance(load_tokenizer(qwen_dir), HFTokenizer)
  assert isinstance(load_tokenizer(qwen_dir / "tokenizer.json"), HFTokenizer)
  sp = load_tokenizer(gemma_sp_dir)
  assert isinstance(sp, SentencePieceTokenizer) and sp.add_bos_token and sp.chat_template
  assert isinstance(load_tokenizer(gemma_sp_dir / "tokenizer.model"), SentencePieceTokenizer)
  with pytest.raises(FileNotFoundError):
    load_tokenizer(gemma_sp_dir / "missing")
