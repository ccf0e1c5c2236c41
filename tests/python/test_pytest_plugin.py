"""Tests for the pytest plugin (tools/pallasvm/pytest_plugin.py): it runs a
generated suite with pallasvm installed and reports, per test, whether its
kernels ran on pallasvm, were refused, escaped to JAX's interpreter, or
whether it ran none."""

import json
import os
import pathlib

import pytest

from pallasvm import bridge

pytest_plugins = ["pytester"]

if bridge.library_path() is None or not bridge.library_path().exists():
  pytest.skip(
      "the bridge library (libpallasvm_xla.so) is not built: build pallasvm"
      " into build/ with jax in .venv, or set PALLASVM_LIBRARY",
      allow_module_level=True)

KERNELS = """
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu


def add_one_kernel(x_ref, o_ref):
  o_ref[...] = x_ref[...] + 1.0


def lgamma_kernel(x_ref, o_ref):
  o_ref[...] = jax.lax.lgamma(x_ref[...])


def call(kernel, x, **kwargs):
  return pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype), **kwargs)(x)


X = jnp.arange(8 * 128, dtype=jnp.float32).reshape(8, 128)
"""

SUPPORTED = """
from kernels import *


def test_interpret_params():
  y = call(add_one_kernel, X, interpret=pltpu.InterpretParams())
  np.testing.assert_array_equal(y, X + 1)


def test_forced_interpret_mode_two_kernels():
  with pltpu.force_tpu_interpret_mode():
    y = jax.jit(lambda x: call(add_one_kernel, call(add_one_kernel, x)))(X)
  np.testing.assert_array_equal(y, X + 2)


def test_wrong_answer():
  y = call(add_one_kernel, X, interpret=pltpu.InterpretParams())
  np.testing.assert_array_equal(y, X + 3)
"""

REFUSED = """
from kernels import *


def test_lgamma():
  call(lgamma_kernel, X, interpret=pltpu.InterpretParams())


def test_kernel_over_a_mesh():
  from jax.experimental.pallas import tpu_sc as plsc
  # A SparseCore mesh (pallasvm runs TensorCore meshes only), made without
  # the TPU its constructor asks about.
  mesh = object.__new__(plsc.ScalarSubcoreMesh)
  object.__setattr__(mesh, "axis_name", "core")
  object.__setattr__(mesh, "num_cores", 1)

  def body(refs):
    x_ref, o_ref = refs

    @pl.core_map(mesh, interpret=pltpu.InterpretParams())
    def _():
      pltpu.sync_copy(x_ref, o_ref)
  jax.jit(lambda x: pl.run_state(body)((x, jnp.zeros_like(x)))[1])(X)
"""

NO_KERNEL = """
from kernels import *


def test_plain_jax():
  assert float(jnp.sum(X)) == float(np.sum(np.asarray(X)))
"""

ESCAPED = """
from kernels import *
from pallasvm import bridge


def test_escapes_to_jax():
  bridge.uninstall()  # JAX's own CPU lowering: its TPU interpret mode
  try:
    y = call(add_one_kernel, X, interpret=pltpu.InterpretParams())
  finally:
    bridge.install()
  np.testing.assert_array_equal(y, X + 1)
"""


@pytest.fixture(name="suite")
def fixture_suite(pytester, monkeypatch):
  # The generated suite runs in a subprocess that imports this checkout's
  # package (as conftest.py does here).
  tools = str(pathlib.Path(__file__).resolve().parents[2] / "tools")
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      filter(None, [tools, os.environ.get("PYTHONPATH")])))
  pytester.makepyfile(kernels=KERNELS, test_supported=SUPPORTED,
                      test_refused=REFUSED, test_no_kernel=NO_KERNEL,
                      test_escaped=ESCAPED)
  return pytester


def test_report_classifies_each_test(suite):
  result = suite.runpytest_subprocess("-p", "pallasvm.pytest_plugin",
                                      "--pallasvm-report=report.json")
  result.assert_outcomes(passed=4, failed=3)
  report = json.loads((suite.path / "report.json").read_text())
  tests = {t["nodeid"].split("::")[1]: t for t in report["tests"]}
  assert {name: (t["verdict"], t["outcome"], t["lowered"])
          for name, t in tests.items()} == {
              "test_interpret_params": ("pallasvm", "passed", 1),
              "test_forced_interpret_mode_two_kernels": ("pallasvm", "passed",
                                                         2),
              "test_wrong_answer": ("pallasvm", "failed", 1),
              "test_lgamma": ("refused", "failed", 0),
              "test_kernel_over_a_mesh": ("refused", "failed", 0),
              "test_plain_jax": ("no kernel", "passed", 0),
              "test_escapes_to_jax": ("escaped", "passed", 0),
          }
  [refusal] = tests["test_lgamma"]["refused"]
  assert refusal["kind"] == "UnsupportedError"
  assert "lgamma" in refusal["message"] and "\n" not in refusal["message"]
  assert tests["test_escapes_to_jax"]["escaped"] == [
      "add_one_kernel (interpret_pallas_call)"]
  totals = report["totals"]
  assert totals["tests"] == 7
  assert totals["pallasvm"] == {"tests": 3, "passed": 2, "failed": 1}
  assert totals["refused"] == {"tests": 2, "failed": 2}
  assert totals["no kernel"] == {"tests": 1, "passed": 1}
  assert totals["escaped"] == {"tests": 1, "passed": 1}
  assert (totals["kernels_lowered"], totals["kernels_refused"],
          totals["kernels_escaped"]) == (4, 2, 1)
  [mesh] = tests["test_kernel_over_a_mesh"]["refused"]
  assert mesh["kind"] == "UnsupportedError" and "mesh" in mesh["message"]
  reasons = report["refusal_reasons"]
  assert sorted(reasons.values()) == [1, 1]
  assert all(".py:" not in reason for reason in reasons)
  # The terminal report: a line per test, totals, and the escape, loudly.
  result.stdout.fnmatch_lines([
      "*pallasvm: where each test's kernels ran*",
      "escaped * passed * test_escaped.py::test_escapes_to_jax *"
      "ran on JAX's interpreter: add_one_kernel*",
      "refused * failed * test_refused.py::test_lgamma *UnsupportedError:*lgamma*",
      "pallasvm * passed * test_supported.py::test_forced_interpret_mode"
      "_two_kernels *2 kernels",
      "*pallasvm totals: 7 tests: 3 pallasvm (2 passed, 1 failed);*",
      "*1 TESTS RAN KERNELS ON JAX'S INTERPRETER, NOT ON PALLASVM*",
  ])


def test_inert_without_the_flag(suite):
  # Registered but not asked for (as the pytest11 entry point registers
  # it): no pallasvm, no report; interpret mode runs on JAX.
  suite.makeconftest('pytest_plugins = ["pallasvm.pytest_plugin"]')
  result = suite.runpytest_subprocess("test_supported.py", "-k",
                                      "interpret_params")
  result.assert_outcomes(passed=1)
  result.stdout.no_fnmatch_line("*pallasvm totals*")
