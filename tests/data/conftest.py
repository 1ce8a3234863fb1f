"""Tokenizer fixtures built on disk at test time (no downloads): a tiny Qwen-style
byte-level BPE checkpoint directory and a tiny Gemma-style SentencePiece BPE model."""
import io
import json

import pytest

QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
              r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen2.5's template shape: default system prompt, tools rendered with tojson, and a
# raise_exception guard (added here) so the test also exercises that global.
QWEN_TEMPLATE = (
    "{%- for message in messages %}{%- if message.role not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown role: ' + message.role) }}{%- endif %}{%- endfor %}"
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}"
    "{%- else %}{{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}{%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\n<tools>\" }}\n    {%- for tool in tools %}\n        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n    {%- endfor %}\n    {{- \"\\n</tools><|im_end|>\\n\" }}\n"
    "{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n")

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 3.14159 and 1,000,000 people.",
    "def square(x):\n    return x ** 2  # comment\n\nprint(square(12))",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May.",
    "Ünïcödé text: café, naïve, 北京欢迎你, Привет мир, مرحبا",
    "<think>First compute 12 * 7 = 84.</think> The answer is 84.",
    "    indented\ttabs\t\tand   spaces   everywhere\n\n\n",
    "Emoji 👍🏽 🎉 👨‍👩‍👧 and symbols ≤ ≥ ∑ √2",
] * 20

DIVERSE = [
    "", "Hello world", "  leading and trailing  ", "a  1", "x\t\ty", "\n\n\nnewlines\r\n",
    "3.14159 + 2,718 = 5.85959", "1234567890", "The year 2024-01-01 was 365 days",
    "北京欢迎你", "café naïve Ünïcödé", "Привет, мир!", "مرحبا بالعالم",
    "def f(x):\n    return {'a': [x**2, x // 3]}  # tail", "if (a && b) { c->d(); }",
    "👍🏽 🎉 👨‍👩‍👧 🇫🇷", "≤≥∑√ ∀x∃y", "<think>reason</think> answer",
    "<|im_start|>user\nhi<|im_end|>", "it's we're they'll I'M", "   ", "a\u00a0b\u200bc",
]


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory):
  """A tiny Qwen2-style checkpoint directory: tokenizer.json + tokenizer_config.json."""
  from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
  from tokenizers import processors, trainers
  tok = Tokenizer(models.BPE(dropout=None, unk_token=None, continuing_subword_prefix="",
                             end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
  tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
  trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(CORPUS, trainer)
  tok.add_tokens(["<think>", "</think>"])  # Qwen3 keeps these as plain added tokens
  d = tmp_path_factory.mktemp("qwen_tiny")
  tok.save(str(d / "tokenizer.json"))
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None,
            "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
            "add_bos_token": False, "chat_template": QWEN_TEMPLATE}
  (d / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
  return d


@pytest.fixture(scope="session")
def gemma_sp_dir(tmp_path_factory):
  """A tiny Gemma-style SentencePiece BPE model (pad 0, eos 1, bos 2, unk 3, byte fallback,
  turn markers as user-defined pieces) in a checkpoint directory with its template."""
  import sentencepiece as spm
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(CORPUS), model_writer=model, model_type="bpe", vocab_size=400,
      character_coverage=1.0, byte_fallback=True, split_digits=True,
      user_defined_symbols=["<start_of_turn>", "<end_of_turn>", "\n"],
      normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
      allow_whitespace_only_pieces=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
      pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
      num_threads=1, minloglevel=2)
  d = tmp_path_factory.mktemp("gemma_tiny")
  (d / "tokenizer.model").write_bytes(model.getvalue())
  config = {"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
            "pad_token": "<pad>", "unk_token": "<unk>", "add_bos_token": True,
            "chat_template": GEMMA_TEMPLATE}
  (d / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
  return d
