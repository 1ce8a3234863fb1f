"""Tool-integrated RL rollouts in the trainer: episodes laid out as
`[left-padded prompt | episode | padding]`, observation tokens masked from every loss,
the final turn scored, tool metrics, void-turn filtering and the config rules."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasoning_jax.objectives.registry import get_objective
from reasoning_jax.rewards import RewardRunner
from reasoning_jax.sampling import episodes as sep
from reasoning_jax.training import config as C
from reasoning_jax.training import episodes as TE
from reasoning_jax.training.loop import Trainer
from reasoning_jax.training.rollout import build_episode_rollouts, final_turn_text
from reasoning_jax.training.validate import problems
from tests.training.test_loop import CoinRunner

TINY = (("d_model", 32), ("n_layers", 1), ("n_heads", 2), ("n_kv_heads", 1),
        ("head_dim", 16), ("ffw_dim", 64), ("max_seq_len", 256))
# The GRPO family over an episode's own tokens (GARL/PAFT refuse tools).
FAMILY = ("grpo", "dr_grpo", "dapo", "gspo", "cispo", "gppo", "rloo", "reinforce_pp",
          "garl_binary", "paft_binary")


def tool_exp(objective="grpo", **rl):
  return C.Experiment(
      model=C.ModelSpec(overrides=TINY),
      task=C.TaskSpec(name="tool_word_problems", num_warmup=16, num_train=16, num_eval=2),
      sft=C.SFTConfig(steps=0),
      rl=C.RLConfig(objective=objective, steps=1, prompts_per_step=2, group_size=2,
                    max_new_tokens=96, tools=("calculator",), max_turns=3,
                    **rl),
      eval=C.EvalConfig(every=100, num_prompts=2, samples=0),
      run=C.RunConfig(checkpoint_every=100, reward_workers=0, progress=False,
                      plots=False, compile_ahead=False))


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
  t = Trainer(tool_exp(), str(tmp_path_factory.mktemp("tools")))
  t.runner = CoinRunner()
  t._init_opt(0)
  yield t
  t.close()


def _forced_episodes(t, exs):
  """Episodes of the trainer's model and environment, forced to call a tool: every
  token ends a turn as a tool call (which then fails to parse)."""
  p = t.parts
  prompts = [p.codec.prompt_ids(e.prompt) for e in exs]
  env = TE.make_environment(t.exp, p.task, p.codec, exs, 2)
  ec = TE.episode_config(t.exp, p.codec, t.sampling, temperature=0.0)
  ec = dataclasses.replace(ec, tool_stops=tuple((i,) for i in range(p.codec.vocab_size)),
                           stop_tokens=())
  eps = sep.run_episodes(t.params, t.cfg, prompts, env, ec, key=jax.random.key(1),
                         num_samples=2)
  return prompts, TE.ToolSample(eps, env)


def test_trainer_batch_masks_observations_from_every_loss(trainer):
  t = trainer
  exs = t.parts.data.train[:2]
  prompts, out = _forced_episodes(t, exs)
  eps = out.episodes
  assert (eps.turns >= 2).all() and eps.model_mask[:, 0].all()
  assert not eps.model_mask[:, 1].any()  # the observation follows the one-token turn
  P = 128  # bucket of the ~80-character prompts
  roll = t._score(exs, prompts, None, out, (P, None))
  for r in range(4):
    n, L = len(prompts[r // 2]), int(eps.lengths[r])
    assert roll.tokens[r, P - n:P].tolist() == prompts[r // 2]
    assert roll.tokens[r, P:P + L].tolist() == eps.tokens[r, :L].tolist()
    assert (roll.mask[r, P:P + L] == eps.model_mask[r, :L]).all()
    assert not roll.mask[r, :P].any() and not roll.mask[r, P + L:].any()
    np.testing.assert_array_equal(roll.sampler_logp[r, P:P + L], eps.logprobs[r, :L])
  obs_BT = np.zeros_like(roll.mask, bool)
  obs_BT[:, P:] = ~eps.model_mask & (np.arange(eps.tokens.shape[1]) < eps.lengths[:, None])
  assert obs_BT.sum() > 0 and (roll.sampler_logp[obs_BT] == 0).all()
  # Every tool call failed to parse (the forced stop is no call): counted with its reason.
  calls = int((eps.turns - (eps.finish_reason == sep.TURNS)).sum())
  assert roll.metrics["tools/unparsed/unparsable_call"] == calls > 0
  assert roll.metrics["tools/calls_per_episode"] == calls / 4
  # The trainer's batch: the loss mask, and every GRPO-family loss's gradient, is zero
  # on observation tokens (and not on the model's).
  batch, inputs = t._update_inputs(roll, jnp.float32(1.0), jax.random.key(2))
  assert not np.asarray(batch.inputs.mask_BT)[obs_BT].any()
  logp = jnp.asarray(np.random.default_rng(0).normal(-2, 1, roll.mask.shape), jnp.float32)
  for name in FAMILY:
    obj = get_objective(name)
    x = obj.prepare(inputs.replace(rewards_B=jnp.asarray([1.0, 0.0, 0.0, 1.0])),
                    obj.config(), jax.random.key(3) if obj.needs_key else None)
    g = np.asarray(jax.grad(lambda lp: obj.loss(x.replace(logp_BT=lp))[0])(logp))
    assert (g[obs_BT] == 0).all(), name
    assert np.abs(g[roll.mask > 0]).max() > 0, name


def test_tool_rl_step_and_eval_report_tool_metrics(trainer):
  m = trainer.rl(0)
  assert np.isfinite(m["loss/total"])
  for k in ("tools/calls_per_episode", "episode/turns_mean", "episode/void_frac",
            "tools/calls", "tools/failed", "episode/finish_stop", "reward/mean"):
    assert k in m, k
  ev = trainer.evaluate()
  assert set(ev) >= {"eval/accuracy", "eval/greedy_accuracy",
                     "eval/greedy_tools/calls_per_episode"}


def _episodes(tokens, mask, finish, turn_rewards):
  E, T = len(tokens), max(len(t) for t in tokens)
  tok = np.zeros((E, T), np.int32)
  mm = np.zeros((E, T), bool)
  for i, (t, m) in enumerate(zip(tokens, mask)):
    tok[i, :len(t)], mm[i, :len(m)] = t, m
  lens = np.asarray([len(t) for t in tokens], np.int32)
  lp = np.where(mm, -0.5, 0.0).astype(np.float32)
  return sep.Episodes(tok, mm, lp, lp, lens, np.ones(E, np.int32),
                      np.asarray(turn_rewards, np.float32), np.full((E, 2), -1, np.int32),
                      np.asarray(finish, np.int32), np.full(E, 2, np.int32),
                      np.arange(E, dtype=np.int32) // 2)


def test_final_turn_is_scored_and_void_episodes_are_dropped(trainer):
  """Hand-made episodes over the task's char codec: the verifier reads the text after
  the last observation (a tool output "=12." never counts as an answer), a turn's
  reward is added, and `drop_void` masks out the episode without a final answer."""
  codec = trainer.parts.codec
  ex = dataclasses.replace(trainer.parts.data.train[0], answer="12")
  call, obs, fin = codec.encode("<tool_call>x"), codec.encode("=12."), codec.encode("|12")
  bad = codec.encode("|13")
  tokens = [call + obs + fin, call + obs + bad]
  mask = [[True] * len(call) + [False] * len(obs) + [True] * 3] * 2
  eps = _episodes(tokens, mask, [sep.STOP, sep.STOP], [[0.25, 0.0], [0.0, 0.0]])
  assert final_turn_text(codec, eps.tokens[0], eps.model_mask[0], eps.lengths[0]) == "|12"
  runner = RewardRunner(num_workers=0)
  roll = build_episode_rollouts([ex], [[1, 2]], eps, codec, runner, group=2,
                                void=lambda texts: np.asarray([False, True]),
                                drop_void=True)
  runner.close()
  np.testing.assert_array_equal(roll.rewards, [1.25, 0.0])
  assert roll.mask[0].sum() == len(call) + 3 and roll.mask[1].sum() == 0
  assert roll.metrics["episode/void_frac"] == 0.5
  assert roll.texts == ["|12", "|13"]


class _Env:
  def __init__(self, reasons):
    self.reasons = reasons


def test_void_turns_follow_simpletir():
  """Void: an unparsable call, or a final turn (EOS or budget) without an answer; a
  tool call in the last allowed turn is not void (it did call a tool)."""
  ex = dataclasses.replace(_example(), answer="5")
  eps = _episodes([[1]] * 4, [[True]] * 4, [sep.STOP, sep.STOP, sep.LENGTH, sep.TURNS],
                  np.zeros((4, 2)))
  env = _Env({0: ["ok"], 1: ["unparsable_call"], 3: ["ok"]})
  texts = ["a|5", "a|5", "cut off", "<tool_call>"]
  assert TE.void_episodes([ex] * 4, texts, eps, env).tolist() == [False, True, True,
                                                                    False]


def _example():
  from reasoning_jax.data.tasks import get_task
  return get_task("tool_word_problems").rl_prompts(1, seed=0)[0]


@pytest.mark.parametrize("rl,match", [
    (dict(tools=("abacus",)), "must be distinct names from"),
    (dict(tools=("calculator",), objective="garl"), "GARL/PAFT"),
    (dict(tools=("calculator",), objective="paft"), "GARL/PAFT"),
    (dict(tools=("calculator",), thinking_budget=4), "thinking_budget"),
    (dict(drop_void_turns=True), "without RLConfig.tools"),
    (dict(max_turns=0), "RLConfig.max_turns = 0: must be >= 1"),
    (dict(episode_chunk=-1), "RLConfig.episode_chunk = -1: must be >= 0"),
])
def test_tool_settings_are_validated(rl, match):
  exp = C.Experiment(rl=C.RLConfig(**rl))
  assert any(match in p for p in problems(exp)), problems(exp)
