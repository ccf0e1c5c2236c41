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
from jax.experimental.pallas import tpu as pltpu  # noqa: E402
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


def semaphore_signal_wait_1024():
  """1024 semaphore_signal / semaphore_wait pairs in a fori_loop."""
  def kernel(o_ref, sem):
    def body(i, carry):
      pl.semaphore_signal(sem, 1)
      pl.semaphore_wait(sem, 1)
      return carry
    jax.lax.fori_loop(0, 1024, body, 0)
    o_ref[0] = 0

  def fn():
    return pl.pallas_call(
        kernel, out_specs=pl.BlockSpec(memory_space=pltpu.SMEM),
        out_shape=jax.ShapeDtypeStruct((1,), jnp.int32),
        scratch_shapes=[pltpu.SemaphoreType.REGULAR])()

  return fn, ()


def vmem_dma_8x128_1024():
  """1024 VMEM -> VMEM DMAs of 8x128 f32 (4 KiB), each started and waited
  for, in a fori_loop."""
  def kernel(x_ref, o_ref, sem):
    def body(i, carry):
      pltpu.async_copy(x_ref, o_ref, sem).wait()
      return carry
    jax.lax.fori_loop(0, 1024, body, 0)

  def fn(x):
    return pl.pallas_call(kernel, out_shape=like(x),
                          scratch_shapes=[pltpu.SemaphoreType.DMA])(x)

  return fn, (jnp.zeros((8, 128), jnp.float32),)


def double_buffered_copy_256():
  """A manually double-buffered HBM -> VMEM copy: at grid step i the DMA of
  block i + 1 runs while block i is used; 256 blocks of 8x128 f32."""
  nblocks = 256

  def kernel(x_hbm, o_ref, buf, sems):
    i = pl.program_id(0)

    def fetch(block, slot):
      return pltpu.make_async_copy(x_hbm.at[pl.ds(block * 8, 8)],
                                   buf.at[slot], sems.at[slot])

    @pl.when(i == 0)
    def _():
      fetch(0, 0).start()

    @pl.when(i + 1 < nblocks)
    def _():
      fetch(i + 1, 1 - i % 2).start()

    fetch(i, i % 2).wait()
    o_ref[...] = buf[i % 2] + 1.0

  def fn(x):
    return pl.pallas_call(
        kernel, grid=(nblocks,),
        in_specs=[pl.BlockSpec(memory_space=pl.ANY)],
        out_specs=pl.BlockSpec((8, 128), lambda i: (i, 0)),
        out_shape=like(x),
        scratch_shapes=[pltpu.VMEM((2, 8, 128), jnp.float32),
                        pltpu.SemaphoreType.DMA((2,))])(x)

  return fn, (jnp.zeros((nblocks * 8, 128), jnp.float32),)


def emit_pipeline_matmul_512():
  """An emit_pipeline matmul (the pipelining documentation's pattern), 512^3
  f32, 128x128x128 blocks, HBM operands."""
  def kernel(x_hbm, y_hbm, o_hbm):
    def body(x_ref, y_ref, o_ref):
      @pl.when(pl.program_id(2) == 0)
      def _():
        o_ref[...] = jnp.zeros_like(o_ref)

      o_ref[...] += x_ref[...] @ y_ref[...]

    pltpu.emit_pipeline(
        body, grid=(4, 4, 4),
        in_specs=[pl.BlockSpec((128, 128), lambda i, j, k: (i, k)),
                  pl.BlockSpec((128, 128), lambda i, j, k: (k, j))],
        out_specs=pl.BlockSpec((128, 128), lambda i, j, k: (i, j)),
    )(x_hbm, y_hbm, o_hbm)

  def fn(x, y):
    spec = pl.BlockSpec(memory_space=pl.ANY)
    with tpu_mesh():
      return pl.pallas_call(kernel, in_specs=[spec, spec], out_specs=spec,
                            out_shape=like(x))(x, y)

  x = jnp.zeros((512, 512), jnp.float32)
  return fn, (x, x)


def core_map_add_one_2_cores():
  """pl.kernel over a 2-core TensorCore mesh: the core_map documentation's
  add_one, an emit_pipeline whose first dimension the two cores split
  (core_axis_name, PARALLEL), over 256x1024 f32 in 8x128 blocks (128 per
  core). Not exported for the C++ benchmark: the exporter does not walk
  core_map kernels yet, so compare.py times it through the bridge only."""
  mesh = pltpu.create_tensorcore_mesh("core", num_cores=2)

  def body(in_vmem, out_vmem):
    out_vmem[...] = in_vmem[...] + 1

  def kernel(x_hbm, o_hbm):
    rows, cols = x_hbm.shape
    pltpu.emit_pipeline(
        body, grid=(rows // 8, cols // 128),
        in_specs=[pl.BlockSpec((8, 128), lambda i, j: (i, j))],
        out_specs=[pl.BlockSpec((8, 128), lambda i, j: (i, j))],
        core_axis_name="core",
        dimension_semantics=(pltpu.PARALLEL, pltpu.ARBITRARY),
    )(x_hbm, o_hbm)

  def fn(x):
    with tpu_mesh():
      return pl.kernel(kernel, out_type=like(x), mesh=mesh,
                       scratch_types=[])(x)

  return fn, (jnp.zeros((256, 1024), jnp.float32),)


PAGED = dict(batch=8, heads=8, kv_heads=2, head_dim=128, page_size=16,
             total_pages=64, pages_per_seq=8, block=4)


def paged_attention_inputs(batch, heads, kv_heads, head_dim, page_size,
                           total_pages, pages_per_seq, block=None):
  """Decode inputs: one query token per sequence, lengths spread over the
  page table's tokens, a random page table."""
  del block
  k0, k1, k2, k3 = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(k0, (batch, heads, head_dim), jnp.float32)
  k = jax.random.normal(k1, (kv_heads, total_pages, page_size, head_dim),
                        jnp.float32)
  v = jax.random.normal(k2, (kv_heads, total_pages, page_size, head_dim),
                        jnp.float32)
  lengths = jnp.linspace(37, pages_per_seq * page_size, batch).astype(
      jnp.int32)
  pages = jax.random.permutation(k3, total_pages)[:batch * pages_per_seq]
  return q, k, v, lengths, pages.reshape(batch, pages_per_seq).astype(
      jnp.int32)


def paged_attention_decode(shape=None):
  """jax.experimental.pallas.ops.tpu.paged_attention, decode: batch 8, 8
  query heads over 2 KV heads, head dim 128, 16-token pages, 8 pages (128
  tokens) per sequence, 4 pages per compute block, f32."""
  from jax.experimental.pallas.ops.tpu.paged_attention import paged_attention  # pylint: disable=g-import-not-at-top
  shape = shape or PAGED

  def fn(q, k, v, lengths, pages):
    return paged_attention(q, k, v, lengths, pages,
                           pages_per_compute_block=shape["block"])

  return fn, paged_attention_inputs(**shape)


def tpu_mesh():
  """emit_pipeline reads the TPU's tiling while it traces."""
  return jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh(
      (), (), abstract_device=jax.sharding.AbstractDevice("TPU v6e", 1, "tpu")))


KERNELS = (add_one_100, elementwise_8x128_1024, matmul_512_f32,
           matmul_1024_f32, matmul_1024_bf16, flash_attention_fwd,
           semaphore_signal_wait_1024, vmem_dma_8x128_1024,
           double_buffered_copy_256, emit_pipeline_matmul_512,
           paged_attention_decode)
KERNELS_WITH_INPUTS = (paged_attention_decode,)


def main():
  out = HERE / "kernels"
  out.mkdir(exist_ok=True)
  names = set(sys.argv[1:])
  for build in KERNELS:
    if names and build.__name__ not in names:
      continue
    fn, args = build()
    # Kernels whose integer inputs matter go with their inputs, in a
    # folder of their own (kernels_bench reads them from there).
    with_io = build in KERNELS_WITH_INPUTS
    try:
      with tpu_mesh():
        export_kernels(fn, *args, out_dir=out / build.__name__ if with_io
                       else out, name=build.__name__, with_io=with_io)
    except Exception as e:  # pylint: disable=broad-except
      print(f"FAILED {build.__name__}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}")
      continue
    print("wrote", out / f"{build.__name__}.json")


if __name__ == "__main__":
  main()
