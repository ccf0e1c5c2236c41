"""Uninitialized-read detection (runtime/uninitialized_reads.h), a check
interpret mode lacks: with InterpretParams.uninitialized_reads="warn" or
"error", a read of an element nothing has written is reported with the
reading instruction's source line, the grid point and the element.

Each case provokes one kind of unwritten memory and checks the report; the
results themselves are checked against interpret mode, which computes on
the same fill values (NaN) that pallasvm reads. The correct kernels at the
end (double buffering, emit_pipeline, paged attention) must stay silent."""

import contextlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

import pallasvm
from pallasvm import bridge
from pallasvm_only import kernels_on_pallasvm
from test_memory_model import (ANY, MODES, arange, double_buffered_copy,
                               emit_pipeline_matmul, matmul_inputs,
                               run_scoped_in_a_loop,
                               on_interpret_mode, on_pallasvm, tpu_mesh)

if bridge.library_path() is None or not bridge.library_path().exists():
  pytest.skip("the bridge library (libpallasvm_xla.so) is not built",
              allow_module_level=True)

# An instruction's source, as reports name it: "(path/to/file.py:LINE)".
HERE = r"\(\S*test_uninitialized_reads\.py:\d+\)"


def checked(mode="warn", dma_execution_mode="on_wait", **kw):
  return pallasvm.InterpretParams(uninitialized_reads=mode,
                                  dma_execution_mode=dma_execution_mode, **kw)


def warnings_of(capfd):
  return [line for line in capfd.readouterr().err.splitlines()
          if line.startswith("pallasvm warning:") and "uninitialized read:" in line]


def run_both(make, *args, mesh=False):
  """make(params)(*args) on interpret mode (plain params) and on pallasvm
  with the check in warning mode; the results must agree bit for bit (NaN
  where NaN): the check observes, it changes nothing."""
  ctx = tpu_mesh if mesh else contextlib.nullcontext
  with ctx():
    want = on_interpret_mode(make(pltpu.InterpretParams()), *args)
  with ctx():
    got = on_pallasvm(make(checked()), *args)
  for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
  return got


def raises_on_pallasvm(f, *args, match):
  with kernels_on_pallasvm():
    with pytest.raises(Exception, match=match):
      jax.block_until_ready(jax.jit(f)(*args))


# --- Each kind of unwritten memory -------------------------------------------


def edge_block_sum(interpret):
  # 20 rows in blocks of 8: the third block's rows 4..7 are padding.
  return pl.pallas_call(
      lambda x_ref, o_ref: o_ref.__setitem__(
          ..., jnp.sum(x_ref[...], axis=0, keepdims=True)),
      grid=(3,), in_specs=[pl.BlockSpec((8, 128), lambda i: (i, 0))],
      out_specs=pl.BlockSpec((1, 128), lambda i: (i, 0)),
      out_shape=jax.ShapeDtypeStruct((3, 128), jnp.float32),
      interpret=interpret)


def test_edge_padding_of_an_input_block(capfd):
  x = arange((20, 128))
  got = run_both(edge_block_sum, x)
  assert np.isnan(np.asarray(got[2])).all()  # NaN padding in both
  [w] = warnings_of(capfd)
  assert re.search(
      rf"{HERE} reads element \(4, 0\) of args\[0\] \(ref 0, "
      r"float32\[8,128\]\) at grid point \(2\), and 511 more elements, which"
      r" nothing has written: it is padding of a block that hangs over the"
      r" edge of input 0's array", w), w


def test_edge_padding_is_an_error_by_option():
  raises_on_pallasvm(edge_block_sum(checked("error")), arange((20, 128)),
                     match=r"grid point \(2\): uninitialized read of element"
                     r" \(4, 0\) of args\[0\] \(ref 0, float32\[8,128\]\),"
                     r" which nothing has written: it is padding of a block"
                     r" .* at get \(\S*test_uninitialized_reads\.py:\d+ in"
                     r" edge_block_sum")


def test_edge_padding_the_kernel_masks_is_not_read(capfd):
  # The same blocks, of which the last is read only where its rows exist.
  def kernel(x_ref, o_ref):
    @pl.when(pl.program_id(0) < 2)
    def _():
      o_ref[...] = jnp.sum(x_ref[...], axis=0, keepdims=True)

    @pl.when(pl.program_id(0) == 2)
    def _():
      o_ref[...] = jnp.sum(x_ref[:4], axis=0, keepdims=True)

  def make(interpret):
    return pl.pallas_call(
        kernel, grid=(3,),
        in_specs=[pl.BlockSpec((8, 128), lambda i: (i, 0))],
        out_specs=pl.BlockSpec((1, 128), lambda i: (i, 0)),
        out_shape=jax.ShapeDtypeStruct((3, 128), jnp.float32),
        interpret=interpret)

  x = arange((20, 128))
  got = run_both(make, x)
  np.testing.assert_array_equal(got[2], x[16:].sum(0))
  assert warnings_of(capfd) == []


def accumulate(init):
  # o += x over the reduction axis k; `init` zeroes the block at k == 0 first.
  def kernel(x_ref, o_ref):
    if init:
      @pl.when(pl.program_id(1) == 0)
      def _():
        o_ref[...] = jnp.zeros_like(o_ref)
    o_ref[...] += x_ref[...]

  def make(interpret):
    return pl.pallas_call(
        kernel, grid=(2, 3),
        in_specs=[pl.BlockSpec((8, 128), lambda i, k: (i, k))],
        out_specs=pl.BlockSpec((8, 128), lambda i, k: (i, 0)),
        out_shape=jax.ShapeDtypeStruct((16, 128), jnp.float32),
        interpret=interpret)
  return make


def test_an_output_block_read_before_it_is_written(capfd):
  x = arange((16, 384))
  got = run_both(accumulate(init=False), x)
  assert np.isnan(np.asarray(got)).all()
  [w] = warnings_of(capfd)
  # The first read at (0, 0); the block is fresh again at (1, 0): two
  # executions of the read, 1024 elements.
  assert re.search(
      rf"{HERE} reads element \(0, 0\) of outputs \(ref 1, "
      r"float32\[8,128\]\) at grid point \(0, 0\), and 2047 more elements in"
      r" 2 executions, which nothing has written: nothing has written it"
      r" since the output block's index last changed", w), w


def test_an_output_block_zeroed_first_is_not_reported(capfd):
  x = arange((16, 384))
  got = run_both(accumulate(init=True), x)
  np.testing.assert_array_equal(
      got, x.reshape(16, 3, 128).sum(1))
  assert warnings_of(capfd) == []


def test_fresh_scratch(capfd):
  # acc is read at step 0 before anything wrote it; from step 1 on it holds
  # what step 0 stored.
  def kernel(x_ref, o_ref, acc):
    acc[...] = acc[...] + x_ref[...]
    o_ref[...] = acc[...]

  def make(interpret):
    return pl.pallas_call(
        kernel, grid=(3,),
        in_specs=[pl.BlockSpec((8, 128), lambda i: (i, 0))],
        out_specs=pl.BlockSpec((8, 128), lambda i: (i, 0)),
        out_shape=jax.ShapeDtypeStruct((24, 128), jnp.float32),
        scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32)],
        interpret=interpret)

  run_both(make, arange((24, 128)))
  [w] = warnings_of(capfd)
  assert re.search(
      rf"{HERE} reads element \(0, 0\) of scratch_shapes\[0\] \(ref 2, "
      r"float32\[8,128\]\) at grid point \(0\), and 1023 more elements, which"
      r" nothing has written: the scratch buffer has not been written there"
      r" in this call", w), w


def test_a_run_scoped_buffer_is_fresh_at_each_entry():
  # Each entry of the scope reads buf[0] before writing it: the second entry
  # too, although the first wrote it (interpret mode refills it with NaN).
  raises_on_pallasvm(
      run_scoped_in_a_loop(checked("error")),
      match=r"grid point \(\): uninitialized read of element \(0\) of"
      r" allocation 0 of run_scoped at \S*test_memory_model.py:\d+"
      r" \(ref 1, float32\[1\]\), which nothing has written: the run_scoped"
      r" buffer has not been written there since its scope began at swap")


def dma_read_before_wait(interpret):
  def kernel(x_hbm, o_ref, buf, sem):
    copy = pltpu.make_async_copy(x_hbm, buf, sem)
    copy.start()
    early = buf[0, 0]  # the data may not be there yet
    copy.wait()
    o_ref[...] = buf[...] + early * 0.0

  return pl.pallas_call(
      kernel, in_specs=[ANY],
      out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32),
                      pltpu.SemaphoreType.DMA],
      interpret=interpret)


@pytest.mark.parametrize("mode", MODES)
def test_a_dma_destination_read_before_its_wait(mode, capfd):
  # In eager mode the data is already there, in on_wait mode it is not:
  # both report the read, which is wrong on a TPU either way.
  on_pallasvm(dma_read_before_wait(checked(dma_execution_mode=mode)),
              arange((8, 128)))
  [w] = warnings_of(capfd)
  assert re.search(
      rf"{HERE} reads element \(0, 0\) of scratch_shapes\[0\] .* at grid"
      r" point \(\), which nothing has written: a DMA into it has started but"
      r" its semaphore has not been waited on", w), w


def test_unwritten_hbm_output_stays_unwritten_through_a_dma(capfd):
  # Half of the HBM output is written by a DMA; the whole output is then
  # copied back into VMEM and read: rows 8..15 were never written.
  def kernel(x_hbm, o_hbm, buf, sem):
    pltpu.sync_copy(x_hbm.at[pl.ds(0, 8)], o_hbm.at[pl.ds(0, 8)])
    pltpu.async_copy(o_hbm, buf, sem).wait()
    buf[...] = buf[...] + 1.0

  def make(interpret):
    return pl.pallas_call(
        kernel, in_specs=[ANY], out_specs=ANY,
        out_shape=jax.ShapeDtypeStruct((16, 128), jnp.float32),
        scratch_shapes=[pltpu.VMEM((16, 128), jnp.float32),
                        pltpu.SemaphoreType.DMA],
        interpret=interpret)

  run_both(make, arange((16, 128)))
  [w] = warnings_of(capfd)
  assert re.search(
      rf"{HERE} reads element \(8, 0\) of scratch_shapes\[0\] .* and 1023"
      r" more elements, which nothing has written", w), w


def test_bad_option_value_is_refused():
  f = edge_block_sum(pallasvm.InterpretParams(uninitialized_reads="yes"))
  with kernels_on_pallasvm():
    with pytest.raises(ValueError,
                       match=r"uninitialized_reads='yes': expected 'off',"
                       r" 'warn' or 'error'"):
      jax.jit(f)(arange((20, 128)))


# --- Correct kernels stay silent ---------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_double_buffered_copy_is_silent(mode, capfd):
  f = double_buffered_copy(4, checked("error", dma_execution_mode=mode))
  x = arange((32, 128))
  want = x + jnp.repeat(jnp.arange(4, dtype=jnp.float32), 8)[:, None]
  np.testing.assert_array_equal(on_pallasvm(f, x), want)
  assert warnings_of(capfd) == []


def test_emit_pipeline_matmul_is_silent():
  x, y = matmul_inputs()
  with tpu_mesh():
    got = on_pallasvm(emit_pipeline_matmul(checked("error")), x, y)
  np.testing.assert_allclose(got, x @ y, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("megacore_mode", [None, "batch"])
def test_paged_attention_is_silent(megacore_mode, capfd):
  from jax.experimental.pallas.ops.tpu.paged_attention import paged_attention  # pylint: disable=g-import-not-at-top
  from test_memory_model import paged_attention_inputs  # pylint: disable=g-import-not-at-top

  def fn(*args):
    return paged_attention(*args, pages_per_compute_block=4,
                           megacore_mode=megacore_mode)

  args = paged_attention_inputs(jnp.float32)
  cores = 1 if megacore_mode is None else 2
  run = checked("warn", num_cores_or_threads=cores)
  before = pallasvm.stats()["lowerings"]
  with kernels_on_pallasvm(), pltpu.force_tpu_interpret_mode(run):
    got = np.asarray(jax.block_until_ready(jax.jit(fn)(*args)))
  assert pallasvm.stats()["lowerings"] > before
  assert np.isfinite(got).all()
  assert warnings_of(capfd) == []
