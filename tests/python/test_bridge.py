"""Tests for the JAX bridge (tools/pallasvm/bridge.py + tools/jax_bridge/):
pallas_calls inside jax.jit run on pallasvm through an XLA FFI call, checked
against JAX's TPU interpret mode (the truth)."""

import concurrent.futures
import pathlib

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.pallas.mosaic.interpret.params import LoggingMode
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas.ops.tpu import matmul as tpu_matmul

import pallasvm
from pallasvm import bridge

if bridge.library_path() is None or not bridge.library_path().exists():
  pytest.skip(
      "the bridge library (libpallasvm_xla.so) is not built: build pallasvm"
      " into build/ with jax in .venv, or set PALLASVM_LIBRARY",
      allow_module_level=True)


def line_of(marker: str) -> int:
  """The line of this file holding `marker` (a comment on the line)."""
  lines = pathlib.Path(__file__).read_text().splitlines()
  return next(i + 1 for i, l in enumerate(lines)
              if marker in l and "line_of(" not in l)


def interpret_mode(fn, *args, params=None):
  """`fn(*args)` jitted with every pallas_call in TPU interpret mode."""
  assert not pallasvm.is_installed()
  with pltpu.force_tpu_interpret_mode(params or pltpu.InterpretParams()):
    return jax.jit(fn)(*args)


# --- Kernels --------------------------------------------------------------------


def add_kernel(x_ref, y_ref, o_ref):
  o_ref[...] = x_ref[...] + y_ref[...]


def add(x, y, **kwargs):
  return pl.pallas_call(
      add_kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
      **kwargs)(x, y)


def sin_plus_twice_sum(x, y):
  return jnp.sin(x) + add(x, y) * 2


def offset_by_program_id_kernel(x_ref, o_ref):
  o_ref[...] = x_ref[...] + pl.program_id(0).astype(jnp.float32) * 100


def offset_by_program_id(x):
  """Grid of 2 blocks of 8 rows; block i adds 100 * i."""
  spec = pl.BlockSpec((8, 128), lambda i: (i, 0))
  return pl.pallas_call(
      offset_by_program_id_kernel, grid=(2,), in_specs=[spec], out_specs=spec,
      out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype))(x)


def scratch_first_rows_kernel(x_ref, o_ref, scratch_ref):
  scratch_ref[:4, :] = x_ref[:4, :]
  o_ref[...] = scratch_ref[...]


def scratch_first_rows(x, **kwargs):
  """Copies a scratch buffer of which only rows 0-3 were written: the rest
  holds the uninitialized fill value."""
  return pl.pallas_call(
      scratch_first_rows_kernel,
      out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
      scratch_shapes=[pltpu.VMEM(x.shape, x.dtype)], **kwargs)(x)


def first_rows_only_kernel(x_ref, o_ref):
  o_ref[:4, :] = x_ref[:4, :]


def first_rows_only(x):
  """Writes rows 0-3 of an output block: the rest holds the fill value."""
  return pl.pallas_call(
      first_rows_only_kernel,
      out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype))(x)


def data(shape, seed=0, dtype=jnp.float32):
  return jax.random.normal(jax.random.key(seed), shape, dtype)


# --- Results match interpret mode ----------------------------------------------------


def test_kernel_between_xla_ops_inside_jit_matches_interpret_mode():
  x, y = data((16, 128), 0), data((16, 128), 1)
  expected = interpret_mode(sin_plus_twice_sum, x, y)
  with pallasvm.enabled():
    got = jax.jit(sin_plus_twice_sum)(x, y)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_tpu_matmul_matches_interpret_mode():
  x, y = data((512, 256), 2), data((256, 384), 3)

  def fn(x, y):
    return tpu_matmul.matmul(x, y, block_shape=(128, 128), block_k=128)

  expected = interpret_mode(fn, x, y)
  with pallasvm.enabled():
    got = jax.jit(fn)(x, y)
  # Reduction over K in blocks of 128, like interpret mode: f32 sums whose
  # order can differ inside a block (tolerance grows with K = 256).
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected),
                             rtol=1e-5, atol=1e-4)


def test_vmap_of_a_caller_adds_a_grid_dimension():
  # pallas_call's batching rule adds a grid dimension that the kernel body
  # does not see: program_id(0) must still be the block index.
  x = data((3, 16, 128), 4)
  expected = interpret_mode(jax.vmap(offset_by_program_id), x)
  with pallasvm.enabled():
    got = jax.jit(jax.vmap(offset_by_program_id))(x)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_nested_vmap():
  x, y = data((2, 3, 8, 128), 5), data((2, 3, 8, 128), 6)
  fn = jax.vmap(jax.vmap(add))
  expected = interpret_mode(fn, x, y)
  with pallasvm.enabled():
    got = jax.jit(fn)(x, y)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


@pytest.mark.parametrize("fill", ["nan", "zero"])
def test_uninitialized_memory_option(fill):
  x = data((8, 128), 7)
  expected = interpret_mode(
      scratch_first_rows, x,
      params=pltpu.InterpretParams(uninitialized_memory=fill))
  with pallasvm.enabled(pallasvm.InterpretParams(uninitialized_memory=fill)):
    got = np.asarray(jax.jit(scratch_first_rows)(x))
  np.testing.assert_array_equal(got, np.asarray(expected))
  assert (np.isnan(got[4:]).all() if fill == "nan" else (got[4:] == 0).all())


def test_unwritten_part_of_output_block_holds_the_fill_value():
  x = data((8, 128), 7)
  expected = interpret_mode(first_rows_only, x)
  with pallasvm.enabled():
    got = np.asarray(jax.jit(first_rows_only)(x))
  np.testing.assert_array_equal(got, np.asarray(expected))


def test_call_asking_for_interpret_mode_runs_on_pallasvm_with_its_params():
  x = data((8, 128), 8)

  def fn(x):
    return scratch_first_rows(
        x, interpret=pltpu.InterpretParams(uninitialized_memory="zero"))

  expected = np.asarray(jax.jit(fn)(x))  # JAX's interpret mode
  with pallasvm.enabled():  # default params say NaN; the call's say zero
    before = pallasvm.stats()["lowerings"]
    got = np.asarray(jax.jit(fn)(x))
    assert pallasvm.stats()["lowerings"] == before + 1
  np.testing.assert_array_equal(got, expected)
  assert (got[4:] == 0).all()


def test_int_and_bool_operands_and_two_outputs():
  def kernel(x_ref, m_ref, sum_ref, sel_ref):
    sum_ref[...] = x_ref[...] * 3 + 1
    sel_ref[...] = jnp.where(m_ref[...], x_ref[...], -x_ref[...])

  def fn(x, m):
    return pl.pallas_call(
        kernel, out_shape=(jax.ShapeDtypeStruct(x.shape, x.dtype),
                           jax.ShapeDtypeStruct(x.shape, x.dtype)))(x, m)

  x = jnp.arange(8 * 128, dtype=jnp.int32).reshape(8, 128) - 500
  m = (x % 3) == 0
  expected = interpret_mode(fn, x, m)
  with pallasvm.enabled():
    got = jax.jit(fn)(x, m)
  for g, e in zip(got, expected, strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(e))


def test_input_output_aliases():
  def kernel(x_ref, acc_ref, o_ref):
    o_ref[...] = acc_ref[...] + x_ref[...] * 2

  def fn(x, acc):
    return pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct(acc.shape, acc.dtype),
        input_output_aliases={1: 0})(x, acc)

  x, acc = data((8, 128), 15), data((8, 128), 16)
  expected = interpret_mode(fn, x, acc)
  with pallasvm.enabled():
    got = jax.jit(fn)(x, acc)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


# --- Errors --------------------------------------------------------------------------


def test_unsupported_primitive_fails_at_lowering_naming_it_and_its_line():
  def kernel(x_ref, o_ref):
    o_ref[...] = jax.lax.lgamma(x_ref[...])  # lgamma line

  def fn(x):
    return pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype))(x)

  x = data((8, 128))
  with pallasvm.enabled():
    with pytest.raises(pallasvm.CompileError,
                       match=rf"lgamma.*test_bridge.py:{line_of('# lgamma line')}"):
      jax.jit(fn).lower(x)


def test_kernel_the_exporter_refuses_fails_at_lowering():
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...].astype(jnp.complex64).real  # complex line

  def fn(x):
    return pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype))(x)

  with pallasvm.enabled():
    with pytest.raises(pallasvm.ExportError, match="complex64"):
      jax.jit(fn).lower(data((8, 128)))


@pytest.mark.parametrize("option", [
    {"out_of_bounds_reads": "wrap"},
    {"uninitialized_memory": "ones"},
    {"dma_execution_mode": "never"},
    {"num_cores_or_threads": 300},
    {"grid_point_recorder": "not callable"},
    {"buffer_bounds": "tiled"},
])
def test_bad_interpret_params_value_raises_naming_it(option):
  [name] = option
  with pytest.raises(ValueError, match=name):
    pallasvm.install(pallasvm.InterpretParams(**option))
  assert not pallasvm.is_installed()
  # Also when a pallas_call brings it (found when it is lowered).
  x = data((8, 128))
  with pallasvm.enabled():
    with pytest.raises(ValueError, match=name):
      jax.jit(lambda x: add(x, x, interpret=pltpu.InterpretParams(**option))
              ).lower(x)


@pytest.mark.parametrize("option", [
    {"logging_mode": LoggingMode.SHARED_MEMORY},
    {"vector_clock_size": 8},
])
def test_unimplemented_interpret_params_option_raises(option):
  [name] = option
  with pytest.raises(NotImplementedError, match=name):
    pallasvm.install(pallasvm.InterpretParams(**option))
  assert not pallasvm.is_installed()
  x = data((8, 128))
  with pallasvm.enabled():
    with pytest.raises(NotImplementedError, match=name):
      jax.jit(lambda x: add(x, x, interpret=pltpu.InterpretParams(**option))
              ).lower(x)


def test_run_time_error_is_an_xla_error_with_pallasvm_message():
  def kernel(idx_ref, x_ref, o_ref):
    o_ref[...] = x_ref[pl.ds(idx_ref[0], 8), :]

  def fn(idx, x):
    return pl.pallas_call(
        kernel,
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1, grid=(1,),
            in_specs=[pl.BlockSpec((16, 128), lambda i, idx: (0, 0))],
            out_specs=pl.BlockSpec((8, 128), lambda i, idx: (0, 0))),
        out_shape=jax.ShapeDtypeStruct((8, 128), x.dtype))(idx, x)

  x = data((16, 128))
  with pallasvm.enabled():
    f = jax.jit(fn)
    np.testing.assert_array_equal(np.asarray(f(jnp.array([8], jnp.int32), x)),
                                  np.asarray(x[8:]))
    with pytest.raises(Exception, match="out of bounds|[Oo]ut-of-bounds"):
      np.asarray(f(jnp.array([12], jnp.int32), x))


# --- Installation and caching ---------------------------------------------------------


def test_no_python_per_call_after_compilation():
  x, y = data((16, 128), 0), data((16, 128), 1)
  with pallasvm.enabled():
    f = jax.jit(sin_plus_twice_sum)
    first = np.asarray(f(x, y))
    after_first = pallasvm.stats()
    for _ in range(100):
      out = f(x, y)
    out.block_until_ready()
    assert pallasvm.stats() == after_first
  np.testing.assert_array_equal(np.asarray(out), first)


def test_each_kernel_is_compiled_once():
  x, y = data((8, 128), 9), data((8, 128), 10)
  with pallasvm.enabled():
    jax.jit(lambda x, y: add(x, y) + add(y, x))(x, y)
    before = pallasvm.stats()
    # A different function around the same kernel: lowered, not compiled.
    jax.jit(lambda x, y: add(x, y) * 3)(x, y)
    after = pallasvm.stats()
  assert after["lowerings"] > before["lowerings"]
  assert after["compilations"] == before["compilations"]


def test_uninstall_restores_jax_and_a_jitted_function_follows():
  x, y = data((8, 128), 11), data((8, 128), 12)
  f = jax.jit(add)
  with pytest.raises(Exception, match="interpret mode"):
    f(x, y)  # JAX's CPU rule: interpret mode only
  with pallasvm.enabled():
    np.testing.assert_array_equal(np.asarray(f(x, y)), np.asarray(x + y))
  assert not pallasvm.is_installed()
  with pytest.raises(Exception, match="interpret mode"):
    f(x, y)


def test_concurrent_calls_from_threads():
  x, y = data((16, 128), 13), data((16, 128), 14)
  with pallasvm.enabled():
    f = jax.jit(sin_plus_twice_sum)
    expected = np.asarray(f(x, y))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      results = list(pool.map(lambda _: np.asarray(f(x, y)), range(64)))
  for r in results:
    np.testing.assert_array_equal(r, expected)


def visit_order(x):
  """Output block i records when grid point i ran: order-dependent on
  purpose, so it shows the order the grid was visited in."""
  def kernel(x_ref, o_ref, step_ref):
    @pl.when(jnp.logical_and(pl.program_id(0) == 0, pl.program_id(1) == 0))
    def _():
      step_ref[0] = 0
    o_ref[...] = x_ref[...] * 0 + step_ref[0].astype(jnp.float32)
    step_ref[0] += 1

  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=0, grid=(8, 2),
          in_specs=[pl.BlockSpec((8, 128), lambda i, j: (i, j))],
          out_specs=pl.BlockSpec((8, 128), lambda i, j: (i, j)),
          scratch_shapes=[pltpu.SMEM((1,), jnp.int32)]),
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "arbitrary")),
  )(x)


@pytest.mark.parametrize("seed", [None, 3])
def test_parallel_dimensions_are_visited_in_interpret_modes_order(seed):
  x = data((64, 256), 11)
  params = pltpu.InterpretParams(random_seed=seed)
  expected = np.asarray(interpret_mode(visit_order, x, params=params))
  # Interpret mode really shuffled the parallel dimension (else this test
  # would show nothing): in grid order, block (i, 0) would run at step 2 i.
  assert not np.array_equal(expected[::8, 0], np.arange(0, 16, 2))
  with pallasvm.enabled(pallasvm.InterpretParams(random_seed=seed)):
    got = np.asarray(jax.jit(visit_order)(x))
  np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("cores", [2, 3])
def test_cores_split_the_parallel_dimension_as_interpret_mode_does(cores):
  # visit_order's SMEM counter is per core, so each core numbers its own
  # steps: the result shows which core ran which grid points, and when.
  x = data((64, 256), 12)
  params = pltpu.InterpretParams(num_cores_or_threads=cores, random_seed=5)
  expected = np.asarray(interpret_mode(visit_order, x, params=params))
  with pallasvm.enabled(pallasvm.InterpretParams(num_cores_or_threads=cores,
                                                 random_seed=5)):
    got = np.asarray(jax.jit(visit_order)(x))
  np.testing.assert_array_equal(got, expected)


class Recorder:
  """A grid_point_recorder: keeps (grid point, core) per call, in order."""

  def __init__(self):
    self.points = []

  def __call__(self, token, grid_point, core_id):
    self.points.append((tuple(int(c) for c in grid_point), int(core_id)))
    return token

  def per_core(self):
    """Each core's points in the order it visited them (interpret mode runs
    cores as threads, so only the order within a core is defined)."""
    cores = {}
    for point, core in self.points:
      cores.setdefault(core, []).append(point)
    return cores


@pytest.mark.parametrize("cores,seed", [(1, None), (1, 3), (2, 5), (3, 7)])
def test_grid_point_recorder_sees_interpret_modes_points(cores, seed):
  x = data((64, 256), 13)
  expected, got = Recorder(), Recorder()
  jax.block_until_ready(interpret_mode(visit_order, x, params=pltpu.InterpretParams(
      num_cores_or_threads=cores, random_seed=seed,
      grid_point_recorder=expected)))
  with pallasvm.enabled(pallasvm.InterpretParams(
      num_cores_or_threads=cores, random_seed=seed, grid_point_recorder=got)):
    jax.block_until_ready(jax.jit(visit_order)(x))
  assert len(expected.points) == 16
  assert got.per_core() == expected.per_core()
  # pallasvm hands each core's points over together, core 0's first.
  assert [core for _, core in got.points] == sorted(
      core for _, core in got.points)


def test_grid_point_recorder_with_a_dynamic_grid_is_not_implemented():
  def fn(n, x):
    spec = pl.BlockSpec((8, 128), lambda i: (i, 0))
    return pl.pallas_call(
        lambda x_ref, o_ref: o_ref.__setitem__(..., x_ref[...]),
        out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype), grid=(n,),
        in_specs=[spec], out_specs=spec)(x)

  with pallasvm.enabled(pallasvm.InterpretParams(
      grid_point_recorder=Recorder())):
    with pytest.raises(NotImplementedError,
                       match="grid_point_recorder for a dynamic grid"):
      jax.jit(fn).lower(jnp.int32(2), data((32, 128)))


def oob_reads(x):
  """Three reads outside their buffers: an input block past the array
  (index map one block ahead), a VMEM slice hanging over its block's end,
  and an SMEM scalar index past its array (as in JAX's interpret mode
  tests, summing over a while loop)."""
  def kernel(s_ref, x_ref, y_ref, o_ref, p_ref, q_ref):
    i = pl.program_id(0)
    o_ref[...] = x_ref[...] * 2.0
    p_ref[...] = y_ref[pl.ds(i * 4, 8), :]

    def body(carry):
      j, acc = carry
      return j + 1, acc + s_ref[j]
    q_ref[0, 0] = jax.lax.while_loop(lambda c: c[0] < 7, body,
                                     (jnp.int32(0), jnp.int32(0)))[1]

  spec = pl.BlockSpec((8, 128), lambda i, s: (i, 0))
  return pl.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct(x.shape, x.dtype),
                 jax.ShapeDtypeStruct(x.shape, x.dtype),
                 jax.ShapeDtypeStruct((1, 1), jnp.int32)),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=1, grid=(4,),
          in_specs=[pl.BlockSpec((8, 128), lambda i, s: (i + 1, 0)), spec],
          out_specs=(spec, spec,
                     pl.BlockSpec(memory_space=pltpu.SMEM))),
  )(jnp.arange(5, dtype=jnp.int32), x, x)


@pytest.mark.parametrize("fill", ["nan", "zero"])
def test_out_of_bounds_reads_uninitialized_matches_interpret_mode(fill):
  x = data((32, 128), 14)
  params = dict(out_of_bounds_reads="uninitialized", uninitialized_memory=fill)
  expected = interpret_mode(oob_reads, x,
                            params=pltpu.InterpretParams(**params))
  with pallasvm.enabled(pallasvm.InterpretParams(**params)):
    got = jax.jit(oob_reads)(x)
  for g, e in zip(got, expected, strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(e))
  # Filled where outside: the last output block, and the second half of
  # every other VMEM slice.
  fill_value = np.nan if fill == "nan" else 0.0
  np.testing.assert_array_equal(np.asarray(got[0])[24:], fill_value)
  np.testing.assert_array_equal(np.asarray(got[1])[12:16], fill_value)


def test_out_of_bounds_reads_raise_by_default():
  x = data((32, 128), 14)
  with pallasvm.enabled():
    with pytest.raises(Exception, match="Out-of-bounds read of ref 0"):
      jax.block_until_ready(jax.jit(oob_reads)(x))


def test_dma_execution_mode_is_accepted_and_checked():
  x = data((8, 128))
  for mode in ("eager", "on_wait"):
    with pallasvm.enabled(pallasvm.InterpretParams(dma_execution_mode=mode)):
      np.testing.assert_array_equal(jax.jit(lambda x: add(x, x))(x), x + x)
  with pytest.raises(ValueError, match="dma_execution_mode"):
    pallasvm.install(pallasvm.InterpretParams(dma_execution_mode="never"))
  assert not pallasvm.is_installed()


def maybe_racy(x, out_map, alias):
  """Blocks of x + 1 over a parallel grid of 4, written where `out_map`
  says; with `alias`, the output aliases x."""
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...] + 1.0

  return pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype), grid=(4,),
      in_specs=[pl.BlockSpec((8, 128), lambda i: (i, 0))],
      out_specs=pl.BlockSpec((8, 128), out_map),
      input_output_aliases={0: 0} if alias else {},
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",)),
  )(x)


@pytest.mark.parametrize("case,cores", [
    ("disjoint", 2),          # each core writes its own blocks: no race
    ("same_block", 2),        # both cores write block 0: a race
    ("same_block", 1),        # one core: consecutive visits, no race
    # The parallel dimension is visited as 0, 3, 1, 2 (seed None): core 0
    # runs points 0 and 3, core 1 points 1 and 2.
    ("aliased_shifted", 2),   # core 0 writes block 1, which core 1 reads

    ("aliased_in_place", 2),  # each core reads and writes its own: no race
])
def test_detect_races_agrees_with_interpret_mode(case, cores):
  from jax._src.pallas.mosaic.interpret import interpret_pallas_call as ipc  # pylint: disable=g-import-not-at-top
  out_map, alias = {
      "disjoint": (lambda i: (i, 0), False),
      "same_block": (lambda i: (0, 0), False),
      "aliased_shifted": (lambda i: ((i + 1) % 4, 0), True),
      "aliased_in_place": (lambda i: (i, 0), True),
  }[case]
  fn = functools.partial(maybe_racy, out_map=out_map, alias=alias)
  x = data((32, 128), 15)
  params = dict(detect_races=True, num_cores_or_threads=cores)
  expected = np.asarray(interpret_mode(fn, x,
                                       params=pltpu.InterpretParams(**params)))
  jax_found = ipc.races.races_found
  pltpu.reset_tpu_interpret_mode_state()
  racy = case in ("same_block", "aliased_shifted") and cores > 1
  assert jax_found == racy
  with pallasvm.enabled(pallasvm.InterpretParams(**params)):
    got = np.asarray(jax.block_until_ready(jax.jit(fn)(x)))
  assert pallasvm.races_found() == racy
  assert ipc.races.races_found == racy
  if not racy:  # a racy result depends on which core wrote last
    np.testing.assert_array_equal(got, expected)
  pltpu.reset_tpu_interpret_mode_state()


def test_detect_races_prints_the_race(capfd):
  fn = functools.partial(maybe_racy, out_map=lambda i: (0, 0), alias=False)
  with pallasvm.enabled(pallasvm.InterpretParams(detect_races=True,
                                                 num_cores_or_threads=2)):
    jax.block_until_ready(jax.jit(fn)(data((32, 128), 16)))
  err = capfd.readouterr().err
  assert "RACE DETECTED (pallasvm)" in err
  # Block 0 (8 rows of 128) written back by both cores: one race, one line.
  assert ("race on outputs (output 0, float32[32,128]) element (0, 0) and"
          " 1023 more: written back by core 0 and by core 1\n") in err


def float_and_int_work(x, n):
  """Float math, integer math driven by the floats, a float loop carry and
  a store of a float literal: under skip_floating_point_ops every float
  value read is inf, integer work still runs."""
  def kernel(n_ref, x_ref, f_ref, i_ref, b_ref, c_ref, l_ref):
    x = x_ref[...]
    f_ref[...] = jnp.exp(x) * 2.0 + 1.0
    i_ref[...] = (jax.lax.broadcasted_iota(jnp.int32, x.shape, 1)
                  + pl.program_id(0) * 1000 + n_ref[0])
    b_ref[...] = (x > 0).astype(jnp.int32) + (x == x).astype(jnp.int32)
    c_ref[...] = jnp.where(x < 100.0, 7, 9).astype(jnp.int32)
    # A loop whose trip count does not depend on floats, carrying a float.
    l_ref[...] = jax.lax.fori_loop(0, 3, lambda i, v: v * 0.5 + 1.0, x)

  spec = pl.BlockSpec((8, 128), lambda i, n: (i, 0))
  shape_f = jax.ShapeDtypeStruct(x.shape, jnp.float32)
  shape_i = jax.ShapeDtypeStruct(x.shape, jnp.int32)
  return pl.pallas_call(
      kernel, out_shape=(shape_f, shape_i, shape_i, shape_i, shape_f),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=1, grid=(2,), in_specs=[spec],
          out_specs=(spec,) * 5),
  )(n, x)


def test_skip_floating_point_ops_matches_interpret_mode():
  x = data((16, 128), 17)
  n = jnp.asarray([5], jnp.int32)
  params = dict(skip_floating_point_ops=True)
  expected = interpret_mode(float_and_int_work, x, n,
                            params=pltpu.InterpretParams(**params))
  with pallasvm.enabled(pallasvm.InterpretParams(**params)):
    got = jax.jit(float_and_int_work)(x, n)
  for g, e in zip(got, expected, strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(e))
  # What it means: floats are inf, integer work ran.
  assert np.all(np.asarray(got[0]) == np.inf)
  np.testing.assert_array_equal(np.asarray(got[1])[8, :3], [1005, 1006, 1007])
  np.testing.assert_array_equal(np.asarray(got[2]), 2)  # inf > 0, inf == inf
  np.testing.assert_array_equal(np.asarray(got[3]), 9)  # inf < 100 is false


def test_skip_floating_point_ops_matmul_is_all_inf():
  """JAX's own test of the option: a matmul kernel gives all inf."""
  def kernel(x_ref, y_ref, z_ref):
    z_ref[...] = x_ref[...] @ y_ref[...]

  x, y = data((256, 256), 18), data((256, 256), 19)
  with pallasvm.enabled(pallasvm.InterpretParams(skip_floating_point_ops=True)):
    z = jax.jit(lambda x, y: pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct((256, 256), jnp.float32))(x, y)
                )(x, y)
  np.testing.assert_array_equal(np.asarray(z), np.inf)
