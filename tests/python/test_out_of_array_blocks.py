"""Input blocks whose index map points outside the array (issue 12): a kernel
that only computes such an index (a "no block needed" marker) runs and
matches interpret mode; a kernel that reads such a block is reported with
the input, the block index, the grid point and the source line of the read;
output blocks outside their array stay errors."""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

import pallasvm
from pallasvm import bridge

if bridge.library_path() is None or not bridge.library_path().exists():
  pytest.skip("the bridge library (libpallasvm_xla.so) is not built",
              allow_module_level=True)

MODES = ["raise", "uninitialized"]
ROWS = 16
X = (jnp.arange(ROWS * 128, dtype=jnp.float32).reshape(ROWS, 128) % 97) - 40


def line_of(marker: str) -> int:
  lines = pathlib.Path(__file__).read_text().splitlines()
  return next(i + 1 for i, l in enumerate(lines)
              if marker in l and "line_of(" not in l)


def interpret_mode(fn, *args):
  assert not pallasvm.is_installed()
  return np.asarray(jax.jit(fn)(*args))


def on_pallasvm(fn, *args):
  with pallasvm.enabled():
    before = pallasvm.stats()["lowerings"]
    out = np.asarray(jax.jit(fn)(*args))
    assert pallasvm.stats()["lowerings"] == before + 1
  return out


def same_bits(a, b):
  np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


# --- A squeezed row index of -1 on odd steps, read only on even ones ---------
# Interpret mode indexes with numpy, so x[-1] is the last row: no error, in
# either mode. The kernel never reads it.

def squeezed_marker(mode, read_marked):
  def kernel(x_ref, o_ref):
    i = pl.program_id(0)

    @pl.when((i % 2 == 0) | read_marked)
    def _():
      o_ref[...] = x_ref[...] * 2  # read of the row

    @pl.when((i % 2 == 1) & jnp.logical_not(read_marked))
    def _():
      o_ref[...] = jnp.zeros_like(o_ref)

  def index_map(i):
    return (jnp.where(i % 2 == 0, i, -1), 0)

  def f(x):
    return pl.pallas_call(
        kernel, grid=(ROWS,),
        in_specs=[pl.BlockSpec((None, 128), index_map)],
        out_specs=pl.BlockSpec((None, 128), lambda i: (i, 0)),
        out_shape=jax.ShapeDtypeStruct((ROWS, 128), jnp.float32),
        interpret=pltpu.InterpretParams(out_of_bounds_reads=mode))(x)
  return f


@pytest.mark.parametrize("mode", MODES)
def test_unread_squeezed_block_at_minus_one_matches_interpret_mode(mode):
  f = squeezed_marker(mode, read_marked=False)
  expected = interpret_mode(f, X)
  same_bits(on_pallasvm(f, X), expected)
  # And the hand-derived answer: even rows doubled, odd rows zero.
  x = np.asarray(X)
  want = np.where((np.arange(ROWS) % 2 == 0)[:, None], x * 2, 0)
  np.testing.assert_array_equal(expected, want)


def test_read_squeezed_block_at_minus_one_with_uninitialized_reads():
  # Interpret mode reads numpy's x[-1], the last row; so does pallasvm.
  f = squeezed_marker("uninitialized", read_marked=True)
  expected = interpret_mode(f, X)
  same_bits(on_pallasvm(f, X), expected)
  np.testing.assert_array_equal(expected[1], np.asarray(X)[-1] * 2)


def test_read_squeezed_block_at_minus_one_is_reported():
  f = squeezed_marker("raise", read_marked=True)
  with pytest.raises(Exception) as info:
    on_pallasvm(f, X)
  message = str(info.value)
  assert "Out-of-bounds block index (-1, 0) for input 0" in message
  assert "grid point (1)" in message
  assert f"test_out_of_array_blocks.py:{line_of('# read of the row')}" in message


# --- Blocked dims: a negative index and one past the end ---------------------

def blocked_marker(mode, bad_index, read_marked):
  def kernel(x_ref, o_ref):
    i = pl.program_id(0)

    @pl.when((i < 2) | read_marked)
    def _():
      o_ref[...] = x_ref[...] + 1  # read of the block

    @pl.when((i >= 2) & jnp.logical_not(read_marked))
    def _():
      o_ref[...] = jnp.full_like(o_ref, 7.0)

  def f(x):
    return pl.pallas_call(
        kernel, grid=(4,),
        in_specs=[pl.BlockSpec(
            (4, 128), lambda i: (jnp.where(i < 2, i, bad_index), 0))],
        out_specs=pl.BlockSpec((4, 128), lambda i: (i, 0)),
        out_shape=jax.ShapeDtypeStruct((ROWS, 128), jnp.float32),
        interpret=pltpu.InterpretParams(out_of_bounds_reads=mode))(x)
  return f


@pytest.mark.parametrize("bad_index", [-1, 4, 9], ids=["minus1", "end", "past"])
def test_unread_blocked_block_outside_array_uninitialized(bad_index):
  f = blocked_marker("uninitialized", bad_index, read_marked=False)
  same_bits(on_pallasvm(f, X), interpret_mode(f, X))


@pytest.mark.parametrize("bad_index", [-1, 4, 9], ids=["minus1", "end", "past"])
def test_unread_blocked_block_outside_array_runs_where_jax_raises(bad_index):
  # Interpret mode raises when it copies the block in (its numpy slice is
  # short); pallasvm raises only if the kernel reads it (README,
  # compatibility). The answer, by hand: rows 0-7 plus one, the rest 7.
  f = blocked_marker("raise", bad_index, read_marked=False)
  x = np.asarray(X)
  want = np.concatenate([x[:8] + 1, np.full((8, 128), 7.0, np.float32)])
  np.testing.assert_array_equal(on_pallasvm(f, X), want)


@pytest.mark.parametrize("bad_index", [-1, 4, 9], ids=["minus1", "end", "past"])
def test_read_blocked_block_outside_array_uninitialized(bad_index):
  f = blocked_marker("uninitialized", bad_index, read_marked=True)
  expected = interpret_mode(f, X)
  same_bits(on_pallasvm(f, X), expected)
  assert np.isnan(expected[8:]).all()


@pytest.mark.parametrize("bad_index", [-1, 4, 9], ids=["minus1", "end", "past"])
def test_read_blocked_block_outside_array_is_reported(bad_index):
  f = blocked_marker("raise", bad_index, read_marked=True)
  with pytest.raises(Exception) as info:
    on_pallasvm(f, X)
  message = str(info.value)
  assert f"Out-of-bounds block index ({bad_index}, 0) for input 0" in message
  assert "grid point (2)" in message
  assert (f"test_out_of_array_blocks.py:{line_of('# read of the block')}"
          in message)
  # JAX raises too, at the block copy.
  with pytest.raises(Exception, match="Out-of-bounds block index"):
    interpret_mode(f, X)


def test_read_through_dot_in_place_is_reported():
  # The compiler reads whole VMEM blocks in place for dot_general (no LOAD):
  # that read is checked too.
  def kernel(x_ref, w_ref, o_ref):
    o_ref[...] = jnp.dot(x_ref[...], w_ref[...])

  def f(x, w):
    return pl.pallas_call(
        kernel, grid=(2,),
        in_specs=[pl.BlockSpec((8, 128), lambda i: (i - 1, 0)),
                  pl.BlockSpec((128, 128), lambda i: (0, 0))],
        out_specs=pl.BlockSpec((8, 128), lambda i: (i, 0)),
        out_shape=jax.ShapeDtypeStruct((ROWS, 128), jnp.float32))(x, w)

  with pytest.raises(Exception) as info:
    on_pallasvm(f, X, jnp.eye(128, dtype=jnp.float32))
  assert "Out-of-bounds block index (-1, 0) for input 0" in str(info.value)
  assert "grid point (0)" in str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_output_block_outside_array_is_an_error(mode):
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...]

  def f(x):
    return pl.pallas_call(
        kernel, grid=(4,),
        in_specs=[pl.BlockSpec((4, 128), lambda i: (i, 0))],
        out_specs=pl.BlockSpec((4, 128), lambda i: (i - 1, 0)),
        out_shape=jax.ShapeDtypeStruct((ROWS, 128), jnp.float32),
        interpret=pltpu.InterpretParams(out_of_bounds_reads=mode))(x)

  with pytest.raises(Exception, match="Out-of-bounds block index -1 for output"):
    on_pallasvm(f, X)
