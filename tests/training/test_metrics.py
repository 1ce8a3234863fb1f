"""MetricsWriter (JSONL, TensorBoard, progress, resume truncation), plots, HealthMonitor."""
import glob
import json
import logging
import math
import struct
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from reasoning_jax.training.health import HealthConfig, HealthMonitor
from reasoning_jax.training.metrics import MetricsWriter, to_jsonable
from reasoning_jax.training.plots import group_metrics, plot_from_jsonl, read_jsonl


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _events(workdir):
  """All events of all TensorBoard files, in file order (TFRecord: len, crc, data, crc)."""
  out = []
  for path in sorted(glob.glob(str(workdir / "tensorboard" / "events.*"))):
    data = open(path, "rb").read()
    pos, file_events = 0, []
    while pos < len(data):
      (n,) = struct.unpack("<Q", data[pos:pos + 8])
      ev = event_pb2.Event()
      ev.ParseFromString(data[pos + 12:pos + 12 + n])
      file_events.append(ev)
      pos += 12 + n + 4
    out.append(file_events)
  return out


def test_to_jsonable_converts_scalars_and_rejects_arrays():
  assert to_jsonable("a", jnp.float32(1.5)) == 1.5
  assert to_jsonable("a", np.int64(3)) == 3 and type(to_jsonable("a", np.int64(3))) is int
  assert to_jsonable("a", jnp.array([2.25])) == 2.25
  assert to_jsonable("a", np.bool_(True)) is True
  assert to_jsonable("a", float("nan")) is None
  assert to_jsonable("a", jnp.float32(jnp.inf)) == "inf"
  assert to_jsonable("a", -math.inf) == "-inf"
  assert to_jsonable("a", "text") == "text"
  with pytest.raises(TypeError, match=r"metric 'loss/vec' is an array of shape \(3,\)"):
    to_jsonable("loss/vec", np.zeros(3))
  with pytest.raises(TypeError, match="metric 'x' has unsupported type dict"):
    to_jsonable("x", {})


def test_jsonl_rows_and_nonfinite_round_trip(tmp_path):
  with MetricsWriter(tmp_path, is_primary=True, tensorboard=False) as w:
    w.write(1, {"reward/mean": jnp.float32(0.25), "loss": np.float64(1.5)})
    w.write(2, {"reward/mean": 0.5, "loss": float("nan"), "grad_norm": math.inf})
    with pytest.raises(ValueError, match="reserved"):
      w.write(3, {"step": 1})
  rows = _lines(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in rows] == [1, 2]
  assert rows[0]["reward/mean"] == 0.25 and rows[0]["loss"] == 1.5
  assert rows[1]["loss"] is None and rows[1]["grad_norm"] == "inf"
  back = read_jsonl(tmp_path / "metrics.jsonl")
  assert math.isnan(back[1]["loss"]) and back[1]["grad_norm"] == math.inf


def test_non_primary_process_writes_nothing(tmp_path):
  with MetricsWriter(tmp_path / "w", is_primary=False, progress=True) as w:
    w.write(1, {"loss": 1.0})
    assert w.truncate_after(0) == 0 and w.plot() == []
  assert not (tmp_path / "w").exists()


def test_truncate_after_resume_has_no_duplicate_steps(tmp_path):
  with MetricsWriter(tmp_path, is_primary=True) as w:
    for s in range(1, 6):
      w.write(s, {"loss": float(s)})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 6, "lo')  # a line cut short by the crash
  # Resume from checkpoint 3: steps 4, 5 and the broken line are dropped.
  with MetricsWriter(tmp_path, is_primary=True) as w:
    assert w.truncate_after(3) == 3
    w.write(4, {"loss": 40.0})
  rows = _lines(tmp_path / "metrics.jsonl")
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
  files = _events(tmp_path)
  assert len(files) == 2
  first = [(e.step, e.summary.value[0].simple_value) for e in files[0] if e.summary.value]
  assert first == [(s, float(s)) for s in range(1, 6)]
  # The resumed writer starts with a purge marker at step 4, which makes TensorBoard
  # hide the old file's steps >= 4; then the new step 4.
  purge = [e.step for e in files[1] if e.HasField("session_log")]
  assert purge == [4]
  second = [(e.step, e.summary.value[0].simple_value) for e in files[1] if e.summary.value]
  assert second == [(4, 40.0)]


def test_tensorboard_scalars_skip_text_and_keep_nan(tmp_path):
  with MetricsWriter(tmp_path, is_primary=True) as w:
    w.write(7, {"reward/mean": 0.5, "note": "hello", "loss": float("nan")})
  (events,) = _events(tmp_path)
  vals = {e.summary.value[0].tag: e.summary.value[0].simple_value
          for e in events if e.summary.value}
  assert set(vals) == {"reward/mean", "loss"} and vals["reward/mean"] == 0.5
  assert math.isnan(vals["loss"])


def test_progress_bar_shows_step_total_and_reward(tmp_path, capsys):
  with MetricsWriter(tmp_path, is_primary=True, tensorboard=False, total_steps=10,
                     progress=True) as w:
    w.write(3, {"reward/mean": 0.125})
    w.write(4, {"reward/mean": 0.625})
  err = capsys.readouterr().err
  assert "4/10" in err and "mean=0.625" in err
  with MetricsWriter(tmp_path, is_primary=True, tensorboard=False, progress=False) as w:
    w.write(5, {"reward/mean": 1.0})
  assert capsys.readouterr().err == ""


def test_plots_one_png_per_group(tmp_path):
  with MetricsWriter(tmp_path, is_primary=True, tensorboard=False) as w:
    for s in range(1, 5):
      w.write(s, {"reward/mean": s / 4, "reward/accuracy": s / 8, "loss": 1.0 / s,
                  "eval/pass@1": float("nan") if s < 4 else 0.5, "time/step_s": 0.1})
    paths = w.plot()
  names = sorted(p.rsplit("/", 1)[1] for p in paths)
  assert names == ["eval.png", "loss.png", "reward.png", "time.png"]
  for p in paths:
    assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  assert all(p.startswith(str(tmp_path / "plots")) for p in paths)
  # From the JSONL alone, with a group filter and a split of big groups.
  out = plot_from_jsonl(tmp_path / "metrics.jsonl", tmp_path / "p2", groups=["reward"],
                        max_panels=1)
  assert sorted(p.rsplit("/", 1)[1] for p in out) == ["reward.png", "reward_2.png"]
  assert group_metrics(["step", "time", "loss", "eval/a", "eval/b"]) == {
      "eval": ["eval/a", "eval/b"], "loss": ["loss"]}
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    plot_from_jsonl(tmp_path / "nope.jsonl", tmp_path)


def test_health_zero_reward_streak(caplog):
  mon = HealthMonitor(zero_reward_patience=3)
  with caplog.at_level(logging.WARNING, logger="reasoning_jax.health"):
    reports = [mon.check(s, rewards=np.zeros(4)) for s in range(1, 7)]
  warned = [s for s, r in zip(range(1, 7), reports) if r.warnings]
  assert warned == [3, 6]
  assert "all rewards have been 0 for 3 consecutive steps" in reports[2].warnings[0]
  assert len(caplog.records) == 2 and caplog.records[0].levelno == logging.WARNING
  assert all(r.apply_update for r in reports)
  # A single nonzero reward resets the streak.
  assert not mon.check(7, rewards=[0.0, 1.0]).warnings
  assert mon.zero_reward_streak == 0
  assert not mon.check(8, rewards=np.zeros(2)).warnings
  assert not mon.check(9, rewards=np.zeros(2)).warnings
  assert mon.check(10, rewards=np.zeros(2)).warnings


def test_health_truncation_is_thresholded_and_rate_limited():
  mon = HealthMonitor(HealthConfig(truncation_threshold=0.5, repeat_every=3))
  assert not mon.check(1, truncated=[True, False]).warnings  # 50% is not above 50%
  r = mon.check(2, truncated=np.array([True, True, False]))
  assert len(r.warnings) == 1 and "67% of completions were truncated" in r.warnings[0]
  assert not mon.check(3, truncated=0.9).warnings  # within repeat_every of step 2
  assert not mon.check(4, truncated=0.9).warnings
  assert mon.check(5, truncated=0.9).warnings


def test_health_nonfinite_loss_or_grads_refuses_the_step():
  mon = HealthMonitor()
  assert mon.check(1, loss=jnp.float32(0.3), grad_norm=2.0).apply_update
  r = mon.check(2, loss=float("nan"), grad_norm=1.0)
  assert not r.apply_update and "loss contain NaN/Inf" in r.warnings[0]
  r = mon.check(3, loss=0.1, grad_norm=np.array([1.0, np.inf]))
  assert not r.apply_update and "gradients" in r.warnings[0]
  # Never rate-limited: every refused step says so.
  assert mon.check(4, loss=math.inf).warnings
  assert mon.refused_steps == 3


def test_health_reward_failures():
  mon = HealthMonitor(HealthConfig(reward_failure_threshold=0.1))
  assert not mon.check(1, reward_failures=1, reward_total=10).warnings
  r = mon.check(2, rewards=np.ones(8), reward_failures=2)
  assert "2/8 reward computations failed (25%" in r.warnings[0]
  with pytest.raises(ValueError, match="needs reward_total"):
    mon.check(3, reward_failures=1)
  with pytest.raises(ValueError, match="truncation_threshold is a fraction"):
    HealthConfig(truncation_threshold=1.5)
  with pytest.raises(ValueError, match="truncation_threshold is a fraction"):
    HealthMonitor(truncation_threshold=-0.1)
  with pytest.raises(TypeError, match="zero_reward_streak"):
    HealthMonitor(zero_reward_streak=3)
  assert HealthMonitor(HealthConfig(repeat_every=4), truncation_threshold=0.2).config == (
      HealthConfig(truncation_threshold=0.2, repeat_every=4))


def test_health_report_has_no_truth_value():
  report = HealthMonitor().check(1, loss=1.0)
  assert report.apply_update and report.warnings == ()
  with pytest.raises(TypeError, match="test report.apply_update"):
    bool(report)


def test_tensorboard_writer_does_not_import_torch(tmp_path):
  """A fresh process writing TensorBoard scalars never loads torch (installed here for
  the reference tests), and the file it writes holds the scalar."""
  code = ("import sys; from reasoning_jax.training.metrics import MetricsWriter\n"
          f"w = MetricsWriter({str(tmp_path)!r}, is_primary=True, progress=False)\n"
          "w.write(3, {'loss': 0.25}); w.close()\n"
          "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.strip().splitlines()[-1] == "[]"
  (events,) = _events(tmp_path)
  assert [(e.step, e.summary.value[0].simple_value) for e in events
          if e.summary.value] == [(3, 0.25)]
