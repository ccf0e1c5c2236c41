"""The bridge's on-disk module cache: a second process reads the module the
first one compiled, a corrupted entry is rebuilt, PALLASVM_NO_CACHE=1 turns
the cache off. Each process is a fresh interpreter (the in-process cache
would hide the disk); expected values are jnp's."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys
import numpy as np
import jax, jax.numpy as jnp
from jax.experimental import pallas as pl
import pallasvm

def kernel(x_ref, y_ref, o_ref):
  o_ref[...] = x_ref[...] * y_ref[...] + 1.0

def fn(x, y):
  spec = pl.BlockSpec((8, 128), lambda i: (i, 0))
  return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
                        grid=(4,), in_specs=[spec, spec], out_specs=spec)(x, y)

x = jnp.arange(32 * 128, dtype=jnp.float32).reshape(32, 128) / 7.0
y = jnp.full((32, 128), 0.5, jnp.float32)
with pallasvm.enabled():
  got = np.asarray(jax.jit(fn)(x, y))
want = np.asarray(jax.jit(lambda x, y: x * y + 1.0)(x, y))
print(json.dumps({"stats": pallasvm.stats(),
                  "equal": bool(np.array_equal(got, want))}))
"""


def run_child(env_extra):
  env = dict(os.environ)
  env.pop("PALLASVM_NO_CACHE", None)
  env.update(env_extra)
  env["PYTHONPATH"] = str(REPO / "tools")
  lib = REPO / "build" / "tools" / "jax_bridge" / "libpallasvm_xla.so"
  if "PALLASVM_LIBRARY" not in env and lib.exists():
    env["PALLASVM_LIBRARY"] = str(lib)
  out = subprocess.run([sys.executable, "-c", CHILD], env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_reads_the_module(tmp_path):
  env = {"PALLASVM_CACHE_DIR": str(tmp_path)}
  first = run_child(env)
  assert first["equal"]
  assert first["stats"]["lowerings"] == 1  # it ran on pallasvm
  assert first["stats"]["disk_cache_hits"] == 0
  entries = list(tmp_path.glob("*.pvm"))
  assert len(entries) == 1, entries
  second = run_child(env)
  assert second["equal"]
  assert second["stats"]["lowerings"] == 1
  assert second["stats"]["disk_cache_hits"] == 1


def test_corrupted_entry_is_rebuilt(tmp_path):
  env = {"PALLASVM_CACHE_DIR": str(tmp_path)}
  run_child(env)
  [entry] = tmp_path.glob("*.pvm")
  good = entry.read_bytes()
  entry.write_bytes(good[: len(good) // 2] + b"\xff" * 64)
  again = run_child(env)
  assert again["equal"]
  assert again["stats"]["disk_cache_hits"] == 0  # compiled anew
  assert entry.read_bytes() == good  # and stored whole again


def test_no_cache(tmp_path):
  env = {"PALLASVM_CACHE_DIR": str(tmp_path), "PALLASVM_NO_CACHE": "1"}
  for _ in range(2):
    r = run_child(env)
    assert r["equal"]
    assert r["stats"]["disk_cache_hits"] == 0
  assert not list(tmp_path.glob("*.pvm"))
