"""Side-by-side timing of multi-device Pallas TPU kernels under jax.shard_map
on N forced CPU devices: JAX's TPU interpret mode against pallasvm through
the JAX bridge, in one run per device count (a child process each, since
JAX fixes its device count at start).

Workloads (the distributed documentation's kernels, as in
tests/python/test_jax_interpret_distributed_spec.py):
  - right_permute: one remote DMA of an 8x128 f32 block to the right
    neighbour, after a barrier with both neighbours;
  - all_gather: N - 1 steps of a ring, each forwarding an 8x128 block;
  - barrier_100: 100 rounds of the neighbour barrier (signal left and
    right through the barrier semaphore, wait for 2) in one call, so that
    time per call / 100 is what one barrier across the N devices costs.

  .venv/bin/python bench/compare_devices.py [--devices 4,8] [--rounds 7]
      [--out-md bench/RESULTS_devices.md]

Method: each pallasvm figure is the median over rounds of the mean of a
batch of calls (each waited for with block_until_ready), after a warm-up
call; interpret mode's is the median of 3 calls after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent

WORKLOADS = ("right_permute", "all_gather", "barrier_100")


def _child(num_devices: int, rounds: int) -> dict:
  os.environ["XLA_FLAGS"] = (
      f"--xla_force_host_platform_device_count={num_devices}")
  sys.path.insert(0, str(REPO / "tools"))
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  from jax.experimental import pallas as pl  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas import tpu as pltpu  # pylint: disable=g-import-not-at-top
  import pallasvm  # pylint: disable=g-import-not-at-top

  n = jax.device_count()
  assert n == num_devices, jax.devices()
  P = jax.sharding.PartitionSpec
  mesh = jax.make_mesh((n,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))

  def neighbours():
    me = lax.axis_index("x")
    return (me, lax.rem(me + n - 1, jnp.int32(n)),
            lax.rem(me + 1, jnp.int32(n)))

  def barrier(left, right):
    sem = pltpu.get_barrier_semaphore()
    for d in (left, right):
      pl.semaphore_signal(sem, inc=1, device_id=(d,),
                          device_id_type=pl.DeviceIdType.MESH)
    pl.semaphore_wait(sem, 2)

  def remote(src, dst, send, recv, d):
    return pltpu.make_async_remote_copy(
        src_ref=src, dst_ref=dst, send_sem=send, recv_sem=recv,
        device_id=(d,), device_id_type=pl.DeviceIdType.MESH)

  any_spec = pl.BlockSpec(memory_space=pl.ANY)

  def build(name, interpret):
    if name == "right_permute":
      def kernel(x_hbm, o_hbm, send, recv):
        _, left, right = neighbours()
        barrier(left, right)
        dma = remote(x_hbm, o_hbm, send, recv, right)
        dma.start()
        dma.wait()
      call = pl.pallas_call(
          kernel, out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
          in_specs=[any_spec], out_specs=any_spec,
          scratch_shapes=[pltpu.SemaphoreType.DMA] * 2,
          compiler_params=pltpu.CompilerParams(collective_id=0),
          interpret=interpret)
      spec, shape = P(None, "x"), (8, 128 * n)
    elif name == "all_gather":
      def kernel(x_hbm, o_hbm, local, send, recvs):
        step = pl.program_id(0)
        me, left, right = neighbours()
        slot = lax.rem(me - step + n, jnp.int32(n))

        @pl.when(step == 0)
        def _():
          barrier(left, right)
          own = pltpu.make_async_copy(x_hbm, o_hbm.at[me], local)
          own.start()
          own.wait()

        dma = remote(o_hbm.at[slot], o_hbm.at[slot], send, recvs.at[step],
                     right)
        dma.start()
        dma.wait()
      call = pl.pallas_call(
          kernel, out_shape=jax.ShapeDtypeStruct((n, 8, 128), jnp.float32),
          grid=(n - 1,), in_specs=[any_spec], out_specs=any_spec,
          scratch_shapes=([pltpu.SemaphoreType.DMA] * 2
                          + [pltpu.SemaphoreType.DMA((n - 1,))]),
          compiler_params=pltpu.CompilerParams(collective_id=0),
          interpret=interpret)
      spec, shape = P("x", None), (8 * n, 128)
    else:
      def kernel(x_ref, o_ref):
        _, left, right = neighbours()

        @pl.loop(0, 100)
        def _(i):
          del i
          barrier(left, right)
        o_ref[...] = x_ref[...]
      call = pl.pallas_call(
          kernel, out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
          compiler_params=pltpu.CompilerParams(collective_id=0),
          interpret=interpret)
      spec, shape = P(None, "x"), (8, 128 * n)
    f = jax.jit(jax.shard_map(call, mesh=mesh, in_specs=spec, out_specs=spec,
                              check_vma=False))
    x = jax.device_put(jnp.ones(shape, jnp.float32),
                       jax.sharding.NamedSharding(mesh, spec))
    return f, x

  def timed(f, x, calls):
    start = time.perf_counter()
    for _ in range(calls):
      jax.block_until_ready(f(x))
    return (time.perf_counter() - start) / calls

  out = {}
  for name in WORKLOADS:
    f, x = build(name, pltpu.InterpretParams())
    jax.block_until_ready(f(x))
    interp = statistics.median(timed(f, x, 1) for _ in range(3))
    with pallasvm.enabled():
      f, x = build(name, pltpu.InterpretParams())
      want = None
      jax.block_until_ready(f(x))
      batch = max(1, int(0.1 / max(timed(f, x, 1), 1e-6)))
      vm = statistics.median(timed(f, x, batch) for _ in range(rounds))
      assert pallasvm.stats()["lowerings"] > 0
      del want
    out[name] = {"interpret": interp, "pallasvm": vm}
    print(f"  {n} devices, {name}: interpret mode {interp * 1e3:.2f} ms,"
          f" pallasvm {vm * 1e6:.1f} us", file=sys.stderr, flush=True)
  return out


def _cpu() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "?"


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--devices", default="4,8")
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--out-md", default=str(HERE / "RESULTS_devices.md"))
  p.add_argument("--child", type=int, help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.child:
    print(json.dumps(_child(a.child, a.rounds)))
    return 0
  results = {}
  for n in [int(d) for d in a.devices.split(",")]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(n), "--rounds",
         str(a.rounds)], check=True, capture_output=True, text=True)
    sys.stderr.write(proc.stderr)
    results[n] = json.loads(proc.stdout.strip().splitlines()[-1])
  flags = pathlib.Path("/proc/cpuinfo").read_text() if pathlib.Path(
      "/proc/cpuinfo").exists() else ""
  isa = ", ".join(f for f in ("avx512f", "avx2", "fma")
                  if f" {f} " in flags or f" {f}\n" in flags)
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                          capture_output=True, text=True).stdout.strip()
  lines = [
      "# pallasvm vs JAX interpret mode on several devices",
      "",
      f"Generated by `.venv/bin/python bench/compare_devices.py "
      f"{' '.join(sys.argv[1:])}`".rstrip() + " (method in its docstring).",
      "",
      f"- Machine: {_cpu()} ({isa}), os.cpu_count()={os.cpu_count()}",
      f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit"
      f" {commit}",
      "",
      "| workload | devices | JAX TPU interpret mode | pallasvm (bridge) |"
      " interpret / pallasvm |",
      "|---|---|---|---|---|",
  ]
  for n, r in results.items():
    for name in WORKLOADS:
      t = r[name]
      lines.append(f"| {name} | {n} | {t['interpret'] * 1e3:.2f} ms |"
                   f" {t['pallasvm'] * 1e6:.1f} µs |"
                   f" {t['interpret'] / t['pallasvm']:,.0f}× |")
  lines += ["", "barrier_100 runs 100 barriers per call: one barrier "
            "across the devices costs its time / 100."]
  for n, r in results.items():
    lines.append(f"- {n} devices: {r['barrier_100']['pallasvm'] * 1e4:.2f}"
                 f" µs per barrier (pallasvm), "
                 f"{r['barrier_100']['interpret'] * 10:.2f} ms per barrier "
                 "(interpret mode)")
  pathlib.Path(a.out_md).write_text("\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
