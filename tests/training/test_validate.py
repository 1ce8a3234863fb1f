"""`validate_experiment`: every field's type and range, cross-field rules, every problem
in one `ConfigError`, and the shipped experiment files valid."""
import dataclasses
import glob
import importlib.util
import os

import gin
import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reasoning_jax.objectives import OBJECTIVES, ObjectiveInputs
from reasoning_jax.training import config as C
from reasoning_jax.training import validate as V

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STUDY = os.path.join(ROOT, "experiments", "tsallis_cold_start")


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _problems(*bindings: str) -> list[str]:
  """The problem lines of the default experiment with gin `bindings` applied, as the
  CLI parses them (on a cleared gin config)."""
  gin.clear_config()
  gin.parse_config_files_and_bindings([], list(bindings))
  try:
    V.validate_experiment(C.Experiment())
  except V.ConfigError as e:
    head, *lines = str(e).splitlines()
    assert head.startswith("invalid experiment configuration")
    return [line.strip() for line in lines]
  return []


def test_every_field_of_every_section_has_a_rule():
  assert V.missing_rules() == []
  # ... and no rule outlives its field.
  for _, cls in V.sections():
    names = {f.name for f in dataclasses.fields(cls)}
    assert set(V.RULES[cls.__name__]) <= names, cls.__name__


def test_the_default_experiment_is_valid():
  V.validate_experiment(C.Experiment())


def _study_methods() -> dict:
  spec = importlib.util.spec_from_file_location("run_study",
                                                os.path.join(STUDY, "run_study.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.METHODS


GIN_FILES = sorted(glob.glob(os.path.join(ROOT, "experiments", "**", "*.gin"),
                             recursive=True))


@pytest.mark.parametrize("path", GIN_FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_shipped_experiment_file_is_valid(path):
  if path == os.path.join(STUDY, "base.gin"):
    # The study's base is run with one of its methods' bindings (run_study.py).
    for method, bindings in _study_methods().items():
      assert _problems_of([path], bindings) == [], method
  else:
    assert _problems_of([path], []) == []


def _problems_of(files, bindings) -> list[str]:
  gin.clear_config()
  gin.parse_config_files_and_bindings(files, bindings)
  return V.problems(C.Experiment())


def test_the_shipped_files_were_all_found():
  assert len(GIN_FILES) >= 10 and os.path.join(STUDY, "base.gin") in GIN_FILES


@pytest.mark.parametrize("binding, line", [
    ("RLConfig.steps = 'three'", "RLConfig.steps = 'three': expected an integer"),
    ("RLConfig.steps = 2.5", "RLConfig.steps = 2.5: expected an integer"),
    ("RLConfig.steps = True", "RLConfig.steps = True: expected an integer"),
    ("RLConfig.temperature = 'hot'", "RLConfig.temperature = 'hot': expected a number"),
    ("RunConfig.progress = 1", "RunConfig.progress = 1: expected True or False"),
    ("ModelSpec.dtype = 16", "ModelSpec.dtype = 16: expected a string"),
    ("TaskSpec.kwargs = 3", "TaskSpec.kwargs = 3: expected a tuple"),
])
def test_a_value_of_the_wrong_type_names_the_field_and_the_type(binding, line):
  assert _problems(binding) == [line]


@pytest.mark.parametrize("binding, line", [
    ("RLConfig.steps = -5", "RLConfig.steps = -5: must be >= 0 (0 skips RL)"),
    ("RLConfig.group_size = 0", "RLConfig.group_size = 0: must be >= 1 (rollouts per "
     "prompt)"),
    ("RLConfig.max_new_tokens = 0", "RLConfig.max_new_tokens = 0: must be >= 1 (the "
     "generation budget per rollout)"),
    ("RLConfig.temperature = -1.0", "RLConfig.temperature = -1.0: must be > 0.0 (the "
     "trainer's log-probs divide by it; greedy rollouts have no policy gradient)"),
    ("RLConfig.top_p = 1.5", "RLConfig.top_p = 1.5: must lie in (0.0, 1.0] (1 turns "
     "nucleus sampling off)"),
    ("RLConfig.top_p = 0.0", "RLConfig.top_p = 0.0: must lie in (0.0, 1.0] (1 turns "
     "nucleus sampling off)"),
    ("RLConfig.top_k = -1", "RLConfig.top_k = -1: must be >= 0 (0 turns top-k off)"),
    ("RLConfig.learning_rate = 0.0", "RLConfig.learning_rate = 0.0: must be > 0.0"),
    ("RLConfig.minibatches = 0", "RLConfig.minibatches = 0: must be >= 1 (optimizer "
     "updates per pass over a step's rollouts)"),
    ("RLConfig.micro_batches = 0", "RLConfig.micro_batches = 0: must be >= 1 "
     "(gradient-accumulation chunks per update)"),
    ("RLConfig.thinking_budget = -1", "RLConfig.thinking_budget = -1: must be >= 0 (0: "
     "no budget)"),
    ("RunConfig.checkpoint_every = 0", "RunConfig.checkpoint_every = 0: must be >= 1 "
     "(steps between checkpoints)"),
    ("EvalConfig.every = 0", "EvalConfig.every = 0: must be >= 1 (RL steps between "
     "evaluations)"),
    ("SFTConfig.answer_noise = 1.0", "SFTConfig.answer_noise = 1.0: must lie in "
     "[0.0, 1.0)"),
    ("CompileSpec.usable_hbm = 0.0", "CompileSpec.usable_hbm = 0.0: must lie in "
     "(0.0, 1.0]"),
])
def test_a_value_out_of_range_names_the_field_and_the_range(binding, line):
  assert _problems(binding) == [line]


@pytest.mark.parametrize("binding, line", [
    ("ModelSpec.dtype = 'fp16'", "ModelSpec.dtype = 'fp16': must be one of "
     "['float32', 'bfloat16']"),
    ("ModelSpec.remat = 'full'", "ModelSpec.remat = 'full': must be one of ['none', "
     "'layer', 'dots']"),
    ("ModelSpec.attention_backend = 'flash'", "ModelSpec.attention_backend = 'flash': "
     "must be one of ['auto', 'xla', 'pallas']"),
    ("RLConfig.reference = 'maybe'", "RLConfig.reference = 'maybe': must be one of "
     "['auto', 'yes', 'no'] (or True / False)"),
    ("RunConfig.distributed = 'yes'", "RunConfig.distributed = 'yes': must be one of "
     "['auto', 'on', 'off']"),
    ("RunConfig.compile_mode = 'fastest'", "RunConfig.compile_mode = 'fastest': must be "
     "one of ['auto', 'fast', 'optimized']"),
    ("RunConfig.memory_check = 'strict'", "RunConfig.memory_check = 'strict': must be "
     "one of ['error', 'warn', 'off']"),
    ("TaskSpec.chat_template = 'yes'", "TaskSpec.chat_template = 'yes': must be one of "
     "['auto', 'on', 'off']"),
    ("TaskSpec.cold_start = 'middle'", "TaskSpec.cold_start = 'middle': must be one of "
     "['none', 'suffix', 'prefix', 'reverse']"),
    ("TaskSpec.tokenizer = 'checkpoint'", "TaskSpec.tokenizer = 'checkpoint': "
     "'checkpoint' needs ModelSpec.checkpoint; set it, or use 'char' or a path"),
])
def test_an_unknown_choice_lists_the_allowed_values(binding, line):
  assert _problems(binding) == [line]


def test_objective_names_and_options_are_checked_against_the_registry():
  (line,) = _problems("RLConfig.objective = 'grpoo'")
  assert line.startswith("RLConfig.objective = 'grpoo': must be one of ['cispo', 'dapo'")
  assert all(f"'{name}'" in line for name in OBJECTIVES)
  (line,) = _problems("RLConfig.objective_overrides = (('kl_coeff', 0.0),)")
  assert line.startswith("RLConfig.objective_overrides = (('kl_coeff', 0.0),): unknown "
                         "names ['kl_coeff']; allowed: ['adv_ddof', 'adv_eps', 'agg',")
  assert line.endswith("(the options of RLConfig.objective = 'grpo')")
  assert _problems("RLConfig.objective = 'garl'",
                   "RLConfig.objective_overrides = (('q', 1.5),)") == [
      "RLConfig.objective_overrides = (('q', 1.5),): RLConfig.objective = 'garl' rejects "
      "them: Tsallis q must lie in [0, 1], got 1.5"]
  assert _problems("RLConfig.objective_overrides = (('adv_ddof', 'one'),)") == [
      "RLConfig.objective_overrides = (('adv_ddof', 'one'),): adv_ddof = 'one': expected "
      "an integer"]
  assert _problems("RLConfig.objective_overrides = (('kl_coef', 0.0),)",
                   "RLConfig.reference = 'no'") == []
  assert _problems("RLConfig.reference = 'no'") == [
      "RLConfig.reference = 'no': RLConfig.objective = 'grpo' needs reference log-probs "
      "for {'kl_coef': 0.04}; set reference = 'auto' or those coefficients to 0 "
      "(RLConfig.objective_overrides)"]


def test_group_normalised_and_leave_one_out_objectives_need_two_rollouts():
  assert _problems("RLConfig.group_size = 1") == [
      "RLConfig.group_size = 1: RLConfig.objective = 'grpo' needs group_size >= 2 (its "
      "advantages compare rollouts of one prompt); raise RLConfig.group_size"]
  assert _problems("RLConfig.group_size = 1",
                   "RLConfig.objective_overrides = (('adv_ddof', 0),)") == []
  assert _problems("RLConfig.group_size = 1", "RLConfig.objective = 'dr_grpo'") == []
  assert len(_problems("RLConfig.group_size = 1", "RLConfig.objective = 'garl'")) == 1
  assert _problems("RLConfig.group_size = 1", "RLConfig.objective = 'garl'",
                   "RLConfig.objective_overrides = (('estimator', 'plugin'),)") == []


def _runs(objective, cfg, group: int) -> bool:
  """Whether the objective's own prepare + loss accept groups of `group` rollouts."""
  B, T = 2 * group, 4
  rng = np.random.default_rng(0)
  f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
  inputs = ObjectiveInputs(
      logp_BT=f32(-rng.random((B, T))), mask_BT=f32(np.ones((B, T))),
      rewards_B=f32(rng.random(B)), rationale_mask_BT=f32(np.tile([1, 1, 0, 0], (B, 1))),
      answer_mask_BT=f32(np.tile([0, 0, 1, 1], (B, 1))), group_size=group,
      ref_logp_BT=f32(-rng.random((B, T))), old_logp_BT=f32(-rng.random((B, T))),
      teacher_logp_BT=f32(-rng.random((B, T))))
  try:
    loss, _ = objective.loss(objective.prepare(inputs, cfg, jax.random.key(0)), cfg)
  except ValueError:
    return False
  return bool(np.isfinite(loss))


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_min_group_size_is_what_each_objective_accepts(name):
  """The validator's table against the objectives themselves: the smallest group it
  allows runs, one fewer is refused by the objective (with and without adv_ddof=0 /
  GARL's plug-in estimator, the options that change it)."""
  obj = OBJECTIVES[name]
  configs = [obj.config()]
  fields = {f.name for f in dataclasses.fields(obj.config_cls)}
  if "adv_ddof" in fields:
    configs.append(obj.config(adv_ddof=0))
  if "estimator" in fields:
    configs.append(obj.config(estimator="plugin"))
  for cfg in configs:
    need = V.min_group_size(name, cfg)
    assert _runs(obj, cfg, need), (name, cfg)
    if need > 1:
      assert not _runs(obj, cfg, need - 1), (name, cfg)


def test_minibatches_and_micro_batches_must_hold_whole_groups():
  assert _problems("RLConfig.minibatches = 3") == [
      "RLConfig.minibatches = 3: must divide RLConfig.prompts_per_step = 32 so that each "
      "minibatch holds whole groups; use one of [1, 2, 4, 8, 16, 32]"]
  gin.clear_config()
  assert _problems("RLConfig.prompts_per_step = 12", "RLConfig.minibatches = 2",
                   "RLConfig.micro_batches = 4") == [
      "RLConfig.micro_batches = 4: must divide the 6 prompts of a minibatch "
      "(RLConfig.prompts_per_step / RLConfig.minibatches) so that each micro-batch holds "
      "whole groups; use one of [1, 2, 3, 6]"]


@pytest.mark.parametrize("mesh, ok", [
    ("(1, 1, 1)", True), ("(-1, 2, 1)", True), ("[2, 2, 2]", True),
    ("(-1, -1, 1)", False), ("(1, 1)", False), ("(0, 1, 1)", False),
    ("(1.5, 1, 1)", False), ("(-2, 1, 1)", False), ("'8'", False),
])
def test_mesh_is_three_integers_with_at_most_one_free_axis(mesh, ok):
  found = _problems(f"RunConfig.mesh = {mesh}")
  assert (found == []) == ok, found
  if not ok:
    assert found[0].startswith(f"RunConfig.mesh = {eval(mesh)!r}: ")


def test_model_overrides_and_task_kwargs_name_what_exists():
  assert _problems("ModelSpec.overrides = (('d_model', 0),)") == [
      "ModelSpec.overrides = (('d_model', 0),): d_model = 0: must be >= 1"]
  assert _problems("ModelSpec.overrides = (('dtype', 'bfloat16'),)") == [
      "ModelSpec.overrides = (('dtype', 'bfloat16'),): ['dtype'] are ModelSpec's own "
      "settings: set ModelSpec.dtype instead"]
  (line,) = _problems("ModelSpec.overrides = (('n_heads', 3), ('n_kv_heads', 2))")
  assert "gives an invalid model with ModelSpec.preset = 'tiny': n_heads=3 must be a " \
      "multiple of n_kv_heads=2 (GQA)" in line
  assert _problems("TaskSpec.kwargs = (('digits', 2),)") == [
      "TaskSpec.kwargs = (('digits', 2),): unknown names ['digits']; allowed: "
      "['heldout_fraction', 'num_digits', 'num_operands', 'rationale_end'] (the "
      "arguments of TaskSpec.name = 'arithmetic')"]
  assert _problems("TaskSpec.name = 'dataset'") == [
      "TaskSpec.kwargs = (): TaskSpec.name = 'dataset' needs ['source'], e.g. "
      "(('source', ...),)"]


def test_every_problem_is_reported_at_once():
  gin.parse_config_files_and_bindings([], [
      "RLConfig.steps = -5", "RLConfig.group_size = 0", "RunConfig.checkpoint_every = 0",
      "EvalConfig.every = 0", "RLConfig.top_p = 1.5", "ModelSpec.dtype = 'fp16'"])
  with pytest.raises(V.ConfigError) as info:
    V.validate_experiment(C.Experiment())
  head, *lines = str(info.value).splitlines()
  assert head == "invalid experiment configuration (6 problems):"
  assert [line.split(" = ")[0].strip() for line in lines] == [
      "ModelSpec.dtype", "RLConfig.steps", "RLConfig.group_size", "RLConfig.top_p",
      "EvalConfig.every", "RunConfig.checkpoint_every"]
  assert isinstance(info.value, ValueError)


def test_a_section_bound_to_something_else_is_named():
  exp = dataclasses.replace(C.Experiment(), rl=3)
  assert V.problems(exp) == ["Experiment.rl = 3: expected a RLConfig"]


# ------------------------------------------------------------------------- fuzz

FIELDS = [f"{cls.__name__}.{f.name}" for _, cls in V.sections()
          for f in dataclasses.fields(cls)]
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
              st.sampled_from(["auto", "grpo", "garl", "rloo", "checkpoint", "dataset",
                               "bfloat16", "v5e:2x4", "", "d_model", "q"])),
    lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=3).map(tuple),
    max_leaves=6)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(bindings=st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1,
                         max_size=3))
def test_random_bindings_give_a_valid_experiment_or_a_config_error(bindings):
  """Whatever is bound to whichever fields: valid, or a ConfigError whose every line
  names a field, one of them a field that was bound (directly or in a cross-field
  message). Never another exception."""
  gin.clear_config()
  for name, value in bindings:
    gin.bind_parameter(name, value)
  try:
    V.validate_experiment(C.Experiment())
  except V.ConfigError as e:
    lines = str(e).splitlines()[1:]
    assert lines and all(line.strip().split(" = ")[0] in FIELDS + [
        f"Experiment.{a}" for a, _ in V.sections()] for line in lines), str(e)
    assert any(name in str(e) for name, _ in bindings), str(e)
    assert "cannot be checked" not in str(e), str(e)


@pytest.mark.parametrize("binding, line", [
    ("RLConfig.optimizer = 'adam'", "RLConfig.optimizer = 'adam': must be one of "
     "['adamw', 'sgd'] (the RL update rule; SFT always uses AdamW)"),
    ("RLConfig.momentum = 1.0", "RLConfig.momentum = 1.0: must lie in [0.0, 1.0) "
     "(SGD's heavy-ball coefficient; 0: plain SGD)"),
    ("RLConfig.momentum = -0.5", "RLConfig.momentum = -0.5: must lie in [0.0, 1.0) "
     "(SGD's heavy-ball coefficient; 0: plain SGD)"),
])
def test_the_rl_optimizer_and_its_momentum_are_checked(binding, line):
  assert _problems(binding) == [line]
  assert _problems("RLConfig.optimizer = 'sgd'\nRLConfig.momentum = 0.0") == []
