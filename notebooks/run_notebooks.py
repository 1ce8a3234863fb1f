"""Execute notebooks headless with nbclient (what CI runs), optionally in smoke mode.

    python notebooks/run_notebooks.py                     # both notebooks, smoke mode
    python notebooks/run_notebooks.py --full notebooks/quickstart.ipynb

Smoke mode sets REASONING_JAX_NOTEBOOK_SMOKE=1 for the kernel: the notebooks run the
same cells with tiny budgets (a few minutes in all on 2 CPU cores). Each notebook runs
in a fresh temporary directory (its runs land there), with the kernel "python3": the
kernelspec that ipykernel installs into the environment's prefix, whose `python` argv
jupyter_client replaces by the current interpreter, so the kernel uses this venv.
A cell that raises makes `execute` raise `nbclient.exceptions.CellExecutionError`
(naming the cell and the traceback) and the script exit non-zero.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOKS = ("quickstart.ipynb", "tsallis_continuum.ipynb")


def kernel_env(smoke: bool) -> dict[str, str]:
  """The kernel's environment: ours, plus the smoke flag, on ONE host device.

  The test suite forces 8 fake CPU devices through XLA_FLAGS; a notebook kernel
  inheriting that would shard tiny batches 8 ways on 2 cores, so the flag is dropped.
  """
  env = dict(os.environ)
  env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                            env.get("XLA_FLAGS", "")).strip()
  if smoke:
    env["REASONING_JAX_NOTEBOOK_SMOKE"] = "1"
  else:
    env.pop("REASONING_JAX_NOTEBOOK_SMOKE", None)
  return env


def execute(path: str, *, smoke: bool = True, timeout: int = 900,
            workdir: str | None = None, save_to: str | None = None) -> nbformat.NotebookNode:
  """Run every cell of the notebook at `path`; returns the executed notebook.

  Raises nbclient.exceptions.CellExecutionError when a cell errors. `timeout` is per
  cell in seconds. `save_to` writes the executed notebook (with outputs) there.
  """
  nb = nbformat.read(path, as_version=4)
  cwd = workdir or tempfile.mkdtemp(prefix="rj_nb_")
  client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                          resources={"metadata": {"path": cwd}})
  client.execute(env=kernel_env(smoke))
  if save_to:
    nbformat.write(nb, save_to)
  return nb


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("notebooks", nargs="*",
                  default=[os.path.join(HERE, n) for n in NOTEBOOKS])
  ap.add_argument("--full", action="store_true", help="full budgets, not smoke mode")
  ap.add_argument("--save_dir", default="", help="write executed copies here")
  a = ap.parse_args()
  for path in a.notebooks:
    t = time.time()
    save = (os.path.join(a.save_dir, os.path.basename(path)) if a.save_dir else None)
    execute(path, smoke=not a.full, save_to=save)
    print(f"ok {path} ({time.time() - t:.0f} s)", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
