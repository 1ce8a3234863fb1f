"""The teacher of on-policy distillation in the trainer: loading (HF directory, run
directory), its checks, scoring each step's rollouts, a student holding the teacher's
params (zero KL, zero gradient) and a one-token teacher pulling a fresh student to its
token. The accuracy a student distils from a trained teacher: test_distill_accuracy.py."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from reasoning_jax import model as rjm
from reasoning_jax.objectives import OBJECTIVES, ObjectiveInputs
from reasoning_jax.training.checkpoint import CheckpointManager
from reasoning_jax.training.loop import Trainer
from reasoning_jax.training.teacher import load_model, run_bindings
from reasoning_jax.training.validate import ConfigError
from tests.training.test_loop import TINY, CoinRunner, tiny_exp

DISTILLERS = ("distill", "grpo_distill", "garl_distill")
DISTILL = OBJECTIVES["distill"]


def _with(exp, **rl):
  return dataclasses.replace(exp, rl=dataclasses.replace(exp.rl, **rl))


def _trainer(exp, workdir, runner=None):
  t = Trainer(exp, str(workdir))
  if runner is not None:
    t.runner.close()
    t.runner = runner
  return t


def _close(t):
  t.ckpt.close()
  t.runner.close()
  t.writer.close()


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
  """A run directory of a tiny model after 3 SFT steps (its latest checkpoint)."""
  d = tmp_path_factory.mktemp("teacher")
  exp = tiny_exp(sft_steps=3, rl_steps=0)
  text = ('rj.ModelSpec.overrides = %r\nrj.TaskSpec.kwargs = (("num_digits", 2),)\n'
          % (TINY,))
  Trainer(exp, str(d), text).run()
  return d, exp


def test_run_bindings_read_values_without_touching_gin():
  b = run_bindings('import x\nrj.ModelSpec.preset = "tiny"\nRLConfig.steps = 3\n'
                   'RLConfig.objective_overrides = (("q", 0.5),)\nA.b = @c\n')
  assert b[("ModelSpec", "preset")] == "tiny" and b[("RLConfig", "steps")] == 3
  assert b[("RLConfig", "objective_overrides")] == (("q", 0.5),)


def test_run_directory_teacher_is_its_latest_checkpoint(teacher_run):
  d, exp = teacher_run
  cfg, params = load_model(str(d), exp)
  with CheckpointManager(d, read_only=True) as m:
    want = m.restore().state["params"]
  assert cfg.d_model == 32 and cfg.n_layers == 1
  assert _by_name(params).keys() == _by_name(want).keys()
  for k, v in _by_name(params).items():
    np.testing.assert_array_equal(v, _by_name(want)[k], err_msg=k)


def _by_name(tree):
  """{'layers/wq': array}: dataclass fields and orbax's dicts named alike."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {"/".join(str(getattr(k, "name", getattr(k, "key", k))) for k in path):
          np.asarray(x) for path, x in leaves}


@pytest.mark.parametrize("name", DISTILLERS)
def test_each_distiller_trains_with_the_teacher_scoring(name, teacher_run, tmp_path):
  """Two RL steps: the teacher scores the rollouts (its NLL is reported), the loss is
  finite and the student moves."""
  d, _ = teacher_run
  exp = _with(tiny_exp(name, sft_steps=0, rl_steps=2), teacher=str(d))
  t = _trainer(exp, tmp_path, CoinRunner())
  try:
    t.resume()
    before = jax.tree.map(np.asarray, t.params)
    for step in range(2):
      m = t.rl(step)
      assert m["loss/finite"] == 1.0 and np.isfinite(m["loss/total"]), m
      assert m["loss/teacher_nll"] > 0 and np.isfinite(m["loss/distill_kl"]), m
  finally:
    _close(t)
  assert any(np.abs(np.asarray(a) - b).sum() > 0
             for a, b in zip(jax.tree.leaves(t.params), jax.tree.leaves(before)))


def test_teacher_scores_equal_the_teachers_own_forward(teacher_run, tmp_path):
  d, exp0 = teacher_run
  exp = _with(tiny_exp("distill", sft_steps=0, rl_steps=1), teacher=str(d))
  t = _trainer(exp, tmp_path, CoinRunner())
  try:
    t.resume()
    k = jax.random.key(0)
    roll, *_ = t._collect(0, k, np.float32(1.0), k)
    _, inputs = t._update_inputs(roll, np.float32(1.0), k)
    cfg, params = load_model(str(d), exp0)
    want, _ = rjm.token_logprobs(params, cfg, roll.tokens, roll.positions)
    m = np.asarray(roll.mask) > 0
    # The same program on the same params; f32 rounding of the chunked logits only.
    np.testing.assert_allclose(np.asarray(inputs.teacher_logp_BT)[m], np.asarray(want)[m],
                               rtol=0, atol=1e-5)
  finally:
    _close(t)


def test_teacher_checks(teacher_run, tmp_path):
  d, _ = teacher_run
  with pytest.raises(ConfigError, match="RLConfig.teacher = '': RLConfig.objective = "
                     "'distill' distils from a teacher"):
    Trainer(tiny_exp("distill"), str(tmp_path / "a"))
  with pytest.raises(ConfigError, match="has no effect with RLConfig.objective = 'grpo'"):
    Trainer(_with(tiny_exp("grpo"), teacher=str(d)), str(tmp_path / "b"))
  with pytest.raises(FileNotFoundError, match="RLConfig.teacher '/nonexistent' does not"):
    Trainer(_with(tiny_exp("distill"), teacher="/nonexistent"), str(tmp_path / "c"))
  # A teacher of another vocabulary: an HF directory with 7 more rows.
  cfg, params = load_model(str(d), tiny_exp())
  other = rjm.preset("tiny", **dict(TINY), vocab_size=cfg.vocab_size + 7)
  rjm.save_hf_checkpoint(rjm.init_params(other, jax.random.key(1)), other,
                         str(tmp_path / "hf"))
  with pytest.raises(ValueError, match=f"has a vocabulary of {cfg.vocab_size + 7} tokens "
                     f"but the student \\(ModelSpec\\) has {cfg.vocab_size}"):
    Trainer(_with(tiny_exp("distill"), teacher=str(tmp_path / "hf")), str(tmp_path / "d"))


def test_student_equal_to_teacher_has_zero_kl_and_zero_gradient(teacher_run, tmp_path):
  """The whole trainer path (rollouts, teacher scoring at the rollouts' positions and
  temperature, the update): a student holding the teacher's params has a zero reverse
  KL, a zero loss and a zero gradient. A misaligned or mis-tempered teacher score, or
  the student's params scored as the teacher's, would fail one of the two halves."""
  d, _ = teacher_run
  exp = _with(tiny_exp("distill", sft_steps=0, rl_steps=1), teacher=str(d))
  t = _trainer(exp, tmp_path, CoinRunner())
  try:
    t.resume()
    assert _differ(t.params, t.parts.teacher.params)  # a fresh student is not the teacher
    t.params = jax.tree.map(jnp.copy, t.parts.teacher.params)
    m = t.rl(0)
  finally:
    _close(t)
  # Two compiled programs score the same float32 forward: rounding of order 1e-7 per
  # log-prob, which also bounds the gradient's coefficients l_t - l^T_t.
  assert m["loss/teacher_nll"] > 0.1, m  # the rollouts are not trivially certain
  assert abs(m["loss/distill_kl"]) < 1e-6 and abs(m["loss/total"]) < 1e-6, m
  assert m["loss/grad_norm"] < 1e-5, m


def _differ(a, b) -> bool:
  return any(np.abs(np.asarray(x) - np.asarray(y)).sum() > 0
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_a_one_token_teacher_pulls_the_students_probability_up():
  """A teacher with all its mass on token K (log-prob 0 for K, -20 for every other
  token) and a fresh tiny student that samples one token after a fixed prompt: ten
  on-policy Adam steps of the distillation loss move p_student(K) from about 1/V to
  most of the mass. A flipped sign would push it to 0; a per-row or zeroed advantage
  would leave it where it is."""
  cfg = rjm.preset("tiny", **dict(TINY), vocab_size=16)
  params = rjm.init_params(cfg, jax.random.key(0))
  prompt = jnp.broadcast_to(jnp.asarray([[1, 5, 7]], jnp.int32), (64, 3))
  positions = jnp.broadcast_to(jnp.arange(4, dtype=jnp.int32), (64, 4))
  mask = jnp.asarray([[0.0, 0.0, 0.0, 1.0]] * 64)
  K = 9
  tx = optax.adam(1e-2)
  opt = tx.init(params)

  def p_k(p):
    logits = rjm.forward(p, prompt, positions[:, :3], cfg)[0][0, -1]
    return float(jax.nn.softmax(logits)[K])

  @jax.jit
  def step(p, opt, key):
    y = jax.random.categorical(key, rjm.forward(p, prompt, positions[:, :3], cfg)[0][:, -1])
    tokens = jnp.concatenate([prompt, y[:, None].astype(jnp.int32)], axis=1)
    teacher = jnp.where(tokens == K, 0.0, -20.0) * mask

    def loss(q):
      logp, ent = rjm.token_logprobs(q, cfg, tokens, positions)
      return DISTILL.loss(ObjectiveInputs(logp_BT=logp, mask_BT=mask, entropy_BT=ent,
                                          teacher_logp_BT=teacher))[0]

    g = jax.grad(loss)(p)
    u, opt = tx.update(g, opt, p)
    return optax.apply_updates(p, u), opt

  before = p_k(params)
  for i in range(10):
    params, opt = step(params, opt, jax.random.key(i + 1))
  after = p_k(params)
  assert before < 0.2 and after > 0.5, (before, after)
