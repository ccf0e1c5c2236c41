"""Tests for tools/pallasvm/grid_order.py: the order interpret mode visits
grids in with a random_seed, computed in numpy. Expected values come from
JAX itself (jax.random.permutation and interpret mode's
_get_randomized_grid_coordinates), under both settings of
jax_threefry_partitionable."""

import contextlib
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import config as jax_config
from jax._src import dispatch
from jax._src import monitoring
from jax._src.pallas.mosaic.interpret import interpret_pallas_call as ipc
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

import pallasvm
from pallasvm import bridge
from pallasvm import grid_order

from pallasvm_only import on_pallasvm

PARTITIONABLE = pytest.mark.parametrize("partitionable", [True, False])

# Every size from 1 to 40 and a few more to a few hundred, under 301 seeds;
# both sides of where permutation's number of sorts goes from 1 to 2
# (1625 | 1626) under fewer; then large sizes (2642246: 3 sorts).
SMALL_SIZES = (*range(1, 41), 63, 64, 65, 100, 127, 128, 129, 200, 255, 256,
               257, 299, 300)
SEEDS = np.arange(301, dtype=np.int32)


@functools.partial(jax.jit, static_argnums=1)
def jax_permutations(seeds, sizes):
  """Per size, per seed: the permutation interpret mode makes for a lone
  parallel dimension of that size, jax.random.permutation under the
  second half of the seed's key split. One program for all sizes: a
  compile per size would take most of the test's time."""
  def one(seed):
    _, subkey = jax.random.split(jax.random.key(seed))
    return tuple(jax.random.permutation(subkey, jnp.arange(n, dtype=jnp.int32))
                 for n in sizes)
  return jax.vmap(one)(seeds)


def our_permutations(seeds, n, partitionable):
  out = []
  for seed in seeds:
    _, subkey = grid_order._split(  # pylint: disable=protected-access
        grid_order.seed_key(int(seed), x64=False), partitionable)
    out.append(grid_order.permutation(subkey, n, partitionable))
  return np.stack(out)


def assert_permutations_match_jax(sizes, seeds, partitionable):
  with jax.threefry_partitionable(partitionable):
    expected = jax_permutations(seeds, sizes)
  for n, e in zip(sizes, expected):
    np.testing.assert_array_equal(our_permutations(seeds, n, partitionable),
                                  np.asarray(e), err_msg=f"size {n}")


def mosaic_params(*semantics):
  return pltpu.CompilerParams(dimension_semantics=semantics or None)


@contextlib.contextmanager
def backend_compiles():
  """The names of the functions XLA compiles inside the block."""
  names = []

  def listener(event, duration, **kwargs):
    del duration
    if event == dispatch.BACKEND_COMPILE_EVENT:
      names.append(kwargs.get("fun_name"))
  monitoring.register_event_duration_secs_listener(listener)
  try:
    yield names
  finally:
    monitoring.unregister_event_duration_listener(listener)


# --- Permutations against jax.random.permutation ------------------------------


@PARTITIONABLE
def test_permutations_of_small_sizes_match_jax(partitionable):
  assert_permutations_match_jax(SMALL_SIZES, SEEDS, partitionable)


@PARTITIONABLE
def test_permutations_where_sorts_go_from_1_to_2_match_jax(partitionable):
  assert_permutations_match_jax((1625, 1626, 1627, 4096), SEEDS[:64],
                                partitionable)


@PARTITIONABLE
@pytest.mark.parametrize("n,num_seeds", [(100000, 8), (2642246, 1)])
def test_permutations_of_large_sizes_match_jax(n, num_seeds, partitionable):
  assert_permutations_match_jax((n,), SEEDS[:num_seeds], partitionable)


def test_shuffle_rounds_change_where_expected():
  # Guards the sizes above, where each number of sorts is tested against
  # JAX. (2642245, the last size of 2 sorts, is not: a second large size
  # would double the test's time.)
  assert [grid_order.shuffle_rounds(n) for n in
          (0, 1, 2, 1625, 1626, 2642245, 2642246)] == [0, 0, 1, 1, 2, 2, 3]


# --- Grid coordinates against interpret mode's own function -------------------


GRIDS = [
    ((7,), ("parallel",)),
    ((5, 3), ("parallel", "arbitrary")),
    ((4, 6, 2), ("parallel", "parallel", "arbitrary")),
    ((3, 2, 5, 4), ("parallel", "parallel", "parallel", "arbitrary")),
    ((2, 9, 3), ("parallel", "parallel", "parallel")),
    ((1, 300), ("parallel", "parallel")),
    ((6, 4), ("arbitrary", "arbitrary")),
    ((6, 4), ()),  # no dimension_semantics
    ((0, 5), ("parallel", "arbitrary")),
]
GRID_SEEDS = [None, 0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1, 2**32 + 5,
              2**40 + 7, 2**63 - 1, -1, -2, -12345, -2**31, -2**31 - 1,
              -2**40, -2**63, True]


def assert_same_coordinates(grid, params, seed):
  expected = ipc._get_randomized_grid_coordinates(grid, params, seed)  # pylint: disable=protected-access
  got = grid_order.randomized_grid_coordinates(grid, params, seed)
  assert len(got) == len(expected) == len(grid)
  for g, e in zip(got, expected):
    assert g.dtype == np.int32
    np.testing.assert_array_equal(g, np.asarray(e))


@PARTITIONABLE
@pytest.mark.parametrize("grid,semantics", GRIDS)
def test_grid_coordinates_match_interpret_mode(grid, semantics, partitionable):
  with jax.threefry_partitionable(partitionable):
    for seed in GRID_SEEDS:
      assert_same_coordinates(grid, mosaic_params(*semantics), seed)


@PARTITIONABLE
def test_grid_coordinates_match_interpret_mode_with_x64(partitionable):
  # With x64 the seed keeps its high 32 bits.
  with jax.threefry_partitionable(partitionable), jax.enable_x64(True):
    for seed in GRID_SEEDS:
      assert_same_coordinates((4, 6, 2), mosaic_params(
          "parallel", "parallel", "arbitrary"), seed)


def test_semantics_enum_values_count_as_in_interpret_mode():
  from jax._src.pallas.mosaic import core as mosaic_core  # pylint: disable=g-import-not-at-top
  params = mosaic_params(mosaic_core.PARALLEL, "core_parallel",
                         mosaic_core.ARBITRARY)
  for seed in (None, 3):
    assert_same_coordinates((5, 4, 3), params, seed)


def test_parallel_after_arbitrary_raises_as_interpret_mode_does():
  params = mosaic_params("arbitrary", "parallel")
  with pytest.raises(ValueError) as expected:
    ipc._get_randomized_grid_coordinates((4, 4), params, 3)  # pylint: disable=protected-access
  with pytest.raises(ValueError) as got:
    grid_order.randomized_grid_coordinates((4, 4), params, 3)
  assert str(got.value) == str(expected.value)


def test_bridge_attribute_is_the_coordinates_flattened():
  params = {"grid_mapping": types.SimpleNamespace(grid=(4, 6, 2)),
            "compiler_params": mosaic_params("parallel", "parallel",
                                             "arbitrary")}
  coords = [np.asarray(c) for c in ipc._get_randomized_grid_coordinates(  # pylint: disable=protected-access
      (4, 6, 2), params["compiler_params"], -9)]
  got = bridge._grid_coordinates(  # pylint: disable=protected-access
      params, pltpu.InterpretParams(random_seed=-9))
  assert got.dtype == np.int32
  np.testing.assert_array_equal(
      got, [4, *coords[0], 6, *coords[1], 0])


# --- What is not reproduced goes to JAX -----------------------------------------


@pytest.mark.parametrize("setting", [
    lambda: jax_config.default_prng_impl("unsafe_rbg"),
    lambda: jax_config.default_prng_impl("rbg"),
    lambda: jax_config.random_seed_offset(7),
])
def test_other_configurations_use_jax_s_function(setting, monkeypatch):
  calls = []
  jax_function = ipc._get_randomized_grid_coordinates  # pylint: disable=protected-access

  def counted(*args):
    calls.append(args)
    return jax_function(*args)
  params = mosaic_params("parallel", "arbitrary")
  with setting():
    expected = jax_function((6, 3), params, 11)
    monkeypatch.setattr(ipc, "_get_randomized_grid_coordinates", counted)
    got = grid_order.randomized_grid_coordinates((6, 3), params, 11)
  assert len(calls) == 1
  for g, e in zip(got, expected):
    np.testing.assert_array_equal(g, np.asarray(e))


def test_a_seed_beyond_int64_raises_as_interpret_mode_does():
  params = mosaic_params("parallel")
  for seed in (2**63, -2**63 - 1, 2**64):
    with pytest.raises(OverflowError) as expected:
      ipc._get_randomized_grid_coordinates((4,), params, seed)  # pylint: disable=protected-access
    with pytest.raises(OverflowError) as got:
      grid_order.randomized_grid_coordinates((4,), params, seed)
    assert str(got.value) == str(expected.value)


# --- Nothing compiled ----------------------------------------------------------------


def test_computing_the_order_compiles_nothing():
  # Sizes no other test uses, so that JAX would have to compile for them.
  grid, params = (1237, 611, 3), mosaic_params("parallel", "parallel",
                                               "arbitrary")
  for partitionable in (True, False):
    with jax.threefry_partitionable(partitionable):
      with backend_compiles() as ours:
        got = grid_order.randomized_grid_coordinates(grid, params, 29)
      with backend_compiles() as jax_s:
        expected = ipc._get_randomized_grid_coordinates(grid, params, 29)  # pylint: disable=protected-access
    assert ours == []
    assert jax_s, "the listener saw none of JAX's compiles: it checks nothing"
    for g, e in zip(got, expected):
      np.testing.assert_array_equal(g, np.asarray(e))


# --- A real kernel ------------------------------------------------------------------------


def visit_order(x, seed):
  """Output block (i, j, k) holds the step grid point (i, j, k) ran at."""
  def kernel(x_ref, o_ref, step_ref):  # step_ref starts at 0 (see below)
    o_ref[...] = x_ref[...] * 0 + step_ref[0].astype(jnp.float32)
    step_ref[0] += 1

  spec = pl.BlockSpec((None, 8, 128), lambda i, j, k: (i, j, k))
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=0, grid=(5, 3, 2), in_specs=[spec],
          out_specs=spec, scratch_shapes=[pltpu.SMEM((1,), jnp.int32)]),
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel", "arbitrary")),
      interpret=pltpu.InterpretParams(random_seed=seed,
                                      uninitialized_memory="zero"),
  )(x)


@pytest.mark.parametrize("seed", [None, 7, -3, 2**40 + 1])
def test_a_kernel_visits_the_grid_in_interpret_modes_order(seed):
  x = jnp.zeros((5, 24, 256), jnp.float32)
  fn = functools.partial(visit_order, seed=seed)
  assert not pallasvm.is_installed()
  expected = np.asarray(jax.jit(fn)(x))  # interpret mode: the pallas_call asks
  steps = expected[:, ::8, ::128]
  assert sorted(steps.ravel()) == list(range(30))
  # The parallel dimensions really were shuffled (else this shows nothing).
  assert not np.array_equal(steps.ravel(),
                            np.arange(30).reshape(5, 3, 2).ravel())
  bridge.xla_contracts_f16()  # the bridge's one-time probe, compiled now
  with backend_compiles() as compiled:
    got = np.asarray(on_pallasvm(fn, x))
  np.testing.assert_array_equal(got, expected)
  # XLA compiled the jitted function and nothing else: no permutation
  # programs for the grid order.
  assert compiled == ["jit(visit_order)"]
