"""JAX's own emit_pipeline tests as pallasvm's spec.

Each test here reproduces one case of JAX's
tests/pallas/tpu_pallas_pipeline_test.py (jax-v0.10.2) that runs on one
device and one core, is named after it and keeps its kernel, shapes,
parameters and expected value. A case is checked twice (`check`): its
kernel runs on pallasvm through `on_pallasvm` (JAX's interpreter raises if
entered, and pallasvm must have lowered the kernel) and on JAX's TPU
interpret mode, under an abstract TPU v6e device; interpret mode's result
is compared with the JAX case's own expected value (jnp/numpy, with the
case's tolerance, or one derived where the comment says so), and
pallasvm's with interpret mode's, bit for bit. Where interpret mode cannot
run a kernel (the emit_pipeline primitive, jax.random keys, jax.empty_ref,
jax_pallas_poison_buffers: see INTERPRET_LACKS_*), that is checked and
pallasvm is compared with the expected value alone.

JAX runs most of these classes a second time with
jax_use_emit_pipeline_primitive on; the `primitive` parameter does the same
here. Its cases that need several cores (core_map, megacore, collectives),
shard_map, hijax and hypothesis are left out; PaddedPipelineEmitterTest's
hypothesis search becomes a few fixed parameter sets. Where JAX calls a
one-core kernel through pl.kernel(mesh=create_tensorcore_mesh(...)) or
pl.core_map, the kernel here is a pallas_call with HBM (pl.ANY) operands,
which is what a one-core tensorcore mesh gives the kernel.

A case pallasvm fails is a strict xfail with one of the NEEDS_* marks
below (a missing feature: UnsupportedError) or a bug mark saying what
differs (AssertionError), as in test_jax_interpret_spec.py.
"""

import contextlib
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import config
from jax._src import state
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

import pallasvm
from pallasvm_only import kernels_on_pallasvm
from test_memory_model import ANY, on_interpret_mode, on_pallasvm, tpu_mesh

UNSUPPORTED = pallasvm.UnsupportedError


def needs(feature, raises=UNSUPPORTED):
  return pytest.mark.xfail(strict=True, raises=raises,
                           reason=f"needs {feature}")


def bug(difference):
  return pytest.mark.xfail(strict=True, raises=AssertionError,
                           reason=difference)


# One mark per missing feature or bug.
# The emit_pipeline primitive (jax_use_emit_pipeline_primitive): pallasvm's
# export refuses its parameters ("param args_tree = PyTreeDef(...)
# (PyTreeDef) has no interchange encoding").
NEEDS_EMIT_PIPELINE_PRIMITIVE = needs("the emit_pipeline primitive")
NEEDS_FLOAT8 = needs("float8_e4m3fn operands (\"dtype float8_e4m3fn has no"
                     " interchange DType\")")
NEEDS_KEY_DMA = needs("DMAs of jax.random keys (\"dma_start on jax.random"
                      " keys is not supported\")")
NEEDS_EMPTY_REF = needs("jax.empty_ref in a kernel (its export: \"param ty ="
                        " ShapedArray(...) (ShapedArray) has no interchange"
                        " encoding\")")
IGNORES_POISON = bug(
    "jax_pallas_poison_buffers is ignored: the unset rows of an integer"
    " pipeline buffer hold the type's greatest value, not its least")


def paths(stateful_marks=()):
  """The `primitive` parameter: JAX runs these classes with
  jax_use_emit_pipeline_primitive off and on. On the primitive path pallasvm
  fails first on the primitive, whatever else the case needs."""
  return [pytest.param(False, id="stateful", marks=stateful_marks),
          pytest.param(True, id="primitive",
                       marks=NEEDS_EMIT_PIPELINE_PRIMITIVE)]


PRIMITIVE = paths()
# For cases pallasvm runs on the primitive path too (their kernels fail
# while traced, or hold no pipeline that needs the primitive).
ANY_PATH = [pytest.param(False, id="stateful"),
            pytest.param(True, id="primitive")]
PRIMITIVE_ONLY = [pytest.param(True, id="primitive",
                               marks=NEEDS_EMIT_PIPELINE_PRIMITIVE)]


@pytest.fixture(autouse=True)
def pipeline_path(request):
  """Enters jax_use_emit_pipeline_primitive as the test's `primitive`
  parameter says (off when it has none)."""
  callspec = getattr(request.node, "callspec", None)
  primitive = callspec.params.get("primitive", False) if callspec else False
  pltpu.reset_tpu_interpret_mode_state()
  with config.use_emit_pipeline_primitive(primitive):
    yield


def interpret():
  return pltpu.InterpretParams()


# What interpret mode (jax 0.10.2) raises on a kernel it cannot run:
# the emit_pipeline primitive (its refs, turned into buffer ids, keep
# effects on variables the lowered jaxpr no longer has) ...
INTERPRET_LACKS_PRIMITIVE = (ValueError, "JaxprInputEffect`? .* does not"
                             " have a corresponding jaxpr input")
# ... and jax.empty_ref inside a pallas_call's kernel (discharging it meets
# interpret mode's own io_callbacks).
INTERPRET_LACKS_EMPTY_REF = (NotImplementedError, "No state discharge rule"
                             " implemented for primitive: io_callback")


def assert_close(got, want, rtol, atol, as_float32):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    g = np.asarray(g.astype(jnp.float32) if as_float32 else g)
    np.testing.assert_allclose(g, np.asarray(w), rtol=rtol, atol=atol)


def check(fn, *args, want, rtol=1e-7, atol=0.0, as_float32=False,
          interpret_raises=None, lowered_before=False, interpret_tol=None):
  """pallasvm's fn(*args) against interpret mode's, bit for bit, and
  interpret mode's against `want` (the JAX case's expected value, a pytree
  like the result, compared as assert_allclose does, NaN matching NaN).
  as_float32 compares with `want` in float32, as JAX's cases do for narrow
  types. pallasvm runs first, so that a case it fails stops there.

  interpret_raises, (type, regex), is how interpret mode fails on this
  kernel; on the primitive path it may also fail with
  INTERPRET_LACKS_PRIMITIVE. Then pallasvm is compared with `want` alone.
  lowered_before: fn ran here before on arguments of the same shapes, so
  both runs reuse its compiled executables (and pallasvm lowers nothing).
  interpret_tol, (rtol, atol): compare with interpret mode within these
  instead of bit for bit, where the case says why they may differ.
  Returns pallasvm's result."""
  expected = [interpret_raises] if interpret_raises else []
  if config.use_emit_pipeline_primitive.value:
    expected.append(INTERPRET_LACKS_PRIMITIVE)
  with tpu_mesh():
    if lowered_before:
      with kernels_on_pallasvm():
        got = jax.block_until_ready(jax.jit(fn)(*args))
    else:
      got = on_pallasvm(fn, *args)
    try:
      ref = on_interpret_mode(fn, *args)
    except Exception as e:  # pylint: disable=broad-except
      if not any(isinstance(e, t) and re.search(r, str(e))
                 for t, r in expected):
        raise
      assert_close(got, want, rtol, atol, as_float32)
      return got
  assert not interpret_raises, (
      "interpret mode now runs this kernel: drop interpret_raises")
  assert_close(ref, want, rtol, atol, as_float32)
  assert jax.tree.structure(got) == jax.tree.structure(ref)
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
    if interpret_tol is None:
      np.testing.assert_array_equal(np.asarray(g), np.asarray(r))
    else:
      np.testing.assert_allclose(np.asarray(g).astype(np.float32),
                                 np.asarray(r).astype(np.float32),
                                 rtol=interpret_tol[0], atol=interpret_tol[1])
  return got


def hbm_call(kernel, out_shape, n_in, **kw):
  """A pallas_call whose n_in operands and outputs all stay in HBM."""
  return pl.pallas_call(
      kernel, out_shape=out_shape, in_specs=[ANY] * n_in,
      out_specs=jax.tree.map(lambda _: ANY, out_shape),
      interpret=interpret(), **kw)


def iota(shape, dtype=jnp.float32):
  return jnp.arange(np.prod(shape), dtype=dtype).reshape(shape)


# --- PallasCallPipelineTest ---------------------------------------------------


@pytest.mark.parametrize("primitive", ANY_PATH)
@pytest.mark.parametrize("grid", [(0, 2), (2, -1)], ids=str)
def test_pipeline_empty_grid(primitive, grid):
  del primitive

  def kernel(o_hbm):
    def body(o_ref):
      o_ref[...] = jnp.zeros((128, 128))

    pltpu.emit_pipeline(
        body, grid=grid,
        out_specs=pl.BlockSpec((128, 128), lambda i, j: (i, j)))(o_hbm)

  f = pl.pallas_call(kernel,
                     out_shape=jax.ShapeDtypeStruct((256, 256), jnp.float32),
                     out_specs=ANY, interpret=interpret())
  # emit_pipeline refuses the grid while the kernel is traced, before either
  # interpreter sees it.
  for on_pallasvm_too in (False, True):
    with (tpu_mesh(), kernels_on_pallasvm() if on_pallasvm_too
          else contextlib.nullcontext(), pytest.raises(
              ValueError,
              match="All elements in the grid must be strictly positive")):
      jax.jit(f)()


@pytest.mark.parametrize("primitive", PRIMITIVE)
def test_pipeline_without_inputs(primitive):
  del primitive

  def kernel(o_hbm):
    def body(o_ref):
      o_ref[...] = jnp.full(o_ref.shape, 42, o_ref.dtype)

    pltpu.emit_pipeline(
        body, grid=(4,),
        out_specs=pl.BlockSpec((8, 128), lambda i: (0, i)))(o_hbm)

  f = pl.pallas_call(kernel,
                     out_shape=jax.ShapeDtypeStruct((8, 512), jnp.int32),
                     out_specs=ANY, interpret=interpret())
  check(f, want=jnp.full((8, 512), 42, jnp.int32))


@pytest.mark.parametrize("primitive", PRIMITIVE)
def test_hbm_output(primitive):
  del primitive

  def kernel(x_hbm, o_hbm):
    def body(x_ref, o_ref):
      # o_ref is the whole HBM output; each step fills its column block.
      column = pl.ds(pl.program_id(0) * 128, 128)
      pltpu.sync_copy(x_ref, o_ref.at[:, column])

    pltpu.emit_pipeline(
        body, grid=(4,),
        in_specs=pl.BlockSpec((8, 128), lambda i: (0, i)),
        out_specs=pl.BlockSpec((8, 512), lambda i: (0, 0),
                               memory_space=pltpu.HBM),
    )(x_hbm, o_hbm)

  f = pl.pallas_call(kernel,
                     out_shape=jax.ShapeDtypeStruct((8, 512), jnp.int32),
                     in_specs=[pl.BlockSpec(memory_space=pltpu.HBM)],
                     out_specs=pl.BlockSpec(memory_space=pltpu.HBM),
                     interpret=interpret())
  x = iota((8, 512), jnp.int32)
  check(f, x, want=x)


@pytest.mark.parametrize("primitive", PRIMITIVE)
def test_trivial_windowing_elides_double_buffering(primitive):
  del primitive

  def kernel(x_hbm, y_hbm, o_hbm):
    def body(x_ref, y_ref, o_ref):
      o_ref[...] = x_ref[...] + y_ref[...]

    # y's block index never changes (the grid's second axis has size 1).
    pltpu.emit_pipeline(
        body, grid=(4, 1),
        in_specs=[pl.BlockSpec((8, 128), lambda i, j: (0, i)),
                  pl.BlockSpec((8, 128), lambda i, j: (0, j))],
        out_specs=pl.BlockSpec((8, 128), lambda i, j: (0, i)),
    )(x_hbm, y_hbm, o_hbm)

  f = hbm_call(kernel, jax.ShapeDtypeStruct((8, 512), jnp.float32), 2)
  x = iota((8, 512))
  y = jnp.ones((8, 128), jnp.float32)
  check(f, x, y, want=x + jnp.tile(y, (1, 4)))


@pytest.mark.parametrize("primitive", PRIMITIVE)
def test_trivial_windowing_matched_vmem(primitive):
  del primitive

  def kernel(x_hbm, o_hbm):
    def scoped(x_vmem, o_vmem):
      pltpu.sync_copy(x_hbm, x_vmem)
      # VMEM operands whose one block is the whole array: nothing to copy.
      whole = pl.BlockSpec((8, 512), lambda i: (0, 0),
                           memory_space=pltpu.VMEM)
      pltpu.emit_pipeline(lambda x_ref, o_ref: o_ref.__setitem__(
          ..., x_ref[...]), grid=(4,), in_specs=whole,
                          out_specs=whole)(x_vmem, o_vmem)
      pltpu.sync_copy(o_vmem, o_hbm)

    pl.run_scoped(scoped, pltpu.VMEM((8, 512), jnp.int32),
                  pltpu.VMEM((8, 512), jnp.int32))

  # No specs: the pallas_call's operands are whole-array VMEM blocks.
  f = pl.pallas_call(kernel,
                     out_shape=jax.ShapeDtypeStruct((8, 512), jnp.int32),
                     interpret=interpret())
  x = iota((8, 512), jnp.int32)
  check(f, x, want=x)


def copy_body(x_ref, o_ref):
  o_ref[...] = x_ref[...]


@pytest.mark.parametrize("primitive", PRIMITIVE)
def test_trivial_windowing_mismatched_input(primitive):
  del primitive

  def kernel(x_ref, o_ref):
    def scoped(o_vmem):
      # The spec says VMEM and x_ref is VMEM; the output is a scratch.
      spec = pl.BlockSpec((3,), lambda i: (0,), memory_space=pltpu.VMEM)
      pltpu.emit_pipeline(copy_body, grid=(1,), in_specs=spec,
                          out_specs=spec)(x_ref, o_vmem)
      pltpu.sync_copy(o_vmem, o_ref)

    pl.run_scoped(scoped, pltpu.VMEM((3,), jnp.int32))

  f = pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((3,), jnp.int32),
                     interpret=interpret())
  x = jnp.array([1, 2, 3], jnp.int32)
  check(f, x, want=x)


@pytest.mark.parametrize("primitive", PRIMITIVE)
def test_trivial_windowing_mismatched_output(primitive):
  del primitive

  def kernel(x_ref, o_ref):
    def scoped(x_vmem):
      pltpu.sync_copy(x_ref, x_vmem)
      spec = pl.BlockSpec((3,), lambda i: (0,), memory_space=pltpu.VMEM)
      pltpu.emit_pipeline(copy_body, grid=(1,), in_specs=spec,
                          out_specs=spec)(x_vmem, o_ref)

    pl.run_scoped(scoped, pltpu.VMEM((3,), jnp.int32))

  f = pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((3,), jnp.int32),
                     interpret=interpret())
  x = jnp.array([1, 2, 3], jnp.int32)
  check(f, x, want=x)


@pytest.mark.parametrize("primitive", PRIMITIVE)
def test_trivial_windowing_with_explicit_buffering(primitive):
  del primitive

  def kernel(x_hbm, o_hbm):
    pltpu.emit_pipeline(
        copy_body, grid=(1,),
        in_specs=pl.BlockSpec((8, 512), lambda i: (0, 0),
                              pipeline_mode=pl.Buffered(buffer_count=2)),
        out_specs=pl.BlockSpec((8, 512), lambda i: (0, 0)),
    )(x_hbm, o_hbm)

  f = hbm_call(kernel, jax.ShapeDtypeStruct((8, 512), jnp.float32), 1)
  x = iota((8, 512))
  check(f, x, want=x)


def uniform_body(key_ref, o_ref):
  o_ref[...] = jax.random.uniform(key_ref[...], shape=o_ref.shape)


def prng_case(key_space, primitive):
  """The same random kernel as a plain pallas_call (key in SMEM) and inside
  an emit_pipeline with an empty grid (key in `key_space`); both must draw
  the same numbers."""
  out_shape = jax.ShapeDtypeStruct((8, 128), jnp.float32)
  plain = pl.pallas_call(
      uniform_body, out_shape=out_shape,
      in_specs=[pl.BlockSpec(memory_space=pltpu.SMEM)],
      out_specs=pl.BlockSpec(memory_space=pltpu.VMEM),
      interpret=interpret())

  def kernel(key_hbm, o_hbm):
    pltpu.emit_pipeline(
        uniform_body, grid=(),
        in_specs=[pl.BlockSpec(memory_space=key_space)],
        out_specs=[pl.BlockSpec(memory_space=pltpu.VMEM)],
    )(key_hbm, o_hbm)

  pipelined = pl.pallas_call(
      kernel, out_shape=out_shape,
      in_specs=[pl.BlockSpec(memory_space=pltpu.HBM)],
      out_specs=pl.BlockSpec(memory_space=pltpu.HBM),
      interpret=interpret())

  def both(key):
    return plain(key), pipelined(key)

  key = pltpu.to_pallas_key(jax.random.key(0))
  with tpu_mesh():
    got_plain, got_pipelined = on_pallasvm(both, key)
    np.testing.assert_array_equal(got_pipelined, got_plain)
    # Interpret mode cannot allocate a key buffer (it fills new buffers with
    # NaN, or zeros: "Cannot interpret 'key<pl>' as a data type"), even for
    # the plain call: pallasvm's two calls are compared with each other.
    pipelined_fails = (INTERPRET_LACKS_PRIMITIVE if primitive else
                       (NotImplementedError, r"nan \+ key<pl>"))
    for f, (error, match) in ((plain, (NotImplementedError, r"nan \+ key<pl>")),
                              (pipelined, pipelined_fails)):
      with pytest.raises(error, match=match):
        on_interpret_mode(f, key)


@pytest.mark.parametrize("primitive", paths(NEEDS_KEY_DMA))
def test_prng_pallas_vs_pipeline(primitive):
  prng_case(pltpu.SMEM, primitive)


@pytest.mark.parametrize("primitive", paths(NEEDS_KEY_DMA))
def test_key_memory_space(primitive):
  prng_case(pl.MemorySpace.KEY, primitive)


def shape_seen_by_body(x, spec):
  """Runs a one-step pipeline over VMEM input x with `spec`, on interpret
  mode and on pallasvm, and returns the block shapes its body was traced
  with. The kernel writes no output (as in JAX's case): only the shapes are
  checked."""
  seen = []

  def kernel(x_ref, o_ref):
    del o_ref
    pltpu.emit_pipeline(lambda block: seen.append(block.shape), grid=(1,),
                        in_specs=(spec,))(x_ref)

  f = pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((1,), jnp.float32),
                     interpret=interpret())
  with tpu_mesh():
    on_interpret_mode(f, x)
    on_pallasvm(f, x)
  return seen


@pytest.mark.parametrize("primitive", ANY_PATH)
def test_squeezed_block_spec_has_correct_shape(primitive):
  del primitive
  spec = pl.BlockSpec((None, 128, 64), lambda b: (0, 0, 0),
                      memory_space=pltpu.VMEM)
  seen = shape_seen_by_body(jnp.zeros((1, 128, 64), jnp.float32), spec)
  assert seen and all(s == (128, 64) for s in seen), seen


@pytest.mark.parametrize("primitive", ANY_PATH)
def test_trivial_window_representation_strips_all_none_dimensions(primitive):
  del primitive
  spec = pl.BlockSpec((None, None, 128, 64), lambda b: (0, 0, 0, 0),
                      memory_space=pltpu.VMEM)
  seen = shape_seen_by_body(jnp.zeros((1, 1, 128, 64), jnp.float32), spec)
  assert seen and all(s == (128, 64) for s in seen), seen


@pytest.mark.parametrize("primitive", PRIMITIVE)
def test_unbuffered_vmem_output_flushes_to_hbm(primitive):
  del primitive

  def kernel(o_ref):
    def body(block):
      block[...] = jnp.ones((128, 64), jnp.float32)

    pltpu.emit_pipeline(
        body, grid=(1,),
        out_specs=(pl.BlockSpec((128, 64), lambda b: (0, 0),
                                memory_space=pltpu.VMEM),))(o_ref)

  f = pl.pallas_call(kernel,
                     out_shape=jax.ShapeDtypeStruct((128, 64), jnp.float32),
                     interpret=interpret())
  check(f, want=jnp.ones((128, 64), jnp.float32))


# JAX's matmul cases allow atol=5e-5, about 3 ulp of their results (sums of
# 512 products of uniform [0, 1) numbers, near 128): on a TPU the kernel and
# XLA's x @ y make the same MXU passes. On a CPU interpret mode sums each
# 128-long block product and then the four blocks, XLA in its own order;
# the two differ by up to 1.4e-6 relative here. For sums of non-negative
# terms either order is within (512 - 1) * eps = 6.1e-5 relative of the
# exact sum, so interpret mode is held to rtol=1e-5 against XLA instead.
MATMUL_TOLERANCE = dict(rtol=1e-5, atol=5e-5)


def accumulate_matmul(x_ref, y_ref, z_ref):
  """z += x @ y over the grid's last axis, zeroed at its first step."""
  @pl.when(pl.program_id(2) == 0)
  def _():
    z_ref[...] = jnp.zeros(z_ref.shape, jnp.float32)

  z_ref[...] += x_ref[...] @ y_ref[...]


@pytest.mark.parametrize("primitive", PRIMITIVE)
@pytest.mark.parametrize("no_pipelining", [False, True],
                         ids=["pipelined", "no_pipelining"])
def test_pipeline_matmul(primitive, no_pipelining):
  del primitive

  def kernel(x_hbm, y_hbm, z_hbm):
    pltpu.emit_pipeline(
        accumulate_matmul, grid=(4, 4, 4),
        in_specs=[pl.BlockSpec((128, 128), lambda i, j, k: (i, k)),
                  pl.BlockSpec((128, 128), lambda i, j, k: (k, j))],
        out_specs=pl.BlockSpec((128, 128), lambda i, j, k: (i, j)),
        no_pipelining=no_pipelining,
    )(x_hbm, y_hbm, z_hbm)

  f = hbm_call(kernel, jax.ShapeDtypeStruct((512, 512), jnp.float32), 2)
  kx, ky = jax.random.split(jax.random.key(0))
  x = jax.random.uniform(kx, (512, 512))
  y = jax.random.uniform(ky, (512, 512))
  check(f, x, y, want=jnp.dot(x, y), **MATMUL_TOLERANCE)


@pytest.mark.parametrize("primitive", ANY_PATH)
def test_unaligned_slice_hbm_3d(primitive):
  del primitive
  m, n = 32, 5  # n is far from a multiple of 128

  def kernel(x_ref, o_ref):
    pltpu.sync_copy(x_ref.at[0, :, :], o_ref)

  f = pl.pallas_call(kernel,
                     out_shape=jax.ShapeDtypeStruct((m, n), jnp.float32),
                     grid=(), interpret=interpret())
  x = iota((2, m, n))
  check(f, x, want=x[0])


# --- PallasCallPipelinePoisonTest ---------------------------------------------


def poison_of(dtype):
  return np.nan if jnp.issubdtype(dtype, jnp.floating) else jnp.iinfo(dtype).min


POISON_DTYPES = [(jnp.float32, ()), (jnp.int32, IGNORES_POISON),
                 (jnp.int8, IGNORES_POISON), (jnp.float8_e4m3fn, NEEDS_FLOAT8)]


@pytest.mark.parametrize("no_pipelining", [False, True],
                         ids=["pipelined", "no_pipelining"])
@pytest.mark.parametrize("primitive,dtype", [
    pytest.param(*p.values, dtype, id=f"{dtype.__name__}-{p.id}",
                 marks=p.marks if p.values[0] else marks)
    for dtype, marks in POISON_DTYPES for p in PRIMITIVE])
def test_poison_buffers(primitive, no_pipelining, dtype):

  def kernel(x_hbm, o_hbm):
    def body(x_ref, o_ref):
      o_ref[:4, :] = x_ref[:4, :]   # rows 4.. of the output block stay unset

    spec = pl.BlockSpec((8, 128), lambda i: (0, 0))
    pltpu.emit_pipeline(body, grid=(1,), in_specs=spec, out_specs=spec,
                        no_pipelining=no_pipelining)(x_hbm, o_hbm)

  f = hbm_call(kernel, jax.ShapeDtypeStruct((8, 128), dtype), 1)
  x = jnp.ones((8, 128), dtype)
  # With jax_pallas_poison_buffers the pipeline's output buffer starts as
  # poison: NaN for floats, the type's least value for integers.
  want = np.concatenate([np.ones((4, 128), np.float32),
                         np.full((4, 128), poison_of(dtype), np.float32)])
  with config.jax_pallas_poison_buffers(True):
    if primitive or jnp.issubdtype(dtype, jnp.floating):
      # Interpret mode ignores the flag, but fills new float buffers with
      # NaN, floats' poison.
      check(f, x, want=want, as_float32=True)
      return
    # Interpret mode ignores the flag and fills new integer buffers with the
    # type's greatest value; pallasvm is compared with the JAX case's value.
    with tpu_mesh():
      got = on_pallasvm(f, x)
      ref = on_interpret_mode(f, x)
    assert_close(got, want, 1e-7, 0.0, as_float32=True)
    np.testing.assert_array_equal(ref[4:], jnp.iinfo(dtype).max)


# --- PallasCallMultipleBufferedPipelineTest -----------------------------------


@pytest.mark.parametrize("primitive", PRIMITIVE)
@pytest.mark.parametrize("in_buffer_count", [2, 4], ids=lambda n: f"in{n}")
@pytest.mark.parametrize("out_buffer_count", [2], ids=lambda n: f"out{n}")
def test_copy(primitive, in_buffer_count, out_buffer_count):
  del primitive

  def kernel(x_hbm, o_hbm):
    pltpu.emit_pipeline(
        copy_body, grid=(4, 4),
        in_specs=[pl.BlockSpec((128, 128), lambda i, j: (i, j),
                               pipeline_mode=pl.Buffered(in_buffer_count))],
        out_specs=pl.BlockSpec((128, 128), lambda i, j: (i, j),
                               pipeline_mode=pl.Buffered(out_buffer_count)),
    )(x_hbm, o_hbm)

  x = jnp.arange(512 * 512).reshape(512, 512)
  f = hbm_call(kernel, jax.ShapeDtypeStruct.like(x), 1)
  check(f, x, want=x)


@pytest.mark.parametrize("primitive", PRIMITIVE)
@pytest.mark.parametrize("x_buffer_count", [2, 4], ids=lambda n: f"x{n}")
@pytest.mark.parametrize("y_buffer_count", [2, 4], ids=lambda n: f"y{n}")
@pytest.mark.parametrize("out_buffer_count", [2], ids=lambda n: f"out{n}")
def test_matmul(primitive, x_buffer_count, y_buffer_count, out_buffer_count):
  del primitive
  block = (128, 128)

  def kernel(x_hbm, y_hbm, o_hbm):
    pltpu.emit_pipeline(
        accumulate_matmul, grid=(4, 4, 4),
        in_specs=[
            pl.BlockSpec(block, lambda i, j, k: (i, k),
                         pipeline_mode=pl.Buffered(x_buffer_count)),
            pl.BlockSpec(block, lambda i, j, k: (k, j),
                         pipeline_mode=pl.Buffered(y_buffer_count))],
        out_specs=pl.BlockSpec(block, lambda i, j, k: (i, j),
                               pipeline_mode=pl.Buffered(out_buffer_count)),
    )(x_hbm, y_hbm, o_hbm)

  x = jax.random.uniform(jax.random.key(0), (512, 512))
  y = jax.random.uniform(jax.random.key(1), (512, 512))
  f = hbm_call(kernel, jax.ShapeDtypeStruct.like(x), 2)
  check(f, x, y, want=x @ y, **MATMUL_TOLERANCE)


GATHER_INDICES = [
    [2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
    [0, 0, 2, 3, 3, 3, 1, 7, 6, 6],
    [3, 3, 3, 3, 3, 3, 3, 7, 6, 6],
    [0, 1, 2, 3, 4, 5, 0, 1, 2, 3],
]


@pytest.mark.parametrize("primitive", PRIMITIVE)
@pytest.mark.parametrize("use_lookahead", [True, False],
                         ids=["lookahead", "no_lookahead"])
@pytest.mark.parametrize("in_buffer_count", [2, 4], ids=lambda n: f"in{n}")
@pytest.mark.parametrize("out_buffer_count", [2], ids=lambda n: f"out{n}")
def test_block_gather(primitive, use_lookahead, in_buffer_count,
                      out_buffer_count):
  # JAX's in_block_indices parameter: its four lists are data (in SMEM), so
  # one test runs them all through one compiled kernel, each checked as a
  # case of its own.
  del primitive
  steps = len(GATHER_INDICES[0])

  def kernel(x_hbm, indices_smem, o_hbm):
    pltpu.emit_pipeline(
        copy_body, grid=(steps,),
        in_specs=[pl.BlockSpec(
            (128, 128), lambda i: (indices_smem[i], 0),
            pipeline_mode=pl.Buffered(in_buffer_count,
                                      use_lookahead=use_lookahead))],
        out_specs=pl.BlockSpec((128, 128), lambda i: (i, 0),
                               pipeline_mode=pl.Buffered(out_buffer_count)),
    )(x_hbm, o_hbm)

  f = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((steps * 128, 128), jnp.int32),
      in_specs=[ANY, pl.BlockSpec(memory_space=pltpu.SMEM)], out_specs=ANY,
      interpret=interpret())
  x = jnp.arange(1024 * 128).reshape(1024, 128)
  for n, in_block_indices in enumerate(GATHER_INDICES):
    want = jnp.concatenate([x[b * 128:(b + 1) * 128]
                            for b in in_block_indices])
    check(f, x, jnp.array(in_block_indices), want=want, lowered_before=n > 0)


SCATTER_INDICES = [[0, 0, 2, 2, 2, 5, 3, 3], [5, 5, 5, 5, 5, 5, 5, 5]]


@pytest.mark.parametrize("primitive", PRIMITIVE)
@pytest.mark.parametrize("in_buffer_count", [2, 4], ids=lambda n: f"in{n}")
@pytest.mark.parametrize("out_buffer_count", [2], ids=lambda n: f"out{n}")
def test_block_scatter(primitive, in_buffer_count, out_buffer_count):
  # JAX's out_block_indices parameter, both lists through one compiled
  # kernel, as in test_block_gather.
  del primitive

  def kernel(x_hbm, indices_smem, o_hbm):
    def zero_output(o_vmem):
      o_vmem[...] = jnp.zeros(o_vmem.shape, jnp.int32)
      pltpu.sync_copy(o_vmem, o_hbm)

    pl.run_scoped(zero_output, pltpu.VMEM((1024, 128), jnp.int32))
    pltpu.emit_pipeline(
        copy_body, grid=(8,),
        in_specs=[pl.BlockSpec((128, 128), lambda i: (i, 0),
                               pipeline_mode=pl.Buffered(in_buffer_count))],
        out_specs=pl.BlockSpec((128, 128), lambda i: (indices_smem[i], 0),
                               pipeline_mode=pl.Buffered(out_buffer_count)),
    )(x_hbm, o_hbm)

  f = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((1024, 128), jnp.int32),
      in_specs=[ANY, pl.BlockSpec(memory_space=pltpu.SMEM)], out_specs=ANY,
      interpret=interpret())
  x = jnp.arange(1024 * 128).reshape(1024, 128)
  for n, out_block_indices in enumerate(SCATTER_INDICES):
    blocks = [jnp.zeros((128, 128), jnp.int32)] * 8
    for step, b in enumerate(out_block_indices):
      blocks[b] = x[step * 128:(step + 1) * 128]   # the last write wins
    check(f, x, jnp.array(out_block_indices), want=jnp.concatenate(blocks),
          lowered_before=n > 0)


def test_matmul_with_input_output():
  # JAX skips this case on the primitive path (allocations unsupported).
  m = n = k = 512
  bm = bn = bk = 128
  buffers = [
      pltpu.BufferedRef.input(
          pl.BlockSpec((bm, bk), lambda n, m, k: (m, k)), jnp.float32),
      pltpu.BufferedRef.input(
          pl.BlockSpec((bk, bn), lambda n, m, k: (k, n)), jnp.float32),
      pltpu.BufferedRef.input_output(
          pl.BlockSpec((bm, bn), lambda n, m, k: (m, n)), jnp.float32),
  ]

  def kernel(x_hbm, y_hbm, o_hbm, x_buf, y_buf, o_buf):
    def body(x_ref, y_ref, o_ref):
      @pl.when(pl.program_id(2) == 0)
      def _():
        o_ref[...] = jnp.zeros_like(o_ref)

      o_ref[...] += x_ref[...] @ y_ref[...]

    # The specs come with the allocations (scratch BufferedRefs).
    pltpu.emit_pipeline(body, grid=(m // bm, n // bn, k // bk))(
        x_hbm, y_hbm, o_hbm, allocations=[x_buf, y_buf, o_buf])

  f = hbm_call(kernel, jax.ShapeDtypeStruct((m, n), jnp.float32), 2,
               scratch_shapes=buffers)
  x = jax.random.uniform(jax.random.key(0), (m, k), jnp.float32)
  y = jax.random.uniform(jax.random.key(1), (k, n), jnp.float32)
  check(f, x, y, want=x @ y, **MATMUL_TOLERANCE)


@pytest.mark.parametrize("primitive", PRIMITIVE)
def test_single_buffered_output(primitive):
  del primitive

  def kernel(o_hbm):
    def body(o_ref):
      @pl.when(pl.program_id(1) == 0)
      def _():
        o_ref[...] = jnp.zeros_like(o_ref)

      o_ref[...] += 1.0

    # One buffer, revisited along the grid's second axis (3 steps).
    spec = pl.BlockSpec((1, 8, 128), lambda b, _: (b, 0, 0),
                        memory_space=pltpu.VMEM,
                        pipeline_mode=pl.Buffered(buffer_count=1))
    pltpu.emit_pipeline(body, grid=(2, 3), out_specs=(spec,))(o_hbm)

  f = pl.pallas_call(kernel,
                     out_shape=jax.ShapeDtypeStruct((2, 8, 128), jnp.float32),
                     out_specs=ANY, interpret=interpret())
  check(f, want=jnp.full((2, 8, 128), 3, jnp.float32))


def test_emit_pipeline_with_allocations_reused():
  # Not a JAX case: emit_pipeline_with_allocations' buffers, allocated once
  # by run_scoped, serve two runs of the pipeline (x + 1, then of its result
  # + 1).
  spec = pl.BlockSpec((8, 128), lambda i: (i, 0))

  def body(x_ref, o_ref):
    o_ref[...] = x_ref[...] + 1.0

  def kernel(x_hbm, o_hbm):
    pipeline, make_allocations = pltpu.emit_pipeline_with_allocations(
        body, grid=(4,), in_specs=[spec], out_specs=[spec])

    def run_twice(allocations):
      pipeline(x_hbm, o_hbm, allocations=allocations)
      pipeline(o_hbm, o_hbm, allocations=allocations)

    pl.run_scoped(run_twice, make_allocations(x_hbm, o_hbm))

  f = hbm_call(kernel, jax.ShapeDtypeStruct((32, 128), jnp.float32), 1)
  x = iota((32, 128))
  check(f, x, want=x + 2.0)


# --- PaddedPipelineEmitterTest (fixed parameters for hypothesis') -------------


def accumulate_masked_matmul(lhs_ref, rhs_ref, out_ref, acc_ref, *, k):
  """out = lhs @ rhs over the grid's last axis, in acc_ref's dtype; when k
  is not a multiple of the block, the last k block's columns (rows) past k
  are masked to zero."""
  step, steps = pl.program_id(2), pl.num_programs(2)
  bk = lhs_ref.shape[1]

  @pl.when(step == 0)
  def _():
    acc_ref[...] = jnp.zeros(acc_ref.shape, acc_ref.dtype)

  def add(lhs, rhs):
    acc_ref[...] += jnp.dot(lhs, rhs, preferred_element_type=acc_ref.dtype)

  if k % bk == 0:
    add(lhs_ref[...], rhs_ref[...])
  else:
    def last():
      def masked(ref, axis):
        inside = (step * bk + jax.lax.broadcasted_iota(jnp.int32, ref.shape,
                                                       axis)) < k
        return jnp.where(inside, ref[...].astype(acc_ref.dtype),
                         0).astype(ref.dtype)
      add(masked(lhs_ref, 1), masked(rhs_ref, 0))

    jax.lax.cond(step == steps - 1, last,
                 lambda: add(lhs_ref[...], rhs_ref[...]))

  @pl.when(step == steps - 1)
  def _():
    out_ref[...] = acc_ref[...].astype(out_ref.dtype)


def padded_matmul(x, y, *, bm, bk, bn, bounds):
  (m, k), (_, n) = x.shape, y.shape

  def kernel(x_hbm, y_hbm, o_hbm):
    def run(acc_ref):
      pltpu.emit_pipeline(
          functools.partial(accumulate_masked_matmul, acc_ref=acc_ref, k=k),
          grid=(pl.cdiv(m, bm), pl.cdiv(n, bn), pl.cdiv(k, bk)),
          in_specs=[pl.BlockSpec((bm, bk), lambda i, j, l: (i, l)),
                    pl.BlockSpec((bk, bn), lambda i, j, l: (l, j))],
          out_specs=pl.BlockSpec((bm, bn), lambda i, j, l: (i, j)),
          core_axis=0,
          dimension_semantics=(pltpu.PARALLEL, pltpu.PARALLEL,
                               pltpu.ARBITRARY),
      )(x_hbm, y_hbm, o_hbm)

    acc_dtype = (jnp.float32 if jnp.issubdtype(x.dtype, jnp.floating)
                 else jnp.int32)
    pl.run_scoped(run, pltpu.VMEM((bm, bn), acc_dtype))

  # One core: the outer grid has one point.
  return pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((m, n), x.dtype),
      in_specs=[ANY, ANY], out_specs=ANY, grid=(1,),
      interpret=pltpu.InterpretParams(buffer_bounds=bounds))(x, y)


# (dtype, m, k, n, bm, bk, bn, seed), drawn from hypothesis' ranges; JAX
# skips int8 on TPU v6, the device these run under. Where a block overhangs
# the array, the pipeline's DMA reads the overhang: a TPU's HBM array is
# padded to its tiles, so interpret mode (and pallasvm) must be told
# (buffer_bounds='padded'); with the default bounds both raise
# "Out-of-bounds read".
PADDED_CASES = [
    ("float32-divisible", ("float32", 256, 256, 256, 128, 128, 128, 0), ()),
    ("float32-uneven", ("float32", 200, 300, 170, 32, 128, 128, 1),
     ()),
    ("float32-thin", ("float32", 9, 700, 130, 8, 256, 128, 2),
     ()),
    ("bfloat16-uneven", ("bfloat16", 300, 129, 520, 16, 128, 256, 3),
     ()),
]


@pytest.mark.parametrize("primitive,dtype,m,k,n,bm,bk,bn,seed", [
    pytest.param(*p.values, *case, id=f"{name}-{p.id}",
                 marks=marks or p.marks)
    for name, case, marks in PADDED_CASES for p in PRIMITIVE])
def test_padded_matmul(primitive, dtype, m, k, n, bm, bk, bn, seed):
  del primitive
  kx, ky = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, (m, k), jnp.float32).astype(dtype)
  y = jax.random.normal(ky, (k, n), jnp.float32).astype(dtype)
  divisible = m % bm == 0 and k % bk == 0 and n % bn == 0
  f = functools.partial(padded_matmul, bm=bm, bk=bk, bn=bn,
                        bounds="logical" if divisible else "padded")
  tol = 1e-2 if dtype == "bfloat16" else 2.3e-5
  # bf16: each block's product is summed in f32 and rounded to bf16, and
  # pallasvm's f32 summation order is not XLA's, so a sum near a rounding
  # boundary may round the other way: one bf16 ulp (2^-8 relative; seen on
  # 2 of 156,000 elements, one of them a small value after cancellation).
  check(f, x, y, want=(x @ y).astype(jnp.float32), rtol=tol, atol=tol,
        as_float32=True,
        interpret_tol=(2.0**-7, 2.0**-8) if dtype == "bfloat16" else None)


# --- PallasCallBoundedSliceIndexingTest ---------------------------------------


def bounded_copy(index_map, bound=8, out_rows=8):
  def kernel(x_hbm, o_hbm):
    pltpu.emit_pipeline(
        copy_body, grid=(1,),
        in_specs=(pl.BlockSpec((pl.BoundedSlice(bound), 8, 128), index_map),),
        out_specs=pl.BlockSpec((out_rows, 8, 128), lambda i: (0, 0, 0)),
    )(x_hbm, o_hbm)

  return hbm_call(kernel, jax.ShapeDtypeStruct((out_rows, 8, 128), jnp.int32),
                  1)


@pytest.mark.parametrize("primitive", ANY_PATH)
def test_block_spec_bounded_slice_invalid_index(primitive):
  del primitive
  # The BoundedSlice dimension's index must be a pl.ds, not a block index.
  f = bounded_copy(lambda i: (0, 0, 0))
  x = jax.ShapeDtypeStruct((16, 8, 128), jnp.int32)
  for on_pallasvm_too in (False, True):
    with (tpu_mesh(), kernels_on_pallasvm() if on_pallasvm_too
          else contextlib.nullcontext(), pytest.raises(
              ValueError,
              match=r"Must return a (pl\.)?ds from the index_map for a"
                    r" BoundedSlice dimension.|when it should be pl.Slice")):
      jax.jit(f).trace(x)


@pytest.mark.parametrize("primitive", PRIMITIVE)
def test_block_spec_bounded_slice_static(primitive):
  del primitive
  f = bounded_copy(lambda i: (pl.ds(4, 8), 0, 0))
  x = iota((16, 8, 128), jnp.int32)
  check(f, x, want=x[4:12])


@pytest.mark.parametrize("primitive", PRIMITIVE)
def test_block_spec_bounded_slice_dynamic(primitive):
  del primitive
  # Row ranges of 3, 5, 3 and 5 rows, visited last to first.
  slices = jnp.array([[0, 3], [3, 8], [8, 11], [11, 16]], jnp.int32)[::-1]

  def kernel(x_hbm, slices_hbm, o_hbm):
    def scoped(slices_smem):
      pltpu.sync_copy(slices_hbm, slices_smem)

      def index_map(i):
        start = slices_smem[i, 0]
        return (pl.ds(start, slices_smem[i, 1] - start), 0, 0)

      spec = pl.BlockSpec((pl.BoundedSlice(16), 8, 128), index_map)
      pltpu.emit_pipeline(copy_body, grid=(slices.shape[0],),
                          in_specs=(spec,), out_specs=spec)(x_hbm, o_hbm)

    pl.run_scoped(scoped, pltpu.SMEM(slices.shape, slices.dtype))

  f = hbm_call(kernel, jax.ShapeDtypeStruct((16, 8, 128), jnp.int32), 2)
  x = iota((16, 8, 128), jnp.int32)
  check(f, x, slices, want=x)


# --- PallasCallPipelineTransformedRefsTest ------------------------------------


def grid_of(dynamic_grid, *sizes):
  """A static grid, or the same sizes as traced values (a dynamic grid)."""
  return tuple(jnp.array(s) for s in sizes) if dynamic_grid else sizes


DYNAMIC_GRID = [pytest.param(True, id="dynamic_grid"),
                pytest.param(False, id="static_grid")]


def copy_pipeline(x_ref, o_ref, block, index_map, steps, dynamic_grid,
                  semantics=pltpu.PARALLEL, body=copy_body):
  pltpu.emit_pipeline(
      body, grid=grid_of(dynamic_grid, *steps),
      in_specs=[pl.BlockSpec(block, index_map)],
      out_specs=[pl.BlockSpec(block, index_map)],
      dimension_semantics=(semantics,) * len(steps),
  )(x_ref, o_ref)


@pytest.mark.parametrize("primitive", PRIMITIVE)
@pytest.mark.parametrize("dynamic_grid", DYNAMIC_GRID)
def test_transformed_refs_as_inputs(primitive, dynamic_grid):
  del primitive

  def kernel(x_hbm, o_hbm):
    x_ref = x_hbm.at[1, ...]   # the pipeline's input is a view
    block = x_ref.shape[:-1] + (256,)
    copy_pipeline(x_ref, o_hbm, block,
                  lambda i: (0,) * (x_ref.ndim - 1) + (i,), (2,),
                  dynamic_grid, pltpu.ARBITRARY)

  x = iota((2, 16, 512))
  f = hbm_call(kernel, jax.ShapeDtypeStruct(x.shape[1:], x.dtype), 1)
  check(f, x, want=x[1])


@pytest.mark.parametrize("primitive", PRIMITIVE)
@pytest.mark.parametrize("dynamic_grid", DYNAMIC_GRID)
def test_transformed_refs_as_inputs_nested(primitive, dynamic_grid):
  del primitive

  def kernel(x_hbm, o_hbm):
    def outer_body(x_block, o_block):
      copy_pipeline(x_block, o_block, (16, 128), lambda i: (0, i), (2,),
                    dynamic_grid)

    copy_pipeline(x_hbm.at[1, ...], o_hbm, (16, 256), lambda i: (0, i), (2,),
                  dynamic_grid, body=outer_body)

  x = iota((2, 16, 512))
  f = hbm_call(kernel, jax.ShapeDtypeStruct(x.shape[1:], x.dtype), 1)
  check(f, x, want=x[1])


@pytest.mark.parametrize("primitive", PRIMITIVE)
@pytest.mark.parametrize("dynamic_grid", DYNAMIC_GRID)
def test_transformed_refs_as_inputs_nested_uneven(primitive, dynamic_grid):
  del primitive

  def kernel(x_hbm, o_hbm):
    def outer_body(x_block, o_block):
      # x_block is 256 rows, o_block 128; the inner pipeline copies the
      # first 64 of each, through views of views.
      o_block[...] = jnp.zeros(o_block.shape, o_block.dtype)
      x_view = x_block.at[0:128, :].at[pl.ds(0, 64), :]
      o_view = o_block.at[pl.ds(0, 64), :]
      copy_pipeline(x_view, o_view, (32, 128), lambda i: (i, 0), (2,),
                    dynamic_grid)

    pltpu.emit_pipeline(
        outer_body, grid=grid_of(dynamic_grid, 2),
        in_specs=[pl.BlockSpec((256, 128), lambda i: (i, 0))],
        out_specs=[pl.BlockSpec((128, 128), lambda i: (i, 0))],
        dimension_semantics=(pltpu.PARALLEL,),
    )(x_hbm, o_hbm)

  x = iota((512, 128))
  f = hbm_call(kernel, jax.ShapeDtypeStruct((256, 128), x.dtype), 1)
  want = jnp.zeros((256, 128), jnp.float32)
  want = want.at[0:64].set(x[0:64]).at[128:192].set(x[256:320])
  check(f, x, want=want)


@pytest.mark.parametrize("dynamic_grid", DYNAMIC_GRID)
@pytest.mark.parametrize("primitive", PRIMITIVE_ONLY)
def test_transformed_refs_as_inputs_nested_bitcast(primitive, dynamic_grid):
  # JAX runs this case on the primitive path only.
  del primitive
  from jax._src.state import utils as state_utils

  def kernel(x_hbm, o_hbm):
    def outer_body(x_block, o_block):
      # 64 f32 rows seen as 128 int16 rows, copied in 4 blocks of 32.
      copy_pipeline(x_block.at[0:64, :].bitcast(jnp.int16),
                    o_block.bitcast(jnp.int16), (32, 128), lambda i: (i, 0),
                    (4,), dynamic_grid)

    pltpu.emit_pipeline(
        outer_body, grid=grid_of(dynamic_grid, 2),
        in_specs=[pl.BlockSpec((128, 128), lambda i: (i, 0))],
        out_specs=[pl.BlockSpec((64, 128), lambda i: (i, 0))],
        dimension_semantics=(pltpu.PARALLEL,),
    )(x_hbm, o_hbm)

  x = iota((256, 128))
  f = hbm_call(kernel, jax.ShapeDtypeStruct((128, 128), x.dtype), 1)
  x16 = state_utils.bitcast(x, jnp.int16)
  want16 = jnp.zeros((256, 128), jnp.int16)
  want16 = want16.at[0:128].set(x16[0:128]).at[128:256].set(x16[256:384])
  check(f, x, want=state_utils.bitcast(want16, jnp.float32))


@pytest.mark.parametrize("dynamic_grid", DYNAMIC_GRID)
@pytest.mark.parametrize("primitive", PRIMITIVE_ONLY)
def test_transformed_refs_as_inputs_nested_3level(primitive, dynamic_grid):
  # JAX runs this case on the primitive path only.
  del primitive

  def kernel(x_hbm, o_hbm):
    def middle_body(x_block, o_block):
      copy_pipeline(x_block, o_block, (16, 512), lambda i: (0, i), (8,),
                    dynamic_grid)

    def outer_body(x_block, o_block):
      copy_pipeline(x_block, o_block, (16, 4096), lambda i: (0, i), (8,),
                    dynamic_grid, body=middle_body)

    copy_pipeline(x_hbm.at[1, ...], o_hbm, (16, 32768), lambda i: (0, i),
                  (8,), dynamic_grid, body=outer_body)

  x = iota((2, 16, 262144))
  f = hbm_call(kernel, jax.ShapeDtypeStruct(x.shape[1:], x.dtype), 1)
  check(f, x, want=x[1])


@pytest.mark.parametrize("primitive", paths(NEEDS_EMPTY_REF))
@pytest.mark.parametrize("dynamic_grid", DYNAMIC_GRID)
def test_transformed_refs_as_inputs_nested_hbm_passthrough(primitive,
                                                           dynamic_grid):
  del primitive

  def kernel(x_hbm, y_hbm, o_hbm):
    y_vmem = jax.empty_ref(jax.ShapeDtypeStruct((16, 512), jnp.float32),
                           pltpu.VMEM)

    def outer_body(x_block, o_block):
      pltpu.sync_copy(y_hbm, y_vmem)

      def inner_body(x_ref, o_ref):
        o_ref[...] = x_ref[...] + y_vmem[...]

      copy_pipeline(x_block, o_block, (16, 512), lambda i: (0, i), (8,),
                    dynamic_grid, body=inner_body)

    copy_pipeline(x_hbm.at[1, ...], o_hbm, (16, 4096), lambda i: (0, i),
                  (8,), dynamic_grid, body=outer_body)

  x = iota((2, 16, 32768))
  y = jnp.ones((16, 512), jnp.float32)
  f = hbm_call(kernel, jax.ShapeDtypeStruct(x.shape[1:], x.dtype), 2)
  check(f, x, y, want=x[1] + 1, interpret_raises=INTERPRET_LACKS_EMPTY_REF)


@pytest.mark.parametrize("primitive", PRIMITIVE)
@pytest.mark.parametrize("dynamic_grid", DYNAMIC_GRID)
def test_transformed_refs_as_inputs_nested_mixed_grids(primitive,
                                                       dynamic_grid):
  del primitive

  def kernel(x_hbm, o_hbm):
    def outer_body(x_block, o_block):
      copy_pipeline(x_block, o_block, (32, 512), lambda i: (0, i), (8,),
                    dynamic_grid)

    copy_pipeline(x_hbm.at[1, ...], o_hbm, (32, 4096),
                  lambda i, j: (i, j), (8, 8), dynamic_grid, body=outer_body)

  x = iota((2, 256, 32768))
  f = hbm_call(kernel, jax.ShapeDtypeStruct(x.shape[1:], x.dtype), 1)
  check(f, x, want=x[1])


@pytest.mark.parametrize("primitive", paths(NEEDS_EMPTY_REF))
@pytest.mark.parametrize("dynamic_grid", DYNAMIC_GRID)
def test_transformed_refs_as_inputs_nested_sequential(primitive,
                                                      dynamic_grid):
  del primitive

  def kernel(x_hbm, o_hbm):
    def outer_body(x_block, o_block):
      # Two inner pipelines in a row, through a VMEM temporary.
      tmp = jax.empty_ref(jax.ShapeDtypeStruct((16, 4096), jnp.float32),
                          pltpu.VMEM)

      def double(x_ref, o_ref):
        o_ref[...] = x_ref[...] * 2

      def increment(x_ref, o_ref):
        o_ref[...] = x_ref[...] + 1

      copy_pipeline(x_block, tmp, (16, 512), lambda i: (0, i), (8,),
                    dynamic_grid, body=double)
      copy_pipeline(tmp, o_block, (16, 512), lambda i: (0, i), (8,),
                    dynamic_grid, body=increment)

    copy_pipeline(x_hbm.at[1, ...], o_hbm, (16, 4096), lambda i: (0, i),
                  (8,), dynamic_grid, body=outer_body)

  x = iota((2, 16, 32768))
  f = hbm_call(kernel, jax.ShapeDtypeStruct(x.shape[1:], x.dtype), 1)
  check(f, x, want=x[1] * 2 + 1,
        interpret_raises=INTERPRET_LACKS_EMPTY_REF)


# --- PallasCallPipelineNonFlatArgsTest ----------------------------------------


def half(n=256):
  return pl.BlockSpec((n,), lambda i: (i,))


# Inputs nested as [(x,), (), (y, z)], outputs as [(), (xy, z)].
def nested_in_specs(n=256):
  return ([(half(n),), (), (half(n), half(n))],)


def nested_out_specs(n=256):
  return ([(), (half(n), half(n))],)


NESTED_OUT = [(), (jax.ShapeDtypeStruct((512,), jnp.float32),
                   jax.ShapeDtypeStruct((512,), jnp.float32))]


def nested_call(body):
  """A kernel running `body` in a pipeline over x, y, z -> (x + y, z), its
  operands and specs nested as in JAX's cases."""
  def kernel(x_hbm, y_hbm, z_hbm, xy_hbm, z_out_hbm):
    body(nested_in_specs(), nested_out_specs(),
         [(x_hbm,), (), (y_hbm, z_hbm)], [(), (xy_hbm, z_out_hbm)])

  flat_out = list(NESTED_OUT[1])
  call = hbm_call(kernel, flat_out, 3)

  def f(x, y, z):
    return [(), tuple(call(x, y, z))]
  return f


def check_nested(body, **kw):
  x = jnp.arange(512, dtype=jnp.float32)
  out = check(nested_call(body), x, x * 2, x * 3,
              want=[(), (x + x * 2, x * 3)], **kw)
  assert len(out) == 2 and out[0] == ()


@pytest.mark.parametrize("primitive", PRIMITIVE)
@pytest.mark.parametrize("dynamic_grid", DYNAMIC_GRID)
def test_non_flat_args(primitive, dynamic_grid):
  del primitive

  def body(in_refs, out_refs):
    out_refs[1][0][...] = in_refs[0][0][...] + in_refs[2][0][...]
    out_refs[1][1][...] = in_refs[2][1][...]

  def run(in_specs, out_specs, ins, outs):
    pltpu.emit_pipeline(body, grid=grid_of(dynamic_grid, 2),
                        in_specs=in_specs, out_specs=out_specs)(ins, outs)

  check_nested(run)


@pytest.mark.parametrize("primitive", paths(NEEDS_EMPTY_REF))
@pytest.mark.parametrize("dynamic_grid", DYNAMIC_GRID)
def test_non_flat_args_and_scratch(primitive, dynamic_grid):
  del primitive

  def body(in_refs, out_refs):
    vmem = jax.ShapeDtypeStruct((256,), jnp.float32)
    sum_scratch = jax.empty_ref(vmem, memory_space=pltpu.VMEM)
    z_scratch = [jax.empty_ref(vmem, memory_space=pltpu.VMEM)]
    sum_scratch[...] = in_refs[0][0][...] + in_refs[2][0][...]
    out_refs[1][0][...] = sum_scratch[...]
    z_scratch[0][...] = in_refs[2][1][...]
    out_refs[1][1][...] = z_scratch[0][...]

  def run(in_specs, out_specs, ins, outs):
    pltpu.emit_pipeline(body, grid=grid_of(dynamic_grid, 2),
                        in_specs=in_specs, out_specs=out_specs)(ins, outs)

  check_nested(run, interpret_raises=INTERPRET_LACKS_EMPTY_REF)


@pytest.mark.parametrize("primitive", PRIMITIVE)
@pytest.mark.parametrize("dynamic_grid", DYNAMIC_GRID)
def test_non_flat_args_nested(primitive, dynamic_grid):
  del primitive

  def inner_body(in_refs, out_refs):
    out_refs[1][0][...] = in_refs[0][0][...] + in_refs[2][0][...]
    out_refs[1][1][...] = in_refs[2][1][...]

  def outer_body(outer_in, outer_out):
    pltpu.emit_pipeline(inner_body, grid=grid_of(dynamic_grid, 2),
                        in_specs=nested_in_specs(128),
                        out_specs=nested_out_specs(128))(outer_in, outer_out)

  def run(in_specs, out_specs, ins, outs):
    pltpu.emit_pipeline(outer_body, grid=grid_of(dynamic_grid, 2),
                        in_specs=in_specs, out_specs=out_specs)(ins, outs)

  check_nested(run)


@pytest.mark.parametrize("primitive", paths(NEEDS_EMPTY_REF))
@pytest.mark.parametrize("dynamic_grid", DYNAMIC_GRID)
def test_non_flat_args_and_scratch_nested(primitive, dynamic_grid):
  del primitive

  def inner_body(in_refs, out_refs):
    x_scratch = jax.empty_ref(jax.ShapeDtypeStruct((128,), jnp.float32),
                              memory_space=pltpu.VMEM)
    x_scratch[...] = in_refs[0][0][...]
    out_refs[1][0][...] = x_scratch[...]
    out_refs[1][1][...] = in_refs[2][0][...]

  def outer_body(outer_in, outer_out):
    vmem = jax.ShapeDtypeStruct((256,), jnp.float32)
    sum_scratch = jax.empty_ref(vmem, memory_space=pltpu.VMEM)
    z_scratch = [jax.empty_ref(vmem, memory_space=pltpu.VMEM)]
    sum_scratch[...] = outer_in[0][0][...] + outer_in[2][0][...]
    z_scratch[0][...] = outer_in[2][1][...]
    # The inner pipeline reads the outer body's scratch refs.
    pltpu.emit_pipeline(
        inner_body, grid=grid_of(dynamic_grid, 2),
        in_specs=([(half(128),), (), (half(128),)],),
        out_specs=nested_out_specs(128),
    )([(sum_scratch,), (), (z_scratch[0],)], outer_out)

  def run(in_specs, out_specs, ins, outs):
    pltpu.emit_pipeline(outer_body, grid=grid_of(dynamic_grid, 2),
                        in_specs=in_specs, out_specs=out_specs)(ins, outs)

  check_nested(run, interpret_raises=INTERPRET_LACKS_EMPTY_REF)


# --- PallasCallPipelineEffectsTest --------------------------------------------
# JAX's cases check the effects of the emit_pipeline primitive's jaxpr; here
# each also runs its kernel.


def pipeline_effects(kernel, *avals):
  jaxpr = jax.make_jaxpr(kernel)(*avals)
  return jaxpr.jaxpr.invars, jaxpr.effects


@pytest.mark.parametrize("primitive", PRIMITIVE_ONLY)
def test_basic_pipeline_effects(primitive):
  del primitive

  def body(x, y, o):
    o[...] = x[...] + y[...]

  def kernel(x_ref, y_ref, o_ref):
    pltpu.emit_pipeline(body, grid=(2,), in_specs=[half(), half()],
                        out_specs=[half()])(x_ref, y_ref, o_ref)

  ref = lambda: state.shaped_array_ref((512,), jnp.float32)
  (x, y, o), effects = pipeline_effects(kernel, ref(), ref(), ref())
  assert effects == {state.ReadEffect(x), state.ReadEffect(y),
                     state.WriteEffect(o)}
  f = hbm_call(kernel, jax.ShapeDtypeStruct((512,), jnp.float32), 2)
  a = jnp.arange(512, dtype=jnp.float32)
  check(f, a, a * 3, want=a * 4)


@pytest.mark.parametrize("primitive", PRIMITIVE_ONLY)
def test_dynamic_grid_and_consts_effects(primitive):
  del primitive
  c = jnp.array(1.5, jnp.float32)   # closed over by the body

  def body(x, o):
    o[...] = x[...] * c

  def kernel(steps, x_ref, o_ref):
    pltpu.emit_pipeline(body, grid=(steps,), in_specs=[half()],
                        out_specs=[half()])(x_ref, o_ref)

  ref = lambda: state.shaped_array_ref((512,), jnp.float32)
  (_, x, o), effects = pipeline_effects(
      kernel, jax.ShapeDtypeStruct((), jnp.int32), ref(), ref())
  assert effects == {state.ReadEffect(x), state.WriteEffect(o)}

  # A pallas_call's kernel may not capture array constants: to run it, the
  # body closes over a value read from SMEM instead.
  def run(steps_smem, c_smem, x_hbm, o_hbm):
    c_value = c_smem[0]

    def body_of_run(x, o):
      o[...] = x[...] * c_value

    pltpu.emit_pipeline(body_of_run, grid=(steps_smem[0],),
                        in_specs=[half()], out_specs=[half()])(x_hbm, o_hbm)

  smem = pl.BlockSpec(memory_space=pltpu.SMEM)
  f = pl.pallas_call(run, out_shape=jax.ShapeDtypeStruct((512,), jnp.float32),
                     in_specs=[smem, smem, ANY], out_specs=ANY,
                     interpret=interpret())
  a = jnp.arange(512, dtype=jnp.float32)
  check(f, jnp.array([2], jnp.int32), c.reshape(1), a, want=a * 1.5)


@pytest.mark.parametrize("primitive", PRIMITIVE_ONLY)
def test_transformed_refs_effects(primitive):
  del primitive

  def kernel(x_ref, o_ref):
    pltpu.emit_pipeline(copy_body, grid=(2,), in_specs=[half()],
                        out_specs=[half()])(x_ref.at[1, ...], o_ref)

  (x, o), effects = pipeline_effects(
      kernel, state.shaped_array_ref((2, 512), jnp.float32),
      state.shaped_array_ref((512,), jnp.float32))
  assert effects == {state.ReadEffect(x), state.WriteEffect(o)}
  f = hbm_call(kernel, jax.ShapeDtypeStruct((512,), jnp.float32), 1)
  a = iota((2, 512))
  check(f, a, want=a[1])
