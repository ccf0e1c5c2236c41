"""The TPU memory model on one device (runtime/memory_model.h): HBM refs,
DMAs, semaphores, run_scoped and emit_pipeline, each kernel checked against
JAX's own TPU interpret mode run on the same inputs (the reference), or,
where interpret mode has no answer (it hangs on a deadlock), against what
the case's comment derives by hand. Every pallasvm run goes through
`kernels_on_pallasvm()`, which makes JAX's interpreter raise if entered, and
checks that pallasvm lowered it."""

import contextlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import config as jax_config
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

import pallasvm
from pallasvm import bridge
from pallasvm_only import kernels_on_pallasvm
from pallasvm_only import on_pallasvm

if bridge.library_path() is None or not bridge.library_path().exists():
  pytest.skip("the bridge library (libpallasvm_xla.so) is not built",
              allow_module_level=True)

ANY = pl.BlockSpec(memory_space=pl.ANY)
MODES = ["on_wait", "eager"]


TPU_V6E = jax.sharding.AbstractMesh(
    (), (), abstract_device=jax.sharding.AbstractDevice("TPU v6e", 1, "tpu"))


def tpu_mesh():
  """emit_pipeline asks the device for its tiling at trace time; interpret
  mode and pallasvm alike trace it under an abstract TPU device."""
  return jax.sharding.use_abstract_mesh(TPU_V6E)


@contextlib.contextmanager
def tpu_mesh_on_every_thread():
  """tpu_mesh(), and the same mesh as the global default meanwhile.
  Interpret mode reads the simulated device again when its callbacks
  allocate buffers (buffer_bounds="padded" pads them to its tiles), on
  whatever thread XLA runs them, which the calling thread's context does
  not reach; pallasvm reads it once, at lowering."""
  state = jax_config.abstract_mesh_context_manager
  saved = state.get_global()
  state.set_global(TPU_V6E)
  try:
    with tpu_mesh():
      yield
  finally:
    state.set_global(saved)


def on_interpret_mode(fn, *args):
  return jax.block_until_ready(jax.jit(fn)(*args))


def assert_same(fn, *args, mesh=False):
  """fn(*args) on pallasvm equals interpret mode's, bit for bit."""
  with tpu_mesh_on_every_thread() if mesh else contextlib.nullcontext():
    want = on_interpret_mode(fn, *args)
  with tpu_mesh() if mesh else contextlib.nullcontext():
    got = on_pallasvm(fn, *args)
  for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
  return got


def params(mode="on_wait", **kw):
  return pltpu.InterpretParams(dma_execution_mode=mode, **kw)


def arange(shape, dtype=jnp.float32):
  return jnp.arange(np.prod(shape), dtype=dtype).reshape(shape)


# --- DMAs between memory spaces ----------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_async_copy_in_and_out(mode):
  def kernel(x_hbm, o_hbm, buf, sems):
    copy_in = pltpu.make_async_copy(x_hbm.at[pl.ds(8, 8)], buf, sems.at[0])
    copy_in.start()
    copy_in.wait()
    buf[...] = buf[...] * 2.0 + 1.0
    copy_out = pltpu.make_async_copy(buf, o_hbm.at[pl.ds(0, 8)], sems.at[1])
    copy_out.start()
    copy_out.wait()

  f = pl.pallas_call(
      kernel, in_specs=[ANY], out_specs=ANY,
      out_shape=jax.ShapeDtypeStruct((16, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32),
                      pltpu.SemaphoreType.DMA((2,))],
      interpret=params(mode, uninitialized_memory="zero"))
  x = arange((16, 128))
  got = assert_same(f, x)
  np.testing.assert_array_equal(got[:8], x[8:] * 2.0 + 1.0)


def double_buffered_copy(nblocks, interpret):
  """At step i, block i+1 is fetched into the other slot while block i is
  used (plus i): the DMA started at one grid point is waited at the next."""
  def kernel(x_hbm, o_ref, buf, sems):
    i = pl.program_id(0)

    def fetch(block, slot):
      return pltpu.make_async_copy(x_hbm.at[pl.ds(block * 8, 8)],
                                   buf.at[slot], sems.at[slot])

    @pl.when(i == 0)
    def _():
      fetch(0, 0).start()

    slot = i % 2

    @pl.when(i + 1 < nblocks)
    def _():
      fetch(i + 1, 1 - slot).start()

    fetch(i, slot).wait()
    o_ref[...] = buf[slot] + i.astype(jnp.float32)

  return pl.pallas_call(
      kernel, grid=(nblocks,), in_specs=[ANY],
      out_specs=pl.BlockSpec((8, 128), lambda i: (i, 0)),
      out_shape=jax.ShapeDtypeStruct((nblocks * 8, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((2, 8, 128), jnp.float32),
                      pltpu.SemaphoreType.DMA((2,))],
      interpret=interpret)


@pytest.mark.parametrize("mode", MODES)
def test_double_buffered_copy_over_a_grid(mode):
  nblocks = 4
  f = double_buffered_copy(nblocks, params(mode))
  x = arange((nblocks * 8, 128))
  got = assert_same(f, x)
  want = x + jnp.repeat(jnp.arange(nblocks, dtype=jnp.float32), 8)[:, None]
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", MODES)
def test_sync_copy_between_hbm_smem_and_vmem(mode):
  def kernel(x_hbm, o_hbm, smem, vmem):
    pltpu.sync_copy(x_hbm.at[1], smem)          # HBM -> SMEM
    pltpu.sync_copy(smem, vmem.at[0])           # SMEM -> VMEM
    pltpu.sync_copy(x_hbm.at[0], vmem.at[1])    # HBM -> VMEM
    smem[3] = smem[3] + 100
    pltpu.sync_copy(smem, o_hbm.at[0])          # SMEM -> HBM
    pltpu.sync_copy(vmem.at[1], o_hbm.at[1])    # VMEM -> HBM
    pltpu.sync_copy(vmem.at[0], o_hbm.at[2])

  f = pl.pallas_call(
      kernel, in_specs=[ANY], out_specs=ANY,
      out_shape=jax.ShapeDtypeStruct((3, 16), jnp.int32),
      scratch_shapes=[pltpu.SMEM((16,), jnp.int32),
                      pltpu.VMEM((2, 16), jnp.int32)],
      interpret=params(mode))
  x = arange((2, 16), jnp.int32)
  got = assert_same(f, x)
  np.testing.assert_array_equal(got[0], x[1] + (jnp.arange(16) == 3) * 100)
  np.testing.assert_array_equal(got[1], x[0])
  np.testing.assert_array_equal(got[2], x[1])


@pytest.mark.parametrize("mode", MODES)
def test_strided_squeezed_and_dynamic_slices(mode):
  def kernel(x_hbm, o_ref, buf, sem):
    start = pl.program_id(0) * 2
    # Every other row from a dynamic start, of column block 1 (squeezed).
    pltpu.async_copy(x_hbm.at[pl.ds(start, 4, stride=2), 1], buf, sem).wait()
    o_ref[...] = buf[...]

  f = pl.pallas_call(
      kernel, grid=(2,), in_specs=[ANY],
      out_specs=pl.BlockSpec((None, 4, 128), lambda i: (i, 0, 0)),
      out_shape=jax.ShapeDtypeStruct((2, 4, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((4, 128), jnp.float32),
                      pltpu.SemaphoreType.DMA],
      interpret=params(mode))
  x = arange((12, 3, 128))
  got = assert_same(f, x)
  np.testing.assert_array_equal(got[1], x[2:10:2, 1])


def test_dma_into_an_hbm_input_leaves_the_callers_array_alone():
  def kernel(x_hbm, o_hbm, buf):
    buf[...] = jnp.full(buf.shape, 7.0, jnp.float32)
    pltpu.sync_copy(buf, x_hbm.at[pl.ds(0, 8)])   # writes the input ...
    pltpu.sync_copy(x_hbm, o_hbm)                 # ... and reads it back

  f = pl.pallas_call(
      kernel, in_specs=[ANY], out_specs=ANY,
      out_shape=jax.ShapeDtypeStruct((16, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32)],
      interpret=params())
  x = arange((16, 128))
  x_before = np.asarray(x).copy()
  got = assert_same(f, x)
  np.testing.assert_array_equal(got[:8], 7.0)
  np.testing.assert_array_equal(got[8:], x_before[8:])
  np.testing.assert_array_equal(np.asarray(x), x_before)


# --- Semaphores and run_scoped ------------------------------------------------


def test_regular_semaphores_signal_wait_read():
  # Interpret mode cannot run semaphore_read on CPU (no lowering for it), so
  # the counts are derived by hand in the comments.
  def kernel(o_ref, sems):
    pl.semaphore_signal(sems.at[1], 3)
    pl.semaphore_signal(sems.at[0])
    o_ref[0] = pl.semaphore_read(sems.at[1])   # 3
    pl.semaphore_wait(sems.at[1], 2)
    o_ref[1] = pl.semaphore_read(sems.at[1])   # 1
    o_ref[2] = pl.semaphore_read(sems.at[0])   # 1
    pl.semaphore_wait(sems.at[0])
    pl.semaphore_wait(sems.at[1])
    o_ref[3] = pl.semaphore_read(sems.at[0]) + pl.semaphore_read(sems.at[1])

  f = pl.pallas_call(
      kernel, out_specs=pl.BlockSpec(memory_space=pltpu.SMEM),
      out_shape=jax.ShapeDtypeStruct((4,), jnp.int32),
      scratch_shapes=[pltpu.SemaphoreType.REGULAR((2,))],
      interpret=params())
  np.testing.assert_array_equal(on_pallasvm(f), [3, 1, 1, 0])


@pytest.mark.parametrize("mode", MODES)
def test_nested_run_scoped_with_every_kind_of_buffer(mode):
  def kernel(x_hbm, o_ref):
    def outer(vmem, sem):
      pltpu.async_copy(x_hbm, vmem, sem).wait()

      def inner(smem, vmem2, sems):
        smem[0] = 5
        vmem2[...] = vmem[...] * smem[0].astype(jnp.float32)
        pl.semaphore_signal(sems.at[1], 2)
        pl.semaphore_wait(sems.at[1], 2)
        o_ref[...] = vmem2[...]

      pl.run_scoped(inner, pltpu.SMEM((4,), jnp.int32),
                    pltpu.VMEM((8, 128), jnp.float32),
                    pltpu.SemaphoreType.REGULAR((2,)))

    pl.run_scoped(outer, pltpu.VMEM((8, 128), jnp.float32),
                  pltpu.SemaphoreType.DMA)

  f = pl.pallas_call(
      kernel, in_specs=[ANY],
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      interpret=params(mode))
  x = arange((8, 128))
  got = assert_same(f, x)
  np.testing.assert_array_equal(got, x * 5.0)


def run_scoped_in_a_loop(interpret):
  """A run_scoped inside a loop whose entries each read buf[0] before they
  write it: each entry's buffer is fresh, whatever the last one left."""
  def kernel(o_ref):
    def body(i, carry):
      def scoped(buf):
        o_ref[i] = buf[0]
        buf[0] = 1.0
      pl.run_scoped(scoped, pltpu.SMEM((1,), jnp.float32))
      return carry
    jax.lax.fori_loop(0, 3, body, 0)

  return pl.pallas_call(
      kernel, out_specs=pl.BlockSpec(memory_space=pltpu.SMEM),
      out_shape=jax.ShapeDtypeStruct((3,), jnp.float32), interpret=interpret)


def test_run_scoped_buffers_are_fresh_at_each_entry():
  # The buffer is uninitialized (NaN) at each entry.
  got = assert_same(run_scoped_in_a_loop(params()))
  assert np.isnan(np.asarray(got)).all()


# --- emit_pipeline (the pipelining documentation's kernels) -------------------


def emit_pipeline_matmul(interpret):
  """The pipelining documentation's matmul: (256, 384) @ (384, 256) in
  128 blocks, accumulated in the output block (zeroed at k == 0)."""
  def kernel(x_hbm, y_hbm, o_hbm):
    def body(x_ref, y_ref, o_ref):
      @pl.when(pl.program_id(2) == 0)
      def _():
        o_ref[...] = jnp.zeros_like(o_ref)

      o_ref[...] += x_ref[...] @ y_ref[...]

    pltpu.emit_pipeline(
        body, grid=(2, 2, 3),
        in_specs=[pl.BlockSpec((128, 128), lambda i, j, k: (i, k)),
                  pl.BlockSpec((128, 128), lambda i, j, k: (k, j))],
        out_specs=pl.BlockSpec((128, 128), lambda i, j, k: (i, j)),
    )(x_hbm, y_hbm, o_hbm)

  return pl.pallas_call(
      kernel, in_specs=[ANY, ANY], out_specs=ANY,
      out_shape=jax.ShapeDtypeStruct((256, 256), jnp.float32),
      interpret=interpret)


def matmul_inputs():
  return (jax.random.normal(jax.random.key(0), (256, 384), jnp.float32),
          jax.random.normal(jax.random.key(1), (384, 256), jnp.float32))


def test_emit_pipeline_matmul():
  x, y = matmul_inputs()
  got = assert_same(emit_pipeline_matmul(params()), x, y, mesh=True)
  # Against XLA's matmul: 384-long f32 dot products.
  np.testing.assert_allclose(got, x @ y, rtol=1e-5, atol=1e-3)


def test_emit_pipeline_several_inputs_and_outputs():
  def kernel(x_hbm, y_hbm, s_hbm, d_hbm):
    def body(x_ref, y_ref, s_ref, d_ref):
      s_ref[...] = x_ref[...] + y_ref[...]
      d_ref[...] = x_ref[...] - y_ref[...]

    spec = pl.BlockSpec((8, 128), lambda i, j: (i, j))
    pltpu.emit_pipeline(body, grid=(3, 2), in_specs=[spec, spec],
                        out_specs=[spec, spec])(x_hbm, y_hbm, s_hbm, d_hbm)

  shape = jax.ShapeDtypeStruct((24, 256), jnp.float32)
  f = pl.pallas_call(kernel, in_specs=[ANY, ANY], out_specs=[ANY, ANY],
                     out_shape=[shape, shape], interpret=params())
  x = arange((24, 256))
  y = jnp.flip(x, 0) * 0.5
  s, d = assert_same(f, x, y, mesh=True)
  np.testing.assert_array_equal(s, x + y)
  np.testing.assert_array_equal(d, x - y)


def test_emit_pipeline_dynamic_block_shapes():
  # The pipelining documentation's BoundedSlice example: blocks of dynamic
  # size, read from SMEM, copied through.
  slices = jnp.array([[0, 2], [2, 3], [3, 5], [5, 8]], dtype=jnp.int32)

  def kernel(x_hbm, slices_hbm, o_hbm, slices_smem):
    pltpu.sync_copy(slices_hbm, slices_smem)

    def body(x_vmem, o_vmem):
      o_vmem[...] = x_vmem[...]

    def index_map(i):
      start = slices_smem[i, 0]
      size = slices_smem[i, 1] - slices_smem[i, 0]
      return (pl.ds(start, size), 0)

    spec = pl.BlockSpec(block_shape=(pl.BoundedSlice(8), 128),
                        index_map=index_map)
    pltpu.emit_pipeline(body, grid=(slices.shape[0],), in_specs=[spec],
                        out_specs=spec)(x_hbm, o_hbm)

  f = pl.pallas_call(
      kernel, in_specs=[ANY, ANY], out_specs=ANY,
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=(pltpu.SMEM(slices.shape, jnp.int32),),
      interpret=params())
  x = jax.random.uniform(jax.random.key(0), (8, 128), jnp.float32)
  got = assert_same(f, x, slices, mesh=True)
  np.testing.assert_array_equal(got, x)


def test_nested_emit_pipeline():
  # An outer pipeline over row blocks whose body runs an inner pipeline
  # over column blocks of HBM refs it passes through (memory_space=ANY).
  def kernel(x_hbm, o_hbm):
    def outer_body(x_rows, o_rows):
      def inner_body(x_ref, o_ref):
        o_ref[...] = x_ref[...] * 3.0

      spec = pl.BlockSpec((8, 128), lambda j: (0, j))
      pltpu.emit_pipeline(inner_body, grid=(2,), in_specs=[spec],
                          out_specs=spec)(x_rows, o_rows)

    outer = pl.BlockSpec((8, 256), lambda i: (i, 0),
                         memory_space=pltpu.HBM)
    pltpu.emit_pipeline(outer_body, grid=(2,), in_specs=[outer],
                        out_specs=outer)(x_hbm, o_hbm)

  # The outer pipeline's HBM "buffers" are run_scoped HBM allocations.
  f = pl.pallas_call(kernel, in_specs=[ANY], out_specs=ANY,
                     out_shape=jax.ShapeDtypeStruct((16, 256), jnp.float32),
                     interpret=params(allow_hbm_allocation_in_run_scoped=True))
  x = arange((16, 256))
  got = assert_same(f, x, mesh=True)
  np.testing.assert_array_equal(got, x * 3.0)


# --- What interpret mode gets wrong or lacks ---------------------------------


def test_a_wait_nothing_can_satisfy_is_a_deadlock_error():
  # Interpret mode polls forever here; pallasvm knows nothing in flight can
  # signal the semaphore and says so, naming it, the counts and the line.
  def kernel(o_ref, sems):
    pl.semaphore_signal(sems.at[1])
    @pl.when(pl.program_id(0) == 1)
    def _():
      pl.semaphore_wait(sems.at[1], 5)
    o_ref[...] = jnp.zeros_like(o_ref)

  f = pl.pallas_call(
      kernel, grid=(2,), out_specs=pl.BlockSpec((8, 128), lambda i: (i, 0)),
      out_shape=jax.ShapeDtypeStruct((16, 128), jnp.float32),
      scratch_shapes=[pltpu.SemaphoreType.REGULAR((2,))], interpret=params())
  with kernels_on_pallasvm():
    with pytest.raises(Exception) as e:
      jax.block_until_ready(jax.jit(f)())
  message = str(e.value)
  assert "deadlock" in message
  assert "scratch_shapes[0][1]" in message      # the semaphore
  assert "to reach 5 but it holds 2" in message  # signalled once per point
  assert "grid point (1)" in message
  assert re.search(r"semaphore_wait \(.*test_memory_model.py:\d+", message)


def test_a_dma_wait_without_its_dma_is_a_deadlock_error():
  def kernel(x_hbm, o_ref, buf, sem):
    pltpu.make_async_copy(x_hbm, buf, sem).wait()   # never started
    o_ref[...] = buf[...]

  f = pl.pallas_call(
      kernel, in_specs=[ANY],
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32),
                      pltpu.SemaphoreType.DMA], interpret=params())
  with kernels_on_pallasvm():
    with pytest.raises(Exception, match=r"deadlock: the wait needs semaphore "
                       r"scratch_shapes\[1\] to reach 4096 but it holds 0"):
      jax.block_until_ready(jax.jit(f)(arange((8, 128))))


def test_an_out_of_bounds_dma_names_the_dma_and_grid_point():
  def kernel(x_hbm, o_ref, buf, sem):
    start = pl.program_id(0) * 8
    pltpu.async_copy(x_hbm.at[pl.ds(start, 8)], buf, sem).wait()
    o_ref[...] = buf[...]

  f = pl.pallas_call(
      kernel, grid=(3,), in_specs=[ANY],
      out_specs=pl.BlockSpec((8, 128), lambda i: (i, 0)),
      out_shape=jax.ShapeDtypeStruct((24, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32),
                      pltpu.SemaphoreType.DMA], interpret=params())
  with kernels_on_pallasvm():
    with pytest.raises(Exception) as e:
      jax.block_until_ready(jax.jit(f)(arange((16, 128))))
  message = str(e.value)
  assert "grid point (2)" in message
  assert "Out-of-bounds read of ref 0 (dims [16, 128]): dim 0 start 16" in message
  assert re.search(r"by a DMA at dma_start \(.*test_memory_model.py:\d+",
                   message)


def test_semaphores_left_non_zero_are_reported(capfd):
  def kernel(o_ref, sems):
    pl.semaphore_signal(sems.at[1], 2)
    o_ref[...] = jnp.zeros_like(o_ref)

  f = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.SemaphoreType.REGULAR((3,))], interpret=params())
  on_pallasvm(f)
  err = capfd.readouterr().err
  assert ("pallasvm warning: kernel 'kernel': semaphore scratch_shapes[0][1]"
          " holds 2 at the end of the call (expected 0)") in err
  assert "scratch_shapes[0][0]" not in err


def test_a_correct_kernel_reports_nothing(capfd):
  def kernel(x_hbm, o_ref, buf, sem):
    pltpu.async_copy(x_hbm, buf, sem).wait()
    o_ref[...] = buf[...]

  f = pl.pallas_call(
      kernel, in_specs=[ANY],
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32),
                      pltpu.SemaphoreType.DMA], interpret=params())
  on_pallasvm(f, arange((8, 128)))
  assert "pallasvm warning" not in capfd.readouterr().err


# --- Race detection over DMAs -------------------------------------------------


def races_found():
  from jax._src.pallas.mosaic.interpret import interpret_pallas_call as ipc  # pylint: disable=g-import-not-at-top
  return ipc.races.races_found


@pytest.mark.parametrize("mode", MODES)
def test_two_dmas_in_flight_into_one_buffer_race(mode, capfd):
  def kernel(x_hbm, o_ref, buf, sems):
    a = pltpu.make_async_copy(x_hbm.at[pl.ds(0, 8)], buf, sems.at[0])
    b = pltpu.make_async_copy(x_hbm.at[pl.ds(8, 4)], buf.at[pl.ds(4, 4)],
                              sems.at[1])
    a.start()
    b.start()   # writes rows 4..7 of buf while `a` may still write them
    a.wait()
    b.wait()
    o_ref[...] = buf[...]

  f = pl.pallas_call(
      kernel, in_specs=[ANY],
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32),
                      pltpu.SemaphoreType.DMA((2,))],
      interpret=params(mode, detect_races=True))
  x = arange((16, 128))
  on_pallasvm(f, x)
  assert races_found()
  err = capfd.readouterr().err
  # 4 rows of 128 elements; the first one named.
  assert "race on scratch_shapes[0] (ref 2, float32[8,128]) element (4, 0)" \
      " and 511 more" in err
  assert re.search(r"the DMA started by dma_start \(.*test_memory_model.py:\d+\)"
                   r" at grid point \(\) writes it", err)


@pytest.mark.parametrize("mode", MODES)
def test_writing_a_dma_source_before_the_wait_races(mode):
  def kernel(x_ref, o_hbm, sem):
    copy = pltpu.make_async_copy(x_ref, o_hbm, sem)
    copy.start()
    x_ref[0, 0] = 1.0   # the DMA may not have read it yet
    copy.wait()

  f = pl.pallas_call(
      kernel, out_specs=ANY,
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.SemaphoreType.DMA],
      interpret=params(mode, detect_races=True))
  # Interpret mode agrees.
  on_interpret_mode(f, arange((8, 128)))
  assert races_found()
  on_pallasvm(f, arange((8, 128)))
  assert races_found()


@pytest.mark.parametrize("mode", MODES)
def test_a_pipeline_that_waits_before_it_reads_has_no_race(mode, capfd):
  nblocks = 4
  f = double_buffered_copy(nblocks, params(mode, detect_races=True))
  x = arange((nblocks * 8, 128))
  want = x + jnp.repeat(jnp.arange(nblocks, dtype=jnp.float32), 8)[:, None]
  np.testing.assert_array_equal(on_pallasvm(f, x), want)
  assert not races_found()
  assert "RACE" not in capfd.readouterr().err


# --- Race detection between cores (runtime/cross_core_races.h) ----------------
#
# Grids of 4 points with a `parallel` dimension on 2 simulated cores, rows
# i*8..i*8+7 being block i. Interpret mode visits the parallel dimension as
# 0, 3, 1, 2 (seed None): core 0 runs points 0 and 3, core 1 points 1 and 2.
# Nothing orders one core's HBM accesses against the other's, so any two of
# one element, one of them a write, race; each case says whether that
# happens, and interpret mode's own verdict must agree.

PARALLEL = pltpu.CompilerParams(dimension_semantics=("parallel",))
ROWS = pl.BlockSpec((8, 128), lambda i: (i, 0))
ROWS_SHAPE = jax.ShapeDtypeStruct((32, 128), jnp.float32)


def rows(block):
  return pl.ds(block * 8, 8)


def dma_rows_out(target, interpret):
  """Point i DMAs its input block into rows target(i) of an HBM output."""
  def kernel(x_ref, o_hbm, sem):
    copy = pltpu.make_async_copy(x_ref, o_hbm.at[rows(target(pl.program_id(0)))],
                                 sem)
    copy.start()
    copy.wait()

  return pl.pallas_call(
      kernel, grid=(4,), in_specs=[ROWS], out_specs=ANY, out_shape=ROWS_SHAPE,
      scratch_shapes=[pltpu.SemaphoreType.DMA], compiler_params=PARALLEL,
      interpret=interpret)


def dma_shift_in_place(interpret):
  """Point i DMAs block i+1 of x (an HBM input aliased to the HBM output)
  into VMEM and then to block i: it reads what another point writes."""
  def kernel(x_hbm, o_hbm, buf, sems):
    i = pl.program_id(0)
    read = pltpu.make_async_copy(x_hbm.at[rows((i + 1) % 4)], buf, sems.at[0])
    read.start()
    read.wait()
    write = pltpu.make_async_copy(buf, o_hbm.at[rows(i)], sems.at[1])
    write.start()
    write.wait()

  return pl.pallas_call(
      kernel, grid=(4,), in_specs=[ANY], out_specs=ANY, out_shape=ROWS_SHAPE,
      input_output_aliases={0: 0},
      scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32),
                      pltpu.SemaphoreType.DMA((2,))],
      compiler_params=PARALLEL, interpret=interpret)


def dma_shared_rows_in(interpret):
  """Every point DMAs rows 0..7 of an HBM input, which nothing writes."""
  def kernel(x_hbm, o_ref, buf, sem):
    copy = pltpu.make_async_copy(x_hbm.at[rows(0)], buf, sem)
    copy.start()
    copy.wait()
    o_ref[...] = buf[...] + pl.program_id(0).astype(jnp.float32)

  return pl.pallas_call(
      kernel, grid=(4,), in_specs=[ANY], out_specs=ROWS, out_shape=ROWS_SHAPE,
      scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32),
                      pltpu.SemaphoreType.DMA],
      compiler_params=PARALLEL, interpret=interpret)


def dma_over_written_back_blocks(interpret):
  """Point i writes output block i back (a block copy) and DMAs into block
  i+1 of the same buffer through x, the HBM input aliased to it."""
  def kernel(x_hbm, o_ref, buf, sem):
    i = pl.program_id(0)
    o_ref[...] = jnp.full((8, 128), 1.0, jnp.float32)
    buf[...] = jnp.full((8, 128), 2.0, jnp.float32)
    copy = pltpu.make_async_copy(buf, x_hbm.at[rows((i + 1) % 4)], sem)
    copy.start()
    copy.wait()

  return pl.pallas_call(
      kernel, grid=(4,), in_specs=[ANY], out_specs=ROWS, out_shape=ROWS_SHAPE,
      input_output_aliases={0: 0},
      scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32),
                      pltpu.SemaphoreType.DMA],
      compiler_params=PARALLEL, interpret=interpret)


def dma_into_an_hbm_input(interpret):
  """Every point DMAs its output block into rows 0..7 of x, an HBM input
  (not aliased: the call's copy of it, shared by the cores)."""
  def kernel(x_hbm, o_ref, buf, sem):
    o_ref[...] = jnp.full((8, 128), 1.0, jnp.float32)
    buf[...] = jnp.full((8, 128), 2.0, jnp.float32)
    copy = pltpu.make_async_copy(buf, x_hbm.at[rows(0)], sem)
    copy.start()
    copy.wait()

  return pl.pallas_call(
      kernel, grid=(4,), in_specs=[ANY], out_specs=ROWS, out_shape=ROWS_SHAPE,
      scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32),
                      pltpu.SemaphoreType.DMA],
      compiler_params=PARALLEL, interpret=interpret)


CROSS_CORE_CASES = {
    # Each core DMAs its own rows into the HBM output: no race.
    "own_rows": (lambda p: dma_rows_out(lambda i: i, p), False),
    # Both cores DMA into rows 0..7: a race.
    "same_rows": (lambda p: dma_rows_out(lambda i: 0, p), True),
    # Core 0 at point 0 reads block 1, which core 1 writes at point 1.
    "read_what_another_writes": (dma_shift_in_place, True),
    # Both cores only read the same HBM input: no race.
    "both_read": (dma_shared_rows_in, False),
    # Core 0 at point 0 DMAs into block 1, which core 1 writes back.
    "dma_vs_write_back": (dma_over_written_back_blocks, True),
    # Both cores DMA into the same rows of an HBM input.
    "into_an_input": (dma_into_an_hbm_input, True),
}


def races_on_both(make, cores, mode):
  """make(interpret params) run on interpret mode and then on pallasvm,
  detecting races on `cores` cores: (interpret mode found races, pallasvm
  did, interpret mode's result, pallasvm's)."""
  f = make(params(mode, detect_races=True, num_cores_or_threads=cores))
  x = arange((32, 128))
  want = on_interpret_mode(f, x)
  jax_found = races_found()
  pltpu.reset_tpu_interpret_mode_state()
  try:
    got = on_pallasvm(f, x)
    return jax_found, races_found(), want, got
  finally:
    pltpu.reset_tpu_interpret_mode_state()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CROSS_CORE_CASES)
def test_races_between_cores_agree_with_interpret_mode(case, mode):
  make, racy = CROSS_CORE_CASES[case]
  jax_found, found, want, got = races_on_both(make, 2, mode)
  assert jax_found == racy
  assert found == racy
  if not racy:  # a racy result depends on which core went last
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("case", ["same_rows", "read_what_another_writes",
                                  "dma_vs_write_back", "into_an_input"])
def test_one_core_has_no_races_between_cores(case):
  # The same kernels on one core: each DMA is waited for before the next
  # point's accesses, so nothing races.
  jax_found, found, want, got = races_on_both(CROSS_CORE_CASES[case][0], 1,
                                              "on_wait")
  assert not jax_found
  assert not found
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_a_race_between_cores_names_both_dmas(capfd):
  on_pallasvm(dma_rows_out(lambda i: 0, params(detect_races=True,
                                               num_cores_or_threads=2)),
              arange((32, 128)))
  assert races_found()
  err = capfd.readouterr().err
  dma = r"the DMA started by dma_start \(.*test_memory_model.py:\d+\)"
  # Rows 0..7, 1024 elements, one race; the last DMA of each core into
  # them (core 0 runs points 0 and 3, core 1 points 1 and 2).
  assert re.search(
      r"race on outputs \(output 0, float32\[32,128\]\) element \(0, 0\) and"
      rf" 1023 more: written by {dma} at grid point \(3\) on core 0 and by"
      rf" {dma} at grid point \(2\) on core 1\n", err), err
  pltpu.reset_tpu_interpret_mode_state()


def test_a_race_with_a_write_back_names_the_aliased_buffer(capfd):
  on_pallasvm(dma_over_written_back_blocks(
      params(detect_races=True, num_cores_or_threads=2)), arange((32, 128)))
  err = capfd.readouterr().err
  # Block 1 (rows 8..15): core 0's DMA at point 0, core 1's write-back.
  assert re.search(
      r"race on outputs \(output 0, aliased to input 0, float32\[32,128\]\)"
      r" element \(8, 0\) and 1023 more: written by the DMA started by"
      r" dma_start \(.*\) at grid point \(0\) on core 0 and written back by"
      r" core 1\n", err), err
  pltpu.reset_tpu_interpret_mode_state()


# --- ops/tpu/paged_attention ---------------------------------------------------


def paged_attention_inputs(dtype, batch=2, heads=4, kv_heads=2, head_dim=128,
                           page_size=16, total_pages=32, pages_per_seq=8):
  k0, k1, k2, k3 = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(k0, (batch, heads, head_dim), jnp.float32)
  k_pages = jax.random.normal(
      k1, (kv_heads, total_pages, page_size, head_dim), jnp.float32)
  v_pages = jax.random.normal(
      k2, (kv_heads, total_pages, page_size, head_dim), jnp.float32)
  # Lengths that end inside a page and inside a compute block.
  lengths = jnp.array([37, 100], jnp.int32)[:batch]
  page_indices = jax.random.permutation(k3, total_pages)[
      :batch * pages_per_seq].reshape(batch, pages_per_seq).astype(jnp.int32)
  return (q.astype(dtype), k_pages.astype(dtype), v_pages.astype(dtype),
          lengths, page_indices)


# Every mode and both inline_seq_dim settings in f32; bf16 (whose interpret
# mode runs are the slowest) in each mode once, pairwise with the settings.
PAGED_CASES = [
    *[pytest.param(jnp.float32, m, i, id=f"f32-{m}-{'inline' if i else 'grid'}")
      for m in [None, "kv_head", "batch"] for i in [True, False]],
    pytest.param(jnp.bfloat16, None, True, id="bf16-None-inline"),
    pytest.param(jnp.bfloat16, "kv_head", False, id="bf16-kv_head-grid"),
    pytest.param(jnp.bfloat16, "batch", True, id="bf16-batch-inline"),
]


@pytest.mark.parametrize("dtype,megacore_mode,inline_seq_dim", PAGED_CASES)
def test_paged_attention(dtype, megacore_mode, inline_seq_dim):
  from jax.experimental.pallas.ops.tpu.paged_attention import paged_attention  # pylint: disable=g-import-not-at-top

  def fn(*args):
    return paged_attention(*args, pages_per_compute_block=4,
                           megacore_mode=megacore_mode,
                           inline_seq_dim=inline_seq_dim)

  args = paged_attention_inputs(dtype)
  # Megacore modes split the grid over 2 simulated cores, in both.
  cores = 1 if megacore_mode is None else 2
  run = pltpu.InterpretParams(num_cores_or_threads=cores)
  with pltpu.force_tpu_interpret_mode(run):
    want = np.asarray(jax.jit(fn)(*args)).astype(np.float32)
  before = pallasvm.stats()["lowerings"]
  with kernels_on_pallasvm(), pltpu.force_tpu_interpret_mode(run):
    got = np.asarray(jax.jit(fn)(*args)).astype(np.float32)
  assert pallasvm.stats()["lowerings"] > before
  # Softmax-weighted averages of N(0, 1) values, O(1): in f32 the online
  # softmax's exp and the 128-long dots differ by a few ulp (7e-7 seen);
  # bf16 rounds every operation in both and is exact here, but a bf16 ulp
  # (2^-8 relative) is allowed.
  tol = dict(rtol=0, atol=5e-6) if dtype == jnp.float32 else dict(
      rtol=8e-3, atol=8e-3)
  np.testing.assert_allclose(got, want, **tol)


def test_delay_touch_and_trace_value_change_nothing():
  def kernel(x_ref, o_ref):
    pl.delay(100)
    pltpu.touch(x_ref)
    pltpu.trace_value("first", x_ref[0, 0])
    o_ref[...] = x_ref[...] + 1.0

  f = pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((8, 128),
                                                            jnp.float32),
                     interpret=params())
  x = arange((8, 128))
  np.testing.assert_array_equal(on_pallasvm(f, x), x + 1.0)


# --- ops/tpu/ragged_paged_attention (interpret mode cannot run it) ----------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16],
                         ids=["f32", "bf16"])
def test_ragged_paged_attention_against_its_jnp_reference(dtype):
  # jax 0.10.2's interpret mode cannot run this kernel (it reshapes and
  # bitcasts refs); the reference is the module's own jnp implementation.
  from jax.experimental.pallas.ops.tpu.ragged_paged_attention import kernel as rpa  # pylint: disable=g-import-not-at-top
  heads, kv_heads, head_dim, page_size = 8, 2, 128, 16
  q_lens, kv_lens = [5, 1, 17], [40, 70, 17]  # prefill, decode, prefill
  k0, k1, k2 = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(k0, (32, heads, head_dim), jnp.float32).astype(dtype)
  kv_pages = jax.random.normal(
      k1, (32, page_size, 2 * kv_heads, head_dim), jnp.float32).astype(dtype)
  args = (q, kv_pages, jnp.array(kv_lens + [0], jnp.int32),
          jax.random.permutation(k2, 32).reshape(4, 8).astype(jnp.int32),
          jnp.array(np.concatenate([[0], np.cumsum(q_lens), [sum(q_lens)]]),
                    jnp.int32),
          jnp.array([len(q_lens)], jnp.int32))
  scale = head_dim**-0.5
  want = np.asarray(rpa.ref_ragged_paged_attention(*args, sm_scale=scale))

  def fn(*a):
    return rpa.ragged_paged_attention(*a, sm_scale=scale,
                                      num_kv_pages_per_block=2,
                                      num_queries_per_block=8)

  with tpu_mesh():
    got = np.asarray(on_pallasvm(fn, *args))
  n = sum(q_lens)  # rows past the last sequence's queries are padding
  # Softmax-weighted averages of N(0, 1) values (O(1)); f32: the kernel's
  # online softmax against the reference's one-pass one, ~1e-6 (3.6e-7
  # seen); bf16: both round to bf16, a few bf16 ulps (2^-8 relative).
  tol = 5e-6 if dtype == jnp.float32 else 5e-2
  np.testing.assert_allclose(got[:n].astype(np.float32),
                             want[:n].astype(np.float32), rtol=0, atol=tol)


def test_leftover_semaphores_are_errors_by_option():
  def kernel(o_ref, sems):
    pl.semaphore_signal(sems.at[1], 2)
    o_ref[...] = jnp.zeros_like(o_ref)

  f = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.SemaphoreType.REGULAR((3,))],
      interpret=pallasvm.InterpretParams(leftover_semaphores="error"))
  with kernels_on_pallasvm():
    with pytest.raises(Exception, match=r"semaphore scratch_shapes\[0\]\[1\] "
                       r"holds 2 at the end of the call \(expected 0\)"):
      jax.block_until_ready(jax.jit(f)())


# --- jax.debug.print ------------------------------------------------------------


def test_debug_print_writes_interpret_modes_text_with_the_grid_point(capfd):
  def kernel(x_ref, o_ref):
    jax.debug.print("x = {} at {} {{literal}}", x_ref[0, 0], pl.program_id(0))
    pl.debug_print("positive: {}", x_ref[0, 1] > 0)
    o_ref[...] = x_ref[...]

  spec = pl.BlockSpec((8, 128), lambda i: (i, 0))
  f = pl.pallas_call(kernel, grid=(2,), in_specs=[spec], out_specs=spec,
                     out_shape=jax.ShapeDtypeStruct((16, 128), jnp.float32),
                     interpret=params())
  x = arange((16, 128)) * 0.1
  capfd.readouterr()
  on_interpret_mode(f, x)
  want = capfd.readouterr().out.splitlines()
  on_pallasvm(f, x)
  got = capfd.readouterr().out.splitlines()
  # Interpret mode's lines (floats as Python floats: float32 0.1 is
  # 0.10000000149011612), each after the grid point that printed it.
  assert want == ["x = 0.0 at 0 {literal}", "positive: True",
                  "x = 102.4000015258789 at 1 {literal}", "positive: True"]
  assert got == [f"[grid point ({i // 2})] {line}"
                 for i, line in enumerate(want)]


# --- buffer_bounds="padded" ------------------------------------------------------
#
# Interpret mode allocates every buffer but SMEM ones and scalars up to
# whole tiles of the simulated TPU (tpu_mesh: v6e; f32 2-D tiles (8, 128),
# 1-D tiles of 128 * 4 / itemsize). Inside that padded shape and outside the
# logical one, reads give the fill value and writes are dropped; beyond it
# accesses are out of bounds as ever. Each case runs the same kernel on
# interpret mode and pallasvm.

OOB_READS = ["raise", "uninitialized"]


def padded(**kw):
  return params(buffer_bounds="padded", **kw)


def assert_both_raise(fn, *args, match):
  """fn(*args) fails with `match` in its message on interpret mode and on
  pallasvm, both under tpu_mesh."""
  with tpu_mesh_on_every_thread():
    with pytest.raises(Exception, match=match):
      on_interpret_mode(fn, *args)
  with tpu_mesh():
    with pytest.raises(Exception, match=match) as e:
      with kernels_on_pallasvm():
        jax.block_until_ready(jax.jit(fn)(*args))
  return str(e.value)


@pytest.mark.parametrize("reads", OOB_READS)
def test_padded_scratch_reads_fill_and_drops_writes(reads):
  def kernel(x_ref, y_ref, o_ref, tail_ref, sum_ref, scratch):
    scratch[...] = x_ref[...]
    # Rows 8..15 of a (10, 150) buffer padded to (16, 256): rows 8 and 9
    # and columns below 150 are written, the rest dropped. (Dynamic starts:
    # JAX checks static ones against the logical shape when tracing.)
    i = pl.program_id(0)
    rows, tail = pl.ds(i + 8, 8), pl.ds(i + 128, 128)
    scratch[rows, tail] = y_ref[...]
    scratch[rows, pl.ds(i, 128)] += y_ref[...]
    o_ref[...] = scratch[...]
    tail_ref[...] = scratch[rows, tail]
    sum_ref[...] = scratch[rows, pl.ds(i, 128)]

  f = pl.pallas_call(
      kernel, grid=(1,),
      out_shape=[jax.ShapeDtypeStruct((10, 150), jnp.float32),
                 jax.ShapeDtypeStruct((8, 128), jnp.float32),
                 jax.ShapeDtypeStruct((8, 128), jnp.float32)],
      scratch_shapes=[pltpu.VMEM((10, 150), jnp.float32)],
      interpret=padded(out_of_bounds_reads=reads))
  x, y = arange((10, 150)), arange((8, 128)) + 0.5
  whole, tail, total = assert_same(f, x, y, mesh=True)
  np.testing.assert_array_equal(whole[8:, 128:], y[:2, :22])
  np.testing.assert_array_equal(total[:2], x[8:, :128] + y[:2])
  assert np.isnan(tail[2:]).all() and np.isnan(tail[:, 22:]).all()
  assert np.isnan(total[2:]).all()


@pytest.mark.parametrize("reads", OOB_READS)
def test_dmas_into_and_out_of_the_padding(reads):
  def kernel(x_hbm, o_hbm, back_hbm, scratch):
    # x is (12, 128): HBM padded to (16, 128); rows 8..15 hold 8 .. 11 then
    # the fill. Into scratch rows 6..13 of (10, 128): rows 10.. dropped.
    # (Dynamic starts: JAX checks static ones when tracing.)
    i = pl.program_id(0)
    pltpu.sync_copy(x_hbm.at[pl.ds(i + 8, 8)], scratch.at[pl.ds(i + 6, 8)])
    pltpu.sync_copy(scratch.at[pl.ds(i + 8, 8)], o_hbm)
    # Out of a VMEM buffer into an HBM output's padding.
    pltpu.sync_copy(scratch.at[pl.ds(i, 8)], back_hbm.at[pl.ds(i + 8, 8)])

  f = pl.pallas_call(
      kernel, grid=(1,), in_specs=[ANY], out_specs=[ANY, ANY],
      out_shape=[jax.ShapeDtypeStruct((8, 128), jnp.float32),
                 jax.ShapeDtypeStruct((12, 128), jnp.float32)],
      scratch_shapes=[pltpu.VMEM((10, 128), jnp.float32)],
      interpret=padded(out_of_bounds_reads=reads))
  out, back = assert_same(f, arange((12, 128)), mesh=True)
  np.testing.assert_array_equal(out[:2], arange((12, 128))[10:12])
  assert np.isnan(out[2:]).all()
  assert np.isnan(back[:8]).all()  # an HBM output nothing wrote


@pytest.mark.parametrize("reads", OOB_READS)
def test_a_read_beyond_the_padding_is_out_of_bounds(reads):
  def kernel(o_ref, scratch):
    scratch[...] = jnp.ones(scratch.shape, jnp.float32)
    o_ref[...] = scratch[pl.ds(pl.program_id(0) + 12, 8)]  # rows 12..19 of 16

  f = pl.pallas_call(
      kernel, grid=(1,), out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((10, 128), jnp.float32)],
      interpret=padded(out_of_bounds_reads=reads))
  if reads == "uninitialized":
    assert np.isnan(assert_same(f, mesh=True)).all()
    return
  message = assert_both_raise(f, match="Out-of-bounds read")
  assert ("Out-of-bounds read of ref 1 (dims [10, 128] padded to [16, 128]):"
          " dim 0 start 12 size 8 (needs start + (size-1)*stride < 16)"
          in message)


@pytest.mark.parametrize("reads", OOB_READS)
def test_writes_beyond_the_padding_are_out_of_bounds(reads):
  def kernel(x_hbm, o_ref, scratch):
    pltpu.sync_copy(x_hbm, scratch.at[pl.ds(pl.program_id(0) + 12, 8)])
    o_ref[...] = scratch[pl.ds(0, 8)]

  f = pl.pallas_call(
      kernel, grid=(1,), in_specs=[ANY],
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((10, 128), jnp.float32)],
      interpret=padded(out_of_bounds_reads=reads))
  message = assert_both_raise(f, arange((8, 128)), match="Out-of-bounds write")
  assert "padded to [16, 128]" in message and "by a DMA" in message


def test_smem_scratch_is_never_padded():
  def kernel(o_ref, vmem, smem):
    i = pl.program_id(0)
    vmem[i + 100] = 1.0   # (100,) f32 VMEM pads to (128,): dropped
    o_ref[0] = vmem[i + 100]
    smem[i + 10] = 1      # (10,) SMEM is never padded: out of bounds
    # (interpret mode names the store a swap, pallasvm a write)

  f = pl.pallas_call(
      kernel, grid=(1,), out_specs=pl.BlockSpec(memory_space=pltpu.SMEM),
      out_shape=jax.ShapeDtypeStruct((1,), jnp.float32),
      scratch_shapes=[pltpu.VMEM((100,), jnp.float32),
                      pltpu.SMEM((10,), jnp.int32)],
      interpret=padded())
  message = assert_both_raise(f, match="Out-of-bounds")
  assert "Out-of-bounds write of ref 2 (dims [10])" in message


def test_one_dimensional_buffers_pad_to_one_dimensional_tiles():
  def kernel(x_ref, o_ref, tail_ref, scratch):
    # f32 (100,) pads to (128,); the input block (200,) to (256,).
    scratch[...] = x_ref[pl.ds(0, 100)]
    scratch[pl.ds(pl.program_id(0) + 96, 32)] = x_ref[pl.ds(168, 32)]
    o_ref[...] = scratch[...]
    tail_ref[...] = x_ref[pl.ds(pl.program_id(0) + 192, 64)]

  f = pl.pallas_call(
      kernel, grid=(1,),
      out_shape=[jax.ShapeDtypeStruct((100,), jnp.float32),
                 jax.ShapeDtypeStruct((64,), jnp.float32)],
      scratch_shapes=[pltpu.VMEM((100,), jnp.float32)],
      interpret=padded())
  x = arange((200,))
  out, tail = assert_same(f, x, mesh=True)
  np.testing.assert_array_equal(out[96:], x[168:172])
  np.testing.assert_array_equal(tail[:8], x[192:])
  assert np.isnan(tail[8:]).all()


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.int8])
def test_narrow_dtypes_pad_to_their_own_tiles(dtype):
  def kernel(o_ref, scratch):
    # One row of a narrow dtype pads to 2 (bf16) or 4 (int8) rows and 128
    # lanes (f32 would pad to 1 row): rows 1.. are padding.
    scratch[...] = jnp.ones(scratch.shape, dtype)
    rows = pl.ds(pl.program_id(0), 2)
    scratch[rows, pl.ds(0, 128)] = jnp.full((2, 128), 3, dtype)
    o_ref[...] = scratch[rows, pl.ds(0, 128)]

  f = pl.pallas_call(
      kernel, grid=(1,), out_shape=jax.ShapeDtypeStruct((2, 128), dtype),
      scratch_shapes=[pltpu.VMEM((1, 100), dtype)], interpret=padded())
  out = np.asarray(assert_same(f, mesh=True)).astype(np.float32)
  np.testing.assert_array_equal(out[0, :100], 3)
  fill = np.nan if dtype == jnp.bfloat16 else np.iinfo(np.int8).max
  np.testing.assert_array_equal(out[0, 100:], fill)
  np.testing.assert_array_equal(out[1], fill)


def test_padded_block_buffers():
  def kernel(x_ref, o_ref, tail_ref):
    # (8, 100) blocks pad to (8, 128): columns 100.. read the fill and
    # writes there are dropped.
    cols = pl.ds(pl.program_id(0) * 0 + 96, 32)  # dynamic, as above
    o_ref[...] = x_ref[...]
    o_ref[:, cols] = jnp.zeros((8, 32), jnp.float32)
    tail_ref[...] = x_ref[:, cols]

  spec = pl.BlockSpec((8, 100), lambda i: (0, i))
  f = pl.pallas_call(
      kernel, grid=(2,), in_specs=[spec],
      out_specs=[spec, pl.BlockSpec((8, 32), lambda i: (0, i))],
      out_shape=[jax.ShapeDtypeStruct((8, 200), jnp.float32),
                 jax.ShapeDtypeStruct((8, 64), jnp.float32)],
      interpret=padded())
  x = arange((8, 200))
  out, tail = assert_same(f, x, mesh=True)
  for b in range(2):
    np.testing.assert_array_equal(out[:, 100 * b + 96:100 * b + 100], 0)
    np.testing.assert_array_equal(tail[:, 32 * b:32 * b + 4],
                                  x[:, 100 * b + 96:100 * b + 100])
    assert np.isnan(tail[:, 32 * b + 4:32 * b + 32]).all()


def test_padded_buffers_need_a_simulated_tpu():
  # Without an abstract TPU mesh, interpret mode cannot tell the tiling
  # (tpu_info raises for a CPU device) and neither can the exporter.
  def kernel(o_ref, scratch):
    scratch[...] = jnp.ones(scratch.shape, jnp.float32)
    o_ref[...] = scratch[...]

  f = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32)], interpret=padded())
  with kernels_on_pallasvm():
    with pytest.raises(ValueError, match="Unsupported TPU device kind"):
      jax.jit(f)()
