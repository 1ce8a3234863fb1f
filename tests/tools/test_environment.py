"""Tool calls parsed from turns, run, counted, and rendered with the chat template."""
import numpy as np
import pytest

from reasoning_jax.data.chat_template import ChatTemplateError
import string

from reasoning_jax.data.tokenizer import char_level_tokenizer
from reasoning_jax.sampling.episodes import ToolRequest
from reasoning_jax.tools import Calculator, PythonSandbox
from reasoning_jax.tools.environment import ToolEnvironment, parse_tool_call

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture()
def tok():
  """A character-level tokenizer with ChatML's turn markers as special tokens."""
  t = char_level_tokenizer(["<pad>", "<s>", "<|im_end|>", "<|im_start|>"],
                           string.printable, bos_token="<s>", eos_token="<|im_end|>",
                           pad_token="<pad>")
  t.chat_template = CHATML
  return t


def test_parse_tool_call_forms():
  assert parse_tool_call('x <tool_call>{"name": "calculator", "arguments": '
                         '{"expression": "1/3"}}</tool_call>') == ("calculator", "1/3")
  assert parse_tool_call('<tool_call>{"name": "python", "arguments": "print(1)"}'
                         '</tool_call>') == ("python", "print(1)")
  assert parse_tool_call("so:\n```python\nprint(2 + 2)\n```") == ("python", "print(2 + 2)\n")
  for bad in ("no call here", "<tool_call>{not json}</tool_call>",
              '<tool_call>{"arguments": {}}</tool_call>'):
    with pytest.raises(ValueError):
      parse_tool_call(bad)


def _request(tok, episode, text, turn=0):
  ids = np.asarray(tok.encode(text), np.int32)
  return ToolRequest(episode=episode, turn=turn, tokens=ids, turn_start=0)


def test_observation_is_the_templates_text_after_the_call(tok):
  convs = [[{"role": "user", "content": "What is 1/3 + 1/6?"}]]
  env = ToolEnvironment(tok, convs, {"calculator": Calculator()}, group=2)
  call = '<tool_call>{"name": "calculator", "arguments": {"expression": "1/3 + 1/6"}}' \
         '</tool_call>'
  turn = tok.decode(tok.encode(call))
  obs = env([_request(tok, 1, call)])
  want = "<|im_end|>\n<|im_start|>tool\n1/2<|im_end|>\n<|im_start|>assistant\n"
  assert obs[0].tokens == tok.encode(want)
  assert obs[0].reward == 0.0 and not obs[0].done
  # A second turn of the same episode renders after the whole history so far.
  second = env.observation_text(1, "again", "3")
  assert second == "<|im_end|>\n<|im_start|>tool\n3<|im_end|>\n<|im_start|>assistant\n"
  assert env._history[1][0] == {"role": "assistant", "content": turn}
  assert env.counts.metrics()["tools/calculator/ok"] == 1.0


def test_failed_calls_are_counted_with_reasons(tok):
  env = ToolEnvironment(tok, [[{"role": "user", "content": "q"}]],
                        {"python": PythonSandbox(timeout_s=1.0)}, error_reward=-0.5)
  reqs = [_request(tok, 0, "no call"),
          _request(tok, 0, '<tool_call>{"name": "search", "arguments": "x"}</tool_call>'),
          _request(tok, 0, "```python\nwhile True:\n    pass\n```")]
  obs = env(reqs)
  assert [o.reward for o in obs] == [-0.5, -0.5, -0.5]
  m = env.counts.metrics()
  assert m["tools/unparsed/unparsable_call"] == 1.0
  assert m["tools/search/unknown_tool"] == 1.0
  assert m["tools/python/timeout"] == 1.0
  assert m["tools/failed"] == 3.0


def test_template_that_rewrites_assistant_text_is_refused(tok):
  tok.chat_template = CHATML.replace("{{ m.content }}", "{{ m.content | trim }}")
  env = ToolEnvironment(tok, [[{"role": "user", "content": "q"}]],
                        {"calculator": Calculator()})
  with pytest.raises(ChatTemplateError, match="verbatim"):
    env.observation_text(0, "call ", "1")
