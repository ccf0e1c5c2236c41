"""Regenerates the golden fixtures: real Pallas kernels exported by pallasvm.

Each case below builds a kernel with ordinary Pallas code and fixed-seed
inputs; `export_kernels(..., with_io=True)` writes `<case>/kernel.json` (the
interchange, format/kernel.fbs) together with `input_<i>.npy` (the
pallas_call operands, scalar prefetch first) and `expected_<i>.npy` (its
results under JAX's TPU interpret mode).

Run from the repository root (see README.md next to this file):

  .venv/bin/python tests/golden/generate.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import shutil
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tools"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import pallas as pl  # noqa: E402
from jax.experimental.pallas import tpu as pltpu  # noqa: E402
from jax.experimental.pallas.ops.tpu import matmul as tpu_matmul  # noqa: E402

from pallasvm import export_kernels  # noqa: E402

CASES = {}


def case(build):
  """Registers `build() -> (fn, args)` as the case named after it."""
  CASES[build.__name__] = build
  return build


def f32(rng, *shape, scale=1.0):
  return jnp.asarray(rng.standard_normal(shape).astype(np.float32) * scale)


def bf16(rng, *shape):
  return jnp.asarray(rng.standard_normal(shape).astype(np.float32)).astype(
      jnp.bfloat16)


def like(x):
  return jax.ShapeDtypeStruct(x.shape, x.dtype)


# --- Cases ------------------------------------------------------------------


@case
def add_vectors():
  # The Pallas quickstart kernel: no grid, whole arrays as blocks.
  def kernel(x_ref, y_ref, o_ref):
    o_ref[...] = x_ref[...] + y_ref[...]

  def fn(x, y):
    return pl.pallas_call(kernel, out_shape=like(x))(x, y)

  rng = np.random.RandomState(0)
  return fn, (f32(rng, 8), f32(rng, 8))


@case
def add_one_grid_1d():
  # 100 grid steps of one element each: the interpret-mode overhead benchmark.
  def kernel(x_ref, y_ref, o_ref):
    o_ref[...] = x_ref[...] + y_ref[...]

  def fn(x, y):
    spec = pl.BlockSpec((1,), lambda i: (i,))
    return pl.pallas_call(kernel, out_shape=like(x), grid=(100,),
                          in_specs=[spec, spec], out_specs=spec)(x, y)

  rng = np.random.RandomState(1)
  return fn, (f32(rng, 100), f32(rng, 100))


@case
def elementwise_8x128():
  def kernel(x_ref, y_ref, o_ref):
    x, y = x_ref[...], y_ref[...]
    o_ref[...] = x * y + jnp.exp(-x) + jnp.tanh(y)

  def fn(x, y):
    spec = pl.BlockSpec((8, 128), lambda i: (i, 0))
    return pl.pallas_call(kernel, out_shape=like(x), grid=(16,),
                          in_specs=[spec, spec], out_specs=spec)(x, y)

  rng = np.random.RandomState(2)
  return fn, (f32(rng, 8 * 16, 128), f32(rng, 8 * 16, 128))


@case
def blockspec_partial_edge():
  # (10, 300) in (4, 128) blocks: a 3x3 grid whose last row and column of
  # blocks hang over the array's edge.
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...] * 2.0 + 1.0

  def fn(x):
    spec = pl.BlockSpec((4, 128), lambda i, j: (i, j))
    return pl.pallas_call(kernel, out_shape=like(x),
                          grid=(pl.cdiv(10, 4), pl.cdiv(300, 128)),
                          in_specs=[spec], out_specs=spec)(x)

  rng = np.random.RandomState(3)
  return fn, (f32(rng, 10, 300),)


@case
def blockspec_squeezed():
  # The leading block dimension is None (pl.Squeezed): the kernel sees (8, 128).
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...] * 3.0 - 1.0

  def fn(x):
    spec = pl.BlockSpec((None, 8, 128), lambda i: (i, 0, 0))
    return pl.pallas_call(kernel, out_shape=like(x), grid=(4,),
                          in_specs=[spec], out_specs=spec)(x)

  rng = np.random.RandomState(4)
  return fn, (f32(rng, 4, 8, 128),)


@case
def reduce_accumulate():
  # The grid docs' sum example: sum x over axis 0, the last (reduction) grid
  # axis, accumulating into an output block that stays resident.
  def kernel(x_ref, o_ref):
    @pl.when(pl.program_id(2) == 0)
    def _():
      o_ref[...] = jnp.zeros_like(o_ref)

    o_ref[...] += x_ref[...]

  def fn(x):
    n, rows, cols = x.shape
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((rows, cols), x.dtype),
        grid=(rows // 16, cols // 128, n),
        in_specs=[pl.BlockSpec((None, 16, 128), lambda i, j, k: (k, i, j))],
        out_specs=pl.BlockSpec((16, 128), lambda i, j, k: (i, j)),
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "arbitrary")),
    )(x)

  rng = np.random.RandomState(5)
  return fn, (f32(rng, 4, 32, 256),)


def _matmul(x, y):
  return tpu_matmul.matmul(x, y, block_shape=(128, 128), block_k=128)


@case
def matmul_f32():
  rng = np.random.RandomState(6)
  return _matmul, (f32(rng, 256, 256), f32(rng, 256, 256))


@case
def matmul_bf16():
  rng = np.random.RandomState(7)
  return _matmul, (bf16(rng, 256, 256), bf16(rng, 256, 256))


@case
def matmul_transposed_rhs():
  # x @ y.T on bf16 blocks with an f32 result, contracting dim 1 with dim 1.
  def kernel(x_ref, y_ref, o_ref):
    o_ref[...] = jax.lax.dot_general(
        x_ref[...], y_ref[...], (((1,), (1,)), ((), ())),
        preferred_element_type=jnp.float32)

  def fn(x, y):
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((x.shape[0], y.shape[0]), jnp.float32),
        grid=(x.shape[0] // 128, y.shape[0] // 128),
        in_specs=[pl.BlockSpec((128, 128), lambda i, j: (i, 0)),
                  pl.BlockSpec((128, 128), lambda i, j: (j, 0))],
        out_specs=pl.BlockSpec((128, 128), lambda i, j: (i, j)),
    )(x, y)

  rng = np.random.RandomState(8)
  return fn, (bf16(rng, 256, 128), bf16(rng, 256, 128))


@case
def fori_loop():
  # A running sum over the rows of each block, one dynamic pl.ds row per trip,
  # then a second loop that repeatedly halves and adds one.
  def kernel(x_ref, o_ref):
    def row(i, acc):
      acc = acc + x_ref[pl.ds(i, 1), :]
      o_ref[pl.ds(i, 1), :] = acc
      return acc

    jax.lax.fori_loop(0, 8, row, jnp.zeros((1, 128), jnp.float32))
    o_ref[...] = jax.lax.fori_loop(
        0, 5, lambda _, v: v * 0.5 + 1.0, o_ref[...])

  def fn(x):
    spec = pl.BlockSpec((8, 128), lambda i: (i, 0))
    return pl.pallas_call(kernel, out_shape=like(x), grid=(4,),
                          in_specs=[spec], out_specs=spec)(x)

  rng = np.random.RandomState(9)
  return fn, (f32(rng, 32, 128),)


@case
def scalar_prefetch():
  # Gathers blocks of rows by a prefetched permutation; the kernel also reads
  # the prefetched index from SMEM.
  def kernel(perm_ref, x_ref, o_ref):
    i = pl.program_id(0)
    o_ref[...] = x_ref[...] * 10.0 + perm_ref[i].astype(jnp.float32)

  def fn(perm, x):
    return pl.pallas_call(
        kernel,
        out_shape=like(x),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1,
            grid=(perm.shape[0],),
            in_specs=[pl.BlockSpec((8, 128), lambda i, perm: (perm[i], 0))],
            out_specs=pl.BlockSpec((8, 128), lambda i, perm: (i, 0)),
        ),
    )(perm, x)

  rng = np.random.RandomState(10)
  perm = jnp.asarray(rng.permutation(8).astype(np.int32))
  return fn, (perm, f32(rng, 64, 128))


@case
def int_ops():
  # Integer semantics that differ between languages: truncating vs flooring
  # division of negative numbers, arithmetic vs logical shifts, unsigned
  # wrap-around; plus bitwise ops, min/max, compare/select, iota, int->float.
  def kernel(x_ref, y_ref, s_ref, u_ref, o_div, o_rem, o_floordiv, o_mod,
             o_bits, o_unsigned, o_select, o_float):
    x, y, s, u = x_ref[...], y_ref[...], s_ref[...], u_ref[...]
    o_div[...] = jax.lax.div(x, y)
    o_rem[...] = jax.lax.rem(x, y)
    o_floordiv[...] = x // y
    o_mod[...] = x % y
    o_bits[...] = ((x << s) ^ (x >> s)) | (x & y)
    us = s.astype(jnp.uint32)
    o_unsigned[...] = (jax.lax.shift_right_logical(u, us) + u * 3) & ~(u >> 7)
    iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, 1) - 64
    o_select[...] = jnp.where(x > y, jnp.maximum(x, iota),
                              jnp.minimum(y, iota))
    o_float[...] = x.astype(jnp.float32) * 0.5 + u.astype(jnp.float32)

  def fn(x, y, s, u):
    i32 = jax.ShapeDtypeStruct(x.shape, jnp.int32)
    u32 = jax.ShapeDtypeStruct(x.shape, jnp.uint32)
    f32_ = jax.ShapeDtypeStruct(x.shape, jnp.float32)
    return pl.pallas_call(
        kernel, out_shape=(i32, i32, i32, i32, i32, u32, i32, f32_))(x, y, s, u)

  rng = np.random.RandomState(11)
  shape = (8, 128)
  x = rng.randint(-1000, 1001, shape).astype(np.int32)
  y = rng.randint(1, 51, shape).astype(np.int32) * rng.choice([-1, 1], shape)
  s = rng.randint(0, 32, shape).astype(np.int32)
  u = rng.randint(0, 2**32, shape, dtype=np.uint64).astype(np.uint32)
  return fn, tuple(jnp.asarray(a) for a in (x, y.astype(np.int32), s, u))


@case
def while_cond():
  # A while loop whose trip count depends on the data (halve until the block's
  # largest magnitude is at most 1), then a cond on the trip count's parity.
  def kernel(x_ref, o_ref, n_ref):
    def keep_going(carry):
      v, _ = carry
      return jnp.max(jnp.abs(v)) > 1.0

    def halve(carry):
      v, n = carry
      return v * 0.5, n + 1

    v, n = jax.lax.while_loop(keep_going, halve, (x_ref[...], jnp.int32(0)))
    o_ref[...] = jax.lax.cond(n % 2 == 0, lambda v: v + 1.0,
                              lambda v: v - 1.0, v)
    n_ref[...] = jnp.full(n_ref.shape, n, jnp.int32)

  def fn(x):
    spec = pl.BlockSpec((8, 128), lambda i: (i, 0))
    return pl.pallas_call(
        kernel,
        out_shape=(like(x), jax.ShapeDtypeStruct((4, 8, 128), jnp.int32)),
        grid=(4,),
        in_specs=[spec],
        out_specs=(spec, pl.BlockSpec((None, 8, 128), lambda i: (i, 0, 0))),
    )(x)

  rng = np.random.RandomState(12)
  scale = np.repeat(10.0 ** np.arange(4), 8)[:, None].astype(np.float32)
  return fn, (f32(rng, 32, 128) * scale,)


# --- Driver -----------------------------------------------------------------


def generate(name: str) -> list[pathlib.Path]:
  fn, args = CASES[name]()
  out_dir = HERE / name
  if out_dir.exists():
    shutil.rmtree(out_dir)
  return export_kernels(fn, *args, out_dir=out_dir, name="kernel",
                        with_io=True)


def validate(path: pathlib.Path, flatc: str, scratch: pathlib.Path):
  schema = REPO / "format" / "kernel.fbs"
  result = subprocess.run([flatc, "-b", "-o", str(scratch), str(schema),
                           str(path)], capture_output=True, text=True)
  if result.returncode != 0 or result.stderr.strip():
    raise SystemExit(f"flatc rejects {path}:\n{result.stderr}{result.stdout}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", nargs="+", choices=sorted(CASES),
                      help="regenerate only these cases")
  names = parser.parse_args().only or list(CASES)
  # Exported source paths are relative to the working directory.
  os.chdir(REPO)
  flatc = shutil.which("flatc")
  scratch = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / "pallasvm_golden"
  total = time.perf_counter()
  for name in names:
    start = time.perf_counter()
    paths = generate(name)
    if flatc:
      validate(paths[0], flatc, scratch)
    size = sum(p.stat().st_size for p in paths)
    print(f"{name:24s} {len(paths)} files, {size / 1024:6.1f} KiB,"
          f" {time.perf_counter() - start:5.2f} s")
  print(f"done in {time.perf_counter() - total:.1f} s"
        + ("" if flatc else " (flatc not found: not validated)"))


if __name__ == "__main__":
  main()
