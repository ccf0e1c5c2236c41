"""Running a test's kernels on pallasvm and nowhere else: the bridge is
installed and JAX's own TPU interpreter is made to raise if entered, so a
kernel the bridge does not route cannot pass by running on JAX's
interpreter. Shared by the JAX interpret-mode spec tests
(test_jax_interpret_spec.py, test_jax_interpret_distributed_spec.py)."""

import contextlib

import jax

from jax._src.pallas.mosaic.interpret import interpret_pallas_call as jax_interpreter

import pallasvm


class RanOnJaxInterpreter(AssertionError):
  """A kernel reached JAX's TPU interpreter instead of pallasvm."""


def lowerings() -> int:
  return pallasvm.stats()["lowerings"]


@contextlib.contextmanager
def kernels_on_pallasvm():
  """Installs the bridge and makes JAX's TPU interpreter raise
  RanOnJaxInterpreter for the duration of the block."""
  def refuse(*args, **kwargs):
    del args, kwargs
    raise RanOnJaxInterpreter(
        "a kernel ran on JAX's TPU interpreter"
        " (interpret_pallas_call.interpret_pallas_call), not on pallasvm")

  saved = jax_interpreter.interpret_pallas_call
  jax_interpreter.interpret_pallas_call = refuse
  try:
    with pallasvm.enabled():
      yield
  finally:
    jax_interpreter.interpret_pallas_call = saved


def on_pallasvm(fn, *args):
  """fn(*args) jitted on pallasvm, checking that pallasvm lowered it."""
  before = lowerings()
  with kernels_on_pallasvm():
    out = jax.block_until_ready(jax.jit(fn)(*args))
  assert lowerings() > before, "pallasvm lowered nothing"
  return out
