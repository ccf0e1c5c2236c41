"""Regenerates the golden fixtures: real Pallas kernels exported by pallasvm.

Each case below builds a kernel with ordinary Pallas code and fixed-seed
inputs; `export_kernels(..., with_io=True)` writes `<case>/kernel.json` (the
interchange, format/kernel.fbs) together with `input_<i>.npy` (the
pallas_call operands, scalar prefetch first) and `expected_<i>.npy` (its
results under JAX's TPU interpret mode). Error cases, kernels on which
interpret mode raises, go to `errors/<case>/` with `jax_error.txt` in place
of expected outputs.

Run from the repository root (see README.md next to this file):

  .venv/bin/python tests/golden/generate.py [--only NAME ... | --errors]
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
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


ERROR_CASES = {}


def error_case(build):
  """Registers `build() -> (fn, args)` as the error case named after it."""
  ERROR_CASES[build.__name__] = build
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


@case
def bf16_elementwise():
  # bf16 in, bf16 arithmetic (each op rounds to bf16), bf16 out.
  def kernel(x_ref, y_ref, o_ref):
    x, y = x_ref[...], y_ref[...]
    a = x * y + x
    b = jnp.exp(x)
    o_ref[...] = jnp.where(x > y, jnp.maximum(a, b), a - b)

  def fn(x, y):
    spec = pl.BlockSpec((8, 128), lambda i: (i, 0))
    return pl.pallas_call(kernel, out_shape=like(x), grid=(4,),
                          in_specs=[spec, spec], out_specs=spec)(x, y)

  rng = np.random.RandomState(13)
  return fn, (bf16(rng, 32, 128), bf16(rng, 32, 128))


@case
def int8_matmul():
  # The shipped matmul kernel on int8: int8 x int8 dot with an int32
  # accumulator scratch, (64, 64) blocks, k in two steps of 128.
  def fn(x, y):
    return tpu_matmul.matmul(x, y, block_shape=(64, 64), block_k=128,
                             out_dtype=jnp.int32)

  rng = np.random.RandomState(14)
  x = rng.randint(-128, 128, (128, 256)).astype(np.int8)
  y = rng.randint(-128, 128, (256, 128)).astype(np.int8)
  return fn, (jnp.asarray(x), jnp.asarray(y))


@case
def transcendental():
  # One output per function; p > 0 is the domain of sqrt/rsqrt/log/pow,
  # h holds exact halves so that round's two tie rules differ.
  def kernel(p_ref, z_ref, e_ref, h_ref, o_sigmoid, o_sqrt, o_rsqrt, o_log,
             o_pow, o_cube, o_inv_square, o_floor, o_ceil, o_sign, o_abs,
             o_neg, o_round_away, o_round_even):
    p, z, e, h = p_ref[...], z_ref[...], e_ref[...], h_ref[...]
    o_sigmoid[...] = jax.nn.sigmoid(z)
    o_sqrt[...] = jnp.sqrt(p)
    o_rsqrt[...] = jax.lax.rsqrt(p)
    o_log[...] = jnp.log(p)
    o_pow[...] = p ** e
    o_cube[...] = z ** 3
    o_inv_square[...] = p ** -2
    o_floor[...] = jnp.floor(z)
    o_ceil[...] = jnp.ceil(z)
    o_sign[...] = jnp.sign(h)
    o_abs[...] = jnp.abs(z)
    o_neg[...] = -z
    o_round_away[...] = jax.lax.round(h)
    o_round_even[...] = jax.lax.round(
        h, jax.lax.RoundingMethod.TO_NEAREST_EVEN)

  def fn(p, z, e, h):
    return pl.pallas_call(kernel, out_shape=(like(p),) * 14)(p, z, e, h)

  rng = np.random.RandomState(15)
  shape = (8, 128)
  p = rng.uniform(0.05, 20.0, shape).astype(np.float32)
  z = (rng.standard_normal(shape) * 4).astype(np.float32)
  e = rng.uniform(-3.0, 3.0, shape).astype(np.float32)
  h = (rng.randint(-20, 21, shape) / 2).astype(np.float32)  # includes 0, ties
  return fn, tuple(jnp.asarray(a) for a in (p, z, e, h))


@case
def reductions():
  # max/min/sum over each axis and both, with and without keepdims, and
  # argmax/argmin; t holds small integers so that arg* must break ties
  # (first index wins).
  def kernel(x_ref, t_ref, o_max0, o_min1k, o_sum0k, o_sum1, o_max_all,
             o_sum_allk, o_argmax0, o_argmax1, o_argmin1, o_imax1):
    x, t = x_ref[...], t_ref[...]
    o_max0[...] = jnp.max(x, axis=0)
    o_min1k[...] = jnp.min(x, axis=1, keepdims=True)
    o_sum0k[...] = jnp.sum(x, axis=0, keepdims=True)
    o_sum1[...] = jnp.sum(x, axis=1)
    o_max_all[...] = jnp.full(o_max_all.shape, jnp.max(x) + jnp.min(x))
    o_sum_allk[...] = jnp.sum(x, axis=(0, 1), keepdims=True)
    o_argmax0[...] = jnp.argmax(x, axis=0).astype(jnp.int32)
    o_argmax1[...] = jnp.argmax(t, axis=1).astype(jnp.int32)
    o_argmin1[...] = jnp.argmin(t, axis=1).astype(jnp.int32)
    o_imax1[...] = jnp.max(t.astype(jnp.int32) - 2, axis=1)

  def fn(x, t):
    f = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
    i = lambda *s: jax.ShapeDtypeStruct(s, jnp.int32)
    return pl.pallas_call(
        kernel,
        out_shape=(f(128), f(8, 1), f(1, 128), f(8), f(1, 128), f(1, 1),
                   i(128), i(8), i(8), i(8)),
    )(x, t)

  rng = np.random.RandomState(16)
  t = rng.randint(0, 4, (8, 128)).astype(np.float32)
  return fn, (f32(rng, 8, 128), jnp.asarray(t))


@case
def layout_ops():
  # Data movement: transpose (bf16), reshape round trip, implicit size-1
  # broadcasting of a row and a column, concatenate, strided static slices,
  # a dynamic_slice whose start depends on program_id, iota of int32 and
  # float32. Grid (2,).
  def kernel(a_ref, x_ref, row_ref, col_ref, o_t, o_reshape, o_bcast,
             o_concat, o_stride2, o_slice, o_dyn, o_iota_i, o_iota_f):
    i = pl.program_id(0)
    x = x_ref[...]
    o_t[...] = a_ref[...].T
    o_reshape[...] = (x.reshape(4, 256) * 2.0).reshape(8, 128)
    o_bcast[...] = x + row_ref[...] - col_ref[...]
    o_concat[...] = jnp.concatenate([x, -x], axis=1)
    o_stride2[...] = x[::2]
    o_slice[...] = jax.lax.slice(x, (1, 3), (8, 128), (3, 5))
    o_dyn[...] = jax.lax.dynamic_slice(x, (i * 2, i * 32), (4, 64))
    o_iota_i[...] = (jax.lax.iota(jnp.int32, 128)[None, :] * 10
                     + jax.lax.broadcasted_iota(jnp.int32, (8, 128), 0) + i)
    o_iota_f[...] = jax.lax.broadcasted_iota(jnp.float32, (8, 128), 1) * (
        i.astype(jnp.float32) + 0.5)

  def fn(a, x, row, col):
    n = x.shape[0] // 8
    blk = lambda *s: pl.BlockSpec(s, lambda i: (i,) + (0,) * (len(s) - 1))
    whole = lambda *s: pl.BlockSpec(s, lambda i: (0,) * len(s))
    f = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
    return pl.pallas_call(
        kernel,
        grid=(n,),
        in_specs=[whole(128, 128), blk(8, 128), whole(1, 128), blk(8, 1)],
        out_specs=(whole(128, 128), blk(8, 128), blk(8, 128), blk(8, 256),
                   blk(4, 128), blk(3, 25), blk(4, 64), blk(8, 128),
                   blk(8, 128)),
        out_shape=(like(a), f(8 * n, 128), f(8 * n, 128), f(8 * n, 256),
                   f(4 * n, 128), f(3 * n, 25), f(4 * n, 64),
                   jax.ShapeDtypeStruct((8 * n, 128), jnp.int32),
                   f(8 * n, 128)),
    )(a, x, row, col)

  rng = np.random.RandomState(17)
  # The transposed block is bf16 to keep the fixture small.
  return fn, (bf16(rng, 128, 128), f32(rng, 16, 128), f32(rng, 1, 128),
              f32(rng, 16, 1))


@case
def dot_variants():
  # dot_general contracting dim 0 with dim 0 (a.T @ b), a batched bf16 dot
  # ('bij,bjk->bik') with an f32 result, and an f32 x f32 dot asking for f32.
  def kernel(a_ref, b_ref, c_ref, d_ref, o_tlhs, o_batched, o_f32):
    a, b = a_ref[...], b_ref[...]
    o_tlhs[...] = jax.lax.dot_general(a, b, (((0,), (0,)), ((), ())))
    o_batched[...] = jnp.einsum("bij,bjk->bik", c_ref[...], d_ref[...],
                                preferred_element_type=jnp.float32)
    o_f32[...] = jnp.dot(c_ref[0].astype(jnp.float32), a,
                         preferred_element_type=jnp.float32)

  def fn(a, b, c, d):
    f = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
    return pl.pallas_call(
        kernel, out_shape=(f(32, 32), f(2, 64, 64), f(64, 32)))(a, b, c, d)

  rng = np.random.RandomState(18)
  return fn, (f32(rng, 128, 32), f32(rng, 128, 32), bf16(rng, 2, 64, 128),
              bf16(rng, 2, 128, 64))


@case
def control_flow():
  # switch on program_id % 3; cond returning a tuple; fori_loop over
  # pl.ds(j * 8, 8) row groups (reading one, writing another); scan over
  # rows producing cumulative sums; a while_loop whose trip count is read
  # from the scalar-prefetched SMEM array in its condition.
  def kernel(n_ref, x_ref, o_switch, o_cond, o_fori, o_scan, o_while):
    i = pl.program_id(0)
    v = x_ref[pl.ds(0, 8), :]
    o_switch[...] = jax.lax.switch(
        i % 3, [lambda v: v + 1.0, lambda v: v * 2.0, lambda v: jnp.abs(v)], v)
    a, m = jax.lax.cond(jnp.sum(v) > 0.0,
                        lambda v: (v * 3.0, jnp.max(v)),
                        lambda v: (v - 3.0, jnp.min(v)), v)
    o_cond[...] = a + m

    def group(j, carry):
      src = x_ref[pl.ds((2 - j) * 8, 8), :]
      o_fori[pl.ds(j * 8, 8), :] = src * 0.5 + carry
      return carry + 1.0

    jax.lax.fori_loop(0, 3, group, jnp.float32(0.0))

    def cumsum(c, row):
      c = c + row
      return c, c

    _, ys = jax.lax.scan(cumsum, jnp.zeros((128,), jnp.float32), v)
    o_scan[...] = ys

    def halve(carry):
      k, w = carry
      return k + 1, w * 0.5 + 1.0

    _, w = jax.lax.while_loop(lambda c: c[0] < n_ref[i], halve,
                              (jnp.int32(0), v))
    o_while[...] = w

  def fn(n, x):
    steps = n.shape[0]
    spec8 = pl.BlockSpec((8, 128), lambda i, n: (i, 0))
    return pl.pallas_call(
        kernel,
        out_shape=(jax.ShapeDtypeStruct((8 * steps, 128), jnp.float32),) * 2
        + (like(x),)
        + (jax.ShapeDtypeStruct((8 * steps, 128), jnp.float32),) * 2,
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1,
            grid=(steps,),
            in_specs=[pl.BlockSpec((24, 128), lambda i, n: (i, 0))],
            out_specs=(spec8, spec8,
                       pl.BlockSpec((24, 128), lambda i, n: (i, 0)),
                       spec8, spec8),
        ),
    )(n, x)

  rng = np.random.RandomState(19)
  n = jnp.asarray(np.array([3, 0, 5], np.int32))
  return fn, (n, f32(rng, 72, 128))


@case
def custom_calls():
  # Calls the compiler inlines: jax.nn.relu (custom_jvp_call), a custom_vjp
  # function, and a nested jax.jit function.
  @jax.custom_vjp
  def scaled_sin(v):
    return jnp.sin(v) * 2.0

  def scaled_sin_fwd(v):
    return scaled_sin(v), v

  def scaled_sin_bwd(v, g):
    return (g * jnp.cos(v) * 2.0,)

  scaled_sin.defvjp(scaled_sin_fwd, scaled_sin_bwd)

  @jax.jit
  def affine(v, w):
    return v * w - jnp.abs(w)

  def kernel(x_ref, y_ref, o_relu, o_vjp, o_jit):
    x, y = x_ref[...], y_ref[...]
    o_relu[...] = jax.nn.relu(x)
    o_vjp[...] = scaled_sin(x)
    o_jit[...] = affine(x, y)

  def fn(x, y):
    spec = pl.BlockSpec((8, 128), lambda i: (i, 0))
    return pl.pallas_call(kernel, out_shape=(like(x),) * 3, grid=(2,),
                          in_specs=[spec, spec],
                          out_specs=(spec,) * 3)(x, y)

  rng = np.random.RandomState(20)
  return fn, (f32(rng, 16, 128), f32(rng, 16, 128))


@case
def scratch_accumulate():
  # The matmul-with-accumulator pattern with an explicit VMEM scratch: zero it
  # on the first k step, accumulate x @ y, write the output on the last k
  # step. An SMEM scratch counter, set on the very first grid point and never
  # reset, counts grid points: it must persist across the whole grid. All
  # dimensions "arbitrary": with "parallel" ones JAX permutes the grid order
  # (seed 0), which the counter would see.
  def kernel(x_ref, y_ref, o_ref, n_ref, acc_ref, count_ref):
    i, j, k = pl.program_id(0), pl.program_id(1), pl.program_id(2)

    @pl.when((i == 0) & (j == 0) & (k == 0))
    def _():
      count_ref[0] = 0

    count_ref[0] = count_ref[0] + 1

    @pl.when(k == 0)
    def _():
      acc_ref[...] = jnp.zeros_like(acc_ref)

    acc_ref[...] += jnp.dot(x_ref[...], y_ref[...],
                            preferred_element_type=jnp.float32)

    @pl.when(k == pl.num_programs(2) - 1)
    def _():
      o_ref[...] = acc_ref[...]
      n_ref[...] = jnp.full(n_ref.shape, count_ref[0], jnp.int32)

  def fn(x, y):
    m, kk = x.shape
    n = y.shape[1]
    bk = 64
    out_spec = pl.BlockSpec((8, 128), lambda i, j, k: (i, j))
    return pl.pallas_call(
        kernel,
        out_shape=(jax.ShapeDtypeStruct((m, n), jnp.float32),
                   jax.ShapeDtypeStruct((m, n), jnp.int32)),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=0,
            grid=(m // 8, n // 128, kk // bk),
            in_specs=[pl.BlockSpec((8, bk), lambda i, j, k: (i, k)),
                      pl.BlockSpec((bk, 128), lambda i, j, k: (k, j))],
            out_specs=(out_spec, out_spec),
            scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32),
                            pltpu.SMEM((1,), jnp.int32)],
        ),
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("arbitrary", "arbitrary", "arbitrary")),
    )(x, y)

  rng = np.random.RandomState(21)
  return fn, (bf16(rng, 16, 192), bf16(rng, 192, 256))


@case
def uint32_ops():
  # uint32: wrapping add/sub/mul, unsigned division and remainder, logical
  # shifts, compare (to a bool output), max/min, conversions to and from
  # int32 (bit reinterpretation by wrap) and float32 (rounding above 2^24).
  def kernel(u_ref, v_ref, s_ref, f_ref, o_add, o_sub, o_mul, o_div, o_rem,
             o_shr, o_shl, o_lt, o_max, o_min, o_to_i32, o_from_i32,
             o_to_f32, o_from_f32):
    u, v, s, f = u_ref[...], v_ref[...], s_ref[...], f_ref[...]
    o_add[...] = u + v
    o_sub[...] = u - v
    o_mul[...] = u * v
    o_div[...] = u // (v | 1)
    o_rem[...] = u % (v | 1)
    o_shr[...] = u >> s
    o_shl[...] = u << s
    o_lt[...] = u < v
    o_max[...] = jnp.maximum(u, v)
    o_min[...] = jnp.minimum(u, v)
    i = u.astype(jnp.int32)
    o_to_i32[...] = i
    o_from_i32[...] = (i - 7).astype(jnp.uint32)
    o_to_f32[...] = u.astype(jnp.float32)
    o_from_f32[...] = f.astype(jnp.uint32)

  def fn(u, v, s, f):
    t = lambda d: jax.ShapeDtypeStruct(u.shape, d)
    u32, i32 = t(jnp.uint32), t(jnp.int32)
    return pl.pallas_call(
        kernel,
        out_shape=(u32,) * 7 + (t(jnp.bool_), u32, u32, i32, u32,
                                t(jnp.float32), u32),
    )(u, v, s, f)

  rng = np.random.RandomState(22)
  shape = (8, 128)
  u = rng.randint(0, 2**32, shape, dtype=np.uint64).astype(np.uint32)
  v = rng.randint(0, 2**32, shape, dtype=np.uint64).astype(np.uint32)
  v[0, :16] = u[0, :16]  # some equal pairs for the compare
  s = rng.randint(0, 32, shape).astype(np.uint32)
  f = rng.uniform(0.0, 4e9, shape).astype(np.float32)  # in uint32 range
  return fn, tuple(jnp.asarray(a) for a in (u, v, s, f))


@case
def aliasing():
  # Output 0 aliases input 0 and the out spec covers only the first half of
  # the rows: the other half must keep the input's values.
  def kernel(x_ref, y_ref, o_ref):
    o_ref[...] = (x_ref[...] + 1.0) * y_ref[...]

  def fn(x, y):
    spec = pl.BlockSpec((8, 128), lambda i: (i, 0))
    return pl.pallas_call(kernel, out_shape=like(x), grid=(2,),
                          in_specs=[spec, spec], out_specs=spec,
                          input_output_aliases={0: 0})(x, y)

  rng = np.random.RandomState(23)
  return fn, (f32(rng, 32, 128), f32(rng, 16, 128))


@case
def partial_edge_2d_reduce():
  # (20, 300) in (8, 128) blocks: grid (3, 3), the last block row and column
  # hang over the edge (4 rows, 44 columns in bounds). Outputs: elementwise;
  # each element's global (row, col) from program_id and iota, whose padding
  # must be clipped on write-back; and each block's sum over its in-bounds
  # part (a masked reduction: the padding read is NaN).
  def kernel(x_ref, o_ref, pos_ref, sum_ref):
    i, j = pl.program_id(0), pl.program_id(1)
    x = x_ref[...]
    o_ref[...] = jnp.sqrt(jnp.abs(x)) - x
    row = jax.lax.broadcasted_iota(jnp.int32, x.shape, 0) + i * 8
    col = jax.lax.broadcasted_iota(jnp.int32, x.shape, 1) + j * 128
    pos_ref[...] = row * 1000 + col
    inside = (row < 20) & (col < 300)
    sum_ref[...] = jnp.full(sum_ref.shape, jnp.sum(jnp.where(inside, x, 0.0)))

  def fn(x):
    spec = pl.BlockSpec((8, 128), lambda i, j: (i, j))
    grid = (pl.cdiv(x.shape[0], 8), pl.cdiv(x.shape[1], 128))
    return pl.pallas_call(
        kernel,
        out_shape=(like(x), jax.ShapeDtypeStruct(x.shape, jnp.int32),
                   jax.ShapeDtypeStruct(grid, jnp.float32)),
        grid=grid,
        in_specs=[spec],
        out_specs=(spec, spec, pl.BlockSpec((1, 1), lambda i, j: (i, j))),
    )(x)

  rng = np.random.RandomState(24)
  return fn, (f32(rng, 20, 300),)


@case
def dynamic_grid():
  # A grid dimension whose size is a traced value (the first pallas_call
  # operand, int32): 3 of the 5 row blocks run; num_programs reads it; the
  # 2 blocks never visited hold interpret mode's fill value (NaN).
  def kernel(x_ref, o_ref):
    n = pl.num_programs(0).astype(jnp.float32)
    o_ref[...] = x_ref[...] * n + pl.program_id(0).astype(jnp.float32)

  @jax.jit
  def fn(n, x):
    spec = pl.BlockSpec((8, 128), lambda i: (i, 0))
    return pl.pallas_call(kernel, out_shape=like(x), grid=(n,),
                          in_specs=[spec], out_specs=spec)(x)

  rng = np.random.RandomState(25)
  return fn, (jnp.int32(3), f32(rng, 40, 128))


@case
def megablox_gmm():
  # jax.experimental.pallas.ops.tpu.megablox gmm: grid (tiles_n,
  # num_active_tiles, tiles_k) with num_active_tiles computed from the group
  # sizes (dynamic), two scalar prefetch operands (group metadata) indexing
  # the block specs; ragged groups straddle m tiles; k not a multiple of tk.
  # (The megablox package exports the function under the module's name.)
  gmm = importlib.import_module(
      "jax.experimental.pallas.ops.tpu.megablox.gmm").gmm

  def fn(lhs, rhs, sizes):
    return gmm(lhs, rhs, sizes, tiling=(64, 128, 128))

  rng = np.random.RandomState(26)
  sizes = jnp.asarray([30, 0, 70, 92], jnp.int32)
  return fn, (f32(rng, 192, 136), f32(rng, 4, 136, 128), sizes)


# --- Error cases ------------------------------------------------------------
# Wrong kernels: JAX's TPU interpret mode raises on them. Each build returns
# (fn, args) like a case, and fn must pass its arguments straight to its one
# pallas_call, since they are written as its operands.


@error_case
def revisit_output():
  # Output block j at grid point (i, j): block 0 is left at (0, 1) and
  # visited again at (1, 0).
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...] + pl.program_id(1).astype(jnp.float32)

  def fn(x):
    return pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct((24, 128), jnp.float32),
        grid=(2, 3),
        in_specs=[pl.BlockSpec((8, 128), lambda i, j: (i, 0))],
        out_specs=pl.BlockSpec((8, 128), lambda i, j: (j, 0)))(x)

  rng = np.random.RandomState(100)
  return fn, (f32(rng, 16, 128),)


@error_case
def oob_block_index():
  # The input's index map is one block ahead: block 4 of a 4-block array on
  # the last step.
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...] * 2.0

  def fn(x):
    return pl.pallas_call(
        kernel, out_shape=like(x), grid=(4,),
        in_specs=[pl.BlockSpec((8, 128), lambda i: (i + 1, 0))],
        out_specs=pl.BlockSpec((8, 128), lambda i: (i, 0)))(x)

  rng = np.random.RandomState(101)
  return fn, (f32(rng, 32, 128),)


@error_case
def oob_dynamic_slice():
  # Reads rows [8 * program_id, + 8) of an (8, 128) block: in bounds at step
  # 0, rows 8..15 of the 8-row block at step 1.
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[pl.ds(pl.program_id(0) * 8, 8), :]

  def fn(x):
    spec = pl.BlockSpec((8, 128), lambda i: (i, 0))
    return pl.pallas_call(kernel, out_shape=like(x), grid=(2,),
                          in_specs=[spec], out_specs=spec)(x)

  rng = np.random.RandomState(102)
  return fn, (f32(rng, 16, 128),)


# The static counterpart, `x_ref[8:16, :]` on an (8, 128) block, is not here:
# JAX rejects it while tracing ("ValueError: Out of bound slice: start=8,
# dim=8."), so there is no kernel to export.


# --- Driver -----------------------------------------------------------------


def generate(name: str) -> list[pathlib.Path]:
  if name in ERROR_CASES:
    return generate_error(name)
  fn, args = CASES[name]()
  out_dir = HERE / name
  if out_dir.exists():
    shutil.rmtree(out_dir)
  return export_kernels(fn, *args, out_dir=out_dir, name="kernel",
                        with_io=True)


def generate_error(name: str) -> list[pathlib.Path]:
  """Writes errors/<name>/: kernel.json, input_<i>.npy and jax_error.txt,
  what interpret mode raised. Should JAX not raise, expected_<i>.npy are
  written as for a case and jax_error.txt says so."""
  fn, args = ERROR_CASES[name]()
  out_dir = HERE / "errors" / name
  if out_dir.exists():
    shutil.rmtree(out_dir)
  # with_io=True runs the kernel under interpret mode and, if that raises,
  # writes nothing. JAX also logs the failed callback's traceback, which the
  # exception carries anyway: silence that log.
  callback_log = logging.getLogger("jax._src.callback")
  level = callback_log.level
  callback_log.setLevel(logging.CRITICAL)
  try:
    paths = export_kernels(fn, *args, out_dir=out_dir, name="kernel",
                           with_io=True)
    error = ("JAX's interpret mode did not raise; expected_<i>.npy hold its"
             " results.\n")
  except Exception as e:  # noqa: BLE001 -- whatever JAX raises is the record
    paths = export_kernels(fn, *args, out_dir=out_dir, name="kernel")
    for i, arg in enumerate(jax.tree_util.tree_leaves(args)):
      path = out_dir / f"input_{i}.npy"
      np.save(path, np.asarray(arg), allow_pickle=False)
      paths.append(path)
    error = _describe_error(e)
  finally:
    callback_log.setLevel(level)
    # Interpret mode's global state is unusable after a failure until reset.
    pltpu.reset_tpu_interpret_mode_state()
  path = out_dir / "jax_error.txt"
  path.write_text(error)
  return paths + [path]


def _describe_error(e: Exception) -> str:
  """The exception's type and message. Interpret mode raises the kernel's
  error inside a callback, and XLA re-raises it as a JaxRuntimeError whose
  message holds the callback's traceback; the traceback's frames name
  absolute paths, so only its first line and the error itself are kept."""
  kind = f"{type(e).__module__}.{type(e).__qualname__}"
  lines = str(e).strip().splitlines()
  if len(lines) <= 1:
    return f"{kind}: {str(e).strip()}\n"
  return f"{kind}: {lines[0]}\n  [traceback left out]\n{lines[-1]}\n"


def validate(path: pathlib.Path, flatc: str, scratch: pathlib.Path):
  schema = REPO / "format" / "kernel.fbs"
  result = subprocess.run([flatc, "-b", "-o", str(scratch), str(schema),
                           str(path)], capture_output=True, text=True)
  if result.returncode != 0 or result.stderr.strip():
    raise SystemExit(f"flatc rejects {path}:\n{result.stderr}{result.stdout}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  which = parser.add_mutually_exclusive_group()
  which.add_argument("--only", nargs="+",
                     choices=sorted(CASES) + sorted(ERROR_CASES),
                     help="regenerate only these cases")
  which.add_argument("--errors", action="store_true",
                     help="regenerate only the error cases (errors/)")
  flags = parser.parse_args()
  names = flags.only or (
      list(ERROR_CASES) if flags.errors else list(CASES) + list(ERROR_CASES))
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
    print(f"{name:24s} {len(paths):2d} files, {size / 1024:6.1f} KiB,"
          f" {time.perf_counter() - start:5.2f} s")
  print(f"done in {time.perf_counter() - total:.1f} s"
        + ("" if flatc else " (flatc not found: not validated)"))


if __name__ == "__main__":
  main()
