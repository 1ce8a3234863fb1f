"""DatasetTask: real-data prompts in the task contract, scored against the gold."""
import json

import pytest

from reasoning_jax.data.tasks import get_task
from reasoning_jax.rewards import score_item
from reasoning_jax.training import config as C
from reasoning_jax.training.loop import Trainer


@pytest.fixture()
def jsonl(tmp_path):
  path = tmp_path / "toy.jsonl"
  with open(path, "w") as f:
    for i in range(40):
      a, b = 3 + i, 7 + 2 * i
      f.write(json.dumps({"question": f"What is {a} plus {b}?", "answer": str(a + b),
                          "rationale": f"{a} + {b} = {a + b}."}) + "\n")
  return str(path)


def test_examples_and_verifier(jsonl):
  task = get_task("dataset", source=f"jsonl:{jsonl}", eval_split="")
  train = task.rl_prompts(10, seed=0)
  held = task.rl_prompts(2, seed=0, split="heldout")
  assert task.rl_prompts(10, seed=0) == train
  assert not {e.prompt for e in train} & {e.prompt for e in held}
  ex = train[0]
  gold = ex.metadata["golds"][0]
  assert ex.answer == f" \\boxed{{{gold}}}" and ex.prompt.endswith("<think>")
  reward = ex.make_reward()
  assert score_item(reward, ex.reward_item(f"I add.</think> \\boxed{{{gold}}}")).score == 1
  assert score_item(reward, ex.reward_item(f"I add.</think> {int(gold) + 1}")).score == 0
  # No marker: an unparsable answer, counted as such, not a silent 0.
  assert score_item(reward, ex.reward_item(gold)).reason == "unparsable_answer"
  assert len(task.warmup_corpus(5)) == 5


def test_bad_source_is_named():
  with pytest.raises(ValueError, match="'tfds:<name>' or 'jsonl:<path>'"):
    get_task("dataset", source="gsm8k")


def test_trains_on_a_jsonl_dataset(jsonl, tmp_path):
  """SFT then GARL on real-data prompts with a sentencepiece tokenizer."""
  import os
  import reasoning_jax.data as d
  sp = os.path.join(os.path.dirname(d.__file__), "assets", "synthetic_sp.model")
  exp = C.Experiment(
      model=C.ModelSpec(overrides=(("d_model", 32), ("n_layers", 1), ("n_heads", 2),
                                   ("n_kv_heads", 1), ("head_dim", 16), ("ffw_dim", 64),
                                   ("max_seq_len", 128))),
      task=C.TaskSpec(name="dataset", tokenizer=sp, num_warmup=8, num_train=8, num_eval=2,
                      kwargs=(("source", f"jsonl:{jsonl}"), ("eval_split", ""),
                              ("answer_format", " {answer}"))),
      sft=C.SFTConfig(steps=2, batch_size=4),
      rl=C.RLConfig(objective="garl", steps=1, prompts_per_step=2, group_size=2,
                    max_new_tokens=16),
      eval=C.EvalConfig(every=100, num_prompts=2, samples=2),
      run=C.RunConfig(reward_workers=0, progress=False, plots=False))
  final = Trainer(exp, str(tmp_path / "run")).run()
  assert 0.0 <= final["eval/accuracy"] <= 1.0
  assert final["eval/reward/ok"] + final["eval/reward/unparsable_answer"] == 2
