"""Tokenizers behind one interface (`Tokenizer`), and `load_tokenizer` to pick the right one.

    tok = load_tokenizer("path/to/checkpoint")        # tokenizer.json (+ config) or tokenizer.model
    tok = load_tokenizer("model.gguf")                # tokenizer stored in GGUF metadata
    tok = synthetic_tokenizer()                       # shipped tiny SentencePiece model
    check_vocab_size(tok, model_cfg.vocab_size)       # fail early on a mismatched pair
    export_tokenizer(tok, "out_dir")                  # files transformers.AutoTokenizer reads
"""
from __future__ import annotations

import os

from reasoning_jax.data.tokenizer.base import Tokenizer, check_vocab_size
from reasoning_jax.data.tokenizer.export import (
    char_level_tokenizer, copy_tokenizer_files, export_tokenizer)
from reasoning_jax.data.tokenizer.gguf_tokenizer import (
    build_gguf_tokenizer, load_gguf_tokenizer, read_gguf_tokenizer_metadata, smollm2_gguf_path)
from reasoning_jax.data.tokenizer.hf import HFTokenizer
from reasoning_jax.data.tokenizer.sentencepiece_tokenizer import (
    SentencePieceTokenizer, synthetic_tokenizer)

__all__ = [
    "Tokenizer", "check_vocab_size", "HFTokenizer", "SentencePieceTokenizer",
    "load_gguf_tokenizer", "build_gguf_tokenizer", "read_gguf_tokenizer_metadata",
    "smollm2_gguf_path", "synthetic_tokenizer", "load_tokenizer", "export_tokenizer",
    "char_level_tokenizer", "copy_tokenizer_files",
]


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
  """Loads a tokenizer from a checkpoint directory, a `.gguf` file or a `.model` file.

  A directory with `tokenizer.json` loads through `tokenizers` (HFTokenizer.from_dir); one
  with only `tokenizer.model` through SentencePiece, taking `chat_template` and
  `add_bos_token` from its tokenizer_config.json when present.
  """
  path = os.fspath(path)
  if os.path.isfile(path):
    if path.endswith(".gguf"):
      return load_gguf_tokenizer(path)
    if path.endswith(".model"):
      return SentencePieceTokenizer(path)
    if os.path.basename(path) == "tokenizer.json":
      return HFTokenizer.from_dir(os.path.dirname(path) or ".")
    raise ValueError(f"Unknown tokenizer file type: {path} (expected .gguf, .model or tokenizer.json).")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"Tokenizer path not found: {path}")
  if os.path.exists(os.path.join(path, "tokenizer.json")):
    return HFTokenizer.from_dir(path)
  sp_file = os.path.join(path, "tokenizer.model")
  if os.path.exists(sp_file):
    import json
    config = {}
    cfg_file = os.path.join(path, "tokenizer_config.json")
    if os.path.exists(cfg_file):
      with open(cfg_file, encoding="utf-8") as f:
        config = json.load(f)
    tok = SentencePieceTokenizer(sp_file, chat_template=config.get("chat_template"),
                                 add_bos_token=bool(config.get("add_bos_token", False)))
    tok.source_dir = path
    return tok
  raise FileNotFoundError(f"No tokenizer.json or tokenizer.model in {path}.")
