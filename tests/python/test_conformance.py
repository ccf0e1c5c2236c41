"""Differential conformance suite: each kernel of the corpus runs under JAX's
TPU interpret mode (`pltpu.InterpretParams()`, the truth) and under pallasvm
(`pallasvm.enabled()`) on the same random inputs, and the outputs are compared.

The corpus: the kernels of the installed jax's
`jax/experimental/pallas/ops/tpu/` (matmul, flash_attention forward and
backward, megablox gmm, random threefry) and the kernels of JAX's Pallas
documentation (quickstart, grids and BlockSpecs, pipelining, TPU matmul),
written out as the docs write them.

Comparison: exact for integers, booleans and data movement; within a few ulp
for f32 elementwise math; for dot_general, within a tolerance written next to
each case (sums whose order may differ grow their error with the contraction
length)."""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas.ops.tpu import flash_attention as fa
from jax.experimental.pallas.ops.tpu import matmul as tpu_matmul
from jax.experimental.pallas.ops.tpu.random import threefry

import pallasvm
from pallasvm import bridge

# The megablox package exports the function `gmm` under the module's name.
megablox_gmm = importlib.import_module(
    "jax.experimental.pallas.ops.tpu.megablox.gmm")

if bridge.library_path() is None or not bridge.library_path().exists():
  pytest.skip(
      "the bridge library (libpallasvm_xla.so) is not built: build pallasvm"
      " into build/ with jax in .venv, or set PALLASVM_LIBRARY",
      allow_module_level=True)


# --- Helpers --------------------------------------------------------------------


def run_both(fn, *args):
  """(pallasvm's result, interpret mode's result) of `jax.jit(fn)(*args)`,
  as pytrees of numpy arrays."""
  assert not pallasvm.is_installed()
  with pltpu.force_tpu_interpret_mode(pltpu.InterpretParams()):
    expected = jax.jit(fn)(*args)
  with pallasvm.enabled():
    got = jax.jit(fn)(*args)
  return (jax.tree.map(np.asarray, got), jax.tree.map(np.asarray, expected))


def assert_exact(got, expected):
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
    assert g.dtype == e.dtype and g.shape == e.shape
    np.testing.assert_array_equal(g, e)


def assert_ulp(got, expected, maxulp):
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
    assert g.dtype == e.dtype and g.shape == e.shape
    np.testing.assert_array_max_ulp(g, e, maxulp=maxulp)


def assert_close(got, expected, *, rtol, atol):
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
    assert g.dtype == e.dtype and g.shape == e.shape
    np.testing.assert_allclose(g.astype(np.float32), e.astype(np.float32),
                               rtol=rtol, atol=atol)


def normal(shape, seed, dtype=jnp.float32):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32).astype(
      dtype)


def ints(shape, seed, dtype, lo, hi):
  return jax.random.randint(jax.random.key(seed), shape, lo, hi, jnp.int32
                            ).astype(dtype)


SEEDS = [0, 1]


# --- Pallas quickstart ------------------------------------------------------------


def add_vectors_kernel(x_ref, y_ref, o_ref):
  x, y = x_ref[...], y_ref[...]
  o_ref[...] = x + y


def add_vectors(x, y):
  return pl.pallas_call(
      add_vectors_kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype))(
          x, y)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.int32])
@pytest.mark.parametrize("shape", [(8,), (8, 128), (3, 16, 256)])
def test_quickstart_add_vectors(shape, dtype, seed):
  if dtype == jnp.int32:
    x, y = ints(shape, seed, dtype, -1000, 1000), ints(shape, seed + 7, dtype,
                                                        -1000, 1000)
  else:
    x, y = normal(shape, seed, dtype), normal(shape, seed + 7, dtype)
  assert_exact(*run_both(add_vectors, x, y))  # one rounding: exact


def iota_kernel(o_ref):
  i = pl.program_id(0)
  o_ref[i] = i


def iota(size: int):
  return pl.pallas_call(
      iota_kernel, out_specs=pl.BlockSpec(memory_space=pltpu.SMEM),
      out_shape=jax.ShapeDtypeStruct((size,), jnp.int32), grid=(size,))()


@pytest.mark.parametrize("size", [1, 8, 13])
def test_quickstart_iota_program_id(size):
  assert_exact(*run_both(lambda: iota(size)))


def matmul_simple_kernel(x_ref, y_ref, z_ref):
  z_ref[...] = x_ref[...] @ y_ref[...]


def matmul_simple(x, y):
  """The quickstart's blocked matmul: grid (2, 2), whole K in each block."""
  return pl.pallas_call(
      matmul_simple_kernel,
      out_shape=jax.ShapeDtypeStruct((x.shape[0], y.shape[1]), x.dtype),
      grid=(2, 2),
      in_specs=[
          pl.BlockSpec((x.shape[0] // 2, x.shape[1]), lambda i, j: (i, 0)),
          pl.BlockSpec((y.shape[0], y.shape[1] // 2), lambda i, j: (0, j)),
      ],
      out_specs=pl.BlockSpec((x.shape[0] // 2, y.shape[1] // 2),
                             lambda i, j: (i, j)))(x, y)


@pytest.mark.parametrize("seed", SEEDS)
def test_quickstart_blocked_matmul(seed):
  x, y = normal((256, 128), seed), normal((128, 256), seed + 1)
  got, expected = run_both(matmul_simple, x, y)
  # f32 dot over K = 128 of N(0,1) values (|sum| ~ 11): a different summation
  # order costs up to ~K ulp of the partial sums' magnitude, ~1e-4.
  assert_close(got, expected, rtol=1e-5, atol=2e-4)


@pytest.mark.parametrize("seed", SEEDS)
def test_quickstart_vmap_of_add_vectors(seed):
  x, y = normal((4, 8, 128), seed), normal((4, 8, 128), seed + 1)
  assert_exact(*run_both(jax.vmap(add_vectors), x, y))


# --- Grids and BlockSpecs ---------------------------------------------------------


def show_program_ids(x_shape, block_shape, grid, index_map):
  def program_ids_kernel(o_ref):
    axes = 0
    for axis in range(len(grid)):
      axes += pl.program_id(axis) * 10**(len(grid) - 1 - axis)
    o_ref[...] = jnp.full(o_ref.shape, axes)

  return pl.pallas_call(
      program_ids_kernel,
      out_shape=jax.ShapeDtypeStruct(x_shape, dtype=np.int32),
      grid=grid, in_specs=[],
      out_specs=pl.BlockSpec(block_shape, index_map))()


@pytest.mark.parametrize("x_shape,block_shape,grid,index_map", [
    ((8, 6), (2, 3), (4, 2), lambda i, j: (i, j)),
    # A grid dimension the output does not depend on: the last write wins.
    ((8, 6), (2, 3), (4, 2, 10), lambda i, j, k: (i, j)),
    # Partial blocks at the edges: only the in-bounds part is written.
    ((7, 5), (2, 3), (4, 2), lambda i, j: (i, j)),
    ((8, 6), (None, 3), (8, 2), lambda i, j: (i, j)),
], ids=["grid_4x2", "revisited", "partial_blocks", "squeezed_dim"])
def test_grid_show_program_ids(x_shape, block_shape, grid, index_map):
  assert_exact(*run_both(
      lambda: show_program_ids(x_shape, block_shape, grid, index_map)))


def add_matrices_kernel(x_ref, y_ref, z_ref):
  x = x_ref[...]
  y = y_ref[...]
  z_ref[...] = x + y


def add_matrices_pipelined(x, y):
  block_spec = pl.BlockSpec((256, 512), lambda i: (i, 0))
  return pl.pallas_call(
      add_matrices_kernel,
      out_shape=x,
      in_specs=[block_spec, block_spec],
      out_specs=block_spec,
      grid=(2,))(x, y)


@pytest.mark.parametrize("seed", SEEDS)
def test_pipelining_add_matrices(seed):
  x, y = normal((512, 512), seed), normal((512, 512), seed + 1)
  assert_exact(*run_both(add_matrices_pipelined, x, y))


def sum_kernel(x_ref, o_ref):
  @pl.when(pl.program_id(axis=0) == 0)
  def _():
    o_ref[...] = jnp.zeros_like(o_ref)

  o_ref[...] += x_ref[...]


def sum_leading(x):
  """The grid docs' reduction over the leading axis: the output block is
  revisited and accumulated in place."""
  grid, *out_shape = x.shape
  return pl.pallas_call(
      sum_kernel,
      grid=grid,
      in_specs=[pl.BlockSpec((None, *out_shape), lambda i: (i, 0, 0))],
      out_specs=pl.BlockSpec(out_shape, lambda i: (0, 0)),
      out_shape=jax.ShapeDtypeStruct(out_shape, x.dtype))(x)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.int32])
def test_grid_sum_over_leading_axis(dtype, seed):
  if dtype == jnp.int32:
    x = ints((8, 8, 128), seed, dtype, -10**6, 10**6)
  else:
    x = normal((8, 8, 128), seed)
  # Same additions in the same (grid) order: exact.
  assert_exact(*run_both(sum_leading, x))


def correct_sum_kernel(x_ref, o_ref):
  @pl.when(pl.program_id(2) == 0)
  def _():
    o_ref[...] = jnp.zeros_like(o_ref)

  o_ref[...] += x_ref[...]


def correct_sum(x, block_size=(256, 256)):
  """The pipelining docs' reduction: grid (i, j, k) sums x[k] blockwise."""
  reduction_size, *out_shape = x.shape
  grid = (*(out // blk for out, blk in zip(out_shape, block_size)),
          reduction_size)
  return pl.pallas_call(
      correct_sum_kernel,
      grid=grid,
      in_specs=[pl.BlockSpec((None, *block_size), lambda i, j, k: (k, i, j))],
      out_specs=pl.BlockSpec(block_size, lambda i, j, k: (i, j)),
      out_shape=jax.ShapeDtypeStruct(out_shape, x.dtype),
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel", "arbitrary")))(x)


@pytest.mark.parametrize("seed", SEEDS)
def test_pipelining_correct_sum(seed):
  x = normal((4, 512, 512), seed)
  assert_exact(*run_both(correct_sum, x))


def elementwise_kernel(x_ref, o_ref):
  x = x_ref[...]
  o_ref[...] = jnp.exp(x) * jnp.sin(x) + jnp.tanh(x) - jnp.log1p(jnp.abs(x))


@pytest.mark.parametrize("seed", SEEDS)
def test_f32_elementwise_math(seed):
  x = normal((16, 128), seed)

  def fn(x):
    spec = pl.BlockSpec((8, 128), lambda i: (i, 0))
    return pl.pallas_call(elementwise_kernel, grid=(2,), in_specs=[spec],
                          out_specs=spec, out_shape=x)(x)

  got, expected = run_both(fn, x)
  # Transcendentals may differ by a few ulp from XLA's; the sum of four
  # such terms cancels in places, so compare in absolute terms too.
  assert_close(got, expected, rtol=1e-6, atol=1e-6)


# --- TPU matmul documentation ------------------------------------------------------


def docs_matmul_kernel(x_ref, y_ref, z_ref, acc_ref, *, nsteps, transpose_rhs,
                       activation):
  @pl.when(pl.program_id(2) == 0)
  def _():
    acc_ref[...] = jnp.zeros_like(acc_ref)

  if transpose_rhs:
    dims = ((1,), (1,)), ((), ())
  else:
    dims = ((1,), (0,)), ((), ())
  acc_ref[...] += jax.lax.dot_general(
      x_ref[...], y_ref[...], dims, preferred_element_type=acc_ref.dtype)

  @pl.when(pl.program_id(2) == nsteps - 1)
  def _():
    z_ref[...] = activation(acc_ref[...]).astype(z_ref.dtype)


def docs_matmul(x, y, *, bm=128, bk=128, bn=128, transpose_rhs=False,
                activation=lambda a: a):
  m, k = x.shape
  n = y.shape[0] if transpose_rhs else y.shape[1]
  if transpose_rhs:
    y_spec = pl.BlockSpec((bn, bk), lambda i, j, k: (j, k))
  else:
    y_spec = pl.BlockSpec((bk, bn), lambda i, j, k: (k, j))
  acc_dtype = jnp.int32 if jnp.issubdtype(x.dtype, jnp.integer) else jnp.float32
  return pl.pallas_call(
      functools.partial(docs_matmul_kernel, nsteps=k // bk,
                        transpose_rhs=transpose_rhs, activation=activation),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=0,
          in_specs=[pl.BlockSpec((bm, bk), lambda i, j, k: (i, k)), y_spec],
          out_specs=pl.BlockSpec((bm, bn), lambda i, j, k: (i, j)),
          scratch_shapes=[pltpu.VMEM((bm, bn), acc_dtype)],
          grid=(m // bm, n // bn, k // bk)),
      out_shape=jax.ShapeDtypeStruct((m, n), x.dtype),
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel", "arbitrary")))(x, y)


def matmul_operands(dtype, m, k, n, seed, transpose_rhs=False):
  y_shape = (n, k) if transpose_rhs else (k, n)
  if dtype == jnp.int8:
    return (ints((m, k), seed, dtype, -128, 128),
            ints(y_shape, seed + 1, dtype, -128, 128))
  return normal((m, k), seed, dtype), normal(y_shape, seed + 1, dtype)


def assert_matmul_close(got, expected, dtype, k):
  if dtype == jnp.int8:
    # int32 accumulation, wrapped to int8 by the final astype: exact.
    assert_exact(got, expected)
  elif dtype == jnp.bfloat16:
    # f32 accumulation of exact bf16 x bf16 products, rounded once to bf16:
    # a summation-order difference of ~K ulp(f32) of the sum may flip that
    # final rounding, so allow 1 bf16 ulp (2^-8 relative) plus an absolute
    # slack for sums near zero that grows with sqrt(K).
    assert_close(got, expected, rtol=2**-7, atol=1e-2 * np.sqrt(k / 128))
  else:
    # f32 sums of K N(0,1) products (|sum| ~ sqrt(K)): a different order
    # costs up to ~K * 2^-24 * sqrt(K) absolute.
    assert_close(got, expected, rtol=1e-5, atol=1e-6 * k * np.sqrt(k))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.int8])
@pytest.mark.parametrize("transpose_rhs", [False, True])
def test_docs_matmul_with_accumulator(transpose_rhs, dtype, seed):
  m, k, n = 256, 256, 128
  x, y = matmul_operands(dtype, m, k, n, seed, transpose_rhs)
  fn = functools.partial(docs_matmul, transpose_rhs=transpose_rhs)
  got, expected = run_both(fn, x, y)
  assert_matmul_close(got, expected, dtype, k)


@pytest.mark.parametrize("activation", [jax.nn.relu, jax.nn.gelu],
                         ids=["relu", "gelu"])
def test_docs_matmul_fused_activation(activation):
  x, y = matmul_operands(jnp.float32, 128, 256, 128, 3)
  fn = functools.partial(docs_matmul, activation=activation)
  got, expected = run_both(fn, x, y)
  assert_matmul_close(got, expected, jnp.float32, 256)


# --- ops/tpu/matmul.py ----------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.int8])
@pytest.mark.parametrize("mkn,block_shape,block_k", [
    ((256, 256, 256), (128, 128), 128),
    ((128, 512, 256), (128, 256), 256),
])
def test_ops_matmul(mkn, block_shape, block_k, dtype, seed):
  m, k, n = mkn
  x, y = matmul_operands(dtype, m, k, n, seed)
  fn = functools.partial(tpu_matmul.matmul, block_shape=block_shape,
                         block_k=block_k)
  got, expected = run_both(fn, x, y)
  assert_matmul_close(got, expected, dtype, k)


# --- ops/tpu/flash_attention.py -------------------------------------------------------

FA_BLOCKS = fa.BlockSizes(
    block_q=128, block_k_major=128, block_k=128, block_b=1,
    block_q_major_dkv=128, block_k_major_dkv=128, block_k_dkv=128,
    block_q_dkv=128, block_k_major_dq=128, block_k_dq=128, block_q_dq=128)


def fa_inputs(seed, batch=1, heads=2, seq=256, head_dim=128):
  q = normal((batch, heads, seq, head_dim), seed)
  k = normal((batch, heads, seq, head_dim), seed + 1)
  v = normal((batch, heads, seq, head_dim), seed + 2)
  # Two segments per sequence, split at a seed-dependent point.
  split = 100 + 37 * seed
  ids = (jnp.arange(seq) >= split).astype(jnp.int32)[None].repeat(batch, 0)
  return q, k, v, fa.SegmentIds(q=ids, kv=ids)


def fa_forward(causal, with_segments):
  def fn(q, k, v, segment_ids):
    return fa.flash_attention(
        q, k, v, segment_ids=segment_ids if with_segments else None,
        causal=causal, sm_scale=q.shape[-1]**-0.5, block_sizes=FA_BLOCKS)
  return fn


# Softmax-weighted averages of N(0,1) values: outputs are O(1); the two
# implementations' exp and dot (length 128) may differ by a few ulp each and
# the online softmax rescales them, so ~1e-5 absolute.
FA_FWD_TOL = dict(rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("with_segments", [False, True],
                         ids=["no_segments", "segments"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flash_attention_forward(causal, with_segments):
  q, k, v, seg = fa_inputs(0)
  got, expected = run_both(fa_forward(causal, with_segments), q, k, v, seg)
  assert_close(got, expected, **FA_FWD_TOL)


def fa_grads(causal, with_segments):
  fwd = fa_forward(causal, with_segments)

  def loss(q, k, v, segment_ids):
    return jnp.sum(fwd(q, k, v, segment_ids) ** 2)

  return jax.grad(loss, argnums=(0, 1, 2))


# Gradients chain the forward's error through dq = ds @ k and
# dk, dv = ds^T @ q, p^T @ do, each a dot of length 256 (the sequence) over
# O(1) values: ~1e-4 absolute.
FA_BWD_TOL = dict(rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("with_segments", [False, True],
                         ids=["no_segments", "segments"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flash_attention_backward(causal, with_segments):
  q, k, v, seg = fa_inputs(1)
  got, expected = run_both(fa_grads(causal, with_segments), q, k, v, seg)
  assert_close(got, expected, **FA_BWD_TOL)


# --- ops/tpu/megablox/gmm.py ---------------------------------------------------------


# gmm's grid is (tiles_n, num_active_tiles, tiles_k), where num_active_tiles
# is a traced value computed from group_sizes: a dynamic grid dimension.
GMM_CASES = {
    # group sizes, (k, n), tiling (tm, tk, tn)
    "aligned": ([128, 0, 128], (128, 128), (128, 128, 128)),
    "ragged": ([100, 56, 100], (128, 128), (128, 128, 128)),
    # Groups straddle m tiles, empty groups at both ends, several n and k
    # tiles, and k not a multiple of tk (the kernel masks the last k tile).
    "ragged_k_rem": ([0, 40, 70, 0, 90, 56, 0], (200, 256), (64, 128, 128)),
    # Every row in one group.
    "one_group": ([256], (128, 256), (128, 128, 128)),
}


@pytest.mark.parametrize("case", list(GMM_CASES))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_megablox_gmm(dtype, case):
  group_sizes, (k, n), tiling = GMM_CASES[case]
  m = sum(group_sizes)
  lhs = normal((m, k), 0, dtype)
  rhs = normal((len(group_sizes), k, n), 1, dtype)
  sizes = jnp.asarray(group_sizes, jnp.int32)

  def fn(lhs, rhs, sizes):
    return megablox_gmm.gmm(lhs, rhs, sizes, preferred_element_type=jnp.dtype(dtype),
                            tiling=tiling)

  got, expected = run_both(fn, lhs, rhs, sizes)
  assert_matmul_close(got, expected, dtype, k)


@pytest.mark.parametrize("transpose_rhs", [False, True])
def test_megablox_gmm_sharded_into_existing_out(transpose_rhs):
  """A shard of the groups (group_offset, rhs holds groups 1..2 of 4)
  written into an existing output: the output aliases an input, whose
  operand number JAX counts without the dynamic grid bound."""
  group_sizes = [60, 70, 80, 46]
  m, k, n = sum(group_sizes), 128, 128
  lhs = normal((m, k), 0)
  rhs_shape = (2, n, k) if transpose_rhs else (2, k, n)
  rhs = normal(rhs_shape, 1)
  existing = normal((m, n), 2)
  sizes = jnp.asarray(group_sizes, jnp.int32)

  def fn(lhs, rhs, sizes, existing):
    return megablox_gmm.gmm(lhs, rhs, sizes, tiling=(128, 128, 128),
                            group_offset=jnp.asarray(1, jnp.int32),
                            existing_out=existing, transpose_rhs=transpose_rhs)

  got, expected = run_both(fn, lhs, rhs, sizes, existing)
  assert_matmul_close(got, expected, jnp.float32, k)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_megablox_tgmm(dtype):
  """tgmm, gmm's transpose (the weight gradient): also a dynamic grid."""
  group_sizes = [100, 0, 156]
  m, k, n = sum(group_sizes), 128, 128
  lhs = normal((k, m), 0, dtype)
  rhs = normal((m, n), 1, dtype)
  sizes = jnp.asarray(group_sizes, jnp.int32)

  def fn(lhs, rhs, sizes):
    return megablox_gmm.tgmm(lhs, rhs, sizes, preferred_element_type=jnp.dtype(dtype),
                             tiling=(128, 128, 128))

  got, expected = run_both(fn, lhs, rhs, sizes)
  assert_matmul_close(got, expected, dtype, m)


def test_megablox_gmm_grad():
  """jax.grad through megablox's custom_vjp (gmm forward, gmm with
  transpose_rhs and tgmm backward)."""
  from jax.experimental.pallas.ops.tpu.megablox import ops as megablox_ops  # pylint: disable=g-import-not-at-top
  group_sizes = [100, 56, 100]
  m, k, n = sum(group_sizes), 128, 128
  lhs = normal((m, k), 0)
  rhs = normal((3, k, n), 1)
  sizes = jnp.asarray(group_sizes, jnp.int32)

  def fn(lhs, rhs, sizes):
    def loss(lhs, rhs):
      out = megablox_ops.gmm(lhs, rhs, sizes, jnp.float32, (128, 128, 128))
      return jnp.sum(jnp.tanh(out))
    return jax.grad(loss, argnums=(0, 1))(lhs, rhs)

  got, expected = run_both(fn, lhs, rhs, sizes)
  assert_matmul_close(got, expected, jnp.float32, m)


# --- ops/tpu/random/threefry.py --------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 42])
@pytest.mark.parametrize("shape", [(256, 512), (100, 300)],
                         ids=["blocks", "padded"])
def test_threefry_random_bits(shape, seed):
  key = jnp.asarray([seed, seed ^ 0x9E3779B9], jnp.uint32)

  def fn(key):
    return threefry.plthreefry_random_bits(key, 32, shape)

  assert_exact(*run_both(fn, key))


# --- Single primitives kernels commonly use -----------------------------------------


def one_op(op, x):
  """`op` applied to x inside a one-block pallas_call."""
  def kernel(x_ref, o_ref):
    o_ref[...] = op(x_ref[...])

  out = jax.eval_shape(op, x)
  return pl.pallas_call(kernel, out_shape=out)(x)


PRIMITIVE_CASES = {
    # name: (op, input dtype, max ulp; None = exact; a dict = rtol, atol)
    "exp2": (jnp.exp2, jnp.float32, 4),
    # (x * 0.25 is exact: a tanh here would differ by an ulp, which
    # erf_inv's steep ends amplify; test_erf_inv_edge_values covers them.)
    "erf_inv": (lambda x: jax.lax.erf_inv(x * 0.25), jnp.float32, 4),
    "bitcast_f32_to_u32": (
        lambda x: jax.lax.bitcast_convert_type(x, jnp.uint32), jnp.float32,
        None),
    "reduce_precision_bf16": (
        lambda x: jax.lax.reduce_precision(x, exponent_bits=8,
                                           mantissa_bits=7), jnp.float32, None),
    "reduce_precision_f16": (
        lambda x: jax.lax.reduce_precision(x * 1e4, exponent_bits=5,
                                           mantissa_bits=10), jnp.float32,
        None),
    "nextafter": (lambda x: jnp.nextafter(x, jnp.zeros_like(x)), jnp.float32,
                  None),
    "cumsum_rows": (lambda x: jnp.cumsum(x, axis=1), jnp.int32, None),
    "cumsum_reverse_cols": (lambda x: jax.lax.cumsum(x, axis=0, reverse=True),
                            jnp.int32, None),
    "cummax_rows": (lambda x: jax.lax.cummax(x, axis=1), jnp.float32, None),
    "cummin_reverse_rows": (
        lambda x: jax.lax.cummin(x, axis=1, reverse=True), jnp.int32, None),
    # pallasvm scans in log2(128) = 7 pairwise steps, XLA sequentially: the
    # f32 partial sums (|s| <~ 30 over 128 N(0,1) terms) differ by ~1e-5.
    "cumsum_f32_rows": (lambda x: jnp.cumsum(x, axis=1), jnp.float32,
                        dict(rtol=1e-5, atol=2e-5)),
    "argmax_rows": (lambda x: jnp.argmax(x, axis=1).astype(jnp.int32)[:, None],
                    jnp.float32, None),
    "roll_lanes": (lambda x: pltpu.roll(x, 3, 1), jnp.float32, None),
    "broadcast_to_and_where": (
        lambda x: jnp.where(x > 0, jnp.broadcast_to(x[:1], x.shape), -x),
        jnp.float32, None),
    "transpose": (lambda x: x.T, jnp.float32, None),
    "select_n_int_predicate": (
        lambda x: jax.lax.select_n((x > 0).astype(jnp.int32), x, 2 * x),
        jnp.float32, None),
}

@pytest.mark.parametrize("name", list(PRIMITIVE_CASES))
def test_primitive(name):
  op, dtype, maxulp = PRIMITIVE_CASES[name]
  if dtype == jnp.int32:
    x = ints((8, 128), 5, dtype, -1000, 1000)
  else:
    x = normal((8, 128), 5, dtype)
  got, expected = run_both(functools.partial(one_op, op), x)
  if maxulp is None:
    assert_exact(got, expected)
  elif isinstance(maxulp, dict):
    assert_close(got, expected, **maxulp)
  else:
    assert_ulp(got, expected, maxulp)


# Edge values: signed zeros, subnormals, the largest finite, infinities, NaN.
EDGE_F32 = np.array(
    [0.0, -0.0, 1e-45, -1e-45, 1e-38, 1.0, -1.0, 0.5, -2.5, 3.4028235e38,
     -3.4028235e38, np.inf, -np.inf, np.nan], np.float32)


def test_nextafter_edge_values():
  """nextafter over every pair of edge values (196 pairs): compared
  bit for bit, NaNs included."""
  x = jnp.asarray(np.repeat(EDGE_F32, EDGE_F32.size)[None, :])
  y = jnp.asarray(np.tile(EDGE_F32, EDGE_F32.size)[None, :])

  def fn(x, y):
    def kernel(x_ref, y_ref, o_ref):
      o_ref[...] = jnp.nextafter(x_ref[...], y_ref[...])
    return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(
        x.shape, x.dtype))(x, y)

  got, expected = run_both(fn, x, y)
  np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_erf_inv_edge_values():
  """erf_inv at 0, +-1 (+-inf), beyond +-1 (NaN), near +-1 (the sqrt
  branch) and on a grid over (-1, 1): within 8 ulp, inf and NaN exact."""
  x = np.concatenate([
      EDGE_F32, [0.9999, -0.99999, 0.999999, 1 - 2**-24, -1 + 2**-24, 1.5],
      np.linspace(-0.999, 0.999, 2028, dtype=np.float32)]).astype(np.float32)
  x = jnp.asarray(x.reshape(16, 128))
  got, expected = run_both(functools.partial(one_op, jax.lax.erf_inv), x)
  np.testing.assert_array_max_ulp(got, expected, maxulp=8)
