"""Synthetic tasks: determinism, self-verification, cold-start formats, splits, errors."""
import itertools

import pytest

from reasoning_jax.data.tasks import (TASKS, ArithmeticTask, CharVocab, ColdStart,
                                      CountdownTask, get_task)
from reasoning_jax.rewards import RewardRunner, evaluate_expression, score_item

COLD = [ColdStart(), ColdStart("suffix", 1), ColdStart("suffix", 3),
        ColdStart("prefix", 2), ColdStart("reverse"),
        ColdStart("suffix", depths=(1, 2, 4))]
CASES = [(name, cs) for name, cs in itertools.product(TASKS, COLD)
         if not (name == "countdown" and cs.kind == "reverse")]


def _examples(task, n=40):
  return (task.warmup_corpus(n, seed=3) + task.rl_prompts(n, seed=4)
          + task.rl_prompts(n // 4, seed=5, split="heldout"))


@pytest.mark.parametrize("name,cs", CASES)
def test_gold_passes_own_verifier_and_alphabet_covers_text(name, cs):
  task = get_task(name, cold_start=cs)
  vocab = task.vocab()
  for ex in _examples(task):
    out = score_item(ex.make_reward(), ex.reward_item(ex.target))
    assert (out.score, out.reason) == (1.0, "ok"), (ex, out)
    assert ex.rationale_correct(ex.target)
    assert vocab.decode(vocab.encode(ex.text, add_bos=True, add_eos=True)) == ex.text
    assert ex.rationale_end not in ex.rationale + ex.answer + ex.prompt


@pytest.mark.parametrize("name,cs", [c for c in CASES if c[1].kind != "none"])
def test_cold_start_rejects_the_warmup_format(name, cs):
  # The warmed-up model writes the warm-up answer; in the cold format that must fail
  # (exact-match success ~ 0), while the gold itself passes (previous test).
  task = get_task(name, cold_start=cs)
  for ex in task.rl_prompts(30, seed=7):
    warm = ex.rationale + ex.rationale_end + ex.metadata["warmup_answer"]
    if ex.metadata["warmup_answer"] == ex.answer:  # reverse of a palindrome, depth 0
      continue
    out = score_item(ex.make_reward(), ex.reward_item(warm))
    assert out.score == 0.0, (ex, out)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_deterministic_for_a_seed(name):
  a = get_task(name).rl_prompts(25, seed=11)
  b = get_task(name).rl_prompts(25, seed=11)
  c = get_task(name).rl_prompts(25, seed=12)
  assert a == b
  assert [e.prompt for e in a] != [e.prompt for e in c]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_splits_are_disjoint_and_prompts_distinct(name):
  task = get_task(name)
  train = {e.prompt for e in task.warmup_corpus(200, seed=0)}
  rl = {e.prompt for e in task.rl_prompts(200, seed=1)}
  held = task.rl_prompts(30, seed=2, split="heldout")
  assert len(train) == 200 and len({e.prompt for e in held}) == 30
  assert not ({e.prompt for e in held} & (train | rl))
  assert all(e.metadata["split"] == "heldout" for e in held)


def test_arithmetic_scratchpad_by_hand():
  task = ArithmeticTask(num_digits=3)
  p = task._problem(_FixedRng([567, 847]))
  # 7+7=14 (carry 1), 6+4+1=11 (carry 1), 5+8+1=14 -> 1414.
  assert (p.prompt, p.rationale, p.answer) == ("567+847=", "14,11,14", "1414")
  p = task._problem(_FixedRng([125, 709]))
  assert (p.rationale, p.answer) == ("14,03,08", "0834")
  assert ArithmeticTask(num_digits=2, num_operands=3).answer_width == 3
  assert task.alphabet == "0123456789+=,|!"


def test_cold_start_formats():
  ex = get_task("arithmetic", cold_start=ColdStart("reverse")).rl_prompts(1, 0)[0]
  assert ex.answer == ex.metadata["warmup_answer"][::-1]
  ex = get_task("arithmetic", cold_start=ColdStart("suffix", 3)).rl_prompts(1, 0)[0]
  assert ex.answer == ex.metadata["warmup_answer"] + "!!!"
  mixed = get_task("arithmetic", cold_start=ColdStart("suffix", depths=(1, 3)))
  exs = mixed.rl_prompts(60, 0)
  assert {e.metadata["cold_start_depth"] for e in exs} == {1, 3}
  for e in exs:  # the cue in the prompt names the depth
    d = e.metadata["cold_start_depth"]
    assert e.prompt.endswith("=" + "!" * d)
    assert e.answer == e.metadata["warmup_answer"] + "!" * d
  warm = mixed.warmup_corpus(5, 0)
  assert all(e.answer == e.metadata["warmup_answer"] and "!" not in e.text for e in warm)


def test_countdown_gold_uses_all_numbers_and_hits_target():
  task = CountdownTask(num_numbers=4, max_number=20, max_target=300)
  ops = set()
  for ex in task.rl_prompts(100, seed=0):
    value, used = evaluate_expression(ex.answer)
    assert value == ex.metadata["target"]
    assert sorted(used) == sorted(ex.metadata["numbers"])
    ops |= set(ex.answer) & set("+-*/")
  assert ops == set("+-*/")  # every operator occurs in a 100-problem sample


def test_to_record_matches_data_schema():
  ex = get_task("word_problems").rl_prompts(1, 0)[0]
  rec = ex.to_record(7)
  assert rec["id"] == "word_problems/train/7"
  assert {"id", "question", "answer", "rationale", "context", "answer_aliases"} <= set(rec)
  assert rec["question"] == ex.prompt and rec["answer"] == ex.answer


def test_tasks_through_the_runner():
  task = get_task("countdown", cold_start=ColdStart("suffix", 2))
  exs = task.rl_prompts(20, seed=0)
  with RewardRunner(num_workers=1, timeout_s=5) as runner:
    res = runner.score(exs[0].make_reward(), [e.reward_item(e.target) for e in exs])
  assert res.scores.tolist() == [1.0] * 20


def test_char_vocab():
  v = CharVocab("ab|")
  assert v.size == 6 and v.encode("ab|", add_bos=True, add_eos=True) == [1, 3, 4, 5, 2]
  assert v.decode([1, 3, 4, 2, 3]) == "ab"
  with pytest.raises(ValueError, match="'z' is not in this task's alphabet"):
    v.encode("az")
  with pytest.raises(ValueError, match="distinct"):
    CharVocab("aa")


def test_bad_input_errors():
  with pytest.raises(ValueError, match=r"Unknown task 'arith'; known tasks: \['arithmetic'"):
    get_task("arith")
  with pytest.raises(TypeError, match="Bad arguments for task 'arithmetic'"):
    get_task("arithmetic", digits=3)
  with pytest.raises(ValueError, match="num_digits"):
    get_task("arithmetic", num_digits=0)
  with pytest.raises(ValueError, match="reverse"):
    get_task("countdown", cold_start=ColdStart("reverse"))
  with pytest.raises(ValueError, match="Unknown cold-start kind"):
    ColdStart("sufix")
  with pytest.raises(ValueError, match="one character"):
    ColdStart("suffix", marker="!!")
  with pytest.raises(ValueError, match="collides"):
    get_task("arithmetic", cold_start=ColdStart("suffix", marker="+"))
  with pytest.raises(ValueError, match="split must be"):
    get_task("arithmetic").rl_prompts(2, split="test")
  with pytest.raises(ValueError, match="distinct"):
    get_task("arithmetic", num_digits=1).warmup_corpus(500)   # only 81 prompts exist


class _FixedRng:
  """Stands in for random.Random: randint returns the queued values."""

  def __init__(self, values):
    self.values = list(values)

  def randint(self, lo, hi):
    v = self.values.pop(0)
    assert lo <= v <= hi
    return v


def test_implied_sum_reads_the_column_totals():
  from reasoning_jax.data.tasks.arithmetic import implied_sum
  # 567+847: columns 7+7=14, 6+4+1=11, 5+8+1=14 -> digits 4, 1 under the last 14.
  assert implied_sum("14,11,14", 4) == "1414"
  assert implied_sum("04,01,03", 4) == "0314"  # 3 digits, zero-padded to 4
  assert implied_sum("14,1", 4) is None and implied_sum("", 4) is None


@pytest.mark.parametrize("cs, gold, implied_by_wrong", [
    (ColdStart(), "1414", "1404"), (ColdStart("suffix", 2), "1414!!", "1404!!"),
    (ColdStart("reverse"), "4141", "4041")])
def test_consistency_is_the_answer_the_own_rationale_implies(cs, gold, implied_by_wrong):
  from reasoning_jax.data.tasks.base import Problem
  task = ArithmeticTask(cold_start=cs)
  ex = task._finish(Problem("567+847=", "14,11,14", "1414"), "train", True)
  assert ex.answer == gold and ex.implied_answer("14,11,14") == gold
  assert ex.consistent("14,11,14|" + gold) is True
  # A wrong middle column (10 for 11) implies 1404: consistent with it, not with gold.
  assert ex.implied_answer("14,10,14") == implied_by_wrong
  assert ex.consistent("14,10,14|" + implied_by_wrong) is True
  assert not ex.rationale_correct("14,10,14|" + implied_by_wrong)
  assert ex.consistent("14,10,14|" + gold) is False
  # The teacher-forced gold of GARL/PAFT rollouts: right rationale only.
  assert ex.consistent("14,11,14|", answer=gold) is True
  assert ex.consistent("14,10,14|", answer=gold) is False
  # No marker (cut by the budget) or an unreadable rationale implies nothing.
  assert ex.consistent("14,11,1") is False and ex.consistent("14,1x,14|1414") is False
