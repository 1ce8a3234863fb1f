"""Multi-turn episodes: appended segments equal a full prefill, observations are masked,
and a refilled row samples its new episode exactly as a fresh run does."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax import model as rjm
from reasoning_jax.sampling import episodes as E
from reasoning_jax.sampling import segments as seg
from tests.sampling.conftest import PROMPTS
from tests.sampling.reference import full_logits, greedy_reference, log_softmax

# Float32 logits of a cached decode step against a full uncached forward: the same
# products summed in a different order over a padded cache; 1e-5 absolute on logits of
# magnitude ~10 is a few float32 ulps per accumulation.
LOGIT_TOL = 1e-5


def _knobs(stop_QE=None, stop_len=None, steps=64):
  if stop_QE is None:
    stop_QE, stop_len = np.full((4, 4), -1, np.int32), np.zeros(4, np.int32)
  return seg.ChunkKnobs(temperature=np.float32(0), top_k=np.int32(0), top_p=np.float32(1),
                        stop_QE=stop_QE, stop_len_Q=stop_len, max_steps=np.int32(steps),
                        pad_id=np.int32(0))


def _append(params, cfg, rows, segs, reset):
  """Appends {row: (tokens, start position)} like the episode driver does."""
  R = rows.last_R.shape[0]
  M = max(8, max(len(s) for s, _ in segs.values()))
  tok, pos = np.zeros((R, M), np.int32), np.full((R, M), -1, np.int32)
  take, last, at = np.zeros(R, bool), np.zeros(R, np.int32), np.zeros(R, np.int32)
  for r, (s, start) in segs.items():
    n = len(s) - 1
    tok[r, :n], pos[r, :n] = s[:-1], np.arange(start, start + n)
    take[r], last[r], at[r] = True, s[-1], start + n
  reset_R = np.zeros(R, bool)
  reset_R[list(reset)] = True
  return seg.append(params, rows, tok, pos, take, reset_R, last, at, cfg=cfg)


def _next_logits(params, cfg, rows):
  """The logits the next decode step computes from the cache (no state change)."""
  logits, _ = rjm.forward(params, rows.last_R[:, None], rows.pos_R[:, None], cfg,
                          rows.cache)
  return np.asarray(logits[:, 0])


def test_append_equals_full_prefill(tiny):
  cfg, params = tiny
  R, keys = 2, np.zeros((2, 2), np.uint32)
  rows = seg.empty_rows(cfg, R, 96, 4)
  rows = _append(params, cfg, rows, {0: (PROMPTS[0], 0), 1: (PROMPTS[1], 0)}, [0, 1])
  seqs = [list(PROMPTS[0]), list(PROMPTS[1])]
  # Row 0 decodes 5 tokens while row 1 decodes 2 and then idles (its slots masked).
  rows, out = seg.decode_chunk(params, rows, np.ones(R, bool), np.array([5, 2], np.int32),
                               keys, _knobs(), cfg=cfg, new_bucket=8)
  for r in range(R):
    seqs[r] += np.asarray(out.tokens_RN)[r, :int(out.count_R[r])].tolist()
  # An observation for row 0 only: its last sampled token, then four new tokens.
  obs = [40, 41, 42, 43]
  rows = _append(params, cfg, rows, {0: ([seqs[0][-1]] + obs, len(seqs[0]) - 1)}, [])
  seqs[0] += obs
  got = _next_logits(params, cfg, rows)
  for r in range(R):
    want = full_logits(params, cfg, seqs[r])[-1]
    np.testing.assert_allclose(got[r], want, atol=LOGIT_TOL, rtol=0)
  assert int(rows.pos_R[0]) == len(seqs[0]) - 1 and int(rows.last_R[0]) == obs[-1]
  # Compaction moves the live slots only: the same logits from a shorter cache.
  index = int(rows.cache.index)
  rows = seg.compact(rows)
  assert int(rows.cache.index) == max(len(s) - 1 for s in seqs) < index
  np.testing.assert_allclose(_next_logits(params, cfg, rows), got, atol=LOGIT_TOL, rtol=0)


def _reference_episode(params, cfg, prompt, tool_tok, obs, max_tokens, max_turns):
  """Greedy episode by full forward passes: tool call on `tool_tok`, then `obs`."""
  seq, out, mask, turns = list(prompt), [], [], 0
  while len(out) < max_tokens:
    tok = int(np.argmax(full_logits(params, cfg, seq)[-1]))
    seq.append(tok)
    out.append(tok)
    mask.append(True)
    if tok == tool_tok:
      turns += 1
      if turns >= max_turns or len(out) + len(obs) >= max_tokens:
        break
      seq += obs
      out += obs
      mask += [False] * len(obs)
  return out, mask


def test_episode_with_forced_tool_call(tiny):
  cfg, params = tiny
  prompt = PROMPTS[0]
  first = int(np.argmax(full_logits(params, cfg, prompt)[-1]))
  obs = [40, 41, 42, 43]
  seen = []

  def env(requests):
    seen.extend(requests)
    return [E.Observation(tokens=obs, reward=0.25 * (q.turn + 1)) for q in requests]

  ec = E.EpisodeConfig(max_tokens=40, max_turns=3, tool_stops=((first,),),
                       temperature=0.0)
  got = E.run_episodes(params, cfg, [prompt], env, ec, key=jax.random.key(0))
  want, want_mask = _reference_episode(params, cfg, prompt, first, obs, 40, 3)
  n = int(got.lengths[0])
  assert got.tokens[0, :n].tolist() == want
  assert got.model_mask[0, :n].tolist() == want_mask
  assert not got.model_mask[0, n:].any()
  # Observation tokens carry no log-probs; the model's tokens carry their own.
  obs_cols = ~got.model_mask[0, :n]
  assert obs_cols.sum() == len(obs) * (int(got.turns[0]) - 1) > 0
  assert (got.logprobs[0, :n][obs_cols] == 0).all()
  assert (got.model_logprobs[0, :n][obs_cols] == 0).all()
  seq = list(prompt) + want
  ref_lp = log_softmax(full_logits(params, cfg, seq))
  cols = np.flatnonzero(got.model_mask[0, :n])
  np.testing.assert_allclose(got.model_logprobs[0, cols],
                             ref_lp[len(prompt) + cols - 1, np.array(want)[cols]],
                             atol=1e-5, rtol=0)
  # The environment saw each tool call's turn; rewards are per turn.
  assert [q.turn for q in seen] == list(range(int(got.turns[0]) - 1))
  assert all(int(q.tokens[-1]) == first for q in seen)
  expect_rewards = [0.25 * (t + 1) for t in range(len(seen))]
  assert got.turn_rewards[0, :len(seen)].tolist() == expect_rewards
  assert E.EPISODE_REASONS[int(got.finish_reason[0])] in ("turns", "length")


def test_refilled_rows_equal_fresh_runs(tiny):
  """Five prompts through two slots: every refilled row's episode is exactly the
  greedy continuation a run starting with that prompt produces."""
  cfg, params = tiny
  prompts = PROMPTS + [[3, 1, 4, 1, 5, 9, 2, 6], [60]]
  eos = 43
  ec = E.EpisodeConfig(max_tokens=24, stop_tokens=(eos,), slots=2, chunk_steps=4,
                       temperature=0.0)
  got = E.run_episodes(params, cfg, prompts, lambda q: [], ec, key=jax.random.key(1))
  lengths = []
  for i, p in enumerate(prompts):
    ref = greedy_reference(params, cfg, p, 24, stop=(eos,))
    n = int(got.lengths[i])
    assert got.tokens[i, :n].tolist() == ref.tokens, i
    assert E.EPISODE_REASONS[int(got.finish_reason[i])] == ref.reason
    lengths.append(n)
  assert len(set(lengths)) > 1  # rows did finish at different times


def test_sampled_episode_does_not_depend_on_its_slot(tiny):
  cfg, params = tiny
  base = dict(max_tokens=16, stop_tokens=(43,), temperature=1.0)
  key = jax.random.key(7)
  one = E.run_episodes(params, cfg, PROMPTS, lambda q: [], E.EpisodeConfig(**base),
                       key=key, num_samples=2)
  refill = E.run_episodes(params, cfg, PROMPTS, lambda q: [],
                          E.EpisodeConfig(**base, slots=2, chunk_steps=3), key=key,
                          num_samples=2)
  np.testing.assert_array_equal(one.tokens, refill.tokens)
  np.testing.assert_array_equal(one.group, [0, 0, 1, 1, 2, 2])
  assert len({tuple(t) for t in one.tokens}) > 1


@pytest.mark.parametrize("field, value, match", [
    ("max_tokens", 0, "max_tokens must be >= 1"),
    ("max_turns", 0, "max_turns must be >= 1"),
    ("slots", -1, "slots must be >= 0"),
    ("tool_stops", ((),), "stop sequence"),
    ("stop_tokens", (64,), r"stop sequence \[64\]"),
])
def test_bad_config_is_named(tiny, field, value, match):
  cfg, params = tiny
  ec = E.EpisodeConfig(**{"max_tokens": 16, field: value})
  with pytest.raises(ValueError, match=match):
    E.run_episodes(params, cfg, [[1, 2]], lambda q: [], ec, key=jax.random.key(0))
