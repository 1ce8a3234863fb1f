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
    assert "jax[tpu]" in remote
    assert "~/reasoning_jax_venv/bin/python -m pip install -e ~/reasoning_jax" in remote
    # The environment is made (and its version checked) before anything is installed.
    venv = remote.index("uv venv")
    assert venv < remote.index("sys.version_info", venv) < remote.index("pip install")
  elif sub == "launch":
    # The compile check runs here first, on the same experiment and topology.
    check = cmds[0]
    assert check[1:5] == ["-m", "reasoning_jax.cli", "compile",
                          "--gin_file=experiments/quickstart.gin"]
    assert f"--topology={argv[argv.index('--topology') + 1]}" in check
    (ssh,) = gcloud
    assert ssh[4] == "ssh" and "--worker=all" in ssh
    remote = [x for x in ssh if x.startswith("--command=")][0][len("--command="):]
    # The interpreter `install` made, unquoted so the remote shell expands `~`.
    assert "nohup ~/reasoning_jax_venv/bin/python -m reasoning_jax.cli train" in remote
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
  assert any("~/reasoning_jax_venv/bin/python -m pip install "
             "'reasoning_jax[gcs] @ git+https://example.com/r.git@v1'" in x for x in ssh)


def test_unknown_accelerator_is_a_clear_error():
  out = subprocess.run([sys.executable, SCRIPT, "create", "--name", "a", "--zone", "z",
                        "--accelerator", "v9x-8", "--dry-run"], capture_output=True,
                       text=True, cwd=ROOT)
  assert out.returncode != 0
  assert "unknown accelerator 'v9x-8'" in out.stderr and "v5p-64" in out.stderr


def _tpu_module():
  import importlib.util
  spec = importlib.util.spec_from_file_location("tpu_script", SCRIPT)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_min_python_is_pyprojects_requires_python():
  import tomllib
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    want = tomllib.load(f)["project"]["requires-python"]
  major, minor = _tpu_module().min_python()
  assert want == f">={major}.{minor}"


def _stub(path, body):
  path.write_text("#!/bin/bash\n" + body)
  path.chmod(0o755)


def _run_venv_script(tmp_path, image_python, venv_python):
  """Run install's environment step in bash on this machine, `python3` and `uv` replaced
  by stubs: `image_python` is the image's python3 version, `venv_python` the executable
  `uv venv` puts in the environment. Returns (exit code, stderr, uv's calls, HOME)."""
  bin_dir, home = tmp_path / "bin", tmp_path / "home"
  bin_dir.mkdir()
  home.mkdir()
  log = tmp_path / "uv.log"
  major, minor = image_python
  # `python3 -V` prints the version; `python3 -c CODE` runs CODE with that version_info.
  fake = f"import sys; sys.version_info = ({major}, {minor}, 12); exec(sys.argv[1])"
  _stub(bin_dir / "python3",
        f'if [ "$1" = "-V" ]; then echo "Python {major}.{minor}.12"; exit 0; fi\n'
        f'exec {sys.executable} -c "{fake}" "$2"\n')
  _stub(bin_dir / "uv", f"""
echo "$@" >> {log}
if [ "$1" = "venv" ]; then
  dest="${{@: -1}}"; mkdir -p "$dest/bin"; ln -sf {venv_python} "$dest/bin/python"
fi
""")
  _stub(bin_dir / "curl", "echo curl must not run >&2; exit 9\n")
  env = {"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin"}
  out = subprocess.run(["bash", "-c", _tpu_module().venv_script()], env=env,
                       capture_output=True, text=True)
  calls = log.read_text().splitlines() if log.exists() else []
  return out.returncode, out.stderr, calls, home


def test_old_image_python_gets_a_uv_python(tmp_path):
  rc, err, calls, home = _run_venv_script(tmp_path, (3, 10), sys.executable)
  assert rc == 0, err
  assert "python3 here is Python 3.10.12; reasoning_jax needs Python >= 3.11" in err
  assert calls == ["python install 3.12",
                   f"venv --clear --seed --python 3.12 {home}/reasoning_jax_venv"]


def test_new_enough_image_python_is_used(tmp_path):
  rc, err, calls, home = _run_venv_script(tmp_path, (3, 12), sys.executable)
  assert rc == 0, err
  assert calls == [f"venv --clear --seed --python python3 {home}/reasoning_jax_venv"]


def test_environment_with_an_old_python_stops_the_install(tmp_path):
  old = tmp_path / "old_python"
  _stub(old, 'if [ "$1" = "-V" ]; then echo "Python 3.9.2"; exit 0; fi\nexit 1\n')
  rc, err, _, home = _run_venv_script(tmp_path, (3, 12), old)
  assert rc == 1
  assert ("error: ~/reasoning_jax_venv has Python 3.9.2; reasoning_jax needs "
          "Python >= 3.11") in err
