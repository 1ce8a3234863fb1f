"""bf16 GEMM micro-kernels for CPU decoding at a few rows, in LLVM IR on AVX-512 BF16.

`_cpu_kernel` runs every product of a decode step on the bf16 weights as stored. At one
row a product is a pass over the weights (memory-bound: numba's loops suffice). At 16
to 64 rows (a batch of prompts, or a group of samples) it is compute-bound, and
XLA:CPU's GEMMs (YNNPACK) ran at ~85 GFLOP/s per core of a Zen 4 (docs/benchmarks.md):
float32 FMAs after converting the weights. `vdpbf16ps` multiplies bf16 pairs into float32
sums at twice the FMA rate, so these kernels use it directly. numba has no vector
types, so they are written as LLVM IR text, compiled once per process by llvmlite
(numba's own LLVM, ~0.1 s) for the host CPU; `_cpu_kernel` calls them through the
function addresses in a table.

Both compute `y[m, n] = sum_k x[m, k] w[.., ..]` in float32 from bf16 bits, for row
blocks of a padded `x [RB * rows, K]` (bf16 bits) and output columns `[n0, n1)`:
  kn: w `[K, N]` (`[in, out]`, the stacked layer matrices). A pair of weight rows
    (k, k+1) is interleaved in registers into 16 (k, k+1) pairs per vector, multiplied
    by the broadcast pair x[m, k:k+2]: 32 columns by `KN_ROWS` rows per block, one
    strip of 32 columns at a time down K. Strips are read 64 bytes per row, so the
    kernel prefetches the same rows `KN_PREFETCH` columns ahead (4 strips): without it
    a cold [576, 1536] ran at 70 GFLOP/s on one Zen 4 core, with it 130-160 (hot: 185).
  nk: w `[N, K]` (`[out, in]`, the tied embedding as the output head): `NK_COLS` weight
    rows by `NK_ROWS` x rows, 32 k at a time, each (m, n) sum kept in one vector, the 16
    vectors reduced at the end by a shuffle tree; weight rows `NK_PREFETCH` rows ahead
    are prefetched (SmolLM2's head at 16 rows: 94 -> 154 GFLOP/s on one core).
  kp: w packed (`cpu_matvec.pack`) as `[N / 16, K / 2, 16, 2]`: strips of 16 columns,
    each one contiguous run of memory, the (k, k+1) pairs of a column adjacent, so a
    plain 64-byte load is the vector `vdpbf16ps` wants: no shuffles, and one stream
    per strip for the hardware prefetcher (plus software prefetch into L2,
    `prefetcht1`, `KP_PREFETCH` elements ahead). `KP_ROWS` (8 or 16) x rows by 16
    columns per block. Measured on the 2-core Zen 4 (30 cold `[16, 576] x [576, 1536]`,
    both cores): kn 175 GFLOP/s, kp at 16 rows 417 (the cores' `vdpbf16ps` peak there:
    455); 60 cold `[16, 576] x [576, 3072]`: 440 with `prefetcht1`, 412 with
    `prefetchnta`, 300 with no software prefetch.
Products of bf16 values are exact in float32, and `vdpbf16ps` adds them in float32
(denormal inputs and results flushed to zero, which bf16 activations and weights of a
trained model do not reach): a sum of exact products in another order than XLA's.

Only for x86 CPUs whose LLVM reports `avx512bf16` (Zen 4 and later, Intel Cooper
Lake, Sapphire Rapids and later); elsewhere `compile_kernels` says why not and the
decode keeps XLA's products above one row.
"""
from __future__ import annotations

import functools

import llvmlite.binding as llvm

KN_ROWS = 8
# The kn kernel at 4 rows too: decode attention's values for 3-4 query heads per kv
# head (SmolLM2) would be padded to 8 rows.
KN_SMALL_ROWS = 4
NK_ROWS, NK_COLS = 4, 4
KN_STRIP = 32
KN_PREFETCH = 128
NK_PREFETCH = 8
KP_STRIP = 16
KP_ROWS = (8, 16)
KP_PREFETCH = 4096
# Every kernel has this signature (the numba caller casts the table's addresses to it):
# void f(float* y, bf16* x, bf16* w, i64 K, i64 ldw, i64 ldy, i64 n0, i64 n1, i64 RB)
_ARGS = ("ptr noalias %y0, ptr noalias %x0, ptr noalias %w, i64 %K, i64 %ldw, i64 %ldy, "
         "i64 %n0, i64 %n1, i64 %RB")
_DP = "@llvm.x86.avx512bf16.dpbf16ps.512"
_DECLS = (f"declare <16 x float> {_DP}(<16 x float>, <32 x bfloat>, <32 x bfloat>)\n"
          "declare void @llvm.prefetch.p0(ptr, i32, i32, i32)\n")
_engine = None  # the compiled module's engine, kept alive for the process


def _loops(name: str, rows: int, step: int, acc: list[str]) -> list[str]:
  """The shared frame: columns [n0, n1) by `step`, row blocks inside (so a strip of
  weights stays in cache for every block), accumulator phis zeroed per block."""
  return [
      f"define void @{name}({_ARGS}) {{",
      "entry:\n  %c0 = icmp slt i64 %n0, %n1\n  br i1 %c0, label %nloop, label %exit",
      "nloop:\n  %n = phi i64 [%n0, %entry], [%nnext, %rdone]\n  br label %rloop",
      "rloop:\n  %rb = phi i64 [0, %nloop], [%rbnext, %store]",
      f"  %m0 = mul i64 %rb, {rows}\n  %xo = mul i64 %m0, %K",
      "  %x = getelementptr i16, ptr %x0, i64 %xo",
      "  %yo = mul i64 %m0, %ldy\n  %y = getelementptr float, ptr %y0, i64 %yo",
      "  br label %kloop",
      "kloop:\n  %k = phi i64 [0, %rloop], [%knext, %kloop]",
  ] + [f"  %{a} = phi <16 x float> [zeroinitializer, %rloop], [%n{a}, %kloop]"
       for a in acc]


def _close(step: int) -> list[str]:
  return [
      "  %rbnext = add i64 %rb, 1\n  %rc = icmp slt i64 %rbnext, %RB",
      "  br i1 %rc, label %rloop, label %rdone",
      f"rdone:\n  %nnext = add i64 %n, {step}\n  %nc = icmp slt i64 %nnext, %n1",
      "  br i1 %nc, label %nloop, label %exit",
      "exit:\n  ret void\n}",
  ]


def _x_pair(r: int) -> list[str]:
  """IR that loads row r's pair x[r, 2k:2k+2] (one 32-bit word, at `%kk` = 2k) and
  broadcasts it to all 16 lanes as `%xf{r}`, the `vdpbf16ps` operand."""
  return [
      f"  %xr{r} = mul i64 %K, {r}\n  %xi{r} = add i64 %xr{r}, %kk",
      f"  %xp{r} = getelementptr i16, ptr %x, i64 %xi{r}",
      f"  %xs{r} = load i32, ptr %xp{r}, align 2",
      f"  %xv{r} = insertelement <16 x i32> poison, i32 %xs{r}, i64 0",
      f"  %xb{r} = shufflevector <16 x i32> %xv{r}, <16 x i32> poison, "
      "<16 x i32> zeroinitializer",
      f"  %xf{r} = bitcast <16 x i32> %xb{r} to <32 x bfloat>",
  ]


def _kn_ir(rows: int, name: str = "kn") -> str:
  """The [K, N] kernel (see the module docstring); K even, N a multiple of 32."""
  acc = [f"a{r}_{h}" for r in range(rows) for h in range(2)]
  out = _loops(name, rows, KN_STRIP, acc)
  add = out.append
  add("  %kk = shl i64 %k, 1\n  %o0 = mul i64 %kk, %ldw\n  %o0n = add i64 %o0, %n")
  add("  %o1n = add i64 %o0n, %ldw")
  add("  %pa = getelementptr i16, ptr %w, i64 %o0n\n  %pb = getelementptr i16, ptr %w, i64 %o1n")
  add("  %a = load <32 x i16>, ptr %pa, align 2\n  %b = load <32 x i16>, ptr %pb, align 2")
  for p in ("a", "b"):
    add(f"  %q{p} = getelementptr i16, ptr %p{p}, i64 {KN_PREFETCH}")
    add(f"  call void @llvm.prefetch.p0(ptr %q{p}, i32 0, i32 3, i32 1)")
  for h, first in (("lo", 0), ("hi", 16)):
    idx = ", ".join(f"i32 {first + i}, i32 {32 + first + i}" for i in range(16))
    add(f"  %{h}i = shufflevector <32 x i16> %a, <32 x i16> %b, <32 x i32> <{idx}>")
    add(f"  %{h} = bitcast <32 x i16> %{h}i to <32 x bfloat>")
  for r in range(rows):
    out.extend(_x_pair(r))
    for h, v in ((0, "lo"), (1, "hi")):
      add(f"  %na{r}_{h} = call <16 x float> {_DP}(<16 x float> %a{r}_{h}, "
          f"<32 x bfloat> %{v}, <32 x bfloat> %xf{r})")
  add("  %knext = add i64 %k, 1\n  %k2 = lshr i64 %K, 1\n  %kc = icmp slt i64 %knext, %k2")
  add("  br i1 %kc, label %kloop, label %store")
  add("store:")
  for r in range(rows):
    add(f"  %yr{r} = mul i64 %ldy, {r}\n  %yc{r} = add i64 %yr{r}, %n")
    add(f"  %yp{r}_0 = getelementptr float, ptr %y, i64 %yc{r}")
    add(f"  %yp{r}_1 = getelementptr float, ptr %yp{r}_0, i64 16")
    for h in range(2):
      add(f"  store <16 x float> %na{r}_{h}, ptr %yp{r}_{h}, align 4")
  return "\n".join(out + _close(KN_STRIP))


def _nk_ir(rows: int, cols: int) -> str:
  """The [N, K] kernel (see the module docstring); K a multiple of 32, N of `cols`."""
  assert rows * cols == 16  # one vector of 16 sums after the reduction tree
  acc = [f"a{r}_{j}" for r in range(rows) for j in range(cols)]
  out = _loops("nk", rows, cols, acc)
  add = out.append
  add(f"  %pfo = mul i64 %ldw, {NK_PREFETCH}")
  for j in range(cols):
    add(f"  %wn{j} = add i64 %n, {j}\n  %wr{j} = mul i64 %wn{j}, %ldw")
    add(f"  %wo{j} = add i64 %wr{j}, %k\n  %wp{j} = getelementptr i16, ptr %w, i64 %wo{j}")
    add(f"  %wv{j} = load <32 x bfloat>, ptr %wp{j}, align 2")
    add(f"  %wq{j} = getelementptr i16, ptr %wp{j}, i64 %pfo")
    add(f"  call void @llvm.prefetch.p0(ptr %wq{j}, i32 0, i32 3, i32 1)")
  for r in range(rows):
    add(f"  %xr{r} = mul i64 %K, {r}\n  %xo{r} = add i64 %xr{r}, %k")
    add(f"  %xp{r} = getelementptr i16, ptr %x, i64 %xo{r}")
    add(f"  %xv{r} = load <32 x bfloat>, ptr %xp{r}, align 2")
    for j in range(cols):
      add(f"  %na{r}_{j} = call <16 x float> {_DP}(<16 x float> %a{r}_{j}, "
          f"<32 x bfloat> %wv{j}, <32 x bfloat> %xv{r})")
  add("  %knext = add i64 %k, 32\n  %kc = icmp slt i64 %knext, %K")
  add("  br i1 %kc, label %kloop, label %store")
  add("store:")
  # Reduction tree: pairs of vectors holding G sums of W lanes each become one vector
  # of 2G sums of W/2 lanes (first halves + second halves), keeping the order.
  vs, width, level = [f"%n{a}" for a in acc], 16, 0
  while len(vs) > 1:
    groups, half, nxt = 16 // width, width // 2, []
    first = [g * width + t for g in range(groups) for t in range(half)]
    second = [i + half for i in first]
    for p in range(0, len(vs), 2):
      t = f"%t{level}_{p}"
      for suffix, lanes in (("a", first), ("b", second)):
        idx = ", ".join(f"i32 {i}" for i in lanes + [16 + i for i in lanes])
        add(f"  {t}{suffix} = shufflevector <16 x float> {vs[p]}, <16 x float> "
            f"{vs[p + 1]}, <16 x i32> <{idx}>")
      add(f"  {t} = fadd <16 x float> {t}a, {t}b")
      nxt.append(t)
    vs, width, level = nxt, half, level + 1
  for r in range(rows):
    idx = ", ".join(f"i32 {r * cols + j}" for j in range(cols))
    add(f"  %o{r} = shufflevector <16 x float> {vs[0]}, <16 x float> poison, "
        f"<{cols} x i32> <{idx}>")
    add(f"  %yr{r} = mul i64 %ldy, {r}\n  %yc{r} = add i64 %yr{r}, %n")
    add(f"  %yp{r} = getelementptr float, ptr %y, i64 %yc{r}")
    add(f"  store <{cols} x float> %o{r}, ptr %yp{r}, align 4")
  return "\n".join(out + _close(cols))


def _kp_ir(name: str, rows: int) -> str:
  """The packed kernel (see the module docstring); K even, N a multiple of 16."""
  acc = [f"a{r}" for r in range(rows)]
  out = _loops(name, rows, KP_STRIP, acc)
  add = out.append
  # Strip n / 16 starts at element (n / 16) * K * 16 = n * K; pair k at 32 k after it.
  add("  %so = mul i64 %n, %K\n  %kk = shl i64 %k, 1\n  %ko = shl i64 %k, 5")
  add("  %wo = add i64 %so, %ko\n  %wp = getelementptr i16, ptr %w, i64 %wo")
  add("  %wv = load <32 x bfloat>, ptr %wp, align 2")
  add(f"  %q = getelementptr i16, ptr %wp, i64 {KP_PREFETCH}")
  # Into L2 (`prefetcht1`). A non-temporal `prefetchnta` was meant to keep the KV
  # cache in the caches, but a step streams ~270 MB of weights through them anyway,
  # and the 16-row SmolLM2-135M call ran 8-12% slower with it (docs/benchmarks.md).
  add("  call void @llvm.prefetch.p0(ptr %q, i32 0, i32 2, i32 1)")
  for r in range(rows):
    out.extend(_x_pair(r))
    add(f"  %na{r} = call <16 x float> {_DP}(<16 x float> %a{r}, <32 x bfloat> %wv, "
        f"<32 x bfloat> %xf{r})")
  add("  %knext = add i64 %k, 1\n  %k2 = lshr i64 %K, 1\n  %kc = icmp slt i64 %knext, %k2")
  add("  br i1 %kc, label %kloop, label %store")
  add("store:")
  for r in range(rows):
    add(f"  %yr{r} = mul i64 %ldy, {r}\n  %yc{r} = add i64 %yr{r}, %n")
    add(f"  %yp{r} = getelementptr float, ptr %y, i64 %yc{r}")
    add(f"  store <16 x float> %na{r}, ptr %yp{r}, align 4")
  return "\n".join(out + _close(KP_STRIP))


@functools.cache
def compile_kernels() -> tuple[int, ...] | str:
  """The addresses of the kn, nk and kp kernels (kp at each of `KP_ROWS`) and kn at
  `KN_SMALL_ROWS` rows, compiled for this host; or, where they cannot run here, a
  sentence saying why."""
  global _engine
  features = llvm.get_host_cpu_features().flatten()
  if "+avx512bf16" not in features.split(","):
    return "the CPU has no AVX-512 BF16 (vdpbf16ps)"
  try:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    kps = [_kp_ir(f"kp{r}", r) for r in KP_ROWS]
    mod = llvm.parse_assembly("\n".join([_DECLS, _kn_ir(KN_ROWS), _nk_ir(NK_ROWS, NK_COLS),
                                         *kps, _kn_ir(KN_SMALL_ROWS, "kn4")]))
    mod.verify()
    tm = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=features, opt=3)
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
    pb.getModulePassManager().run(mod, pb)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    names = ["kn", "nk", *(f"kp{r}" for r in KP_ROWS), "kn4"]
    addresses = tuple(engine.get_function_address(n) for n in names)
  except Exception as e:  # noqa: BLE001 (an LLVM without the intrinsic, say)
    return f"LLVM could not build the bf16 GEMM kernels: {type(e).__name__}: {e}"
  _engine = engine
  return addresses
