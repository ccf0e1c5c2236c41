"""The JAX bridge against kernels that must not take the Python process
down: a `while` that never ends stops at InterpretParams.timeout_s with an
error naming where it was, and bad timeouts are refused when JAX lowers.
(The C++ side of these checks is tests/runtime/hostile_test.cc.)"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl

import pallasvm
from pallasvm import bridge

if bridge.library_path() is None or not bridge.library_path().exists():
  pytest.skip("the bridge library (libpallasvm_xla.so) is not built",
              allow_module_level=True)


def endless_while(x):
  """o = x + r, r = x[0, 0] while r > 0 (r := max(r, 1)): never ends for a
  positive x[0, 0]."""
  def kernel(x_ref, o_ref):
    n = x_ref[0, 0]
    r = jax.lax.while_loop(lambda r: r > 0, lambda r: jnp.maximum(r, 1), n)  # endless
    o_ref[...] = x_ref[...] + r

  return pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype), grid=(2,),
      in_specs=[pl.BlockSpec((8, 128), lambda i: (i, 0))],
      out_specs=pl.BlockSpec((8, 128), lambda i: (i, 0)))(x)


def test_a_timeout_ends_an_endless_while_naming_where():
  x = jnp.zeros((16, 128), jnp.int32)
  with pallasvm.enabled(pallasvm.InterpretParams(timeout_s=0.3)):
    f = jax.jit(endless_while)
    np.testing.assert_array_equal(np.asarray(f(x)), np.zeros((16, 128)))
    start = time.monotonic()
    with pytest.raises(Exception) as info:
      np.asarray(f(x.at[0, 0].set(1)))
    assert time.monotonic() - start < 30
  message = str(info.value)
  assert "deadline exceeded (timeout of 0.3 s)" in message, message
  assert "grid point (0) (core 0)" in message, message
  assert "test_bridge_hostile.py:" in message, message


def test_no_timeout_by_default():
  assert pallasvm.InterpretParams().timeout_s is None
  assert bridge._timeout_ns(pallasvm.InterpretParams()) == 0


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "1",
                                     True])
def test_a_bad_timeout_is_refused_naming_it(timeout):
  # install() checks its params at once.
  with pytest.raises(ValueError, match="InterpretParams.timeout_s"):
    pallasvm.install(pallasvm.InterpretParams(timeout_s=timeout))
  assert not pallasvm.is_installed()
