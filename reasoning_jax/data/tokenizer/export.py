"""Write a run's tokenizer next to an exported checkpoint, in the files transformers reads.

`transformers.AutoTokenizer.from_pretrained(out_dir)` then encodes text to the same ids
as ours:

- a tokenizer loaded from a checkpoint directory: its tokenizer files are copied as they
  are (tokenizer.json, tokenizer_config.json, tokenizer.model, chat_template.jinja, ...);
- a tokenizer built from GGUF metadata (or any other `HFTokenizer`): its `tokenizers`
  backend is written as tokenizer.json, with a tokenizer_config.json holding the special
  tokens, `add_bos_token` and the chat template, and a post-processor that prepends BOS
  exactly when `add_bos_token` says so (transformers' `add_special_tokens=True`);
- a task's character vocabulary (`TaskSpec.tokenizer="char"`): a `tokenizers` WordLevel
  model over single characters (`char_level_tokenizer`), BOS prepended as the trainer's
  prompts have it.

A bare SentencePiece `.model` (no checkpoint directory around it) is refused: transformers
reads it only through a model-specific slow tokenizer class we cannot choose for it.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors

from reasoning_jax.data.tokenizer.hf import HFTokenizer

# Every file transformers' tokenizers read from a checkpoint directory.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "chat_template.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json")


def char_level_tokenizer(specials: Sequence[str], chars: str, *, bos_token: str,
                         eos_token: str, pad_token: str) -> HFTokenizer:
  """A `tokenizers` WordLevel tokenizer with one token per character.

  Ids: `specials` first (in order), then each character of `chars`, as
  `reasoning_jax.data.tasks.CharVocab` numbers them. The specials are special tokens, so
  their spelling in text ('<eos>') maps to their id, where CharVocab would spell it out
  character by character; a character outside `chars` is an error in both.
  """
  vocab = {tok: i for i, tok in enumerate([*specials, *chars])}
  if len(vocab) != len(specials) + len(chars):
    raise ValueError(f"char vocabulary {chars!r} repeats a character or a special token")
  # No unk token: encoding a character outside the vocabulary raises, as CharVocab does.
  backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="\x00<no unk>"))
  # `[\s\S]` is any one code point, newlines included.
  backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
  backend.decoder = decoders.Fuse()
  backend.add_special_tokens([AddedToken(s, normalized=False, special=True)
                              for s in specials])
  return HFTokenizer(backend, special_tokens={"bos_token": bos_token, "eos_token": eos_token,
                                              "pad_token": pad_token},
                     add_bos_token=True)


def _with_bos_policy(tok: HFTokenizer) -> tokenizers.Tokenizer:
  """A copy of the backend whose post-processor prepends BOS iff `tok.add_bos_token`."""
  backend = tokenizers.Tokenizer.from_str(tok.backend.to_str())
  first = backend.encode("", add_special_tokens=True).ids[:1]
  adds_bos = tok.bos_id is not None and first == [tok.bos_id]
  if tok.add_bos_token and not adds_bos:
    bos = tok.special_tokens["bos_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.bos_id)])
  elif not tok.add_bos_token and adds_bos:
    backend.post_processor = None
  return backend


def save_hf_tokenizer(tok: HFTokenizer, out_dir: str) -> list[str]:
  """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json for `tok`."""
  os.makedirs(out_dir, exist_ok=True)
  _with_bos_policy(tok).save(os.path.join(out_dir, "tokenizer.json"))
  special = dict(tok.special_tokens)
  config: dict[str, Any] = {
      # The generic fast class: it runs tokenizer.json as written, where a model class
      # (LlamaTokenizerFast, Qwen2TokenizerFast) may rebuild parts from its own defaults.
      "tokenizer_class": "PreTrainedTokenizerFast",
      **{name: special.get(name) for name in ("bos_token", "eos_token", "pad_token",
                                              "unk_token")},
      "add_bos_token": tok.add_bos_token, "add_eos_token": False,
      # transformers would otherwise rewrite " ." as "." when decoding.
      "clean_up_tokenization_spaces": False,
  }
  if tok.chat_template is not None:
    config["chat_template"] = tok.chat_template
  written = []
  for name, content in (("tokenizer_config.json", config),
                        ("special_tokens_map.json", special)):
    with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
      json.dump(content, f, indent=2, ensure_ascii=False)
    written.append(name)
  return ["tokenizer.json", *written]


def copy_tokenizer_files(src_dir: str, out_dir: str) -> list[str]:
  """Copy the tokenizer files of checkpoint directory `src_dir` into `out_dir`."""
  os.makedirs(out_dir, exist_ok=True)
  names = [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(src_dir, n))]
  if not names:
    raise FileNotFoundError(f"{src_dir} holds no tokenizer files (looked for "
                            f"{list(TOKENIZER_FILES)})")
  for n in names:
    shutil.copyfile(os.path.join(src_dir, n), os.path.join(out_dir, n))
  return names


def export_tokenizer(tok: Any, out_dir: str) -> list[str]:
  """Write `tok` (a `Tokenizer` or a task's `CharVocab`) into `out_dir` for transformers.

  Returns the names of the files written. Raises ValueError for a SentencePiece model
  that did not come from a checkpoint directory.
  """
  source = getattr(tok, "source_dir", None)
  if source:
    return copy_tokenizer_files(source, out_dir)
  if isinstance(tok, HFTokenizer):
    return save_hf_tokenizer(tok, out_dir)
  if hasattr(tok, "chars") and hasattr(tok, "specials"):  # a task's CharVocab
    specials = list(tok.specials)
    return save_hf_tokenizer(char_level_tokenizer(
        specials, tok.chars, bos_token=specials[tok.bos_id], eos_token=specials[tok.eos_id],
        pad_token=specials[tok.pad_id]), out_dir)
  raise ValueError(
      f"a {type(tok).__name__} outside a checkpoint directory has no tokenizer.json form; "
      "copy its .model file next to the export and give transformers the model's own "
      "tokenizer class")
