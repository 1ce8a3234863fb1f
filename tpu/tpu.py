#!/usr/bin/env python3
"""Cloud TPU helper: create a TPU VM, install reasoning_jax on every worker, launch the
same training command on all of them, stream logs, tear down.

Every subcommand builds `gcloud` commands and runs them; `--dry-run` prints them
instead (one per line, shell-quoted), so the exact commands can be read, copied, or
tested. Only the standard library is used: this runs on a laptop with `gcloud`.

  python tpu/tpu.py create  --name rj --zone us-west4-a --accelerator v5e-8
  python tpu/tpu.py install --name rj --zone us-west4-a
  python tpu/tpu.py launch  --name rj --zone us-west4-a --gin_file experiments/x.gin
  python tpu/tpu.py logs    --name rj --zone us-west4-a
  python tpu/tpu.py delete  --name rj --zone us-west4-a

See tpu/README.md for a v5e-8 and a v5p-64 example.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys

# Short names -> (gcloud accelerator type, default TPU VM runtime version).
# v5e is sold as "v5litepod-N" (N chips); v5p-N counts TensorCores (N/2 chips).
ACCELERATORS = {
    "v5e": ("v5litepod", "v2-alpha-tpuv5-lite"),
    "v5litepod": ("v5litepod", "v2-alpha-tpuv5-lite"),
    "v5p": ("v5p", "v2-alpha-tpuv5"),
    "v4": ("v4", "tpu-ubuntu2204-base"),
    "v6e": ("v6e", "v2-alpha-tpuv6e"),
}
REMOTE_DIR = "reasoning_jax"          # ~/reasoning_jax on every worker
LOG = "~/reasoning_jax_train.log"     # each worker's training log
VENV = "~/reasoning_jax_venv"         # the workers' Python environment (install makes it)
PYTHON = f"{VENV}/bin/python"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def min_python() -> tuple[int, int]:
  """The package's `requires-python` lower bound, read from pyproject.toml."""
  with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
    m = re.search(r'^requires-python\s*=\s*">=\s*(\d+)\.(\d+)', f.read(), re.M)
  if m is None:
    raise SystemExit("pyproject.toml has no requires-python = \">=X.Y\" line")
  return int(m.group(1)), int(m.group(2))


def accelerator(name: str) -> tuple[str, str]:
  """`v5e-8` -> ("v5litepod-8", runtime version); gcloud's own names pass through."""
  gen, _, size = name.rpartition("-")
  if gen not in ACCELERATORS or not size.isdigit():
    raise SystemExit(f"unknown accelerator {name!r}; use e.g. v5e-8, v5litepod-16, "
                     f"v5p-64, v4-32, v6e-8 (generations: {sorted(ACCELERATORS)})")
  kind, version = ACCELERATORS[gen]
  return f"{kind}-{size}", version


def _common(a) -> list[str]:
  out = [f"--zone={a.zone}"]
  if a.project:
    out.append(f"--project={a.project}")
  return out


def _ssh(a, command: str, worker: str = "all") -> list[str]:
  return (["gcloud", "compute", "tpus", "tpu-vm", "ssh", a.name] + _common(a) +
          [f"--worker={worker}", f"--command={command}"])


def create_cmds(a) -> list[list[str]]:
  """A TPU VM now (`tpu-vm create`), or a queued resource that waits for capacity."""
  kind, version = accelerator(a.accelerator)
  version = a.version or version
  extra = ["--spot"] if a.spot else []
  if a.queued:
    return [["gcloud", "compute", "tpus", "queued-resources", "create", a.name,
             f"--node-id={a.name}"] + _common(a) +
            [f"--accelerator-type={kind}", f"--runtime-version={version}"] + extra,
            ["gcloud", "compute", "tpus", "queued-resources", "describe", a.name] +
            _common(a)]
  return [["gcloud", "compute", "tpus", "tpu-vm", "create", a.name] + _common(a) +
          [f"--accelerator-type={kind}", f"--version={version}"] + extra]


def venv_script() -> str:
  """Shell run on every worker: make VENV a Python environment the package accepts.

  TPU VM images are Ubuntu 22.04 based and their python3 can be older than the
  package's `requires-python` (tpu-ubuntu2204-base ships Ubuntu 22.04's Python 3.10).
  uv (its standalone installer, no root and no pip needed) then installs a newer
  CPython; otherwise the image's python3 is used. The environment's version is checked
  before anything is installed into it.
  """
  major, minor = min_python()
  need = f"{major}.{minor}"
  too_old = f"import sys; sys.exit(sys.version_info[:2] < ({major}, {minor}))"
  return " && ".join([
      'export PATH="$HOME/.local/bin:$PATH"',
      "{ command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh; }",
      f"if python3 -c '{too_old}' 2>/dev/null; then PY=python3; else "
      f"echo \"python3 here is $(python3 -V 2>&1); reasoning_jax needs Python >= {need}: "
      f"installing Python 3.12 with uv\" >&2 && uv python install 3.12 && PY=3.12; fi",
      f'uv venv --clear --seed --python "$PY" {VENV}',
      f"{{ {PYTHON} -c '{too_old}' || {{ echo \"error: {VENV} has $({PYTHON} -V 2>&1); "
      f"reasoning_jax needs Python >= {need}\" >&2; exit 1; }}; }}",
  ])


def install_cmds(a) -> list[list[str]]:
  """Copy the package to every worker (from git or this checkout) and pip-install it
  with jax's TPU wheels and the `gcs` extra (a `gs://` --workdir) into a Python >=
  requires-python environment (VENV)."""
  pip = (f"{venv_script()} && {PYTHON} -m pip install -U pip && "
         f"{PYTHON} -m pip install -U 'jax[tpu]'")
  if a.git:
    src = f"git+{a.git}@{a.ref}" if a.ref else f"git+{a.git}"
    return [_ssh(a, f"{pip} && {PYTHON} -m pip install 'reasoning_jax[gcs] @ {src}'")]
  tarball = "/tmp/reasoning_jax_src.tar.gz"
  return [["git", "-C", ROOT, "archive", "--format=tar.gz", f"--output={tarball}", "HEAD"],
          ["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball,
           f"{a.name}:~/reasoning_jax_src.tar.gz"] + _common(a) + ["--worker=all"],
          _ssh(a, f"rm -rf ~/{REMOTE_DIR} && mkdir -p ~/{REMOTE_DIR} && "
                  f"tar -xzf ~/reasoning_jax_src.tar.gz -C ~/{REMOTE_DIR} && {pip} && "
                  f"{PYTHON} -m pip install -e ~/{REMOTE_DIR}'[gcs]'")]


def compile_check_cmd(a) -> list[str]:
  """`reasoning-jax compile` of the same experiment, run here before anything starts
  on the slice: it compiles every program for the TPU topology without a TPU and
  fails when one does not fit (needs this checkout installed with libtpu:
  `pip install -e . "jax[tpu]==<its jax>"`)."""
  args = [sys.executable, "-m", "reasoning_jax.cli", "compile"]
  args += [f"--gin_file={f}" for f in a.gin_file]
  args += [f"--gin_param={p}" for p in a.gin_param]
  if a.topology:
    args.append(f"--topology={a.topology}")
  return args


def launch_cmds(a) -> list[list[str]]:
  """The compile check here, then the same `reasoning-jax train` (as `VENV/bin/python -m
  reasoning_jax.cli train`, the environment `install` made) on every worker, detached,
  logging to a file.

  A job that does not fit is refused before it starts (the check's exit code stops
  the commands after it); `--skip_compile_check` starts it anyway. All workers must
  start: on a multi-host slice each one is a jax process and
  `jax.distributed.initialize()` (RunConfig.distributed="auto") waits for all of them.
  """
  # The environment's python by path: a non-interactive ssh shell has no venv activated,
  # and the image's own python3 may be too old for the package.
  args = ["-m", "reasoning_jax.cli", "train", f"--workdir={a.workdir}"]
  args += [f"--gin_file={f}" for f in a.gin_file]
  args += [f"--gin_param={p}" for p in a.gin_param]
  # PYTHON unquoted, so that the remote shell expands its `~`.
  train = " ".join([PYTHON] + [shlex.quote(x) for x in args])
  check = [] if a.skip_compile_check else [compile_check_cmd(a)]
  return check + [_ssh(a, f"cd ~/{REMOTE_DIR} && nohup {train} > {LOG} 2>&1 &")]


def logs_cmds(a) -> list[list[str]]:
  """Follow one worker's log (worker 0 by default; `--worker=all` interleaves)."""
  return [_ssh(a, f"tail -n 200 -F {LOG}", worker=a.worker)]


def delete_cmds(a) -> list[list[str]]:
  """Tear the TPU VM (or the queued resource and its VM) down."""
  if a.queued:
    return [["gcloud", "compute", "tpus", "queued-resources", "delete", a.name] +
            _common(a) + ["--force", "--quiet"]]
  return [["gcloud", "compute", "tpus", "tpu-vm", "delete", a.name] + _common(a) +
          ["--quiet"]]


COMMANDS = {"create": create_cmds, "install": install_cmds, "launch": launch_cmds,
            "logs": logs_cmds, "delete": delete_cmds}


def parser() -> argparse.ArgumentParser:
  """The command-line interface (one subcommand per step)."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  for name, fn in COMMANDS.items():
    s = sub.add_parser(name, help=fn.__doc__.splitlines()[0])
    s.add_argument("--name", required=True, help="TPU VM (and queued resource) name")
    s.add_argument("--zone", required=True, help="e.g. us-west4-a (v5e), us-east5-a (v5p)")
    s.add_argument("--project", default="", help="GCP project (default: gcloud's)")
    s.add_argument("--dry-run", action="store_true", help="print the commands only")
    if name in ("create", "delete"):
      s.add_argument("--queued", action="store_true",
                     help="use a queued resource (waits for capacity)")
    if name == "create":
      s.add_argument("--accelerator", required=True, help="v5e-8, v5p-64, ...")
      s.add_argument("--version", default="", help="TPU VM runtime (default per kind)")
      s.add_argument("--spot", action="store_true", help="preemptible capacity")
    if name == "install":
      s.add_argument("--git", default="", help="install from this git URL instead of "
                     "copying this checkout")
      s.add_argument("--ref", default="", help="branch, tag or commit of --git")
    if name == "launch":
      s.add_argument("--gin_file", action="append", required=True,
                     help="experiment file, relative to the package checkout")
      s.add_argument("--gin_param", action="append", default=[])
      s.add_argument("--topology", default="",
                     help="the slice for the compile check, e.g. v5e:2x4 for a v5e-8 or "
                          "v5p:2x4x4 for a v5p-64 (default: CompileSpec.topology)")
      s.add_argument("--skip_compile_check", action="store_true",
                     help="start without compiling for the topology first")
      s.add_argument("--workdir", default="runs/tpu",
                     help="run directory on each worker (a gs:// path for checkpoints "
                          "shared by a multi-host slice)")
    if name == "logs":
      s.add_argument("--worker", default="0", help="worker index, or 'all'")
  return p


def main(argv: list[str] | None = None) -> int:
  """Build the subcommand's gcloud commands; print them (--dry-run) or run them."""
  a = parser().parse_args(argv)
  for cmd in COMMANDS[a.cmd](a):
    if a.dry_run:
      print(shlex.join(cmd))
      continue
    print("+", shlex.join(cmd), file=sys.stderr)
    rc = subprocess.call(cmd)
    if rc:
      return rc
  return 0


if __name__ == "__main__":
  sys.exit(main())
