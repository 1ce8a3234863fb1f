"""Held-out evaluation: greedy accuracy, pass@k and maj@k, lengths and truncation.

Completions are always generated in full (rationale, marker, answer, EOS) and scored
with each example's own verifier through the reward runner, whatever objective the
model was trained with.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from reasoning_jax import sampling
from reasoning_jax.evaluation.metrics import maj_at_k, mean_pass_at_k
from reasoning_jax.rewards import last_boxed, score_examples
from reasoning_jax.rewards.math_equiv import normalize_answer, parse_number


def final_answer(example: Any, completion: str) -> str | None:
  """The text after the last end-of-rationale marker (the voted answer), or None."""
  marker = example.rationale_end
  if marker not in completion:
    return None
  return completion.rsplit(marker, 1)[1].strip()


def vote_key(answer: str | None) -> str | None:
  """The maj@k vote of a final answer: equal for answers the verifier treats as the
  same surface form. A `\\boxed{}` is unwrapped, `$`, spacing macros and a trailing
  period go (`normalize_answer`), plain numbers become their exact value (so "1,000",
  "1000" and "1000.0" are one vote; "50%" keeps its percent sign) and other text is
  compared ignoring case and whitespace. None (no answer) stays an abstention."""
  if answer is None:
    return None
  text = normalize_answer(last_boxed(answer) or answer)
  num = parse_number(text)
  if num is not None:
    value, percent = num
    return f"{value}{'%' if percent else ''}"
  return "".join(text.lower().split()) or None


def _generate(params, cfg, prompts, codec, *, key, max_new_tokens, samples, temperature,
              compiler_options):
  out = sampling.generate(params, cfg, prompts, key=key, max_new_tokens=max_new_tokens,
                          num_samples=samples, temperature=temperature,
                          stop_tokens=(codec.eos_id,), pad_id=codec.pad_id,
                          compiler_options=compiler_options)
  toks, lens = _host(out.tokens), _host(out.lengths)
  texts = [codec.decode(toks[r, :lens[r]].tolist()) for r in range(toks.shape[0])]
  return texts, lens, _host(out.finish_reason)


def _host(x) -> np.ndarray:
  """All of `x` on this host. With several processes, every process evaluates the same
  prompts (the sampler's inputs are identical everywhere) and gathers the rows its
  devices do not hold, so every process computes the same metrics (process 0 writes
  them). Eval sets are small; scoring them on every host is cheaper than the code to
  split and gather the scores."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(x)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def evaluate(params, cfg, examples: Sequence[Any], codec, runner, *, key: jax.Array,
             max_new_tokens: int, samples: int = 4, temperature: float = 1.0,
             prefix: str = "eval/", compiler_options=None) -> dict[str, float]:
  """Evaluate on `examples`.

  Returns `{prefix}accuracy`: the expected exact-match of one completion sampled at
  `temperature` (the quantity RL maximises; equal to pass@1), `{prefix}greedy_accuracy`,
  `{prefix}pass@{samples}` (unbiased estimator), `{prefix}maj@{samples}`,
  `{prefix}length_mean`, `{prefix}truncated_frac` (greedy completions) and the
  verifier's outcome counts of the greedy completions (`{prefix}reward/...`) and of
  the sampled ones (`{prefix}sampled/reward/...`). maj@k votes on `vote_key`s.
  With `samples=0`, accuracy is the greedy one.
  `compiler_options` go to the sampler's program (`training.compile_mode`).
  """
  if not examples:
    raise ValueError("evaluation needs at least one held-out example")
  prompts = [codec.prompt_ids(e.prompt) for e in examples]
  texts, lens, finish = _generate(params, cfg, prompts, codec, key=key,
                                  max_new_tokens=max_new_tokens, samples=1, temperature=0.0,
                                  compiler_options=compiler_options)
  greedy, counts = score_examples(examples, texts, lens, runner)
  out = {f"{prefix}greedy_accuracy": float(np.mean(greedy > 0.5)),
         f"{prefix}accuracy": float(np.mean(greedy > 0.5)),
         f"{prefix}length_mean": float(lens.mean()),
         f"{prefix}truncated_frac": float(np.mean(finish != sampling.STOP))}
  out.update({f"{prefix}{k}": v for k, v in counts.items()})
  if samples > 0:
    stexts, slens, _ = _generate(params, cfg, prompts, codec, key=key,
                                 max_new_tokens=max_new_tokens, samples=samples,
                                 temperature=temperature, compiler_options=compiler_options)
    rep = [examples[r // samples] for r in range(len(stexts))]
    scores, scounts = score_examples(rep, stexts, slens, runner)
    out.update({f"{prefix}sampled/{k}": v for k, v in scounts.items()})
    correct = (scores > 0.5).reshape(len(examples), samples)
    answers = [[vote_key(final_answer(examples[i], stexts[i * samples + j]))
                for j in range(samples)] for i in range(len(examples))]
    out[f"{prefix}accuracy"] = float(mean_pass_at_k(correct, 1))
    out[f"{prefix}pass@{samples}"] = float(mean_pass_at_k(correct, samples))
    out[f"{prefix}maj@{samples}"] = float(maj_at_k(answers, correct, samples))
  return out
