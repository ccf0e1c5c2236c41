"""The exceptions pallasvm raises from Python.

A kernel pallasvm cannot run is refused at lowering time, never run some
other way: `UnsupportedError` says that it uses a feature pallasvm lacks yet
(a `NotImplementedError`, as JAX's own interpret mode raises for what it
lacks), `CompileError` that the compiler found the kernel wrong. Both name
the primitive or feature and its source line.
"""


class CompileError(ValueError):
  """pallasvm's compiler refused a kernel (the message names the primitive
  and its source line). A ValueError, as JAX raises for a kernel that is
  wrong (e.g. reading an HBM ref directly)."""


class UnsupportedError(CompileError, NotImplementedError):
  """The kernel uses a primitive or feature that pallasvm does not support
  yet (the message names it and where it is)."""


class ExportError(UnsupportedError):
  """A kernel uses something the interchange cannot express yet."""
