"""Several simulated cores of one device: pl.core_map and pl.kernel over a
TensorCore mesh, semaphores signalled across cores, DMAs between cores,
pltpu.VMEM_SHARED, core_barrier and run_on_first_core, and what happens
when cores fail or deadlock.

Expected values come from JAX's interpret mode where it can run the kernel
(the outputs are compared bit for bit), else from the documentation's own
checks or a jnp reference: jax 0.10.2's interpret mode cannot run a DMA or
signal with device_id={"core": c} (NotImplementedError), and gives each
core its own VMEM_SHARED buffer. Every kernel must run on pallasvm (JAX's
interpreter raises if entered). Kernels that could hang carry
pallasvm.InterpretParams(timeout_s=...), so that a missed deadlock fails
the test instead of hanging it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

import pallasvm
from pallasvm import bridge
from pallasvm_only import on_pallasvm

if bridge.library_path() is None or not bridge.library_path().exists():
  pytest.skip("the bridge library (libpallasvm_xla.so) is not built",
              allow_module_level=True)

TPU_V6E = jax.sharding.AbstractMesh(
    (), (), abstract_device=jax.sharding.AbstractDevice("TPU v6e", 1, "tpu"))
# A guard against hangs: far above what any kernel here takes.
GUARD = pallasvm.InterpretParams(timeout_s=60)


def random(shape, seed=0):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


# --- The core_map documentation's kernels (docs/pallas/tpu/core_map.md) -----
#
# The documentation runs each under shard_map on 4 devices of 2 cores; the
# per-device kernel is the same on one device, which is what runs here.


def swap_cores_kernel(in_hbm, out_hbm, in_vmem, scratch_vmem, out_vmem,
                      sem, send_sem, recv_sem):
  core_index = jax.lax.axis_index("core")
  num_cores = jax.lax.axis_size("core")
  slc_size = in_hbm.shape[-1] // num_cores
  slc = pl.ds(core_index * slc_size, slc_size)
  pltpu.async_copy(in_hbm.at[:, slc], in_vmem, sem).wait()
  dst_core = (core_index + 1) % num_cores
  sem0 = pltpu.get_barrier_semaphore()
  pl.semaphore_signal(sem0, 1, device_id={"core": dst_core})
  pl.semaphore_wait(sem0, 1)
  the_copy = pltpu.make_async_remote_copy(
      in_vmem, scratch_vmem, send_sem, recv_sem, device_id={"core": dst_core})
  the_copy.start()
  the_copy.wait()
  out_vmem[...] = scratch_vmem[...] * 2
  pltpu.async_copy(out_vmem, out_hbm.at[:, slc], sem).wait()


@pytest.mark.parametrize("mode", ["on_wait", "eager"])
def test_swap_cores_with_core_map(mode):
  mesh = pltpu.create_tensorcore_mesh("core", num_cores=2)
  x = random((32, 256))

  def swap_cores(x):
    x_hbm_ref = jax.new_ref(x)
    o_hbm_ref = jax.new_ref(jax.lax.empty(x.shape, x.dtype))

    @pl.core_map(mesh, compiler_params=pltpu.CompilerParams(collective_id=0),
                 interpret=pallasvm.InterpretParams(
                     timeout_s=60, dma_execution_mode=mode))
    def _():
      pl.run_scoped(
          functools.partial(swap_cores_kernel, x_hbm_ref, o_hbm_ref),
          *([pltpu.VMEM((32, 128), x.dtype)] * 3),
          *([pltpu.SemaphoreType.DMA] * 3))
    return o_hbm_ref[...]

  y = on_pallasvm(swap_cores, x)
  np.testing.assert_array_equal(y[:, 128:], x[:, :128] * 2)
  np.testing.assert_array_equal(y[:, :128], x[:, 128:] * 2)


def test_a_dma_from_another_core_counts_as_written():
  """swap_cores with uninitialized_reads="error": each core reads the
  scratch buffer the other core's DMA filled, which must count as written
  (a false report would fail the call)."""
  mesh = pltpu.create_tensorcore_mesh("core", num_cores=2)
  x = random((8, 256), seed=6)

  def swap_cores(x):
    scratch = ([pltpu.VMEM((8, 128), x.dtype)] * 3
               + [pltpu.SemaphoreType.DMA] * 3)
    return pl.kernel(
        swap_cores_kernel, out_type=x, mesh=mesh, scratch_types=scratch,
        interpret=pallasvm.InterpretParams(timeout_s=60,
                                           uninitialized_reads="error"),
        compiler_params=pltpu.CompilerParams(collective_id=0))(x)

  y = on_pallasvm(swap_cores, x)
  np.testing.assert_array_equal(y[:, 128:], x[:, :128] * 2)
  np.testing.assert_array_equal(y[:, :128], x[:, 128:] * 2)


def test_swap_cores_with_pl_kernel():
  # Two cores only: the kernel's barrier (signal the next core, wait for
  # the previous) shows that the destination core has entered its
  # run_scoped only when the next core is the previous one.
  num_cores = 2
  mesh = pltpu.create_tensorcore_mesh("core", num_cores=num_cores)
  x = random((8, 128 * num_cores), seed=1)
  width = 128

  def swap_cores(x):
    scratch = ([pltpu.VMEM((8, width), x.dtype)] * 3
               + [pltpu.SemaphoreType.DMA] * 3)
    return pl.kernel(swap_cores_kernel, out_type=x, mesh=mesh,
                     scratch_types=scratch, interpret=GUARD,
                     compiler_params=pltpu.CompilerParams(collective_id=0))(x)

  y = on_pallasvm(swap_cores, x)
  # Core c sends its slice to core c + 1, which doubles it into its slice.
  for c in range(num_cores):
    got = y[:, ((c + 1) % num_cores) * width:][:, :width]
    np.testing.assert_array_equal(got, x[:, c * width:(c + 1) * width] * 2)


def add_one_body(in_vmem, out_vmem):
  out_vmem[...] = in_vmem[...] + 1


def add_one_kernel(x_hbm_ref, o_hbm_ref):
  in_shape = x_hbm_ref.shape
  pltpu.emit_pipeline(
      add_one_body,
      grid=(in_shape[0] // 8, in_shape[1] // 128),
      in_specs=[pl.BlockSpec(block_shape=(8, 128),
                             index_map=lambda i, j: (i, j))],
      out_specs=[pl.BlockSpec(block_shape=(8, 128),
                              index_map=lambda i, j: (i, j))],
      core_axis_name="core",
      dimension_semantics=(pltpu.PARALLEL, pltpu.ARBITRARY),
  )(x_hbm_ref, o_hbm_ref)


def test_add_one_pipelined_across_cores():
  mesh = pltpu.create_tensorcore_mesh("core", num_cores=2)
  x = random((64, 256), seed=2)

  def add_one(x, interpret):
    return pl.kernel(add_one_kernel, out_type=x, mesh=mesh, scratch_types=[],
                     interpret=interpret)(x)

  with jax.sharding.use_abstract_mesh(TPU_V6E):
    want = jax.jit(functools.partial(add_one, interpret=pltpu.InterpretParams()))(x)
    got = on_pallasvm(functools.partial(add_one, interpret=GUARD), x)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got, x + 1)


def test_indexed_add_one_with_scalar_prefetch():
  num_cores = 2
  mesh = pltpu.create_tensorcore_mesh("core", num_cores=num_cores)
  xs = random((64, 1024), seed=3)
  idx = 256
  out_cols = 512

  def indexed_add_one_kernel(in_refs, out_refs, i_smem_ref):
    (x_hbm_ref, i_hbm_ref), o_hbm_ref = in_refs, out_refs
    in_shape = x_hbm_ref.shape
    pltpu.sync_copy(i_hbm_ref, i_smem_ref)
    core_idx = jax.lax.axis_index("core")
    core_slc_size = in_shape[0] // num_cores
    i_map = lambda i: core_idx * core_slc_size // 8 + i
    j_map = lambda j: i_smem_ref[0] // 128 + j
    pltpu.emit_pipeline(
        add_one_body,
        grid=(core_slc_size // 8, out_cols // 128),
        in_specs=[pl.BlockSpec(block_shape=(8, 128),
                               index_map=lambda i, j: (i_map(i), j_map(j)))],
        out_specs=[pl.BlockSpec(block_shape=(8, 128),
                                index_map=lambda i, j: (i_map(i), j))],
    )(x_hbm_ref, o_hbm_ref)

  def indexed_add_one(x, index, interpret):
    out_type = jax.ShapeDtypeStruct((x.shape[0], out_cols), x.dtype)
    return pl.kernel(indexed_add_one_kernel, out_type=out_type, mesh=mesh,
                     scratch_types=[pltpu.SMEM((1,), jnp.int32)],
                     interpret=interpret)((x, index))

  index = jnp.array([idx], jnp.int32)
  with jax.sharding.use_abstract_mesh(TPU_V6E):
    want = jax.jit(functools.partial(
        indexed_add_one, interpret=pltpu.InterpretParams()))(xs, index)
    got = on_pallasvm(functools.partial(indexed_add_one, interpret=GUARD),
                      xs, index)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got, xs[:, idx:idx + out_cols] + 1)


# --- VMEM_SHARED, core_barrier, run_on_first_core ---------------------------


@pytest.mark.parametrize("num_cores", [2, 3])
def test_vmem_shared_is_one_buffer_for_every_core(num_cores):
  """Each core writes its rows of a VMEM_SHARED buffer; after a barrier the
  first core copies the whole buffer out. Interpret mode gives each core
  its own VMEM_SHARED buffer, so there the other cores' rows stay NaN."""
  mesh = pltpu.create_tensorcore_mesh("core", num_cores=num_cores)
  rows = 8
  x = random((rows * num_cores, 128), seed=4)

  def kernel(x_hbm, o_hbm, shared, mine, sem, barrier):
    core = jax.lax.axis_index("core")
    part = pl.ds(core * rows, rows)
    pltpu.async_copy(x_hbm.at[part], mine, sem).wait()
    mine[...] = mine[...] * 3.0
    pltpu.async_copy(mine, shared.at[part], sem).wait()
    pltpu.core_barrier(barrier, core_axis_name="core")

    @pltpu.run_on_first_core("core")
    def _():
      pltpu.async_copy(shared, o_hbm, sem).wait()

  f = pl.kernel(kernel, out_type=x, mesh=mesh, interpret=GUARD,
                scratch_types=[pltpu.VMEM_SHARED(x.shape, x.dtype),
                               pltpu.VMEM((rows, 128), x.dtype),
                               pltpu.SemaphoreType.DMA,
                               pltpu.SemaphoreType.REGULAR])
  np.testing.assert_array_equal(on_pallasvm(f, x), x * 3.0)


def test_core_barrier_orders_the_cores():
  """Core 1 writes HBM only after the barrier, core 0 only before: core 1's
  value is the one left, whichever core the OS runs first."""
  mesh = pltpu.create_tensorcore_mesh("core", num_cores=2)

  def kernel(o_hbm, buf, sem, barrier):
    core = jax.lax.axis_index("core")

    @pl.when(core == 0)
    def _():
      buf[...] = jnp.full(buf.shape, 1.0, buf.dtype)
      pltpu.async_copy(buf, o_hbm, sem).wait()

    pltpu.core_barrier(barrier, core_axis_name="core")

    @pl.when(core == 1)
    def _():
      buf[...] = jnp.full(buf.shape, 2.0, buf.dtype)
      pltpu.async_copy(buf, o_hbm, sem).wait()

  f = pl.kernel(kernel, out_type=jax.ShapeDtypeStruct((8, 128), jnp.float32),
                mesh=mesh, interpret=GUARD,
                scratch_types=[pltpu.VMEM((8, 128), jnp.float32),
                               pltpu.SemaphoreType.DMA,
                               pltpu.SemaphoreType.REGULAR])
  for _ in range(20):
    np.testing.assert_array_equal(on_pallasvm(f), np.full((8, 128), 2.0))


# --- Failure, deadlock, leftovers -------------------------------------------


def _two_core_kernel(body, scratch, interpret=GUARD):
  mesh = pltpu.create_tensorcore_mesh("core", num_cores=2)
  return pl.kernel(body, out_type=jax.ShapeDtypeStruct((8, 128), jnp.float32),
                   mesh=mesh, interpret=interpret, scratch_types=scratch)


def test_cores_waiting_for_each_other_are_a_deadlock_naming_each_waiter():
  def kernel(o_hbm, sems):
    del o_hbm
    core = jax.lax.axis_index("core")
    # Each waits for the other's signal, which comes only after its wait.
    pl.semaphore_wait(sems.at[core], 1)
    pl.semaphore_signal(sems.at[1 - core], 1, core_index=1 - core)

  f = _two_core_kernel(kernel, [pltpu.SemaphoreType.REGULAR((2,))])
  with pytest.raises(Exception) as e:
    on_pallasvm(f)
  message = str(e.value)
  assert "deadlock: every core that has not finished waits" in message
  assert "core 0 waits at semaphore_wait (" in message
  assert "core 1 waits at semaphore_wait (" in message
  assert "for semaphore scratch_shapes[0][0] to reach 1 (it holds 0)" in message
  assert "for semaphore scratch_shapes[0][1] to reach 1 (it holds 0)" in message


def test_a_core_waiting_for_a_finished_core_is_a_deadlock():
  def kernel(o_hbm, sem):
    del o_hbm

    @pl.when(jax.lax.axis_index("core") == 0)
    def _():
      pl.semaphore_wait(sem, 2)

    @pl.when(jax.lax.axis_index("core") == 1)
    def _():
      pl.semaphore_signal(sem, 1, core_index=0)

  f = _two_core_kernel(kernel, [pltpu.SemaphoreType.REGULAR])
  with pytest.raises(Exception, match=(
      r"deadlock: .* core 0 waits at semaphore_wait .* to reach 2 \(it holds"
      r" 1\); 1 core has finished")):
    on_pallasvm(f)


def test_a_failing_core_ends_the_call_with_its_own_error():
  def kernel(o_hbm, scratch, sem):
    del o_hbm
    core = jax.lax.axis_index("core")

    @pl.when(core == 1)
    def _():
      scratch[100, 0] = scratch[100, 0]  # row 100 of 8: fails
      pl.semaphore_signal(sem, 1, core_index=0)

    @pl.when(core == 0)
    def _():
      pl.semaphore_wait(sem, 1)  # must not wait forever

  f = _two_core_kernel(kernel, [pltpu.VMEM((8, 128), jnp.float32),
                                pltpu.SemaphoreType.REGULAR])
  with pytest.raises(Exception) as e:
    on_pallasvm(f)
  message = str(e.value)
  assert "(core 1): Out-of-bounds read of ref 1" in message, message
  assert "deadlock" not in message and "stopped" not in message


def test_a_signal_to_a_core_that_does_not_exist_is_an_error():
  def kernel(o_hbm, sem):
    del o_hbm
    pl.semaphore_signal(sem, 1, core_index=jax.lax.axis_index("core") + 5)

  f = _two_core_kernel(kernel, [pltpu.SemaphoreType.REGULAR])
  with pytest.raises(Exception, match=r"signalled to core [56] \(core_index or device_id\),"
                     r" but the device has 2 cores"):
    on_pallasvm(f)


def test_a_semaphore_left_non_zero_is_reported_per_core(capfd):
  def kernel(o_hbm, buf, dma_sem, sem):
    core = jax.lax.axis_index("core")

    @pl.when(core == 0)
    def _():
      pl.semaphore_signal(sem, 2, core_index=1)
      buf[...] = jnp.zeros(buf.shape, buf.dtype)
      pltpu.async_copy(buf, o_hbm, dma_sem).wait()

    @pl.when(core == 1)
    def _():
      pl.semaphore_wait(sem, 1)

  f = _two_core_kernel(kernel, [pltpu.VMEM((8, 128), jnp.float32),
                                pltpu.SemaphoreType.DMA,
                                pltpu.SemaphoreType.REGULAR])
  capfd.readouterr()
  np.testing.assert_array_equal(on_pallasvm(f), np.zeros((8, 128)))
  err = capfd.readouterr().err
  assert ("pallasvm warning: kernel 'kernel' (core 1): semaphore"
          " scratch_shapes[2] holds 1 at the end of the call") in err, err
  assert "(core 0): semaphore" not in err


# --- CORE_PARALLEL grid dimensions ------------------------------------------


def test_core_parallel_dimensions_are_split_between_cores():
  """As a TPU splits them between its TensorCores (interpret mode runs a
  core_parallel dimension on core 0 alone): each core takes a consecutive
  half of the points, the output equals interpret mode's."""
  x = random((32, 256), seed=5)
  spec = pl.BlockSpec((8, 128), lambda i, j: (i, j))
  visits = []

  def record(token, point, core):
    del token
    visits.append((tuple(int(p) for p in point), int(core)))

  def call(x, interpret):
    return pl.pallas_call(
        lambda x_ref, o_ref: o_ref.__setitem__(..., x_ref[...] * 2.0 + 1.0),
        grid=(4, 2), in_specs=[spec], out_specs=spec,
        out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=(pltpu.CORE_PARALLEL, pltpu.ARBITRARY)),
        interpret=interpret)(x)

  want = jax.jit(functools.partial(
      call, interpret=pltpu.InterpretParams(num_cores_or_threads=2)))(x)
  got = on_pallasvm(functools.partial(call, interpret=pallasvm.InterpretParams(
      num_cores_or_threads=2, grid_point_recorder=record)), x)
  np.testing.assert_array_equal(got, want)
  assert sorted(visits) == sorted(
      ((i, j), 0 if i < 2 else 1) for i in range(4) for j in range(2))
