"""The first call of a kernel through the JAX bridge, split into pallasvm's
share and JAX's, each in a fresh process:

  - export: the exporter walking the kernel's jaxprs (export_pallas_call),
  - compile: the compiler, or reading the module from the disk cache,
  - grid order: the order interpret mode visits the grid in (random_seed
    permutations of `parallel` dimensions),
  - set-up: the first execution's extra time over a warm one (the FFI
    handler loads the module, makes its driver and buffers),
  - JAX: tracing and lowering outside the bridge's rule, and XLA's compile.

Two kernels: the 100-step one-element add and ops.tpu.flash_attention
(1x2x256x128, causal, f32), each cold (an empty module cache) and then
from the disk cache (a second process, same cache directory).

  .venv/bin/python bench/cold_start.py [--repeat N]

Prints a Markdown table (medians over N process pairs; default 3).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent

CHILD = r"""
import json, sys, time
t_import = time.perf_counter()
import numpy as np
import jax, jax.numpy as jnp
from jax.experimental import pallas as pl
import pallasvm
from pallasvm import bridge, export

shares = {"export": 0.0, "compile": 0.0, "grid order": 0.0}
def timed(name, f):
  def g(*a, **k):
    t = time.perf_counter()
    try:
      return f(*a, **k)
    finally:
      shares[name] += time.perf_counter() - t
  return g
export.export_pallas_call = timed("export", export.export_pallas_call)
bridge.compile_interchange = timed("compile", bridge.compile_interchange)
bridge._grid_coordinates = timed("grid order", bridge._grid_coordinates)

which = sys.argv[1]
if which == "add":
  def kernel(x_ref, y_ref, o_ref):
    o_ref[...] = x_ref[...] + y_ref[...]
  def fn(x, y):
    spec = pl.BlockSpec((1,), lambda i: (i,))
    return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
                          grid=(100,), in_specs=[spec, spec], out_specs=spec)(x, y)
  args = (jnp.ones((100,), jnp.float32), jnp.ones((100,), jnp.float32))
else:
  from jax.experimental.pallas.ops.tpu import flash_attention as fa
  def fn(q, k, v):
    return fa.flash_attention(q, k, v, causal=True, sm_scale=128 ** -0.5)
  x = jax.random.normal(jax.random.key(0), (1, 2, 256, 128), jnp.float32)
  args = (x, x, x)
jax.block_until_ready(args)
pallasvm.install()
t0 = time.perf_counter()
lowered = jax.jit(fn).lower(*args)
t1 = time.perf_counter()
compiled = lowered.compile()
t2 = time.perf_counter()
jax.block_until_ready(compiled(*args))
t3 = time.perf_counter()
warm = []
for _ in range(5):
  s = time.perf_counter()
  jax.block_until_ready(compiled(*args))
  warm.append(time.perf_counter() - s)
warm = sorted(warm)[2]
st = pallasvm.stats()
out = dict(shares)
out["set-up"] = max(0.0, (t3 - t2) - warm)
out["pallasvm"] = sum(shares.values()) + out["set-up"]
out["JAX"] = (t1 - t0) - sum(shares.values()) + (t2 - t1)
out["first call"] = t3 - t0
out["disk_cache_hits"] = st["disk_cache_hits"]
out["lowerings"] = st["lowerings"]
print(json.dumps(out))
"""

COLUMNS = ["export", "compile", "grid order", "set-up", "pallasvm", "JAX",
           "first call"]


def child(which: str, cache_dir: str) -> dict:
  env = dict(os.environ, PALLASVM_CACHE_DIR=cache_dir,
             PYTHONPATH=str(REPO / "tools"))
  env.pop("PALLASVM_NO_CACHE", None)
  lib = REPO / "build" / "tools" / "jax_bridge" / "libpallasvm_xla.so"
  env.setdefault("PALLASVM_LIBRARY", str(lib))
  out = subprocess.run([sys.executable, "-c", CHILD, which], env=env,
                       capture_output=True, text=True, timeout=600)
  if out.returncode != 0:
    raise RuntimeError(out.stderr.strip().splitlines()[-1])
  r = json.loads(out.stdout.strip().splitlines()[-1])
  if r["lowerings"] < 1:
    raise RuntimeError(f"{which}: pallasvm lowered nothing")
  return r


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--repeat", type=int, default=3)
  a = p.parse_args()
  rows = []
  for which, label in (("add", "100-step add"),
                       ("flash", "flash_attention 1x2x256x128 causal")):
    runs = {"cold": [], "disk cache": []}
    for _ in range(a.repeat):
      with tempfile.TemporaryDirectory() as d:
        cold = child(which, d)
        warm = child(which, d)
        if cold["disk_cache_hits"] != 0 or warm["disk_cache_hits"] < 1:
          raise RuntimeError(f"{which}: cache hits {cold['disk_cache_hits']}"
                             f" then {warm['disk_cache_hits']}")
        runs["cold"].append(cold)
        runs["disk cache"].append(warm)
    for mode, rs in runs.items():
      med = {c: statistics.median(r[c] for r in rs) for c in COLUMNS}
      rows.append((label, mode, med))
  print("| kernel | start | " + " | ".join(COLUMNS) + " |")
  print("|---|---|" + "---|" * len(COLUMNS))
  for label, mode, med in rows:
    print(f"| {label} | {mode} | " +
          " | ".join(f"{med[c] * 1e3:.1f} ms" for c in COLUMNS) + " |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
