"""Kernels on several devices (jax.shard_map over 4 CPU devices, in a child
process: devices_child.py) beyond JAX's own distributed spec: the shipped
ops/tpu/all_gather, a two-axis mesh with MESH dicts and LOGICAL ids, and
deadlocks and failures across devices. Expected values come from XLA's
collectives or jnp in the same process; every kernel runs on pallasvm
(JAX's interpreter raises if entered), and those that could hang carry
pallasvm.InterpretParams(timeout_s=...), so a missed deadlock fails the
test instead of hanging it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas.ops.tpu import all_gather as all_gather_op

import devices_child
import pallasvm
from pallasvm import bridge

if bridge.library_path() is None or not bridge.library_path().exists():
  pytest.skip("the bridge library (libpallasvm_xla.so) is not built",
              allow_module_level=True)

NUM_DEVICES = 4
P = jax.sharding.PartitionSpec
GUARD = pallasvm.InterpretParams(timeout_s=60)

child, run_case = devices_child.child_fixtures(NUM_DEVICES)


def _mesh(shape=(NUM_DEVICES,), names=("x",)):
  return jax.make_mesh(shape, names,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(shape))


# --- ops/tpu/all_gather -------------------------------------------------------


def case_ops_all_gather(memory_space):
  mesh = _mesh()
  x = jax.random.normal(jax.random.key(0), (NUM_DEVICES * 8, 128),
                        jnp.float32)
  # The op's pallas_call has no interpret params: it runs with install's.
  got = all_gather_op.all_gather(x, mesh=mesh, axis_name="x",
                                 memory_space=memory_space)
  want = jax.jit(jax.shard_map(
      lambda s: lax.all_gather(s, "x", tiled=True), mesh=mesh,
      in_specs=P("x"), out_specs=P(None), check_vma=False))(x)
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("memory_space", ["VMEM", "ANY"])
def test_ops_all_gather(run_case, memory_space):
  run_case(memory_space={"VMEM": pltpu.VMEM, "ANY": pl.ANY}[memory_space])


# --- Two mesh axes: MESH dicts and tuples, LOGICAL ids -----------------------


def case_rotate_on_a_two_axis_mesh(id_kind):
  """On a 2x2 mesh ("a", "b"), each device sends its block to the device
  one step along "b" (same "a"): as a MESH dict naming only "b" (the
  device's own "a" filled in), a MESH tuple, or a LOGICAL id (a * 2 + b,
  row-major). The result is XLA's ppermute along "b"."""
  mesh = _mesh((2, 2), ("a", "b"))

  def kernel(x_hbm, o_hbm, send, recv):
    a, b = lax.axis_index("a"), lax.axis_index("b")
    nb = lax.rem(b + 1, 2)
    if id_kind == "dict":
      target, kind = {"b": nb}, pl.DeviceIdType.MESH
    elif id_kind == "tuple":
      target, kind = (a, nb), pl.DeviceIdType.MESH
    else:
      target, kind = a * 2 + nb, pl.DeviceIdType.LOGICAL
    barrier = pltpu.get_barrier_semaphore()
    pl.semaphore_signal(barrier, 1, device_id=target, device_id_type=kind)
    pl.semaphore_wait(barrier, 1)
    dma = pltpu.make_async_remote_copy(x_hbm, o_hbm, send, recv,
                                       device_id=target, device_id_type=kind)
    dma.start()
    dma.wait()

  call = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      in_specs=[pl.BlockSpec(memory_space=pl.ANY)],
      out_specs=pl.BlockSpec(memory_space=pl.ANY),
      scratch_shapes=[pltpu.SemaphoreType.DMA] * 2,
      compiler_params=pltpu.CompilerParams(collective_id=3), interpret=GUARD)
  spec = P(None, ("a", "b"))
  x = jax.random.normal(jax.random.key(1), (8, 128 * 4), jnp.float32)
  got = jax.jit(jax.shard_map(call, mesh=mesh, in_specs=spec, out_specs=spec,
                              check_vma=False))(x)
  want = jax.jit(jax.shard_map(
      lambda s: lax.ppermute(s, "b", [(0, 1), (1, 0)]), mesh=mesh,
      in_specs=spec, out_specs=spec))(x)
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("id_kind", ["dict", "tuple", "logical"])
def test_rotate_on_a_two_axis_mesh(run_case, id_kind):
  run_case(id_kind=id_kind)


def case_a_pallas_call_in_a_loop_meets_its_own_iteration():
  """Each of 5 iterations adds the left neighbour's value: the devices'
  i-th calls must meet each other, never another iteration's."""
  mesh = _mesh()

  def kernel(x_hbm, o_hbm, send, recv):
    me = lax.axis_index("x")
    right = lax.rem(me + 1, NUM_DEVICES)
    left = lax.rem(me + NUM_DEVICES - 1, NUM_DEVICES)
    barrier = pltpu.get_barrier_semaphore()
    for d in (left, right):
      pl.semaphore_signal(barrier, 1, device_id=(d,))
    pl.semaphore_wait(barrier, 2)
    dma = pltpu.make_async_remote_copy(x_hbm, o_hbm, send, recv,
                                       device_id=(right,))
    dma.start()
    dma.wait()

  shift = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      in_specs=[pl.BlockSpec(memory_space=pl.ANY)],
      out_specs=pl.BlockSpec(memory_space=pl.ANY),
      scratch_shapes=[pltpu.SemaphoreType.DMA] * 2,
      compiler_params=pltpu.CompilerParams(collective_id=5), interpret=GUARD)

  def step(_, acc):
    return acc + shift(acc)

  spec = P(None, "x")
  x = jnp.repeat(jnp.arange(NUM_DEVICES, dtype=jnp.float32), 128)[None, :]
  x = jnp.broadcast_to(x, (8, 128 * NUM_DEVICES))
  got = jax.jit(jax.shard_map(lambda s: lax.fori_loop(0, 5, step, s),
                              mesh=mesh, in_specs=spec, out_specs=spec,
                              check_vma=False))(x)
  ring = [(d, (d + 1) % NUM_DEVICES) for d in range(NUM_DEVICES)]
  want = jax.jit(jax.shard_map(
      lambda s: lax.fori_loop(0, 5, lambda _, a: a + lax.ppermute(a, "x", ring),
                              s),
      mesh=mesh, in_specs=spec, out_specs=spec))(x)
  np.testing.assert_array_equal(got, want)


def test_a_pallas_call_in_a_loop_meets_its_own_iteration(run_case):
  run_case()


# --- Deadlock and failure across devices -------------------------------------


def _ring_call(kernel):
  mesh = _mesh()
  call = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      in_specs=[pl.BlockSpec(memory_space=pltpu.VMEM)],
      out_specs=pl.BlockSpec(memory_space=pltpu.VMEM),
      compiler_params=pltpu.CompilerParams(collective_id=7), interpret=GUARD)
  spec = P(None, "x")
  x = jnp.ones((8, 128 * NUM_DEVICES), jnp.float32)
  return jax.jit(jax.shard_map(call, mesh=mesh, in_specs=spec, out_specs=spec,
                               check_vma=False)), x


def case_devices_waiting_for_each_other_are_a_deadlock():
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...]
    # Each device waits for a signal from its left neighbour, which only
    # signals after its own wait: nobody ever signals.
    me = lax.axis_index("x")
    barrier = pltpu.get_barrier_semaphore()
    pl.semaphore_wait(barrier, 1)
    pl.semaphore_signal(barrier, 1,
                        device_id=(lax.rem(me + 1, NUM_DEVICES),))

  f, x = _ring_call(kernel)
  with pytest.raises(jax.errors.JaxRuntimeError) as e:
    jax.block_until_ready(f(x))
  message = str(e.value)
  assert "deadlock: every core that has not finished waits" in message
  for d in range(NUM_DEVICES):
    assert (f"device {d}, core 0 waits at semaphore_wait (" in message), message
  assert ("for semaphore the barrier semaphore (pltpu.get_barrier_semaphore)"
          " to reach 1 (it holds 0)") in message


def test_devices_waiting_for_each_other_are_a_deadlock(run_case):
  run_case()


def case_a_failing_device_ends_every_device_with_its_error():
  def kernel(x_ref, o_ref):
    me = lax.axis_index("x")
    o_ref[...] = x_ref[...]

    @pl.when(me == 2)
    def _():
      o_ref[0, 0] = x_ref[100, 0]  # row 100 of 8: device 2 fails

    # The others wait for device 2's signal, which never comes.
    barrier = pltpu.get_barrier_semaphore()
    pl.semaphore_signal(barrier, 1, device_id=(lax.rem(me + 1, NUM_DEVICES),))
    pl.semaphore_wait(barrier, 1)

  f, x = _ring_call(kernel)
  with pytest.raises(jax.errors.JaxRuntimeError) as e:
    jax.block_until_ready(f(x))
  message = str(e.value)
  assert "device 2: kernel 'kernel'" in message, message
  assert "Out-of-bounds read" in message, message
  assert "deadlock" not in message and "stopped" not in message, message


def test_a_failing_device_ends_every_device_with_its_error(run_case):
  run_case()


def case_a_signal_to_a_device_that_does_not_exist_is_an_error():
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...]
    barrier = pltpu.get_barrier_semaphore()
    pl.semaphore_signal(barrier, 1, device_id=NUM_DEVICES + 3,
                        device_id_type=pl.DeviceIdType.LOGICAL)

  f, x = _ring_call(kernel)
  with pytest.raises(jax.errors.JaxRuntimeError,
                     match=r"signalled to device 7 \(device_id\), but the call"
                     r" runs on 4 devices"):
    jax.block_until_ready(f(x))


def test_a_signal_to_a_device_that_does_not_exist_is_an_error(run_case):
  run_case()



def case_a_semaphore_left_non_zero_names_its_device_and_core():
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...]
    me = lax.axis_index("x")
    barrier = pltpu.get_barrier_semaphore()
    # Two signals to the right neighbour, one wait: 1 is left on each.
    for _ in range(2):
      pl.semaphore_signal(barrier, 1, device_id=(lax.rem(me + 1, NUM_DEVICES),))
    pl.semaphore_wait(barrier, 1)

  mesh = _mesh()
  call = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      compiler_params=pltpu.CompilerParams(collective_id=9),
      interpret=pallasvm.InterpretParams(timeout_s=60,
                                         leftover_semaphores="error"))
  spec = P(None, "x")
  f = jax.jit(jax.shard_map(call, mesh=mesh, in_specs=spec, out_specs=spec,
                            check_vma=False))
  with pytest.raises(jax.errors.JaxRuntimeError,
                     match=r"kernel 'kernel' \(device \d, core 0\), at the end"
                     r" of the call: semaphore the barrier semaphore"
                     r" \(pltpu.get_barrier_semaphore\) holds 1"):
    jax.block_until_ready(f(jnp.ones((8, 128 * NUM_DEVICES), jnp.float32)))


def test_a_semaphore_left_non_zero_names_its_device_and_core(run_case):
  run_case()


def case_a_shard_map_over_some_axes_is_refused():
  """Over axis "b" of a 2x2 mesh only: two groups of 2 devices would run
  the call, which pallasvm cannot tell apart yet; refused, not paired up
  wrongly."""
  mesh = _mesh((2, 2), ("a", "b"))

  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...] + lax.axis_index("b").astype(jnp.float32)

  call = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      interpret=GUARD)
  spec = P(None, "b")
  f = jax.jit(jax.shard_map(call, mesh=mesh, in_specs=spec, out_specs=spec,
                            axis_names={"b"}, check_vma=False))
  with pytest.raises(pallasvm.UnsupportedError,
                     match=r"a shard_map over 2 of the 4 devices"):
    f(jnp.ones((8, 256), jnp.float32))


def test_a_shard_map_over_some_axes_is_refused(run_case):
  with pytest.raises(AssertionError, match="no pallas_call was lowered"):
    run_case()


def case_swap_cores_under_shard_map():
  """The core_map documentation's swap_cores as it runs there: under
  shard_map over the devices, 2 cores each, swapping halves between the
  cores of each device (device_id={"core": c}, the other axes held)."""
  from test_cores import swap_cores_kernel  # pylint: disable=g-import-not-at-top
  mesh = _mesh()
  tc_mesh = pltpu.create_tensorcore_mesh("core", num_cores=2)
  spec = P("x", None)
  rows = 8

  def swap_cores(x):
    scratch = ([pltpu.VMEM((rows, 128), x.dtype)] * 3
               + [pltpu.SemaphoreType.DMA] * 3)
    return pl.kernel(swap_cores_kernel, out_type=x, mesh=tc_mesh,
                     scratch_types=scratch, interpret=GUARD,
                     compiler_params=pltpu.CompilerParams(collective_id=0))(x)

  x = jax.random.normal(jax.random.key(2), (rows * NUM_DEVICES, 256),
                        jnp.float32)
  y = jax.jit(jax.shard_map(swap_cores, mesh=mesh, in_specs=spec,
                            out_specs=spec, check_vma=False))(x)
  np.testing.assert_array_equal(y[:, 128:], x[:, :128] * 2)
  np.testing.assert_array_equal(y[:, :128], x[:, 128:] * 2)


def test_swap_cores_under_shard_map(run_case):
  run_case()
