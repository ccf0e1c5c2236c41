"""Exports the pallas_calls of a JAX function to the kernel interchange.

The interchange is `format/kernel.fbs`, written in FlatBuffers' own JSON form
(one `<kernel name>.json` per pallas_call) so that the C++ compiler reads it
through the schema and golden fixtures stay diffable text. Everything is taken
from the structured jaxpr, never from printed text: printing drops index maps,
slice strides and array literals.

What this module knows: the layout of a pallas_call equation in the installed
JAX (its `jaxpr`, `grid_mapping`, `compiler_params` ... params), how ref
accesses (`get`, `swap`, `addupdate`, masked loads/stores, semaphores, DMAs)
flatten their indexers into operands, and how to run one pallas_call under
JAX's TPU interpret mode to produce reference outputs. What it must not know:
anything about how the C++ side compiles or runs a kernel.

Encoding rules the compiler relies on (see also format/kernel.fbs):

* Var ids are unique within one Kernel. A jaxpr that appears twice (JAX caches
  and shares jaxprs) is exported twice with fresh ids.
* A sub-jaxpr that is an open `Jaxpr` with constvars (e.g. `run_scoped`) is
  exported with its constvars prepended to its invars, so that the equation's
  operands bind, in order, the jaxpr's invars.
* Params are encoded by value type: None -> NONE, bool -> BOOL, enum -> STRING
  (the member name), int -> INT, float -> FLOAT, str -> STRING, numpy dtype ->
  DTYPE, jaxpr -> JAXPR, tuple of jaxprs -> JAXPRS, flat tuple of ints/bools ->
  INTS (bools as 0/1). Any other tuple (or NamedTuple) is flattened into one
  param per element named `<name>.<index or field>`, recursively; e.g.
  dot_general's `dimension_numbers` becomes `dimension_numbers.0.0` (lhs
  contracting dims), `.0.1` (rhs contracting), `.1.0` (lhs batch), `.1.1`
  (rhs batch).
* Ref accesses: the `tree` / `args_tree` PyTreeDef params are replaced by
  INDEXERS params and INT operand positions; see `_REF_ACCESS_LAYOUTS`.
* Skipped params (not exported): `_SKIPPED_PARAMS` by name, and sharding
  objects by type. Everything else of an unknown type raises ExportError.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import os
import pathlib
import re
import string
import sys
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax._src import core as jax_core
from jax._src import source_info_util
from jax._src import tree_util
from jax._src.indexing import Slice
from jax._src.pallas import core as pallas_core
from jax._src.pallas import pallas_call as pallas_call_lib
from jax._src.pallas.mosaic import core as tpu_core
from jax._src.state import indexing as state_indexing
from jax._src.state import types as state_types
from jax.experimental.pallas import tpu as pltpu

from pallasvm.errors import ExportError

INTERCHANGE_VERSION = 1  # Kernel.version; bump with format/kernel.fbs.




# ---------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------

_DTYPE_NAMES = {
    np.dtype(np.bool_): "PRED",
    np.dtype(np.int8): "S8",
    np.dtype(np.int16): "S16",
    np.dtype(np.int32): "S32",
    np.dtype(np.int64): "S64",
    np.dtype(np.uint8): "U8",
    np.dtype(np.uint16): "U16",
    np.dtype(np.uint32): "U32",
    np.dtype(np.uint64): "U64",
    np.dtype(np.float16): "F16",
    np.dtype(jax.numpy.bfloat16): "BF16",
    np.dtype(np.float32): "F32",
    np.dtype(np.float64): "F64",
}

# Semaphores have extended dtypes that the schema has no names for. TPUs hold
# them as int32 words (`physical_element_aval`), so they travel as S32; the
# SEMAPHORE memory space of their refs says what they are.
_SEMAPHORE_DTYPE_NAME = "S32"

_MEMORY_SPACE_NAMES = {
    None: "DEFAULT",
    pallas_core.MemorySpace.DEFAULT: "DEFAULT",
    pallas_core.MemorySpace.ANY: "ANY",
    tpu_core.MemorySpace.HBM: "HBM",
    tpu_core.MemorySpace.VMEM: "VMEM",
    tpu_core.MemorySpace.SMEM: "SMEM",
    tpu_core.MemorySpace.SEMAPHORE: "SEMAPHORE",
    tpu_core.MemorySpace.VMEM_SHARED: "VMEM_SHARED",
}


def _dtype_name(dtype, where: str) -> str:
  if jax.numpy.issubdtype(dtype, pallas_core.semaphore_dtype):
    return _SEMAPHORE_DTYPE_NAME
  try:
    return _DTYPE_NAMES[np.dtype(dtype)]
  except (KeyError, TypeError):
    raise ExportError(f"{where}: dtype {dtype} has no interchange DType") from None


def _memory_space_name(memory_space, where: str) -> str:
  try:
    return _MEMORY_SPACE_NAMES[memory_space]
  except (KeyError, TypeError):
    raise ExportError(
        f"{where}: memory space {memory_space!r} has no interchange MemorySpace"
    ) from None


def _static_shape(shape, where: str) -> list[int]:
  if not all(isinstance(d, (int, np.integer)) for d in shape):
    raise ExportError(f"{where}: shape {shape} is not static")
  return [int(d) for d in shape]


def _is_key(aval) -> bool:
  """Whether `aval` (an array or a Ref) holds jax.random keys."""
  if isinstance(aval, state_types.AbstractRef):
    aval = aval.inner_aval
  dtype = getattr(aval, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _key_shape(aval) -> tuple[int, ...]:
  """The trailing dims a key array's physical form adds (threefry: (2,))."""
  if isinstance(aval, state_types.AbstractRef):
    aval = aval.inner_aval
  return tuple(aval.dtype._impl.key_shape)  # pylint: disable=protected-access


def _type(aval, where: str) -> dict:
  """A `Type` table for an abstract value (an array or a Ref). Arrays of
  jax.random keys travel as their physical form, the uint32 key data
  (`jax.random.key_data`): key<fry>[n] is u32[n, 2]."""
  memory_space = "VALUE"
  if isinstance(aval, state_types.AbstractRef):
    memory_space = _memory_space_name(aval.memory_space, where)
    aval = aval.inner_aval
  if isinstance(aval, jax_core.ShapedArray) and _is_key(aval):
    aval = jax_core.physical_aval(aval)
  if not isinstance(aval, jax_core.ShapedArray):
    raise ExportError(f"{where}: abstract value {aval} is not an array or a Ref")
  out = {
      "dtype": _dtype_name(aval.dtype, where),
      "shape": _static_shape(aval.shape, where),
  }
  if memory_space != "VALUE":
    out["memory_space"] = memory_space
  if aval.weak_type:
    out["weak_type"] = True
  return out


def _literal(value, aval, where: str) -> dict:
  """A `Literal` table: the value's raw little-endian bytes."""
  dtype = np.dtype(aval.dtype)
  data = np.broadcast_to(np.asarray(value, dtype=dtype), aval.shape)
  data = np.array(data, dtype=dtype.newbyteorder("<"), order="C")
  return {"type": _type(aval, where), "data": list(data.tobytes())}


# ---------------------------------------------------------------------------
# Source locations
# ---------------------------------------------------------------------------

# Kernels shipped inside JAX (pallas/ops) are user code for our purposes, but
# JAX's own heuristic treats every file under jax/ as internal.
_PALLAS_OPS_DIR = "/jax/experimental/pallas/ops/"


def _user_frame(source_info) -> source_info_util.Frame | None:
  """The innermost frame of user code that created an equation."""
  traceback = getattr(source_info, "traceback", None)
  if traceback is None:
    return None
  codes, lastis = traceback.raw_frames()
  for code, lasti in zip(codes, lastis):
    file_name = code.co_filename
    if _PALLAS_OPS_DIR in file_name or source_info_util.is_user_filename(
        file_name
    ):
      return source_info_util.raw_frame_to_frame(code, lasti)
  return None


def _display_path(file_name: str) -> str:
  """The path as exported: relative to its installed-packages directory if it
  is in one (`jax/experimental/pallas/ops/tpu/matmul.py`), else to the working
  directory when under it, else absolute. Keeps fixtures independent of
  where the tree lives."""
  return _display_path_in(file_name, os.getcwd(), tuple(sys.path))


@functools.lru_cache(maxsize=4096)
def _display_path_in(file_name: str, cwd_name: str,
                     search_path: tuple[str, ...]) -> str:
  # Memoized: a kernel's equations name the same few files hundreds of
  # times, and pathlib's parsing was a quarter of flash attention's export.
  path = pathlib.Path(file_name)
  cwd = pathlib.Path(cwd_name)
  roots = [pathlib.Path(p) for p in search_path
           if p.endswith(("site-packages", "dist-packages"))]
  if cwd != pathlib.Path(cwd.anchor):
    roots.append(cwd)
  for root in roots:
    try:
      return str(path.relative_to(root))
    except ValueError:
      continue
  return file_name


def _location(source_info) -> str:
  frame = _user_frame(source_info)
  if frame is None:
    return "<unknown location>"
  return f"{_display_path(frame.file_name)}:{frame.start_line}"


# ---------------------------------------------------------------------------
# Ref accesses: indexers and operand positions
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Operand:
  """Stands for the equation operand at `position` when a tree is unflattened."""
  position: int


def _state_access_layout(num_leading: int) -> Callable:
  """get: [ref, *idx]; swap and addupdate: [ref, value, *idx]."""
  def layout(tree, operands):
    return [("indexers", tree_util.tree_unflatten(tree, operands[num_leading:]))]
  return layout


def _tree_layout(*names: str) -> Callable:
  """The tree flattens a sequence of arguments; names them in order."""
  def layout(tree, operands):
    return list(zip(names, tree_util.tree_unflatten(tree, operands), strict=True))
  return layout


def _dma_layout(tree, operands):
  """(src, dst, dst_sem, src_sem, device_id); every ref present gets both
  `<slot>_operand` and `<slot>_indexers` (empty if it is not indexed)."""
  names = ("src", "dst", "dst_sem", "src_sem", "device_id")
  return [
      (name, state_types.TransformedRef(arg, ())
       if isinstance(arg, _Operand) and name != "device_id" else arg)
      for name, arg in zip(names, tree.unflatten(operands), strict=True)
  ]


# For each primitive whose operands are described by a PyTreeDef param: that
# param's name, and how to split the operands into named slots. A slot holding
# a tuple of ref transforms becomes an INDEXERS param named after the slot; a
# slot holding one operand becomes an INT param `<slot>_operand` with its
# position in the equation's invars (NONE if the slot is absent); a slot
# holding a transformed ref becomes both `<slot>_operand` and
# `<slot>_indexers`. get/swap/addupdate have a fixed [ref, (value,) *idx]
# layout, so they only get `indexers`.
_REF_ACCESS_LAYOUTS: dict[str, tuple[str, Callable]] = {
    "get": ("tree", _state_access_layout(1)),
    "swap": ("tree", _state_access_layout(2)),
    "addupdate": ("tree", _state_access_layout(2)),
    "masked_load": ("args_tree", _tree_layout("ref", "indexers", "mask", "other")),
    "masked_swap": ("args_tree", _tree_layout("ref", "indexers", "value", "mask")),
    "semaphore_read": ("args_tree", _tree_layout("sem", "indexers")),
    "semaphore_signal": ("args_tree", _tree_layout(
        "sem", "indexers", "inc", "device_id", "core_index")),
    "semaphore_wait": ("args_tree", _tree_layout(
        "sem", "indexers", "value", "decrement")),
    "dma_start": ("tree", _dma_layout),
    "dma_wait": ("tree", _dma_layout),
}


def _is_transform_tuple(obj) -> bool:
  return isinstance(obj, tuple) and all(
      not isinstance(t, (_Operand, tuple)) and hasattr(t, "transform_type")
      for t in obj)


# ---------------------------------------------------------------------------
# jax.random keys
# ---------------------------------------------------------------------------

# Primitives on jax.random keys. Each is exported as a `closed_call` of the
# jaxpr of what JAX's own lowering computes for it on the keys' physical
# form (jax/_src/random/prng.py: `random_bits_lowering` and friends call the
# key implementation's `random_bits`, `seed`, `fold_in`, `split`), so a
# kernel's jax.random is JAX's threefry code, bit for bit; for the keys of
# pltpu's PRNG the implementation calls prng_seed / prng_random_bits.
_KEY_PRIMITIVES = frozenset({
    "random_seed", "random_bits", "random_wrap", "random_unwrap",
    "random_fold_in", "random_split", "prng_split", "prng_join",
})

# Primitives that may hold keys without looking at them: they only move
# values or call sub-jaxprs (whose equations are checked themselves).
_KEY_TRANSPARENT_PRIMITIVES = frozenset({
    "get", "swap", "squeeze", "expand_dims", "concatenate", "copy", "copy_p",
    "slice", "reshape", "broadcast_in_dim", "split", "stack", "unstack",
})


def mesh_axes(params) -> list[tuple[str, int]]:
  """The mesh axes around a pallas_call being lowered (shard_map's, from
  the lowering's axis env), (name, size) in mesh order: all but those its
  grid or its core mesh names."""
  mesh = params.get("mesh")
  own = set(params["grid_mapping"].grid_names or ())
  own |= set(getattr(mesh, "axis_names", ()) or ())
  return [(name, int(size))
          for name, size in jax_core.get_axis_env().axis_sizes.items()
          if name not in own]


def _positional_debug_format(fmt: str, in_tree, where: str):
  """jax.debug.print's format with every field made `{}`, and the operands
  (indices into the equation's flat operands) in the order its fields name
  them: keyword fields ({x}) and numbered ones ({0}) become positional, so
  that the VM fills fields in order. Fields with a format spec or
  conversion are kept as written (the compiler refuses them by name)."""
  args, kwargs = tree_util.tree_unflatten(in_tree,
                                          list(range(in_tree.num_leaves)))
  out, order, auto = [], [], 0
  for text, field, spec, conversion in string.Formatter().parse(fmt):
    out.append(text.replace("{", "{{").replace("}", "}}"))
    if field is None:
      continue
    if spec or conversion:
      out.append("{" + field + ("!" + conversion if conversion else "")
                 + (":" + spec if spec else "") + "}")
      continue
    if field == "":
      leaf = args[auto] if auto < len(args) else None
      auto += 1
    elif field.isdigit():
      leaf = args[int(field)] if int(field) < len(args) else None
    else:
      leaf = kwargs.get(field)
    if not isinstance(leaf, int):
      raise ExportError(f"{where}: debug_print field {{{field}}} names no"
                        " single array argument")
    out.append("{}")
    order.append(leaf)
  return "".join(out), order


def _physical_key_params(eqn, params: dict) -> dict:
  """Params of a shape primitive on keys, for their physical form: the key
  data's trailing dims are taken whole (squeeze, expand_dims and
  concatenate name leading dims only, so they keep theirs)."""
  name = eqn.primitive.name
  key = next((v.aval for v in [*eqn.invars, *eqn.outvars] if _is_key(v.aval)),
             None)
  if key is None:
    return params
  ks = _key_shape(key)
  params = dict(params)
  if name == "slice":
    params["start_indices"] = (*params["start_indices"], *[0] * len(ks))
    params["limit_indices"] = (*params["limit_indices"], *ks)
    if params.get("strides") is not None:
      params["strides"] = (*params["strides"], *[1] * len(ks))
  elif name == "reshape":
    if params.get("dimensions") is not None:
      raise ExportError(f"{name} of jax.random keys with dimensions")
    params["new_sizes"] = (*params["new_sizes"], *ks)
  elif name == "broadcast_in_dim":
    rank = len(params["shape"])
    params["shape"] = (*params["shape"], *ks)
    params["broadcast_dimensions"] = (*params["broadcast_dimensions"],
                                      *range(rank, rank + len(ks)))
  return params


def _key_function(eqn) -> Callable:
  """The function on physical key data that JAX lowers `eqn` to."""
  from jax._src.random import prng as jax_prng  # pylint: disable=g-import-not-at-top
  from jax._src.pallas.mosaic import random as tpu_random  # pylint: disable=g-import-not-at-top
  name, params = eqn.primitive.name, eqn.params
  avals = [v.aval for v in eqn.invars]
  if name in ("random_wrap", "random_unwrap"):
    return lambda x: x
  if name == "random_seed":
    return jax_prng.iterated_vmap_unary(avals[0].ndim, params["impl"].seed)
  impl = avals[0].dtype._impl if name != "prng_join" else params["impl"]  # pylint: disable=protected-access
  if name == "random_bits":
    return jax_prng.iterated_vmap_unary(
        avals[0].ndim,
        lambda k: impl.random_bits(k, params["bit_width"], params["shape"]))
  if name == "random_split":
    return jax_prng.iterated_vmap_unary(
        avals[0].ndim, lambda k: impl.split(k, params["shape"]))
  if name == "random_fold_in":
    fold_in = impl.fold_in
    if tpu_random.is_pallas_impl(impl):
      # pltpu's fold_in takes a typed key (it unwraps it with prng_split).
      def fold_in(data, msgs):
        key = impl.fold_in(jax_prng.random_wrap(data, impl=impl), msgs)
        return jax_prng.random_unwrap(key)
    return jax_prng.iterated_vmap_binary_bcast(avals[0].shape, avals[1].shape,
                                               fold_in)
  if name == "prng_split":  # pltpu.unwrap_pallas_seed: key (1, N) -> N scalars
    return lambda data: tuple(data[0, i] for i in range(data.shape[1]))
  if name == "prng_join":  # pltpu.wrap_pallas_seed
    return lambda *seeds: jax.numpy.stack(
        [jax.lax.convert_element_type(s, np.uint32) for s in seeds]).reshape(
            impl.key_shape)
  raise AssertionError(name)


def _physical(aval):
  return jax_core.physical_aval(aval) if _is_key(aval) else aval


def _key_call_jaxpr(eqn, where: str):
  """The ClosedJaxpr of `_key_function(eqn)` on the operands' physical avals,
  with results in the physical types of the equation's results."""
  fn = _key_function(eqn)
  out_avals = [_physical(v.aval) for v in eqn.outvars]

  def physical_fn(*args):
    outs = fn(*args)
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    if len(outs) != len(out_avals):
      raise ExportError(f"{where}: the key implementation gives {len(outs)}"
                        f" results, the equation {len(out_avals)}")
    fixed = []
    for x, aval in zip(outs, out_avals):
      x = jax.numpy.asarray(x)
      if x.dtype != aval.dtype:  # e.g. an int32 seed as uint32 key data
        x = (jax.lax.bitcast_convert_type(x, aval.dtype)
             if x.dtype.itemsize == np.dtype(aval.dtype).itemsize
             else jax.lax.convert_element_type(x, aval.dtype))
      fixed.append(jax.numpy.reshape(x, aval.shape))
    return fixed

  in_specs = [jax.ShapeDtypeStruct(_physical(v.aval).shape,
                                   _physical(v.aval).dtype)
              for v in eqn.invars]
  try:
    return jax.make_jaxpr(physical_fn)(*in_specs)
  except ExportError:
    raise
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise ExportError(f"{where}: JAX's implementation of {eqn.primitive.name}"
                      f" could not be traced: {e}") from None


# ---------------------------------------------------------------------------
# Params
# ---------------------------------------------------------------------------

# Params that carry nothing a CPU interpreter needs: shardings, layouts and
# meshes of pjit, the differentiation rules of custom_jvp/custom_vjp calls
# (Python callables), debug info.
_SKIPPED_PARAMS = frozenset({
    "in_shardings", "out_shardings", "in_layouts", "out_layouts", "ctx_mesh",
    "compiler_options_kvs", "jvp_jaxpr_fun", "jvp_jaxpr_thunk",
    "fwd_jaxpr_thunk", "bwd", "out_trees", "debug_info",
})


def _is_sharding(value) -> bool:
  return isinstance(value, jax.sharding.Sharding) or type(value).__name__ in (
      "UnspecifiedValue", "AbstractMesh", "Mesh", "Layout", "Format")


def _is_jaxpr(value) -> bool:
  return isinstance(value, (jax_core.Jaxpr, jax_core.ClosedJaxpr))


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer, bool, np.bool_)) and not isinstance(
      value, enum.Enum)


# ---------------------------------------------------------------------------
# The kernel exporter
# ---------------------------------------------------------------------------


class _KernelExporter:
  """Builds the JSON form of one Kernel table; owns the Var id counter.
  `buffer_bounds` is interpret mode's InterpretParams.buffer_bounds: with
  "padded", the refs that allocate a buffer carry the shape interpret mode
  allocates (see _pad)."""

  def __init__(self, buffer_bounds: str = "logical"):
    self._padded = buffer_bounds == "padded"
    self._next_id = 0
    # The grid dimension that `program_id` / `num_programs` axis i of the
    # kernel body names: i itself, unless vmap added grid dimensions (the
    # kernel does not see those; see `kernel`).
    self._kernel_grid_axes: list[int] | None = None
    # The core axis names of a core_map kernel (its TensorCore mesh's).
    self._core_axes: frozenset = frozenset()
    # The mesh axes around the call (shard_map), (name, size) in order:
    # lax.axis_index of one is PROGRAM_ID past the grid's axes.
    self._mesh_axes: list = []
    self._grid_names_full: list = []
    # Set by _params for debug_print: its operands in its format's order.
    self._invar_order: list[int] | None = None
    # The names of the grid dimensions (pallas_call with named grid axes),
    # None for unnamed ones.
    self._grid_names: list = []
    # Source locations of the equations being exported, outermost first.
    self._locations: list[str] = []

  # buffer_bounds="padded".

  def _pad(self, var: dict, aval, memory_space) -> None:
    """With buffer_bounds="padded", gives the exported ref `var` (of `aval`,
    whose buffer lives in `memory_space`) the shape interpret mode allocates
    for it: Type.padded_shape (format/kernel.fbs), from interpret mode's own
    _get_padded_shape, i.e. tpu_info.infer_tiling for the TPU the caller's
    abstract mesh (jax.sharding.use_abstract_mesh) simulates, at the time of
    export. Interpret mode pads every buffer but SMEM ones and scalars;
    semaphores are no buffers. Only a shape that padding changes is
    written."""
    if not self._padded or not isinstance(aval, state_types.AbstractRef):
      return
    inner = aval.inner_aval
    if (memory_space in (tpu_core.MemorySpace.SMEM,
                         tpu_core.MemorySpace.SEMAPHORE)
        or _is_key(inner)
        or jax.numpy.issubdtype(inner.dtype, pallas_core.semaphore_dtype)
        or not inner.shape):
      return
    from jax._src.pallas.mosaic.interpret import interpret_pallas_call as ipc  # pylint: disable=g-import-not-at-top
    padded = [int(d) for d in ipc._get_padded_shape(  # pylint: disable=protected-access
        tuple(inner.shape), np.dtype(inner.dtype))]
    if padded != list(var["type"]["shape"]):
      var["type"]["padded_shape"] = padded

  # Vars and atoms. `env` maps the jax Vars of one jaxpr to their ids.

  def _bind(self, var, env: dict, where: str) -> dict:
    var_id = self._next_id
    self._next_id += 1
    if not isinstance(var, jax_core.DropVar):
      env[var] = var_id
    return {"id": var_id, "type": _type(var.aval, where)}

  def _atom(self, atom, env: dict, where: str) -> dict:
    if isinstance(atom, jax_core.Literal):
      return {"literal": _literal(atom.val, atom.aval, where)}
    try:
      return {"var": env[atom]}
    except KeyError:
      raise ExportError(f"{where}: variable {atom} is not bound") from None

  # Jaxprs.

  def jaxpr(self, jaxpr, consts: Sequence[Any] = (), where: str = "") -> dict:
    """A `Jaxpr` table for a Jaxpr or ClosedJaxpr."""
    if isinstance(jaxpr, jax_core.ClosedJaxpr):
      jaxpr, consts = jaxpr.jaxpr, jaxpr.consts
    env: dict = {}
    constvars, invars = list(jaxpr.constvars), list(jaxpr.invars)
    if len(consts) != len(constvars):
      # An open jaxpr whose constvars are bound by the equation's operands.
      invars = constvars + invars
      constvars, consts = [], []
    out = {
        "constvars": [self._bind(v, env, where) for v in constvars],
        "consts": [
            _literal(np.asarray(c), v.aval, where)
            for v, c in zip(constvars, consts)
        ],
        "invars": [self._bind(v, env, where) for v in invars],
    }
    out["eqns"] = [self._eqn(eqn, env) for eqn in jaxpr.eqns]
    out["outvars"] = [self._atom(a, env, where) for a in jaxpr.outvars]
    return out

  def _eqn(self, eqn, env: dict) -> dict:
    # An equation JAX made inside one of its own functions (jnp.where's jit)
    # has no user frame; errors name the nearest enclosing one that has.
    location = _location(eqn.source_info)
    if location == "<unknown location>" and self._locations:
      location = self._locations[-1]
    self._locations.append(location)
    try:
      return self._eqn_at(eqn, env, location)
    finally:
      self._locations.pop()

  def _eqn_at(self, eqn, env: dict, location: str) -> dict:
    name = eqn.primitive.name
    where = f"{name} at {location}"
    if name == "pallas_call":
      raise ExportError(f"{where}: a pallas_call inside a kernel")
    if name in _KEY_PRIMITIVES:
      params = [{"name": "call_jaxpr", "kind": "JAXPR",
                 "jaxprs": [self.jaxpr(_key_call_jaxpr(eqn, where),
                                       where=where)]}]
      name = "closed_call"
    else:
      if (any(_is_key(v.aval) for v in [*eqn.invars, *eqn.outvars])
          and name not in _KEY_TRANSPARENT_PRIMITIVES
          and not any(True for _ in _sub_jaxprs(eqn))):
        raise ExportError(
            f"{where}: {name} on jax.random keys is not supported (only"
            " jax.random's own functions, and reading or writing a key"
            " ref, take keys); use jax.random.key_data")
      params = self._params(eqn, where)
    # debug_print's operands in the order of its (rewritten) format.
    order, self._invar_order = self._invar_order, None
    out = {
        "primitive": name,
        "invars": [self._atom(a, env, where) for a in
                   (eqn.invars if order is None
                    else [eqn.invars[i] for i in order])],
        "params": params,
        "outvars": [self._bind(v, env, where) for v in eqn.outvars],
    }
    if name == "run_scoped" and self._padded:
      # Its allocations are the body's last invars (constvars bound by the
      # equation's operands come first).
      body_jaxpr = eqn.params["jaxpr"]
      body = next(p for p in params if p["name"] == "jaxpr")["jaxprs"][0]
      allocations = body["invars"][len(body["invars"]) -
                                   len(body_jaxpr.invars):]
      for var, jax_var in zip(allocations, body_jaxpr.invars):
        self._pad(var, jax_var.aval, jax_var.aval.memory_space)
    frame = _user_frame(eqn.source_info)
    if frame is not None:
      out["source_file"] = _display_path(frame.file_name)
      out["source_line"] = frame.start_line
      out["source_function"] = frame.function_name
    return out

  # Params.

  def _params(self, eqn, where: str) -> list[dict]:
    params = _physical_key_params(eqn, dict(eqn.params))
    out = []
    if (eqn.primitive.name in ("program_id", "num_programs")
        and self._kernel_grid_axes is not None):
      params["axis"] = self._kernel_grid_axes[params["axis"]]
    if eqn.primitive.name == "debug_print":
      # jax.debug.print / pl.debug_print: the format and positional
      # operands travel; the pytree, numpy print options and logging record
      # only matter to JAX's own callback.
      in_tree = params.pop("in_tree", None)
      static_args = params.pop("static_args", ())
      for name in ("np_printoptions", "logging_record"):
        params.pop(name, None)
      if static_args:
        raise ExportError(f"{where}: debug_print with static arguments is"
                          " not supported")
      if in_tree is not None:
        params["fmt"], self._invar_order = _positional_debug_format(
            params["fmt"], in_tree, where)
    if eqn.primitive.name == "axis_index":
      # A named grid axis (pallas_call(grid=(("x", 4), ...))) becomes its
      # grid dimension, `axis`; any other name (a mesh axis, several names)
      # stays `axis_name` and the compiler refuses it.
      axis_name = params.pop("axis_name")
      mesh_names = [n for n, _ in self._mesh_axes]
      if (not isinstance(axis_name, (tuple, list))
          and axis_name in self._grid_names):
        params["axis"] = self._grid_names.index(axis_name)
      elif (not isinstance(axis_name, (tuple, list))
            and axis_name in mesh_names):
        # The device's coordinate: PROGRAM_ID past the grid's axes.
        params["axis"] = len(self._grid_names_full) + mesh_names.index(
            axis_name)
      else:
        params["axis_name"] = str(axis_name)
    layout = _REF_ACCESS_LAYOUTS.get(eqn.primitive.name)
    if layout is not None:
      tree_param, split = layout
      tree = params.pop(tree_param)
      operands = [_Operand(i) for i in range(len(eqn.invars))]
      slots, device = self._targets(split(tree, operands), eqn, where)
      for slot, obj in slots:
        out.extend(self._ref_access_slot(slot, obj, eqn, where))
      out.extend(device)
    for name in sorted(params):
      if name in _SKIPPED_PARAMS:
        continue
      out.extend(self._param(name, params[name], where))
    return out

  def _param(self, name: str, value, where: str) -> list[dict]:
    if value is None:
      return [{"name": name, "kind": "NONE"}]
    if isinstance(value, (bool, np.bool_)):
      return [{"name": name, "kind": "BOOL", "b": bool(value)}]
    if isinstance(value, enum.Enum):
      return [{"name": name, "kind": "STRING", "s": value.name}]
    if isinstance(value, (int, np.integer)):
      return [{"name": name, "kind": "INT", "i": int(value)}]
    if isinstance(value, (float, np.floating)):
      return [{"name": name, "kind": "FLOAT", "f": float(value)}]
    if isinstance(value, str):
      return [{"name": name, "kind": "STRING", "s": value}]
    if isinstance(value, np.dtype):
      return [{"name": name, "kind": "DTYPE",
               "dtype": _dtype_name(value, f"{where}: param {name}")}]
    if _is_jaxpr(value):
      return [{"name": name, "kind": "JAXPR", "jaxprs": [self.jaxpr(value, where=where)]}]
    if _is_sharding(value):
      return []
    if isinstance(value, tuple):
      if value and all(_is_jaxpr(v) for v in value):
        return [{"name": name, "kind": "JAXPRS",
                 "jaxprs": [self.jaxpr(v, where=where) for v in value]}]
      if not hasattr(value, "_fields") and all(_is_int(v) for v in value):
        return [{"name": name, "kind": "INTS", "ints": [int(v) for v in value]}]
      keys = getattr(value, "_fields", None) or range(len(value))
      return [p for key, v in zip(keys, value)
              for p in self._param(f"{name}.{key}", v, where)]
    raise ExportError(
        f"{where}: param {name} = {value!r} ({type(value).__name__}) has no"
        " interchange encoding")

  def _targets(self, slots, eqn, where: str):
    """Where a signal or DMA goes, from its device_id (and core_index):

    - a core of this device: semaphore_signal's `core_index`, a DMA's
      `dst_core` slot ({"core": c} in a core_map kernel: the other mesh
      axes, JAX's devices, held);
    - another device: params `device_terms` and `device_strides`, its
      logical id being sum(term_i * stride_i), each term an operand's
      position in the equation or, negative, -(a + 1) for this device's own
      coordinate, PROGRAM_ID's axis a (interpret mode's rules: a LOGICAL id as it is; a MESH
      tuple one coordinate per mesh axis; a MESH dict fills the axes it
      does not name with the device's own).

    Returns the slots (device_id always None) and the device params."""
    slots = list(slots)
    if eqn.primitive.name in ("dma_start", "dma_wait"):
      slots.append(("dst_core", None))
    named = dict(slots)
    device_id = named.get("device_id")
    if device_id is None:
      return slots, []
    core = None
    if isinstance(device_id, dict):
      cores = {k: v for k, v in device_id.items() if k in self._core_axes}
      if len(cores) > 1:
        raise ExportError(f"{where}: device_id {sorted(cores)} names"
                          " several core axes")
      core = next(iter(cores.values()), None)
      device_id = {k: v for k, v in device_id.items()
                   if k not in self._core_axes} or None
    target = ("core_index" if eqn.primitive.name == "semaphore_signal"
              else "dst_core")
    if core is not None and named.get(target) is not None:
      raise ExportError(f"{where}: both core_index and device_id name a"
                        " core")
    slots = [(s, None if s == "device_id" else o) for s, o in slots
             if core is None or s != target]
    if core is not None:
      slots.append((target, core))
    if device_id is None:
      return slots, []
    return slots, self._device_terms(device_id, eqn, where)

  def _device_terms(self, device_id, eqn, where: str) -> list[dict]:
    names = [n for n, _ in self._mesh_axes]
    sizes = [s for _, s in self._mesh_axes]
    strides = [math.prod(sizes[i + 1:]) for i in range(len(sizes))]
    kind = getattr(eqn.params.get("device_id_type"), "name", "MESH")

    def own(i):  # PROGRAM_ID's axis for mesh axis i, encoded as -(axis + 1)
      return -(len(self._grid_names_full) + i) - 1

    def position(obj):
      if not isinstance(obj, _Operand):
        raise ExportError(f"{where}: device_id part {obj!r} is not an"
                          " integer scalar")
      return obj.position

    if kind == "LOGICAL":
      terms, strides = [position(device_id)], [1]
    elif isinstance(device_id, dict):
      unknown = [k for k in device_id if k not in names]
      if unknown:
        raise ExportError(
            f"{where}: device_id names {unknown}, which are not mesh axes"
            f" around the call ({names}) (a tuple of axes is not supported"
            " yet)")
      terms = [position(device_id[n]) if n in device_id else own(i)
               for i, n in enumerate(names)]
    else:
      coords = (tuple(device_id) if isinstance(device_id, (tuple, list))
                else (device_id,))
      if len(coords) != len(names):
        raise ExportError(
            f"{where}: device_id has {len(coords)} coordinates, but the"
            f" mesh around the call has {len(names)} axes {names}")
      terms = [position(c) for c in coords]
    return [{"name": "device_terms", "kind": "INTS", "ints": terms},
            {"name": "device_strides", "kind": "INTS",
             "ints": [int(s) for s in strides]}]

  def _ref_access_slot(self, slot: str, obj, eqn, where: str) -> list[dict]:
    if obj is None:
      return [{"name": f"{slot}_operand", "kind": "NONE"}]
    if isinstance(obj, _Operand):
      return [{"name": f"{slot}_operand", "kind": "INT", "i": obj.position}]
    if isinstance(obj, state_types.TransformedRef) and isinstance(obj.ref, _Operand):
      return [
          {"name": f"{slot}_operand", "kind": "INT", "i": obj.ref.position},
          self._indexers(f"{slot}_indexers", obj.transforms, eqn, where),
      ]
    if obj == () or _is_transform_tuple(obj):
      return [self._indexers(slot, obj, eqn, where)]
    raise ExportError(f"{where}: operand {slot} = {obj!r} cannot be exported")

  def _indexers(self, name: str, transforms, eqn, where: str) -> dict:
    """An INDEXERS param: the ref transforms, in order (indexers, reshapes
    and bitcasts). A ref of keys has the key data's dims after its own, so
    each indexer of one takes all of them."""
    key_dims = ()
    if (name == "indexers" and eqn.primitive.name in ("get", "swap")
        and _is_key(eqn.invars[0].aval)):
      key_dims = _key_shape(eqn.invars[0].aval)
    indexers = []
    for transform in transforms:
      if isinstance(transform, state_indexing.NDIndexer):
        dims = [self._index_dim(i, eqn, where) for i in transform.indices]
        dims += [{"kind": "SLICE", "start": 0, "start_operand": -1,
                  "size": int(d), "stride": 1} for d in key_dims]
        indexers.append({"dims": dims})
      elif key_dims:
        raise ExportError(f"{where}: a {type(transform).__name__} of a ref"
                          " of jax.random keys")
      elif isinstance(transform, state_types.ReshapeTransform):
        indexers.append({"transform": "RESHAPE",
                         "shape": [int(d) for d in transform.shape]})
      elif isinstance(transform, state_types.BitcastTransform):
        indexers.append({"transform": "BITCAST",
                         "dtype": _dtype_name(transform.dtype, where)})
      else:
        raise ExportError(
            f"{where}: ref transform {type(transform).__name__} is not"
            " supported (only indexing, reshape and bitcast)")
    return {"name": name, "kind": "INDEXERS", "indexers": indexers}

  def _index_dim(self, index, eqn, where: str) -> dict:
    def scalar_operand(operand: _Operand, what: str) -> int:
      aval = eqn.invars[operand.position].aval
      if getattr(aval, "shape", None) != ():
        raise ExportError(
            f"{where}: {what} is an array of shape {aval.shape}; only scalar"
            " indices and pl.ds slices are supported")
      return operand.position

    if isinstance(index, Slice):
      if isinstance(index.size, _Operand):
        # A dynamic size (emit_pipeline's edge and BoundedSlice blocks):
        # only DMAs take one; the compiler refuses it elsewhere.
        dim = {"kind": "SLICE", "size": 0, "stride": int(index.stride),
               "size_operand": scalar_operand(index.size, "a slice size")}
      else:
        dim = {"kind": "SLICE", "size": int(index.size),
               "stride": int(index.stride)}
      if isinstance(index.start, _Operand):
        dim["start"] = 0
        dim["start_operand"] = scalar_operand(index.start, "a slice start")
      else:
        dim["start"] = int(index.start)
        dim["start_operand"] = -1
      return dim
    if isinstance(index, _Operand):
      return {"kind": "INDEX", "start": 0,
              "start_operand": scalar_operand(index, "an index"),
              "size": 1, "stride": 1}
    if _is_int(index):
      return {"kind": "INDEX", "start": int(index), "start_operand": -1,
              "size": 1, "stride": 1}
    raise ExportError(f"{where}: index {index!r} is not supported")

  # The pallas_call.

  def kernel(self, params, in_avals, source_info, name: str) -> dict:
    """The Kernel table for a pallas_call with `params` (its equation's
    params) applied to operands of `in_avals`. `source_info` is the
    equation's (anything with a `traceback`, or None)."""
    where = f"pallas_call {name} at {_location(source_info)}"
    grid_mapping = params["grid_mapping"]
    kernel_jaxpr = params["jaxpr"]

    if any(isinstance(a, state_types.AbstractRef) for a in in_avals):
      raise ExportError(f"{where}: the kernel closes over Refs")
    if kernel_jaxpr.constvars:
      raise ExportError(f"{where}: the kernel jaxpr has constants")
    mesh = params.get("mesh")
    if mesh is not None and not isinstance(mesh, tpu_core.TensorCoreMesh):
      # A TensorCore mesh's pallas_call (pl.core_map) is an ordinary grid,
      # one point per core; its cores are the caller's num_cores.
      raise ExportError(f"{where}: a pallas_call over a {type(mesh).__name__}")
    self._core_axes = frozenset(mesh.axis_names if mesh is not None else ())
    self._mesh_axes = mesh_axes(params)

    # jax.vmap of a pallas_call adds grid dimensions (`vmapped_dims`) that
    # the index maps take as arguments but the kernel body does not see: its
    # program_id(i) is the i-th of the other dimensions. The interchange has
    # one grid, so the body's axes are renumbered into it.
    self._grid_names = list(grid_mapping.grid_names or [])
    self._grid_names_full = list(grid_mapping.grid)
    vmapped = set(grid_mapping.vmapped_dims)
    grid_rank = len(grid_mapping.grid)
    if vmapped:
      self._kernel_grid_axes = [d for d in range(grid_rank) if d not in vmapped]
    try:
      kernel_body = self.jaxpr(kernel_jaxpr, where=where)
    finally:
      self._kernel_grid_axes = None
    # The kernel's refs but scalar prefetch (SMEM): operands live where
    # their block spec says, as interpret mode allocates them; scratch
    # where its own type does.
    num_index = grid_mapping.num_index_operands
    for i, (var, jax_var) in enumerate(zip(kernel_body["invars"][num_index:],
                                           kernel_jaxpr.invars[num_index:])):
      space = (grid_mapping.block_mappings[i].transformed_block_aval
               .memory_space if i < len(grid_mapping.block_mappings)
               else jax_var.aval.memory_space)
      self._pad(var, jax_var.aval, space)
    semantics = _dimension_semantics(params["compiler_params"])
    if vmapped and semantics:
      # compiler_params still describe the unbatched grid; batch dimensions
      # are independent, i.e. parallel (and a prefix of the grid).
      rest = iter(semantics)
      semantics = ["parallel" if d in vmapped else next(rest, "arbitrary")
                   for d in range(grid_rank)]

    num_dynamic = grid_mapping.num_dynamic_grid_bounds
    for aval in in_avals[:num_dynamic]:
      if aval.dtype != np.int32 or math.prod(aval.shape) != 1:
        raise ExportError(f"{where}: a dynamic grid bound of type {aval}")
    num_scratch = grid_mapping.num_scratch_operands
    scratch_invars = kernel_jaxpr.invars[len(kernel_jaxpr.invars) - num_scratch:]
    out = {
        "version": INTERCHANGE_VERSION,
        "name": name,
        "jaxpr": kernel_body,
        # A dynamic dimension (its size a traced value, as in megablox's
        # gmm) is -1; its size is one of the first operands.
        "grid": [_grid_dim(d, where) for d in grid_mapping.grid],
        "num_dynamic_grid_bounds": num_dynamic,
        "num_scalar_prefetch": grid_mapping.num_index_operands,
        "in_types": [_type(a, where) for a in in_avals],
        "out_types": [_type(a, where) for a in params["out_avals"]],
        "block_mappings": [
            self._block_mapping(bm, where) for bm in grid_mapping.block_mappings
        ],
        "scratch_types": [_type(v.aval, where) for v in scratch_invars],
        # JAX numbers alias inputs without the dynamic grid bounds; the
        # interchange numbers all operands.
        "input_output_aliases": [
            {"input": int(i) + num_dynamic, "output": int(o)}
            for i, o in params["input_output_aliases"]
        ],
        "dimension_semantics": semantics,
    }
    frame = _user_frame(source_info)
    if frame is not None:
      out["source_file"] = _display_path(frame.file_name)
      out["source_line"] = frame.start_line
    return out

  def _block_mapping(self, bm, where: str) -> dict:
    where = f"{where}: block spec of {bm.origin}"
    if bm.transforms:
      raise ExportError(f"{where}: block transforms {bm.transforms}")
    block_dims = [_block_dim(d, where) for d in bm.block_shape]
    index_map = self.jaxpr(bm.index_map_jaxpr, where=f"{where}: index map")
    if _is_key(bm.array_aval):
      # The key data's own dims, whole, at block index 0.
      for d in _key_shape(bm.array_aval):
        block_dims.append({"kind": "BLOCKED", "size": int(d)})
        index_map["outvars"].append({"literal": _literal(
            0, jax_core.ShapedArray((), np.int32), where)})
    return {
        "origin": bm.origin,
        "array_type": _type(bm.array_aval, where),
        "block_dims": block_dims,
        "memory_space": _memory_space_name(
            bm.transformed_block_aval.memory_space, where),
        "index_map": index_map,
    }


def _grid_dim(dim, where: str) -> int:
  if isinstance(dim, pallas_core.DynamicGridDim):
    return -1
  if _is_int(dim) and int(dim) > 0:
    return int(dim)
  raise ExportError(f"{where}: grid dimension {dim!r} is not supported")


def _block_dim(dim, where: str) -> dict:
  if isinstance(dim, pallas_core.Blocked) and isinstance(dim.block_size, int):
    return {"kind": "BLOCKED", "size": dim.block_size}
  if isinstance(dim, pallas_core.Squeezed) or dim is None:
    return {"kind": "SQUEEZED", "size": 1}
  if isinstance(dim, pallas_core.Element) and tuple(dim.padding) == (0, 0):
    return {"kind": "ELEMENT", "size": int(dim.block_size)}
  raise ExportError(f"{where}: block dimension {dim} is not supported")


def _dimension_semantics(compiler_params) -> list[str]:
  if isinstance(compiler_params, dict):  # Older JAX: {"mosaic_tpu": ...}.
    compiler_params = compiler_params.get("mosaic_tpu") or compiler_params.get(
        "mosaic")
  semantics = getattr(compiler_params, "dimension_semantics", None)
  if isinstance(compiler_params, dict):
    semantics = compiler_params.get("dimension_semantics")
  if not semantics:
    return []
  return [s.value if isinstance(s, enum.Enum) else str(s) for s in semantics]


# ---------------------------------------------------------------------------
# Finding pallas_calls in the outer program
# ---------------------------------------------------------------------------

# Primitives whose sub-jaxpr is simply called with the equation's operands; a
# pallas_call reached only through these runs once per call of the function,
# so its operands and results can be captured by evaluation (with_io=True).
_CALL_PRIMITIVES = frozenset({
    "pjit", "jit", "closed_call", "core_call", "remat", "checkpoint",
    "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
})


def _sub_jaxprs(eqn):
  """(param name, Jaxpr) for every sub-jaxpr held in the equation's params."""
  for name, value in eqn.params.items():
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
      if isinstance(v, jax_core.ClosedJaxpr):
        yield name, v.jaxpr
      elif isinstance(v, jax_core.Jaxpr):
        yield name, v


@dataclasses.dataclass
class _Found:
  eqn: Any
  only_through_calls: bool  # reached from the top through _CALL_PRIMITIVES


def _find_pallas_calls(jaxpr, only_through_calls=True) -> list[_Found]:
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "pallas_call":
      found.append(_Found(eqn, only_through_calls))
      continue
    is_call = eqn.primitive.name in _CALL_PRIMITIVES
    for _, sub in _sub_jaxprs(eqn):
      found.extend(_find_pallas_calls(sub, only_through_calls and is_call))
  return found


def kernel_name(params) -> str:
  """The name of a pallas_call with equation params `params`: its `name=`,
  else its kernel function's name, made safe for a file name."""
  name = params.get("name")
  if not name:
    debug_info = getattr(params["jaxpr"], "debug_info", None)
    name = debug_info.func_name if debug_info is not None else "kernel"
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "kernel"


# ---------------------------------------------------------------------------
# Reference inputs and outputs (with_io=True)
# ---------------------------------------------------------------------------


def _run_under_interpret_mode(eqn, operands):
  params = dict(eqn.params)
  if not isinstance(params["interpret"], pltpu.InterpretParams):
    params["interpret"] = pltpu.InterpretParams()
  return pallas_call_lib.pallas_call_p.bind(*operands, **params)


def _call_body_containing(eqn, target):
  """The (jaxpr, consts) a call-like `eqn` runs, if `target` is inside it."""
  if eqn.primitive.name not in _CALL_PRIMITIVES:
    return None
  for value in eqn.params.values():
    if isinstance(value, jax_core.ClosedJaxpr):
      jaxpr, consts = value.jaxpr, value.consts
    elif isinstance(value, jax_core.Jaxpr):
      jaxpr, consts = value, []
    else:
      continue
    if any(f.eqn is target for f in _find_pallas_calls(jaxpr)):
      return jaxpr, consts
  return None


def _evaluate_capturing(jaxpr, consts, args, target):
  """Evaluates `jaxpr` like `jax.core.eval_jaxpr`, but runs `target` (a
  pallas_call reached through call primitives) under TPU interpret mode.

  Returns ((operands, results) of `target` or None, outputs of `jaxpr`)."""
  env = {}
  captured = None

  def read(atom):
    return atom.val if isinstance(atom, jax_core.Literal) else env[atom]

  for v, x in zip(jaxpr.constvars, consts, strict=True):
    env[v] = x
  for v, x in zip(jaxpr.invars, args, strict=True):
    env[v] = x
  for eqn in jaxpr.eqns:
    invals = [read(a) for a in eqn.invars]
    body = None if captured else _call_body_containing(eqn, target)
    if eqn is target:
      outs = _run_under_interpret_mode(eqn, invals)
      captured = (invals, outs)
    elif body is not None:
      captured, outs = _evaluate_capturing(*body, invals, target)
    else:
      bind_params = eqn.primitive.get_bind_params(eqn.params)
      outs = eqn.primitive.bind(*invals, **bind_params)
      if not eqn.primitive.multiple_results:
        outs = [outs]
    for v, x in zip(eqn.outvars, outs, strict=True):
      if not isinstance(v, jax_core.DropVar):
        env[v] = x
  return captured, [read(a) for a in jaxpr.outvars]


def _reference_io(found: _Found, closed_jaxpr, flat_args):
  """The operands and results of `found`'s pallas_call on `flat_args`."""
  eqn = found.eqn
  if not found.only_through_calls:
    raise ExportError(
        f"with_io: the pallas_call at {_location(eqn.source_info)} runs inside"
        " a loop or a branch of the function; export it from a function that"
        " calls it once")
  captured, _ = _evaluate_capturing(
      closed_jaxpr.jaxpr, closed_jaxpr.consts, flat_args, eqn)
  operands, results = captured
  return ([np.asarray(x) for x in operands], [np.asarray(x) for x in results])


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------


def _dumps(kernel: dict) -> str:
  """Deterministic FlatBuffers JSON: keys sorted, small tables and scalar
  lists on one line, non-finite floats spelled as flatc reads them."""
  def scalar(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
      return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return json.dumps(value)

  # Each child is formatted once (both layouts indent it the same way), so
  # the cost is linear in the size of the kernel, not exponential in depth.
  def fmt(value, indent: str) -> str:
    inner = indent + " "
    if isinstance(value, dict):
      if not value:
        return "{}"
      parts = [(json.dumps(k), fmt(value[k], inner)) for k in sorted(value)]
      flat = ", ".join(f"{k}: {v}" for k, v in parts)
      if "\n" not in flat and len(flat) < 100:
        return "{" + flat + "}"
      items = [f"{inner}{k}: {v}" for k, v in parts]
      return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list):
      parts = [fmt(v, inner) for v in value]
      flat = ", ".join(parts)
      if all(not isinstance(v, (dict, list)) for v in value) or (
          "\n" not in flat and len(flat) < 100):
        return "[" + flat + "]"
      items = [inner + p for p in parts]
      return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return scalar(value)

  return fmt(kernel, "") + "\n"


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def export_pallas_call(params, in_avals, source_info=None, *,
                       skip_floating_point_ops: bool = False,
                       contract_fma: bool = False,
                       fma_keeps_f16_rounding: bool = False,
                       allow_hbm_allocation_in_run_scoped: bool = False,
                       buffer_bounds: str = "logical"
                       ) -> bytes:
  """The interchange (JSON bytes) of one pallas_call, from its equation's
  params and operand avals; `source_info` (anything with a `traceback`)
  locates it in errors. Used by the JAX bridge at lowering time, which also
  passes interpret mode's skip_floating_point_ops,
  allow_hbm_allocation_in_run_scoped and buffer_bounds ("padded": the
  refs' padded shapes, computed here under the caller's abstract mesh) and
  pallasvm's contract_fma (Kernel.contract_fma in format/kernel.fbs).
  Raises ExportError like export_kernels."""
  kernel = _KernelExporter(buffer_bounds).kernel(params, in_avals, source_info,
                                                 kernel_name(params))
  if skip_floating_point_ops:
    kernel["skip_floating_point_ops"] = True
  if contract_fma:
    kernel["contract_fma"] = True
  if fma_keeps_f16_rounding:
    kernel["fma_keeps_f16_rounding"] = True
  if allow_hbm_allocation_in_run_scoped:
    kernel["allow_hbm_allocation_in_run_scoped"] = True
  return _dumps(kernel).encode()


def export_kernels(fn, *example_args, out_dir, name: str | None = None,
                   with_io: bool = False) -> list[pathlib.Path]:
  """Exports every pallas_call in `fn(*example_args)` to the interchange.

  Traces `fn` with `jax.make_jaxpr` and writes one `<kernel name>.json` per
  pallas_call found anywhere in the traced program (inside jit, custom_jvp /
  custom_vjp calls, cond / while / scan bodies ...). The kernel name is the
  pallas_call's `name=` or else its kernel function's name; `name` overrides
  the file stem (Kernel.name keeps the kernel's own name). Duplicate stems get
  a `_1`, `_2` ... suffix.

  With `with_io=True`, `fn` must contain exactly one pallas_call, run once per
  call of `fn` (i.e. not inside a loop or branch). Then `input_<i>.npy` is
  written for each pallas_call operand (scalar prefetch operands first) and
  `expected_<i>.npy` for each result. The expected results come from running
  that pallas_call under JAX's TPU interpret mode: `fn` is evaluated equation
  by equation, and the pallas_call is bound with `interpret=
  pltpu.InterpretParams()` unless it already asks for TPU interpret mode (then
  its own InterpretParams are kept; their buffer_bounds="padded" pads the
  exported refs too, under the abstract mesh `fn` is exported in). `fn`
  need not be written for interpret
  mode.

  Returns the paths written. Raises ExportError, naming the primitive and the
  user's source line, for what the interchange cannot express.
  """
  out_dir = pathlib.Path(out_dir)
  closed_jaxpr = jax.make_jaxpr(fn)(*example_args)
  found = _find_pallas_calls(closed_jaxpr.jaxpr)
  if not found:
    raise ExportError(f"{getattr(fn, '__name__', fn)!r} has no pallas_call")
  if with_io and len(found) != 1:
    raise ExportError(
        f"with_io=True needs exactly one pallas_call, found {len(found)}")

  kernels, used_stems = [], set()
  for f in found:
    k_name = kernel_name(f.eqn.params)
    stem = name or k_name
    unique, n = stem, 0
    while unique in used_stems:
      n += 1
      unique = f"{stem}_{n}"
    used_stems.add(unique)
    # A pallas_call asking for interpret mode with buffer_bounds="padded"
    # is exported padded, as its expected outputs are computed.
    interpret = f.eqn.params.get("interpret")
    bounds = (interpret.buffer_bounds
              if isinstance(interpret, pltpu.InterpretParams) else "logical")
    kernels.append((unique, _KernelExporter(bounds).kernel(
        f.eqn.params, [v.aval for v in f.eqn.invars], f.eqn.source_info,
        k_name)))
  # Everything is computed before anything is written, so that a failure
  # leaves no partial output.
  if with_io:
    flat_args = jax.tree_util.tree_leaves(example_args)
    operands, results = _reference_io(found[0], closed_jaxpr, flat_args)

  out_dir.mkdir(parents=True, exist_ok=True)
  paths = []
  for stem, kernel in kernels:
    path = out_dir / f"{stem}.json"
    path.write_text(_dumps(kernel))
    paths.append(path)
  if with_io:
    for prefix, values in (("input", operands), ("expected", results)):
      for i, value in enumerate(values):
        path = out_dir / f"{prefix}_{i}.npy"
        np.save(path, value, allow_pickle=False)
        paths.append(path)
  return paths
