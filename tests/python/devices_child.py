"""Running test cases on several CPU devices from a one-device test run.

JAX fixes its device count when its backend starts, and most tests run on
one device: so a module's multi-device cases run in one child process
(spawned once per module with XLA_FLAGS=--xla_force_host_platform_device_count
=N), and each test hands its case (a module-level function
`case_<test name without test_>`) to that child and re-raises what it
raised. Shared by test_jax_interpret_distributed_spec.py and
test_devices.py.
"""

import concurrent.futures
import importlib
import multiprocessing
import os
import pickle

import pytest


def _start_child(num_devices: int):
  os.environ["XLA_FLAGS"] = " ".join(filter(None, [
      os.environ.get("XLA_FLAGS"),
      f"--xla_force_host_platform_device_count={num_devices}"]))


def _run_in_child(module: str, case: str, kwargs: dict,
                  num_devices: int) -> int:
  """Runs <module>.case_<case>(**kwargs) on pallasvm; the number of
  pallas_calls the bridge lowered. An exception that cannot be pickled
  comes back as one of its type (or RuntimeError) with its message."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax._src import dispatch  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas import tpu as pltpu  # pylint: disable=g-import-not-at-top
  from pallasvm_only import kernels_on_pallasvm, lowerings  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == num_devices, jax.devices()
  pltpu.reset_tpu_interpret_mode_state()
  # A failed call's ordered-effect token (interpret-mode kernels carry
  # ordered IO effects) holds its error, which JAX hands to every later
  # call in the process, as it would under interpret mode: each case starts
  # afresh.
  dispatch.runtime_tokens.clear()
  before = lowerings()
  try:
    with kernels_on_pallasvm():
      getattr(importlib.import_module(module), f"case_{case}")(**kwargs)
  except Exception as e:  # pylint: disable=broad-except
    try:
      pickle.loads(pickle.dumps(e))
    except Exception:  # pylint: disable=broad-except
      try:
        copy = type(e)(str(e))
        pickle.loads(pickle.dumps(copy))
      except Exception:  # pylint: disable=broad-except
        copy = RuntimeError(f"{type(e).__name__}: {e}")
      raise copy from None
    raise
  return lowerings() - before


def child_fixtures(num_devices: int):
  """(child, run_case) fixtures for a test module: `run_case(**kwargs)`
  runs the calling test's case in the module's child on `num_devices`
  devices and checks that pallasvm lowered a pallas_call."""
  @pytest.fixture(scope="module")
  def child():
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_child, initargs=(num_devices,)) as pool:
      yield pool

  @pytest.fixture
  def run_case(child, request):  # pylint: disable=redefined-outer-name
    case = request.node.originalname.removeprefix("test_")
    module = request.module.__name__

    def run(**kwargs):
      lowered = child.submit(_run_in_child, module, case, kwargs,
                             num_devices).result(timeout=600)
      assert lowered > 0, "no pallas_call was lowered to pallasvm"
    return run

  return child, run_case
