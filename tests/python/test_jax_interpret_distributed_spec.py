"""JAX's own distributed TPU interpret-mode tests as pallasvm's spec.

Each test reproduces one case of JAX's
tests/pallas/tpu_pallas_interpret_distributed_test.py (jax-v0.10.2), on 8
CPU devices, named after it with the case's parameters in brackets, and
checks what that case checks (references computed by XLA collectives in the
same test, or by hand). As in test_jax_interpret_spec.py, every kernel must
run on pallasvm (JAX's TPU interpreter raises if entered) and a case that
needs a missing feature is a strict xfail with one NEEDS_* mark per feature.

The cases run on 8 devices in one child process (devices_child.py): each
test hands its case to that child and re-raises what it raised.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax._src.pallas.mosaic.interpret import interpret_pallas_call as jax_interpreter
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

import pallasvm
from pallasvm import bridge
import devices_child

if bridge.library_path() is None or not bridge.library_path().exists():
  pytest.skip("the bridge library (libpallasvm_xla.so) is not built",
              allow_module_level=True)

NUM_DEVICES = 8
P = jax.sharding.PartitionSpec
# What pallasvm raises for a feature it lacks yet.
UNSUPPORTED = pallasvm.UnsupportedError


def needs(feature: str, raises=UNSUPPORTED):
  return pytest.mark.xfail(strict=True, raises=raises,
                           reason=f"needs {feature}")


# One mark per missing feature (none today); `raises` is what pallasvm
# raises for the first missing feature such a case meets.

MODES = ["eager", "on_wait"]
RACES = [True, False]


def _mode_and_races(marks=()):
  return pytest.mark.parametrize("dma_execution_mode,detect_races", [
      pytest.param(m, r, id=f"{m}-{r}", marks=marks)
      for m in MODES for r in RACES])


# --- The child process (devices_child.py) -------------------------------------

child, run_case = devices_child.child_fixtures(NUM_DEVICES)


def ring_mesh():
  return jax.make_mesh((NUM_DEVICES,), ("x",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def neighbours(num_devices):
  me = lax.axis_index("x")
  left = lax.rem(me + num_devices - 1, jnp.int32(num_devices))
  right = lax.rem(me + 1, jnp.int32(num_devices))
  return me, left, right


def signal_mesh(sem, device):
  pl.semaphore_signal(sem, inc=1, device_id=(device,),
                      device_id_type=pl.DeviceIdType.MESH)


def barrier_with(left, right):
  barrier = pltpu.get_barrier_semaphore()
  signal_mesh(barrier, left)
  signal_mesh(barrier, right)
  pl.semaphore_wait(barrier, 2)


def remote_copy(src, dst, send_sem, recv_sem, device):
  return pltpu.make_async_remote_copy(
      src_ref=src, dst_ref=dst, send_sem=send_sem, recv_sem=recv_sem,
      device_id=(device,), device_id_type=pl.DeviceIdType.MESH)


def on_shards(fn, mesh, in_specs, out_specs, **kwargs):
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs,
                               out_specs=out_specs, **kwargs))


# --- Collectives --------------------------------------------------------------


def case_right_permute_example(dma_execution_mode, detect_races):
  n = jax.device_count()
  mesh, cols = ring_mesh(), P(None, "x")
  x = jax.device_put(
      jax.random.uniform(jax.random.key(0), (8, 128 * n), jnp.float32),
      jax.sharding.NamedSharding(mesh, cols))

  def kernel(in_hbm, out_hbm, send_sem, recv_sem):
    _, left, right = neighbours(n)
    barrier_with(left, right)
    dma = remote_copy(in_hbm, out_hbm, send_sem, recv_sem, right)
    dma.start()
    dma.wait()

  permute = pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=0, in_specs=[pl.BlockSpec(memory_space=pl.ANY)],
          out_specs=pl.BlockSpec(memory_space=pl.ANY),
          scratch_shapes=[pltpu.SemaphoreType.DMA] * 2),
      compiler_params=pltpu.CompilerParams(collective_id=13),
      interpret=pltpu.InterpretParams(dma_execution_mode=dma_execution_mode,
                                      detect_races=detect_races))
  got = on_shards(permute, mesh, cols, cols, check_vma=False)(x)
  shift = [(d, (d + 1) % n) for d in range(n)]
  want = on_shards(lambda s: lax.ppermute(s, "x", shift), mesh, cols, cols)(x)
  np.testing.assert_allclose(want, got)
  if detect_races:
    assert not jax_interpreter.races.races_found


@_mode_and_races()
def test_right_permute_example(run_case, dma_execution_mode, detect_races):
  run_case(dma_execution_mode=dma_execution_mode, detect_races=detect_races)


def case_all_gather_example(dma_execution_mode, detect_races):
  n = jax.device_count()
  mesh, rows = ring_mesh(), P("x", None)
  x = jax.device_put(
      jax.random.uniform(jax.random.key(0), (8 * n, 128), jnp.float32),
      jax.sharding.NamedSharding(mesh, rows))

  def kernel(in_hbm, out_hbm, local_sem, send_sem, recv_sems):
    step = pl.program_id(0)
    me, left, right = neighbours(n)
    # The slot this device forwards at this step; it receives into the
    # previous one (remote DMAs need not use the same index on both ends).
    slot = lax.rem(me - step + n, jnp.int32(n))

    @pl.when(step == 0)
    def _():
      barrier_with(left, right)
      own = pltpu.make_async_copy(in_hbm, out_hbm.at[me], local_sem)
      own.start()
      own.wait()

    dma = remote_copy(out_hbm.at[slot], out_hbm.at[slot], send_sem,
                      recv_sems.at[step], right)
    dma.start()
    dma.wait()

  gather = pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((n, 8, 128), jnp.float32),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=0, grid=(n - 1,),
          in_specs=[pl.BlockSpec(memory_space=pl.ANY)],
          out_specs=pl.BlockSpec(memory_space=pl.ANY),
          # A local copy, a send, and one receive semaphore per step.
          scratch_shapes=([pltpu.SemaphoreType.DMA] * 2
                          + [pltpu.SemaphoreType.DMA((n - 1,))])),
      interpret=pltpu.InterpretParams(dma_execution_mode=dma_execution_mode,
                                      detect_races=detect_races),
      compiler_params=pltpu.CompilerParams(collective_id=0))
  got = on_shards(gather, mesh, rows, rows, check_vma=False)(x)
  want = on_shards(lambda s: lax.all_gather(s, "x"), mesh, rows, rows)(x)
  np.testing.assert_allclose(want, got)
  if detect_races:
    assert not jax_interpreter.races.races_found


@_mode_and_races()
def test_all_gather_example(run_case, dma_execution_mode, detect_races):
  run_case(dma_execution_mode=dma_execution_mode, detect_races=detect_races)


def case_all_reduce_sum_example(dma_execution_mode, detect_races):
  n = jax.device_count()
  mesh, cols = ring_mesh(), P(None, "x")
  x = jax.device_put(jax.random.uniform(jax.random.key(0), (8, 128 * n)),
                     jax.sharding.NamedSharding(mesh, cols))

  def kernel(x_ref, o_ref, hbm_slots, copy_sem, recv_sem, send_sem,
             capacity_sem, received):
    step = pl.program_id(0)
    working = lax.rem(step, jnp.int32(2))
    receiving = 1 - working
    _, left, right = neighbours(n)

    @pl.when(step == 0)
    def _():
      barrier_with(left, right)
      o_ref[...] = jnp.zeros_like(o_ref)
      received[...] = jnp.zeros_like(received)
      first = remote_copy(x_ref, hbm_slots.at[working], send_sem, recv_sem,
                          right)
      first.start()
      first.wait()

    # Tell the left neighbour we can receive (else it could run a step ahead
    # and overwrite our working slot).
    signal_mesh(capacity_sem, left)
    local = pltpu.make_async_copy(hbm_slots.at[working], received, copy_sem)
    local.start()
    pl.semaphore_wait(capacity_sem, 1)
    forward = remote_copy(hbm_slots.at[working], hbm_slots.at[receiving],
                          send_sem, recv_sem, right)
    forward.start()
    local.wait()
    o_ref[...] += received[...]
    forward.wait()

  all_reduce = pl.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct((8, 128), x.dtype),
                 jax.ShapeDtypeStruct((2, 8, 128), x.dtype)),  # HBM slots
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=0, grid=(n,),
          in_specs=[pl.BlockSpec(memory_space=pltpu.VMEM)],
          out_specs=[pl.BlockSpec(memory_space=pltpu.VMEM),
                     pl.BlockSpec(memory_space=pl.ANY)],
          scratch_shapes=([pltpu.SemaphoreType.DMA] * 3
                          + [pltpu.SemaphoreType.REGULAR,
                             pltpu.VMEM((8, 128), x.dtype)])),
      interpret=pltpu.InterpretParams(dma_execution_mode=dma_execution_mode,
                                      detect_races=detect_races),
      compiler_params=pltpu.CompilerParams(collective_id=0))
  got = jax.block_until_ready(
      on_shards(all_reduce, mesh, cols, cols, check_vma=False)(x))[0]
  want = on_shards(lambda s: lax.psum(s, "x"), mesh, cols, cols)(x)
  np.testing.assert_allclose(want, got, atol=1e-5)
  if detect_races:
    assert not jax_interpreter.races.races_found


@_mode_and_races()
def test_all_reduce_sum_example(run_case, dma_execution_mode, detect_races):
  run_case(dma_execution_mode=dma_execution_mode, detect_races=detect_races)


LEFT, RIGHT = 0, 1


class _RingReduceScatter:
  """The ring reduce-scatter both reduce-scatter cases share: each device's
  (rows, cols) shard of a (rows * n, cols * n) array is n blocks; over n
  outer steps, in two phases (the left and the right half of each block's
  rows), partial sums go round the ring in both directions through two HBM
  slots, capacity semaphores keeping neighbours at most one step apart."""

  def __init__(self, n, rows):
    self.n, self.half = n, rows // 2

  def mod(self, v):
    return lax.rem(v + self.n, jnp.int32(self.n))

  def signal(self, direction, sem):
    me = lax.axis_index("x")
    signal_mesh(sem, self.mod(me - 1 if direction == LEFT else me + 1))

  def indices(self):
    step, phase = pl.program_id(0), pl.program_id(1)
    me = lax.axis_index("x")
    return dict(
        step=step, phase=phase, me=me,
        is_start=jnp.logical_and(step == 0, phase == 0),
        is_last=step == pl.num_programs(0) - 1,
        working=lax.rem(step, jnp.int32(2)),
        receiving=1 - lax.rem(step, jnp.int32(2)),
        left=self.mod(me - 1), right=self.mod(me + 1),
        left_source=self.mod(me + step + 1),
        right_source=self.mod(me - step - 1),
        left_half=pl.ds(0, self.half), right_half=pl.ds(self.half, self.half),
        phase_half=pl.ds(phase * self.half, self.half))

  def copies(self, ix, x_ref, slots, sems):
    """The initial and per-step DMAs of each direction."""
    (left_recv, left_send, right_recv, right_send) = sems
    lh, rh, w, r = ix["left_half"], ix["right_half"], ix["working"], ix["receiving"]
    return dict(
        initial_left=remote_copy(x_ref.at[ix["me"], lh], slots.at[w, lh],
                                 left_send, left_recv, ix["left"]),
        initial_right=remote_copy(x_ref.at[ix["me"], rh], slots.at[w, rh],
                                  right_send, right_recv, ix["right"]),
        left=remote_copy(slots.at[w, lh], slots.at[r, lh], left_send,
                         left_recv, ix["left"]),
        # The right copy goes to the next step's working slot.
        right=remote_copy(slots.at[r, rh], slots.at[w, rh], right_send,
                          right_recv, ix["right"]))

  def prologue_and_sends(self, ix, dma, left_capacity, right_capacity,
                         before_initial=lambda: None):
    @pl.when(ix["is_start"])
    def _():
      before_initial()
      dma["initial_left"].start()
      dma["initial_left"].wait()
      dma["initial_right"].start()
      # Our left neighbour may now send right, the right one left.
      self.signal(LEFT, right_capacity)
      self.signal(RIGHT, left_capacity)

    @pl.when(~ix["is_start"])
    def _():
      @pl.when(ix["phase"] == LEFT)
      def _():
        pl.semaphore_wait(right_capacity, 1)
        dma["right"].start()

      @pl.when(ix["phase"] == RIGHT)
      def _():
        pl.semaphore_wait(left_capacity, 1)
        dma["left"].start()

  def finish_sends(self, ix, dma, left_capacity, right_capacity):
    @pl.when(ix["is_start"])
    def _():
      dma["initial_right"].wait()

    @pl.when(~ix["is_start"])
    def _():
      @pl.when(ix["phase"] == LEFT)
      def _():
        dma["right"].wait()
        self.signal(LEFT, right_capacity)

      @pl.when(ix["phase"] == RIGHT)
      def _():
        dma["left"].wait()
        self.signal(RIGHT, left_capacity)


def _psum_scatter_reference(mesh, n, block, x):
  def reference(s):
    return lax.psum_scatter(s.reshape(n, *block), "x")
  return on_shards(reference, mesh, P(None, "x"), P("x", None))(x)


def case_reduce_scatter_sum_example(dma_execution_mode, detect_races):
  n = jax.device_count()
  mesh = ring_mesh()
  block = (16, 128)  # half a block is (8, 128), one vreg
  x = jax.device_put(
      jax.random.uniform(jax.random.key(0), (block[0] * n, block[1] * n),
                         dtype=jnp.float32),
      jax.sharding.NamedSharding(mesh, P(None, "x")))
  ring = _RingReduceScatter(n, block[0])

  def kernel(x_ref, o_ref, slots, local_sem, left_recv, left_send, right_recv,
             right_send, left_capacity, right_capacity, accum):
    ix = ring.indices()

    @pl.when(ix["is_start"])
    def _():
      barrier_with(ix["left"], ix["right"])

    dma = ring.copies(ix, x_ref, slots,
                      (left_recv, left_send, right_recv, right_send))

    def zero_outputs():
      o_ref[...] = jnp.zeros_like(o_ref[...])
      accum[...] = jnp.zeros_like(accum[...])

    ring.prologue_and_sends(ix, dma, left_capacity, right_capacity,
                            before_initial=zero_outputs)
    into_accum = pltpu.make_async_copy(slots.at[ix["working"], ix["phase_half"]],
                                       accum, local_sem)
    into_accum.start()
    into_accum.wait()

    @pl.when(~ix["is_last"])
    def _():
      @pl.when(ix["phase"] == LEFT)
      def _():
        accum[...] += x_ref[ix["left_source"], ix["left_half"]]

      @pl.when(ix["phase"] == RIGHT)
      def _():
        accum[...] += x_ref[ix["right_source"], ix["right_half"]]

    back = pltpu.make_async_copy(accum, slots.at[ix["working"], ix["phase_half"]],
                                 local_sem)
    back.start()
    back.wait()
    ring.finish_sends(ix, dma, left_capacity, right_capacity)

    @pl.when(ix["is_last"])
    def _():
      # Store the result; leave the capacity semaphores at 0.
      @pl.when(ix["phase"] == LEFT)
      def _():
        o_ref[ix["left_half"], ...] = accum[...]
        pl.semaphore_wait(right_capacity, 1)

      @pl.when(ix["phase"] == RIGHT)
      def _():
        o_ref[ix["right_half"], ...] = accum[...]
        pl.semaphore_wait(left_capacity, 1)

  def reduce_scatter(shard):
    return pl.pallas_call(
        kernel,
        out_shape=(jax.ShapeDtypeStruct(block, jnp.float32),
                   jax.ShapeDtypeStruct((2, *block), jnp.float32)),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=0, grid=(n, 2),
            in_specs=[pl.BlockSpec(memory_space=pltpu.VMEM)],
            out_specs=[pl.BlockSpec(memory_space=pltpu.VMEM),
                       pl.BlockSpec(memory_space=pl.ANY)],
            scratch_shapes=([pltpu.SemaphoreType.DMA] * 5
                            + [pltpu.SemaphoreType.REGULAR] * 2
                            + [pltpu.VMEM((block[0] // 2, block[1]),
                                          jnp.float32)])),
        # JAX's case detects races whatever detect_races says.
        interpret=pltpu.InterpretParams(dma_execution_mode=dma_execution_mode,
                                        detect_races=True),
        compiler_params=pltpu.CompilerParams(collective_id=7),
    )(shard.reshape(n, *block))[0]

  got = jax.block_until_ready(on_shards(
      reduce_scatter, mesh, P(None, "x"), P("x", None), check_vma=False)(x))
  np.testing.assert_allclose(_psum_scatter_reference(mesh, n, block, x), got,
                             atol=1e-5)
  if detect_races:
    assert not jax_interpreter.races.races_found


@_mode_and_races()
def test_reduce_scatter_sum_example(run_case, dma_execution_mode,
                                    detect_races):
  run_case(dma_execution_mode=dma_execution_mode, detect_races=detect_races)


def case_reduce_scatter_sum_with_emit_pipeline_example(dma_execution_mode,
                                                       detect_races):
  n = jax.device_count()
  mesh = ring_mesh()
  outer, inner = (512, 512), (128, 128)
  x = jax.device_put(
      jax.random.uniform(jax.random.key(0), (outer[0] * n, outer[1] * n),
                         dtype=jnp.float32),
      jax.sharding.NamedSharding(mesh, P(None, "x")))
  ring = _RingReduceScatter(n, outer[0])
  inner_grid = (outer[0] // inner[0] // 2, outer[1] // inner[1])
  inner_spec = pl.BlockSpec(inner, lambda i, j: (i, j),
                            memory_space=pltpu.VMEM)

  def double_barrier(left, right):
    # A second barrier, on a scoped REGULAR semaphore, so that a neighbour
    # re-entering the kernel cannot release this one early.
    barrier_with(left, right)

    @functools.partial(pl.run_scoped, second=pltpu.SemaphoreType.REGULAR)
    def _(second):
      signal_mesh(second, left)
      signal_mesh(second, right)
      pl.semaphore_wait(second, 2)

  def add_block(input_ref, accum_in, accum_out):
    accum_out[...] = accum_in[...] + input_ref[...]

  def kernel(x_hbm, o_hbm, slots, left_recv, left_send, copy_sem, right_recv,
             right_send, left_capacity, right_capacity):
    ix = ring.indices()
    dma = ring.copies(ix, x_hbm, slots,
                      (left_recv, left_send, right_recv, right_send))
    ring.prologue_and_sends(
        ix, dma, left_capacity, right_capacity,
        before_initial=lambda: double_barrier(ix["left"], ix["right"]))

    def accumulate(source, half):
      acc = slots.at[ix["working"], half]
      pltpu.emit_pipeline(add_block, in_specs=[inner_spec, inner_spec],
                          out_specs=inner_spec, grid=inner_grid)(
                              x_hbm.at[source, half], acc, acc)

    @pl.when(~ix["is_last"])
    def _():
      @pl.when(ix["phase"] == LEFT)
      def _():
        accumulate(ix["left_source"], ix["left_half"])

      @pl.when(ix["phase"] == RIGHT)
      def _():
        accumulate(ix["right_source"], ix["right_half"])

    ring.finish_sends(ix, dma, left_capacity, right_capacity)

    @pl.when(ix["is_last"])
    def _():
      out = pltpu.make_async_copy(slots.at[ix["working"], ix["phase_half"]],
                                  o_hbm.at[ix["phase_half"]], copy_sem)
      out.start()
      out.wait()

      @pl.when(ix["phase"] == LEFT)
      def _():
        pl.semaphore_wait(right_capacity, 1)

      @pl.when(ix["phase"] == RIGHT)
      def _():
        pl.semaphore_wait(left_capacity, 1)

  def reduce_scatter(shard):
    return pl.pallas_call(
        kernel,
        out_shape=(jax.ShapeDtypeStruct(outer, jnp.float32),
                   jax.ShapeDtypeStruct((2, *outer), jnp.float32)),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=0, grid=(n, 2),
            in_specs=[pl.BlockSpec(memory_space=pl.ANY)],
            out_specs=[pl.BlockSpec(memory_space=pl.ANY)] * 2,
            scratch_shapes=([pltpu.SemaphoreType.DMA] * 5
                            + [pltpu.SemaphoreType.REGULAR] * 2)),
        interpret=pltpu.InterpretParams(dma_execution_mode=dma_execution_mode,
                                        detect_races=detect_races,
                                        uninitialized_memory="zero"),
        compiler_params=pltpu.CompilerParams(collective_id=19),
    )(shard.reshape(n, *outer))[0]

  with jax.set_mesh(mesh):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh.update(
        abstract_device=jax.sharding.AbstractDevice(
            device_kind="TPU v6e", num_cores=1, platform="tpu"))):
      got = jax.jit(jax.shard_map(reduce_scatter, in_specs=P(None, "x"),
                                  out_specs=P("x", None), check_vma=False))(x)
    got = jax.block_until_ready(got)
    want = _psum_scatter_reference(mesh, n, outer, x)
  np.testing.assert_allclose(want, got, atol=1e-5)
  if detect_races:
    assert not jax_interpreter.races.races_found


@_mode_and_races()
def test_reduce_scatter_sum_with_emit_pipeline_example(
    run_case, dma_execution_mode, detect_races):
  run_case(dma_execution_mode=dma_execution_mode, detect_races=detect_races)


# --- Races and failures -------------------------------------------------------


def case_race_detection():
  n = 4
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:n]), ("x",))
  x = jax.device_put(jax.random.uniform(jax.random.key(0), (8 * n, 128)),
                     jax.sharding.NamedSharding(mesh, P("x", None)))

  def kernel(pairs_ref, x_hbm, o_hbm, send_sem, recv_sem):
    # pairs_ref: rows (source device, destination device), one DMA each.
    me = lax.axis_index("x")
    pairs = pairs_ref[:]
    incoming = 0
    for k in range(pairs.shape[0]):
      src, dst = pairs[k, 0], pairs[k, 1]

      @pl.when(src == me)
      def _():
        dma = remote_copy(x_hbm, o_hbm, send_sem, recv_sem, dst)
        dma.start()
        dma.wait_send()

      incoming += jnp.where(dst == me, 1, 0)

    @pl.when(incoming > 0)
    def _():
      # Waits for all `incoming` DMAs' bytes at once.
      remote_copy(x_hbm.at[pl.ds(0, 8 * incoming)],
                  o_hbm.at[pl.ds(0, 8 * incoming)], send_sem, recv_sem,
                  me).wait_recv()

  send = jax.jit(jax.shard_map(
      pl.pallas_call(
          kernel,
          out_shape=jax.ShapeDtypeStruct((8, 128), x.dtype),
          in_specs=[pl.BlockSpec(memory_space=pltpu.SMEM),
                    pl.BlockSpec(memory_space=pl.ANY)],
          out_specs=pl.BlockSpec(memory_space=pl.ANY),
          scratch_shapes=[pltpu.SemaphoreType.DMA] * 2,
          interpret=pltpu.InterpretParams(dma_execution_mode="eager",
                                          detect_races=True)),
      mesh=mesh, in_specs=(P(None), P("x", None)), out_specs=P("x", None),
      check_vma=False))

  def run(pairs):
    send(jnp.array(pairs, jnp.int32), x).block_until_ready()

  run([[0, 1], [1, 2], [2, 3]])
  assert not jax_interpreter.races.races_found
  # Devices 1 and 3 both write device 2's output.
  run([[0, 1], [1, 2], [3, 2], [3, 0]])
  assert jax_interpreter.races.races_found


def test_race_detection(run_case):
  run_case()


def case_that_barrier_does_not_hang_after_exception():
  n = jax.device_count()
  mesh, cols = ring_mesh(), P(None, "x")

  def kernel(x_ref, o_ref):
    me, left, right = neighbours(n)

    @pl.when(me == 0)
    def _():
      o_ref[0, 0] = x_ref[100, 0]  # out of bounds: device 0 fails

    # ... so the others must not wait for it forever.
    barrier = pltpu.get_barrier_semaphore()
    pl.semaphore_signal(barrier, device_id={"x": left})
    pl.semaphore_signal(barrier, device_id={"x": right})
    pl.semaphore_wait(barrier, 2)

  call = pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=0,
          in_specs=[pl.BlockSpec(memory_space=pltpu.VMEM)],
          out_specs=pl.BlockSpec(memory_space=pltpu.VMEM), scratch_shapes=[]),
      compiler_params=pltpu.CompilerParams(collective_id=42),
      interpret=pltpu.InterpretParams())
  x = jax.device_put(jnp.ones((8, 128 * n), jnp.float32),
                     jax.sharding.NamedSharding(mesh, cols))
  with pytest.raises(jax.errors.JaxRuntimeError):
    jax.shard_map(call, mesh=mesh, in_specs=cols, out_specs=cols,
                  check_vma=False)(x).block_until_ready()


def test_that_barrier_does_not_hang_after_exception(run_case):
  run_case()


def case_that_exception_does_not_cause_dma_to_wait_forever():
  n = jax.device_count()
  mesh, cols = ring_mesh(), P(None, "x")

  @pl.kernel(
      mesh=pltpu.create_tensorcore_mesh("core", num_cores=2),
      out_type=jax.ShapeDtypeStruct((16, 128), jnp.float32),
      scratch_types=[pltpu.VMEM((8, 128), jnp.float32),
                     pltpu.SemaphoreType.DMA(2)],
      interpret=pltpu.InterpretParams())
  def kernel(x_hbm, o_hbm, scratch, sems):
    me, left, _ = neighbours(n)
    core = lax.axis_index("core")

    @pl.when((me == 1) & (core == 0))
    def _():
      scratch[0, 0] = scratch[100, 0]  # out of bounds: device 1 core 0 fails

    pltpu.async_remote_copy(
        x_hbm.at[pl.ds(core, 8)], o_hbm.at[pl.ds(core, 8)], sems.at[0],
        sems.at[1], device_id=(left,),
        device_id_type=pl.DeviceIdType.MESH).wait()

  x = jax.device_put(jnp.ones((16, 128 * n), jnp.float32),
                     jax.sharding.NamedSharding(mesh, cols))
  with pytest.raises(jax.errors.JaxRuntimeError):
    jax.shard_map(kernel, mesh=mesh, in_specs=cols, out_specs=cols,
                  check_vma=False)(x).block_until_ready()


def test_that_exception_does_not_cause_dma_to_wait_forever(run_case):
  run_case()


def case_shard_map_of_core_map(num_cores):
  n = jax.device_count()
  mesh, rows = ring_mesh(), P("x", None)
  core_mesh = pltpu.create_tensorcore_mesh("core", num_cores=num_cores)

  @jax.jit
  def f(x):
    def body(refs):
      x_hbm, y_hbm = refs

      @pl.core_map(core_mesh, interpret=pltpu.InterpretParams(
          detect_races=True))
      def _():
        cores = lax.axis_size("core")
        share = 16 // cores

        def scoped(x_vmem, y_vmem, dma_sem, sem):
          # A barrier: deadlocks unless the cores really run in parallel.
          for c in range(cores):
            pl.semaphore_signal(sem, 1, core_index=c)
          pl.semaphore_wait(sem, cores)
          core = lax.axis_index("core")
          mine = pl.ds(core * share, share)
          pltpu.async_copy(x_hbm.at[mine], x_vmem, dma_sem).wait()
          y_vmem[...] = x_vmem[...] + cores * lax.axis_index("x") + core + 1
          pltpu.async_copy(y_vmem, y_hbm.at[mine], dma_sem).wait()

        pl.run_scoped(scoped,
                      pltpu.VMEM((share, 128), x_hbm.dtype),
                      pltpu.VMEM((share, 128), y_hbm.dtype),
                      pltpu.SemaphoreType.DMA, pltpu.SemaphoreType.REGULAR)

    return pl.run_state(body)((x, jnp.zeros_like(x)))[1]

  x = np.arange(n * 16 * 128, dtype=np.int32).reshape(-1, 128)
  y = on_shards(f, mesh, rows, rows, check_vma=False)(
      jnp.asarray(x)).block_until_ready()
  # Device d's core c adds d * num_cores + c + 1 to its rows.
  adds = np.arange(n * num_cores).reshape(n, num_cores) + 1
  expected = (x.reshape(n, num_cores, -1, 128)
              + adds[:, :, None, None]).reshape(x.shape)
  np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("num_cores", [
    pytest.param(c) for c in [1, 2, 4]])
def test_shard_map_of_core_map(run_case, num_cores):
  run_case(num_cores=num_cores)
