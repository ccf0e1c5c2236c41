"""Makes the `pallasvm` Python package (tools/pallasvm) importable in tests,
and keeps each test's call-phase report on its item (`item.call_report`) so
that a fixture's teardown can tell whether the test body passed."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
  report = yield
  if report.when == "call":
    item.call_report = report
  return report
