"""experiments/tsallis_cold_start/report.py end to end on a crafted runs directory.

Budget: 2 SFT steps, 4 RL steps (global steps 3..6), eval at RL steps 0, 2, 4, M = 4.
Every expected cell below is computed by hand in the comment beside it.
"""
import json
import math
import os
import sys

import pytest

STUDY = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "tsallis_cold_start")


@pytest.fixture(scope="module")
def report():
  sys.path.insert(0, STUDY)   # report.py imports its sibling report_plots.py
  try:
    import report as module
    yield module
  finally:
    sys.path.remove(STUDY)


def write_run(root, method, seed, *, acc, greedy, grad1, log_wbar=None, reward=None,
              last_step=6, setting="cold1", optimizer="adam"):
  """metrics.jsonl of one seed: SFT steps 1-2 (warm-up eval at 2), RL steps 3-6."""
  rows = [{"step": 1, "sft/loss": 1.0},
          {"step": 2, "sft/loss": 0.5, "eval/accuracy": acc[0],
           "eval/greedy_accuracy": 0.0, "eval/pass@4": acc[0]}]
  for k in range(1, 5):
    r = {"step": 2 + k, "loss/grad_norm": grad1 if k == 1 else 1.0,
         "reward/mean": reward[k - 1] if reward else 0.0,
         "rollout/rationale_correct": 0.5, "rollout/consistent": 0.2 * k}
    if log_wbar:
      r["loss/log_wbar"] = log_wbar[k - 1]
    if k in (2, 4):
      r.update({"eval/accuracy": acc[k // 2], "eval/pass@4": min(1.0, 2 * acc[k // 2]),
                "eval/greedy_accuracy": greedy if k == 4 else 0.0})
    rows.append(r)
  d = root / setting / optimizer / method / f"seed{seed}"
  d.mkdir(parents=True)
  (d / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= last_step))


@pytest.fixture(scope="module")
def generated(report, tmp_path_factory):
  runs = tmp_path_factory.mktemp("runs")
  (runs / "study.json").write_text(json.dumps(dict(
      steps=4, sft_steps=2, group_size=4, prompts_per_step=2, eval_every=2, seeds=[0, 1],
      sgd_lr=None, lr={"adam": 1e-3, "sgd": None},
      wall_s={"total": 1500.0, "runs_trained": 9, "per_job": {"sft/seed0": 20.0},
              "previous_invocations": {"total": 90.0, "runs_trained": 1,
                                       "previous_invocations": None}},
      command="python experiments/tsallis_cold_start/run_study.py --out X")))
  # q=0: seed 0 reaches log w̄ -2.0 >= log 0.1 = -2.303 at RL step 4; seed 1 never.
  write_run(runs, "garl_q0", 0, acc=[0, 0, 0.25], greedy=0.5, grad1=1.0,
            log_wbar=[-5, -4, -3, -2.0])
  write_run(runs, "garl_q0", 1, acc=[0, 0, 0], greedy=0.0, grad1=2.0,
            log_wbar=[-5, -5, -5, -5])
  # q=0.75: escapes at RL steps 2 and 3; step-1 ratios 10/1 and 40/2 = 20.
  write_run(runs, "garl_q0.75", 0, acc=[0, 0.125, 0.5], greedy=1.0, grad1=10.0,
            log_wbar=[-5, -2.0, -1, -1])
  write_run(runs, "garl_q0.75", 1, acc=[0, 0, 0.375], greedy=0.75, grad1=40.0,
            log_wbar=[-5, -3, -2.2, -1])
  # GRPO: reward mean 0.125 >= 0.1 first at RL step 3 on seed 0; seed 1 never.
  write_run(runs, "grpo", 0, acc=[0, 0, 0], greedy=0.0, grad1=1.0, reward=[0, 0.05, 0.125, .2])
  write_run(runs, "grpo", 1, acc=[0, 0, 0], greedy=0.0, grad1=1.0, reward=[0, 0, 0, 0])
  write_run(runs, "garl_q0_lr1e2", 0, acc=[0, 0, 0], greedy=0.0, grad1=1.0,
            log_wbar=[-5, -1, -1, -1])
  write_run(runs, "garl_q0_lr1e2", 1, acc=[0, 0, 0], greedy=0.0, grad1=1.0,
            log_wbar=[-5, -5, -1, -1])
  write_run(runs, "garl_q0", 2, acc=[0, 0, 0], greedy=0.0, grad1=1.0,   # stopped early
            log_wbar=[-5, -5, -5, -5], last_step=5)
  out = tmp_path_factory.mktemp("docs") / "results" / "study_v2.md"
  report.main(["--runs", str(runs), "--out", str(out), "--n_boot", "4000"])
  return out.read_text(), out.parent


def row(md, first_cells):
  """The table row starting with these cells."""
  start = "| " + " | ".join(first_cells) + " |"
  hits = [l for l in md.splitlines() if l.startswith(start)]
  assert len(hits) == 1, (start, hits)
  return [c.strip() for c in hits[0].strip("|").split("|")]


def test_header_and_incomplete(generated):
  md, _ = generated
  # 1500 s now, 90 s in the resumed-from invocation
  assert ("run_study.py --out X` (wall time 25.0 min (9 runs trained), after earlier "
          "invocations of 1.5 min (1 runs trained))") in md
  assert "rollouts; lr adam 0.001; eval every 2 RL steps" in md   # no SGD lr picked
  assert "- `cold1/adam/garl_q0/seed2`" in md                           # stopped at step 5


def test_main_table(generated):
  md, _ = generated
  q0 = row(md, ["garl_q0", "2"])
  assert q0[2] == "1/2, median >4 (4, >4)"       # censored median of (4, never)
  assert q0[3] == "1/2, median >4 (4, >4)"       # acc 0.25 first at RL step 4
  # final sampled [0.25, 0]: mean .125, std ddof=1 .25/sqrt(2) = .1768; t_{.975,1} =
  # 12.7062 x se .125 = 1.5883 -> [-1.463, 1.713]
  assert q0[4] == "0.125 ± 0.177 [-1.463, 1.713]"
  assert q0[5].startswith("0.250 ± 0.354")       # greedy [0.5, 0]
  assert q0[7] == "0.50 ± 0.00"                  # consistent: mean of .2, .4, .6, .8
  q75 = row(md, ["garl_q0.75", "2"])
  assert q75[2] == "2/2, median 2.5 (2, 3)"
  assert q75[3] == "2/2, median 3 (2, 4)"         # acc > 0 first at RL 2 and 4
  assert q75[4].startswith("0.438 ± 0.088")       # [0.5, 0.375]: std .125/sqrt(2)
  grpo = row(md, ["grpo", "2"])
  assert grpo[2] == "1/2, median >4 (3, >4)"     # reward/mean criterion
  assert grpo[3] == "0/2, median >4 (>4, >4)"


def test_paired_differences(generated):
  md, _ = generated
  # d = [0.5-0.25, 0.375-0] = [.25, .375]: the 4 equally likely resample means are
  # .25, .3125, .3125, .375; each extreme has mass 1/4 > 2.5%, so the bootstrap 95% CI
  # is [.25, .375]; t: .3125 ± 12.7062 x .0625 = [-.482, 1.107].
  r = row(md, ["garl_q0.75 − garl_q0", "final sampled acc"])
  assert r[2:] == ["2", "+0.312", "[+0.250, +0.375]", "yes", "[-0.482, +1.107]"]
  # greedy d = [1-.5, .75-0] = [.5, .75]
  r = row(md, ["garl_q0.75 − garl_q0", "final greedy acc"])
  assert r[2:5] == ["2", "+0.625", "[+0.500, +0.750]"]
  # mean log w̄: q0.75 seeds -2.25, -2.8; q0 seeds -3.5, -5 -> d = [1.25, 2.2]
  r = row(md, ["garl_q0.75 − garl_q0", "mean log w̄ over RL steps"])
  assert r[2:5] == ["2", "+1.725", "[+1.250, +2.200]"]
  # GRPO against q=0: d = [0 - 0.25, 0 - 0]: CI [-.25, 0] touches 0 -> not excluded.
  r = row(md, ["grpo − garl_q0", "final sampled acc"])
  assert r[2:6] == ["2", "-0.125", "[-0.250, +0.000]", "no"]
  # Against GRPO: the methods at the study's lr other than q=0 (paired above already).
  r = row(md, ["garl_q0.75 − grpo", "final sampled acc"])
  assert r[2:6] == ["2", "+0.438", "[+0.375, +0.500]", "yes"]   # d = [.5, .375]
  assert "| garl_q0 − grpo |" not in md and "| garl_q0_lr1e2 − grpo |" not in md


def test_grad_ratio_and_escape_law(generated):
  md, _ = generated
  # predicted 4^-0.75 e^(0.75*5) = 0.353553 x 42.5211 = 15.0336; measured 10 and 20,
  # geo-mean sqrt(200) = 14.142; ratios 0.6652 and 1.3304, geo-mean 0.9407.
  r = row(md, ["cold1", "adam", "0.75"])
  assert r[3:] == ["2", "14.14", "15.03", "0.941 [0.665, 1.33]", "0"]
  # law(0.75) = (e^1.25 - 0.1^-0.25)/0.25 = (3.490343 - 1.778279)/0.25 = 6.848254;
  # C = 2.5/6.848254 = 0.365055; law(0) = e^5 - 10 = 138.41316 -> 50.53.
  assert "p0 = exp(mean step-1 log w̄) = 0.00674 (log p0 = -5.00); C fitted at q=0.75." in md
  assert row(md, ["0", "1/2, median >4 (4, >4)"])[2] == "50.5"
  assert row(md, ["0.75", "2/2, median 2.5 (2, 3)"])[2] == "2.5"


def test_lr_control(generated):
  md, _ = generated
  r = row(md, ["garl_q0_lr1e2", "0.1"])             # 1e-3 x 1e2
  assert r[2:4] == ["2", "2/2, median 2.5 (2, 3)"]
  assert row(md, ["garl_q0", "0.001"])[6] == "-3.50 ± 2.12"   # final log w̄ [-2, -5]


def test_plots_written(generated):
  md, out_dir = generated
  for name in ("study_v2_log_wbar.png", "study_v2_accuracy.png", "study_v2_escape_vs_q.png",
               "study_v2_grad_ratio.png", "study_v2_lr_control.png"):
    assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"![{name}]({name})" in md


def test_escape_law_at_q1_is_the_limit(report):
  # q=1: log(p1/p0) = log 0.1 + 5 = 2.697415; q -> 1 of (p0^-(1-q) - p1^-(1-q))/(1-q)
  # tends to it; the next term is (1-q)(log²(1/p0) - log²(1/p1))/2 = 1e-6 x (25 - 5.30)/2
  # = 9.8e-6 at 1-q = 1e-6, inside the 2e-5 tolerance.
  assert report.escape_law(1.0, -5.0) == pytest.approx(math.log(0.1) + 5, rel=1e-15)
  assert report.escape_law(1 - 1e-6, -5.0) == pytest.approx(2.697415, abs=2e-5)


def test_missing_study_json_names_the_fix(report, tmp_path):
  with pytest.raises(FileNotFoundError, match="run_study.py --out"):
    report.main(["--runs", str(tmp_path), "--out", str(tmp_path / "x.md")])
