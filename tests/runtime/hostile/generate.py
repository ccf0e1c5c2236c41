"""Regenerates the hostile-input fixtures of the runtime tests: kernels that
are valid Pallas but ask the runtime for what it must refuse cleanly (a
`while` that never ends, a 1 TiB scratch buffer, a grid dimension of 2^31,
an output of 2^40 elements). Only `kernel.json` is written (no inputs or
expected outputs: JAX's interpret mode would hang or run out of memory on
them). tests/runtime/hostile_test.cc compiles and runs them.

Run from the repository root:

  .venv/bin/python tests/runtime/hostile/generate.py
"""

from __future__ import annotations

import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
sys.path.insert(0, str(REPO / "tools"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.experimental import pallas as pl  # noqa: E402
from jax.experimental.pallas import tpu as pltpu  # noqa: E402

from pallasvm import export_kernels  # noqa: E402

CASES = {}


def case(build):
  CASES[build.__name__] = build
  return build


def i32(*shape):
  return jax.ShapeDtypeStruct(shape, jnp.int32)


def f32(*shape):
  return jax.ShapeDtypeStruct(shape, jnp.float32)


@case
def endless_while():
  # o = x + r where r = n while r > 0 (r := max(r, 1)), n = x[0, 0]: ends at
  # once for n <= 0, never for n > 0. Grid (2,), parallel, for two cores.
  def kernel(x_ref, o_ref):
    n = x_ref[0, 0]
    r = jax.lax.while_loop(lambda r: r > 0, lambda r: jnp.maximum(r, 1), n)
    o_ref[...] = x_ref[...] + r

  def fn(x):
    return pl.pallas_call(
        kernel, out_shape=i32(16, 128), grid=(2,),
        in_specs=[pl.BlockSpec((8, 128), lambda i: (i, 0))],
        out_specs=pl.BlockSpec((8, 128), lambda i: (i, 0)),
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel",)))(x)
  return fn, (i32(16, 128),)


@case
def huge_scratch():
  # A 1 TiB VMEM scratch buffer (2^18 x 2^20 f32).
  def kernel(x_ref, o_ref, s_ref):
    s_ref[0:8, :128] = x_ref[...]
    o_ref[...] = s_ref[0:8, :128]

  def fn(x):
    return pl.pallas_call(
        kernel, out_shape=f32(8, 128),
        scratch_shapes=[pltpu.VMEM((2**18, 2**20), jnp.float32)])(x)
  return fn, (f32(8, 128),)


@case
def huge_grid():
  # A grid dimension of 2^31: program ids are int32.
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...]

  def fn(x):
    return pl.pallas_call(
        kernel, out_shape=f32(8, 128), grid=(2**31,),
        in_specs=[pl.BlockSpec((8, 128), lambda i: (0, 0))],
        out_specs=pl.BlockSpec((8, 128), lambda i: (0, 0)))(x)
  return fn, (f32(8, 128),)


@case
def huge_output():
  # An output of 2^40 f32 elements (4 TiB) in (1024, 1024) blocks.
  def kernel(x_ref, o_ref):
    o_ref[...] = jnp.broadcast_to(x_ref[0:1, 0:1], (1024, 1024))

  def fn(x):
    return pl.pallas_call(
        kernel, out_shape=f32(2**20, 2**20), grid=(1024, 1024),
        in_specs=[pl.BlockSpec((8, 128), lambda i, j: (0, 0))],
        out_specs=pl.BlockSpec((1024, 1024), lambda i, j: (i, j)))(x)
  return fn, (f32(8, 128),)


def main():
  os.chdir(REPO)  # exported source paths are relative to the repository
  for name, build in CASES.items():
    fn, args = build()
    export_kernels(fn, *args, out_dir=HERE / name, name="kernel")
    print(f"{name}: {HERE / name / 'kernel.json'}")


if __name__ == "__main__":
  main()
