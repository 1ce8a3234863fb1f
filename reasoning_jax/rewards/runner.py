"""Score a batch of completions in a pool of worker processes with a per-item timeout.

Why processes: sympy can hang on adversarial input and a Python thread cannot be
killed; a process can. Why not `multiprocessing.Pool`/`ProcessPoolExecutor`: neither can
kill one stuck worker and keep the rest, and a lost item there becomes a hang or a
broken pool. Here each worker reports every item as it finishes, the parent tracks the
time since each worker's last report, and a worker past the deadline is killed, its
current item recorded as `timeout`, the rest of its chunk re-queued, and a fresh worker
started so the pool keeps its size.

Workers start from a forkserver by default: forking the trainer itself would copy a
process that runs JAX's threads (fork-unsafe). The server preloads sympy/math-verify
once, so starting (or replacing) a worker costs milliseconds. Nothing here uses signals
in the parent, so `score` works from any thread.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import multiprocessing as mp
import multiprocessing.connection
import pickle
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np

from reasoning_jax.rewards import _worker
from reasoning_jax.rewards.base import (EXCEPTION, OK, REASONS, TIMEOUT, Gold,
                                        Outcome, RewardItem, score_item)


@dataclasses.dataclass(frozen=True)
class BatchResult:
  """Outcomes of one batch, in input order, plus how long scoring took."""
  outcomes: tuple[Outcome, ...]
  seconds: float = 0.0
  restarts: int = 0

  @property
  def scores(self) -> np.ndarray:
    """float64 [B]: the score, NaN where there is none (timeout, error, bad gold)."""
    return np.array([o.score for o in self.outcomes], dtype=np.float64)

  @property
  def reasons(self) -> tuple[str, ...]:
    """The reason per item ("ok", "timeout", "exception", "unparsable_gold", ...)."""
    return tuple(o.reason for o in self.outcomes)

  def filled(self, value: float) -> np.ndarray:
    """Scores with the missing ones set to `value`: the caller's explicit choice."""
    s = self.scores
    return np.where(np.isnan(s), value, s)

  def counts(self) -> dict[str, int]:
    """Number of items per reason (every reason present, zeros included)."""
    c = collections.Counter(self.reasons)
    return {r: c.get(r, 0) for r in REASONS}

  def metrics(self, prefix: str = "reward") -> dict[str, float]:
    """Flat metrics: counts per reason, mean over scored items, time, restarts."""
    out = {f"{prefix}/{r}": float(n) for r, n in self.counts().items()}
    s = self.scores
    out[f"{prefix}/mean"] = float(np.nanmean(s)) if np.isfinite(s).any() else math.nan
    out[f"{prefix}/seconds"] = self.seconds
    out[f"{prefix}/worker_restarts"] = float(self.restarts)
    return out


@dataclasses.dataclass
class _Worker:
  proc: Any
  conn: Any
  state: str = "starting"  # starting | idle | busy
  chunk: list = dataclasses.field(default_factory=list)
  pos: int = 0
  since: float = 0.0


def make_items(completions: Sequence[str], golds: Sequence[Gold] | None = None,
               num_tokens: Sequence[int] | None = None,
               metadata: Sequence[Mapping[str, Any]] | None = None) -> list[RewardItem]:
  """Zips parallel lists into RewardItems, checking that the lengths agree."""
  n = len(completions)
  for name, seq in (("golds", golds), ("num_tokens", num_tokens),
                    ("metadata", metadata)):
    if seq is not None and len(seq) != n:
      raise ValueError(f"{name} has {len(seq)} entries but there are {n} completions.")
  return [RewardItem(c, None if golds is None else golds[i],
                     None if num_tokens is None else int(num_tokens[i]),
                     {} if metadata is None else metadata[i])
          for i, c in enumerate(completions)]


class RewardRunner:
  """A pool of reward workers. Use as a context manager, or call `close()`.

  Args:
    num_workers: worker processes; 0 scores in the calling thread with no timeout (for
      debugging only: a hang there hangs the caller).
    timeout_s: per-item limit, measured from the worker's previous report.
    chunk_size: items per worker task; default spreads a batch over ~4 tasks per worker.
    start_method: "forkserver" (default, fork-safe next to JAX), "spawn" or "fork".
    startup_timeout_s: how long a new worker may take to import and warm up.
  """

  def __init__(self, num_workers: int = 2, timeout_s: float = 10.0,
               chunk_size: int | None = None, start_method: str = "forkserver",
               startup_timeout_s: float = 120.0):
    if not isinstance(num_workers, int) or num_workers < 0:
      raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}.")
    if not timeout_s > 0:
      raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}.")
    if chunk_size is not None and chunk_size < 1:
      raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size!r}.")
    if start_method not in mp.get_all_start_methods():
      raise ValueError(f"start_method {start_method!r} is not available here; choose "
                       f"one of {mp.get_all_start_methods()}.")
    self.num_workers, self.timeout_s, self.chunk_size = num_workers, timeout_s, chunk_size
    self.startup_timeout_s = startup_timeout_s
    self._ctx = mp.get_context(start_method)
    if start_method == "forkserver":
      # Replaces the default ["__main__"] preload: the trainer's main module (and jax
      # with it) has no business in the workers. No effect if the server already runs.
      self._ctx.set_forkserver_preload(["reasoning_jax.rewards._preload"])
    self._lock = threading.Lock()
    self._executor: concurrent.futures.ThreadPoolExecutor | None = None
    self._workers: list[_Worker] = [self._start() for _ in range(num_workers)]
    self.restarts = 0
    self._closed = False

  def wait_ready(self) -> None:
    """Blocks until every worker has started and warmed up (else the first `score`
    waits for them). Raises RuntimeError if one fails to start in time."""
    with self._lock:
      for i, w in enumerate(self._workers):
        while w.state == "starting":
          left = w.since + self.startup_timeout_s - time.monotonic()
          if left <= 0 or not w.conn.poll(left):
            raise RuntimeError(f"a reward worker did not start within "
                               f"{self.startup_timeout_s:g} s.")
          try:
            msg = w.conn.recv()
          except (EOFError, OSError):
            self._fail(w, None, None, EXCEPTION, "worker process died while starting")
          if msg == _worker.READY:
            w.state = "idle"

  def _start(self) -> _Worker:
    parent, child = self._ctx.Pipe(duplex=True)
    proc = self._ctx.Process(target=_worker.worker_main, args=(child,), daemon=True,
                             name="reward-worker")
    proc.start()
    child.close()
    return _Worker(proc, parent, "starting", since=time.monotonic())

  def _replace(self, w: _Worker) -> _Worker:
    w.proc.kill()
    w.proc.join(timeout=5)
    w.conn.close()
    self.restarts += 1
    return self._start()

  def _check(self, reward) -> None:
    if not callable(reward):
      raise TypeError(f"reward must be callable (see get_reward), got {reward!r:.80}.")
    if self.num_workers:
      try:
        pickle.dumps(reward)
      except Exception as e:
        raise TypeError(f"reward must be picklable to reach the workers (use a "
                        f"get_reward(...) object, not a lambda): {e}") from None

  def score(self, reward, items: Sequence[RewardItem]) -> BatchResult:
    """Scores `items` with `reward`; returns one Outcome per item, in order.

    Never raises for a bad item: a hang is "timeout", a crash "exception", and
    rewards report "unparsable_gold"/"unparsable_answer" themselves. Thread-safe
    (calls are serialised).
    """
    self._check(reward)
    items = list(items)
    for i, it in enumerate(items):
      if not isinstance(it, RewardItem):
        raise TypeError(f"items[{i}] is {type(it).__name__}, expected RewardItem "
                        "(see make_items).")
    with self._lock:
      if self._closed:
        raise RuntimeError("RewardRunner is closed; create a new one.")
      start, restarts0 = time.perf_counter(), self.restarts
      if self.num_workers == 0 or not items:
        outcomes = [score_item(reward, it) for it in items]
      else:
        outcomes = self._run(reward, items)
      return BatchResult(tuple(outcomes), time.perf_counter() - start,
                         self.restarts - restarts0)

  def score_texts(self, reward, completions: Sequence[str],
                  golds: Sequence[Gold] | None = None,
                  num_tokens: Sequence[int] | None = None,
                  metadata: Sequence[Mapping[str, Any]] | None = None) -> BatchResult:
    """`score` on parallel lists (see `make_items`)."""
    return self.score(reward, make_items(completions, golds, num_tokens, metadata))

  def submit(self, reward, items: Sequence[RewardItem]
             ) -> concurrent.futures.Future:
    """Scores in a background thread (overlap with generation); returns a Future."""
    if self._executor is None:
      self._executor = concurrent.futures.ThreadPoolExecutor(
          1, thread_name_prefix="reward-runner")
    return self._executor.submit(self.score, reward, items)

  def _run(self, reward, items: list[RewardItem]) -> list[Outcome]:
    n = len(items)
    size = self.chunk_size or max(1, min(64, math.ceil(n / (4 * self.num_workers))))
    queue = collections.deque(list(range(i, min(n, i + size)))
                              for i in range(0, n, size))
    outcomes: list[Outcome | None] = [None] * n
    remaining = n
    while remaining:
      for k, w in enumerate(self._workers):
        if w.state == "idle" and queue:
          chunk = queue.popleft()
          try:
            w.conn.send((reward, [items[i] for i in chunk]))
          except (OSError, ValueError):  # died while idle (e.g. OOM-killed): replace
            queue.appendleft(chunk)
            self._workers[k] = self._replace(w)
            continue
          w.chunk, w.pos, w.state, w.since = chunk, 0, "busy", time.monotonic()
      live = {w.conn: w for w in self._workers if w.state != "idle"}
      deadline = min(w.since + (self.timeout_s if w.state == "busy"
                                else self.startup_timeout_s) for w in live.values())
      ready = mp.connection.wait(list(live), timeout=max(0.0, deadline - time.monotonic()))
      for conn in ready:
        w = live[conn]
        try:
          msg = conn.recv()
        except (EOFError, OSError):
          remaining -= self._fail(w, queue, outcomes, EXCEPTION,
                                  f"worker process died (exit code {w.proc.exitcode})")
          continue
        if msg == _worker.READY:
          w.state = "idle"
          continue
        outcomes[w.chunk[w.pos]] = Outcome(*msg)
        remaining -= 1
        w.pos += 1
        w.since = time.monotonic()
        if w.pos == len(w.chunk):
          w.state, w.chunk = "idle", []
      now = time.monotonic()
      for w in list(self._workers):
        if w.state == "busy" and now - w.since > self.timeout_s and not w.conn.poll():
          remaining -= self._fail(w, queue, outcomes, TIMEOUT,
                                  f"no result within {self.timeout_s:g} s")
        elif w.state == "starting" and now - w.since > self.startup_timeout_s:
          raise RuntimeError(
              f"a reward worker did not start within {self.startup_timeout_s:g} s; "
              "check that reasoning_jax.rewards imports in a fresh process.")
    return outcomes  # type: ignore[return-value]

  def _fail(self, w: _Worker, queue, outcomes, reason: str, detail: str) -> int:
    """Records the worker's current item as failed, re-queues the rest, replaces it."""
    failed = 0
    if w.state == "busy":
      outcomes[w.chunk[w.pos]] = Outcome(math.nan, reason, detail)
      failed = 1
      rest = w.chunk[w.pos + 1:]
      if rest:
        queue.appendleft(rest)
    elif w.state == "starting":
      raise RuntimeError(
          f"a reward worker died while starting ({detail}). Its traceback is on "
          "stderr. A common cause: forkserver/spawn workers re-import your main script, "
          "so a script that builds a RewardRunner must do so under "
          "`if __name__ == '__main__':`.")
    self._workers[self._workers.index(w)] = self._replace(w)
    return failed

  def close(self) -> None:
    """Stops the workers (politely, then by force)."""
    if self._closed:
      return
    self._closed = True
    if self._executor is not None:
      self._executor.shutdown(wait=True)
    for w in self._workers:
      try:
        w.conn.send(None)
      except (OSError, ValueError):
        pass
    for w in self._workers:
      w.proc.join(timeout=2)
      if w.proc.is_alive():
        w.proc.kill()
        w.proc.join(timeout=2)
      w.conn.close()
    self._workers = []

  def __enter__(self) -> "RewardRunner":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down mp
      pass
