"""The contract_fma option (compiler/fma_contraction.h): with
`pallasvm.InterpretParams(contract_fma=True)` pallasvm contracts a single-use
f32 or f16 product feeding an add or subtract into one fused multiply-add, as
XLA:CPU does, and so matches JAX's TPU interpret mode bit for bit on such
kernels; without it, pallasvm rounds after every equation and matches a
per-op-rounded numpy reference instead. bf16 never contracts (XLA keeps the
conversions), so it matches interpret mode either way.

Each kernel runs once under interpret mode (`interpret=pltpu.InterpretParams()`,
pallasvm not installed) and once per setting of the option under
`pallasvm.enabled(...)`, checking that it ran on pallasvm
(`stats()["lowerings"]` increased)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas.ops.tpu import flash_attention as fa

import pallasvm
from pallasvm import bridge

if bridge.library_path() is None or not bridge.library_path().exists():
  pytest.skip("the bridge library (libpallasvm_xla.so) is not built",
              allow_module_level=True)

SHAPE = (64, 128)


def inputs(dtype, seed=0, n=3):
  keys = jax.random.split(jax.random.key(seed), n)
  return [jax.random.normal(k, SHAPE, jnp.float32).astype(dtype) for k in keys]


def elementwise_call(body, dtype):
  """A one-block pallas_call computing body(jnp, *operands)."""
  def kernel(*refs):
    refs[-1][...] = body(jnp, *[r[...] for r in refs[:-1]])
  return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(SHAPE, dtype),
                        interpret=pltpu.InterpretParams())


def on_pallasvm(fn, *args, contract_fma):
  with pallasvm.enabled(pallasvm.InterpretParams(contract_fma=contract_fma)):
    before = bridge.stats()["lowerings"]
    got = jax.tree.map(np.asarray, jax.jit(fn)(*args))
    assert bridge.stats()["lowerings"] > before, "did not run on pallasvm"
  return got


def in_interpret_mode(fn, *args):
  assert not pallasvm.is_installed()
  return jax.tree.map(np.asarray, jax.jit(fn)(*args))


def mismatches(a, b):
  return int((np.asarray(a).astype(np.float32).view(np.uint32) !=
              np.asarray(b).astype(np.float32).view(np.uint32)).sum())


# body(xp, x, y, z) with xp = jnp in the kernel, numpy for the per-op
# reference (numpy rounds every operation, f16 through f32 as pallasvm does).
BODIES = {
    "x*y+z": lambda xp, x, y, z: x * y + z,
    "z+x*y": lambda xp, x, y, z: z + x * y,
    "x*y-z": lambda xp, x, y, z: x * y - z,
    "z-x*y": lambda xp, x, y, z: z - x * y,
    "(x*y)*(x*y)+x": lambda xp, x, y, z: (x * y) * (x * y) + x,
    # The narrow chain of tests/python/measure_narrow_chain.py.
    "t=x*y+z; t*t-x": lambda xp, x, y, z: (lambda t: t * t - x)(x * y + z),
    # Both operands products: the first is contracted (LLVM's order) ...
    "x*y+z*x": lambda xp, x, y, z: x * y + z * x,
    "x*y-z*x": lambda xp, x, y, z: x * y - z * x,
    # ... except (-p) + q, which LLVM rewrites to q - p first.
    "-(x*y)+z*y": lambda xp, x, y, z: -(x * y) + z * y,
    "-(x*y)-z": lambda xp, x, y, z: -(x * y) - z,
    "square(x)+z": lambda xp, x, y, z: xp.square(x) + z,
    "x**2-z": lambda xp, x, y, z: x**2 - z,
    "x*0.3+z": lambda xp, x, y, z: x * 0.3 + z,
    "(x*y)*z+x": lambda xp, x, y, z: (x * y) * z + x,
    # A product used twice is not contracted.
    "m=x*y; (m+z)*(m-x)": lambda xp, x, y, z: (lambda m: (m + z) * (m - x))(
        x * y),
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16],
                         ids=["f32", "f16"])
@pytest.mark.parametrize("name", list(BODIES))
def test_contracted_matches_interpret_mode(name, dtype):
  body = BODIES[name]
  args = inputs(dtype)
  call = elementwise_call(body, dtype)
  expected = in_interpret_mode(call, *args)
  got = on_pallasvm(call, *args, contract_fma=True)
  assert got.dtype == expected.dtype
  assert mismatches(got, expected) == 0
  # Without the option: per-op rounding, as the jaxpr is written.
  per_op = body(np, *[np.asarray(a) for a in args])
  plain = on_pallasvm(call, *args, contract_fma=False)
  assert mismatches(plain, per_op) == 0
  # XLA:CPU contracts f16 on some CPUs only (the bridge probes it): where
  # it does not, interpret mode rounds per operation too.
  contracts = dtype == jnp.float32 or bridge.xla_contracts_f16()
  if name != "m=x*y; (m+z)*(m-x)" and contracts:
    assert mismatches(plain, expected) > 0  # the option is what matches


@pytest.mark.parametrize("name", ["x*y+z", "t=x*y+z; t*t-x", "z-x*y",
                                  "square(x)+z"])
def test_bf16_is_never_contracted(name):
  args = inputs(jnp.bfloat16)
  call = elementwise_call(BODIES[name], jnp.bfloat16)
  expected = in_interpret_mode(call, *args)
  for contract_fma in (True, False):
    assert mismatches(on_pallasvm(call, *args, contract_fma=contract_fma),
                      expected) == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_times_b_plus_c_on_random_f32(seed):
  """a*b + c over blocks of a grid, operands of mixed magnitudes."""
  rng = np.random.default_rng(seed)
  shape = (256, 256)
  a, b, c = [(rng.standard_normal(shape) * 10.0**rng.integers(-3, 4, shape)
              ).astype(np.float32) for _ in range(3)]
  spec = pl.BlockSpec((64, 128), lambda i, j: (i, j))

  def kernel(a_ref, b_ref, c_ref, o_ref):
    o_ref[...] = a_ref[...] * b_ref[...] + c_ref[...]

  call = pl.pallas_call(kernel, grid=(4, 2), in_specs=[spec] * 3,
                        out_specs=spec,
                        out_shape=jax.ShapeDtypeStruct(shape, jnp.float32),
                        interpret=pltpu.InterpretParams())
  expected = in_interpret_mode(call, a, b, c)
  assert mismatches(on_pallasvm(call, a, b, c, contract_fma=True),
                    expected) == 0
  assert mismatches(on_pallasvm(call, a, b, c, contract_fma=False),
                    a * b + c) == 0


def test_option_given_by_the_call_itself():
  """A pallas_call may carry pallasvm.InterpretParams(contract_fma=True)
  itself; JAX's interpret mode accepts the subclass."""
  args = inputs(jnp.float32)

  def kernel(x_ref, y_ref, z_ref, o_ref):
    o_ref[...] = x_ref[...] * y_ref[...] + z_ref[...]

  call = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct(SHAPE, jnp.float32),
      interpret=pallasvm.InterpretParams(contract_fma=True))
  expected = in_interpret_mode(call, *args)
  with pallasvm.enabled():  # contract_fma=False here; the call's own wins
    got = np.asarray(jax.jit(call)(*args))
  assert mismatches(got, expected) == 0


# --- a golden-style kernel: flash attention forward (test_conformance.py) ----

FA_BLOCKS = fa.BlockSizes(
    block_q=128, block_k_major=128, block_k=128, block_b=1,
    block_q_major_dkv=128, block_k_major_dkv=128, block_k_dkv=128,
    block_q_dkv=128, block_k_major_dq=128, block_k_dq=128, block_q_dq=128)
FA_FWD_TOL = dict(rtol=1e-5, atol=2e-5)  # test_conformance.py's


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flash_attention_forward_stays_within_tolerance(causal):
  q, k, v = [jax.random.normal(jax.random.key(s), (1, 2, 256, 128))
             for s in range(3)]

  def fn(q, k, v):
    return fa.flash_attention(q, k, v, causal=causal, sm_scale=128**-0.5,
                              block_sizes=FA_BLOCKS)

  with pltpu.force_tpu_interpret_mode(pltpu.InterpretParams()):
    expected = np.asarray(jax.jit(fn)(q, k, v))
  for contract_fma in (False, True):
    got = on_pallasvm(fn, q, k, v, contract_fma=contract_fma)
    np.testing.assert_allclose(got, expected, **FA_FWD_TOL)
