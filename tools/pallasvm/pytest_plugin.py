"""A pytest plugin: runs an existing test suite with its pallas_calls on
pallasvm and reports, per test, where its kernels ran.

    pytest --pallasvm tests/                          # package installed (pytest11)
    pytest -p pallasvm.pytest_plugin tests/           # any checkout on sys.path
    pytest --pallasvm --pallasvm-report=report.json tests/

The plugin is inert unless `--pallasvm` is given or it is named with
`-p pallasvm.pytest_plugin` (or in $PYTEST_PLUGINS): installing the package
registers it with every pytest run, which must not change them. When
active, `pallasvm.install()` holds for the whole session, so every
pallas_call JAX lowers for CPU runs on pallasvm, with its own
`interpret=pltpu.InterpretParams(...)` or under
`pltpu.force_tpu_interpret_mode()` included. JAX's own interpreters (TPU
interpret mode and the generic HLO interpreter) are wrapped for the session:
a call to either means a kernel escaped pallasvm, and the report says so
loudly.

Each test gets a verdict, from what happened while it (its setup, call and
teardown) ran:

- `escaped`: some kernel ran on JAX's interpreter;
- `refused`: the bridge refused some kernel (the reason is the exception it
  raised, class and first line: pallasvm.UnsupportedError, CompileError or
  another NotImplementedError); also a failed test whose exception is one of
  pallasvm's, or was raised through the pallasvm package, though no refusal
  was recorded;
- `pallasvm`: its kernels were lowered to pallasvm and none was refused;
- `no kernel`: it lowered no pallas_call.

The counts are lowerings, so JAX's caches are cleared before every test:
a kernel another test already compiled is lowered again and counted where
it runs. Each test's record travels in its teardown report's
`user_properties` (key "pallasvm"), so the report is built from test
reports alone (and also works where they come from other processes, as
with pytest-xdist).

What this module knows: pytest's hooks, the bridge's counters
(`bridge.stats`, `bridge.refusals`) and the names of JAX's interpreter
entry points. It does not know how kernels are compiled or run.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import pathlib
import re

import pytest

_MODULE = "pallasvm.pytest_plugin"
_PROPERTY = "pallasvm"  # the user_properties key of a test's record

# JAX's interpreter entry points: (module, attribute). A call to either
# while the plugin is active is a kernel that did not run on pallasvm.
_JAX_INTERPRETERS = (
    ("jax._src.pallas.mosaic.interpret.interpret_pallas_call",
     "interpret_pallas_call"),
    ("jax._src.pallas.hlo_interpreter", "pallas_call_hlo_interpret"),
)

# Verdicts, in the order the report lists them.
ESCAPED, REFUSED, PALLASVM, NO_KERNEL = (
    "escaped", "refused", "pallasvm", "no kernel")
VERDICTS = (ESCAPED, REFUSED, PALLASVM, NO_KERNEL)


def pytest_addoption(parser):
  group = parser.getgroup("pallasvm", "run pallas_calls on pallasvm")
  group.addoption(
      "--pallasvm", action="store_true", default=False,
      help="run every pallas_call on pallasvm (pallasvm.install() for the"
      " session) and report per test whether its kernels ran on pallasvm,"
      " were refused, or escaped to JAX's interpreter")
  group.addoption(
      "--pallasvm-report", metavar="PATH", default=None,
      help="also write the pallasvm report as JSON to PATH (implies"
      " --pallasvm)")


def _requested(config) -> bool:
  named = [*(config.getoption("plugins", None) or []),
           *os.environ.get("PYTEST_PLUGINS", "").split(",")]
  return (config.getoption("pallasvm") or
          config.getoption("pallasvm_report") is not None or
          _MODULE in (name.strip() for name in named))


def pytest_configure(config):
  if _requested(config):
    config.pluginmanager.register(_Session(config), "pallasvm-session")


# ---------------------------------------------------------------------------
# The session: pallasvm installed, JAX's interpreters watched, tests counted
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Counters:
  """What happened in this process so far: the bridge's lowerings and
  refusals, and the calls to JAX's interpreters."""
  lowerings: int
  refusals: int
  escapes: int


class _Session:

  def __init__(self, config):
    import pallasvm  # pylint: disable=g-import-not-at-top
    from pallasvm import bridge  # pylint: disable=g-import-not-at-top
    self._config = config
    self._bridge = bridge
    self._escapes: list[str] = []  # kernel names, one per interpreter call
    self._restore = []
    self._records: dict[str, dict] = {}  # nodeid -> record
    self._outcomes: dict[str, str] = {}  # nodeid -> outcome
    try:
      pallasvm.install()
    except bridge.BridgeError as error:
      raise pytest.UsageError(f"--pallasvm: {error}") from None
    self._watch_jax_interpreters()
    self._start = self._counters()

  # --- JAX's interpreters -------------------------------------------------

  def _watch_jax_interpreters(self):
    import importlib  # pylint: disable=g-import-not-at-top
    for module_name, attribute in _JAX_INTERPRETERS:
      try:
        module = importlib.import_module(module_name)
      except ImportError:
        continue
      original = getattr(module, attribute)
      module.__dict__[attribute] = self._escape_recorder(original)
      self._restore.append((module, attribute, original))

  def _escape_recorder(self, interpreter):
    escapes = self._escapes

    @functools.wraps(interpreter)
    def recording(*args, **kwargs):
      name = kwargs.get("name") or getattr(
          getattr(kwargs.get("jaxpr"), "debug_info", None), "func_name",
          None) or "kernel"
      escapes.append(f"{name} ({interpreter.__module__.rsplit('.', 1)[-1]})")
      return interpreter(*args, **kwargs)
    return recording

  def pytest_unconfigure(self, config):
    del config
    for module, attribute, original in reversed(self._restore):
      module.__dict__[attribute] = original
    self._bridge.uninstall()

  # --- Per test -----------------------------------------------------------

  def _counters(self) -> _Counters:
    stats = self._bridge.stats()
    return _Counters(stats["lowerings"], stats["refusals"],
                     len(self._escapes))

  @pytest.hookimpl(wrapper=True)
  def pytest_runtest_setup(self, item):
    # A wrapper starts before every other plugin's setup (which may skip).
    import jax  # pylint: disable=g-import-not-at-top
    jax.clear_caches()
    item.stash[_START] = self._counters()
    item.stash[_ERRORS] = []
    return (yield)

  @pytest.hookimpl(wrapper=True)
  def pytest_runtest_makereport(self, item, call):
    if call.excinfo is not None and _ERRORS in item.stash:
      error = _pallasvm_error(call.excinfo.value)
      if error is not None:
        item.stash[_ERRORS].append(error)
    if call.when == "teardown" and _START in item.stash:
      item.user_properties.append((_PROPERTY, self._record(item)))
    return (yield)

  def _record(self, item) -> dict:
    start, end = item.stash[_START], self._counters()
    refused = [{"kind": kind, "message": message} for kind, message in
               self._bridge.refusals(start.refusals)[
                   :end.refusals - start.refusals]]
    if not refused:
      refused = item.stash[_ERRORS][:1]
    escaped = self._escapes[start.escapes:end.escapes]
    lowered = end.lowerings - start.lowerings
    if escaped:
      verdict = ESCAPED
    elif refused:
      verdict = REFUSED
    elif lowered:
      verdict = PALLASVM
    else:
      verdict = NO_KERNEL
    return {"verdict": verdict, "lowered": lowered, "refused": refused,
            "escaped": escaped}

  # --- The report ---------------------------------------------------------

  def pytest_runtest_logreport(self, report):
    outcome = _outcome(report)
    if outcome is not None:
      # The first phase that failed or skipped decides; else the call's.
      previous = self._outcomes.get(report.nodeid)
      if previous is None or previous == "passed":
        self._outcomes[report.nodeid] = outcome
    for key, value in report.user_properties:
      if key == _PROPERTY and report.when == "teardown":
        self._records[report.nodeid] = value

  def report(self) -> dict:
    """The JSON report: one entry per test, totals, refusal reasons."""
    tests = []
    for nodeid, record in self._records.items():
      tests.append({"nodeid": nodeid,
                    "outcome": self._outcomes.get(nodeid, "unknown"),
                    **record})
    totals = {verdict: collections.Counter() for verdict in VERDICTS}
    reasons = collections.Counter()
    for test in tests:
      totals[test["verdict"]][test["outcome"]] += 1
      if test["verdict"] == REFUSED:
        reasons[_reason(test["refused"][0])] += 1
    outside = self._counters()
    outside_lowered = (outside.lowerings - self._start.lowerings -
                       sum(t["lowered"] for t in tests))
    return {
        "tests": tests,
        "totals": {
            "tests": len(tests),
            **{verdict: {"tests": sum(counts.values()), **dict(counts)}
               for verdict, counts in totals.items()},
            "kernels_lowered": sum(t["lowered"] for t in tests),
            "kernels_refused": sum(len(t["refused"]) for t in tests),
            "kernels_escaped": sum(len(t["escaped"]) for t in tests),
        },
        "refusal_reasons": dict(reasons.most_common()),
        # Lowered outside any test (e.g. at import), in this process.
        "kernels_lowered_outside_tests": max(outside_lowered, 0),
    }

  def pytest_terminal_summary(self, terminalreporter):
    if self._config.option.collectonly:
      return
    report = self.report()
    path = self._config.getoption("pallasvm_report")
    if path:
      pathlib.Path(path).write_text(json.dumps(report, indent=2) + "\n")
    _write_summary(terminalreporter, report, path)


_START = pytest.StashKey[_Counters]()
_ERRORS = pytest.StashKey[list]()


def _outcome(report) -> str | None:
  if hasattr(report, "wasxfail"):
    return "xfailed" if report.skipped else "xpassed"
  if report.when == "call" or not report.passed:
    if report.failed and report.when != "call":
      return "error"
    return report.outcome
  return None


def _pallasvm_error(error: BaseException) -> dict | None:
  """{"kind", "message"} if `error` (or an exception it was raised from)
  is pallasvm's: one of its exception classes (pallasvm.errors, which the
  bridge counts as refusals), or any exception raised through the pallasvm
  package (e.g. a bug in the bridge, which it does not count)."""
  from pallasvm import bridge, errors  # pylint: disable=g-import-not-at-top
  package = str(pathlib.Path(bridge.__file__).parent)
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    ours = isinstance(error, (errors.CompileError, bridge.BridgeError))
    frame = error.__traceback__
    while frame is not None and not ours:
      ours = frame.tb_frame.f_code.co_filename.startswith(package)
      frame = frame.tb_next
    if ours:
      lines = str(error).strip().splitlines()
      return {"kind": type(error).__name__,
              "message": lines[0] if lines else ""}
    error = error.__cause__ or error.__context__
  return None


def _reason(refusal: dict) -> str:
  """A refusal's reason, for counting: class and message, with source
  locations (path:line) and kernel names left out so that one missing
  feature counts once however many tests hit it."""
  message = re.sub(r"^(kernel '[^']*'|pallas_call \S+): ", "",
                   refusal["message"])
  message = re.sub(r" at \S+:\d+( \(in [^)]*\))?", "", message)
  return f"{refusal['kind']}: {message}"


def _write_summary(tr, report, path) -> None:
  totals = report["totals"]
  tr.write_sep("=", "pallasvm: where each test's kernels ran")
  for test in sorted(report["tests"],
                     key=lambda t: (VERDICTS.index(t["verdict"]),
                                    t["nodeid"])):
    if test["verdict"] == ESCAPED:
      detail = "ran on JAX's interpreter: " + ", ".join(test["escaped"])
    elif test["verdict"] == REFUSED:
      first = test["refused"][0]
      detail = f"{first['kind']}: {first['message']}"
    elif test["verdict"] == PALLASVM:
      detail = f"{test['lowered']} kernel{'s' * (test['lowered'] != 1)}"
    else:
      detail = ""
    tr.write_line(f"{test['verdict']:<9} {test['outcome']:<8} "
                  f"{test['nodeid']}  {detail}".rstrip(),
                  red=test["verdict"] == ESCAPED)

  def count(verdict):
    counts = totals[verdict]
    parts = ", ".join(f"{n} {outcome}" for outcome, n in counts.items()
                      if outcome != "tests")
    return f"{counts['tests']} {verdict}" + (f" ({parts})" if parts else "")

  tr.write_line(
      f"pallasvm totals: {totals['tests']} tests: "
      + "; ".join(count(v) for v in (PALLASVM, REFUSED, NO_KERNEL, ESCAPED))
      + f". Kernels: {totals['kernels_lowered']} lowered to pallasvm,"
      f" {totals['kernels_refused']} refused,"
      f" {totals['kernels_escaped']} ran on JAX's interpreter.")
  if report["refusal_reasons"]:
    tr.write_line("pallasvm refusals by reason (tests):")
    for reason, n in report["refusal_reasons"].items():
      tr.write_line(f"  {n:4d}  {reason}")
  if report["kernels_lowered_outside_tests"]:
    tr.write_line(f"pallasvm: {report['kernels_lowered_outside_tests']}"
                  " kernels lowered outside any test")
  if totals[ESCAPED]["tests"]:
    tr.write_sep(
        "!", f"{totals[ESCAPED]['tests']} TESTS RAN KERNELS ON JAX'S"
        " INTERPRETER, NOT ON PALLASVM", red=True, bold=True)
    for test in report["tests"]:
      if test["verdict"] == ESCAPED:
        tr.write_line(f"  {test['nodeid']}: {', '.join(test['escaped'])}",
                      red=True, bold=True)
  if path:
    tr.write_line(f"pallasvm report written to {path}")
