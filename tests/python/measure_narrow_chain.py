"""Measures the bf16/f16 chain t = x*y + z; t*t - x (64x128, seed 0): pallasvm vs
interpret mode vs per-op-rounded references, and pallasvm with
pallasvm.InterpretParams(contract_fma=True) vs interpret mode. Run: .venv/bin/python tests/python/measure_narrow_chain.py
The per-op reference is computed in numpy as well as in jnp: XLA:CPU contracts
f16 mul+add into an FMA even through explicit f32 casts, so a jnp one is not per-op for f16."""
import sys; import pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools"))
import numpy as np, jax, jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
import pallasvm
def body(x, y, z):
  t = x * y + z
  return t * t - x
def kernel(x_ref, y_ref, z_ref, o_ref):
  o_ref[...] = body(x_ref[...], y_ref[...], z_ref[...])
for dt in (jnp.bfloat16, jnp.float16):
  k = jax.random.split(jax.random.key(0), 3)
  x, y, z = [jax.random.normal(kk, (64, 128), jnp.float32).astype(dt) for kk in k]
  call = pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(x.shape, dt), interpret=pltpu.InterpretParams())
  interp = np.asarray(jax.jit(call)(x, y, z)).astype(np.float32)
  with pallasvm.enabled():
    got = np.asarray(jax.jit(call)(x, y, z)).astype(np.float32)
  with pallasvm.enabled(pallasvm.InterpretParams(contract_fma=True)):
    contracted = np.asarray(jax.jit(call)(x, y, z)).astype(np.float32)
  def perop(x, y, z):
    f = lambda a: a.astype(jnp.float32); r = lambda a: a.astype(dt)
    t = r(r(f(x) * f(y)) + f(z)); return r(f(r(f(t) * f(t))) - f(x))
  ref = np.asarray(jax.jit(perop)(x, y, z)).astype(np.float32)
  X, Y, Z = [np.asarray(a).astype(np.float64) for a in (x, y, z)]
  h = lambda a: a.astype(np.float32).astype(dt)
  t = h(X * Y + Z).astype(np.float64); fma = h(t * t - X).astype(np.float32)
  print(jnp.dtype(dt).name, "of", got.size,
        "| pallasvm vs interpret:", int((got != interp).sum()), "max", float(np.abs(got - interp).max()),
        "| pallasvm vs per-op ref:", int((got != ref).sum()),
        "| interpret vs per-op ref:", int((interp != ref).sum()),
        "| interpret vs fma-contracted ref:", int((interp != fma).sum()),
        "| pallasvm contract_fma=True vs interpret:", int((contracted != interp).sum()))
