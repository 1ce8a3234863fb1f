"""Run-directory paths: local directories and cloud URLs (`gs://`, `s3://`, ...) alike.

Every file of a run (checkpoints, config.gin, metrics.jsonl, TensorBoard events, plots)
is reached through `etils.epath`, the path library orbax itself uses: a local path is
made absolute (orbax refuses relative ones), a URL is kept as written (`os.path.abspath`
would turn `gs://b/x` into `<cwd>/gs:/b/x`). URLs go through fsspec: `gs://` needs
`gcsfs` (`pip install 'reasoning_jax[gcs]'`), `s3://` needs `s3fs`.
"""
from __future__ import annotations

import importlib.util
import os

from etils import epath

#: URL schemes epath serves through fsspec, with the package each needs and how to get
#: it; anything else with `://` is refused.
SCHEMES = {"gs": ("gcsfs", "pip install 'reasoning_jax[gcs]'"),
           "s3": ("s3fs", "pip install s3fs"), "az": ("adlfs", "pip install adlfs"),
           "hf": ("huggingface_hub", "pip install huggingface_hub")}


def scheme(path: str | os.PathLike) -> str | None:
  """The URL scheme of `path` (`"gs"` for `gs://b/x`), or None for a local path."""
  text = os.fspath(path)
  return text.split("://", 1)[0] if "://" in text else None


def run_path(path: str | os.PathLike, *, what: str = "workdir") -> epath.Path:
  """`path` as an `epath.Path`: absolute when local, unchanged when a URL.

  Raises:
    ValueError: for a URL scheme epath cannot serve (the message names `what`).
    ImportError: when the scheme's fsspec package is not installed (with the fix).
  """
  s = scheme(path)
  if s is None:
    return epath.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
  if s not in SCHEMES:
    known = ", ".join(x + "://" for x in SCHEMES)
    raise ValueError(f"{what} {os.fspath(path)!r}: unsupported URL scheme '{s}://'; "
                     f"use a local directory or one of {known}")
  package, fix = SCHEMES[s]
  if importlib.util.find_spec(package) is None:
    raise ImportError(f"{what} {os.fspath(path)!r}: {s}:// paths need the {package} "
                      f"package; {fix}")
  return epath.Path(os.fspath(path))
