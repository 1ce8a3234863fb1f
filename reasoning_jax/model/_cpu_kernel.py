"""The numba-compiled body of `cpu_matvec`: XLA FFI handlers for a bf16 matrix-vector
product on CPU, split over XLA's own thread pool.

Imported only by `cpu_matvec` (numba is imported lazily there). numba caches the
compiled code on disk (~8 s to compile, ~1 s to load); nothing cached embeds an
address of this process: the handlers reach the pool task through a JIT symbol bound
at import (`_TASK_SYMBOL`).

The handler reads XLA's FFI call frame as plain 64-bit words. The layout is XLA's
stable C ABI (`jaxlib/include/xla/ffi/api/c_api.h`, unchanged from API 0.3 to 0.5):

  XLA_FFI_CallFrame: 0 struct_size, 1 extension_start, 2 api, 3 ctx, 4 stage,
    5-9 args {size, ext, count, types, args}, 10-14 rets {..., rets}, 15-19 attrs
  XLA_FFI_Buffer: 0 struct_size, 1 ext, 2 dtype, 3 data, 4 rank, 5 dims
  XLA_FFI_Api: 0 size, 1 ext, 2-4 api_version {size, ext, major | minor << 32},
    5 internal, 6 Error_Create, 7 Error_GetMessage, 8 Error_Destroy, ...,
    17 ThreadPool_Schedule, 18 ThreadPool_NumThreads

At registration XLA calls the handler with a metadata extension; it answers with the
runtime's own API version (it uses nothing newer than the first stable fields). The
handlers return no errors: `cpu_matvec` checks shapes and dtypes at trace time.

Work split: the weight matrix is cut into chunks of contiguous rows (a layer's matrix
into one per thread, a large head into ~`CHUNK_BYTES` pieces): for `[N, K]` matrices
each chunk owns output columns, for `[K, N]` each sums its rows into a float32 partial
that the caller adds up at the end. The calling thread and up to (pool threads - 1) helper tasks scheduled on XLA's pool
claim chunks with an atomic counter. The caller waits only for chunks already claimed,
never for a helper to start (a helper may be queued behind other work, or run inline),
so it cannot deadlock; the job record is reference-counted and freed by whichever
thread leaves it last.
"""
from __future__ import annotations

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numba as nb
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I64 = ir.IntType(64)
_I8P = ir.IntType(8).as_pointer()

# Most weight bytes per chunk. Each thread should stream long contiguous runs
# (measured on the 57 MB SmolLM2 head: 64 KB chunks 19 GB/s, 4 MB 25.6 GB/s), and a
# layer's matrix (0.7-3.5 MB) is cut into one chunk per thread.
CHUNK_BYTES = 1 << 22


@intrinsic
def _bits_to_f32(typingctx, u):
  def codegen(context, builder, sig, args):
    return builder.bitcast(args[0], ir.FloatType())
  return types.float32(types.uint32), codegen


@intrinsic
def _ptr(typingctx, a):
  def codegen(context, builder, sig, args):
    return builder.inttoptr(args[0], _I8P)
  return types.voidptr(types.int64), codegen


@intrinsic
def _atomic_add(typingctx, addr, val):
  def codegen(context, builder, sig, args):
    return builder.atomic_rmw("add", builder.inttoptr(args[0], _I64.as_pointer()),
                              args[1], "seq_cst")
  return types.int64(types.int64, types.int64), codegen


@intrinsic
def _atomic_load(typingctx, addr):
  def codegen(context, builder, sig, args):
    return builder.load_atomic(builder.inttoptr(args[0], _I64.as_pointer()),
                               "seq_cst", 8)
  return types.int64(types.int64), codegen


@intrinsic
def _call(typingctx, fn, arg):
  """`(int64) fn((void*) arg)` for a C function pointer `void* fn(void*)` (the FFI API's
  functions all take one argument struct)."""
  def codegen(context, builder, sig, args):
    fnty = ir.FunctionType(_I8P, [_I8P])
    result = builder.call(builder.inttoptr(args[0], fnty.as_pointer()),
                          [builder.inttoptr(args[1], _I8P)])
    return builder.ptrtoint(result, _I64)
  return types.int64(types.int64, types.int64), codegen


@intrinsic
def _call_void(typingctx, fn, arg):
  """`fn((void*) arg)` for a C function pointer `void fn(void*)` (a task)."""
  def codegen(context, builder, sig, args):
    fnty = ir.FunctionType(ir.VoidType(), [_I8P])
    builder.call(builder.inttoptr(args[0], fnty.as_pointer()),
                 [builder.inttoptr(args[1], _I8P)])
    return context.get_dummy_value()
  return types.none(types.int64, types.int64), codegen


@intrinsic
def _malloc(typingctx, n):
  def codegen(context, builder, sig, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I8P, [_I64]),
                                        "malloc")
    return builder.ptrtoint(builder.call(fn, [args[0]]), _I64)
  return types.int64(types.int64), codegen


@intrinsic
def _free(typingctx, a):
  def codegen(context, builder, sig, args):
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [_I8P]), "free")
    builder.call(fn, [builder.inttoptr(args[0], _I8P)])
    return context.get_dummy_value()
  return types.none(types.int64), codegen


@nb.njit(inline="always", cache=True)
def _words(addr, n):
  return nb.carray(_ptr(addr), (n,), np.int64)


# The job record, int64 words: 0 references, 1 next chunk, 2 chunks done, 3 chunks,
# 4 rows of w per chunk, 5 x, 6 w (the layer's matrix), 7 y, 8 M, 9 N, 10 K,
# 11 the job's own address (the helper task's data points here), 12 layout (0: w is
# [N, K]; 1: w is [K, N]), 13 the float32 partial sums [chunks, M, N] of layout 1,
# 14-19 scratch for the FFI API's argument structs (no allocation per API call).
_JOB = 20
_SCRATCH = 14


@nb.njit(fastmath=True, inline="always", cache=True)
def _f32(bits):
  return _bits_to_f32(np.uint32(bits) << np.uint32(16))


@nb.njit(fastmath=True, cache=True)
def _dot(x, w, K):
  """sum_k x[k] * w[k] over float32 x and bf16 bits w, in float32 (fastmath lets LLVM
  vectorise the sum into partial sums: the order differs from XLA's, not the
  products, which are exact)."""
  s = np.float32(0.0)
  for k in range(K):
    s += x[k] * _f32(w[k])
  return s


@nb.njit(fastmath=True, cache=True)
def _rows_times_x(x, w, acc, k0, k1):
  """acc[m] = sum over k in [k0, k1) of x[m, k] * w[k] for a [K, N] bits matrix: one
  weight row per pass (measured: a pass over four rows at once does not vectorise
  and runs at 2/3 the speed)."""
  M, N = acc.shape
  for m in range(M):
    a = acc[m]
    a[:] = 0.0
    for k in range(k0, k1):
      xk, wk = x[m, k], w[k]
      for n in range(N):
        a[n] += xk * _f32(wk[n])


@nb.njit(fastmath=True, cache=True)
def _run_chunks(job_addr):
  job = _words(job_addr, _JOB)
  M, N, K, n_chunks, rows = job[8], job[9], job[10], job[3], job[4]
  x = nb.carray(_ptr(job[5]), (M, K), np.float32)
  while True:
    c = _atomic_add(job_addr + 8, 1)
    if c >= n_chunks:
      return
    if job[12] == 0:  # w [N, K]: chunk c owns output columns [c rows, ...)
      w = nb.carray(_ptr(job[6]), (N, K), np.uint16)
      y = nb.carray(_ptr(job[7]), (M, N), np.float32)
      for n in range(c * rows, min(N, (c + 1) * rows)):
        for m in range(M):
          y[m, n] = _dot(x[m], w[n], K)
    else:  # w [K, N]: chunk c sums the contiguous rows [c rows, ...) into its partial
      w = nb.carray(_ptr(job[6]), (K, N), np.uint16)
      part = nb.carray(_ptr(job[13]), (n_chunks, M, N), np.float32)
      _rows_times_x(x, w, part[c], c * rows, min(K, (c + 1) * rows))
    _atomic_add(job_addr + 16, 1)


@nb.njit(cache=True)
def _release(job_addr):
  if _atomic_add(job_addr, -1) == 1:
    if _words(job_addr, _JOB)[13] != 0:
      _free(_words(job_addr, _JOB)[13])
    _free(job_addr)


@nb.cfunc(types.void(types.voidptr), fastmath=True, cache=True)
def _task(data):
  job_addr = nb.carray(data, (1,), np.int64)[0]
  _run_chunks(job_addr)
  _release(job_addr)


# The handlers find the task through a JIT symbol, not a baked address, so that numba
# may cache every function here on disk: each process binds the symbol to its own copy.
_TASK_SYMBOL = "reasoning_jax_matvec_task"
llvm.add_symbol(_TASK_SYMBOL, _task.address)


@intrinsic
def _task_address(typingctx):
  def codegen(context, builder, sig, args):
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [_I8P]), _TASK_SYMBOL)
    return builder.ptrtoint(fn, _I64)
  return types.int64(), codegen


@nb.njit(cache=True)
def _api(api, slot, job_addr, a2, a3, a4):
  """Call FFI API function `slot` with the struct {size, NULL, a2, a3, a4} built in
  the job's scratch words; destroys and reports (False) a returned error."""
  args = _words(job_addr + 8 * _SCRATCH, 5)
  args[0], args[1], args[2], args[3], args[4] = 40, 0, a2, a3, a4
  if slot == 18:  # NumThreads_Args is one word shorter
    args[0] = 32
  err = _call(_words(api, 19)[slot], args.ctypes.data)
  if err == 0:
    return True
  args[0], args[1], args[2] = 24, 0, err  # Error_Destroy_Args
  _call(_words(api, 19)[8], args.ctypes.data)
  return False


@nb.njit(cache=True)
def _pool_threads(api, ctx, job_addr):
  out = job_addr + 8 * (_SCRATCH + 5)
  _words(out, 1)[0] = 1
  if not _api(api, 18, job_addr, ctx, out, 0):
    return 1
  return max(1, _words(out, 1)[0])


@nb.njit(cache=True)
def _answer_metadata(frame):
  """True (after filling it in) when XLA is asking for the handler's metadata."""
  ext = frame[1]
  while ext != 0:
    e = _words(ext, 4)  # {struct_size, type, next, metadata*}
    if (e[1] & 0xFFFFFFFF) == 1:  # XLA_FFI_Extension_Metadata
      md = _words(e[3], 6)  # {size, api_version {size, ext, major|minor}, traits, type id}
      md[1], md[2], md[3] = 24, 0, _words(frame[2], 5)[4]
      md[4], md[5] = 0, 0
      return True
    ext = e[2]
  return False


@nb.njit(cache=True)
def _matvec(call_frame, transposed):
  """The body of both handlers: y[M, N] = x[M, K] @ w[layer] for x float32, w the bf16
  bits (uint16) of L stacked matrices, [L, N, K] when `transposed` else [L, K, N],
  layer an int32 scalar; y float32. Shapes and dtypes are checked by
  `cpu_matvec.matvec`. The products run in `_task`, called by address (here and on
  the pool), so this function stays small to compile."""
  frame = nb.carray(call_frame, (15,), np.int64)
  if _answer_metadata(frame):
    return 0
  api, ctx = frame[2], frame[3]
  args, rets = _words(frame[9], 3), _words(frame[14], 1)
  bx, bw, bl, by = (_words(args[0], 6), _words(args[1], 6), _words(args[2], 6),
                    _words(rets[0], 6))
  M = _words(bx[5], 2)[0]
  wd = _words(bw[5], 3)
  N, K = (wd[1], wd[2]) if transposed else (wd[2], wd[1])
  # Clamped like XLA's dynamic indexing, so a bad index never reads outside the stack.
  layer = min(max(nb.carray(_ptr(bl[3]), (1,), np.int32)[0], 0), wd[0] - 1)
  job_addr = _malloc(8 * _JOB)
  job = _words(job_addr, _JOB)
  threads = _pool_threads(api, ctx, job_addr)
  per_thread = (2 * N * K + threads * CHUNK_BYTES - 1) // (threads * CHUNK_BYTES)
  split = N if transposed else K  # the axis chunks cut: contiguous rows of w
  rows = max(1, (split + threads * per_thread - 1) // (threads * per_thread))
  n_chunks = (split + rows - 1) // rows
  job[1], job[2], job[3], job[4] = 0, 0, n_chunks, rows
  job[5], job[6], job[7] = bx[3], bw[3] + 2 * layer * N * K, by[3]
  job[8], job[9], job[10], job[11] = M, N, K, job_addr
  job[12] = 0 if transposed else 1
  job[13] = 0 if transposed else _malloc(4 * n_chunks * M * N)
  helpers = min(threads, n_chunks) - 1
  job[0] = 2 + helpers  # the helpers, this thread's task call, this thread
  for _ in range(helpers):
    if not _api(api, 17, job_addr, ctx, _task_address(), job_addr + 8 * 11):  # Schedule
      _release(job_addr)
  _call_void(_task_address(), job_addr + 8 * 11)
  while _atomic_load(job_addr + 16) < n_chunks:
    pass  # only chunks a running helper has claimed remain
  if not transposed:
    part = nb.carray(_ptr(job[13]), (n_chunks * M * N,), np.float32)
    y = nb.carray(_ptr(job[7]), (M * N,), np.float32)
    for i in range(M * N):
      y[i] = part[i]
    for c in range(1, n_chunks):
      for i in range(M * N):
        y[i] += part[c * M * N + i]
  _release(job_addr)
  return 0


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_t(call_frame):
  """XLA FFI handler: `y = x @ w[layer].T` for w `[L, N, K]` (see `_matvec`)."""
  return _ptr(_matvec(call_frame, True))


@nb.cfunc(types.voidptr(types.voidptr), cache=True)
def handler_n(call_frame):
  """XLA FFI handler: `y = x @ w[layer]` for w `[L, K, N]` (see `_matvec`)."""
  return _ptr(_matvec(call_frame, False))
