"""Compiling for TPU topologies on this CPU host (deviceless; needs libtpu, the `tpu`
extra: `pip install "jax[tpu]==<the installed jax>"`).

The forward and the RL update compile for a v5e topology on a 2-axis mesh; "auto"
and "pallas" put the Mosaic splash kernel (`tpu_custom_call`) in the TPU program,
"xla" does not; `reasoning-jax compile` reports an experiment that fits and refuses
one that does not with a one-line message naming the program.
"""
import importlib.util
import os

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from reasoning_jax import model as rjm
from reasoning_jax import sharding as rjs

if importlib.util.find_spec("libtpu") is None:  # pragma: no cover - the `tpu` extra
  pytest.skip("libtpu missing (the `tpu` extra: pip install \"jax[tpu]==<the installed "
              "jax>\")", allow_module_level=True)

from reasoning_jax.training.chips import topology_devices  # noqa: E402

_, DEVICES = topology_devices("v5e:2x2")  # libtpu describes it without a TPU

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = rjm.preset("tiny").replace(dtype="bfloat16", param_dtype="float32",
                                 vocab_size=128, max_seq_len=256)


def _mesh():
  return rjs.make_mesh(data=2, tensor=2, devices=DEVICES)


def _train_step_text(backend: str) -> str:
  """The compiled TPU program of a forward + backward pass, as text."""
  mesh = _mesh()
  cfg = CFG.replace(attention_backend=backend)
  sh = rjm.param_shardings(cfg, mesh, rjs.TRAIN_RULES)
  params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        rjm.abstract_params(cfg), sh)
  rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
  tokens = jax.ShapeDtypeStruct((4, 128), jnp.int32, sharding=rows)

  def loss(p, t):
    logp, _ = rjm.token_logprobs(p, cfg, t, t, chunk=64)
    return jnp.sum(logp)

  with jax.set_mesh(mesh):
    return jax.jit(jax.grad(loss)).lower(params, tokens).compile().as_text()


@pytest.mark.parametrize("backend,kernel", [("auto", True), ("pallas", True),
                                            ("xla", False)])
def test_train_step_compiles_for_v5e_with_the_kernel_where_chosen(backend, kernel):
  assert ("tpu_custom_call" in _train_step_text(backend)) == kernel


def _compile(gin_params, capsys):
  """`reasoning-jax compile` in this process on the quickstart, bf16 (float32 models
  keep XLA attention under "auto"), for v5e:2x2; gin is cleared before and after, as
  the command parses it once per process and other tests build their own."""
  import gin

  from reasoning_jax import cli
  params = ["RunConfig.mesh = (2, 1, 2)", "CompileSpec.topology = 'v5e:2x2'",
            "SFTConfig.steps = 0", "RLConfig.max_new_tokens = 112",
            "CompileSpec.prompt_tokens = 16", "ModelSpec.dtype = 'bfloat16'"] + gin_params
  argv = ["compile", "--gin_file", os.path.join(ROOT, "experiments", "quickstart.gin")]
  for p in params:
    argv += ["--gin_param", p]
  gin.clear_config()
  try:
    rc = cli.main(argv)
  finally:
    gin.clear_config()
  return rc, capsys.readouterr()


def test_compile_command_reports_an_rl_experiment_that_fits(capsys):
  rc, out = _compile([], capsys)
  assert rc == 0, out.err
  rows = {line.split()[0]: line.split() for line in out.out.splitlines()
          if line.split() and line.split()[0] in ("rollout", "score", "update")}
  assert set(rows) == {"rollout", "score", "update"}
  assert rows["update"][-1] == "pallas"  # 16 + 112 tokens: splash in the update
  assert "fits: every program" in out.out


def test_compile_command_refuses_a_run_that_does_not_fit(capsys):
  # 64 x 8 rollouts of 4k tokens through a 2k-wide model: the update cannot fit.
  rc, out = _compile(["RLConfig.max_new_tokens = 4080", "RLConfig.prompts_per_step = 64",
                      "ModelSpec.overrides = (('d_model', 2048), ('ffw_dim', 8192), "
                      "('max_seq_len', 8192))"], capsys)
  assert rc == 1
  err = [line for line in out.err.splitlines() if line.startswith("error:")]
  assert len(err) == 1, out.err
  assert "program" in err[0] and "v5e:2x2" in err[0], err[0]
