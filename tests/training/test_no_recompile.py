"""A second RL step with other sampling settings and other prompts compiles nothing;
the first step compiles its scoring and update programs ahead, in the background."""
import threading

import jax
import numpy as np

from reasoning_jax.training import config as C
from reasoning_jax.training.loop import SamplingSettings, Trainer

_COMPILE = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_lowered: list[str] = []
_threads: list[tuple[str, str]] = []  # (program, thread that lowered it)


def _listen(event, _secs, **kw):
  if event == _COMPILE:
    _lowered.append(kw.get("fun_name", ""))
    _threads.append((kw.get("fun_name", ""), threading.current_thread().name))


jax.monitoring.register_event_duration_secs_listener(_listen)

TINY = (("d_model", 32), ("n_layers", 1), ("n_heads", 2), ("n_kv_heads", 1),
        ("head_dim", 16), ("ffw_dim", 64), ("max_seq_len", 64))


def _trainer(tmp_path, objective, **over):
  exp = C.Experiment(
      model=C.ModelSpec(overrides=TINY),
      task=C.TaskSpec(kwargs=(("num_digits", 2),), num_warmup=0, num_train=64, num_eval=4),
      sft=C.SFTConfig(steps=0),
      rl=C.RLConfig(objective=objective, steps=3, prompts_per_step=2, group_size=4,
                    max_new_tokens=12, **over),
      eval=C.EvalConfig(every=100, num_prompts=4, samples=1),
      run=C.RunConfig(checkpoint_every=100, reward_workers=0, progress=False, plots=False,
                      compilation_cache=""))
  t = Trainer(exp, str(tmp_path))
  t.resume()
  return t


def _check(t, gap_check=True):
  try:
    t.rl(0)  # compiles the sampler, the scoring pass and the update
    prompts0 = list(t.last_prompts)
    before = len(_lowered)
    t.sampling = SamplingSettings(temperature=0.7)
    m = t.rl(1)
    assert t.last_prompts != prompts0  # the next batch: other prompts
    if gap_check:  # one update per step, so the metric is from the sampling params
      # The new temperature reached the update too: the trainer's log-probs of the
      # sampled tokens equal the sampler's (both at T = 0.7; float32 recompute).
      assert m["loss/sampler_trainer_gap"] < 1e-5, m["loss/sampler_trainer_gap"]
    t.sampling = SamplingSettings(temperature=1.3, top_k=5, top_p=0.9)
    assert np.isfinite(t.rl(2)["loss/total"])
    assert _lowered[before:] == [], _lowered[before:]
  finally:
    t.runner.close()
    t.ckpt.close()
    t.writer.close()


def test_grpo_step_with_new_sampling_settings_and_prompts_does_not_recompile(tmp_path):
  """GRPO with beta > 0 (reference scoring) and mu = 2 (old-policy scoring): every
  jitted program of the step runs twice, the second time with temperature, top-k,
  top-p and the prompt batch changed, and nothing is lowered again."""
  _check(_trainer(tmp_path, "grpo", epochs=2, objective_overrides=(("kl_coef", 0.04),)),
         gap_check=False)


def test_garl_step_does_not_recompile(tmp_path):
  """GARL's layout (rationale under a budget, teacher-forced answer) with one update
  per step, where the sampler-vs-trainer gap also proves the traced temperature."""
  _check(_trainer(tmp_path, "garl"))


def test_first_step_compiles_update_and_scoring_ahead_once(tmp_path):
  """The update and scoring programs are lowered exactly once in the first step, on
  the compile-ahead threads (so the step's own calls found them in jit's cache)."""
  t = _trainer(tmp_path, "grpo", objective_overrides=(("kl_coef", 0.04),))
  try:
    start = len(_threads)
    t.rl(0)
    seen = _threads[start:]
  finally:
    t.runner.close()
    t.ckpt.close()
    t.writer.close()
  for name, thread in (("rl_update", "compile-ahead-update"),
                       ("score", "compile-ahead-scoring")):
    assert [th for fn, th in seen if fn == f"jit({name})"] == [thread], seen
