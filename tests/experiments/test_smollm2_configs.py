"""experiments/smollm2/: every gin combination is a valid experiment, the cold-start
answer format is one the warm instruction never asks for and the real verifier rejects
the warm format, CHAMP's RL split, and the runner's directory contract and report."""
import importlib.util
import itertools
import json
import os

import pytest

from reasoning_jax.data.tasks import ColdStart, get_task
from reasoning_jax.rewards import get_reward
from reasoning_jax.rewards.base import score_item
from reasoning_jax.training.setup import build_task
from reasoning_jax.training.validate import validate_experiment

HERE = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "smollm2")


@pytest.fixture(scope="module")
def run():
  spec = importlib.util.spec_from_file_location("smollm2_run", os.path.join(HERE, "run.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _combinations(run):
  return list(itertools.product(run.TASKS, run.STARTS, run.METHODS, run.SIZES))


def test_every_combination_is_a_valid_experiment(run):
  combos = _combinations(run)
  assert len(combos) == 2 * 2 * 5 * 2
  q = {"grpo": None, "garl_q0": 0.0, "garl_q0.75": 0.75, "garl_q1": 1.0,
       "paft_q0.75": 0.75}
  for task, start, method, size in combos:
    exp, _ = run.experiment(run.gin_files(task, start, method, size), [])
    validate_experiment(exp)  # `experiment` validates too; this names the contract
    assert exp.model.checkpoint == "smollm2" and exp.task.tokenizer == "checkpoint"
    assert exp.task.chat_template == "auto" and exp.sft.steps == 0
    assert exp.task.name == task and exp.rl.group_size == 8 and exp.eval.samples == 8
    assert exp.rl.objective == method.split("_")[0]
    over = dict(exp.rl.objective_overrides)
    assert over.get("q") == q[method]
    if method == "grpo":
      assert over == {"kl_coef": 0.0}
    assert exp.task.cold_start == ("none" if start == "warm" else "prefix")
    # Evaluated before the first RL step and after the last only.
    assert exp.eval.every > exp.rl.steps
    assert exp.model.dtype == ("float32" if size == "reduced" else "bfloat16")
    # Every training prompt is distinct and the pools hold them (checked by building
    # them below for the largest size).
    assert exp.task.num_train == exp.rl.steps * exp.rl.prompts_per_step


def test_pools_hold_every_size(run):
  for task, size in itertools.product(run.TASKS, run.SIZES):
    exp, _ = run.experiment(run.gin_files(task, "cold", "garl_q0.75", size), [])
    t = build_task(exp)
    train = t.rl_prompts(exp.task.num_train, seed=exp.task.data_seed + 1)
    held = t.rl_prompts(exp.task.num_eval, seed=exp.task.data_seed + 2, split="heldout")
    assert len({e.prompt for e in train}) == exp.task.num_train
    assert not {e.prompt for e in train} & {e.prompt for e in held}


@pytest.mark.parametrize("task", ["word_problems", "champ"])
def test_cold_format_is_unseen_and_rejected(run, task):
  warm_exp, _ = run.experiment(run.gin_files(task, "warm", "grpo", "reduced"), [])
  cold_exp, _ = run.experiment(run.gin_files(task, "cold", "grpo", "reduced"), [])
  # Same prompt and instruction in both starts; only the verified format differs.
  assert warm_exp.task.system_prompt == cold_exp.task.system_prompt
  instruction = warm_exp.task.system_prompt
  assert "e.g. The answer is: 42" in instruction
  assert "!" not in instruction
  warm = build_task(warm_exp).rl_prompts(6, seed=1)
  cold = build_task(cold_exp).rl_prompts(6, seed=1)
  for w, c in zip(warm, cold):
    assert w.prompt == c.prompt
    assert c.answer == "!!" + w.answer  # the gold in the cold format
    # An answer in the instructed (warm) format, as the model writes it after a
    # rationale: accepted by the warm verifier, rejected by the cold one.
    warm_answer = f"3+4=7.\nThe answer is: {w.answer}"
    assert score_item(w.make_reward(), w.reward_item(warm_answer)).score == 1.0
    rejected = score_item(c.make_reward(), c.reward_item(warm_answer))
    assert rejected.score == 0.0
    # The cold-format answer is what the cold verifier accepts.
    cold_answer = f"3+4=7.\nThe answer is: {c.answer}"
    assert score_item(c.make_reward(), c.reward_item(cold_answer)).score == 1.0


def test_word_problem_cold_verifier_is_exact_match():
  t = get_task("word_problems", cold_start=ColdStart(kind="prefix", depth=2),
               rationale_end="The answer is: ")
  ex = t.rl_prompts(1, seed=1)[0]
  assert (ex.reward, dict(ex.reward_kwargs)) == ("exact", {"marker": "The answer is: "})
  assert score_item(ex.make_reward(), ex.reward_item(f"The answer is: {ex.answer}")
                    ).score == 1.0
  # One "!" short, or the prefix written as a suffix, is still the wrong format.
  for text in (f"The answer is: !{ex.answer[2:]}", f"The answer is: {ex.answer[2:]}!!"):
    assert score_item(ex.make_reward(), ex.reward_item(text)).score == 0.0


def test_champ_split_and_verifiers():
  t = get_task("champ", heldout_fraction=0.3, rationale_end="The answer is: ")
  probs = t.problems()
  # docs/rewards.md: 137 math-verifiable + 33 yes/no of CHAMP's 270.
  assert len(probs) == 170
  kinds = {p.answer_kind for p in probs}
  assert kinds == {"number", "expression", "yes_no"}
  train = t.rl_prompts(119, seed=1)
  held = t.rl_prompts(51, seed=2, split="heldout")
  assert {e.metadata["id"] for e in train}.isdisjoint(e.metadata["id"] for e in held)
  assert len(train) + len(held) == 170
  with pytest.raises(ValueError, match="TaskSpec.num_eval <= 51"):
    t.rl_prompts(52, split="heldout")
  by_id = {e.metadata["id"]: e for e in train + held}
  # Aliases: P_Number-Theory_51 accepts either of its two gold forms.
  nt51 = by_id["P_Number-Theory_51"]
  assert nt51.answer == "(20*10^15-2)/17"
  assert score_item(nt51.make_reward(), nt51.reward_item("so The answer is: 1176470588235294")
                    ).score == 1.0
  yes_no = next(e for e in by_id.values() if e.metadata["answer_kind"] == "yes_no")
  assert yes_no.reward == "qa_exact_match"
  other = "no" if yes_no.answer == "yes" else "yes"
  assert score_item(yes_no.make_reward(), yes_no.reward_item(f"The answer is: {yes_no.answer}")
                    ).score == 1.0
  assert score_item(yes_no.make_reward(), yes_no.reward_item(f"The answer is: {other}")).score == 0.0


def test_champ_refuses_what_it_cannot_verify():
  with pytest.raises(ValueError, match="double factorial|suffix"):
    get_task("champ", cold_start=ColdStart(kind="suffix", depth=1))
  with pytest.raises(ValueError, match="free_text"):
    get_task("champ", kinds=("free_text",))
  with pytest.raises(ValueError, match="SFTConfig.steps = 0"):
    get_task("champ").warmup_corpus(4)


def test_champ_math_gold_is_read_after_the_cold_prefix():
  t = get_task("champ", cold_start=ColdStart(kind="prefix", depth=2))
  ex = next(e for e in t.rl_prompts(119, seed=1) if e.metadata["id"] == "P_Combinatorics_1")
  assert ex.answer == "!!239"
  reward = get_reward(ex.reward, **ex.reward_kwargs)
  assert score_item(reward, ex.reward_item("... |!!239")).score == 1.0
  assert score_item(reward, ex.reward_item("... |!!238")).score == 0.0
  assert score_item(reward, ex.reward_item("... |239")).score == 0.0


def _write(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")


def test_runner_plan_and_report(run, tmp_path):
  import argparse
  a = argparse.Namespace(seeds=(0, 1), tasks=run.TASKS, starts=run.STARTS,
                         methods=run.METHODS)
  cells = run.plan(a)
  assert len(cells) == len(set(cells)) == 40
  assert run.run_dir("o", "champ", "cold", "garl_q0.75", 1) == os.path.join(
      "o", "champ", "cold", "garl_q0.75", "seed1")
  assert set(run.REDUCED_MATRIX["seeds"]) >= {0, 1}
  out = str(tmp_path)
  # Two seeds of one cell: pass@1 0.25 -> 0.5 and 0.125 -> 0.5 (changes +0.25, +0.375).
  for seed, (b, f) in enumerate([(0.25, 0.5), (0.125, 0.5)]):
    ev = {"eval/maj@8": 0.0, "eval/pass@8": 0.5, "eval/greedy_accuracy": 0.0}
    _write(os.path.join(run.run_dir(out, "word_problems", "warm", "grpo", seed),
                        "metrics.jsonl"),
           [{"step": 0, "eval/accuracy": b, **ev}, {"step": 1, "loss/total": 0.1},
            {"step": 2, "eval/accuracy": f, **ev}])
  # An unfinished run (no final evaluation) is left out.
  _write(os.path.join(run.run_dir(out, "champ", "warm", "grpo", 0), "metrics.jsonl"),
         [{"step": 0, "eval/accuracy": 0.0}])
  text = run.report(out)
  assert "| word_problems | warm | grpo | 0 | 0.250 -> 0.500 |" in text
  assert "| word_problems | warm | grpo | 1 | 0.125 -> 0.500 |" in text
  assert "champ" not in text
  # Mean +0.3125; t 95% CI: half-width t_{0.975,1} * s / sqrt(2) with s = 0.125/sqrt(2),
  # so 12.7062 * 0.0625 = 0.794 around the mean.
  assert "| word_problems | warm | grpo | 2 | +0.312 [-0.482, +1.107] |" in text


def test_sft_smoke_file_is_valid(run):
  exp, _ = run.experiment([os.path.join(HERE, "word_problems_sft_grpo.gin")], [])
  assert exp.model.checkpoint == "smollm2" and exp.sft.steps == 4
