"""pallasvm: run Pallas TPU kernels on a CPU (Python side)."""

from pallasvm.export import ExportError, export_kernels

__all__ = ["ExportError", "export_kernels"]
