"""The trainer's text codec: padded model rows decode visibly, EOS ends the text."""
from reasoning_jax.data.tasks import get_task
from reasoning_jax.training.codec import Codec


def test_ids_outside_the_tokenizer_decode_as_replacement_chars():
  """A model with more vocabulary rows than its tokenizer (ref-tiny: 512 over an
  18-symbol char vocabulary) can sample an unused row; decoding must neither crash
  the step nor drop it (which could turn "12?3" into a correct "123")."""
  codec = Codec(get_task("arithmetic").vocab())
  ids = codec.encode("12") + [codec.vocab_size + 5] + codec.encode("3")
  assert codec.decode(ids) == "12\ufffd3"
  assert codec.decode([codec.vocab_size]) == "\ufffd"
  assert codec.decode(codec.encode("45") + [codec.eos_id, codec.vocab_size + 1]) == "45"
