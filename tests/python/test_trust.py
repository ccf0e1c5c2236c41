"""Every answer is right or a clear refusal (issue 8): no equation dropped
unknowingly, masked loads and stores as interpret mode runs them, and no
path from a Pallas TPU kernel to JAX's own interpreter while pallasvm is
installed."""

import contextlib
import importlib
import json
import pathlib
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import core as jax_core
from jax._src.pallas import hlo_interpreter
# pl.load / pl.store / pl.swap of earlier JAX (jax 0.10.2 keeps them here;
# they bind masked_load / masked_swap, as pltpu.load / pltpu.store do).
from jax._src.pallas import primitives as pallas_primitives
from jax._src.pallas.mosaic.interpret import interpret_pallas_call as ipc
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

import pallasvm
from pallasvm import bridge

if bridge.library_path() is None or not bridge.library_path().exists():
  pytest.skip("the bridge library (libpallasvm_xla.so) is not built",
              allow_module_level=True)

_REPO = pathlib.Path(__file__).resolve().parents[2]


def interpret_mode(fn, *args):
  """The truth: `fn(*args)` jitted under JAX's TPU interpret mode."""
  assert not pallasvm.is_installed()
  with pltpu.force_tpu_interpret_mode(pltpu.InterpretParams()):
    return np.asarray(jax.jit(fn)(*args))


class _Escaped(AssertionError):
  pass


@contextlib.contextmanager
def pallasvm_only():
  """pallasvm installed, with JAX's two interpreters made to fail the test
  if entered; yields a function returning the stats() counts since."""
  def escaped(*args, **kwargs):
    raise _Escaped("a kernel reached JAX's interpreter")
  saved = ipc.interpret_pallas_call, hlo_interpreter.pallas_call_hlo_interpret
  ipc.interpret_pallas_call = escaped
  hlo_interpreter.pallas_call_hlo_interpret = escaped
  try:
    with pallasvm.enabled():
      start = pallasvm.stats()
      yield lambda: {k: v - start[k] for k, v in pallasvm.stats().items()}
  finally:
    ipc.interpret_pallas_call, hlo_interpreter.pallas_call_hlo_interpret = saved


@pytest.fixture
def on_pallasvm():
  with pallasvm_only() as counts:
    yield counts


# --- Masked stores and loads --------------------------------------------------

SHAPE = (8, 128)


def _inputs(dtype):
  x = jnp.arange(np.prod(SHAPE)).reshape(SHAPE) % 251 - 100
  return x.astype(dtype), (x * 3 + 7).astype(dtype)


def store_whole_masked(x_ref, y_ref, o_ref):
  o_ref[...] = y_ref[...]
  lanes = jax.lax.broadcasted_iota(jnp.int32, SHAPE, 1)
  pltpu.store(o_ref, x_ref[...] * 2, mask=lanes % 3 == 0)


def store_slice_masked(x_ref, y_ref, o_ref):
  o_ref[...] = y_ref[...]
  rows = jax.lax.broadcasted_iota(jnp.int32, (4, 64), 0)
  pltpu.store(o_ref.at[2:6, pl.ds(32, 64)], x_ref[0:4, 0:64],
              mask=rows >= 1)


def store_unmasked(x_ref, y_ref, o_ref):
  pltpu.store(o_ref, y_ref[...])
  pltpu.store(o_ref.at[1:3, :], x_ref[4:6, :])


def pl_store_masked_dynamic(x_ref, y_ref, o_ref):
  o_ref[...] = x_ref[...]
  start = pl.program_id(0) * 0 + 3
  mask = jax.lax.broadcasted_iota(jnp.int32, (2, 128), 1) < 77
  pallas_primitives.store(o_ref, (pl.ds(start, 2), slice(None)), y_ref[0:2, :], mask=mask)


def store_under_when(x_ref, y_ref, o_ref):
  o_ref[...] = x_ref[...]
  mask = jax.lax.broadcasted_iota(jnp.int32, SHAPE, 0) != 5

  @pl.when(x_ref[0, 0] < 1000)
  def _():
    pltpu.store(o_ref, y_ref[...], mask=mask)

  @pl.when(x_ref[0, 0] > 1000)  # never taken
  def _():
    pltpu.store(o_ref, y_ref[...] * 0)


def swap_masked_result(x_ref, y_ref, o_ref):
  # swap's result: old contents where mask, the value elsewhere.
  o_ref[...] = x_ref[...]
  mask = jax.lax.broadcasted_iota(jnp.int32, SHAPE, 1) < 40
  old = pallas_primitives.swap(o_ref, (slice(None), slice(None)), y_ref[...], mask=mask)
  o_ref[0:4, :] = old[4:8, :] + 1


def store_masked_overhanging(x_ref, y_ref, o_ref):
  # A 4-row window at row 6 of an 8-row ref: rows 8 and 9 are outside, and
  # masked off; interpret mode cuts the window there (numpy slicing).
  o_ref[...] = y_ref[...]
  start = pl.program_id(0) * 0 + 6
  rows = jax.lax.broadcasted_iota(jnp.int32, (4, 128), 0)
  lanes = jax.lax.broadcasted_iota(jnp.int32, (4, 128), 1)
  old = pallas_primitives.swap(o_ref, (pl.ds(start, 4), slice(None)),
                               x_ref[0:4, :], mask=(rows < 2) & (lanes > 9))
  o_ref[0:4, :] = old + 1  # masked-off (and outside) elements: the value


def load_unmasked(x_ref, y_ref, o_ref):
  o_ref[...] = pltpu.load(x_ref) + pallas_primitives.load(
      y_ref, (slice(None), slice(None)))
  o_ref[0:2, :] = pltpu.load(x_ref.at[6:8, :]) * 3


STORE_KERNELS = [store_whole_masked, store_slice_masked, store_unmasked,
                 pl_store_masked_dynamic, store_under_when,
                 swap_masked_result, store_masked_overhanging,
                 load_unmasked]


def _call(kernel, x, y):
  return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(x.shape,
                                                                x.dtype),
                        grid=(1,))(x, y)


@pytest.mark.parametrize("dtype", ["float32", "int32", "bfloat16", "int8"])
@pytest.mark.parametrize("kernel", STORE_KERNELS, ids=lambda k: k.__name__)
def test_masked_store_matches_interpret_mode(kernel, dtype):
  x, y = _inputs(jnp.dtype(dtype))
  f = lambda a, b: _call(kernel, a, b)
  expected = interpret_mode(f, x, y)
  with pallasvm_only() as counts:
    got = np.asarray(jax.jit(f)(x, y))
    assert counts()["lowerings"] == 1
  np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8))


def test_masked_store_outside_the_ref_where_masked_in_is_an_error(
    on_pallasvm):
  def kernel(x_ref, y_ref, o_ref):
    o_ref[...] = y_ref[...]
    start = pl.program_id(0) * 0 + 6
    rows = jax.lax.broadcasted_iota(jnp.int32, (4, 128), 0)
    pltpu.store(o_ref.at[pl.ds(start, 4), :], x_ref[0:4, :],
                mask=rows == 3)  # row 9 of 8: outside
  x, y = _inputs(jnp.float32)
  with pytest.raises(Exception, match="Out-of-bounds masked swap") as info:
    jax.jit(lambda a, b: _call(kernel, a, b))(x, y).block_until_ready()
  assert "index 9 of dim 0" in str(info.value)
  assert "test_trust.py:" in str(info.value)


def test_masked_load_is_refused_as_jax_refuses_it(on_pallasvm):
  def kernel(x_ref, o_ref):
    mask = jax.lax.broadcasted_iota(jnp.int32, SHAPE, 1) < 5
    o_ref[...] = pltpu.load(x_ref, mask=mask)

  x, _ = _inputs(jnp.float32)
  with pytest.raises(NotImplementedError, match="masked load") as info:
    jax.jit(lambda a: pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct(SHAPE, a.dtype))(a))(x)
  assert isinstance(info.value, pallasvm.UnsupportedError)
  assert "test_trust.py:" in str(info.value)
  assert on_pallasvm() == {"lowerings": 0, "compilations": 0, "refusals": 1,
                          "disk_cache_hits": 0}


def test_masked_load_is_refused_by_interpret_mode_too():
  def kernel(x_ref, o_ref):
    mask = jax.lax.broadcasted_iota(jnp.int32, SHAPE, 1) < 5
    o_ref[...] = pltpu.load(x_ref, mask=mask)

  x, _ = _inputs(jnp.float32)
  with pytest.raises(NotImplementedError, match="masked load"):
    interpret_mode(lambda a: pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct(SHAPE, a.dtype))(a), x)


# --- Narrow-float integer_pow --------------------------------------------------


@pytest.mark.parametrize("y", [2, 3, 5, 7, -3])
def test_bf16_integer_pow_rounds_each_multiply_as_xla_does(y):
  # XLA rounds every bf16 multiply of JAX's square-and-multiply sequence;
  # rounding once at the end gave 896 of 8,192 elements wrong for y = 3.
  k1, k2 = jax.random.split(jax.random.key(0))
  x = (jax.random.normal(k1, (64, 128)) * 3).astype(jnp.bfloat16)
  z = jax.random.normal(k2, (64, 128)).astype(jnp.bfloat16)

  def kernel(x_ref, z_ref, o_ref):
    o_ref[...] = jax.lax.integer_pow(x_ref[...], y) + z_ref[...]
  f = lambda a, b: pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct(a.shape, a.dtype))(a, b)
  expected = interpret_mode(f, x, z)
  with pallasvm_only() as counts:
    got = np.asarray(jax.jit(f)(x, z))
    assert counts()["lowerings"] == 1
  np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16))


# --- Routing: no kernel reaches JAX's interpreter ------------------------------


def _add_kernel(x_ref, y_ref, o_ref):
  o_ref[...] = x_ref[...] + y_ref[...]


@pytest.mark.parametrize("interpret", [
    pltpu.InterpretParams(), pltpu.InterpretParams(random_seed=3), True,
    False], ids=["InterpretParams", "InterpretParams_seed", "True", "False"])
def test_pallas_call_runs_on_pallasvm(interpret, on_pallasvm):
  x, y = _inputs(jnp.float32)
  f = pl.pallas_call(_add_kernel, out_shape=jax.ShapeDtypeStruct(SHAPE,
                                                                 x.dtype),
                     interpret=interpret)
  np.testing.assert_array_equal(np.asarray(jax.jit(f)(x, y)),
                                np.asarray(x) + np.asarray(y))
  # Eagerly too (pallas_call's impl jits it).
  np.testing.assert_array_equal(np.asarray(f(x, y)),
                                np.asarray(x) + np.asarray(y))
  assert on_pallasvm()["lowerings"] == 2


def test_force_tpu_interpret_mode_runs_on_pallasvm(on_pallasvm):
  x, y = _inputs(jnp.float32)
  with pltpu.force_tpu_interpret_mode(pltpu.InterpretParams()):
    out = jax.jit(lambda a, b: pl.pallas_call(
        _add_kernel, out_shape=jax.ShapeDtypeStruct(SHAPE, a.dtype))(a, b))(
            x, y)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(x) + np.asarray(y))
  assert on_pallasvm()["lowerings"] == 1


def test_vmap_and_grad_run_on_pallasvm(on_pallasvm):
  x, y = _inputs(jnp.float32)
  add = lambda a, b: pl.pallas_call(
      _add_kernel, out_shape=jax.ShapeDtypeStruct(a.shape, a.dtype),
      interpret=pltpu.InterpretParams())(a, b)
  xs = jnp.stack([x, y])
  out = jax.jit(jax.vmap(add))(xs, xs)
  np.testing.assert_array_equal(np.asarray(out), 2 * np.asarray(xs))
  assert on_pallasvm()["lowerings"] >= 1


def _core_map_copy(mesh, interpret):
  def f(a):
    def body(refs):
      in_ref, out_ref = refs

      @pl.core_map(mesh, interpret=interpret)
      def _():
        pltpu.sync_copy(in_ref, out_ref)
    _, out = pl.run_state(body)((a, jnp.zeros_like(a)))
    return out
  return jax.jit(f)


@pytest.mark.parametrize("interpret", [pltpu.InterpretParams(), False],
                         ids=["InterpretParams", "False"])
def test_core_map_runs_on_pallasvm_not_interpreted(interpret, on_pallasvm):
  mesh = pltpu.create_tensorcore_mesh("core", num_cores=2)
  x, _ = _inputs(jnp.float32)
  # Both cores copy all of x: the same values, so the output is x.
  np.testing.assert_array_equal(_core_map_copy(mesh, interpret)(x), x)
  # (The second parametrization finds the module compiled already.)
  assert on_pallasvm()["lowerings"] == 1
  assert on_pallasvm()["refusals"] == 0


def test_core_map_over_another_mesh_is_refused_not_interpreted(on_pallasvm):
  from jax.experimental.pallas import tpu_sc as plsc  # pylint: disable=g-import-not-at-top
  # A SparseCore mesh, made without the TPU its constructor asks about.
  mesh = object.__new__(plsc.ScalarSubcoreMesh)
  object.__setattr__(mesh, "axis_name", "core")
  object.__setattr__(mesh, "num_cores", 1)
  x, _ = _inputs(jnp.float32)
  with pytest.raises(pallasvm.UnsupportedError,
                     match="ScalarSubcoreMesh are not supported by pallasvm"):
    _core_map_copy(mesh, pltpu.InterpretParams())(x)
  assert on_pallasvm() == {"lowerings": 0, "compilations": 0, "refusals": 1,
                          "disk_cache_hits": 0}


@pytest.mark.parametrize("interpret", [pltpu.InterpretParams(), False],
                         ids=["InterpretParams", "False"])
def test_pl_kernel_with_mesh_runs_on_pallasvm_not_interpreted(interpret,
                                                              on_pallasvm):
  mesh = pltpu.create_tensorcore_mesh("core", num_cores=1)
  x, _ = _inputs(jnp.float32)

  @pl.kernel(out_type=jax.ShapeDtypeStruct(SHAPE, jnp.float32), mesh=mesh,
             interpret=interpret)
  def copy(x_ref, o_ref):
    pltpu.sync_copy(x_ref, o_ref)

  np.testing.assert_array_equal(jax.jit(copy)(x), x)
  # (The second parametrization finds the module compiled already.)
  assert on_pallasvm()["lowerings"] == 1
  assert on_pallasvm()["refusals"] == 0


def test_uninstall_restores_jax_routes():
  from jax._src.pallas import pallas_call as pallas_call_lib  # pylint: disable=g-import-not-at-top
  before = pallas_call_lib._pallas_call_lowering  # pylint: disable=protected-access
  with pallasvm.enabled():
    assert pallas_call_lib._pallas_call_lowering is not before  # pylint: disable=protected-access
  assert pallas_call_lib._pallas_call_lowering is before  # pylint: disable=protected-access
  x, y = _inputs(jnp.float32)
  expected = interpret_mode(lambda a, b: pl.pallas_call(
      _add_kernel, out_shape=jax.ShapeDtypeStruct(SHAPE, a.dtype))(a, b),
                            x, y)
  np.testing.assert_array_equal(expected, np.asarray(x) + np.asarray(y))


# --- No primitive dropped ------------------------------------------------------


def _primitive_modules():
  """The modules whose Primitive objects a Pallas TPU kernel's jaxpr can
  hold: Pallas's, Pallas TPU's, the state primitives and all of jax.lax."""
  names = ["jax._src.pallas.primitives", "jax._src.pallas.mosaic.primitives",
           "jax._src.state.primitives", "jax._src.pallas.core",
           # jax.random's key primitives (random_bits, ...): the exporter
           # replaces them, so the compiler has no rule and refuses them.
           "jax._src.random.prng"]
  import jax._src.lax as lax_pkg  # pylint: disable=g-import-not-at-top
  for info in pkgutil.walk_packages(lax_pkg.__path__, "jax._src.lax."):
    names.append(info.name)
  modules = []
  for name in names:
    try:
      modules.append(importlib.import_module(name))
    except ImportError:  # e.g. a GPU-only module
      pass
  return modules


def _all_primitives() -> dict[str, str]:
  """Each primitive's name, mapped to the first module found holding it."""
  found = {}
  for module in _primitive_modules():
    for value in vars(module).values():
      if isinstance(value, jax_core.Primitive):
        found.setdefault(value.name, module.__name__)
  return found


# Primitives of the ref/Pallas modules that pallasvm declares pure, with why
# removing an unused one is safe. Any other primitive from those modules is
# effectful or unknown.
PURE_KERNEL_PRIMITIVES = {
    "program_id": "reads the grid point, no effect",
    "num_programs": "reads the grid size, no effect",
    "multiple_of": "a hint; the identity",
    "roll": "pltpu.roll: data movement between values",
    "bitcast": "pltpu.bitcast: the bytes of a value as another dtype",
}


def _with_equation(primitive: str, outvars: list) -> bytes:
  """The add_vectors golden kernel with an equation of `primitive` (no
  operands, results unused) in front of its own."""
  kernel = json.loads(
      (_REPO / "tests/golden/add_vectors/kernel.json").read_text())
  kernel["jaxpr"]["eqns"].insert(0, {
      "primitive": primitive, "invars": [], "params": [], "outvars": outvars,
      "source_file": "kernel.py", "source_line": 7})
  return json.dumps(kernel).encode()


def test_every_primitive_is_lowered_or_refused_never_dropped():
  rules = pallasvm.lowering_rules()
  primitives = _all_primitives()
  assert len(primitives) > 150, sorted(primitives)  # the walk found jax.lax
  for name in ("masked_swap", "masked_load", "swap", "get", "dma_start",
               "semaphore_signal", "run_scoped", "add", "dot_general"):
    assert name in primitives, name
  unused = [{"id": 999, "type": {"dtype": "F32", "shape": []}}]
  refused = []
  for name in sorted(primitives):
    if name in rules:
      continue
    for outvars in (unused, []):
      with pytest.raises(pallasvm.UnsupportedError) as info:
        pallasvm.compile_interchange(_with_equation(name, outvars))
      message = str(info.value)
      assert f"primitive `{name}` is not supported by pallasvm yet" in message
      assert "kernel.py:7" in message
    refused.append(name)
  assert refused  # DMAs, semaphores, ... are refused today


def test_pure_rules_have_no_effects():
  rules = pallasvm.lowering_rules()
  kernel_modules = ("jax._src.pallas.", "jax._src.state.")
  for name, module in _all_primitives().items():
    if rules.get(name) and module.startswith(kernel_modules):
      assert name in PURE_KERNEL_PRIMITIVES, (
          f"{name} (from {module}) is declared pure")
  for effectful in ("get", "swap", "addupdate", "masked_load", "masked_swap",
                    "cond", "while", "scan", "pjit",
                    # the TPU PRNG's state changes
                    "prng_seed", "prng_random_bits"):
    assert rules[effectful] is False, effectful
