"""Measures per-call time of small kernels using the primitives of
test_prims.py, under JAX's TPU interpret mode and on pallasvm (medians of 5
and 50 calls). Run: .venv/bin/python tests/python/measure_prims.py
(jax 0.10.2's interpret mode cannot run pltpu's stateful samplers: it has
no CPU rule for prng_random_bits inside random_bits.)"""
import sys; import pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools"))
import time, jax, jax.numpy as jnp, numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
import pallasvm
S=(8,128)
def t(f, *a, n=20):
  jax.block_until_ready(f(*a)); ts=[]
  for _ in range(n):
    t0=time.perf_counter(); jax.block_until_ready(f(*a)); ts.append(time.perf_counter()-t0)
  return np.median(ts)
x = jax.random.normal(jax.random.key(0), S); idx = jax.random.randint(jax.random.key(1), S, 0, 128)
def k_sort(x_ref, o_ref): o_ref[...] = jnp.sort(x_ref[...], axis=1)
def k_take(x_ref, i_ref, o_ref): o_ref[...] = jnp.take_along_axis(x_ref[...], i_ref[...], axis=1)
def k_roll(x_ref, o_ref): o_ref[...] = pltpu.roll(x_ref[...], pl.program_id(0) + 3, 1)
def k_prng(o_ref):
  pltpu.prng_seed(pl.program_id(0)); o_ref[...] = pltpu.stateful_uniform(S)
def k_rand(o_ref): o_ref[...] = jax.random.uniform(jax.random.fold_in(jax.random.key(0), pl.program_id(0)), S)
G=8
cases = [("sort 8x128 f32 (lanes)", k_sort, (x,), 1),
         ("take_along_axis 8x128", k_take, (x, idx), 1),
         ("roll, dynamic shift, 8 steps", k_roll, (x,), G),
         ("prng_seed + stateful_uniform, 8 steps", k_prng, (), G),
         ("jax.random fold_in + uniform, 8 steps", k_rand, (), G)]
for name, k, args, g in cases:
  mk = lambda: pl.pallas_call(k, out_shape=jax.ShapeDtypeStruct((8*g,128), jnp.float32), grid=(g,),
      in_specs=[pl.BlockSpec(S, lambda i: (0,0)) for _ in args], out_specs=pl.BlockSpec(S, lambda i: (i,0)))
  f = jax.jit(lambda *a: mk()(*a))
  try:
    with pltpu.force_tpu_interpret_mode(pltpu.InterpretParams()):
      fi = jax.jit(lambda *a: mk()(*a)); ti = t(fi, *args, n=5)
  except Exception as e:
    ti = float("nan"); print(name, "interpret mode:", type(e).__name__, str(e)[:90])
  with pallasvm.enabled():
    fv = jax.jit(lambda *a: mk()(*a)); tv = t(fv, *args, n=50)
  print(f"{name:42s} interpret {ti*1e3:9.2f} ms   pallasvm {tv*1e6:9.1f} us   {ti/tv:8.0f}x")
