"""Reward choices from config: checks, errors that name the field, and the rewards the
tasks' examples get, scored on known completions against hand-computed values."""
import json
import pickle

import pytest

from reasoning_jax.data.tasks import ColdStart, get_task
from reasoning_jax.rewards import RewardRunner, get_reward, score_examples
from reasoning_jax.rewards.spec import RewardSpec, parse_reward_spec


def test_unknown_option_names_field_option_and_allowed_ones():
  with pytest.raises(ValueError, match=r"TaskSpec\.reward_kwargs: reward 'laser' has no "
                     r"option 'target_len'; its options are \['alpha', 'target_length'\]"):
    parse_reward_spec("laser", (("target_len", 64),), field="TaskSpec.reward")
  with pytest.raises(ValueError, match=r"TaskSpec\.reward = 'lazer' is not a reward; "
                     r"choose one of \[.*'laser'.*'task'\]"):
    parse_reward_spec("lazer", field="TaskSpec.reward")
  comps = ((1.0, "task"), (0.5, "rlcr", (("shape", "paper"),)))
  with pytest.raises(ValueError, match=r"components\[1\] options: reward 'rlcr' has no "
                     r"option 'shape'; its options are \['answer_metric', 'form'\]"):
    parse_reward_spec("weighted", (("components", comps),), field="TaskSpec.reward")
  # Fixed fields are not options: qa_f1 is the f1 metric.
  with pytest.raises(ValueError, match=r"has no option 'metric'"):
    parse_reward_spec("qa_f1", {"metric": "substring"})


def test_bad_values_and_malformed_sums_are_named():
  with pytest.raises(ValueError, match=r"reward_kwargs: Unknown RLCR form 'brier'"):
    parse_reward_spec("rlcr", {"form": "brier"})
  with pytest.raises(ValueError, match=r"components\[0\]: the weight must be a finite"):
    parse_reward_spec("weighted", {"components": ((float("inf"), "math"),)})
  with pytest.raises(ValueError, match=r"needs components="):
    parse_reward_spec("weighted", {})
  with pytest.raises(ValueError, match=r"components\[0\] must be \(weight, name\)"):
    parse_reward_spec("weighted", {"components": ((1.0,),)})
  with pytest.raises(ValueError, match=r"'task' .* takes no options"):
    parse_reward_spec("weighted", {"components": ((1.0, "task", {"marker": "|"}),)})
  with pytest.raises(ValueError, match=r"names an option twice"):
    parse_reward_spec("laser", (("alpha", 1.0), ("alpha", 2.0)))


def test_resolve_fills_markers_only_where_the_reward_has_them():
  spec = parse_reward_spec("weighted", {"components": [
      [1.0, "task"], [0.5, "laser", {"alpha": 1.0}], [0.2, "math"],
      [0.1, "exact", {"marker": "#"}]]})
  assert spec.components[1][1] == RewardSpec("laser", (("alpha", 1.0),))
  marker = {"marker": "|", "answer_after": "|"}
  name, kw = spec.resolve(marker, ("countdown", {"marker": "|", "suffix": "!!"}))
  assert name == "weighted"
  assert kw["components"] == (
      (1.0, "countdown", (("marker", "|"), ("suffix", "!!"))),
      (0.5, "laser", (("alpha", 1.0),)),          # laser has no marker option
      (0.2, "math", (("answer_after", "|"),)),
      (0.1, "exact", (("marker", "#"),)))          # the user's marker wins
  reward = get_reward(name, **kw)
  assert pickle.loads(pickle.dumps(reward)) == reward
  hash(tuple(sorted(kw.items())))  # examples are grouped by their reward's kwargs


@pytest.fixture()
def jsonl(tmp_path):
  path = tmp_path / "toy.jsonl"
  with open(path, "w") as f:
    for i in range(40):
      f.write(json.dumps({"question": f"What is {i} plus 7?", "answer": str(i + 7)}) + "\n")
  return str(path)


def _dataset(jsonl, reward, options=()):
  task = get_task("dataset", source=f"jsonl:{jsonl}", eval_split="")
  return task.use_reward(reward, options)


def _score(examples, texts, lengths, workers=0):
  with RewardRunner(num_workers=workers) as runner:
    scores, counts = score_examples(examples, texts, lengths, runner)
  return [float(s) for s in scores], counts


def test_laser_on_dataset_examples_uses_the_token_count(jsonl):
  task = _dataset(jsonl, "laser", {"target_length": 10, "alpha": 0.5})
  ex = task.rl_prompts(1)[0]
  g = ex.metadata["golds"][0]
  assert ex.prompt.endswith("<think>") and ex.reward == "laser"
  texts = [f"add</think> \\boxed{{{g}}}", f"add</think> \\boxed{{{g}}}",
           "add</think> \\boxed{1000}", f"add \\boxed{{{g}}}"]
  # C(y): +1 correct, -0.5 a wrong box, -1 no </think>; +alpha when correct and
  # num_tokens <= 10 (11 tokens is over: the count, not the text, decides).
  scores, _ = _score([ex] * 4, texts, [10, 11, 3, 3])
  assert scores == [1.5, 1.0, -0.5, -1.0]
  # Held-out examples keep the verifier: evaluation counts correctness.
  held = task.rl_prompts(1, split="heldout")[0]
  assert (held.reward, dict(held.reward_kwargs)) == ("math", {"answer_after": "</think>"})


def test_rlcr_sees_the_think_tag_the_prompt_opened(jsonl):
  ex = _dataset(jsonl, "rlcr", {"form": "official"}).rl_prompts(1)[0]
  g = ex.metadata["golds"][0]
  tail = "</answer><analysis>sure</analysis><confidence>0.8</confidence>"
  texts = [f"I add.</think><answer>{g}{tail}", f"I add.</think><answer>99{tail}",
           f"I add.<answer>{g}{tail}"]
  scores, _ = _score([ex] * 3, texts, [5, 5, 5])
  # official: 0.5 format + 0.5 acc + 0.5 (1 - (acc - q)^2); a format failure scores 0.
  assert scores == pytest.approx([0.5 + 0.5 + 0.5 * (1 - 0.2 ** 2),
                                  0.5 + 0.0 + 0.5 * (1 - 0.8 ** 2), 0.0])
  paper = _dataset(jsonl, "rlcr").rl_prompts(1)[0]
  scores, _ = _score([paper] * 2, texts[:2], [5, 5])
  assert scores == pytest.approx([1 - 0.2 ** 2, -(0.8 ** 2)])  # 1[c] - (q - 1[c])^2


def test_weighted_sum_in_worker_processes(jsonl):
  comps = ((1.0, "task"), (0.5, "think_format"),
           (2.0, "dapo_overlong", (("max_length", 12), ("cache_length", 8))))
  ex = _dataset(jsonl, "weighted", (("components", comps),)).rl_prompts(1)[0]
  g = ex.metadata["golds"][0]
  texts = [f"add</think> \\boxed{{{g}}}", "add</think> \\boxed{1000}",
           f"add<think>x</think> \\boxed{{{g}}}", "no marker"]
  lengths = [4, 8, 20, 12]
  scores, counts = _score([ex] * 4, texts, lengths, workers=1)
  # math (0/1; no marker: unparsable, worth 0) + 0.5 think format (the prompt's <think>
  # counts; a second <think> fails it) + 2 * overlong (0 to 4 tokens, (4 - L) / 8 to 12,
  # -1 beyond).
  assert scores == pytest.approx([1 + 0.5 + 0.0, 0 + 0.5 + 2 * (-4 / 8),
                                  1 + 0.0 + 2 * -1.0, 0 + 0.0 + 2 * (-8 / 8)])
  assert counts["reward/unparsable_answer"] == 1 and counts["reward/ok"] == 3


def test_synthetic_tasks_take_task_plus_length_and_refuse_markup(jsonl):
  cold = ColdStart(kind="suffix", depth=2)
  task = get_task("countdown", cold_start=cold).use_reward(
      "weighted", {"components": ((1.0, "task"), (1.0, "dapo_overlong",
                                                  {"max_length": 8, "cache_length": 4}))})
  ex = task.rl_prompts(1)[0]
  right = ex.rationale + ex.rationale_end + ex.answer
  scores, _ = _score([ex] * 2, [right, right[:-1]], [5, 9])
  # The cold-start verifier (suffix "!!" required) plus (8 - 4 - 5) / 4 and -1.
  assert ex.answer.endswith("!!")
  assert scores == pytest.approx([1.0 - 0.25, 0.0 - 1.0])
  assert get_task("countdown", cold_start=cold).use_reward("task").rl_prompts(1) == [
      get_task("countdown", cold_start=cold).rl_prompts(1)[0]]
  with pytest.raises(ValueError, match=r"TaskSpec\.reward = 'laser' reads .* which task "
                     r"'arithmetic' cannot write"):
    get_task("arithmetic").use_reward("laser")
  with pytest.raises(ValueError, match=r"needs example metadata \['numbers', 'target'\]"):
    get_task("arithmetic").use_reward("countdown")
  with pytest.raises(ValueError, match=r"needs example metadata"):
    _dataset(jsonl, "countdown")


def test_dataset_verifier_must_be_a_correctness_check(jsonl):
  with pytest.raises(ValueError, match=r"reward 'laser' is not a correctness verifier.*"
                     r"TaskSpec\.reward"):
    get_task("dataset", source=f"jsonl:{jsonl}", reward="laser")
  task = get_task("dataset", source=f"jsonl:{jsonl}", reward="qa_f1",
                  reward_kwargs={"style": "tag"})
  ex = task.rl_prompts(1)[0]
  assert dict(ex.reward_kwargs) == {"answer_after": "</think>", "style": "tag"}
  with pytest.raises(ValueError, match=r"reward 'math' has no option 'answer_afer'"):
    get_task("dataset", source=f"jsonl:{jsonl}", reward_kwargs={"answer_afer": "x"})
