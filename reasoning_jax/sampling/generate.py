"""`generate`: the host entry point. Validates input, buckets shapes, runs the program.

Prompts are left-padded to a power-of-two bucket (at least 8) and the batch to a power
of two (times the data-parallel size when sharded); new tokens are bucketed the same
way and the real `max_new_tokens` is a traced bound. A handful of compiled programs
therefore serve every batch, and all sampling knobs are traced.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from reasoning_jax import model as rjm
from reasoning_jax.sampling import budget as bud
from reasoning_jax.sampling.loop import Knobs, program
from reasoning_jax.sharding.batch import local_rows
from reasoning_jax.sampling.state import SampleOutput

log = logging.getLogger("reasoning_jax")


def bucket(n: int, minimum: int = 8) -> int:
  """The smallest power of two >= n (and >= minimum)."""
  return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def _as_int(x, name: str) -> int:
  if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
    raise TypeError(f"{name} must be an int, got {type(x).__name__} {x!r}")
  return int(x)


def _check_prompts(prompts, vocab_size: int) -> list[np.ndarray]:
  if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (Sequence, np.ndarray)):
    raise TypeError("prompts must be a list of token-id lists (already tokenized), got "
                    f"{type(prompts).__name__}")
  if len(prompts) == 0:
    raise ValueError("prompts is empty; pass at least one prompt (a list of token ids)")
  out = []
  for i, p in enumerate(prompts):
    if isinstance(p, (str, bytes)):
      raise TypeError(f"prompt {i} is a string; tokenize it first (generate takes ids)")
    arr = np.asarray(p)
    if arr.ndim != 1:
      raise ValueError(f"prompt {i} must be a 1-D list of token ids, got shape {arr.shape}")
    if arr.size == 0:
      raise ValueError(f"prompt {i} is empty; every prompt needs at least one token "
                       "(e.g. the BOS token)")
    if not np.issubdtype(arr.dtype, np.integer):
      raise TypeError(f"prompt {i} must hold integer token ids, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
      raise ValueError(f"prompt {i} has token ids outside [0, {vocab_size}) (min {lo}, "
                       f"max {hi}); the tokenizer does not match the model's vocabulary")
    out.append(arr.astype(np.int32))
  return out


def _check_knobs(temperature, top_k, top_p) -> tuple[float, int, float]:
  temperature = float(temperature)
  if not np.isfinite(temperature) or temperature < 0:
    raise ValueError(f"temperature must be finite and >= 0 (0 = greedy), got {temperature}")
  top_k = _as_int(top_k, "top_k")
  if top_k < 0:
    raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
  top_p = float(top_p)
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p}")
  return temperature, top_k, top_p


def _check_key(key) -> jax.Array:
  if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key
  arr = jnp.asarray(key) if isinstance(key, (jax.Array, np.ndarray)) else None
  if arr is None or arr.dtype != jnp.uint32 or arr.shape != (2,):
    raise TypeError("key must be a PRNG key: jax.random.key(seed) or "
                    "jax.random.PRNGKey(seed)")
  return arr


def left_pad(prompts: list[np.ndarray], length: int, rows: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Left-padded tokens and positions `[rows, length]` (-1 on pads), lengths, validity.

  Rows beyond `len(prompts)` are filler (a single token 0), marked invalid.
  """
  tokens = np.zeros((rows, length), np.int32)
  positions = np.full((rows, length), -1, np.int32)
  lengths = np.ones((rows,), np.int32)
  valid = np.zeros((rows,), bool)
  for i in range(rows):
    p = prompts[i] if i < len(prompts) else np.zeros((1,), np.int32)
    n = len(p)
    tokens[i, length - n:] = p
    positions[i, length - n:] = np.arange(n, dtype=np.int32)
    lengths[i] = n
    valid[i] = i < len(prompts)
  return tokens, positions, lengths, valid


def _platform(params) -> str:
  """The platform the params live on ("cpu", "gpu", "tpu"); jax's default backend
  for host arrays."""
  for leaf in jax.tree.leaves(params):
    devices = getattr(getattr(leaf, "sharding", None), "device_set", None)
    if devices:
      return next(iter(devices)).platform
  return jax.default_backend()


@functools.cache
def _log_backend(setting: str, platform: str) -> None:
  """Says once per (setting, platform) which attention implementation decodes."""
  runs = "pallas" if setting == "pallas" or (setting == "auto" and platform == "tpu") \
      else "xla"
  if runs == "pallas" and platform != "tpu":
    runs = "pallas (interpreted: a TPU kernel off a TPU, for checking only)"
  log.info("sampling on %s with attention backend %s (attention_backend=%r)",
           platform, runs, setting)


@dataclasses.dataclass(frozen=True)
class SampleCall:
  """One `generate` call laid out for the program (`plan_call`): host arrays and the
  program's static arguments.

  Attributes:
    tokens, positions, lengths, valid: this process's left-padded prompt rows.
    knobs: the traced sampling settings (`loop.Knobs`).
    static: `loop.sample_program`'s static arguments (cfg, group, new_bucket).
    procs: processes that each hold a block of rows (1 without a sharding).
    real_rows: rows holding this process's prompts' samples (the rest fill buckets).
    max_new: tokens to keep per row.
  """
  tokens: np.ndarray
  positions: np.ndarray
  lengths: np.ndarray
  valid: np.ndarray
  knobs: Knobs
  static: dict
  procs: int
  real_rows: int
  max_new: int


def _check_lengths(prompts, longest: int, max_new: int, max_len: int) -> None:
  if longest + max_new > max_len:
    i = max(range(len(prompts)), key=lambda j: len(prompts[j]))
    raise ValueError(f"prompt {i} has {longest} tokens; with max_new_tokens={max_new} "
                     f"it needs {longest + max_new} cache slots but max_len is {max_len}; "
                     "shorten the prompt, lower max_new_tokens or raise max_len")


def _global_longest(prompts, procs: int) -> int:
  """The longest prompt over every process (each must pass as many prompts)."""
  longest = max(len(p) for p in prompts)
  if procs == 1:
    return longest
  from jax.experimental import multihost_utils
  info = np.asarray(multihost_utils.process_allgather(
      np.asarray([longest, len(prompts)], np.int32)))
  if len(set(info[:, 1].tolist())) != 1:
    raise ValueError(f"every process must pass the same number of prompts, got "
                     f"{info[:, 1].tolist()} (process order)")
  return int(info[:, 0].max())


def _row_bucket(n_prompts: int, procs: int, data: int) -> int:
  """Rows of the program's batch: a power-of-two bucket, a multiple of `data`."""
  n = n_prompts * procs
  rows = -(-bucket(n, 1) // data) * data
  if procs > 1 and rows != n:
    raise ValueError(f"{procs} processes x {n_prompts} prompts = {n}, but the batch "
                     f"bucket is {rows} rows (a power of two, a multiple of the data size "
                     f"{data}); with several processes use a prompt count that fills it, "
                     f"e.g. {rows}")
  return rows


def plan_call(config: rjm.ModelConfig, prompts, *, key, max_new_tokens: int,
              num_samples: int = 1, temperature: float = 1.0, top_k: int = 0,
              top_p: float = 1.0, stop_tokens: Sequence[int] = (),
              budget: bud.ThinkingBudget | None = None, pad_id: int = 0,
              max_len: int | None = None, sharding=None) -> SampleCall:
  """Check a `generate` call's arguments (clear errors before any work) and lay it out
  as the program's host arrays and static arguments; see `generate` for the args."""
  if not isinstance(config, rjm.ModelConfig):
    raise TypeError(f"config must be a reasoning_jax.model.ModelConfig, got "
                    f"{type(config).__name__}")
  prompts = _check_prompts(prompts, config.vocab_size)
  max_new = _as_int(max_new_tokens, "max_new_tokens")
  if max_new < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new}")
  group = _as_int(num_samples, "num_samples")
  if group < 1:
    raise ValueError(f"num_samples must be >= 1, got {group}")
  temperature, top_k, top_p = _check_knobs(temperature, top_k, top_p)
  max_len = config.max_seq_len if max_len is None else _as_int(max_len, "max_len")
  procs = jax.process_count() if sharding is not None else 1
  longest = _global_longest(prompts, procs)
  _check_lengths(prompts, longest, max_new, max_len)
  stops = np.asarray(list(stop_tokens), np.int64).reshape(-1)
  if stops.size and (stops.min() < 0 or stops.max() >= config.vocab_size):
    raise ValueError(f"stop_tokens has ids outside [0, {config.vocab_size}): "
                     f"{stops.tolist()}")
  stop_K = np.full((bucket(stops.size, 4),), -1, np.int32)
  stop_K[:stops.size] = stops
  knobs = Knobs(key=_check_key(key), temperature=np.float32(temperature),
                top_k=np.int32(top_k), top_p=np.float32(top_p), max_new=np.int32(max_new),
                stop_K=stop_K, pad_id=np.int32(_as_int(pad_id, "pad_id")),
                budget=bud.budget_arrays(budget, config.vocab_size))
  rows = _row_bucket(len(prompts), procs, 1 if sharding is None else sharding.data_size)
  arrays = left_pad(prompts, bucket(longest), rows // procs)
  return SampleCall(*arrays, knobs=knobs, procs=procs, real_rows=len(prompts) * group,
                    max_new=max_new,
                    static=dict(cfg=config, group=group, new_bucket=bucket(max_new)))


def generate(params, config: rjm.ModelConfig, prompts, *, key, max_new_tokens: int,
             num_samples: int = 1, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, stop_tokens: Sequence[int] = (),
             budget: bud.ThinkingBudget | None = None, pad_id: int = 0,
             max_len: int | None = None, sharding=None,
             compiler_options: dict | None = None) -> SampleOutput:
  """Sample `num_samples` continuations of each prompt with one jitted program.

  Args:
    params: the model's params (e.g. from `rjm.init_params` or a checkpoint); they may
      be sharded, the program follows their shardings.
    config: the model config.
    prompts: a list of B token-id lists (ragged; each non-empty).
    key: a PRNG key; row r's draws depend only on (key, r).
    max_new_tokens: tokens to generate at most per row.
    num_samples: G samples per prompt; each prompt is prefilled once and its cache
      shared by its samples. Rows are prompt-major: prompt i owns rows i*G .. i*G+G-1.
    temperature: 0 = greedy; top_k: 0 = off; top_p: 1 = off (applied in that order).
    stop_tokens: ids that end a row when sampled (the stop token is kept in the output).
    budget: an optional `ThinkingBudget` (forced end-of-thinking, answer budget).
    pad_id: the id written after each row's end.
    max_len: the longest prompt + generation allowed (default `config.max_seq_len`).
    sharding: an optional `reasoning_jax.sharding.RolloutSharding` (batch over the
      data axis, heads over the tensor axis); None runs wherever the params live.
      With several jax processes and a sharding, `prompts` are this process's
      contiguous block of the global batch (every process passes the same number;
      process p's prompts are global prompts p*B .. p*B+B-1), the global batch must
      fill its bucket exactly (a power of two multiple of the data size), and the
      result holds this process's rows only, as host arrays. Without a sharding,
      every process passes the same prompts and gets every row.
    compiler_options: optional XLA options for the program (e.g. a fast CPU compile,
      `training.compile_mode`); None compiles with XLA's defaults.

  Returns:
    A `SampleOutput` with `[B*G, max_new_tokens]` tokens and log-probs, per-row
    lengths, finish reasons, forced-token mask, prompt lengths and group indices.
  """
  call = plan_call(config, prompts, key=key, max_new_tokens=max_new_tokens,
                   num_samples=num_samples, temperature=temperature, top_k=top_k,
                   top_p=top_p, stop_tokens=stop_tokens, budget=budget, pad_id=pad_id,
                   max_len=max_len, sharding=sharding)
  arrays = (call.tokens, call.positions, call.lengths, call.valid)
  if call.procs > 1:
    arrays = sharding.put_process_rows(arrays, call.procs)
  elif sharding is not None:
    arrays = sharding.put_batch(arrays)
  _log_backend(config.attention_backend, _platform(params))
  out = program(compiler_options)(
      params, *arrays, call.knobs, **call.static,
      constrain=None if sharding is None else sharding.constrain)
  n, real = call.max_new, call.real_rows
  if call.procs > 1:
    lo = jax.process_index() * real
    return jax.tree.map(lambda x: local_rows(x, lo, lo + real)[:, :n] if x.ndim == 2
                        else local_rows(x, lo, lo + real), out)
  if real == out.tokens.shape[0] and n == call.static["new_bucket"]:
    return out
  return jax.tree.map(lambda x: x[:real, :n] if x.ndim == 2 else x[:real], out)
