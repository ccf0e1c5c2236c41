"""The JAX bridge: runs unchanged `pallas_call`s inside `jax.jit` on CPU.

    import pallasvm
    with pallasvm.enabled():             # or pallasvm.install() ... uninstall()
      y = jax.jit(my_fn_with_pallas_calls)(x)

While installed, every `pallas_call` that JAX lowers for the CPU backend
becomes an XLA FFI custom call ("pallasvm_call") to the handler in
`tools/jax_bridge/pallasvm_xla.cc`, which runs the compiled pallasvm module
directly on XLA's buffers: once compiled, no Python runs per call or per grid
step. Each kernel is exported and compiled when JAX lowers it, so a primitive
pallasvm does not support fails at trace/compile time with the exporter's or
compiler's message naming it and its source line. Compiled modules are
cached in-process by the content hash of their interchange, and on disk in
the command line's module cache (PALLASVM_CACHE_DIR, else
$XDG_CACHE_HOME/pallasvm or ~/.cache/pallasvm; PALLASVM_NO_CACHE=1: none),
so a second process reads them instead of compiling.

Which kernels are routed: every Pallas TPU kernel on CPU, so that none runs
on JAX's interpreter behind the user's back. A pallas_call that asks for TPU
interpret mode (`interpret=pltpu.InterpretParams(...)`, or
`pltpu.force_tpu_interpret_mode()`) runs on pallasvm with its own params
(checked like `install`'s); any other (`interpret=False`, or
`interpret=True`, JAX's generic HLO interpreter) runs with the params given
to `install`. Kernels over a TensorCore mesh (`pl.core_map`,
`pl.kernel(mesh=...)`: primitive mpmd_map, whose CPU lowering makes a
pallas_call over the mesh and calls pallas_call's lowering function
directly) run on pallasvm with one simulated core per mesh core, as
interpret mode runs them; both that primitive's CPU rule and the function
it calls are pallasvm's while installed, and other meshes are refused with
UnsupportedError at lowering time.

JAX caches compiled functions without knowing about lowering rules, so
`install` and `uninstall` clear JAX's caches (`jax.clear_caches()`): a
function jitted before is lowered again, the right way, on its next call.

What this module knows: how to register a lowering for pallas_call and emit
an FFI call. What it must not know: the interchange format (export.py) or how
modules are compiled and run (the C++ library).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import itertools
import math
import os
import pathlib
import threading
import types

import jax
import jax.experimental
import jax.numpy as jnp
import numpy as np
from jax._src.interpreters import mlir
from jax._src.pallas import mpmd as mpmd_lib
from jax._src.pallas import pallas_call as pallas_call_lib
from jax.experimental.pallas import tpu as pltpu

from pallasvm import export
from pallasvm import grid_order
from pallasvm.errors import CompileError, UnsupportedError

FFI_TARGET = "pallasvm_call"
LIBRARY_NAME = "libpallasvm_xla.so"

_REPO = pathlib.Path(__file__).resolve().parents[2]


class BridgeError(Exception):
  """The bridge's shared library is missing or cannot be loaded."""




# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class InterpretParams(pltpu.InterpretParams):
  """The options of JAX's TPU interpret mode (`pltpu.InterpretParams`, same
  fields and defaults), for pallasvm. Implemented: `uninitialized_memory`
  ("nan" or "zero"), `out_of_bounds_reads`, `random_seed`,
  `num_cores_or_threads`, `grid_point_recorder` and `detect_races` (see
  _call_with_reports), `skip_floating_point_ops`,
  `allow_hbm_allocation_in_run_scoped` and `buffer_bounds` (compiled into
  the module; "padded" pads each buffer to the tiles of the TPU that the
  abstract mesh around the call simulates, as interpret mode does) and
  `dma_execution_mode` (runtime/memory_model.h); a bad value raises
  ValueError. Every other field (vector_clock_size, logging_mode) must
  keep its default: a non-default value raises NotImplementedError naming
  it, so none is silently ignored.

  Two fields are pallasvm's own:

  - `contract_fma` (default False). pallasvm rounds after every equation,
    as the jaxpr is written and a TPU computes; interpret mode's results
    are XLA:CPU's, which fuses a multiply whose only use is an add or
    subtract into one fused multiply-add, rounded once (f32, and f16
    through f32; never bf16). With contract_fma=True pallasvm contracts
    the same way and matches interpret mode on such kernels bit for bit
    (compiler/fma_contraction.h). A pallas_call's own pltpu.InterpretParams,
    which lack the field, take it from the params given to install() /
    enabled(); a plain pltpu.InterpretParams there means False.
  - `timeout_s`, seconds a call may run before it fails with
    DEADLINE_EXCEEDED (raised by JAX as an XlaRuntimeError naming the grid
    point, the core and the source line of the loop it was in), so that a
    `while` that never ends does not hang the process. The default, None,
    is no limit, as in interpret mode: a timeout must not end a kernel that
    is merely slow.
  - `leftover_semaphores`: "warn" (the default) prints a `pallasvm
    warning:` line for each semaphore left non-zero at the end of a call
    or of its run_scoped, and each DMA never waited for; "error" fails the
    call with the first of them instead.
  - `uninitialized_reads`: "off" (the default: nothing is tracked and
    nothing costs time), "warn" (one `pallasvm warning:` line for each
    instruction that read elements nothing had written, with its source
    line, the first grid point and element, and how many), or "error" (the
    call fails at the first such read). Such elements are edge padding of
    an input block, an output block not yet written at its block index,
    scratch and run_scoped buffers not yet written, HBM outputs, and a DMA's
    destination before its wait. Interpret mode only fills them with
    `uninitialized_memory` (runtime/uninitialized_reads.h)."""

  contract_fma: bool = False
  timeout_s: float | None = None
  leftover_semaphores: str = "warn"
  uninitialized_reads: str = "off"


# The fields pallasvm implements; all others must hold JAX's default.
_IMPLEMENTED_FIELDS = frozenset(
    {"uninitialized_memory", "random_seed", "num_cores_or_threads",
     "grid_point_recorder", "out_of_bounds_reads", "dma_execution_mode",
     "detect_races", "skip_floating_point_ops",
     "allow_hbm_allocation_in_run_scoped", "buffer_bounds"})

# RunOptions::uninitialized_memory, as the FFI handler's attribute reads it.
_UNINITIALIZED_MEMORY = {"nan": 0, "zero": 1}
# RunOptions::out_of_bounds_reads.
_OUT_OF_BOUNDS_READS = {"raise": 0, "uninitialized": 1}


_xla_f16 = {}


def xla_contracts_f16() -> bool:
  """Whether XLA:CPU on this machine contracts an f16 multiply-add into one
  fused multiply-add (computed in f32, rounded once), as it does on some
  CPUs and not on others; probed once, with x = y = 1 + 2^-6 and
  z = -(1 + 2^-5), where the product's 2^-12 survives only a fused
  multiply-add. contract_fma=True follows the answer for f16."""
  if "answer" not in _xla_f16:
    x = jnp.full((8, 128), 1 + 2.0**-6, jnp.float16)
    z = jnp.full((8, 128), -(1 + 2.0**-5), jnp.float16)
    out = np.asarray(jax.jit(lambda x, y, z: x * y + z)(x, x, z))
    _xla_f16["answer"] = bool((out != 0).all())
  return _xla_f16["answer"]


def _timeout_ns(params: pltpu.InterpretParams) -> np.int64:
  """InterpretParams.timeout_s (pallasvm's own field; absent from JAX's
  params) as the FFI attribute `timeout_ns`, 0 for none."""
  timeout = getattr(params, "timeout_s", None)
  if timeout is None:
    return np.int64(0)
  if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
      or not 0 < timeout <= 1e9):
    raise ValueError(
        f"InterpretParams.timeout_s={timeout!r}: expected None or seconds,"
        " more than 0 and at most 1e9")
  return np.int64(max(1, round(timeout * 1e9)))


def _leftover_semaphores(params: pltpu.InterpretParams) -> int:
  """InterpretParams.leftover_semaphores (pallasvm's own field) as the FFI
  attribute: 0 warn, 1 error."""
  mode = getattr(params, "leftover_semaphores", "warn")
  if mode not in ("warn", "error"):
    raise ValueError(f"InterpretParams.leftover_semaphores={mode!r}: expected"
                     " 'warn' or 'error'")
  return int(mode == "error")


# InterpretParams.uninitialized_reads (pallasvm's own field) as the FFI
# attribute (RunOptions::uninitialized_reads).
_UNINITIALIZED_READS = {"off": 0, "warn": 1, "error": 2}


def _uninitialized_reads(params: pltpu.InterpretParams) -> int:
  mode = getattr(params, "uninitialized_reads", "off")
  if not isinstance(mode, str) or mode not in _UNINITIALIZED_READS:
    raise ValueError(f"InterpretParams.uninitialized_reads={mode!r}: expected"
                     " 'off', 'warn' or 'error'")
  return _UNINITIALIZED_READS[mode]


def _run_options(params: pltpu.InterpretParams) -> dict:
  """The FFI attributes for `params`; NotImplementedError for any option
  pallasvm does not implement that is not at its default."""
  defaults = pltpu.InterpretParams()
  for field in dataclasses.fields(pltpu.InterpretParams):
    if field.name in _IMPLEMENTED_FIELDS:
      continue
    value = getattr(params, field.name)
    if value != getattr(defaults, field.name):
      raise NotImplementedError(
          f"pallasvm does not implement InterpretParams.{field.name}="
          f"{value!r} yet (only the default, "
          f"{getattr(defaults, field.name)!r})")
  if params.uninitialized_memory not in _UNINITIALIZED_MEMORY:
    raise ValueError(
        f"InterpretParams.uninitialized_memory={params.uninitialized_memory!r}"
        f": expected one of {sorted(_UNINITIALIZED_MEMORY)}")
  if params.out_of_bounds_reads not in _OUT_OF_BOUNDS_READS:
    raise ValueError(
        f"InterpretParams.out_of_bounds_reads={params.out_of_bounds_reads!r}"
        f": expected one of {sorted(_OUT_OF_BOUNDS_READS)}")
  if params.buffer_bounds not in ("logical", "padded"):
    raise ValueError(
        f"InterpretParams.buffer_bounds={params.buffer_bounds!r}: expected"
        " 'logical' or 'padded'")
  # When DMAs run ("eager": at start; "on_wait": when a wait needs them).
  if params.dma_execution_mode not in ("eager", "on_wait"):
    raise ValueError(
        f"InterpretParams.dma_execution_mode={params.dma_execution_mode!r}:"
        " expected 'eager' or 'on_wait'")
  if params.random_seed is not None and not isinstance(params.random_seed, int):
    raise ValueError(
        f"InterpretParams.random_seed={params.random_seed!r}: expected an int"
        " or None")
  cores = params.num_cores_or_threads
  if not isinstance(cores, int) or not 1 <= cores <= 256:
    raise ValueError(
        f"InterpretParams.num_cores_or_threads={cores!r}: expected an int"
        " from 1 to 256")
  if params.grid_point_recorder is not None and not callable(
      params.grid_point_recorder):
    raise ValueError(
        f"InterpretParams.grid_point_recorder={params.grid_point_recorder!r}:"
        " expected a callable or None")
  return {"uninitialized_memory":
          np.int64(_UNINITIALIZED_MEMORY[params.uninitialized_memory]),
          "num_cores": np.int64(cores),
          "out_of_bounds_reads":
          np.int64(_OUT_OF_BOUNDS_READS[params.out_of_bounds_reads]),
          "record_grid_points": np.int64(
              params.grid_point_recorder is not None),
          "detect_races": np.int64(bool(params.detect_races)),
          "timeout_ns": _timeout_ns(params),
          "dma_execution_mode": np.int64(params.dma_execution_mode == "eager"),
          "leftover_semaphores": np.int64(_leftover_semaphores(params)),
          "uninitialized_reads": np.int64(_uninitialized_reads(params)),
          # One device unless the lowering finds a mesh (_on_devices).
          "num_devices": np.int64(1), "callsite": np.int64(0),
          "mesh_sizes": np.zeros(0, np.int32)}


_callsites = itertools.count(1)


def _on_devices(ctx, in_nodes, attrs, params):
  """A pallas_call inside shard_map: the devices of each step meet in one
  simulated machine (tools/jax_bridge's DeviceMeetings). Sets the FFI
  attributes `num_devices`, `mesh_sizes` and a `callsite` no other
  lowering shares, and appends this device's mesh coordinates (computed
  by lax.axis_index in the program) as an int32 operand. Returns (ctx,
  in_nodes) for the call; unchanged on one device."""
  axes = export.mesh_axes(params)
  num_devices = math.prod(size for _, size in axes)
  if num_devices <= 1:
    return ctx, in_nodes
  # Every device of the computation must be one of the meeting's: a
  # shard_map over some of the mesh's axes runs one group per value of the
  # others, which would meet as one and pair up wrongly.
  axis_context = ctx.module_context.axis_context
  mesh = getattr(axis_context, "mesh", None)
  total = (mesh.size if mesh is not None
           else getattr(axis_context, "num_devices", num_devices))
  if total != num_devices:
    where = export._location(types.SimpleNamespace(traceback=ctx.traceback))  # pylint: disable=protected-access
    raise UnsupportedError(
        f"pallas_call at {where}: a shard_map over {num_devices} of the"
        f" {total} devices (mesh axes {[n for n, _ in axes]}; the others not"
        " manual) is not supported by pallasvm yet")
  attrs["num_devices"] = np.int64(num_devices)
  attrs["callsite"] = np.int64(next(_callsites))
  attrs["mesh_sizes"] = np.array([size for _, size in axes], np.int32)
  coords_aval = jax.core.ShapedArray((len(axes),), np.int32)

  def coords():
    return [jnp.stack([jax.lax.axis_index(name).astype(np.int32)
                       for name, _ in axes])]
  # Traced under the mesh of the call's own operands: a user's
  # use_abstract_mesh (a TPU's, for emit_pipeline's tiling) would not
  # match the axis_index values' mesh.
  operand_mesh = next((a.sharding.mesh for a in ctx.avals_in
                       if getattr(getattr(a, "sharding", None), "mesh", None)
                       is not None), None)
  with (jax.sharding.use_abstract_mesh(operand_mesh)
        if operand_mesh is not None else contextlib.nullcontext()):
    [node] = mlir.lower_fun(coords, multiple_results=True)(
        ctx.replace(avals_in=[], avals_out=[coords_aval]))
  return (ctx.replace(avals_in=[*ctx.avals_in, coords_aval]),
          [*in_nodes, node])


def _grid_coordinates(params: dict, run_params: pltpu.InterpretParams):
  """The order interpret mode visits the grid in, as the FFI attribute
  `grid_coordinates`: per grid dimension its length L then L coordinates
  (L = 0: in order). Interpret mode shuffles each `parallel` dimension with
  jax.random.permutation seeded by random_seed (None counts as 0);
  grid_order.py computes the same permutations bit for bit without
  compiling anything, so pallasvm visits grid points in exactly the same
  order."""
  from jax._src.pallas.mosaic import core as mosaic_core  # pylint: disable=g-import-not-at-top
  from jax._src.pallas.mosaic.interpret import interpret_pallas_call as ipc  # pylint: disable=g-import-not-at-top
  grid = tuple(params["grid_mapping"].grid)
  compiler_params = params.get("compiler_params")
  if isinstance(compiler_params, mosaic_core.CompilerParams):
    mosaic_params = compiler_params
  else:
    mosaic_params = mosaic_core.CompilerParams()
  if mosaic_params.dimension_semantics is not None and len(
      mosaic_params.dimension_semantics) != len(grid):
    return np.zeros(len(grid), np.int32)  # e.g. vmap added dims: in order
  # As in interpret mode: parallel dimensions must be a prefix of the grid
  # (ValueError) and of static size (ConcretizationTypeError).
  parallel = ipc._get_parallel_dim_semantics(mosaic_params, len(grid))  # pylint: disable=protected-access
  for d, (size, is_parallel) in enumerate(zip(grid, parallel)):
    if is_parallel and not isinstance(size, (int, np.integer)):
      error = jax.errors.ConcretizationTypeError.__new__(
          jax.errors.ConcretizationTypeError)
      jax.errors.JAXTypeError.__init__(  # the tracer-free constructor
          error, f"grid dimension {d} has 'parallel' semantics, so its size"
          " must be known at trace time, but it is a traced value")
      raise error
  if not any(parallel):
    # Nothing to shuffle: in order, without asking grid_order (whose
    # fallback to jax.random would compute under the caller's abstract
    # mesh, a TPU's for emit_pipeline).
    return np.zeros(len(grid), np.int32)
  coords = grid_order.randomized_grid_coordinates(
      grid, mosaic_params, run_params.random_seed)
  return np.concatenate([np.concatenate([[len(c)], c]).astype(np.int32)
                         for c in coords])


# ---------------------------------------------------------------------------
# The shared library
# ---------------------------------------------------------------------------


def library_path() -> pathlib.Path | None:
  """$PALLASVM_LIBRARY, else <repo>/build/tools/jax_bridge/, else next to
  this package; None if none exists."""
  env = os.environ.get("PALLASVM_LIBRARY")
  if env:
    return pathlib.Path(env)
  for path in (_REPO / "build" / "tools" / "jax_bridge" / LIBRARY_NAME,
               pathlib.Path(__file__).resolve().parent / LIBRARY_NAME):
    if path.exists():
      return path
  return None


_lock = threading.RLock()
_library: ctypes.CDLL | None = None
_registered = False


def _load_library() -> ctypes.CDLL:
  global _library
  with _lock:
    if _library is not None:
      return _library
    path = library_path()
    if path is None or not path.exists():
      raise BridgeError(
          f"the pallasvm JAX bridge library ({LIBRARY_NAME}) is not built:"
          " build pallasvm (tools/build.sh) with jax installed in .venv, or"
          " set PALLASVM_LIBRARY to its path"
          + (f" (PALLASVM_LIBRARY={path} does not exist)" if path else ""))
    lib = ctypes.CDLL(str(path))
    lib.pallasvm_compile.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
    lib.pallasvm_compile.restype = ctypes.c_int
    lib.pallasvm_compile_cached.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_int)]
    lib.pallasvm_compile_cached.restype = ctypes.c_int
    lib.pallasvm_free.argtypes = [ctypes.c_void_p]
    lib.pallasvm_free.restype = None
    lib.pallasvm_compiler_version.argtypes = []
    lib.pallasvm_compiler_version.restype = ctypes.c_char_p
    lib.pallasvm_memory_limit.argtypes = []
    lib.pallasvm_memory_limit.restype = ctypes.c_int64
    lib.pallasvm_lowering_rules.argtypes = []
    lib.pallasvm_lowering_rules.restype = ctypes.c_char_p
    _library = lib
    return lib


def _register_target(lib: ctypes.CDLL) -> None:
  global _registered
  with _lock:
    if not _registered:
      jax.ffi.register_ffi_target(
          FFI_TARGET, jax.ffi.pycapsule(lib.PallasvmCall), platform="cpu")
      _registered = True


# ---------------------------------------------------------------------------
# Compiling
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Compiled:
  module: np.ndarray  # uint8: the module bytes, as the FFI attribute
  key: str            # content hash of the module: the handler's pool key


# pallasvm_compile's return code for a kernel that uses a feature pallasvm
# lacks yet (the compiler's UNIMPLEMENTED status).
_COMPILE_UNSUPPORTED = 2

_compiled: dict[str, _Compiled] = {}  # interchange hash -> module
_stats = {"lowerings": 0, "compilations": 0, "refusals": 0,
          "disk_cache_hits": 0}


def _disk_cache_dir() -> str | None:
  """The on-disk module cache's directory ("" = the library's default:
  $XDG_CACHE_HOME/pallasvm or ~/.cache/pallasvm), or None when
  PALLASVM_NO_CACHE=1 turns it off. PALLASVM_CACHE_DIR names another
  directory, as for the command line."""
  if os.environ.get("PALLASVM_NO_CACHE", "") not in ("", "0"):
    return None
  return os.environ.get("PALLASVM_CACHE_DIR", "")


def compile_interchange(interchange: bytes, origin: str = "pallas_call",
                        cache_dir: str | None = None) -> bytes:
  """Module bytes for interchange bytes (JSON or binary); CompileError with
  the compiler's message if it refuses the kernel. With `cache_dir` (""
  for the default directory), through the on-disk module cache the command
  line uses: a module compiled by any earlier process is read, not
  compiled."""
  lib = _load_library()
  out, out_len = ctypes.c_void_p(), ctypes.c_size_t()
  if cache_dir is None:
    rc = lib.pallasvm_compile(interchange, len(interchange), origin.encode(),
                              ctypes.byref(out), ctypes.byref(out_len))
  else:
    hit = ctypes.c_int(0)
    rc = lib.pallasvm_compile_cached(
        interchange, len(interchange), origin.encode(), cache_dir.encode(),
        ctypes.byref(out), ctypes.byref(out_len), ctypes.byref(hit))
    if rc == 0 and hit.value:
      with _lock:
        _stats["disk_cache_hits"] += 1
  try:
    data = ctypes.string_at(out, out_len.value) if out.value else b""
  finally:
    lib.pallasvm_free(out)
  if rc == _COMPILE_UNSUPPORTED:
    raise UnsupportedError(data.decode(errors="replace"))
  if rc != 0:
    raise CompileError(data.decode(errors="replace"))
  return data


def _compile_cached(interchange: bytes, origin: str) -> _Compiled:
  lib = _load_library()
  key = hashlib.sha256(lib.pallasvm_compiler_version() + b"\0" +
                       interchange).hexdigest()
  with _lock:
    hit = _compiled.get(key)
  if hit is not None:
    return hit
  module = compile_interchange(interchange, origin, _disk_cache_dir())
  compiled = _Compiled(np.frombuffer(module, dtype=np.uint8),
                       hashlib.sha256(module).hexdigest())
  with _lock:
    _stats["compilations"] += 1
    return _compiled.setdefault(key, compiled)


def lowering_rules() -> dict[str, bool]:
  """The primitives pallasvm's compiler lowers, each mapped to whether its
  rule declares it pure (removable where its results are unused). Any other
  primitive is refused with UnsupportedError, used or not."""
  lines = _load_library().pallasvm_lowering_rules().decode().splitlines()
  return {name: kind == "pure" for name, kind in (l.split() for l in lines)}


def memory_limit() -> int:
  """The most bytes pallasvm's compiler lets a kernel's value, ref or array,
  or all its refs together, take: the machine's physical memory."""
  return int(_load_library().pallasvm_memory_limit())


def stats() -> dict:
  """Counters: `lowerings` (kernels lowered to pallasvm: each becomes an FFI
  call that runs on pallasvm), `compilations` (kernels compiled, i.e.
  in-process cache misses), `disk_cache_hits` (of those, modules read from
  the on-disk module cache instead of compiled) and `refusals` (kernels
  pallasvm refused at lowering time with UnsupportedError or
  CompileError)."""
  with _lock:
    return dict(_stats)


# ---------------------------------------------------------------------------
# Refusals (counted by _counting_refusals): the kernels the bridge would not
# run, for reports (the pytest plugin) that say which kernels of a suite
# pallasvm does not support yet, and why.
# ---------------------------------------------------------------------------

_refusals: list[tuple[str, str]] = []  # (exception class name, first line)


def _record_refusal(error: BaseException) -> None:
  lines = str(error).strip().splitlines()
  with _lock:
    _refusals.append((type(error).__name__, lines[0] if lines else ""))
    _stats["refusals"] += 1


def refusals(start: int = 0) -> list[tuple[str, str]]:
  """The refusals recorded since the process started, from the `start`th:
  (the exception's class name, the first line of its message) each."""
  with _lock:
    return _refusals[start:]


# ---------------------------------------------------------------------------
# The lowering
# ---------------------------------------------------------------------------


def _counting_refusals(rule):
  """`rule`, counting the kernels it refuses (stats()["refusals"]) and
  recording why (refusals()): a feature pallasvm lacks, a kernel its
  compiler finds wrong, or an error JAX's interpret mode would raise too
  (a bad dimension semantics, a dynamic parallel dimension)."""
  @functools.wraps(rule)
  def counted(*args, **kwargs):
    try:
      return rule(*args, **kwargs)
    except Exception as error:
      _record_refusal(error)
      raise
  return counted


def _refuse_mesh_kernel(ctx, what: str, name, mesh) -> None:
  """Kernels over a mesh other than a TPU TensorCore mesh (a GPU or
  SparseCore mesh) are refused, clearly, and never handed to JAX's
  interpreter."""
  where = export._location(types.SimpleNamespace(traceback=ctx.traceback))  # pylint: disable=protected-access
  raise UnsupportedError(
      f"{what}{f' {name!r}' if name else ''} at {where}: kernels over a"
      f" {type(mesh).__name__} are not supported by pallasvm (only"
      " pltpu.create_tensorcore_mesh's)")


def _on_core_mesh(params: dict, run_params):
  """A pallas_call that pl.core_map / pl.kernel(mesh=...) over a TensorCore
  mesh became, as interpret mode runs it: one grid point per core (the grid
  is the mesh), num_cores_or_threads the mesh's size, its dimension
  'parallel', visited in order. Returns (params, run_params) so."""
  from jax._src.pallas.mosaic import core as mosaic_core  # pylint: disable=g-import-not-at-top
  mesh = params["mesh"]
  cores = int(mesh.devices.shape[0])
  run_params = dataclasses.replace(run_params, num_cores_or_threads=cores)
  compiler_params = params.get("compiler_params")
  if not isinstance(compiler_params, mosaic_core.CompilerParams):
    compiler_params = mosaic_core.CompilerParams()
  if cores > 1:
    compiler_params = compiler_params.replace(
        dimension_semantics=("parallel",))
  return {**params, "compiler_params": compiler_params}, run_params


def _lowering_rule(default_params: pltpu.InterpretParams):
  @_counting_refusals
  def rule(ctx, *in_nodes, interpret, **params):
    run_params = (interpret if isinstance(interpret, pltpu.InterpretParams)
                  else default_params)
    mesh = params.get("mesh")
    on_core_mesh = mesh is not None
    if on_core_mesh:
      from jax._src.pallas.mosaic import core as mosaic_core  # pylint: disable=g-import-not-at-top
      if not isinstance(mesh, mosaic_core.TensorCoreMesh):
        _refuse_mesh_kernel(ctx, "pallas_call", params.get("name"), mesh)
      params, run_params = _on_core_mesh(params, run_params)
    attrs = _run_options(run_params)
    if params["jaxpr"].constvars:
      raise ValueError("Cannot lower a pallas_call with constants.")
    source_info = types.SimpleNamespace(traceback=ctx.traceback)
    contract_fma = bool(getattr(run_params, "contract_fma",
                                getattr(default_params, "contract_fma",
                                        False)))
    interchange = export.export_pallas_call(
        params, ctx.avals_in, source_info,
        skip_floating_point_ops=bool(run_params.skip_floating_point_ops),
        contract_fma=contract_fma,
        allow_hbm_allocation_in_run_scoped=bool(
            run_params.allow_hbm_allocation_in_run_scoped),
        buffer_bounds=run_params.buffer_bounds,
        fma_keeps_f16_rounding=contract_fma and not xla_contracts_f16())
    compiled = _compile_cached(interchange,
                               f"pallas_call {export.kernel_name(params)}")
    rule_ctx = ctx
    ctx, in_nodes = _on_devices(ctx, in_nodes, attrs, params)
    call = functools.partial(
        jax.ffi.ffi_lowering(FFI_TARGET), module_key=compiled.key,
        module=compiled.module,
        grid_coordinates=(np.zeros(len(params["grid_mapping"].grid), np.int32)
                          if on_core_mesh else
                          _grid_coordinates(params, run_params)),
        **attrs)
    if run_params.grid_point_recorder is None and not run_params.detect_races:
      _init_jax_races(run_params.num_cores_or_threads)
      results = call(ctx, *in_nodes)
    else:
      results = _call_with_reports(ctx, in_nodes, call, params, run_params)
    # A pallas_call in JAX's interpret mode carries the ordered IO effects
    # of its callbacks; pallasvm has none, so the tokens pass through.
    if rule_ctx.tokens_in is not None and rule_ctx.tokens_out is None:
      rule_ctx.set_tokens_out(rule_ctx.tokens_in)
    with _lock:
      _stats["lowerings"] += 1
    return results
  return rule


def _call_with_reports(ctx, in_nodes, call, params, run_params):
  """The FFI call with more results after the kernel's outputs, then host
  callbacks that report them (after the kernel has run, not while it runs):

  - grid_point_recorder: the grid points in the order pallasvm visited them
    (RunOptions::grid_point_record), handed to the recorder one by one as
    interpret mode calls it: recorder(token, grid_point, core_id), here
    with a placeholder token (np.int32(0)), grid_point an int32 numpy array
    and core_id an np.int32. Each core's points come in its visit order,
    core 0's first (interpret mode interleaves cores as they run).
  - detect_races: the number of racy HBM elements (RunOptions::detect_races;
    the handler prints the races). As interpret mode does for each call,
    JAX's `races` state is replaced, with races_found set from the count,
    so `interpret_pallas_call.races.races_found` reads as under JAX."""
  recorder = run_params.grid_point_recorder
  extra_avals = []
  if recorder is not None:
    grid = tuple(params["grid_mapping"].grid)
    if not all(isinstance(d, (int, np.integer)) for d in grid):
      raise NotImplementedError(
          "pallasvm does not implement InterpretParams.grid_point_recorder"
          f" for a dynamic grid {grid} yet")
    extra_avals.append(jax.core.ShapedArray(
        (math.prod(grid), len(grid) + 1), np.int32))
  if run_params.detect_races:
    extra_avals.append(jax.core.ShapedArray((), np.int32))
  outs = call(ctx.replace(avals_out=[*ctx.avals_out, *extra_avals]),
              *in_nodes)
  results, extras = outs[:len(ctx.avals_out)], outs[len(ctx.avals_out):]

  def replay(points):
    for row in np.asarray(points):
      recorder(np.int32(0), row[:-1], row[-1])

  def set_races(count):
    _set_jax_races(int(count), run_params.num_cores_or_threads)

  def emit(*values):
    values = list(values)
    if recorder is not None:
      jax.experimental.io_callback(replay, None, values.pop(0), ordered=False)
    if run_params.detect_races:
      jax.experimental.io_callback(set_races, None, values.pop(0),
                                   ordered=False)
    return []

  mlir.lower_fun(emit, multiple_results=True)(
      ctx.replace(avals_in=extra_avals, avals_out=[]), *extras)
  return results


_race_state = {"racy_elements": 0}


def _set_jax_races(racy_elements: int, num_cores: int) -> None:
  from jax._src.pallas.mosaic.interpret import interpret_pallas_call as ipc  # pylint: disable=g-import-not-at-top
  from jax._src.pallas.mosaic.interpret import race_detection_state  # pylint: disable=g-import-not-at-top
  state = race_detection_state.RaceDetectionState(num_cores=num_cores)
  state.races_found = racy_elements > 0
  with _lock:
    ipc.races = state
    _race_state["racy_elements"] = racy_elements


def _init_jax_races(num_cores: int) -> None:
  """As interpret mode's first call after pltpu.reset_tpu_interpret_mode_state
  does, makes JAX's `races` state a fresh one (no races) if there is none,
  so that reading `interpret_pallas_call.races.races_found` works after a
  call without detect_races. (Done when the call is lowered: a call that
  reuses a compiled function after a reset leaves it None.)"""
  from jax._src.pallas.mosaic.interpret import interpret_pallas_call as ipc  # pylint: disable=g-import-not-at-top
  from jax._src.pallas.mosaic.interpret import race_detection_state  # pylint: disable=g-import-not-at-top
  with _lock:
    if ipc.races is None:
      ipc.races = race_detection_state.RaceDetectionState(num_cores=num_cores)


def races_found() -> bool:
  """Whether the last pallas_call run with detect_races=True found races
  (also readable, as under JAX, from interpret_pallas_call.races)."""
  with _lock:
    return _race_state["racy_elements"] > 0


def _mpmd_map_rule(ctx, *in_nodes, **params):
  """CPU lowering of mpmd_map, the primitive pl.kernel(mesh=...) binds and
  pl.core_map discharges to: JAX's own fallback, which makes it a
  pallas_call over the mesh (lowered by pallasvm's rule, see
  _routed_pallas_call_lowering); a mesh other than a TensorCore mesh is
  refused there."""
  from jax._src.pallas.mosaic import core as mosaic_core  # pylint: disable=g-import-not-at-top
  for mesh in params.get("meshes", ()):
    if not isinstance(mesh, mosaic_core.TensorCoreMesh):
      _counting_refusals(_refuse_mesh_kernel)(ctx, "mpmd_map",
                                              params.get("name"), mesh)
  # (Not counted here: the pallas_call rule it reaches counts its own.)
  return mpmd_lib._mpmd_map_fallback_lowering(ctx, *in_nodes, **params)  # pylint: disable=protected-access


def _routed_pallas_call_lowering(rule, original):
  """A stand-in for pallas_call._pallas_call_lowering, which JAX also calls
  directly (mpmd_map's fallback lowering does): on CPU it is pallasvm's
  rule, so no path reaches JAX's interpreter; elsewhere JAX's own."""
  def lowering(ctx, *in_nodes, **params):
    if list(ctx.module_context.platforms) == ["cpu"]:
      return rule(ctx, *in_nodes, **params)
    return original(ctx, *in_nodes, **params)
  return lowering


_prim = pallas_call_lib.pallas_call_p
_mpmd_prim = mpmd_lib.mpmd_map_p


@dataclasses.dataclass(frozen=True)
class _Replaced:
  """What one install() replaced, for uninstall() to put back."""
  cpu_rules: dict              # primitive -> its CPU rule before, or None
  uncacheable: frozenset       # those primitives already uncacheable
  pallas_call_lowering: object  # pallas_call._pallas_call_lowering before


# A stack, one entry per install().
_installed: list[_Replaced] = []


def install(params: pltpu.InterpretParams | None = None) -> None:
  """Routes pallas_calls on the CPU backend to pallasvm (see the module
  docstring). `params` (default: InterpretParams()) apply to pallas_calls
  that do not bring their own TPU InterpretParams. Raises BridgeError if the
  library is not built, NotImplementedError for an unimplemented option."""
  params = InterpretParams() if params is None else params
  _run_options(params)  # validate now, not at the first lowering
  xla_contracts_f16()  # probed here, outside any lowering, and cached
  lib = _load_library()
  _register_target(lib)
  rule = _lowering_rule(params)
  with _lock:
    cpu_rules = mlir._platform_specific_lowerings["cpu"]
    prims = (_prim, _mpmd_prim)
    _installed.append(_Replaced(
        cpu_rules={p: cpu_rules.get(p) for p in prims},
        uncacheable=frozenset(p for p in prims
                              if p in mlir._uncacheable_primitives),
        pallas_call_lowering=pallas_call_lib._pallas_call_lowering))
    # Not cacheable: JAX gives an uncached lowering rule the equation's
    # traceback, which locates the pallas_call in errors. (Our own cache
    # makes lowering the same kernel twice cheap.)
    mlir.register_lowering(_prim, rule, platform="cpu", cacheable=False)
    mlir.register_lowering(_mpmd_prim, _mpmd_map_rule, platform="cpu",
                           cacheable=False)
    pallas_call_lib._pallas_call_lowering = _routed_pallas_call_lowering(
        rule, _installed[-1].pallas_call_lowering)
  jax.clear_caches()


def uninstall() -> None:
  """Undoes the last `install`: restores the CPU lowerings that were there
  before (JAX's own: interpret mode only). A no-op if not installed."""
  with _lock:
    if not _installed:
      return
    replaced = _installed.pop()
    cpu_rules = mlir._platform_specific_lowerings["cpu"]
    for prim, entry in replaced.cpu_rules.items():
      if entry is None:
        cpu_rules.pop(prim, None)
      else:
        cpu_rules[prim] = entry
      if prim not in replaced.uncacheable:
        mlir._uncacheable_primitives.discard(prim)
    pallas_call_lib._pallas_call_lowering = replaced.pallas_call_lowering
  jax.clear_caches()


def is_installed() -> bool:
  with _lock:
    return bool(_installed)


@contextlib.contextmanager
def enabled(params: pltpu.InterpretParams | None = None):
  """`install(params)` for the duration of a `with` block."""
  install(params)
  try:
    yield
  finally:
    uninstall()
