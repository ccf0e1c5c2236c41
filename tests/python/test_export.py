"""Tests for tools/pallasvm/export.py: the pallas_call -> interchange exporter."""

import inspect
import json
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

from pallasvm import ExportError, export_kernels  # noqa: E402

SCHEMA = REPO / "format" / "kernel.fbs"
GOLDEN = REPO / "tests" / "golden"
FLATC = shutil.which("flatc")
needs_flatc = pytest.mark.skipif(FLATC is None, reason="flatc not installed")


def flatc_parse(path: pathlib.Path, tmp_path: pathlib.Path):
  """Asserts that flatc parses `path` against kernel.fbs without complaint."""
  result = subprocess.run(
      [FLATC, "-b", "-o", str(tmp_path), str(SCHEMA), str(path)],
      capture_output=True, text=True)
  assert result.returncode == 0 and not result.stderr.strip(), (
      result.stderr + result.stdout)


def line_of(marker: str) -> int:
  """The line of this file holding `marker` (a comment on the line)."""
  lines = pathlib.Path(__file__).read_text().splitlines()
  return next(i + 1 for i, l in enumerate(lines)
              if marker in l and "line_of(" not in l)


def load_npy(path: pathlib.Path) -> np.ndarray:
  array = np.load(path)
  return array.view(ml_dtypes.bfloat16) if array.dtype == np.dtype("V2") else array


def walk_eqns(jaxpr: dict):
  """Every equation of an exported jaxpr, sub-jaxprs included."""
  for eqn in jaxpr["eqns"]:
    yield eqn
    for param in eqn["params"]:
      for sub in param.get("jaxprs", []):
        yield from walk_eqns(sub)


def param(eqn: dict, name: str) -> dict:
  return next(p for p in eqn["params"] if p["name"] == name)


def add_kernel(x_ref, y_ref, o_ref):
  o_ref[...] = x_ref[...] + y_ref[...]


def add_vectors(x, y):
  return pl.pallas_call(add_kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype))(x, y)


# --- Whole kernels ------------------------------------------------------------


@needs_flatc
def test_add_vectors_exports_valid_json(tmp_path):
  x = jnp.arange(8, dtype=jnp.float32)
  [path] = export_kernels(add_vectors, x, x, out_dir=tmp_path)
  assert path.name == "add_kernel.json"
  flatc_parse(path, tmp_path / "bin")
  kernel = json.loads(path.read_text())
  assert kernel["version"] == 1
  assert kernel["name"] == "add_kernel"
  assert kernel["grid"] == []
  assert [e["primitive"] for e in kernel["jaxpr"]["eqns"]] == [
      "get", "get", "add", "swap"]
  assert kernel["source_line"] == line_of("pl.pallas_call(add_kernel, out_shape")


def test_add_vectors_expected_output_matches_jnp(tmp_path):
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.standard_normal(8).astype(np.float32))
  y = jnp.asarray(rng.standard_normal(8).astype(np.float32))
  paths = export_kernels(add_vectors, x, y, out_dir=tmp_path, name="kernel",
                         with_io=True)
  assert sorted(p.name for p in paths) == [
      "expected_0.npy", "input_0.npy", "input_1.npy", "kernel.json"]
  np.testing.assert_array_equal(np.load(tmp_path / "input_0.npy"), x)
  np.testing.assert_array_equal(np.load(tmp_path / "input_1.npy"), y)
  np.testing.assert_array_equal(np.load(tmp_path / "expected_0.npy"), x + y)


def test_golden_add_vectors_matches_jnp():
  case = GOLDEN / "add_vectors"
  x, y = load_npy(case / "input_0.npy"), load_npy(case / "input_1.npy")
  np.testing.assert_array_equal(load_npy(case / "expected_0.npy"), jnp.add(x, y))


@needs_flatc
@pytest.mark.parametrize(
    "case", sorted(p.parent.name for p in GOLDEN.glob("*/kernel.json")))
def test_golden_fixture_is_valid(case, tmp_path):
  case_dir = GOLDEN / case
  flatc_parse(case_dir / "kernel.json", tmp_path)
  kernel = json.loads((case_dir / "kernel.json").read_text())
  inputs = sorted(case_dir.glob("input_*.npy"))
  expected = sorted(case_dir.glob("expected_*.npy"))
  assert len(inputs) == len(kernel["in_types"])
  assert len(expected) == len(kernel["out_types"])
  for i, t in enumerate(kernel["in_types"]):
    assert list(load_npy(case_dir / f"input_{i}.npy").shape) == t["shape"]
  for i, t in enumerate(kernel["out_types"]):
    assert list(load_npy(case_dir / f"expected_{i}.npy").shape) == t["shape"]


def test_bf16_npy_is_saved_as_v2():
  header = (GOLDEN / "matmul_bf16" / "input_0.npy").read_bytes()[:128]
  assert b"'descr': '<V2'" in header


# --- Ref indexers ---------------------------------------------------------------


def test_dynamic_slice_start_operand(tmp_path):
  def kernel(x_ref, o_ref):
    i = pl.program_id(0)
    row = x_ref[pl.ds(i * 2, 2), :]  # dynamic start, static full slice
    o_ref[pl.ds(i, 2), pl.ds(0, 64, stride=2)] = row[:, ::2]
    o_ref[3, pl.ds(0, 4)] = x_ref[pl.ds(0, 4, stride=2), 5]

  def fn(x):
    return pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct((8, 128), x.dtype), grid=(2,),
        in_specs=[pl.BlockSpec((8, 128), lambda i: (0, 0))],
        out_specs=pl.BlockSpec((8, 128), lambda i: (0, 0)))(x)

  [path] = export_kernels(fn, jnp.zeros((8, 128), jnp.float32), out_dir=tmp_path)
  eqns = json.loads(path.read_text())["jaxpr"]["eqns"]
  gets = [e for e in eqns if e["primitive"] == "get"]
  swaps = [e for e in eqns if e["primitive"] == "swap"]

  # get: invars = [ref, *idx]; the dynamic start is the second operand.
  [indexer] = param(gets[0], "indexers")["indexers"]
  start, cols = indexer["dims"]
  assert start["kind"] == "SLICE" and start["size"] == 2
  assert start["start_operand"] == 1
  assert "var" in gets[0]["invars"][1]
  assert cols == {"kind": "SLICE", "start": 0, "start_operand": -1,
                  "size": 128, "stride": 1}

  # swap: invars = [ref, value, *idx]; the dynamic start is the third.
  [indexer] = param(swaps[0], "indexers")["indexers"]
  rows, cols = indexer["dims"]
  assert rows["start_operand"] == 2 and rows["size"] == 2
  assert swaps[0]["invars"][2] == {"var": swaps[0]["invars"][2]["var"]}
  assert cols == {"kind": "SLICE", "start": 0, "start_operand": -1,
                  "size": 64, "stride": 2}

  # Integer indices are operands too (here literals) and drop their dimension.
  [indexer] = param(gets[1], "indexers")["indexers"]
  rows, col = indexer["dims"]
  assert rows == {"kind": "SLICE", "start": 0, "start_operand": -1,
                  "size": 4, "stride": 2}
  assert col["kind"] == "INDEX"
  literal = gets[1]["invars"][col["start_operand"]]["literal"]
  assert np.frombuffer(bytes(literal["data"]), np.int32).item() == 5
  [indexer] = param(swaps[1], "indexers")["indexers"]
  assert indexer["dims"][0]["kind"] == "INDEX"
  assert indexer["dims"][0]["start_operand"] >= 2


def test_scalar_prefetch_index_map_reads_smem(tmp_path):
  def kernel(idx_ref, x_ref, o_ref):
    o_ref[...] = x_ref[...] + idx_ref[pl.program_id(0)].astype(jnp.float32)

  def fn(idx, x):
    return pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1, grid=(4,),
            in_specs=[pl.BlockSpec((8, 128), lambda i, idx: (idx[i], 0))],
            out_specs=pl.BlockSpec((8, 128), lambda i, idx: (i, 0))))(idx, x)

  idx = jnp.array([3, 2, 1, 0], jnp.int32)
  [path] = export_kernels(fn, idx, jnp.zeros((32, 128), jnp.float32),
                          out_dir=tmp_path)
  kernel = json.loads(path.read_text())
  assert kernel["num_scalar_prefetch"] == 1
  assert kernel["in_types"][0] == {"dtype": "S32", "shape": [4]}
  assert kernel["jaxpr"]["invars"][0]["type"]["memory_space"] == "SMEM"
  index_map = kernel["block_mappings"][0]["index_map"]
  grid_index, idx_ref = index_map["invars"]
  assert idx_ref["type"] == {"dtype": "S32", "memory_space": "SMEM", "shape": [4]}
  [get] = index_map["eqns"]
  assert get["invars"] == [{"var": idx_ref["id"]}, {"var": grid_index["id"]}]
  assert param(get, "indexers")["indexers"] == [{"dims": [
      {"kind": "INDEX", "start": 0, "start_operand": 1, "size": 1, "stride": 1}]}]


# --- What cannot be exported ----------------------------------------------------


def test_array_index_raises_naming_the_line(tmp_path):
  def kernel(x_ref, i_ref, o_ref):
    o_ref[...] = x_ref[i_ref[...]]  # ARRAY-INDEX

  def fn(x, i):
    return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((4, 128), x.dtype))(x, i)

  with pytest.raises(ExportError) as error:
    export_kernels(fn, jnp.zeros((16, 128)), jnp.arange(4), out_dir=tmp_path)
  message = str(error.value)
  assert message.startswith("get at ")
  assert f"test_export.py:{line_of('# ARRAY-INDEX')}" in message
  assert "array" in message
  assert not list(tmp_path.iterdir())


def test_dynamic_grid_is_exported_with_its_bound_operand(tmp_path):
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...]

  def fn(x, n):
    spec = pl.BlockSpec((8, 128), lambda i, j: (i, 0))
    return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
                          grid=(n, 2), in_specs=[spec], out_specs=spec,
                          input_output_aliases={0: 0})(x)

  x = jnp.arange(24 * 128, dtype=jnp.float32).reshape(24, 128)
  paths = export_kernels(fn, x, jnp.int32(2), out_dir=tmp_path, with_io=True)
  [path] = [p for p in paths if p.suffix == ".json"]
  kernel = json.loads(path.read_text())
  assert kernel["grid"] == [-1, 2]
  assert kernel["num_dynamic_grid_bounds"] == 1
  # The bound is operand 0; JAX's alias {0: 0} names x, now operand 1.
  assert [t["dtype"] for t in kernel["in_types"]] == ["S32", "F32"]
  assert kernel["input_output_aliases"] == [{"input": 1, "output": 0}]
  assert load_npy(path.parent / "input_0.npy") == 2
  # Rows 0..15 (two row blocks) copied; the aliased rest keeps x.
  np.testing.assert_array_equal(load_npy(path.parent / "expected_0.npy"), x)


def test_with_io_rejects_a_kernel_inside_a_branch(tmp_path):
  def fn(x):
    return jax.lax.cond(x[0] > 0, lambda x: add_vectors(x, x), lambda x: x, x)

  x = jnp.ones(8, jnp.float32)
  with pytest.raises(ExportError, match="inside a loop or a branch"):
    export_kernels(fn, x, out_dir=tmp_path, with_io=True)
  # Without reference outputs the kernel inside the branch exports fine.
  [path] = export_kernels(fn, x, out_dir=tmp_path)
  assert path.name == "add_kernel.json"


# --- Finding kernels --------------------------------------------------------------


def test_finds_kernels_in_jit_cond_and_custom_jvp(tmp_path):
  @jax.custom_jvp
  def custom(x):
    return add_vectors(x, x)

  custom.defjvp(lambda primals, tangents: (custom(*primals), tangents[0]))

  def fn(x):
    y = jax.lax.cond(x[0] > 0, lambda x: add_vectors(x, x), lambda x: x, x)
    return jax.jit(custom)(y) + add_vectors(x, y)

  paths = export_kernels(fn, jnp.ones(8, jnp.float32), out_dir=tmp_path)
  assert [p.name for p in paths] == [
      "add_kernel.json", "add_kernel_1.json", "add_kernel_2.json"]


def test_with_io_evaluates_through_jit_and_custom_jvp(tmp_path):
  @jax.custom_jvp
  def custom(x):
    return add_vectors(x, x)

  custom.defjvp(lambda primals, tangents: (custom(*primals), tangents[0]))

  def fn(x):
    return jax.jit(custom)(x * 2.0) - 1.0

  x = jnp.arange(8, dtype=jnp.float32)
  export_kernels(fn, x, out_dir=tmp_path, with_io=True)
  # The files hold the pallas_call's own operands and results, not fn's.
  np.testing.assert_array_equal(np.load(tmp_path / "input_0.npy"), x * 2)
  np.testing.assert_array_equal(np.load(tmp_path / "expected_0.npy"), x * 4)


def test_name_sets_the_file_stem_and_kernel_name_follows_pallas_call(tmp_path):
  def fn(x):
    return pl.pallas_call(add_kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
                          name="my add!")(x, x)

  x = jnp.ones(8, jnp.float32)
  [path] = export_kernels(fn, x, out_dir=tmp_path)
  assert path.name == "my_add.json"
  [path] = export_kernels(fn, x, out_dir=tmp_path, name="kernel")
  assert path.name == "kernel.json"
  assert json.loads(path.read_text())["name"] == "my_add"


# --- DMAs, semaphores, scratch, run_scoped ------------------------------------------


@needs_flatc
def test_dma_semaphore_and_scratch_export(tmp_path):
  def kernel(x_hbm, o_ref, buf, sem):
    copy = pltpu.make_async_copy(x_hbm.at[pl.ds(8, 8)], buf, sem)
    copy.start()
    copy.wait()

    def scoped(tmp):
      tmp[...] = buf[...] + 1.0
      o_ref[...] = tmp[...]

    pl.run_scoped(scoped, pltpu.VMEM((8, 128), jnp.float32))

  def fn(x):
    return pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct((8, 128), x.dtype),
        in_specs=[pl.BlockSpec(memory_space=pl.ANY)],
        scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32),
                        pltpu.SemaphoreType.DMA(())])(x)

  x = jnp.arange(16 * 128, dtype=jnp.float32).reshape(16, 128)
  paths = export_kernels(fn, x, out_dir=tmp_path, with_io=True)
  flatc_parse(paths[0], tmp_path / "bin")
  np.testing.assert_array_equal(np.load(tmp_path / "expected_0.npy"), x[8:] + 1)

  kernel = json.loads(paths[0].read_text())
  assert kernel["block_mappings"][0]["memory_space"] == "ANY"
  assert kernel["scratch_types"] == [
      {"dtype": "F32", "memory_space": "VMEM", "shape": [8, 128]},
      {"dtype": "S32", "memory_space": "SEMAPHORE", "shape": []}]
  eqns = list(walk_eqns(kernel["jaxpr"]))
  start = next(e for e in eqns if e["primitive"] == "dma_start")
  assert param(start, "src_operand")["i"] == 0
  assert param(start, "src_indexers")["indexers"][0]["dims"][0] == {
      "kind": "SLICE", "start": 8, "start_operand": -1, "size": 8, "stride": 1}
  assert param(start, "dst_operand")["i"] == 1
  assert param(start, "dst_indexers")["indexers"] == []
  assert param(start, "dst_sem_operand")["i"] == 2
  assert param(start, "src_sem_operand")["kind"] == "NONE"
  assert any(e["primitive"] == "dma_wait" for e in eqns)

  # run_scoped: the closed-over operands bind the leading invars of its
  # jaxpr; the allocated refs follow.
  scoped = next(e for e in eqns if e["primitive"] == "run_scoped")
  body = param(scoped, "jaxpr")["jaxprs"][0]
  assert len(body["invars"]) == len(scoped["invars"]) + 1
  assert body["invars"][-1]["type"]["memory_space"] == "VMEM"


def test_source_lines_point_into_the_kernel(tmp_path):
  x = jnp.arange(8, dtype=jnp.float32)
  [path] = export_kernels(add_vectors, x, x, out_dir=tmp_path)
  kernel_line = inspect.getsourcelines(add_kernel)[1] + 1
  for eqn in json.loads(path.read_text())["jaxpr"]["eqns"]:
    assert eqn["source_line"] == kernel_line
    assert eqn["source_function"] == "add_kernel"
    assert eqn["source_file"].endswith("test_export.py")


def test_padded_buffer_bounds_export_padded_shapes(tmp_path):
  # buffer_bounds="padded" under an abstract TPU v6e: the (10, 150) f32
  # scratch pads to (8, 128) tiles; SMEM scratch and the (8, 128) output
  # block, already whole tiles, carry no padded_shape.
  def kernel(o_ref, vmem, smem):
    vmem[...] = jnp.zeros(vmem.shape, jnp.float32)
    smem[0] = 1
    o_ref[...] = vmem[pl.ds(0, 8), pl.ds(0, 128)]

  f = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
      scratch_shapes=[pltpu.VMEM((10, 150), jnp.float32),
                      pltpu.SMEM((10,), jnp.int32)],
      interpret=pltpu.InterpretParams(buffer_bounds="padded"))
  mesh = jax.sharding.AbstractMesh(
      (), (), abstract_device=jax.sharding.AbstractDevice("TPU v6e", 1, "tpu"))
  with jax.sharding.use_abstract_mesh(mesh):
    [path] = export_kernels(f, out_dir=tmp_path)
  invars = json.loads(path.read_text())["jaxpr"]["invars"]
  assert [v["type"].get("padded_shape") for v in invars] == [
      None, [16, 256], None]
