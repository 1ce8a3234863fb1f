"""Trains the tiny SentencePiece model shipped for the synthetic tasks.

    python -m reasoning_jax.data.tokenizer.train_synthetic_sp [--out PATH] [--vocab_size 128]

The corpus is generated here (no download): arithmetic expressions, countdown-style
equations and short English prompts over digits, + - * / = ( ) , . : ? and letters. The
model is a unigram model with every digit its own piece (`split_digits`), so numbers are
spelled digit by digit, which small models learn arithmetic from more easily. Reasoning
markers are user-defined pieces so each is exactly one token, and newline is a piece so
multi-line rationales survive a round trip. Ids are fixed: pad 0, eos 1, bos 2, unk 3
(Gemma's layout). Normalization is the identity and no dummy prefix is added, so
`decode(encode(s)) == s` for any text over the covered characters. Training is seeded and
single-threaded, so re-running it reproduces the shipped file.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import string

import sentencepiece as spm

MARKERS = ("<think>", "</think>", "<answer>", "</answer>", "\n")
WORDS = ("What is", "Compute", "Using the numbers", "make", "Answer", "answer", "The", "is",
         "so", "then", "We", "need", "target", "equation", "result", "step", "Let", "us",
         "sum", "product", "difference", "of", "and", "to", "each", "number", "once", "use",
         "Question", "Solve", "for", "x", "y", "True", "False", "yes", "no")
_ALPHABET = string.digits + string.ascii_letters + " +-*/=(),.:?!'%<>_[]"


def _expression(rng: random.Random, depth: int = 0) -> str:
  if depth > 2 or rng.random() < 0.4:
    return str(rng.randint(0, 999))
  op = rng.choice("+-*/")
  left, right = _expression(rng, depth + 1), _expression(rng, depth + 1)
  text = f"{left} {op} {right}" if rng.random() < 0.7 else f"{left}{op}{right}"
  return f"({text})" if rng.random() < 0.3 else text


def corpus(num_lines: int, seed: int = 0) -> list[str]:
  """Synthetic training sentences, deterministic in `seed`."""
  rng = random.Random(seed)
  lines = []
  for _ in range(num_lines):
    kind = rng.random()
    expr = _expression(rng)
    if kind < 0.35:
      lines.append(f"What is {expr}? <think>{expr} = {rng.randint(-99, 9999)}</think>"
                   f" <answer>{rng.randint(-99, 9999)}</answer>")
    elif kind < 0.6:
      nums = ", ".join(str(rng.randint(1, 100)) for _ in range(rng.randint(3, 5)))
      lines.append(f"Using the numbers [{nums}], make {rng.randint(1, 999)}. "
                   f"<think>{expr}</think> <answer>{expr}</answer>")
    elif kind < 0.85:
      lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + ".")
    else:
      # Every covered character appears, so none of them falls back to <unk>.
      lines.append("".join(rng.choice(_ALPHABET) for _ in range(rng.randint(10, 40))))
  return lines


def train(out_path: str, vocab_size: int = 128, num_lines: int = 20000, seed: int = 0) -> None:
  """Trains the model and writes it to `out_path` (a `.model` file)."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(corpus(num_lines, seed)),
      model_writer=model,
      model_type="unigram",
      vocab_size=vocab_size,
      character_coverage=1.0,
      split_digits=True,
      user_defined_symbols=list(MARKERS),
      normalization_rule_name="identity",
      add_dummy_prefix=False,
      remove_extra_whitespaces=False,
      allow_whitespace_only_pieces=True,
      pad_id=0, eos_id=1, bos_id=2, unk_id=3,
      pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
      num_threads=1,
      minloglevel=2,
  )
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  with open(out_path, "wb") as f:
    f.write(model.getvalue())


def main() -> None:
  """Command-line entry point."""
  default_out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "assets", "synthetic_sp.model")
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=default_out)
  parser.add_argument("--vocab_size", type=int, default=128)
  parser.add_argument("--num_lines", type=int, default=20000)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  train(args.out, args.vocab_size, args.num_lines, args.seed)
  sp = spm.SentencePieceProcessor(model_file=args.out)
  print(f"wrote {args.out}: {sp.get_piece_size()} pieces")


if __name__ == "__main__":
  main()
