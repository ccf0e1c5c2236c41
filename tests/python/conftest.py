"""Makes the `pallasvm` Python package (tools/pallasvm) importable in tests."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools"))
