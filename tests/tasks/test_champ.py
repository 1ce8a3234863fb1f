"""CHAMP loader: all 270 problems; every gold is verifiable or says why not."""
import collections

import pytest

pytest.importorskip("champ_dataset")

from reasoning_jax.data.champ import check_champ_golds, classify_answer, load_champ  # noqa: E402
from reasoning_jax.rewards import RewardRunner, get_reward, score_item  # noqa: E402


@pytest.fixture(scope="module")
def problems():
  return load_champ()


@pytest.fixture(scope="module")
def checked(problems):
  with RewardRunner(num_workers=2, timeout_s=5.0) as runner:
    return check_champ_golds(problems, runner)


def test_loads_all_270(problems):
  assert len(problems) == 270
  assert len({p.identifier for p in problems}) == 270
  assert collections.Counter(p.category for p in problems) == {
      "Number-Theory": 80, "Inequality": 50, "Polynomial": 50, "Sequence": 50,
      "Combinatorics": 40}
  assert all(p.problem and p.answer_raw for p in problems)


def test_every_gold_is_verifiable_or_has_a_reason(checked):
  for p in checked:
    if p.reward is None:
      assert p.unparsable_reason, p
    else:
      assert p.golds and p.unparsable_reason is None, p
  # Every gold the classifier calls math-verifiable parses and equals itself in sympy.
  kinds = collections.Counter(p.reward for p in checked)
  assert kinds == {"math": 137, "qa_exact_match": 33, None: 100}


def test_classification_by_hand(problems):
  by_id = {p.identifier: p for p in problems}
  assert by_id["P_Combinatorics_1"].golds == ("239",)
  assert by_id["P_Combinatorics_2"].golds == ("252",)   # C(10, 5) is text notation
  assert by_id["P_Inequality_1"].golds == ("[-1, 1]",)
  assert by_id["P_Number-Theory_51"].golds == ("(20*10^15-2)/17", "1176470588235294")
  assert by_id["P_Combinatorics_17"].answer_kind == "yes_no"
  assert by_id["P_Sequence_5"].answer_kind == "free_text"
  assert classify_answer("0 (i.e., no such values)")[:2] == ("number", ("0",))
  kind, _, reward, why = classify_answer("@@x=2, y=1@@")
  assert (kind, reward) == ("expression", None) and "relations" in why


def test_scoring_a_completion(checked):
  by_id = {p.identifier: p for p in checked}
  p = by_id["P_Combinatorics_33"]   # sum of cubes, gold (n(n+1)/2)^2
  reward = get_reward(p.reward)
  assert score_item(reward, p.reward_item("\\boxed{\\frac{n^2(n+1)^2}{4}}")).score == 1.0
  assert score_item(reward, p.reward_item("\\boxed{\\frac{n^2(n+1)^2}{2}}")).score == 0.0
  yes_no = by_id["P_Combinatorics_17"]
  assert score_item(get_reward(yes_no.reward),
                    yes_no.reward_item("Answer: No")).score == 1.0
  with pytest.raises(ValueError, match="no automatic verifier"):
    by_id["P_Sequence_5"].reward_item("anything")
