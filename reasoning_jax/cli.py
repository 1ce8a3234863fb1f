"""The `reasoning-jax` command: train | eval | sample | convert | plot | compile.

    reasoning-jax train                                  # the quickstart, embedded defaults
    reasoning-jax train --gin_file experiments/x.gin --gin_param 'RLConfig.steps=10' \
        --workdir runs/x                                 # running it again resumes
    reasoning-jax eval --workdir runs/x                  # latest checkpoint, held-out split
    reasoning-jax sample --workdir runs/x --prompt '123+456='
    reasoning-jax convert --gguf smollm2 --out /tmp/smollm2_hf
    reasoning-jax convert --workdir runs/x --out /tmp/x_hf  # a run's latest checkpoint
    reasoning-jax plot --workdir runs/x                  # refresh W/plots/*.png
    reasoning-jax compile --gin_file experiments/tpu/x.gin [--topology v5e:2x4]
                                                         # does it fit? (no TPU needed)
    reasoning-jax launch --processes 2 -- train ...      # 2 local jax processes
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import gin

log = logging.getLogger("reasoning_jax")


def _run_file(workdir: str, *names: str):
  """`workdir/names...` as an `epath.Path`: a run directory may be local or a URL
  (`gs://`; `training.paths`). A bad URL exits 2 with the message."""
  from reasoning_jax.training.paths import run_path
  try:
    return run_path(workdir).joinpath(*names)
  except ValueError as e:
    sys.exit(f"error: {e}")


def _open_url(path: str):
  """A gin file at a URL, opened for reading (gin's file-reader hook)."""
  from etils import epath
  return epath.Path(path).open("r")


def _is_url_file(path: str) -> bool:
  """Whether gin should read `path` with `_open_url`."""
  return "://" in path and _run_file(path).exists()


def _parse_gin(files: list[str], params: list[str]):
  """Parse gin files/bindings and build the Experiment; exits 2 with a clear message."""
  from reasoning_jax.training.config import Experiment
  for f in files:
    if not (_run_file(f).exists() if "://" in os.fspath(f) else os.path.exists(f)):
      sys.exit(f"error: gin file {f!r} does not exist")
  # gin opens files with `open`; a run's config.gin may be at a `gs://` URL.
  gin.config.register_file_reader(_open_url, _is_url_file)  # once: same functions
  try:
    gin.parse_config_files_and_bindings(files, params)
    exp = Experiment()
  except Exception as e:  # gin raises ValueError/SyntaxError/etc. with the binding named
    raise ValueError(f"bad experiment configuration: {e}") from e
  # The operative config lists every field the run used, defaults included, so the
  # run directory's config.gin reproduces the run even if code defaults change.
  return exp, gin.operative_config_str()


def _common(p: argparse.ArgumentParser) -> None:
  p.add_argument("--gin_file", action="append", default=[], help="experiment file(s)")
  p.add_argument("--gin_param", action="append", default=[], help="a binding override")


def _build(trainer_cls, exp, workdir: str, text: str, **kw):
  """Construct the trainer (its errors reach `main`'s boundary: one line, or the
  traceback with --debug)."""
  return trainer_cls(exp, workdir, text, **kw)


def _open_run(trainer_cls, exp, workdir: str, text: str):
  """A trainer over an existing run, read-only (nothing in the run directory is
  written: `eval`, `sample` and `convert` work on a read-only copy and leave the
  record as it was); exits naming the directory when it has no committed checkpoint
  (random weights must never be evaluated, sampled or exported by mistake)."""
  t = _build(trainer_cls, exp, workdir, text, read_only=True)
  if not t.ckpt.all_steps():
    t.close()
    sys.exit(f"error: {workdir!r} has no committed checkpoint (checkpoints/ is empty or "
             "holds only unfinished saves); train until one is saved first")
  return t


def cmd_train(a) -> int:
  """Train (or resume) an experiment in --workdir."""
  from reasoning_jax.training.indices import index_log
  from reasoning_jax.training.loop import Trainer
  exp, text = _parse_gin(a.gin_file, a.gin_param)
  trainer = _build(Trainer, exp, a.workdir, text,
                   on_batch=index_log(a.index_log) if a.index_log else None)
  final = trainer.run()
  import jax
  if jax.process_index() == 0:  # one report per run, not one per process
    keys = [k for k in sorted(final) if k.startswith("eval/")]
    print("final: " + ", ".join(f"{k}={final[k]:.4f}" for k in keys))
    print(f"run directory: {_run_file(a.workdir)}")
  return 0


def cmd_eval(a) -> int:
  """Evaluate a run's latest (or given) checkpoint on its held-out prompts."""
  from reasoning_jax.training.loop import Trainer
  if not _run_file(a.workdir, "checkpoints").is_dir():
    sys.exit(f"error: {a.workdir!r} has no checkpoints/ directory; train first")
  files = a.gin_file or [os.fspath(_run_file(a.workdir, "config.gin"))]
  exp, text = _parse_gin(files, a.gin_param)
  t = _open_run(Trainer, exp, a.workdir, text)
  try:
    t.resume()
    for k, v in sorted(t.evaluate().items()):
      print(f"{k}: {v:.4f}")
  finally:
    t.close()
  return 0


def cmd_sample(a) -> int:
  """Print completions of --prompt from a run's latest checkpoint."""
  import jax
  from reasoning_jax import sampling
  from reasoning_jax.training.loop import Trainer
  exp, text = _parse_gin(a.gin_file or [os.fspath(_run_file(a.workdir, "config.gin"))],
                         a.gin_param)
  if not _run_file(a.workdir, "checkpoints").is_dir():
    sys.exit(f"error: {a.workdir!r} has no checkpoints/ directory; train first")
  t = _open_run(Trainer, exp, a.workdir, text)
  try:
    t.resume()
    out = sampling.generate(t.policy_params(), t.cfg, [t.codec.prompt_ids(a.prompt)],
                            key=jax.random.key(a.seed), max_new_tokens=a.max_new_tokens,
                            num_samples=a.num_samples, temperature=a.temperature,
                            compiler_options=t.compiler_options,
                            stop_tokens=(t.codec.eos_id,), pad_id=t.codec.pad_id)
    for row, n in zip(out.tokens.tolist(), out.lengths.tolist()):
      print(a.prompt + t.codec.decode(row[:n]))
  finally:
    t.close()
  return 0


def cmd_convert(a) -> int:
  """Convert a run's latest checkpoint, a GGUF file (or 'smollm2') or a HF directory to
  a Hugging Face directory, with the tokenizer files transformers reads."""
  from reasoning_jax import model as rjm
  from reasoning_jax.data import tokenizer as rjt
  src = a.workdir or a.gguf or a.hf
  if not src:
    sys.exit("error: give --workdir RUN, --gguf FILE (or 'smollm2') or --hf DIR")
  if a.workdir:
    from reasoning_jax.training.loop import Trainer
    if not _run_file(a.workdir, "checkpoints").is_dir():
      sys.exit(f"error: {a.workdir!r} has no checkpoints/ directory; train first")
    exp, text = _parse_gin([os.fspath(_run_file(a.workdir, "config.gin"))], [])
    t = _open_run(Trainer, exp, a.workdir, text)
    try:
      step = t.resume()
      cfg, params, tok = t.cfg, t.params, t.codec.inner
      if t.base is not None:  # LoRA: merged into the base, or the base + a PEFT adapter
        from reasoning_jax.training import lora as TL
        lcfg = t.parts.lora.lcfg
        params = TL.export_params(t.base, t.params, lcfg, merged=not a.peft)
        if a.peft:
          TL.save_peft_adapter(t.params, cfg, lcfg, a.peft, os.path.abspath(a.out))
          print(f"wrote the PEFT adapter to {a.peft} (base model: {a.out})")
    finally:
      t.close()
    print(f"exporting step {step} of {a.workdir}")
  elif a.gguf:
    from reasoning_jax.model.gguf_checkpoint import smollm2_gguf_path
    path = smollm2_gguf_path() if a.gguf == "smollm2" else a.gguf
    cfg, params = rjm.load_gguf_checkpoint(path, dtype=a.dtype)
    tok = rjt.load_gguf_tokenizer(path)
  else:
    cfg, params = rjm.load_hf_checkpoint(a.hf, dtype=a.dtype)
    tok = None
  rjm.save_hf_checkpoint(params, cfg, a.out)
  try:  # the weights are written either way; a tokenizer that cannot be is said aloud
    files = (rjt.copy_tokenizer_files(a.hf, a.out) if tok is None
             else rjt.export_tokenizer(tok, a.out))
    print(f"tokenizer: {', '.join(files)}")
  except (ValueError, FileNotFoundError) as e:
    print(f"warning: no tokenizer written to {a.out}: {e}", file=sys.stderr)
  print(f"wrote {a.out} ({cfg.family}, {cfg.num_params() / 1e6:.1f}M params)")
  return 0


def cmd_plot(a) -> int:
  """Write (or refresh) a run's PNG plots from its metrics.jsonl."""
  from reasoning_jax.training.metrics import plot_from_jsonl
  path = _run_file(a.workdir, "metrics.jsonl")
  if not path.exists():
    sys.exit(f"error: {path} does not exist; train first")
  for f in plot_from_jsonl(path, _run_file(a.workdir, "plots")):
    print(f)
  return 0


def cmd_compile(a) -> int:
  """Compile every program of the experiment for a TPU topology, deviceless; print
  per-device memory, FLOPs and roofline; exit 1 when a program does not fit."""
  from reasoning_jax.training import aot
  exp, _ = _parse_gin(a.gin_file, a.gin_param)
  topology = a.topology or exp.compile.topology
  if not topology:
    sys.exit("error: no target: pass --topology (e.g. v5e:2x4) or set "
             "CompileSpec.topology in the experiment")
  try:
    chip, reports = aot.compile_experiment(exp, topology)
    print(aot.format_reports(chip, topology, reports))
    aot.check_fits(chip, topology, reports, exp.compile.usable_hbm)
  except (ValueError, RuntimeError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"fits: every program is within {exp.compile.usable_hbm:.0%} of the HBM")
  return 0


def main(argv: list[str] | None = None) -> int:
  """Entry point of the `reasoning-jax` console script: the one error boundary.

  Every failure prints one `error: ...` line to stderr and exits 1 (argparse's usage
  errors exit 2); `--debug` (anywhere on the command line) shows the traceback
  instead. Errors of this package and of bad input (ValueError, OSError, ...) carry
  messages that name the field or file; anything else is printed with its type so a
  bug report has it, and `--debug` gives the rest.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = "--debug" in argv
  argv = [x for x in argv if x != "--debug"]
  try:
    return _main(argv)
  except KeyboardInterrupt:
    print("error: interrupted", file=sys.stderr)
    return 130
  except SystemExit:
    raise
  except Exception as e:  # the boundary: one line, unless --debug
    if debug:
      raise
    known = isinstance(e, (ValueError, OSError, RuntimeError))
    what = str(e) if known else f"{type(e).__name__}: {e}"
    print(f"error: {what}" + ("" if known else " (rerun with --debug for the "
                                                  "traceback)"), file=sys.stderr)
    return 1


def _main(argv: list[str]) -> int:
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  # Our own progress at INFO; libraries (orbax/absl, jax) only when they warn.
  logging.getLogger("reasoning_jax").setLevel(logging.INFO)
  logging.getLogger("absl").setLevel(logging.WARNING)
  p = argparse.ArgumentParser(prog="reasoning-jax", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="cmd")
  t = sub.add_parser("train", help="train or resume an experiment")
  _common(t)
  t.add_argument("--workdir", default="runs/quickstart")
  t.add_argument("--index_log", metavar="DIR", default="",
                 help="append the example indices each process draws to "
                      "DIR/indices.p<process>.jsonl (to check the data order)")
  e = sub.add_parser("eval", help="evaluate a run's checkpoint")
  _common(e)
  e.add_argument("--workdir", required=True)
  s = sub.add_parser("sample", help="sample from a run's checkpoint")
  _common(s)
  s.add_argument("--workdir", required=True)
  s.add_argument("--prompt", required=True)
  s.add_argument("--max_new_tokens", type=int, default=48)
  s.add_argument("--num_samples", type=int, default=1)
  s.add_argument("--temperature", type=float, default=0.0)
  s.add_argument("--seed", type=int, default=0)
  c = sub.add_parser("convert", help="convert checkpoints to a Hugging Face directory")
  c.add_argument("--workdir", help="a run directory: export its latest checkpoint")
  c.add_argument("--gguf")
  c.add_argument("--hf")
  c.add_argument("--out", required=True)
  c.add_argument("--dtype", default="float32")
  c.add_argument("--peft", help="a LoRA run: write the base to --out and the adapters "
                 "as a PEFT adapter directory here (default: merge them into --out)")
  pl = sub.add_parser("plot", help="write a run's PNG plots from its metrics.jsonl")
  pl.add_argument("--workdir", required=True)
  co = sub.add_parser("compile", help="compile an experiment's programs for a TPU "
                      "topology without one and check that they fit")
  _common(co)
  co.add_argument("--topology", default="",
                  help="e.g. v5e:2x4 (default: the experiment's CompileSpec.topology)")
  from reasoning_jax import launch  # local multi-process runs (docs/training_infra.md)
  launch.add_arguments(sub.add_parser("launch", help="run a command as N local jax "
                                      "processes, e.g. launch --processes 2 -- train"))
  a = p.parse_args(argv)
  if a.cmd == "launch":
    return launch.run_args(a)
  if a.cmd is None:
    a = p.parse_args(["train"] + (argv or []))
  return {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample,
          "convert": cmd_convert, "plot": cmd_plot, "compile": cmd_compile}[a.cmd](a)


if __name__ == "__main__":
  sys.exit(main())
