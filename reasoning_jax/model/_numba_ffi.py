"""Low-level pieces for numba-compiled XLA FFI handlers (`_cpu_kernel`): LLVM
intrinsics (pointers, atomics, C calls, a monotonic clock, JIT symbols), readers of
XLA's FFI call frame, and the row buffers of the GEMM jobs (rows rounded to bf16,
padded to whole blocks, or only the kept ones gathered and scattered back).

The handlers read XLA's FFI call frame as plain 64-bit words. The layout is XLA's
stable C ABI (`jaxlib/include/xla/ffi/api/c_api.h`, unchanged from API 0.3 to 0.5):

  XLA_FFI_CallFrame: 0 struct_size, 1 extension_start, 2 api, 3 ctx, 4 stage,
    5-9 args {size, ext, count, types, args}, 10-14 rets {..., rets}, 15-19 attrs
  XLA_FFI_Buffer: 0 struct_size, 1 ext, 2 dtype, 3 data, 4 rank, 5 dims
  XLA_FFI_Api: 0 size, 1 ext, 2-4 api_version {size, ext, major | minor << 32},
    5 internal, 6 Error_Create, 7 Error_GetMessage, 8 Error_Destroy, ...,
    17 ThreadPool_Schedule, 18 ThreadPool_NumThreads

At registration XLA calls a handler with a metadata extension; `answer_metadata`
answers with the runtime's own API version (the handlers use nothing newer than the
first stable fields).

Everything here may be cached on disk by numba (`cache=True`): nothing compiled
embeds an address of this process. Process-specific things (a task function, a
global buffer) are reached through JIT symbols that each process binds at import
(`symbol_address`).
"""
from __future__ import annotations

import time

import llvmlite.ir as ir
import numba as nb
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

I64 = ir.IntType(64)
I8P = ir.IntType(8).as_pointer()
_I32 = ir.IntType(32)
# The platform's value (Linux 1, macOS 6); frozen into the compiled code.
_CLOCK_MONOTONIC = getattr(time, "CLOCK_MONOTONIC", 1)


@intrinsic
def bits_to_f32(typingctx, u):
  """The float32 whose bits are the uint32 `u`."""
  def codegen(context, builder, sig, args):
    return builder.bitcast(args[0], ir.FloatType())
  return types.float32(types.uint32), codegen


@intrinsic
def f32_to_bits(typingctx, f):
  """The uint32 bits of the float32 `f`."""
  def codegen(context, builder, sig, args):
    return builder.bitcast(args[0], _I32)
  return types.uint32(types.float32), codegen


@intrinsic
def ptr(typingctx, a):
  """The int64 address `a` as a void pointer (for `nb.carray`)."""
  def codegen(context, builder, sig, args):
    return builder.inttoptr(args[0], I8P)
  return types.voidptr(types.int64), codegen


def _word(builder, addr):
  return builder.inttoptr(addr, I64.as_pointer())


@intrinsic
def atomic_add(typingctx, addr, val):
  """Add `val` to the int64 word at `addr`; returns the old value (sequentially
  consistent, like every atomic here)."""
  def codegen(context, builder, sig, args):
    return builder.atomic_rmw("add", _word(builder, args[0]), args[1], "seq_cst")
  return types.int64(types.int64, types.int64), codegen


@intrinsic
def atomic_xchg(typingctx, addr, val):
  """Store `val` in the int64 word at `addr`; returns the old value."""
  def codegen(context, builder, sig, args):
    return builder.atomic_rmw("xchg", _word(builder, args[0]), args[1], "seq_cst")
  return types.int64(types.int64, types.int64), codegen


@intrinsic
def atomic_cas(typingctx, addr, expected, new):
  """Compare-and-swap on the int64 word at `addr`; True when it stored `new`."""
  def codegen(context, builder, sig, args):
    pair = builder.cmpxchg(_word(builder, args[0]), args[1], args[2], "seq_cst",
                           "seq_cst")
    return builder.extract_value(pair, 1)
  return types.boolean(types.int64, types.int64, types.int64), codegen


@intrinsic
def atomic_load(typingctx, addr):
  """The int64 word at `addr`, loaded atomically."""
  def codegen(context, builder, sig, args):
    return builder.load_atomic(_word(builder, args[0]), "seq_cst", 8)
  return types.int64(types.int64), codegen


@intrinsic
def atomic_store(typingctx, addr, val):
  """Store `val` in the int64 word at `addr` atomically."""
  def codegen(context, builder, sig, args):
    builder.store_atomic(args[1], _word(builder, args[0]), "seq_cst", 8)
    return context.get_dummy_value()
  return types.none(types.int64, types.int64), codegen


@intrinsic
def now_ns(typingctx):
  """The monotonic clock in nanoseconds (libc's `clock_gettime`), -1 on failure."""
  def codegen(context, builder, sig, args):
    ts = cgutils.alloca_once(builder, ir.ArrayType(I64, 2))
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_I32, [_I32, I8P]), "clock_gettime")
    err = builder.call(fn, [ir.Constant(_I32, _CLOCK_MONOTONIC), builder.bitcast(ts, I8P)])
    zero = ir.Constant(_I32, 0)
    sec = builder.load(builder.gep(ts, [zero, zero]))
    nsec = builder.load(builder.gep(ts, [zero, ir.Constant(_I32, 1)]))
    ns = builder.add(builder.mul(sec, ir.Constant(I64, 10**9)), nsec)
    return builder.select(builder.icmp_signed("==", err, zero), ns, ir.Constant(I64, -1))
  return types.int64(), codegen


@intrinsic
def call(typingctx, fn, arg):
  """`(int64) fn((void*) arg)` for a C function pointer `void* fn(void*)` (the FFI API's
  functions all take one argument struct)."""
  def codegen(context, builder, sig, args):
    fnty = ir.FunctionType(I8P, [I8P])
    result = builder.call(builder.inttoptr(args[0], fnty.as_pointer()),
                          [builder.inttoptr(args[1], I8P)])
    return builder.ptrtoint(result, I64)
  return types.int64(types.int64, types.int64), codegen


@intrinsic
def call_gemm(typingctx, fn, y, x, w, k, ldw, ldy, n0, n1, rb):
  """`fn(y, x, w, k, ldw, ldy, n0, n1, rb)` for a C function pointer `fn` of the
  `_gemm_ir` kernels' signature (three pointers, then six int64), every argument an
  int64."""
  def codegen(context, builder, sig, args):
    fnty = ir.FunctionType(ir.VoidType(), [I8P] * 3 + [I64] * 6)
    ptrs = [builder.inttoptr(a, I8P) for a in args[1:4]]
    builder.call(builder.inttoptr(args[0], fnty.as_pointer()), ptrs + list(args[4:]))
    return context.get_dummy_value()
  return types.none(*([types.int64] * 10)), codegen


@intrinsic
def malloc(typingctx, n):
  """libc `malloc(n)`, as an int64 address."""
  def codegen(context, builder, sig, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(I8P, [I64]),
                                        "malloc")
    return builder.ptrtoint(builder.call(fn, [args[0]]), I64)
  return types.int64(types.int64), codegen


@intrinsic
def free(typingctx, a):
  """libc `free` of the int64 address `a`."""
  def codegen(context, builder, sig, args):
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [I8P]), "free")
    builder.call(fn, [builder.inttoptr(args[0], I8P)])
    return context.get_dummy_value()
  return types.none(types.int64), codegen


def symbol_address(name: str, function: bool):
  """An intrinsic returning the address of JIT symbol `name` (bound with
  `llvmlite.binding.add_symbol` before the first compile): a `void f(void*)` function
  or an int64 global."""
  @intrinsic
  def address(typingctx):
    def codegen(context, builder, sig, args):
      mod = builder.module
      if function:
        g = cgutils.get_or_insert_function(mod, ir.FunctionType(ir.VoidType(), [I8P]),
                                           name)
      else:
        try:
          g = mod.get_global(name)
        except KeyError:
          g = ir.GlobalVariable(mod, I64, name)  # external: the JIT resolves it
      return builder.ptrtoint(g, I64)
    return types.int64(), codegen
  return address


@nb.njit(fastmath=True, inline="always", cache=True)
def bf16_to_f32(bits):
  """The float32 value of bf16 bits (a uint16), exactly."""
  return bits_to_f32(np.uint32(bits) << np.uint32(16))


@nb.njit(fastmath=True, inline="always", cache=True)
def to_bf16(f):
  """The bf16 bits of float32 `f`, rounded to nearest even (as XLA's convert)."""
  u = f32_to_bits(f)
  return np.uint16((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
                   >> np.uint32(16))


@nb.njit(inline="always", cache=True)
def words(addr, n):
  """The `n` int64 words at `addr`, as an array."""
  return nb.carray(ptr(addr), (n,), np.int64)


@nb.njit(cache=True)
def api_call(api, slot, scratch, a2, a3, a4):
  """Call FFI API function `slot` with the struct {size, NULL, a2, a3, a4} built in
  the 5 words at `scratch` (no allocation per call); destroys and reports (False) a
  returned error."""
  args = words(scratch, 5)
  args[0], args[1], args[2], args[3], args[4] = 40, 0, a2, a3, a4
  if slot == 18:  # NumThreads_Args is one word shorter
    args[0] = 32
  err = call(words(api, 19)[slot], args.ctypes.data)
  if err == 0:
    return True
  args[0], args[1], args[2] = 24, 0, err  # Error_Destroy_Args
  call(words(api, 19)[8], args.ctypes.data)
  return False


@nb.njit(cache=True)
def pool_threads(api, ctx, scratch):
  """Threads in XLA's intra-op pool (1 when it has none or the call fails); uses 6
  words at `scratch`."""
  out = scratch + 8 * 5
  words(out, 1)[0] = 1
  if not api_call(api, 18, scratch, ctx, out, 0):
    return 1
  return max(1, words(out, 1)[0])


@nb.njit(cache=True)
def answer_metadata(frame):
  """True (after filling it in) when XLA is asking for the handler's metadata."""
  ext = frame[1]
  while ext != 0:
    e = words(ext, 4)  # {struct_size, type, next, metadata*}
    if (e[1] & 0xFFFFFFFF) == 1:  # XLA_FFI_Extension_Metadata
      md = words(e[3], 6)  # {size, api_version {size, ext, major|minor}, traits, type id}
      md[1], md[2], md[3] = 24, 0, words(frame[2], 5)[4]
      md[4], md[5] = 0, 0
      return True
    ext = e[2]
  return False


@nb.njit(fastmath=True, cache=True)
def rows_to_bf16(x, M, K, block):
  """A new buffer (free it) of the float32 `x [M, K]` rounded to bf16 bits, with zero
  rows added up to a whole number of row blocks of `block` rows; returns (address,
  padded rows)."""
  Mp = (M + block - 1) // block * block
  xb = malloc(2 * Mp * K)
  src = nb.carray(ptr(x), (M * K,), np.float32)
  dst = nb.carray(ptr(xb), (Mp * K,), np.uint16)
  for i in range(M * K):
    dst[i] = to_bf16(src[i])
  for i in range(M * K, Mp * K):
    dst[i] = 0
  return xb, Mp


@nb.njit(cache=True)
def pad_rows(x, M, K, block):
  """The bf16 bits `x [M, K]` with zero rows added up to whole row blocks of `block`
  rows: `x` itself when it has them, else a new buffer (free it); returns (address,
  padded rows)."""
  Mp = (M + block - 1) // block * block
  if Mp == M:
    return x, Mp
  xb = malloc(2 * Mp * K)
  dst = nb.carray(ptr(xb), (Mp * K,), np.uint16)
  dst[:M * K] = nb.carray(ptr(x), (M * K,), np.uint16)
  dst[M * K:] = 0
  return xb, Mp


@nb.njit(cache=True)
def gather_rows(x, M, K, block, keep, scratch, room):
  """The rows of the bf16 bits `x [M, K]` where the bool `keep [M]` is set, in order,
  with zero rows up to whole row blocks of `block` rows (one block at least), in
  `scratch` when it is not 0 and they fit in its `room` bytes, else in a new buffer
  (free it); returns (address, padded rows). Why the scratch: a fresh buffer per
  product of a prefill is page-faulted anew each time (~1.6 us a page here)."""
  kept = nb.carray(ptr(keep), (M,), np.uint8)
  n = 0
  for i in range(M):
    n += kept[i] != 0
  Mp = max(1, (n + block - 1) // block) * block
  xb = scratch if scratch != 0 and 2 * Mp * K <= room else malloc(2 * Mp * K)
  src = nb.carray(ptr(x), (M, K), np.uint16)
  dst = nb.carray(ptr(xb), (Mp, K), np.uint16)
  r = 0
  for i in range(M):
    if kept[i] != 0:
      dst[r, :] = src[i]
      r += 1
  dst[r:, :] = 0
  return xb, Mp


@nb.njit(cache=True)
def expand_rows(src, y, M, N, keep, n0, n1):
  """Columns [n0, n1) of float32 `y [M, N]` from the products of `gather_rows`' rows at
  `src` (rows of N; `y` itself allowed): each at its row where the bool `keep [M]` is
  set, 0 in the others. From the last row back, so that in place no row is
  overwritten before it moves (a kept row never moves up)."""
  kept = nb.carray(ptr(keep), (M,), np.uint8)
  r = -1
  for i in range(M):
    r += kept[i] != 0
  for i in range(M - 1, -1, -1):
    dst = nb.carray(ptr(y + 4 * (i * N + n0)), (n1 - n0,), np.float32)
    if kept[i] != 0:
      if src + 4 * r * N != y + 4 * i * N:
        dst[:] = nb.carray(ptr(src + 4 * (r * N + n0)), (n1 - n0,), np.float32)
      r -= 1
    else:
      dst[:] = 0
