"""Makes the `pallasvm` Python package (tools/pallasvm) importable in tests,
gives the bridge's module cache a directory of its own, and keeps each
test's call-phase report on its item (`item.call_report`) so
that a fixture's teardown can tell whether the test body passed."""
import os
import pathlib
import sys
import tempfile

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools"))

# The bridge's on-disk module cache: a fresh directory per test process, so
# that the suite neither fills the user's cache nor reads modules an older
# build wrote there.
os.environ.setdefault("PALLASVM_CACHE_DIR",
                      tempfile.mkdtemp(prefix="pallasvm-test-cache-"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
  report = yield
  if report.when == "call":
    item.call_report = report
  return report
