"""The notebooks' install cell picks an install source that exists: the checkout it sits
in (editable), else the REPO_URL the user sets; with neither it stops with a message
naming REPO_URL. Run with pip recorded, not executed (no network in tests)."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = ("quickstart.ipynb", "tsallis_continuum.ipynb")


def _install_part(name: str) -> str:
  """The install cell's code up to the smoke flag (what runs before jax is imported)."""
  with open(os.path.join(ROOT, "notebooks", name), encoding="utf-8") as f:
    cells = [c for c in json.load(f)["cells"] if c["cell_type"] == "code"]
  src = "".join(cells[0]["source"])
  assert src.startswith("# Install reasoning_jax")
  return src.split("# Reduced mode for CI")[0]


def _run(name, cwd, monkeypatch, env_repo=None):
  calls = []
  monkeypatch.chdir(cwd)
  monkeypatch.setattr(subprocess, "run",
                      lambda cmd, **kw: calls.append(cmd) or SimpleNamespace(returncode=0))
  import importlib.util
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda *a: None)  # the cell asks only for reasoning_jax
  if env_repo is None:
    monkeypatch.delenv("REASONING_JAX_REPO", raising=False)
  else:
    monkeypatch.setenv("REASONING_JAX_REPO", env_repo)
  monkeypatch.setattr(sys, "path", list(sys.path))
  exec(compile(_install_part(name), name, "exec"), {})
  return calls


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_inside_the_checkout_installs_it_editable(name, monkeypatch):
  calls = _run(name, os.path.join(ROOT, "notebooks"), monkeypatch)
  assert calls == [[sys.executable, "-m", "pip", "install", "-q", "-e", ROOT]]
  assert sys.path[0] == ROOT


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_repo_url_is_installed_from_git(name, tmp_path, monkeypatch):
  calls = _run(name, tmp_path, monkeypatch, env_repo="https://example.com/me/reasoning_jax")
  assert calls == [[sys.executable, "-m", "pip", "install", "-q",
                    "git+https://example.com/me/reasoning_jax"]]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_outside_a_checkout_without_a_url_names_repo_url(name, tmp_path, monkeypatch):
  with pytest.raises(RuntimeError, match="set REPO_URL above"):
    _run(name, tmp_path, monkeypatch)
