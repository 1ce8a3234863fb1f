"""Chat template rendering: variables, raise_exception and clear errors."""
import pytest

from reasoning_jax.data.chat_template import (ChatTemplateError, apply_chat_template,
                                              render_chat_template)
from reasoning_jax.data.tokenizer import synthetic_tokenizer

SIMPLE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'tool' %}"
          "{{ raise_exception('tools are not supported') }}{% endif %}"
          "{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
          "{% if add_generation_prompt %}assistant:{% endif %}{{ extra | default('') }}")


def test_render_with_special_tokens_and_generation_prompt():
  msgs = [{"role": "user", "content": "1+1?"}]
  out = render_chat_template(SIMPLE, msgs, special_tokens={"bos_token": "<bos>"})
  assert out == "<bos>user: 1+1?\nassistant:"
  out = render_chat_template(SIMPLE, msgs, add_generation_prompt=False,
                             special_tokens={"bos_token": "<s>"}, extra="!")
  assert out == "<s>user: 1+1?\n!"


def test_trim_and_lstrip_blocks_like_transformers():
  template = "{% for m in messages %}\n  {% if true %}\n{{ m.content }}\n  {% endif %}\n{% endfor %}"
  assert render_chat_template(template, [{"role": "user", "content": "x"}]) == "x\n"


def test_raise_exception_becomes_clear_error():
  with pytest.raises(ChatTemplateError, match="tools are not supported"):
    render_chat_template(SIMPLE, [{"role": "tool", "content": "x"}])


def test_bad_messages_and_syntax_errors():
  with pytest.raises(ChatTemplateError, match=r"messages\[1\] must be a dict"):
    render_chat_template(SIMPLE, [{"role": "user", "content": "a"}, "b"])
  with pytest.raises(ChatTemplateError, match="syntax error"):
    render_chat_template("{% for %}", [])


def test_apply_uses_tokenizer_template_and_tokens():
  tok = synthetic_tokenizer()
  with pytest.raises(ChatTemplateError, match="no chat_template"):
    apply_chat_template(tok, [{"role": "user", "content": "hi"}])
  tok.chat_template = SIMPLE
  text = apply_chat_template(tok, [{"role": "user", "content": "What is 2+3?"}])
  assert text == "<bos>user: What is 2+3?\nassistant:"
  assert tok.encode(text)[0] == tok.bos_id
