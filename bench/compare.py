"""Side-by-side timing of Pallas TPU kernels four ways, in one run:

  - JAX's TPU interpret mode (pl.pallas_call(..., interpret=InterpretParams())),
  - pallasvm through the JAX bridge (`with pallasvm.enabled():`, inside
    jax.jit: XLA FFI custom call),
  - pallasvm through its C++ API (build/bench/kernels_bench, the same kernel
    exported from JAX by bench/export_bench_kernels.py),
  - XLA:CPU computing the same thing directly with jnp.

Workloads: the 100-step one-element add, an 8x128 f32 elementwise kernel over
1024 steps, ops.tpu.matmul at 1024^3 f32 and bf16 (256 blocks), ops.tpu
flash_attention forward (batch 1, 4 heads, sequence 2048, head dim 128), and
the memory model's: a manually double-buffered DMA copy (256 8x128 blocks),
an emit_pipeline matmul (512^3 f32) and ops.tpu.paged_attention decode
(batch 8, 512 tokens).

Run from the repository root after building (and after
`.venv/bin/python bench/export_bench_kernels.py` if kernels changed):

  .venv/bin/python bench/compare.py [--only NAME,...] [--interpret-timeout S]
  .venv/bin/python bench/compare.py --quick   # a smoke check, about 2 minutes

(./setup.sh, or tools/install_deps.sh --bench, installs matplotlib for the
chart from bench/requirements.txt.)

Writes bench/RESULTS.md (table, machine, versions, commit, command) and
bench/results.png. A variant that fails is recorded as "fails: <first line of
the error>" and the run continues.

Method: every time is the MEDIAN over several repetitions, after warm-up
calls (which also compile). Fast variants (XLA, bridge) are timed in
interleaved rounds so that machine noise hits both alike; each round is a
batch of calls sized to take >= ~0.1 s, and the per-call mean of a batch is
one sample. The C++ API figure is Google Benchmark's median of 5
repetitions (`--benchmark_repetitions=5`), run right after. JAX interpret
mode runs in a child process (so it can be given a timeout) on the full
problem: 1 warm-up call, then several timed calls (fewer for the slow
workloads); if it exceeds --interpret-timeout, the figure is instead
extrapolated from a smaller grid of the same kernel (same block shapes, so
the same work per grid step) scaled by the ratio of grid steps, and marked
as extrapolated in the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tools"))

import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.experimental import pallas as pl  # noqa: E402
from jax.experimental.pallas import tpu as pltpu  # noqa: E402

import export_bench_kernels as ebk  # noqa: E402


# ----------------------------------------------------------------------------
# Workloads


@dataclasses.dataclass
class Workload:
  name: str
  label: str
  steps: int                 # grid steps of the full problem
  bench: str | None          # kernels_bench benchmark name (None: none)
  build: object              # () -> (pallas fn, example args); from ebk
  reference: object          # jnp computation of the same thing
  interpret_calls: int       # timed interpret-mode calls (after 1 warm-up)
  small_build: object = None  # smaller grid of the same kernel, for
  small_steps: int = 0        # extrapolation if the full one times out


def _attention_ref(q, k, v):
  s = jnp.einsum("bhqd,bhkd->bhqk", q, k) * (q.shape[-1] ** -0.5)
  return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v)


def _paged_ref(q, k_pages, v_pages, lengths, page_indices):
  """Dense attention over each sequence's pages, masked to its length. The
  kernel rounds the K and V pages it loads to bfloat16 (its
  `_maybe_dequantize` without scales), so the reference does too."""
  batch, heads, head_dim = q.shape
  kv_heads = k_pages.shape[0]

  def gather(pages):
    x = pages[:, page_indices].reshape(kv_heads, batch, -1, head_dim)
    return x.astype(jnp.bfloat16).astype(jnp.float32)
  k, v = gather(k_pages), gather(v_pages)
  qg = q.reshape(batch, kv_heads, heads // kv_heads, head_dim)
  s = jnp.einsum("bkgd,kbtd->bkgt", qg, k)
  mask = jnp.arange(k.shape[2])[None, :] < lengths[:, None]
  s = jnp.where(mask[:, None, None, :], s, -jnp.inf)
  o = jnp.einsum("bkgt,kbtd->bkgd", jax.nn.softmax(s, axis=-1), v)
  return o.reshape(batch, heads, head_dim)


def _identity_plus_one(x):
  return x + 1.0


WORKLOADS = [
    Workload("add_one_100", "100-step one-element add (f32)", 100,
             "BM_AddOne100Steps", ebk.add_one_100, lambda x, y: x + y, 5),
    Workload("elementwise_8x128_1024", "8x128 f32 x*y+1, 1024 steps", 1024,
             "BM_Elementwise8x128x1024Steps", ebk.elementwise_8x128_1024,
             lambda x, y: x * y + 1.0, 3),
    Workload("matmul_1024_f32", "ops.tpu.matmul 1024^3 f32, 256 blocks", 64,
             "BM_Matmul1024F32", ebk.matmul_1024_f32, jnp.dot, 3,
             lambda: _small_matmul(jnp.float32), 4),
    Workload("matmul_1024_bf16", "ops.tpu.matmul 1024^3 bf16, 256 blocks", 64,
             "BM_Matmul1024BF16", ebk.matmul_1024_bf16,
             lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32
                                  ).astype(jnp.bfloat16), 3,
             lambda: _small_matmul(jnp.bfloat16), 4),
    Workload("flash_attention_fwd",
             "ops.tpu.flash_attention fwd, 1x4x2048x128 f32", 1024,
             "BM_FlashAttentionFwd", ebk.flash_attention_fwd, _attention_ref,
             1, lambda: ebk.flash_attention_fwd((1, 4, 256, 128)), 16),
    # The memory model: manual DMAs, emit_pipeline and paged attention.
    Workload("double_buffered_copy_256",
             "double-buffered manual DMA copy, 256 8x128 f32 blocks", 256,
             "BM_DoubleBufferedCopy", ebk.double_buffered_copy_256,
             _identity_plus_one, 3),
    Workload("emit_pipeline_matmul_512",
             "emit_pipeline matmul 512^3 f32, 128 blocks", 64,
             "BM_EmitPipelineMatmul512", ebk.emit_pipeline_matmul_512,
             jnp.dot, 1),
    Workload("core_map_add_one_2_cores",
             "core_map add_one on 2 cores, emit_pipeline, 256 8x128 f32 blocks",
             256, None, ebk.core_map_add_one_2_cores, _identity_plus_one, 3),
    Workload("paged_attention_decode",
             "ops.tpu.paged_attention decode, batch 8, 128 tokens, f32", 16,
             "BM_PagedAttentionDecode", ebk.paged_attention_decode, _paged_ref,
             3),
]


def _small_matmul(dtype):
  """256 x 1024 @ 1024 x 256 with the same 256 blocks: grid (1, 1, 4)."""
  def fn(x, y):
    return ebk.tpu_matmul.matmul(x, y, block_shape=(256, 256), block_k=256)
  return fn, (jnp.zeros((256, 1024), dtype), jnp.zeros((1024, 256), dtype))


def random_like(args, seed=0):
  """Floating-point arguments replaced by N(0, 1) noise; integer ones
  (indices, lengths) kept as the workload made them."""
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.standard_normal(a.shape, np.float32)
                           ).astype(a.dtype)
               if jnp.issubdtype(a.dtype, jnp.floating) else a for a in args)


class interpret_mode:
  """Makes every pl.pallas_call (also inside ops.tpu.*) use JAX's TPU
  interpret mode, and pl.kernel / pl.core_map (through
  pltpu.force_tpu_interpret_mode)."""

  def __enter__(self):
    self.force = pltpu.force_tpu_interpret_mode(pltpu.InterpretParams())
    self.force.__enter__()
    self.orig = pl.pallas_call
    orig = self.orig

    def patched(*a, **k):
      k["interpret"] = pltpu.InterpretParams()
      return orig(*a, **k)
    pl.pallas_call = patched
    jax.clear_caches()

  def __exit__(self, *exc):
    pl.pallas_call = self.orig
    self.force.__exit__(*exc)
    jax.clear_caches()


# ----------------------------------------------------------------------------
# Timing


def first_line(e: BaseException) -> str:
  text = str(e).strip()
  line = text.splitlines()[0] if text else ""
  return f"{type(e).__name__}: {line}"[:300]


def batch_size(fn, target=0.1, cap=10000) -> int:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  t = time.perf_counter() - start
  return max(1, min(cap, int(target / max(t, 1e-7))))


def time_batch(fn, number) -> float:
  """Per-call seconds, each call waited for before the next is made, as a
  test or a host program uses a result. Dispatching a batch and waiting
  once would queue the calls: each queued call holds a fresh output buffer,
  and for megabyte outputs first-touch page faults on those buffers then
  dominate (the double-buffered copy measured 0.67 ms per call that way
  against 0.23 ms waited for, and 0.21 ms through the C++ API)."""
  start = time.perf_counter()
  for _ in range(number):
    jax.block_until_ready(fn())
  return (time.perf_counter() - start) / number


def time_interleaved(fns: dict, rounds: int) -> dict:
  """Median per-call seconds of each fn, timed in interleaved rounds."""
  numbers = {k: batch_size(f) for k, f in fns.items()}
  samples = {k: [] for k in fns}
  for _ in range(rounds):
    for k, f in fns.items():
      samples[k].append(time_batch(f, numbers[k]))
  return {k: statistics.median(v) for k, v in samples.items()}


def pallasvm_cpp_seconds(bench_name: str, repetitions: int = 5) -> float:
  proc = subprocess.run(
      [str(REPO / "build" / "bench" / "kernels_bench"),
       f"--benchmark_filter=^{bench_name}$",
       f"--benchmark_repetitions={repetitions}",
       "--benchmark_report_aggregates_only=true", "--benchmark_format=json"],
      capture_output=True, text=True)
  try:
    report = json.loads(proc.stdout)
  except json.JSONDecodeError:
    raise RuntimeError(
        f"kernels_bench exit {proc.returncode}: {proc.stderr.strip()}")
  for b in report["benchmarks"]:
    if b.get("error_occurred"):
      raise RuntimeError(b.get("error_message", "error"))
  for b in report["benchmarks"]:
    if b["name"].endswith("_median"):
      scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
      return b["real_time"] * scale
  raise RuntimeError(f"no median for {bench_name} (is it in kernels_bench?)")


def interpret_child(name: str, small: bool, calls: int, out_path: str):
  """Runs in a child process: times `calls` interpret-mode calls after one
  warm-up, writes {"times": [...]} to out_path."""
  w = next(w for w in WORKLOADS if w.name == name)
  fn, args = (w.small_build if small else w.build)()
  args = random_like(args)
  with interpret_mode():
    f = jax.jit(fn)
    times = []
    for i in range(calls + 1):
      start = time.perf_counter()
      jax.block_until_ready(f(*args))
      t = time.perf_counter() - start
      what = "warm-up (compile + run)" if i == 0 else f"timed call {i}/{calls}"
      print(f"    interpret mode{' (small grid)' if small else ''} {what}: "
            f"{t:.3f} s", flush=True)
      if i:
        times.append(t)
  pathlib.Path(out_path).write_text(json.dumps({"times": times}))


def run_interpret(w: Workload, small: bool, timeout: float) -> float:
  with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
    out_path = f.name
  try:
    subprocess.run(
        [sys.executable, __file__, "--interpret-child", w.name,
         "--small" if small else "--full", "--calls",
         str(w.interpret_calls), "--out", out_path],
        check=True, timeout=timeout, stderr=subprocess.PIPE, text=True)
    return statistics.median(json.loads(pathlib.Path(out_path).read_text())
                             ["times"])
  except subprocess.CalledProcessError as e:
    lines = [l for l in e.stderr.strip().splitlines() if l.strip()]
    raise RuntimeError(lines[-1] if lines else f"exit {e.returncode}")
  finally:
    os.unlink(out_path)


@dataclasses.dataclass
class Result:
  seconds: float | None = None
  error: str | None = None
  note: str = ""            # e.g. extrapolation
  max_err: float | None = None  # max |out - XLA| / max |XLA|


def measure(w: Workload, args, rounds: int, interpret_timeout: float,
            quick: bool = False) -> dict:
  res = {k: Result() for k in ("interpret", "xla", "bridge", "cpp")}
  fn, example = w.build()
  args = random_like(example)

  print(f"  [{w.name}] XLA:CPU jnp: compiling ...", flush=True)
  xla = jax.jit(w.reference)
  want = np.asarray(jax.block_until_ready(xla(*args))).astype(np.float32)
  fns = {"xla": lambda: xla(*args)}

  import pallasvm  # tools/pallasvm
  pallasvm.install()
  try:
    print(f"  [{w.name}] pallasvm JAX bridge: compiling ...", flush=True)
    try:
      bridge = jax.jit(fn)
      got = np.asarray(jax.block_until_ready(bridge(*args))).astype(np.float32)
      res["bridge"].max_err = float(np.max(np.abs(got - want)) /
                                    max(np.max(np.abs(want)), 1e-30))
      fns["bridge"] = lambda: bridge(*args)
    except Exception as e:  # pylint: disable=broad-except
      res["bridge"].error = first_line(e)
      print(f"  [{w.name}] pallasvm JAX bridge fails: {res['bridge'].error}",
            flush=True)
    print(f"  [{w.name}] timing {' and '.join(fns)} ({rounds} interleaved "
          "rounds) ...", flush=True)
    for k, t in time_interleaved(fns, rounds).items():
      res[k].seconds = t
      print(f"  [{w.name}]   {k}: {fmt(t)}", flush=True)
  finally:
    pallasvm.uninstall()

  print(f"  [{w.name}] pallasvm C++ API ({w.bench}, 5 repetitions) ...",
        flush=True)
  try:
    if w.bench is None:
      raise RuntimeError("no C++ benchmark (the exporter does not export"
                         " core_map kernels yet)")
    res["cpp"].seconds = pallasvm_cpp_seconds(w.bench, 2 if quick else 5)
    print(f"  [{w.name}]   cpp: {fmt(res['cpp'].seconds)}", flush=True)
  except Exception as e:  # pylint: disable=broad-except
    res["cpp"].error = first_line(e)
    print(f"  [{w.name}] pallasvm C++ API fails: {res['cpp'].error}",
          flush=True)

  print(f"  [{w.name}] JAX interpret mode (full grid, {w.steps} steps, "
        f"timeout {interpret_timeout:.0f} s) ...", flush=True)
  try:
    if quick and w.small_build is not None:
      raise subprocess.TimeoutExpired("interpret mode", 0)  # --quick: small
    res["interpret"].seconds = run_interpret(w, False, interpret_timeout)
    res["interpret"].note = (f"median of {w.interpret_calls} calls"
                             if w.interpret_calls > 1 else "1 call")
  except subprocess.TimeoutExpired:
    if w.small_build is None:
      res["interpret"].error = f"timed out after {interpret_timeout:.0f} s"
    else:
      print(f"  [{w.name}] timed out; extrapolating from a {w.small_steps}-"
            "step grid ...", flush=True)
      try:
        t = run_interpret(w, True, interpret_timeout)
        res["interpret"].seconds = t * w.steps / w.small_steps
        res["interpret"].note = (
            f"EXTRAPOLATED: {fmt(t)} on a {w.small_steps}-step grid of the "
            f"same kernel x {w.steps}/{w.small_steps}")
      except Exception as e:  # pylint: disable=broad-except
        res["interpret"].error = first_line(e)
  except Exception as e:  # pylint: disable=broad-except
    res["interpret"].error = first_line(e)
  r = res["interpret"]
  print(f"  [{w.name}]   interpret: "
        f"{fmt(r.seconds) if r.error is None else 'fails: ' + r.error} "
        f"{r.note}", flush=True)
  return res


# ----------------------------------------------------------------------------
# Report


def fmt(t: float | None) -> str:
  if t is None:
    return "-"
  if t >= 1:
    return f"{t:.2f} s"
  if t >= 1e-3:
    return f"{t * 1e3:.2f} ms"
  return f"{t * 1e6:.1f} µs"


def cell(r: Result) -> str:
  if r.error is not None:
    return f"fails: {r.error.replace('|', '/')}"
  s = fmt(r.seconds)
  if r.note.startswith("EXTRAPOLATED"):
    s += " (extrapolated†)"
  return s


def ratio(a: Result, b: Result) -> str:
  if a.seconds is None or b.seconds is None:
    return "-"
  x = a.seconds / b.seconds
  return f"{x:,.0f}×" if x >= 100 else f"{x:.2f}×"


def sh(cmd: list[str]) -> str:
  try:
    return subprocess.run(cmd, capture_output=True, text=True,
                          cwd=REPO).stdout.strip()
  except OSError:
    return "?"


def machine() -> dict:
  lscpu = sh(["lscpu"])
  info = dict(l.split(":", 1) for l in lscpu.splitlines() if ":" in l)
  info = {k.strip(): v.strip() for k, v in info.items()}
  commit = sh(["git", "rev-parse", "HEAD"])
  dirty = sh(["git", "status", "--porcelain", "--untracked-files=no"])
  import jaxlib
  flags = set(info.get("Flags", "").split())
  isa = [name for flag, name in (("sse4_2", "SSE4.2"), ("avx2", "AVX2"),
                                 ("fma", "FMA"), ("avx512f", "AVX-512F"),
                                 ("avx512_bf16", "AVX-512 BF16"))
         if flag in flags]
  family = info.get("CPU family", "?")
  model = info.get("Model", "?")
  return {
      "cpu": info.get("Model name", platform.processor()),
      "cpu_id": f"vendor {info.get('Vendor ID', '?')}, family {family}, "
                f"model {model}",
      "isa": " + ".join(isa) or "none of SSE4.2, AVX2, FMA, AVX-512 listed",
      "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
      "cores": f"{info.get('CPU(s)', '?')} CPUs ({info.get('Core(s) per socket', '?')} "
               f"cores/socket x {info.get('Socket(s)', '?')} sockets, "
               f"{info.get('Thread(s) per core', '?')} threads/core); "
               f"os.cpu_count()={os.cpu_count()}",
      "date": datetime.datetime.now().astimezone().strftime(
          "%Y-%m-%d %H:%M %Z"),
      "jax": jax.__version__, "jaxlib": jaxlib.__version__,
      "commit": commit + (" (plus uncommitted changes)" if dirty else ""),
      "python": platform.python_version(),
  }


def bars(results) -> list[str]:
  out = []
  get = lambda name: next((r for w, r in results if w.name == name), None)

  def speedup(a, b):
    return (None if a.seconds is None or b.seconds is None
            else a.seconds / b.seconds)

  r = get("add_one_100")
  if r:
    s_int = speedup(r["interpret"], r["cpp"])
    s_xla = speedup(r["xla"], r["cpp"])
    ok = s_int is not None and s_xla is not None and s_int >= 1e4 and s_xla > 1
    out.append(
        f"- **100-step add** (>= 10,000× faster than interpret mode AND faster "
        f"than XLA:CPU `x + y`; C++ API): "
        f"{'MET' if ok else 'MISSED'} — {ratio(r['interpret'], r['cpp'])} vs "
        f"interpret, {ratio(r['xla'], r['cpp'])} vs XLA. Through the JAX "
        f"bridge: {ratio(r['interpret'], r['bridge'])} vs interpret, "
        f"{ratio(r['xla'], r['bridge'])} vs XLA.")
  r = get("matmul_1024_f32")
  if r:
    s = speedup(r["cpp"], r["xla"])
    sb = speedup(r["bridge"], r["xla"])
    ok = s is not None and s <= 2
    out.append(
        f"- **matmul 1024³ f32 within 2× of XLA `jnp.dot`** (C++ API): "
        f"{'MET' if ok else 'MISSED'} — pallasvm takes "
        f"{'-' if s is None else f'{s:.2f}×'} XLA's time (bridge: "
        f"{'-' if sb is None else f'{sb:.2f}×'}).")
  r = get("flash_attention_fwd")
  if r:
    best = min((r[k] for k in ("cpp", "bridge") if r[k].seconds is not None),
               key=lambda x: x.seconds, default=Result())
    s = speedup(r["interpret"], best)
    ok = s is not None and s >= 1000
    why = ""
    if best.seconds is None:
      why = f" (pallasvm fails: {r['cpp'].error or r['bridge'].error})"
    elif not ok and r["interpret"].seconds and r["xla"].seconds:
      # The two matmuls per head (q k^T and p v): 2 * 2 * S * S * D FLOP each
      # of B * H heads. What 1,000x would take, against what XLA reaches.
      flop = 4 * 1 * 4 * 2048 * 2048 * 128
      need = r["interpret"].seconds / 1000
      why = (f" (1,000× would be {need * 1e3:.1f} ms, i.e. "
             f"{flop / need / 1e9:,.0f} GFLOP/s for the workload's "
             f"{flop / 1e9:.1f} GFLOP of matmuls; XLA's own attention "
             f"reaches {flop / r['xla'].seconds / 1e9:,.0f} GFLOP/s here, "
             f"pallasvm {flop / best.seconds / 1e9:,.0f} GFLOP/s)")
    out.append(
        f"- **flash attention fwd >= 1,000× faster than interpret mode**: "
        f"{'MET' if ok else 'MISSED'} — "
        f"{'-' if s is None else f'{s:,.0f}×'}{why}.")
  return out


def write_report(results, meta, command, path_md, path_png):
  lines = [
      "# pallasvm vs JAX: side-by-side timings",
      "",
      f"Generated by `{command}` (bench/compare.py; method in its docstring "
      "and below).",
      "",
      f"- Machine: {meta['cpu']} ({meta.get('cpu_id', '?')}), "
      f"{meta['cores']}",
      f"- ISA (lscpu flags): {meta.get('isa', '?')}; load average at the "
      f"start: {meta.get('load', '?')}",
      f"- Date: {meta['date']}",
      f"- jax {meta['jax']}, jaxlib {meta['jaxlib']}, Python {meta['python']}",
      f"- pallasvm commit: {meta['commit']}",
      "",
      "| workload | grid steps | JAX TPU interpret mode | XLA:CPU jnp | "
      "pallasvm, JAX bridge (jit) | pallasvm, C++ API | interpret / bridge | "
      "interpret / C++ | XLA / bridge | XLA / C++ | bridge max rel. err vs XLA |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  notes = []
  for w, r in results:
    err = r["bridge"].max_err
    lines.append(
        f"| {w.label} | {w.steps} | {cell(r['interpret'])} | {cell(r['xla'])} "
        f"| {cell(r['bridge'])} | {cell(r['cpp'])} | "
        f"{ratio(r['interpret'], r['bridge'])} | "
        f"{ratio(r['interpret'], r['cpp'])} | {ratio(r['xla'], r['bridge'])} | "
        f"{ratio(r['xla'], r['cpp'])} | {'-' if err is None else f'{err:.1e}'} |")
    if r["interpret"].note:
      notes.append(f"- {w.label}: interpret mode {r['interpret'].note}.")
  lines += [
      "",
      "Ratios above 1 mean pallasvm is faster. Times are per call (one "
      "pallas_call = the whole grid; for XLA the whole jnp computation).",
      "",
      "## Performance bars",
      "",
      *bars(results),
      "",
      "## Method",
      "",
      "- XLA:CPU and the JAX bridge: `jax.jit`, warm-up call, then "
      "interleaved rounds (batches sized to >= 0.1 s, each call waited for "
      "with `jax.block_until_ready` before the next); the figure is the "
      "median over rounds of the per-call mean.",
      "- C++ API: `build/bench/kernels_bench --benchmark_filter=^NAME$ "
      "--benchmark_repetitions=5`, median real time; kernels exported by "
      "`bench/export_bench_kernels.py` (inputs: standard normal).",
      "- JAX interpret mode: `jax.jit` of the same function with every "
      "`pl.pallas_call` given `interpret=pltpu.InterpretParams()`, in a child "
      "process: 1 warm-up call (compiles), then the timed calls below, median. "
      "A figure marked † is extrapolated (see below); otherwise it is measured "
      "on the full problem.",
      *notes,
      "- The bridge's max relative error is max|pallasvm - XLA| / max|XLA| "
      "(a sanity check that the same thing is computed; XLA's bf16 matmul "
      "and the f32 accumulation orders differ).",
      "- The machine is shared; expect noise of 10-30% between runs.",
      "",
      f"![results]({path_png.name})",
      "",
  ]
  path_md.write_text("\n".join(lines))
  path_md.with_suffix(".json").write_text(json.dumps({
      "meta": meta, "command": command,
      "results": {w.name: {k: dataclasses.asdict(v) for k, v in r.items()}
                  for w, r in results}}, indent=1))
  plot(results, meta, path_png)


def plot(results, meta, path):
  try:
    import matplotlib
  except ImportError:
    raise SystemExit("compare.py: the chart needs matplotlib; install it with "
                     "`tools/install_deps.sh --bench` (./setup.sh does)")
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  kinds = [("interpret", "JAX TPU interpret mode", "#d62728"),
           ("xla", "XLA:CPU jnp", "#7f7f7f"),
           ("bridge", "pallasvm, JAX bridge (jit)", "#1f77b4"),
           ("cpp", "pallasvm, C++ API", "#2ca02c")]
  fig, ax = plt.subplots(figsize=(12, 6.5))
  n = len(results)
  width = 0.2
  ymin = min((r[k].seconds for _, r in results for k, *_ in kinds
              if r[k].seconds), default=1e-6)
  for j, (k, label, color) in enumerate(kinds):
    for i, (w, r) in enumerate(results):
      x = i + (j - 1.5) * width
      res = r[k]
      if res.seconds is None:
        ax.bar(x, ymin * 1.5, width, bottom=ymin / 3, color="white",
               edgecolor=color, hatch="xx")
        ax.text(x, ymin * 1.8, "fails", rotation=90, ha="center",
                va="bottom", fontsize=8, color=color)
        continue
      extrap = res.note.startswith("EXTRAPOLATED")
      ax.bar(x, res.seconds - ymin / 3, width, bottom=ymin / 3, color=color,
             hatch="//" if extrap else None,
             label=label if i == 0 else None)
      ax.text(x, res.seconds * 1.15, fmt(res.seconds) + ("†" if extrap else ""),
              rotation=90, ha="center", va="bottom", fontsize=7)
  ax.set_yscale("log")
  ax.set_ylim(ymin / 3, max((r[k].seconds or 0) for _, r in results
                            for k, *_ in kinds) * 2000)
  ax.set_xticks(range(n))
  ax.set_xticklabels([w.label.replace(", ", ",\n").replace(" 1024^3", "\n1024³")
                      for w, _ in results], fontsize=8)
  ax.set_ylabel("seconds per call (log scale, lower is better)")
  ax.set_title(f"pallasvm vs JAX — {meta['cpu']}, {os.cpu_count()} CPUs, "
               f"jax {meta['jax']}, {meta['date']}", fontsize=9)
  ax.legend(loc="upper center", ncol=4, fontsize=8)
  ax.grid(axis="y", which="major", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


# --quick's workloads: the per-grid-step ones and one DOT kernel.
QUICK_WORKLOADS = {"add_one_100", "elementwise_8x128_1024", "matmul_1024_f32"}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--only", help="comma-separated workload names")
  p.add_argument("--rounds", type=int, default=7,
                 help="interleaved timing rounds for XLA and the bridge")
  p.add_argument("--interpret-timeout", type=float, default=900,
                 help="seconds for the full-size interpret-mode run before "
                 "falling back to extrapolation from a smaller grid")
  p.add_argument("--quick", action="store_true",
                 help="a smoke check: the fast workloads only (unless --only "
                 "names others), 2 rounds, interpret mode on the small grid "
                 "(extrapolated), 2 C++ repetitions; writes to the temporary "
                 "directory unless --out-md/--out-png are given")
  p.add_argument("--out-md", default=None,
                 help="default bench/RESULTS.md")
  p.add_argument("--out-png", default=None,
                 help="default bench/results.png")
  p.add_argument("--report-from", metavar="JSON",
                 help="only rewrite RESULTS.md and the PNG from the .json a "
                 "previous run wrote next to RESULTS.md")
  p.add_argument("--interpret-child", help=argparse.SUPPRESS)
  p.add_argument("--small", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--calls", type=int, default=1, help=argparse.SUPPRESS)
  p.add_argument("--out", help=argparse.SUPPRESS)
  a = p.parse_args()
  out_dir = pathlib.Path(tempfile.gettempdir()) if a.quick else HERE
  if a.out_md is None:
    a.out_md = str(out_dir / ("RESULTS_quick.md" if a.quick else "RESULTS.md"))
  if a.out_png is None:
    a.out_png = str(out_dir / ("results_quick.png" if a.quick
                               else "results.png"))
  if a.quick:
    a.rounds = min(a.rounds, 2)
  if a.interpret_child:
    interpret_child(a.interpret_child, a.small, a.calls, a.out)
    return 0

  if a.report_from:
    saved = json.loads(pathlib.Path(a.report_from).read_text())
    results = [(w, {k: Result(**v) for k, v in saved["results"][w.name].items()})
               for w in WORKLOADS if w.name in saved["results"]]
    write_report(results, saved["meta"], saved["command"],
                 pathlib.Path(a.out_md), pathlib.Path(a.out_png))
    print(f"wrote {a.out_md} and {a.out_png}")
    return 0

  command = " ".join([".venv/bin/python", "bench/compare.py", *sys.argv[1:]])
  meta = machine()
  print(f"jax {meta['jax']}, jaxlib {meta['jaxlib']}, backend "
        f"{jax.default_backend()}; {meta['cpu']}; commit {meta['commit']}",
        flush=True)
  names = set(a.only.split(",")) if a.only else (
      QUICK_WORKLOADS if a.quick else None)
  todo = [w for w in WORKLOADS if names is None or w.name in names]
  results = []
  for i, w in enumerate(todo, 1):
    print(f"[{i}/{len(todo)}] {w.label}", flush=True)
    try:
      results.append((w, measure(w, None, a.rounds, a.interpret_timeout,
                                 a.quick)))
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      r = {k: Result(error=first_line(e))
           for k in ("interpret", "xla", "bridge", "cpp")}
      results.append((w, r))
  write_report(results, meta, command, pathlib.Path(a.out_md),
               pathlib.Path(a.out_png))
  print()
  print(pathlib.Path(a.out_md).read_text())
  print(f"wrote {a.out_md} and {a.out_png}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
