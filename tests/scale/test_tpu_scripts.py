"""tpu/tpu.py --dry-run prints the right gcloud commands for every README example."""
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tpu", "tpu.py")


def _readme_examples() -> list[str]:
  with open(os.path.join(ROOT, "tpu", "README.md")) as f:
    text = f.read()
  blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
  return [line.strip() for b in blocks for line in b.splitlines()
          if line.strip().startswith("python tpu/tpu.py")]


def _dry(argv: list[str]) -> list[list[str]]:
  out = subprocess.run([sys.executable, SCRIPT, *argv, "--dry-run"], capture_output=True,
                       text=True, check=True, cwd=ROOT)
  return [shlex.split(line) for line in out.stdout.splitlines()]


EXAMPLES = _readme_examples()


def test_readme_has_both_worked_examples():
  assert len(EXAMPLES) == 10
  assert sum("--accelerator v5e-8" in e for e in EXAMPLES) == 1
  assert sum("--accelerator v5p-64" in e for e in EXAMPLES) == 1


@pytest.mark.parametrize("line", EXAMPLES)
def test_readme_example(line):
  argv = shlex.split(line)[2:]
  cmds = _dry(argv)
  sub = argv[0]
  zone = argv[argv.index("--zone") + 1]
  name = argv[argv.index("--name") + 1]
  gcloud = [c for c in cmds if c[0] == "gcloud"]
  assert gcloud, cmds
  for c in gcloud:
    assert f"--zone={zone}" in c and name in " ".join(c)
  if sub == "create":
    c = gcloud[0]
    if "--queued" in argv:
      assert c[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
      assert "--accelerator-type=v5p-64" in c and "--runtime-version=v2-alpha-tpuv5" in c
      assert f"--node-id={name}" in c
      assert gcloud[1][4] == "describe"
    else:
      assert c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]
      assert "--accelerator-type=v5litepod-8" in c
      assert "--version=v2-alpha-tpuv5-lite" in c
  elif sub == "install":
    assert cmds[0][:2] == ["git", "-C"] and "archive" in cmds[0]
    assert gcloud[0][4] == "scp" and "--worker=all" in gcloud[0]
    ssh = gcloud[1]
    assert ssh[4] == "ssh" and "--worker=all" in ssh
    remote = [x for x in ssh if x.startswith("--command=")][0]
    assert "jax[tpu]" in remote and "pip install -e ~/reasoning_jax" in remote
  elif sub == "launch":
    # The compile check runs here first, on the same experiment and topology.
    check = cmds[0]
    assert check[1:5] == ["-m", "reasoning_jax.cli", "compile",
                          "--gin_file=experiments/quickstart.gin"]
    assert f"--topology={argv[argv.index('--topology') + 1]}" in check
    (ssh,) = gcloud
    assert ssh[4] == "ssh" and "--worker=all" in ssh
    remote = [x for x in ssh if x.startswith("--command=")][0][len("--command="):]
    assert "nohup python3 -m reasoning_jax.cli train" in remote
    train = shlex.split(remote.split("nohup ", 1)[1].split(" > ")[0])
    assert "--gin_file=experiments/quickstart.gin" in train
    mesh = [x for x in train if x.startswith("--gin_param=")]
    assert mesh and "RunConfig.mesh = (" in mesh[0]
    if "--workdir" in argv:
      assert f"--workdir={argv[argv.index('--workdir') + 1]}" in train
  elif sub == "logs":
    (ssh,) = gcloud
    assert "--worker=0" in ssh and any("tail -n 200 -F" in x for x in ssh)
  elif sub == "delete":
    c = gcloud[0]
    if "--queued" in argv:
      assert c[3:5] == ["queued-resources", "delete"] and "--force" in c
    else:
      assert c[3:5] == ["tpu-vm", "delete"]
    assert "--quiet" in c


def test_install_from_git_and_project_flag():
  (ssh,) = _dry(["install", "--name", "a", "--zone", "z", "--project", "p",
                 "--git", "https://example.com/r.git", "--ref", "v1"])
  assert "--project=p" in ssh and "--worker=all" in ssh
  assert any("pip install 'git+https://example.com/r.git@v1'" in x for x in ssh)


def test_unknown_accelerator_is_a_clear_error():
  out = subprocess.run([sys.executable, SCRIPT, "create", "--name", "a", "--zone", "z",
                        "--accelerator", "v9x-8", "--dry-run"], capture_output=True,
                       text=True, cwd=ROOT)
  assert out.returncode != 0
  assert "unknown accelerator 'v9x-8'" in out.stderr and "v5p-64" in out.stderr
