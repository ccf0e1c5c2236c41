"""Measures the first call of ops/tpu/flash_attention (1x2x256x128 f32,
causal, default InterpretParams: random_seed None, so its parallel
dimensions are shuffled) through the pallasvm bridge, and how much of it is
the grid order (bridge._grid_coordinates). Run it in a fresh process each
time: PALLASVM_LIBRARY=... .venv/bin/python tests/python/measure_cold_start.py [TOOLS_DIR]
(TOOLS_DIR: the tools/ whose pallasvm package to measure; default this
checkout's; the .venv's editable install points at another checkout's)."""
import pathlib
import sys
import time

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else
                str(pathlib.Path(__file__).resolve().parents[2] / "tools"))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.experimental.pallas.ops.tpu import flash_attention  # noqa: E402

import pallasvm  # noqa: E402
from pallasvm import bridge  # noqa: E402

in_grid_order = [0.0]
grid_coordinates = bridge._grid_coordinates  # pylint: disable=protected-access


def timed_grid_coordinates(*args):
  start = time.perf_counter()
  try:
    return grid_coordinates(*args)
  finally:
    in_grid_order[0] += time.perf_counter() - start


bridge._grid_coordinates = timed_grid_coordinates  # pylint: disable=protected-access
q, k, v = (jax.random.normal(jax.random.key(i), (1, 2, 256, 128), jnp.float32)
           for i in range(3))
jax.block_until_ready((q, k, v))
pallasvm.install()
f = jax.jit(lambda q, k, v: flash_attention.flash_attention(
    q, k, v, causal=True, sm_scale=128**-0.5))
start = time.perf_counter()
jax.block_until_ready(f(q, k, v))
first = time.perf_counter() - start
start = time.perf_counter()
jax.block_until_ready(f(q, k, v))
second = time.perf_counter() - start
print(f"pallasvm from {pallasvm.__file__}: first call {first:.3f} s, of which"
      f" grid order {in_grid_order[0]:.3f} s; second call"
      f" {second * 1e3:.1f} ms; lowerings {pallasvm.stats()['lowerings']}")
