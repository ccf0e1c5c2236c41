"""JAX's own TPU interpret-mode tests as pallasvm's spec.

Each test here reproduces one case of JAX's
tests/pallas/tpu_pallas_interpret_test.py (jax-v0.10.2), is named after it
(the parameters of the case in brackets) and checks what that case checks:
the same kernel, the same expected values (computed with jnp/numpy or
derived by hand, never from pallasvm's own output), the same exception type
and message text where the case expects an error. Every kernel must run on
pallasvm: the `on_pallasvm` fixture installs the bridge, makes JAX's TPU
interpreter raise if entered, and checks that the bridge lowered at least
one pallas_call in each test that passes.

A case that needs a feature pallasvm lacks yet is a strict xfail with one of
the NEEDS_* marks below (one per feature, naming it), so that the change
adding the feature turns those cases green and must remove the mark.
"""

import contextlib
import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.pallas.mosaic.interpret import interpret_pallas_call as jax_interpreter
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

import pallasvm
from pallasvm import bridge
from pallasvm_only import kernels_on_pallasvm

if bridge.library_path() is None or not bridge.library_path().exists():
  pytest.skip("the bridge library (libpallasvm_xla.so) is not built",
              allow_module_level=True)

# What pallasvm raises for a feature it lacks yet.
UNSUPPORTED = pallasvm.UnsupportedError


def needs(feature: str, raises=UNSUPPORTED):
  return pytest.mark.xfail(strict=True, raises=raises,
                           reason=f"needs {feature}")


class MessageMismatch(AssertionError):
  """pallasvm raised the exception type a JAX case expects, without the text
  the case matches."""


@contextlib.contextmanager
def raises_like_jax(expected_type, match=None):
  """Like pytest.raises(expected_type, match=match), for an error JAX's case
  expects. pallasvm's refusal of a feature it lacks (UNSUPPORTED, or
  NotImplementedError for an InterpretParams field, any CompileError)
  passes through as it is,
  so that the case's NEEDS_* mark sees it; the right type with the wrong
  text is MessageMismatch."""
  try:
    yield
  except (pallasvm.CompileError, NotImplementedError) as e:
    if not isinstance(e, expected_type) or (
        match and not re.search(match, str(e))):
      raise
  except expected_type as e:
    if match and not re.search(match, str(e)):
      raise MessageMismatch(
          f"expected the text {match!r} in the error: {e}") from e
  else:
    pytest.fail(f"DID NOT RAISE {expected_type.__name__}")


# One mark per missing feature. `raises` is what pallasvm raises today for
# the first missing feature such a case meets.
# pl.core_map / pl.kernel(mesh=...) (mpmd_map): refused at lowering.


@pytest.fixture(autouse=True)
def on_pallasvm(request):
  pltpu.reset_tpu_interpret_mode_state()  # races: None, as a fresh process
  before = pallasvm.stats()
  with kernels_on_pallasvm():
    yield
  report = getattr(request.node, "call_report", None)
  if report is not None and report.passed:
    # A case passes on a kernel pallasvm ran, or on an error JAX's case
    # expects that pallasvm's lowering raised.
    after = pallasvm.stats()
    assert (after["lowerings"] > before["lowerings"] or
            after["refusals"] > before["refusals"]), (
                "no pallas_call reached pallasvm")


HBM_SPACES = [(pltpu.HBM, "HBM"), (pl.ANY, "ANY")]


HBM_CASES = [pytest.param(s, id=n) for s, n in HBM_SPACES]
OOB_READS = ["raise", "uninitialized"]
BUFFER_BOUNDS = ["logical", "padded"]


def tpu_v6e_mesh():
  """The abstract TPU device JAX's padded-bounds cases trace under (padding
  is computed from the device kind)."""
  return jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh(
      (), (), abstract_device=jax.sharding.AbstractDevice("TPU v6e", 1, "tpu")))


@dataclasses.dataclass(frozen=True)
class Visit:
  """A grid point and the core that ran it, as a grid_point_recorder sees."""
  point: tuple[int, ...]
  core: int


class Recorder:
  """A grid_point_recorder collecting Visits; `visits` orders them by core
  (stable, so each core's points stay in the order it ran them)."""

  def __init__(self):
    self._seen = []

  def __call__(self, token, grid_point, core_id):
    self._seen.append(Visit(tuple(int(c) for c in grid_point), int(core_id)))
    return token

  @property
  def visits(self):
    return sorted(self._seen, key=lambda v: v.core)


# --- Grid, block specs and bounds ---------------------------------------------


@pytest.mark.parametrize("hbm_space", HBM_CASES)
def test_revisiting_is_an_error(hbm_space):
  def kernel(x_hbm, o1_ref, o2_ref):
    del x_hbm, o1_ref, o2_ref

  def call():
    # Output 1's block index (j // 2, i % 2) returns to (0, 0) at (2, 0).
    return pl.pallas_call(
        kernel, grid=(4, 4),
        in_specs=[pl.BlockSpec(memory_space=hbm_space)],
        out_specs=[pl.BlockSpec((4, 128), lambda i, j: (i, j // 2)),
                   pl.BlockSpec((4, 128), lambda i, j: (j // 2, i % 2))],
        out_shape=[jax.ShapeDtypeStruct((16, 256), jnp.float32)] * 2,
        interpret=pltpu.InterpretParams(),
    )(jnp.zeros((8, 128), jnp.float32))

  with raises_like_jax(Exception,
                     match=r"Revisited block .* of output 1 in iteration \(2, 0\)"):
    jax.jit(call)()[0].block_until_ready()


def test_matmul_example():
  def kernel(x_ref, y_ref, z_ref):
    z_ref[...] = x_ref[...] @ y_ref[...]

  @jax.jit
  def matmul(x, y):
    (m, k), (_, n) = x.shape, y.shape
    return pl.pallas_call(
        kernel, grid=(2, 2),
        in_specs=[pl.BlockSpec((m // 2, k), lambda i, j: (i, 0)),
                  pl.BlockSpec((k, n // 2), lambda i, j: (0, j))],
        out_specs=pl.BlockSpec((m // 2, n // 2), lambda i, j: (i, j)),
        out_shape=jax.ShapeDtypeStruct((m, n), x.dtype),
        interpret=pltpu.InterpretParams(),
    )(x, y)

  kx, ky = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (1024, 1024))
  y = jax.random.normal(ky, (1024, 1024))
  np.testing.assert_allclose(matmul(x, y), x @ y, atol=1e-3)


@pytest.mark.parametrize("out_of_bounds_reads", [
    "raise", "uninitialized"])
def test_out_of_bounds_block_spec(out_of_bounds_reads):
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...]

  def call(in_shift, out_shift):
    return pl.pallas_call(
        kernel, grid=(4,),
        in_specs=[pl.BlockSpec((4, 128), lambda i: (i + in_shift, 0))],
        out_specs=pl.BlockSpec((4, 128), lambda i: (i + out_shift, 0)),
        out_shape=jax.ShapeDtypeStruct((16, 128), jnp.float32),
        interpret=pltpu.InterpretParams(
            out_of_bounds_reads=out_of_bounds_reads),
    )(jnp.zeros((16, 128), jnp.float32))

  run = jax.jit(call, static_argnums=(0, 1))
  # The input's last block index (4) is past its 4 blocks.
  if out_of_bounds_reads == "uninitialized":
    out = np.asarray(run(1, 0))
    np.testing.assert_equal(out[:12], 0.0)
    assert np.isnan(out[12:]).all()
  else:
    with raises_like_jax(Exception, match="Out-of-bounds block index .* for input"):
      run(1, 0)
    # Output blocks 2..5 of 4: out of bounds whatever out_of_bounds_reads is.
    with raises_like_jax(Exception, match="Out-of-bounds block index .* for output"):
      run(0, 2)


def test_inputs_and_outputs_not_evenly_divisible_by_block_shape():
  def kernel(x_ref, y_ref):
    y_ref[...] = x_ref[...] + 1.0

  shape = (7, 768, 640)  # blocks (2, 512, 256): partial in every dimension
  x = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)
  spec = pl.BlockSpec((2, 512, 256), lambda i, j, k: (i, j, k))
  y = jax.jit(pl.pallas_call(
      kernel, grid=(4, 2, 3), in_specs=[spec], out_specs=spec,
      out_shape=jax.ShapeDtypeStruct(shape, jnp.float32),
      interpret=pltpu.InterpretParams()))(x)
  np.testing.assert_array_equal(y, x + 1.0)


@pytest.mark.parametrize("out_of_bounds_reads", [
    "raise", "uninitialized"])
def test_out_of_bounds_read_index(out_of_bounds_reads):
  def kernel(bounds_ref, x_ref, o_ref):
    # Sums x[x[bounds[0]]] .. x[x[bounds[1]] - 1].
    first, stop = x_ref[bounds_ref[0]], x_ref[bounds_ref[1]]

    def step(carry):
      i, total = carry
      return i + 1, total + x_ref[i]

    o_ref[0] = jax.lax.while_loop(lambda c: c[0] < stop, step,
                                  (first, jnp.int32(0)))[1]

  smem = pl.BlockSpec(memory_space=pltpu.SMEM)
  run = jax.jit(pl.pallas_call(
      kernel, in_specs=[smem, smem], out_specs=smem,
      out_shape=jax.ShapeDtypeStruct((1,), jnp.int32),
      interpret=pltpu.InterpretParams(out_of_bounds_reads=out_of_bounds_reads)))

  bounds = jnp.array([0, 1], jnp.int32)
  assert run(bounds, jnp.array([2, 5, 9, 15, 17], jnp.int32)) == 9 + 15 + 17
  # Now the loop runs to x[5], one past the end.
  past_end = jnp.array([2, 6, 9, 15, 17], jnp.int32)
  if out_of_bounds_reads == "uninitialized":
    # int32's largest value (the fill) plus 41 wraps below zero.
    assert run(bounds, past_end) < 0
  else:
    with raises_like_jax(Exception, match="Out-of-bounds read"):
      run(bounds, past_end)


@pytest.mark.parametrize("out_of_bounds_reads,hbm_space", [
    pytest.param(r, s, id=f"{r}-{n}")
    for r in OOB_READS for s, n in HBM_SPACES])
def test_out_of_bounds_read_range(out_of_bounds_reads, hbm_space):
  def kernel(x_hbm, o_ref, sem):
    # Rows 4..11 of an 8-row array, column 1 of its middle dimension.
    pltpu.async_copy(x_hbm.at[pl.ds(jnp.int32(4), 8), 1], o_ref, sem).wait()

  run = jax.jit(pl.pallas_call(
      kernel,
      in_specs=[pl.BlockSpec(memory_space=hbm_space)],
      out_specs=pl.BlockSpec(memory_space=pltpu.VMEM),
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.SemaphoreType.DMA],
      interpret=pltpu.InterpretParams(out_of_bounds_reads=out_of_bounds_reads)))
  x = jnp.zeros((8, 4, 128), jnp.float32)
  if out_of_bounds_reads == "raise":
    with raises_like_jax(Exception, match="Out-of-bounds read"):
      run(x).block_until_ready()
  else:
    out = np.asarray(run(x))
    np.testing.assert_equal(out[:4], 0.0)
    assert np.isnan(out[4:]).all()


def _write_cases():
  """(buffer_bounds, out_of_bounds_reads, hbm space) as JAX's product."""
  for bounds in BUFFER_BOUNDS:
    for reads in OOB_READS:
      for space, name in HBM_SPACES:
        yield pytest.param(bounds, reads, space, id=f"{bounds}-{reads}-{name}")


@pytest.mark.parametrize("buffer_bounds,out_of_bounds_reads,hbm_space",
                         list(_write_cases()))
def test_out_of_bounds_write_index(buffer_bounds, out_of_bounds_reads,
                                   hbm_space):
  def kernel(x_hbm, o_ref, scratch):
    # Row 10 of a 10-row scratch buffer: out of its logical bounds, inside
    # its allocation padded to 16 rows. With padding the write is dropped and
    # the read gives the fill value.
    pltpu.sync_copy(x_hbm.at[0], scratch.at[10])
    o_ref[0, :] = scratch[10, :]

  run = jax.jit(pl.pallas_call(
      kernel,
      in_specs=[pl.BlockSpec(memory_space=hbm_space)],
      out_specs=pl.BlockSpec(memory_space=pltpu.VMEM),
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((10, 128), jnp.float32)],
      interpret=pltpu.InterpretParams(buffer_bounds=buffer_bounds,
                                      out_of_bounds_reads=out_of_bounds_reads)))
  x = jnp.zeros((8, 128), jnp.float32)
  if buffer_bounds == "logical":
    # Out-of-bounds writes raise whatever out_of_bounds_reads says.
    with raises_like_jax(Exception, match="Out-of-bounds write"):
      run(x).block_until_ready()
  else:
    with tpu_v6e_mesh():
      assert np.isnan(np.asarray(run(x))).all()


@pytest.mark.parametrize("buffer_bounds,out_of_bounds_reads,hbm_space",
                         list(_write_cases()))
def test_out_of_bounds_write_range(buffer_bounds, out_of_bounds_reads,
                                   hbm_space):
  def kernel(x_hbm, o_ref, scratch):
    # Rows 4..11 of a 10-row scratch buffer (padded to 16 rows).
    rows = pl.ds(jnp.int32(4), 8)
    pltpu.sync_copy(x_hbm, scratch.at[rows])
    o_ref[...] = scratch[rows]

  run = jax.jit(pl.pallas_call(
      kernel,
      in_specs=[pl.BlockSpec(memory_space=hbm_space)],
      out_specs=pl.BlockSpec(memory_space=pltpu.VMEM),
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((10, 128), jnp.float32)],
      interpret=pltpu.InterpretParams(out_of_bounds_reads=out_of_bounds_reads,
                                      buffer_bounds=buffer_bounds)))
  x = jnp.zeros((8, 128), jnp.float32)
  if buffer_bounds == "logical":
    with raises_like_jax(Exception, match="Out-of-bounds write"):
      run(x).block_until_ready()
  else:
    with tpu_v6e_mesh():
      out = np.asarray(run(x))
      np.testing.assert_equal(out[:6], 0.0)  # scratch rows 4..9
      assert np.isnan(out[6:]).all()         # padding rows 10..11


@pytest.mark.parametrize("buffer_bounds,memory_space", [
    pytest.param(b, s, id=f"{b}-{n}")
    for b in BUFFER_BOUNDS
    for s, n in [(pltpu.SMEM, "SMEM"), (pltpu.VMEM, "VMEM")]])
def test_smem_scratch_is_never_padded(buffer_bounds, memory_space):
  def kernel(x_ref, o_ref, scratch):
    # Row 10 of a (10, 128) scratch buffer: padding makes it in bounds for
    # VMEM, never for SMEM.
    pltpu.sync_copy(x_ref.at[0], scratch.at[10])
    o_ref[0, :] = scratch[10, :]

  run = jax.jit(pl.pallas_call(
      kernel,
      in_specs=[pl.BlockSpec(memory_space=pltpu.VMEM)],
      out_specs=pl.BlockSpec(memory_space=pltpu.VMEM),
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[memory_space((10, 128), jnp.float32)],
      interpret=pltpu.InterpretParams(buffer_bounds=buffer_bounds,
                                      out_of_bounds_reads="raise")))
  x = jnp.zeros((8, 128), jnp.float32)
  if memory_space == pltpu.VMEM and buffer_bounds == "padded":
    with tpu_v6e_mesh():
      assert np.isnan(np.asarray(run(x))).all()
  elif memory_space == pltpu.SMEM:
    with tpu_v6e_mesh():
      with raises_like_jax(Exception, match="Out-of-bounds write"):
        run(x).block_until_ready()
  else:
    with raises_like_jax(Exception, match="Out-of-bounds write"):
      run(x).block_until_ready()


# --- Masked stores ------------------------------------------------------------


def test_masked_store():
  def kernel(row_ref, col_ref, x_ref, mask_ref, o_ref):
    o_ref[...] = jnp.zeros_like(o_ref)
    # A (16, 256) window at (8, 128) of a (16, 256) output: only its
    # masked-in elements must be in bounds.
    window = o_ref.at[pl.ds(pl.multiple_of(row_ref[0], 8), 16),
                      pl.ds(pl.multiple_of(col_ref[0], 128), 256)]
    pltpu.store(window, x_ref[...], mask=mask_ref[...])

  run = jax.jit(pl.pallas_call(
      kernel,
      grid_spec=pltpu.PrefetchScalarGridSpec(num_scalar_prefetch=2),
      out_shape=jax.ShapeDtypeStruct((16, 256), jnp.float32),
      interpret=pltpu.InterpretParams()))
  row, col = jnp.array([8], jnp.int32), jnp.array([128], jnp.int32)
  x = jnp.ones((16, 256), jnp.float32)

  only_first = np.zeros((16, 256), bool)
  only_first[0, 0] = True
  y = run(row, col, x, jnp.asarray(only_first))
  expected = np.zeros((16, 256), np.float32)
  expected[8, 128] = 1.0
  np.testing.assert_array_equal(y, expected)

  with raises_like_jax(Exception, match="Out-of-bounds masked swap"):
    run(row, col, x, jnp.ones((16, 256), bool)).block_until_ready()


def test_masked_store_to_padded_scratch_buffer():
  def kernel(row_ref, col_ref, x_ref, mask_ref, o_ref, scratch):
    scratch[...] = jnp.zeros_like(scratch)
    # An (8, 128) window at (8, 128) of a (10, 150) scratch buffer padded to
    # (16, 256): the 2 x 22 elements inside (10, 150) keep what is stored,
    # the padding reads as the fill value.
    window = (pl.ds(pl.multiple_of(row_ref[0], 8), 8),
              pl.ds(pl.multiple_of(col_ref[0], 128), 128))
    pltpu.store(scratch.at[window], x_ref[...], mask=mask_ref[...])
    o_ref[...] = scratch[window]

  run = jax.jit(pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((10, 150), jnp.float32)],
      interpret=pltpu.InterpretParams(buffer_bounds="padded",
                                      out_of_bounds_reads="uninitialized")))
  with tpu_v6e_mesh():
    out = np.asarray(run(jnp.array([8], jnp.int32), jnp.array([128], jnp.int32),
                         jnp.ones((8, 128), jnp.float32),
                         jnp.ones((8, 128), bool)))
  np.testing.assert_array_equal(out[:2, :22], np.ones((2, 22), np.float32))
  assert np.isnan(out[2:, :]).all()
  assert np.isnan(out[:, 22:]).all()


# --- Scalar prefetch, dynamic grids, aliasing ---------------------------------


def test_scalar_prefetch_example():
  def kernel(block_index_ref, x_ref, o_ref):
    del block_index_ref
    o_ref[...] = x_ref[...]

  def block_dynamic_slice(x, starts, sizes):
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=1, grid=(1, 1),
        in_specs=[pl.BlockSpec(sizes, lambda i, j, idx: (idx[0], idx[1]))],
        out_specs=pl.BlockSpec(sizes, lambda *_: (0, 0)))
    block_index = jnp.array([starts[0] // sizes[0], starts[1] // sizes[1]])
    return pl.pallas_call(
        kernel, grid_spec=grid_spec,
        out_shape=jax.ShapeDtypeStruct(sizes, x.dtype),
        interpret=pltpu.InterpretParams())(block_index, x)

  x = jnp.arange(512 * 512, dtype=jnp.int32).reshape(512, 512)
  got = jax.jit(block_dynamic_slice, static_argnums=(2,))(
      x, jnp.array([128, 256]), (128, 128))
  np.testing.assert_array_equal(
      got, jax.lax.dynamic_slice(x, (128, 256), (128, 128)))


def test_dynamic_grid_and_aliasing():
  def kernel(add_ref, unused_ref, x_ref, o_ref):
    del unused_ref
    o_ref[...] = x_ref[...] + add_ref[0].astype(x_ref.dtype)

  steps = jax.random.randint(jax.random.key(0), (), 10, 20, dtype=jnp.int32)

  @jax.jit
  def f(add, unused, x):
    whole = pl.BlockSpec(x.shape, lambda i, *_: (0, 0))
    return pl.pallas_call(
        kernel,
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=2, grid=(steps,), in_specs=[whole],
            out_specs=whole),
        out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
        input_output_aliases={2: 0},
        interpret=pltpu.InterpretParams())(add, unused, x)

  x = jnp.arange(32 * 128, dtype=jnp.float32).reshape(32, 128)
  # The input block is copied in once, before the first step, however many
  # steps run: x + 1, not x + steps.
  y = f(jnp.array([1], jnp.int32), jnp.array([2], jnp.int32), x)
  np.testing.assert_allclose(y, x + 1.0)


def test_aliasing():
  def kernel(x_ref, o_ref, count_ref):
    @pl.when((pl.program_id(0) == 0) & (pl.program_id(1) == 0))
    def _():
      count_ref[0] = jnp.int32(0)

    count = count_ref[0]
    count_ref[0] = count + 1
    o_ref[...] = x_ref[...] + count.astype(x_ref.dtype)

  x = jnp.zeros((4 * 8, 4 * 128), jnp.float32)
  y = pl.pallas_call(
      kernel, grid=(4, 4),
      in_specs=[pl.BlockSpec((8, 128), lambda i, j: (i, j))],
      out_specs=pl.BlockSpec((8, 128), lambda i, j: (j, i)),
      out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
      scratch_shapes=[pltpu.SMEM((1,), jnp.int32)],
      input_output_aliases={0: 0},
      interpret=pltpu.InterpretParams())(x)

  # Step t = 4 i + j reads block (i, j) of the aliased buffer, as earlier
  # steps left it, and writes it plus t to block (j, i).
  blocks = np.zeros((4, 4))
  for t, (i, j) in enumerate(np.ndindex(4, 4)):
    blocks[j, i] = blocks[i, j] + t
  np.testing.assert_allclose(y[::8, ::128], blocks)


# --- Races, skipped floating point, uninitialized memory ----------------------


@pytest.mark.parametrize("dma_execution_mode,hbm_space", [
    pytest.param(m, s, id=f"{m}-{n}")
    for m in ["eager", "on_wait"]
    for s, n in HBM_SPACES])
def test_race_detection(dma_execution_mode, hbm_space):
  def waits_before_reading(x_hbm, o_ref, staging, sem):
    dma = pltpu.make_async_copy(x_hbm, staging, sem)
    dma.start()
    dma.wait()
    o_ref[...] = staging[...] + 1.0

  def reads_while_dma_writes(x_hbm, o_ref, staging, sem):
    dma = pltpu.make_async_copy(x_hbm, staging, sem)
    dma.start()
    o_ref[...] = staging[...] + 1.0
    dma.wait()

  def call(kernel, x):
    return pl.pallas_call(
        kernel,
        in_specs=[pl.BlockSpec(memory_space=hbm_space)],
        out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
        scratch_shapes=[pltpu.VMEM(x.shape, x.dtype), pltpu.SemaphoreType.DMA],
        interpret=pltpu.InterpretParams(
            detect_races=True, dma_execution_mode=dma_execution_mode))(x)

  x = jnp.zeros((8, 128), jnp.float32)
  y = call(waits_before_reading, x).block_until_ready()
  assert not jax_interpreter.races.races_found
  np.testing.assert_allclose(y, x + 1.0)

  call(reads_while_dma_writes, x).block_until_ready()
  assert jax_interpreter.races.races_found


def test_skip_floating_point_ops():
  def kernel(x_ref, y_ref, z_ref):
    z_ref[...] = x_ref[...] @ y_ref[...]

  def matmul(x, y):
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((x.shape[0], y.shape[1]), x.dtype),
        interpret=pltpu.InterpretParams(skip_floating_point_ops=True))(x, y)

  kx, ky = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (1024, 1024))
  y = jax.random.normal(ky, (1024, 1024))
  z = jax.jit(matmul)(x, y)
  np.testing.assert_array_equal(z, np.full(z.shape, np.inf, np.float32))
  assert "dot_general" not in jax.jit(matmul).lower(x, y).as_text(
      dialect="stablehlo")


@pytest.mark.parametrize("uninitialized_memory", ["nan", "zero"])
def test_uninitialized_memory(uninitialized_memory):
  def kernel(o_bf16, o_i16, o_f32, scratch_bf16, scratch_i16):
    # o_f32 is never written.
    o_bf16[...] = scratch_bf16[...]
    o_i16[...] = scratch_i16[...]

  bf16, i16, f32 = pl.pallas_call(
      kernel, in_specs=[],
      out_shape=[jax.ShapeDtypeStruct((8, 128), t)
                 for t in (jnp.bfloat16, jnp.int16, jnp.float32)],
      scratch_shapes=[pltpu.VMEM((8, 128), jnp.bfloat16),
                      pltpu.VMEM((8, 128), jnp.int16)],
      interpret=pltpu.InterpretParams(
          uninitialized_memory=uninitialized_memory))()
  if uninitialized_memory == "nan":
    assert jnp.isnan(bf16).all()
    np.testing.assert_equal(np.asarray(i16), np.iinfo(np.int16).max)
    assert jnp.isnan(f32).all()
  else:
    for out in (bf16, i16, f32):
      np.testing.assert_equal(np.asarray(out), 0)


def test_correct_number_of_stores():
  """JAX counts its interpreter's `store` callbacks, one per block copy: 5
  (x's two blocks in, s in once, o's two blocks out). pallasvm makes no
  callbacks; what the count stands for is checked through the values: x's
  block is copied in only when its index changes (so the kernel's += on it
  accumulates over j) and s only once (its count runs on over the grid)."""
  def kernel(x_ref, count_ref, o_ref):
    count = count_ref[0]
    x_ref[...] += jnp.full_like(x_ref, count)
    count_ref[0] = count + 1
    o_ref[...] = x_ref[...]

  def call(x, count):
    rows = pl.BlockSpec((8, 256), lambda i, j: (i, 0))
    return pl.pallas_call(
        kernel, grid=(2, 2),
        in_specs=[rows, pl.BlockSpec(memory_space=pltpu.SMEM)],
        out_specs=rows,
        out_shape=jax.ShapeDtypeStruct((16, 256), jnp.float32),
        interpret=pltpu.InterpretParams())(x, count)

  out = jax.jit(call)(jnp.zeros((16, 256), jnp.float32),
                      jnp.zeros((1,), jnp.int32))
  # Block 0: 0 + 0, then + 1; block 1: 0 + 2, then + 3.
  np.testing.assert_allclose(out[::8, ::256], [[1.0], [5.0]])


# --- Parallel dimensions and cores --------------------------------------------

# random_seed=12345 permutes a parallel dimension of 4 into this order.
SEEDED_ORDER = [2, 3, 0, 1]


def test_randomization_of_parallel_dimensions():
  def kernel(count_ref, o_ref):
    count = count_ref[0]
    count_ref[0] = count + 1
    o_ref[...] = jnp.full_like(o_ref, count)

  def call(count, recorder):
    return pl.pallas_call(
        kernel, grid=(4, 4),
        in_specs=[pl.BlockSpec(memory_space=pltpu.SMEM)],
        out_specs=pl.BlockSpec((8, 128), lambda i, j: (i, j)),
        out_shape=jax.ShapeDtypeStruct((32, 512), jnp.float32),
        interpret=pltpu.InterpretParams(random_seed=12345,
                                        grid_point_recorder=recorder),
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "arbitrary")))(count)

  recorder = Recorder()
  out = jax.jit(call, static_argnums=1)(jnp.zeros((1,), jnp.int32), recorder)
  # Row i ran as the k-th row of the permuted order: it holds 4 k .. 4 k + 3.
  np.testing.assert_allclose(
      out[::8, ::128],
      [[4 * SEEDED_ORDER.index(i) + j for j in range(4)] for i in range(4)])
  assert recorder.visits == [Visit((i, j), 0)
                             for i in SEEDED_ORDER for j in range(4)]


def test_dimensions_arbitrary_parallel_raises():
  """JAX's kernel stores an int32 scalar into a row of a float32 ref, so its
  ValueError comes from tracing that store, before any interpreter sees the
  kernel. Here the kernel is valid: the ValueError must come from the
  dimension semantics (`parallel` must be a prefix of the grid)."""
  def kernel(s_ref, o_ref):
    o_ref[...] = jnp.full_like(o_ref, s_ref[0].astype(o_ref.dtype))

  def call(s):
    # Parallel dimensions must come first.
    return pl.pallas_call(
        kernel, grid=(4, 4),
        in_specs=[pl.BlockSpec(memory_space=pltpu.SMEM)],
        out_specs=pl.BlockSpec((8, 128), lambda i, j: (i, j)),
        out_shape=jax.ShapeDtypeStruct((32, 512), jnp.float32),
        interpret=pltpu.InterpretParams(random_seed=12345),
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("arbitrary", "parallel")))(s)

  with raises_like_jax(ValueError):
    jax.jit(call)(jnp.zeros((1,), jnp.int32))


def test_dynamic_parallel_dimension_raises():
  def kernel(o_ref):
    o_ref[0] = 42.0

  @jax.jit
  def call():
    size = jax.random.randint(jax.random.key(0), (), 10, 20, dtype=jnp.int32)
    return pl.pallas_call(
        kernel, grid=(size,), in_specs=[],
        out_specs=pl.BlockSpec((1,), lambda _: (0,)),
        out_shape=jax.ShapeDtypeStruct((1,), jnp.float32),
        interpret=pltpu.InterpretParams(),
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel",)))()

  with raises_like_jax(jax.errors.ConcretizationTypeError):
    call()


@pytest.mark.parametrize("num_cores,use_context_manager", [
    pytest.param(n, c, id=f"{n}-{c}")
    for n in [1, 2, 4] for c in [False, True]])
def test_core_map(num_cores, use_context_manager):
  mesh = pltpu.create_tensorcore_mesh("x", num_cores=num_cores)
  interpret = False if use_context_manager else pltpu.InterpretParams()

  @jax.jit
  def f(x):
    def body(refs):
      x_hbm, y_hbm = refs

      @pl.core_map(mesh, interpret=interpret)
      def _():
        cores = jax.lax.axis_size("x")
        rows = 16 // cores

        def scoped(x_vmem, y_vmem, dma_sem, sem):
          # A barrier: deadlocks unless the cores really run in parallel.
          for c in range(cores):
            pl.semaphore_signal(sem, 1, core_index=c)
          pl.semaphore_wait(sem, cores)
          core = jax.lax.axis_index("x")
          mine = pl.ds(core * rows, rows)
          pltpu.async_copy(x_hbm.at[mine], x_vmem, dma_sem).wait()
          y_vmem[...] = x_vmem[...] + core + 1
          pltpu.async_copy(y_vmem, y_hbm.at[mine], dma_sem).wait()

        pl.run_scoped(scoped,
                      pltpu.VMEM((rows, 128), x_hbm.dtype),
                      pltpu.VMEM((rows, 128), y_hbm.dtype),
                      pltpu.SemaphoreType.DMA, pltpu.SemaphoreType.REGULAR)

    return pl.run_state(body)((x, jnp.zeros_like(x)))[1]

  x = jnp.arange(16 * 128, dtype=jnp.int32).reshape(16, 128)
  # Core c adds c + 1 to its 16 / num_cores rows.
  expected = np.asarray(x) + 1 + np.repeat(np.arange(num_cores),
                                           16 // num_cores)[:, None]
  if use_context_manager:
    with pltpu.force_tpu_interpret_mode():
      y = f(x)
  else:
    y = f(x)
  np.testing.assert_array_equal(y, expected)



def test_core_map_exception_no_hang():
  @pl.kernel(
      mesh=pltpu.create_tensorcore_mesh("core", num_cores=2),
      out_type=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_types=[pltpu.VMEM((8, 128), jnp.float32),
                     pltpu.SemaphoreType.REGULAR],
      interpret=pltpu.InterpretParams())
  def kernel(x_hbm, o_hbm, scratch, sem):
    core = jax.lax.axis_index("core")
    jax.debug.print("core {c}", c=core)

    @pl.when(core == 1)
    def _():
      # Row 100 of 8: core 1 fails before it signals core 0.
      scratch[100, 0] = scratch[100, 0]
      pl.semaphore_signal(sem, 1, core_index=0)

    @pl.when(core == 0)
    def _():
      pl.semaphore_wait(sem, 1)  # must not wait forever
      pltpu.sync_copy(x_hbm, o_hbm)

  with raises_like_jax(jax.errors.JaxRuntimeError):
    kernel(jnp.ones((8, 128), jnp.float32)).block_until_ready()


@pytest.mark.parametrize("hbm_space", [
    pytest.param(s, id=n) for s, n in HBM_SPACES])
def test_hbm_allocation_in_run_scoped_raises(hbm_space):
  mesh = pltpu.create_tensorcore_mesh("x", num_cores=1)

  @jax.jit
  def f(x):
    def body(refs):
      x_hbm, y_hbm = refs

      @pl.core_map(mesh, interpret=pltpu.InterpretParams(
          allow_hbm_allocation_in_run_scoped=False))
      def _():
        def through(staging_hbm):
          pltpu.sync_copy(x_hbm, staging_hbm)
          pltpu.sync_copy(staging_hbm, y_hbm)

        pl.run_scoped(through, hbm_space(x_hbm.shape, x_hbm.dtype))

    return pl.run_state(body)((x, jnp.zeros_like(x)))[1]

  with raises_like_jax(ValueError, match=r"Cannot allocate HBM in `run_scoped`."):
    f(jnp.arange(8))


CORE_MAP_SHARED_CASES = [
    pytest.param(a, m, s, id=f"{a}-{m}-{n}")
    for a in [0, 1] for m in ["eager", "on_wait"]
    for s, n in HBM_SPACES]


@pytest.mark.parametrize("first_core_to_copy,dma_execution_mode,hbm_space",
                         CORE_MAP_SHARED_CASES)
def test_allocate_shared_buffer_in_core_map(first_core_to_copy,
                                            dma_execution_mode, hbm_space):
  mesh = pltpu.create_tensorcore_mesh("x", num_cores=2)
  second = 1 - first_core_to_copy

  @jax.jit
  def f(x):
    def body(refs):
      x_hbm, y_hbm = refs

      # The HBM buffer of the inner run_scoped is shared by both cores, which
      # use it one after the other (the semaphore orders them): it must be
      # allocated before the first uses it and freed after the second has.
      @pl.core_map(mesh, interpret=pltpu.InterpretParams(
          detect_races=True, allow_hbm_allocation_in_run_scoped=True,
          dma_execution_mode=dma_execution_mode))
      def _():
        def with_sem(sem):
          @pl.when(jax.lax.axis_index("x") == second)
          def _():
            pl.semaphore_wait(sem, 1)

          def through(shared_hbm):
            pltpu.sync_copy(x_hbm, shared_hbm)
            pltpu.sync_copy(shared_hbm, y_hbm)

          pl.run_scoped(through, hbm_space(x_hbm.shape, x_hbm.dtype))

          @pl.when(jax.lax.axis_index("x") == first_core_to_copy)
          def _():
            pl.semaphore_signal(sem, 1, core_index=second)

        pl.run_scoped(with_sem, pltpu.SemaphoreType.REGULAR)

    return pl.run_state(body)((x, jnp.zeros_like(x)))[1]

  x = jnp.arange(16 * 128, dtype=jnp.int32).reshape(16, 128)
  np.testing.assert_array_equal(f(x), x)
  assert not jax_interpreter.races.races_found


def test_grid_names():
  def kernel(x_ref, y_ref):
    y_ref[...] = (x_ref[...]
                  + 10.0 * jax.lax.axis_index("foo").astype(x_ref.dtype)
                  + jax.lax.axis_index("bar").astype(x_ref.dtype))

  spec = pl.BlockSpec((8, 128), lambda i, j: (i, j))
  y = jax.jit(pl.pallas_call(
      kernel,
      grid_spec=pl.GridSpec(grid=(("foo", 2), ("bar", 4)), in_specs=[spec],
                            out_specs=spec),
      out_shape=jax.ShapeDtypeStruct((2 * 8, 4 * 128), jnp.float32),
      interpret=pltpu.InterpretParams()))(jnp.zeros((16, 512), jnp.float32))
  np.testing.assert_array_equal(
      y[::8, ::128], np.array([[0, 1, 2, 3], [10, 11, 12, 13]], np.float32))


@pytest.mark.parametrize(
    "slow_core,dma_execution_mode,hbm_space",
    [pytest.param(c, m, s, id=f"{c}-{m}-{n}")
     for c in [0, 1] for m in ["eager", "on_wait"]
     for s, n in HBM_SPACES])
def test_allocate_shared_buffer_in_core_map_with_race(slow_core,
                                                      dma_execution_mode,
                                                      hbm_space):
  mesh = pltpu.create_tensorcore_mesh("x", num_cores=2)

  @jax.jit
  def f(x, y):
    def body(refs):
      x_hbm, y_hbm, z_hbm, o_hbm = refs

      # Both cores copy x to z through one shared HBM buffer, the slow core
      # after computing y @ y.T into o: their copies race. Were the buffer
      # freed by the fast core and allocated afresh by the slow one, there
      # would be no race to find.
      @pl.core_map(mesh, interpret=pltpu.InterpretParams(
          detect_races=True, allow_hbm_allocation_in_run_scoped=True,
          dma_execution_mode=dma_execution_mode))
      def _():
        def scoped(shared_hbm, y_vmem, o_vmem):
          @pl.when(jax.lax.axis_index("x") == slow_core)
          def _():
            pltpu.sync_copy(y_hbm, y_vmem)
            o_vmem[...] = y_vmem[...] @ jnp.transpose(y_vmem[...])
            pltpu.sync_copy(o_vmem, o_hbm)

          pltpu.sync_copy(x_hbm, shared_hbm)
          pltpu.sync_copy(shared_hbm, z_hbm)

        pl.run_scoped(scoped, hbm_space(x.shape, x.dtype),
                      pltpu.VMEM(y.shape, y.dtype),
                      pltpu.VMEM((y.shape[0], y.shape[0]), y.dtype))

    zeros_o = jnp.zeros((y.shape[0], y.shape[0]), y.dtype)
    _, _, z, o = pl.run_state(body)((x, y, jnp.zeros_like(x), zeros_o))
    return z, o

  x = jnp.arange(16 * 128, dtype=jnp.int32).reshape(16, 128)
  y = jax.random.randint(jax.random.key(0), (1024, 1024), -100, 100)
  # z's value is racy: only o is checked.
  _, o = f(x, y)
  np.testing.assert_array_equal(o, y @ y.T)
  assert jax_interpreter.races.races_found


def _vmem_copy_and_double_kernel(x_ref, o_ref, scratch):
  scratch[...] = x_ref[...]
  o_ref[...] = x_ref[...] + scratch[...]


def test_two_cores_along_parallel_dimension_with_race():
  x = jnp.ones((8, 128), jnp.float32)
  traces = []

  @jax.jit
  def f(x):
    traces.append(1)
    # Both grid points use the whole of x and one scratch buffer: with two
    # cores, each has its own scratch but they share x's and o's HBM.
    return pl.pallas_call(
        _vmem_copy_and_double_kernel, grid=(2,),
        in_specs=[pl.BlockSpec(memory_space=pltpu.VMEM)],
        out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
        scratch_shapes=[pltpu.VMEM(x.shape, x.dtype)],
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel",)),
        interpret=pltpu.InterpretParams(num_cores_or_threads=2,
                                        detect_races=False))(x)

  y = f(x).block_until_ready()
  assert not jax_interpreter.races.races_found
  np.testing.assert_allclose(y, 2.0 * x)

  # force_tpu_interpret_mode's params replace the call's, and retrace.
  with pltpu.force_tpu_interpret_mode(pltpu.InterpretParams(
      num_cores_or_threads=1, detect_races=True)):
    y = f(x).block_until_ready()
  assert not jax_interpreter.races.races_found
  np.testing.assert_allclose(y, 2.0 * x)
  assert len(traces) == 2

  with pltpu.force_tpu_interpret_mode(pltpu.InterpretParams(
      num_cores_or_threads=2, detect_races=True)):
    y = f(x).block_until_ready()
  assert jax_interpreter.races.races_found
  np.testing.assert_allclose(y, 2.0 * x)
  assert len(traces) == 3


def test_two_cores_along_parallel_dimension_no_race():
  x = jnp.ones((16, 128), jnp.float32)
  rows = pl.BlockSpec((8, 128), lambda i: (i, 0))
  y = pl.pallas_call(
      _vmem_copy_and_double_kernel, grid=(2,),
      in_specs=[rows], out_specs=rows,
      out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
      scratch_shapes=[pltpu.VMEM((8, 128), x.dtype)],
      interpret=pltpu.InterpretParams(num_cores_or_threads=2,
                                      detect_races=True),
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel",)))(x).block_until_ready()
  assert not jax_interpreter.races.races_found
  np.testing.assert_allclose(y, 2.0 * x)


def test_parallel_dimension_and_multiple_cores():
  """JAX's subtests num_cores_per_device=1..6, one after the other."""
  def kernel(count_ref, in_ref, o_ref):
    # in_ref's block (i, j) holds 4 i + j: zero_diff is 0.
    zero_diff = in_ref[...] - jnp.float32(4 * pl.program_id(0)
                                          + pl.program_id(1))
    count = count_ref[0]
    count_ref[0] = count + 1
    o_ref[...] = jnp.full_like(o_ref, count) + zero_diff

  def call(count, cores, recorder):
    blocks = jnp.repeat(jnp.repeat(
        jnp.arange(16, dtype=jnp.float32).reshape(4, 4), 128, axis=1),
                        8, axis=0)
    return pl.pallas_call(
        kernel, grid=(4, 4),
        in_specs=[pl.BlockSpec(memory_space=pltpu.SMEM),
                  pl.BlockSpec((8, 128), lambda i, j: (i, j))],
        out_specs=pl.BlockSpec((8, 128), lambda i, j: (i, j)),
        out_shape=jax.ShapeDtypeStruct((32, 512), jnp.float32),
        interpret=pltpu.InterpretParams(
            random_seed=12345, num_cores_or_threads=cores,
            grid_point_recorder=recorder, detect_races=True),
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "arbitrary")))(count, blocks)

  run = jax.jit(call, static_argnums=(1, 2))
  for cores in range(1, 7):
    recorder = Recorder()
    out = run(jnp.zeros((1,), jnp.float32), cores, recorder)
    # The permuted rows are split into ranges of ceil(4 / cores) rows, one
    # per core; each core's SMEM count starts at 0 and counts its points.
    per_core = -(-4 // cores)
    position = {row: k for k, row in enumerate(SEEDED_ORDER)}
    expected = [[4 * (position[i] % per_core) + j for j in range(4)]
                for i in range(4)]
    np.testing.assert_allclose(out[::8, ::128], expected,
                               err_msg=f"num_cores_per_device={cores}")
    assert recorder.visits == [
        Visit((i, j), k // per_core)
        for k, i in enumerate(SEEDED_ORDER) for j in range(4)], cores


# --- HBM refs, run_scoped, side effects ---------------------------------------


@pytest.mark.parametrize("hbm_space", HBM_CASES)
def test_referencing_hbm_raises(hbm_space):
  def indexing_copy(in_ref, o_ref):
    o_ref[...] = in_ref[...]

  def load_store_copy(in_ref, o_ref):
    pltpu.store(o_ref, pltpu.load(in_ref))

  def call(kernel, x, in_space, out_space):
    return pl.pallas_call(
        kernel, grid=(1,),
        in_specs=[pl.BlockSpec(memory_space=in_space)],
        out_specs=pl.BlockSpec(memory_space=out_space),
        out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
        interpret=pltpu.InterpretParams())(x)

  def message(primitive):
    return (rf"{primitive}: Buffers with a memory space of HBM or ANY cannot"
            r" be referenced directly. Instead, use `pltpu.sync_copy` or"
            r" `pltpu.async_copy`.")

  x = jnp.zeros((8, 128), jnp.float32)
  for kernel, primitive, in_space, out_space in [
      (indexing_copy, "get_p", hbm_space, pltpu.VMEM),
      (load_store_copy, "load_p", hbm_space, pltpu.VMEM),
      (indexing_copy, "swap_p", pltpu.VMEM, hbm_space),
      (load_store_copy, "swap_p", pltpu.VMEM, hbm_space)]:
    with raises_like_jax(ValueError, match=message(primitive)):
      call(kernel, x, in_space, out_space)


@pytest.mark.parametrize("out_block_spec", [
    pytest.param(pl.BlockSpec(memory_space=None), id="BlockSpec"),
    pytest.param(pl.no_block_spec, id="no_block_spec")])
def test_run_scoped_with_memory_space_is_none(out_block_spec):
  shape, dtype = (8, 128), jnp.float32

  def kernel(o_ref):
    def scoped(vmem_ref):
      pltpu.sync_copy(vmem_ref, o_ref)

    pl.run_scoped(scoped, pltpu.VMEM(shape, dtype))

  # A memory space of None means VMEM. (JAX's case passes
  # BlockSpec(memory_space=None) whatever the parameter; both mean the same.)
  y = pl.pallas_call(
      kernel, grid=(1,), out_specs=out_block_spec,
      out_shape=jax.ShapeDtypeStruct(shape, dtype),
      interpret=pltpu.InterpretParams(allow_hbm_allocation_in_run_scoped=True,
                                      uninitialized_memory="zero"))()
  # The zero-filled scoped buffer, copied out.
  np.testing.assert_array_equal(y, np.zeros(shape, np.float32))


@pytest.mark.parametrize("hbm_space", HBM_CASES)
def test_store_to_half_of_hbm_output_buffer(hbm_space):
  x = jnp.arange(16, dtype=jnp.int32)

  def kernel(x_hbm, o_hbm):
    pltpu.sync_copy(x_hbm.at[:8], o_hbm.at[8:])

  # The output is x's buffer (aliased), not a fresh zero-filled one: its
  # first half keeps x[:8].
  y = pl.pallas_call(
      kernel, grid=(1,),
      in_specs=[pl.BlockSpec(memory_space=hbm_space)],
      out_specs=pl.BlockSpec(memory_space=hbm_space),
      out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
      input_output_aliases={0: 0},
      interpret=pltpu.InterpretParams(uninitialized_memory="zero"))(x)
  np.testing.assert_array_equal(y[:8], x[:8])
  np.testing.assert_array_equal(y[8:], x[:8])


def test_pallas_call_compiles_with_has_side_effects_true():
  def kernel(x_ref, y_ref):
    y_ref[...] = x_ref[...] + 1.0

  vmem = pl.BlockSpec(memory_space=pltpu.VMEM)
  f = jax.jit(pl.pallas_call(
      kernel, in_specs=[vmem], out_specs=vmem,
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      interpret=pltpu.InterpretParams(),
      compiler_params=pltpu.CompilerParams(has_side_effects=True)))
  x = jnp.zeros((8, 128), jnp.float32)
  np.testing.assert_array_equal(f(x), x + 1.0)


# --- Range bounds -------------------------------------------------------------

# JAX's case unit-tests its interpreter's range check
# (utils.is_range_out_of_bounds_for_shape). Here the same ranges are read by
# a kernel from a ref of the same shape, with a start the kernel gets at run
# time (scalar prefetch) so that pallasvm checks it then: the read must raise
# "Out-of-bounds read" exactly when JAX's check says out of bounds.
RANGE_CASES = [
    ("in_bounds_int", 5, (10,), False, ()),
    ("out_of_bounds_int", 10, (10,), True, ()),
    ("in_bounds_slice_no_step", slice(0, 10), (10,), False, ()),
    ("out_of_bounds_slice_no_step", slice(0, 11), (10,), True, ()),
    ("in_bounds_slice_with_step", slice(0, 10, 2), (10,), False, ()),
    ("out_of_bounds_slice_with_step", slice(0, 11, 2), (10,), True, ()),
    ("strided_single_element_in_bounds", slice(0, 10, 100), (5,), False, ()),
    ("strided_single_element_out_of_bounds", slice(5, 10, 100), (5,), True,
     ()),
    ("zero_length_slice_in_bounds", slice(5, 5, 1), (10,), False, ()),
    ("zero_length_slice_out_of_bounds", slice(15, 15, 1), (10,), False, ()),
]


@pytest.mark.parametrize("rnge,shape,expected", [
    pytest.param(rnge, shape, expected, id=name, marks=marks)
    for name, rnge, shape, expected, marks in RANGE_CASES])
def test_is_range_out_of_bounds_for_shape(rnge, shape, expected):
  if isinstance(rnge, int):
    start, size, stride = rnge, None, 1
  else:
    step = rnge.step or 1
    start, size, stride = rnge.start, len(range(rnge.start, rnge.stop, step)), step

  def kernel(start_ref, x_ref, o_ref):
    at = start_ref[0]
    if size is None:
      o_ref[0] = x_ref[at]
    else:
      o_ref[0] = jnp.sum(x_ref[pl.ds(at, size, stride)])

  smem = pl.BlockSpec(memory_space=pltpu.SMEM)
  run = jax.jit(pl.pallas_call(
      kernel,
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=1, in_specs=[smem], out_specs=smem),
      out_shape=jax.ShapeDtypeStruct((1,), jnp.int32),
      interpret=pltpu.InterpretParams(out_of_bounds_reads="raise")))
  x = jnp.arange(1, shape[0] + 1, dtype=jnp.int32)
  start_arr = jnp.array([start], jnp.int32)
  if expected:
    with raises_like_jax(Exception, match="Out-of-bounds read"):
      run(start_arr, x).block_until_ready()
  else:
    elements = [start] if size is None else list(
        range(start, start + size * stride, stride))
    assert int(run(start_arr, x)[0]) == sum(e + 1 for e in elements)
