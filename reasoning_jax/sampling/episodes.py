"""Multi-turn episodes with tool calls, over a fixed set of refilled rows.

`run_episodes` drives the programs of `segments` from the host: the model writes a
turn until it emits a stop sequence; a tool-call stop sends the row's turn to the
caller's `environment`, whose observation tokens are prefilled into the row's cache
(only the new segment runs through the model) and the row resumes; an EOS stop, the
episode's token budget or its turn limit ends the episode. A row whose episode ends
takes the next episode of the pool into its slot (a refilled row) without
recompiling: prompts and observations enter through the same `append` program.

The environment is any callable from `ToolRequest`s to `Observation`s (ids in, ids
out): this module never sees text, tools or templates (`reasoning_jax.tools` renders
observations with the chat template).

Shape key: R rows (slots), T episode tokens, U turns.
"""
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from reasoning_jax import model as rjm
from reasoning_jax.sampling import segments as seg
from reasoning_jax.sampling.generate import _check_key, _check_knobs, _check_prompts, bucket

# Why an episode ended (`Episodes.finish_reason` holds the index).
STOP, LENGTH, TURNS, ENV = 0, 1, 2, 3
EPISODE_REASONS = ("stop", "length", "turns", "env")


@dataclasses.dataclass(frozen=True)
class EpisodeConfig:
  """How episodes run.

  Attributes:
    max_tokens: the episode's token budget after the prompt (model and observation
      tokens together).
    max_turns: model turns per episode (at most max_turns - 1 tool calls); a tool
      call in the last turn ends the episode with reason "turns".
    stop_tokens: ids that end the episode when sampled (EOS, end of turn).
    tool_stops: token sequences that end a turn with a tool call (e.g. the ids of
      "</tool_call>", or of a fenced block's closing fence).
    slots: rows decoded at once; 0 = every episode at once (no refill). With fewer
      slots than episodes, a finished row takes the next episode.
    chunk_steps: K; a decode call returns to the host after K steps so finished rows
      are refilled; 0 = only once every active row has stopped.
    temperature, top_k, top_p: sampling knobs (traced).
    pad_id: the id after an episode's end.
  """
  max_tokens: int = 256
  max_turns: int = 4
  stop_tokens: tuple[int, ...] = ()
  tool_stops: tuple[tuple[int, ...], ...] = ()
  slots: int = 0
  chunk_steps: int = 0
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  pad_id: int = 0


@dataclasses.dataclass(frozen=True)
class ToolRequest:
  """A row paused at a tool call. `tokens` is the episode so far after the prompt
  (observations included), ending with this turn's tool call from `turn_start` on."""
  episode: int
  turn: int
  tokens: np.ndarray
  turn_start: int


@dataclasses.dataclass(frozen=True)
class Observation:
  """The environment's answer: `tokens` to append (masked from the loss), the turn's
  `reward`, and `done` to end the episode instead (reason "env", nothing appended)."""
  tokens: Sequence[int] = ()
  reward: float = 0.0
  done: bool = False


Environment = Callable[[list[ToolRequest]], list[Observation]]


@dataclasses.dataclass
class Episodes:
  """Finished episodes as host arrays, one row per episode (episode e is sample
  e % G of prompt e // G).

  Attributes:
    tokens: int32 [E, T] the episode after the prompt, `pad_id` after its end.
    model_mask: bool [E, T] True on tokens the model sampled (the loss mask);
      observation tokens and padding are False.
    logprobs, model_logprobs: float32 [E, T] the sampler's and the unmodified
      model's log-probs of sampled tokens; 0 on observations and padding.
    lengths: int32 [E]; turns: int32 [E] model turns taken.
    turn_rewards: float32 [E, U] the observation's reward after each turn (0 if none).
    turn_ends: int32 [E, U] the column after each model turn's last token, -1 unused.
    finish_reason: int32 [E], an index into `EPISODE_REASONS`.
    prompt_lengths: int32 [E]; group: int32 [E] the prompt index.
  """
  tokens: np.ndarray
  model_mask: np.ndarray
  logprobs: np.ndarray
  model_logprobs: np.ndarray
  lengths: np.ndarray
  turns: np.ndarray
  turn_rewards: np.ndarray
  turn_ends: np.ndarray
  finish_reason: np.ndarray
  prompt_lengths: np.ndarray
  group: np.ndarray


@dataclasses.dataclass
class _Ep:
  """One episode's host record while it runs."""
  prompt: np.ndarray
  tokens: list = dataclasses.field(default_factory=list)
  mask: list = dataclasses.field(default_factory=list)
  lp: list = dataclasses.field(default_factory=list)
  mlp: list = dataclasses.field(default_factory=list)
  turn_ends: list = dataclasses.field(default_factory=list)
  rewards: list = dataclasses.field(default_factory=list)
  turn_start: int = 0
  reason: int = -1
  budget: int = 0

  def add(self, toks, mask, lp=None, mlp=None):
    n = len(toks)
    self.tokens += list(toks)
    self.mask += [mask] * n
    self.lp += list(lp) if lp is not None else [0.0] * n
    self.mlp += list(mlp) if mlp is not None else [0.0] * n


def _stop_table(cfg: EpisodeConfig, vocab: int) -> tuple[np.ndarray, np.ndarray, int]:
  """(stop_QE, stop_len_Q, number of EOS entries): EOS ids first, then tool stops."""
  seqs = [(int(t),) for t in cfg.stop_tokens] + [tuple(int(x) for x in s)
                                                  for s in cfg.tool_stops]
  for s in seqs:
    if not s or min(s) < 0 or max(s) >= vocab:
      raise ValueError(f"EpisodeConfig stop sequence {list(s)} must be non-empty ids in "
                       f"[0, {vocab})")
  E = bucket(max((len(s) for s in seqs), default=1), 4)
  table = np.full((bucket(len(seqs), 4), E), -1, np.int32)
  lens = np.zeros((table.shape[0],), np.int32)
  for q, s in enumerate(seqs):
    table[q, :len(s)], lens[q] = s, len(s)
  return table, lens, len(cfg.stop_tokens)


def _check_config(cfg: EpisodeConfig) -> None:
  if not isinstance(cfg, EpisodeConfig):
    raise TypeError(f"config must be an EpisodeConfig, got {type(cfg).__name__}")
  for name in ("max_tokens", "max_turns"):
    if getattr(cfg, name) < 1:
      raise ValueError(f"EpisodeConfig.{name} must be >= 1, got {getattr(cfg, name)}")
  for name in ("slots", "chunk_steps"):
    if getattr(cfg, name) < 0:
      raise ValueError(f"EpisodeConfig.{name} must be >= 0 (0 = automatic), got "
                       f"{getattr(cfg, name)}")
  _check_knobs(cfg.temperature, cfg.top_k, cfg.top_p)


class _Driver:
  """The host loop of `run_episodes` (state shared by its small steps)."""

  def __init__(self, params, mcfg, prompts, env, cfg: EpisodeConfig, key, group: int,
               budgets):
    self.params, self.mcfg, self.env, self.cfg = params, mcfg, env, cfg
    self.eps = [_Ep(prompts[i // group], budget=budgets[i // group])
                for i in range(len(prompts) * group)]
    self.group = group
    R = min(cfg.slots or len(self.eps), len(self.eps))
    self.R = bucket(R, 1)  # a power of two: a few compiled shapes serve every call
    self.open_slots = R
    self.P = bucket(max(len(p) for p in prompts))
    self.N = bucket(cfg.chunk_steps or cfg.max_tokens)
    # Live slots per row never exceed its prompt and budget; the margin holds one
    # segment (a prompt, or an observation within the budget) or a chunk.
    self.S = bucket(self.P + cfg.max_tokens) + max(self.P, bucket(cfg.max_tokens), self.N)
    stop_QE, stop_len_Q, self.n_eos = _stop_table(cfg, mcfg.vocab_size)
    self.knobs = seg.ChunkKnobs(
        temperature=np.float32(cfg.temperature), top_k=np.int32(cfg.top_k),
        top_p=np.float32(cfg.top_p), stop_QE=stop_QE, stop_len_Q=stop_len_Q,
        max_steps=np.int32(self.N), pad_id=np.int32(cfg.pad_id))
    # Episode e samples with fold_in(key, e) in whatever slot it lands (raw key data,
    # one row per slot).
    self.key = key if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) \
        else jax.random.wrap_key_data(key)
    self.rows = seg.empty_rows(mcfg, self.R, self.S, stop_QE.shape[1])
    self.slot_ep = [-1] * self.R
    self.keys_R = np.zeros((self.R,) + jax.random.key_data(self.key).shape, np.uint32)
    self.queue = collections.deque(range(len(self.eps)))
    self.pending: dict[int, tuple[list[int], int]] = {}  # slot -> (segment, start pos)

  def _episode_key(self, e: int) -> np.ndarray:
    return np.asarray(jax.random.key_data(jax.random.fold_in(self.key, e)))

  def _fill(self) -> list[int]:
    """Assigns queued episodes to free slots; returns the refilled slots."""
    refilled = []
    for r in range(self.open_slots):
      if self.slot_ep[r] < 0 and self.queue:
        e = self.queue.popleft()
        self.slot_ep[r] = e
        self.keys_R[r] = self._episode_key(e)
        p = self.eps[e].prompt
        self.pending[r] = (list(p), 0)
        refilled.append(r)
    return refilled

  def _room(self, need: int) -> None:
    """Compacts the cache if fewer than `need` slots are left past its index."""
    if int(self.rows.cache.index) + need > self.S:
      self.rows = seg.compact(self.rows)
      if int(self.rows.cache.index) + need > self.S:
        raise RuntimeError(f"the cache of {self.S} slots cannot hold {need} more "
                           "tokens after compaction (a bug: S covers prompt + budget)")

  def _append(self, refilled: list[int]) -> None:
    """Prefills every pending segment (all but its last token, which becomes the
    row's next input) in one `append` call."""
    if not self.pending:
      return
    M = bucket(max(len(s) - 1 for s, _ in self.pending.values()))
    tok = np.zeros((self.R, M), np.int32)
    pos = np.full((self.R, M), -1, np.int32)
    take, reset = np.zeros(self.R, bool), np.zeros(self.R, bool)
    last, at = np.zeros(self.R, np.int32), np.zeros(self.R, np.int32)
    for r, (s, start) in self.pending.items():
      n = len(s) - 1
      tok[r, :n], pos[r, :n] = s[:-1], np.arange(start, start + n)
      take[r], last[r], at[r] = True, s[-1], start + n
    reset[refilled] = True
    self._room(M)
    self.rows = seg.append(self.params, self.rows, tok, pos, take, reset, last, at,
                           cfg=self.mcfg)
    self.pending = {}

  def _decode(self) -> list[ToolRequest]:
    """One `decode_chunk` call over the active rows; records what they produced and
    ends or pauses them. Returns the tool requests."""
    active = np.array([e >= 0 for e in self.slot_ep])
    budget = np.zeros(self.R, np.int32)
    for r, e in enumerate(self.slot_ep):
      if e >= 0:
        budget[r] = self.eps[e].budget - len(self.eps[e].tokens)
    self._room(min(self.N, self.S // 4))
    steps = min(self.N, self.S - int(self.rows.cache.index))
    knobs = dataclasses.replace(self.knobs, max_steps=np.int32(steps))
    self.rows, out = seg.decode_chunk(self.params, self.rows, active, budget,
                                      self.keys_R, knobs, cfg=self.mcfg, new_bucket=self.N)
    toks, lps, mlps, counts, stops = jax.device_get(
        (out.tokens_RN, out.logprobs_RN, out.model_logprobs_RN, out.count_R, out.stop_R))
    requests = []
    for r in np.flatnonzero(active):
      ep, n = self.eps[self.slot_ep[r]], int(counts[r])
      ep.add(toks[r, :n], True, lps[r, :n], mlps[r, :n])
      q = int(stops[r])
      if q < 0 and len(ep.tokens) < ep.budget:
        continue  # the chunk ended first: the row goes on next call
      ep.turn_ends.append(len(ep.tokens))
      if 0 <= q < self.n_eos:
        self._finish(r, STOP)
      elif q < 0:
        self._finish(r, LENGTH)
      elif len(ep.turn_ends) >= self.cfg.max_turns:
        self._finish(r, TURNS)
      else:
        requests.append(ToolRequest(self.slot_ep[r], len(ep.turn_ends) - 1,
                                    np.asarray(ep.tokens, np.int32), ep.turn_start))
    return requests

  def _finish(self, r: int, reason: int) -> None:
    self.eps[self.slot_ep[r]].reason = reason
    self.slot_ep[r] = -1

  def _observe(self, requests: list[ToolRequest]) -> None:
    """Asks the environment, appends each observation (or ends the episode)."""
    if not requests:
      return
    obs = list(self.env(requests))
    if len(obs) != len(requests):
      raise ValueError(f"the environment returned {len(obs)} observations for "
                       f"{len(requests)} requests")
    slot_of = {e: r for r, e in enumerate(self.slot_ep) if e >= 0}
    for req, o in zip(requests, obs):
      r, ep = slot_of[req.episode], self.eps[req.episode]
      ep.rewards.append(float(o.reward))
      o_toks = [int(t) for t in o.tokens]
      if o.done or not o_toks:
        self._finish(r, ENV)
        continue
      if len(ep.tokens) + len(o_toks) >= ep.budget:
        self._finish(r, LENGTH)  # no room for the observation and one more token
        continue
      # The segment: the tool call's last token (sampled, not yet in the cache), then
      # the observation; its last token becomes the next input.
      start = len(ep.prompt) + len(ep.tokens) - 1
      self.pending[r] = ([ep.tokens[-1]] + o_toks, start)
      ep.add(o_toks, False)
      ep.turn_start = len(ep.tokens)

  def run(self) -> None:
    while True:
      refilled = self._fill()
      self._append(refilled)
      if all(e < 0 for e in self.slot_ep):
        return
      self._observe(self._decode())

  def result(self, max_turns: int) -> Episodes:
    E, T, U = len(self.eps), self.cfg.max_tokens, max_turns
    out = Episodes(
        tokens=np.full((E, T), self.cfg.pad_id, np.int32), model_mask=np.zeros((E, T), bool),
        logprobs=np.zeros((E, T), np.float32), model_logprobs=np.zeros((E, T), np.float32),
        lengths=np.zeros(E, np.int32), turns=np.zeros(E, np.int32),
        turn_rewards=np.zeros((E, U), np.float32), turn_ends=np.full((E, U), -1, np.int32),
        finish_reason=np.zeros(E, np.int32),
        prompt_lengths=np.asarray([len(e.prompt) for e in self.eps], np.int32),
        group=np.arange(E, dtype=np.int32) // self.group)
    for i, ep in enumerate(self.eps):
      n = len(ep.tokens)
      out.tokens[i, :n], out.model_mask[i, :n] = ep.tokens, ep.mask
      out.logprobs[i, :n], out.model_logprobs[i, :n] = ep.lp, ep.mlp
      out.lengths[i], out.turns[i], out.finish_reason[i] = n, len(ep.turn_ends), ep.reason
      out.turn_ends[i, :len(ep.turn_ends)] = ep.turn_ends
      out.turn_rewards[i, :len(ep.rewards)] = ep.rewards
    return out


def run_episodes(params, config: rjm.ModelConfig, prompts, environment: Environment,
                 episode: EpisodeConfig, *, key, num_samples: int = 1,
                 budgets: Sequence[int] | None = None) -> Episodes:
  """Roll out `num_samples` multi-turn episodes per prompt.

  Args:
    params, config: the model.
    prompts: token-id lists (each non-empty; already rendered with the chat template).
    environment: called with the rows paused at a tool call, returns one
      `Observation` per request (e.g. `reasoning_jax.tools.ToolEnvironment`).
    episode: budgets, stop sequences, slots and chunking (`EpisodeConfig`).
    key: a PRNG key; episode e's draws depend only on (key, e), not on its slot or
      on when it started.
    num_samples: G episodes per prompt (prompt-major: prompt i owns i*G .. i*G+G-1).
    budgets: optional per-prompt token budgets, each in [1, episode.max_tokens]
      (default: max_tokens for every prompt).
  """
  _check_config(episode)
  prompts = _check_prompts(prompts, config.vocab_size)
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  longest = max(len(p) for p in prompts)
  if longest + episode.max_tokens > config.max_seq_len:
    raise ValueError(f"a prompt of {longest} tokens plus max_tokens={episode.max_tokens} "
                     f"exceeds the model's max_seq_len {config.max_seq_len}; lower "
                     "EpisodeConfig.max_tokens or shorten the prompt")
  if budgets is None:
    budgets = [episode.max_tokens] * len(prompts)
  budgets = [int(b) for b in budgets]
  if len(budgets) != len(prompts) or not all(1 <= b <= episode.max_tokens
                                             for b in budgets):
    raise ValueError(f"budgets must hold one value in [1, max_tokens="
                     f"{episode.max_tokens}] per prompt ({len(prompts)}), got {budgets}")
  driver = _Driver(params, config, prompts, environment, episode, _check_key(key),
                   num_samples, budgets)
  driver.run()
  return driver.result(episode.max_turns)
