"""pallasvm: run Pallas TPU kernels on a CPU (Python side).

`export_kernels` writes kernel interchange files; the JAX bridge
(`install`, `uninstall`, `enabled`, `InterpretParams`, in bridge.py) runs
pallas_calls inside jax.jit on pallasvm. The bridge is imported on first use,
so the exporter works without the bridge's shared library.
"""

from pallasvm.errors import CompileError, ExportError, UnsupportedError
from pallasvm.export import export_kernels

_BRIDGE_NAMES = frozenset({
    "BridgeError", "InterpretParams", "compile_interchange",
    "enabled", "install", "is_installed", "library_path", "lowering_rules", "races_found",
    "stats",
    "uninstall",
})

__all__ = ["CompileError", "ExportError", "UnsupportedError", "export_kernels",
           *sorted(_BRIDGE_NAMES)]


def __getattr__(name):
  if name in _BRIDGE_NAMES:
    from pallasvm import bridge
    return getattr(bridge, name)
  raise AttributeError(f"module 'pallasvm' has no attribute {name!r}")
