"""Exports the benchmark kernels (interchange only; the benchmark makes its
own inputs) into bench/kernels/<name>.json.

Run from the repository root:

  .venv/bin/python bench/export_bench_kernels.py
"""

from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tools"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.experimental import pallas as pl  # noqa: E402
from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash  # noqa: E402
from jax.experimental.pallas.ops.tpu import matmul as tpu_matmul  # noqa: E402

from pallasvm import export_kernels  # noqa: E402


def like(x):
  return jax.ShapeDtypeStruct(x.shape, x.dtype)


def add_one_100():
  """o = x + y over a 100-step grid, one f32 element per step."""
  def kernel(x_ref, y_ref, o_ref):
    o_ref[...] = x_ref[...] + y_ref[...]

  def fn(x, y):
    spec = pl.BlockSpec((1,), lambda i: (i,))
    return pl.pallas_call(kernel, out_shape=like(x), grid=(100,),
                          in_specs=[spec, spec], out_specs=spec)(x, y)

  x = jnp.zeros((100,), jnp.float32)
  return fn, (x, x)


def elementwise_8x128_1024():
  """An 8x128 f32 elementwise kernel (x * y + 1) over a 1024-step grid."""
  def kernel(x_ref, y_ref, o_ref):
    o_ref[...] = x_ref[...] * y_ref[...] + 1.0

  def fn(x, y):
    spec = pl.BlockSpec((8, 128), lambda i: (i, 0))
    return pl.pallas_call(kernel, out_shape=like(x), grid=(1024,),
                          in_specs=[spec, spec], out_specs=spec)(x, y)

  x = jnp.zeros((8 * 1024, 128), jnp.float32)
  return fn, (x, x)


def matmul_512_f32():
  """jax.experimental.pallas.ops.tpu.matmul, 512^3 f32, 128x128 blocks."""
  def fn(x, y):
    return tpu_matmul.matmul(x, y, block_shape=(128, 128), block_k=128)

  x = jnp.zeros((512, 512), jnp.float32)
  return fn, (x, x)


def matmul_1024(dtype, block: int):
  """jax.experimental.pallas.ops.tpu.matmul, 1024^3, block x block x block."""
  def fn(x, y):
    return tpu_matmul.matmul(x, y, block_shape=(block, block), block_k=block)

  x = jnp.zeros((1024, 1024), dtype)
  return fn, (x, x)


def matmul_1024_f32():
  """jax.experimental.pallas.ops.tpu.matmul, 1024^3 f32, 256x256x256 blocks."""
  return matmul_1024(jnp.float32, 256)


def matmul_1024_bf16():
  """jax.experimental.pallas.ops.tpu.matmul, 1024^3 bf16 (f32 accumulator),
  256x256x256 blocks."""
  return matmul_1024(jnp.bfloat16, 256)


FLASH_SHAPE = (1, 4, 2048, 128)  # batch, heads, sequence, head dim


def flash_attention_fwd(shape=FLASH_SHAPE):
  """jax.experimental.pallas.ops.tpu.flash_attention forward, f32, default
  block sizes (128), not causal, sm_scale = 1/sqrt(head dim)."""
  def fn(q, k, v):
    return tpu_flash.flash_attention(q, k, v, sm_scale=shape[-1] ** -0.5)

  x = jnp.zeros(shape, jnp.float32)
  return fn, (x, x, x)


KERNELS = (add_one_100, elementwise_8x128_1024, matmul_512_f32,
           matmul_1024_f32, matmul_1024_bf16, flash_attention_fwd)


def main():
  out = HERE / "kernels"
  out.mkdir(exist_ok=True)
  names = set(sys.argv[1:])
  for build in KERNELS:
    if names and build.__name__ not in names:
      continue
    fn, args = build()
    try:
      export_kernels(fn, *args, out_dir=out, name=build.__name__)
    except Exception as e:  # pylint: disable=broad-except
      print(f"FAILED {build.__name__}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}")
      continue
    print("wrote", out / f"{build.__name__}.json")


if __name__ == "__main__":
  main()
