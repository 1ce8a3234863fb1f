"""RunConfig.compile_mode: which XLA options each mode gives, and that the train steps
compile with them."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from reasoning_jax import model as rjm
from reasoning_jax.training import compile_mode as cm
from reasoning_jax.training.steps import jit_steps


def test_auto_is_fast_for_small_cpu_models_only():
  small, large = cm.AUTO_FAST_MAX_PARAMS, cm.AUTO_FAST_MAX_PARAMS + 1
  fast = cm.compiler_options("fast", large, "cpu")
  # Every XLA so far (jax 0.10 and 0.12) knows the LLVM level; 0.12 dropped the other.
  assert fast["xla_backend_optimization_level"] == 1
  assert set(fast) <= set(cm.FAST_CPU_OPTIONS)
  assert cm.compiler_options("auto", small, "cpu") == fast
  assert cm.compiler_options("auto", large, "cpu") is None
  assert cm.compiler_options("optimized", small, "cpu") is None
  # CPU backend flags: accelerators always get XLA's defaults.
  for mode in cm.COMPILE_MODES:
    assert cm.compiler_options(mode, small, "tpu") is None
    assert cm.compiler_options(mode, small, "gpu") is None
  # A fresh dict each time: a caller's edit cannot leak into the next run.
  cm.compiler_options("fast", 1, "cpu")["xla_backend_optimization_level"] = 3
  assert cm.FAST_CPU_OPTIONS["xla_backend_optimization_level"] == 1


def test_options_this_xla_does_not_know_are_dropped(monkeypatch):
  assert not cm.accepted("xla_no_such_option", 1)
  assert cm.accepted("xla_backend_optimization_level", 1)
  monkeypatch.setitem(cm.FAST_CPU_OPTIONS, "xla_no_such_option", 1)
  opts = cm.compiler_options("fast", 1, "cpu")
  assert "xla_no_such_option" not in opts and opts["xla_backend_optimization_level"] == 1


def test_unknown_mode_names_the_choices():
  with pytest.raises(ValueError, match=r"unknown compile_mode 'quick'.*'auto', 'fast', "
                                       r"'optimized'"):
    cm.compiler_options("quick", 1, "cpu")


def test_sft_step_compiles_with_the_options_and_matches_the_default():
  """The options reach the jitted steps (a bogus option fails to compile), and one SFT
  step compiled fast equals the default compile's to float32 rounding. Plain SGD with
  learning rate 1, so the step is exactly minus the gradient (Adam's first step
  divides each gradient by its own magnitude, which magnifies rounding near zero)."""
  cfg = rjm.preset("tiny", dtype="float32")
  tx = optax.sgd(1.0)
  tokens = jnp.asarray(np.arange(16, dtype=np.int32).reshape(2, 8) % cfg.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(8, dtype=jnp.int32), (2, 8))
  mask = jnp.ones((2, 8), jnp.float32)
  out = {}
  for name, opts in (("default", None), ("fast", cm.compiler_options("fast", 1, "cpu"))):
    params = rjm.init_params(cfg, jax.random.key(0))
    sft, _, _ = jit_steps(cfg, tx, compiler_options=opts)
    new, _, m = sft(params, tx.init(params), tokens, positions, mask)
    out[name] = (jax.tree.map(np.asarray, new), float(m["sft/loss"]))
  np.testing.assert_allclose(out["fast"][1], out["default"][1], rtol=1e-6)
  p0 = jax.tree.leaves(jax.tree.map(np.asarray, rjm.init_params(cfg, jax.random.key(0))))
  for a, b, p in zip(jax.tree.leaves(out["fast"][0]), jax.tree.leaves(out["default"][0]), p0):
    g_fast, g_ref = p - a, p - b  # the gradients
    assert np.abs(g_ref).max() > 0
    # atol: the rounding of the updated params themselves (p - g stored in float32).
    np.testing.assert_allclose(g_fast, g_ref, rtol=1e-5,
                               atol=2 * np.finfo(np.float32).eps * np.abs(p).max())
  sft, _, _ = jit_steps(cfg, tx, compiler_options={"xla_no_such_option": 1})
  params = rjm.init_params(cfg, jax.random.key(0))
  with pytest.raises(Exception, match="xla_no_such_option"):
    sft(params, tx.init(params), tokens, positions, mask)
