"""Side-by-side timing of one workload three ways, in one run:

  - JAX's TPU interpret mode (pl.pallas_call(..., interpret=InterpretParams())),
  - XLA:CPU computing the same thing directly with jnp,
  - pallasvm through its C++ API (build/bench/kernels_bench, same kernel
    exported from JAX by bench/export_bench_kernels.py).

Run from the repository root after building:

  .venv/bin/python bench/compare.py

This is the first workload of the comparison harness; it prints a table of
times and ratios.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.experimental import pallas as pl  # noqa: E402
from jax.experimental.pallas import tpu as pltpu  # noqa: E402


def best_of(fn, repeats: int, number: int) -> float:
  """Best mean seconds per call over `repeats` batches of `number` calls."""
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(number):
      jax.block_until_ready(fn())
    best = min(best, (time.perf_counter() - start) / number)
  return best


def add_one_100():
  def kernel(x_ref, y_ref, o_ref):
    o_ref[...] = x_ref[...] + y_ref[...]

  spec = pl.BlockSpec((1,), lambda i: (i,))
  x = jnp.arange(100, dtype=jnp.float32)
  y = jnp.ones(100, jnp.float32)
  interpret = jax.jit(lambda x, y: pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype), grid=(100,),
      in_specs=[spec, spec], out_specs=spec,
      interpret=pltpu.InterpretParams())(x, y))
  direct = jax.jit(lambda x, y: x + y)
  return ("add_one_100", "BM_AddOne100Steps", 100,
          lambda: interpret(x, y), lambda: direct(x, y))


def pallasvm_seconds(bench_name: str) -> float:
  out = subprocess.run(
      [str(REPO / "build" / "bench" / "kernels_bench"),
       f"--benchmark_filter=^{bench_name}$", "--benchmark_repetitions=5",
       "--benchmark_report_aggregates_only=true", "--benchmark_format=json"],
      check=True, capture_output=True, text=True).stdout
  for b in json.loads(out)["benchmarks"]:
    if b["name"].endswith("_median"):
      scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
      return b["real_time"] * scale
  raise RuntimeError(f"no median for {bench_name}")


def main():
  print(f"jax {jax.__version__}, backend {jax.default_backend()}")
  rows = []
  for workload in (add_one_100,):
    name, bench, steps, interpret, direct = workload()
    print(f"{name}: JAX interpret mode ...", flush=True)
    t_interp = best_of(interpret, repeats=3, number=2)
    print(f"{name}: XLA:CPU direct ...", flush=True)
    t_direct = best_of(direct, repeats=5, number=1000)
    print(f"{name}: pallasvm C++ API ...", flush=True)
    t_vm = pallasvm_seconds(bench)
    rows.append((name, steps, t_interp, t_direct, t_vm))
  print()
  print("| workload | grid steps | JAX interpret | XLA:CPU jnp | pallasvm C++ |"
        " interpret / pallasvm | XLA / pallasvm |")
  print("|---|---|---|---|---|---|---|")
  for name, steps, ti, td, tv in rows:
    print(f"| {name} | {steps} | {ti * 1e3:.1f} ms | {td * 1e6:.1f} µs | "
          f"{tv * 1e6:.1f} µs | {ti / tv:,.0f}x | {td / tv:.2f}x |")


if __name__ == "__main__":
  sys.exit(main())
