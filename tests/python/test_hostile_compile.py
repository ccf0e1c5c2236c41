"""Hostile kernel files (issue 9): a real kernel exported from JAX, one field
changed the way a crafted or corrupted file would change it, compiled. Each
is a clear error naming what and where, never a crash, a hang or a runaway
allocation. One case per defect class the fuzzer and the mutation sweep
found in the compiler's lowering rules."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

import pallasvm
from pallasvm import bridge

if bridge.library_path() is None or not bridge.library_path().exists():
  pytest.skip("the bridge library (libpallasvm_xla.so) is not built",
              allow_module_level=True)

X = jnp.arange(8 * 128, dtype=jnp.float32).reshape(8, 128)


def exported(tmp_path, kernel, *args, out_shape=None, **call_kwargs):
  """The interchange (a dict) of `kernel` as a pallas_call on `args`."""
  out_shape = out_shape or jax.ShapeDtypeStruct(args[0].shape, args[0].dtype)
  fn = pl.pallas_call(kernel, out_shape=out_shape, **call_kwargs)
  [path] = pallasvm.export_kernels(fn, *args, out_dir=tmp_path, name="k")
  return json.loads(path.read_text())


def equations(jaxpr):
  """Every equation of a jaxpr dict, nested ones included."""
  for eqn in jaxpr["eqns"]:
    yield eqn
    for param in eqn.get("params", []):
      for sub in param.get("jaxprs", []):
        yield from equations(sub)


def the_eqn(kernel, primitive):
  found = [e for e in equations(kernel["jaxpr"]) if e["primitive"] == primitive]
  assert found, f"no {primitive} in the exported kernel"
  return found[0]


def param(eqn, name):
  [p] = [p for p in eqn["params"] if p["name"] == name]
  return p


def refused(kernel, *texts, error=pallasvm.CompileError):
  """Compiles `kernel`; asserts it is refused with `error` whose message
  holds every one of `texts`."""
  with pytest.raises(error) as info:
    pallasvm.compile_interchange(json.dumps(kernel).encode())
  message = str(info.value)
  for text in texts:
    assert text in message, message
  return message


def test_concatenate_dimension_out_of_range(tmp_path):
  def kernel(x_ref, o_ref):
    o_ref[...] = jnp.concatenate([x_ref[0:4, :], x_ref[4:8, :]], axis=0)
  k = exported(tmp_path, kernel, X)
  for bad in (2, 5, -1, 2**40):
    param(the_eqn(k, "concatenate"), "dimension")["i"] = bad
    refused(k, "`concatenate`", f"'dimension' = {bad} is not an axis",
            "test_hostile_compile.py:")


def test_concatenate_operand_wider_than_result(tmp_path):
  def kernel(x_ref, o_ref):
    o_ref[...] = jnp.concatenate([x_ref[0:4, :], x_ref[4:8, :]], axis=0)
  k = exported(tmp_path, kernel, X)
  eqn = the_eqn(k, "concatenate")
  eqn["outvars"][0]["type"]["shape"] = [8, 64]
  refused(k, "`concatenate`", "does not fit the result")


def test_dot_general_batch_dimensions_out_of_range(tmp_path):
  x = jnp.ones((2, 8, 128), jnp.float32)

  def kernel(x_ref, o_ref):
    o_ref[...] = jnp.einsum("bij,bkj->bik", x_ref[...], x_ref[...])
  k = exported(tmp_path, kernel, x,
               out_shape=jax.ShapeDtypeStruct((2, 8, 8), jnp.float32))
  eqn = the_eqn(k, "dot_general")
  param(eqn, "dimension_numbers.1.0")["ints"] = [7]
  refused(k, "`dot_general`", "dimension_numbers.1.0", "distinct axes")
  param(eqn, "dimension_numbers.1.0")["ints"] = [2]  # also contracted
  refused(k, "`dot_general`", "both contracted and batched")


def test_scan_with_fewer_outputs_than_carries(tmp_path):
  def kernel(x_ref, o_ref):
    o_ref[...] = jax.lax.fori_loop(0, 3, lambda i, c: c + x_ref[...],
                                   jnp.zeros((8, 128), jnp.float32))
  k = exported(tmp_path, kernel, X)
  loop = [e for e in equations(k["jaxpr"])
          if e["primitive"] in ("scan", "while")][0]
  if loop["primitive"] == "scan":
    param(loop, "num_carry")["i"] = 99
    refused(k, "`scan`", "'num_carry' = 99")
    param(loop, "num_carry")["i"] = -3
    refused(k, "`scan`", "'num_carry' = -3")
  else:
    param(loop, "cond_nconsts")["i"] = -1
    refused(k, "`while`", "'cond_nconsts' = -1")
    param(loop, "cond_nconsts")["i"] = 0
    param(loop, "body_nconsts")["i"] = 2**31
    refused(k, "`while`", "'body_nconsts' = 2147483648")


def test_while_with_negative_or_huge_constant_counts(tmp_path):
  def kernel(x_ref, o_ref):
    def body(c):
      i, v = c
      return i + 1, v + x_ref[...]
    _, v = jax.lax.while_loop(lambda c: c[0] < x_ref[0, 0].astype(jnp.int32),
                              body, (0, jnp.zeros((8, 128), jnp.float32)))
    o_ref[...] = v
  k = exported(tmp_path, kernel, X)
  loop = the_eqn(k, "while")
  param(loop, "cond_nconsts")["i"] = -1
  refused(k, "`while`", "'cond_nconsts' = -1")
  param(loop, "cond_nconsts")["i"] = 0
  param(loop, "body_nconsts")["i"] = 1000
  refused(k, "`while`", "'body_nconsts' = 1000")


def test_roll_without_its_shift_operand(tmp_path):
  def kernel(x_ref, o_ref):
    o_ref[...] = pltpu.roll(x_ref[...], 3, 1)
  k = exported(tmp_path, kernel, X)
  eqn = the_eqn(k, "roll")
  del eqn["invars"][1:]
  refused(k, "`roll`", "takes 2 operands", "has 1 operand")


def test_swap_without_results(tmp_path):
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...]
  k = exported(tmp_path, kernel, X)
  eqn = the_eqn(k, "swap")
  eqn["outvars"] = []
  refused(k, "`swap`", "1 result", "has 2 operands and 0 results")
  eqn["invars"] = []
  refused(k, "`swap`", "at least 2 operands")


def test_shape_whose_size_overflows(tmp_path):
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...] * 2
  k = exported(tmp_path, kernel, X)
  eqn = the_eqn(k, "mul")
  eqn["outvars"][0]["type"]["shape"] = [2**62, 2**62]
  refused(k, "`mul`", "more than 2^40 elements", error=pallasvm.CompileError)
  eqn["outvars"][0]["type"]["shape"] = [2**20, 2**19]  # 2 TiB of f32
  refused(k, "`mul`", "memory limit")


def test_static_ref_slice_bound_that_overflows(tmp_path):
  def kernel(x_ref, o_ref):
    o_ref[0:2, :] = x_ref[2:4, :]
    o_ref[2:8, :] = x_ref[2:8, :]
  k = exported(tmp_path, kernel, X)
  get = the_eqn(k, "get")
  dim = param(get, "indexers")["indexers"][0]["dims"][0]
  dim["start"], dim["stride"] = 2**62, 2**62
  refused(k, "`get`", "Out-of-bounds read", "dimension 0")
  dim["start"], dim["stride"], dim["size"] = 1, 2**62, 3
  refused(k, "`get`", "Out-of-bounds read")


def test_value_slice_bound_that_overflows(tmp_path):
  def kernel(x_ref, o_ref):
    v = x_ref[...]
    o_ref[...] = jnp.concatenate([v[2:6, :], v[0:4, :]], axis=0)
  k = exported(tmp_path, kernel, X)
  eqn = the_eqn(k, "slice")
  param(eqn, "start_indices")["ints"] = [2**62, 0]
  if not any(p["name"] == "strides" and p.get("ints") for p in eqn["params"]):
    eqn["params"] = [p for p in eqn["params"] if p["name"] != "strides"]
    eqn["params"].append({"name": "strides", "kind": "INTS", "ints": [1, 1]})
  param(eqn, "strides")["ints"] = [2**62, 1]
  refused(k, "`slice`", "slice out of bounds in dimension 0")


def test_grid_dimension_past_int32(tmp_path):
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...]
  k = exported(tmp_path, kernel, X, grid=(2,),
               in_specs=[pl.BlockSpec((4, 128), lambda i: (i, 0))],
               out_specs=pl.BlockSpec((4, 128), lambda i: (i, 0)))
  k["grid"] = [2**31 + 1]
  refused(k, "grid dimension 0 has size 2147483649; pallasvm runs grid "
          "dimensions of 1 to 2^31 - 1")


def test_tile_by_a_huge_repetition_count(tmp_path):
  x = jnp.ones((1, 128), jnp.float32)

  def kernel(x_ref, o_ref):
    o_ref[...] = jnp.tile(x_ref[...], (8, 1))
  k = exported(tmp_path, kernel, x,
               out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32))
  eqn = the_eqn(k, "tile")
  # 2^30 * 128 floats: past the memory limit before anything is emitted.
  param(eqn, "reps")["ints"] = [2**30, 1]
  eqn["outvars"][0]["type"]["shape"] = [2**30, 128]
  refused(k, "`tile`", "memory limit")
  # 2^21 rows of 512 B (1 GiB, within the limit): one store and one access
  # descriptor per repetition would be 2^21 of each, past the code budget
  # (compiler/program_builder.h), so the compiler stops there.
  param(eqn, "reps")["ints"] = [2**21, 1]
  eqn["outvars"][0]["type"]["shape"] = [2**21, 128]
  refused(k, "`tile`", "access or layout descriptors")
  # reps that do not produce the declared result.
  param(eqn, "reps")["ints"] = [3, 1]
  eqn["outvars"][0]["type"]["shape"] = [8, 128]
  refused(k, "`tile`", "is not the result")


def test_huge_scratch_buffer(tmp_path):
  def kernel(x_ref, o_ref, s_ref):
    s_ref[...] = x_ref[...]
    o_ref[...] = s_ref[...]
  k = exported(tmp_path, kernel, X,
               scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32)])
  k["jaxpr"]["invars"][-1]["type"]["shape"] = [2**38]  # 1 TiB of f32
  refused(k, "kernel argument 2", "(1 TiB)", "memory limit")


def test_refs_that_together_pass_the_memory_limit(tmp_path):
  def kernel(x_ref, o_ref, s_ref, t_ref):
    s_ref[...] = x_ref[...]
    t_ref[...] = s_ref[...]
    o_ref[...] = t_ref[...]
  k = exported(tmp_path, kernel, X,
               scratch_shapes=[pltpu.VMEM((8, 128), jnp.float32)] * 2)
  limit = bridge.memory_limit()
  # Two scratch buffers of 3/5 of the limit each.
  n = (limit * 3 // 5) // 4
  for var in k["jaxpr"]["invars"][-2:]:
    var["type"]["shape"] = [n]
  refused(k, "the kernel's refs need more than", "kernel argument 3")


def test_zero_size_literal_without_data(tmp_path):
  def kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...] + 1.0
  k = exported(tmp_path, kernel, X)
  eqn = the_eqn(k, "add")
  literal = next(a for a in eqn["invars"] if "literal" in a)["literal"]
  literal["type"]["shape"] = [0]
  del literal["data"]
  # Whatever the compiler says of a zero-size operand to an add of [8,128],
  # it says it as an error.
  refused(k, "`add`")
