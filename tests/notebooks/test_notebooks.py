"""Both notebooks execute headless (nbclient) in smoke mode without a cell error."""
import importlib.util
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "notebooks"))

@pytest.mark.slow
@pytest.mark.parametrize("name", ["quickstart.ipynb", "tsallis_continuum.ipynb"])
def test_notebook_runs_in_smoke_mode(name, tmp_path):
  if importlib.util.find_spec("nbclient") is None or importlib.util.find_spec(
      "ipykernel") is None:
    pytest.skip("nbclient/ipykernel not installed (pip install -e '.[test]')")
  import run_notebooks
  nb = run_notebooks.execute(os.path.join(ROOT, "notebooks", name), smoke=True,
                             workdir=str(tmp_path), timeout=600)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code and all(c.get("execution_count") for c in code), "a cell did not run"
  errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
  assert not errors, errors
  # The smoke flag reached the kernel (the install cell prints it).
  text = "".join(o.get("text", "") for o in code[0].get("outputs", []))
  assert "smoke mode: True" in text, text
  if name == "quickstart.ipynb":  # a notebook's stderr is no terminal: progress lines
    shown = "".join(o.get("text", "") for c in code for o in c.get("outputs", []))
    assert re.search(r"step \d+/\d+ \(\d+%\)", shown), shown[-2000:]


def test_kernel_env_drops_forced_device_count(monkeypatch):
  """The kernel must see one host device even under the suite's 8-device XLA_FLAGS."""
  import run_notebooks
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --foo=1")
  env = run_notebooks.kernel_env(smoke=True)
  assert env["XLA_FLAGS"] == "--foo=1"
  assert env["REASONING_JAX_NOTEBOOK_SMOKE"] == "1"
  assert "REASONING_JAX_NOTEBOOK_SMOKE" not in run_notebooks.kernel_env(smoke=False)
