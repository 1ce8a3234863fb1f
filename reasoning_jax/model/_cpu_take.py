"""The numba-compiled XLA FFI handler of `cpu_matvec.take`: rows of a 16-bit table by
clamped index, copied bit for bit on the calling thread.

Separate from `_cpu_kernel` (it calls nothing of it; numba's disk cache notices only a
change of a function's own file, so numba code stays in the file of the code it
calls, `_numba_ffi` aside).
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba import types

from reasoning_jax.model._numba_ffi import answer_metadata, ptr, words


@nb.njit(cache=True)
def _take(call_frame):
  """The body of `handler_take`: out[i] = table[clamp(idx[i], 0, R - 1)] for a table
  `[R, ...]` of 16-bit values (any float or int dtype: the bits are copied), idx int32
  `[n]`, out `[n, ...]` of the table's dtype."""
  frame = nb.carray(call_frame, (15,), np.int64)
  if answer_metadata(frame):
    return 0
  args, rets = words(frame[9], 2), words(frame[14], 1)
  bt, bi, bo = words(args[0], 6), words(args[1], 6), words(rets[0], 6)
  dims = words(bt[5], bt[4])
  width = 1
  for d in range(1, bt[4]):
    width *= dims[d]
  R, n = dims[0], words(bi[5], 1)[0]
  table = nb.carray(ptr(bt[3]), (R, width), np.uint16)
  idx = nb.carray(ptr(bi[3]), (n,), np.int32)
  out = nb.carray(ptr(bo[3]), (n, width), np.uint16)
  for i in range(n):
    out[i, :] = table[min(max(idx[i], 0), R - 1)]
  return 0


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_take(call_frame):
  """XLA FFI handler: rows of a 16-bit table by clamped index (see `_take`)."""
  return ptr(_take(call_frame))
