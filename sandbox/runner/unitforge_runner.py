"""unitforge fork-server runner: runs untrusted pytest suites, one forked child per run.

The Rust side starts one of these per worker (a local process, or inside a container) and talks
to it over stdin/stdout with newline-delimited JSON (protocol described in docs/protocol.md).

Why a fork server: importing and configuring pytest costs ~150 ms on a slow core, a forked child
that reuses that configuration costs ~15 ms. The server imports pytest and builds one pytest
`Config` (plugins, options, rootdir pinned) at start; each run forks a child that loads the code
under test from memory, collects the test file and runs pytest's own session hooks, so fixtures,
parametrize, `pytest.raises`, `approx` and assertion rewriting behave exactly as in pytest.

Trust model: this server process is trusted and never executes job code. Each child is untrusted
the moment it loads job code: it may patch pytest, our plugin, `time`, or exit early. The server
therefore measures CPU time and memory from outside (`wait4`), enforces the wall timeout by killing
the child's process group, caps output, and accepts a report only if the child finished its
session. The Rust side then checks the report against the exit status and the static test count.
"""

import ast
import builtins
import dis
import gc
import json
import marshal
import operator
import os
import resource
import select
import shutil
import signal
import sys
import textwrap
import time
import types

PROTOCOL_VERSION = 3

# Exit statuses of a child; the Rust side checks them against the report.
CHILD_ALL_PASSED = 0
CHILD_SOME_FAILED = 1
CHILD_INTERNAL_ERROR = 3

# Audit events a test may never raise: process creation, network, native code, introspection of
# the interpreter's object graph, and lifting resource limits.
FORBIDDEN_EVENTS = frozenset(
    {
        "os.fork",
        "os.forkpty",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.kill",
        "os.killpg",
        "subprocess.Popen",
        "pty.spawn",
        "socket.__new__",
        "socket.connect",
        "socket.bind",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.addressof",
        "ctypes.call_function",
        "ctypes.cdata",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "resource.setrlimit",
        "resource.prlimit",
        "sys.settrace",
        "sys.setprofile",
        "sys.remote_exec",
        "os.setuid",
        "os.setgid",
    }
)
# Events whose first argument is a path that must stay inside the job's work directory.
PATH_WRITE_EVENTS = frozenset(
    {
        "os.remove",
        "os.rmdir",
        "os.rename",
        "os.mkdir",
        "os.chmod",
        "os.chown",
        "os.symlink",
        "os.link",
        "os.truncate",
        "os.utime",
        "shutil.rmtree",
        "shutil.copyfile",
        "shutil.move",
    }
)
# Modules whose functions and classes tests must not replace.
PROTECTED_MODULE_PREFIXES = ("_pytest", "pytest", "pluggy", "unitforge_runner", "__main__")

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class SandboxViolation(PermissionError):
    """Raised inside a child when job code does something the sandbox policy forbids."""


class TestBudgetExceeded(BaseException):
    """Raised in a test that ran past its time budget. A BaseException, so that `except
    Exception` in the code under test does not swallow it; the timer also keeps firing."""


def pytest_hookimpl_wrapper(function):
    """Mark a plugin method as a new-style hook wrapper (pluggy's `wrapper=True`)."""
    import pluggy

    return pluggy.HookimplMarker("pytest")(wrapper=True)(function)


class ResultsPlugin:
    """Collects per-test outcomes inside the child. Registered once, in the server."""

    def __init__(self):
        self.reset(0, False, None, None, None)

    def reset(self, seed, shuffle, policy, first, test_budget, only=None, coverage=None, detail=False):
        self.seed = seed
        self.detail = detail  # failure text and oracle evidence for each failing test
        self.current = None  # the node id whose call is running
        self.compared = {}  # node id -> the failing comparison's evidence
        self.shuffle = shuffle
        self.policy = policy
        self.first = first or []  # node ids to run first, in this order
        self.only = None if only is None else set(only)  # node ids to run; None: all
        self.coverage = coverage  # a _LineCoverage in a coverage run, else None
        self.test_budget = test_budget  # CPU seconds per test call, or None
        self.over_budget = set()
        self.tests = {}
        self.order = []
        self.collect_errors = []

    def pytest_collection_modifyitems(self, session, config, items):
        if self.only is not None:
            items[:] = [item for item in items if item.nodeid in self.only]
        if self.shuffle:
            import random

            random.Random(self.seed).shuffle(items)
        if self.first:
            rank = {nodeid: index for index, nodeid in enumerate(self.first)}
            items.sort(key=lambda item: rank.get(item.nodeid, len(rank)))

    @pytest_hookimpl_wrapper
    def pytest_runtest_setup(self, item):
        return (yield from self._covered_by(item.nodeid))

    @pytest_hookimpl_wrapper
    def pytest_fixture_setup(self, fixturedef, request):
        # A fixture wider than one test (module, class, session scope) is set up during the
        # first test that needs it and then serves others: what it runs counts for every test.
        shared = fixturedef.scope != "function"
        return (yield from self._covered_by(None if shared else request.node.nodeid))

    def _covered_by(self, nodeid):
        """Attribute the lines run inside this hook to test `nodeid` (None: to every test)."""
        if self.coverage is None:
            return (yield)
        previous = self.coverage.attribute_to(nodeid)
        try:
            return (yield)
        finally:
            self.coverage.attribute_to(previous)

    @pytest_hookimpl_wrapper
    def pytest_runtest_call(self, item):
        self.current = item.nodeid
        if not self.test_budget:
            return (yield from self._covered_by(item.nodeid))

        def expire(signum, frame):
            self.over_budget.add(item.nodeid)
            raise TestBudgetExceeded("test ran past its %.3f s budget" % self.test_budget)

        # CPU time, not wall time: a loaded machine slows a test down without making it spend
        # more CPU, so the budget can be tight without mistaking load for a loop. (A test that
        # sleeps in a loop spends none; the run's wall limit stops it.)
        previous = signal.signal(signal.SIGPROF, expire)
        # Repeat every 20 ms after the budget, in case the code under test catches it.
        signal.setitimer(signal.ITIMER_PROF, self.test_budget, 0.02)
        try:
            return (yield from self._covered_by(item.nodeid))
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            signal.signal(signal.SIGPROF, previous)

    def pytest_assertrepr_compare(self, config, op, left, right):
        """A failing `assert a OP b`: keep both sides as Python literals where they are ones
        (the evidence oracle repair rewrites an expected value from); pytest explains it."""
        if self.detail and self.current is not None and self.current not in self.compared:
            self.compared[self.current] = {
                "op": op,
                "line": _test_file_line(sys._getframe(1)),
                "left": _literal(left),
                "right": _literal(right),
            }
        return None

    @pytest_hookimpl_wrapper
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if self.detail and report.failed and call.excinfo is not None:
            try:
                report.unitforge_failure = _failure_text(call.excinfo)
                report.unitforge_evidence = _evidence(call.excinfo, self.compared.get(item.nodeid))
            except Exception:  # noqa: BLE001 - the plain report stands
                pass
        return report

    def pytest_collectreport(self, report):
        if report.failed:
            self.collect_errors.append(
                {"nodeid": report.nodeid, "message": _short(report.longreprtext)}
            )

    def pytest_runtest_logreport(self, report):
        if self.policy is not None and report.when == "teardown":
            self.policy.check_snapshot(hot_only=True)
        entry = self.tests.get(report.nodeid)
        if entry is None:
            entry = {"nodeid": report.nodeid, "outcome": "passed", "duration_s": 0.0, "message": ""}
            self.tests[report.nodeid] = entry
            self.order.append(report.nodeid)
        entry["duration_s"] += float(report.duration)
        outcome = "timeout" if report.nodeid in self.over_budget else _phase_outcome(report)
        if outcome != "passed" and entry["outcome"] == "passed":
            entry["outcome"] = outcome
            failure = getattr(report, "unitforge_failure", None)
            entry["message"] = _short(failure if failure is not None else report.longreprtext)
            evidence = getattr(report, "unitforge_evidence", None)
            if evidence:
                entry["evidence"] = evidence


class _QuietTerminal:
    """Stands in for pytest's terminal reporter (disabled): only its writer is ever asked for."""

    def __init__(self, writer):
        self._tw = writer


def _phase_outcome(report):
    """Reduce one phase's report to a test outcome; anything but a clean pass is not a pass."""
    if hasattr(report, "wasxfail"):
        return "xpassed" if report.passed else "xfailed"
    if report.passed:
        return "passed"
    if report.skipped:
        return "skipped"
    return "failed" if report.when == "call" else "error"


def _in_test_file(path):
    name = os.path.basename(str(path))
    return name.startswith("test_") and name.endswith(".py")


def _test_file_line(frame):
    """The line of the innermost frame of the test file at or above `frame`, or None."""
    while frame is not None:
        if _in_test_file(frame.f_code.co_filename):
            return frame.f_lineno
        frame = frame.f_back
    return None


def _literal(value):
    """`repr(value)` when it is a Python literal that reads back as an equal value of the same
    type (numbers, strings, bytes, None, booleans, and containers of those), else None."""
    try:
        text = repr(value)
        if len(text) > 400:
            return None
        back = ast.literal_eval(text)
        return text if type(back) is type(value) and back == value else None
    except Exception:  # noqa: BLE001 - an unprintable or unreadable value is no evidence
        return None


def _failure_text(excinfo):
    """What a failing test did, as its author needs it: the frames of the test file and the code
    under test (file:line, the test's own statement) and the exception with pytest's explanation;
    never the runner's or pytest's own frames."""
    lines = []
    for entry in excinfo.traceback:
        path = str(entry.path)
        name = os.path.basename(path)
        if _in_test_file(path):
            lines.append("%s:%d: in %s" % (name, entry.lineno + 1, entry.name))
            try:
                statement = textwrap.dedent(str(entry.statement)).strip("\n")
            except Exception:  # noqa: BLE001
                statement = ""
            lines.extend("    " + line for line in statement.splitlines()[:6])
        elif name == "%s.py" % _CUT_MODULE[0]:
            lines.append("%s:%d: in %s" % (name, entry.lineno + 1, entry.name))
    message = str(excinfo.value)
    lines.append("%s: %s" % (excinfo.typename, message) if message else excinfo.typename)
    return "\n".join(lines)


def _evidence(excinfo, compared):
    """What oracle repair may use: the failing line of the test file, the failing comparison's
    sides as literals, and the type of an exception that escaped, when it is a builtin one."""
    line = None
    for entry in excinfo.traceback:
        if _in_test_file(entry.path):
            line = entry.lineno + 1
    evidence = {"line": line}
    if compared is not None and isinstance(excinfo.value, AssertionError):
        evidence["compared"] = compared
    raised = excinfo.type
    if getattr(builtins, raised.__name__, None) is raised and not isinstance(excinfo.value, AssertionError):
        evidence["raised"] = raised.__name__
    return evidence


# The module name of the code under test in this child (set before its tests run).
_CUT_MODULE = [None]


def _short(text, limit=2000):
    """At most `limit` characters, keeping the end, where a traceback names the exception."""
    text = str(text or "")
    return text if len(text) <= limit else "..." + text[-limit:]


class Server:
    def __init__(self, root, in_container=False):
        # In a container every process but this server and init belongs to a job, so after each
        # run the server can kill them all (`kill(-1)`). Never on a host: that would be everyone.
        self.in_container = in_container
        self.root = os.path.abspath(root)
        self.workdir = os.path.join(self.root, "work")
        self.output_path = os.path.join(self.root, "output.log")
        self.ini_path = os.path.join(self.root, "unitforge-pytest.ini")
        _reset_dir(self.workdir)
        with open(self.ini_path, "w") as ini:
            ini.write("[pytest]\n")
        self.plugin = ResultsPlugin()
        self.pid = os.getpid()
        self.libc = _load_libc()
        self.rewrite_cache = {}
        self.config = self._configure_pytest()
        self.session = self._start_session()
        self.protected = _Snapshot()
        self.allowed_read_roots = _allowed_read_roots(self.root)

    def _configure_pytest(self):
        import _pytest.assertion.rewrite as rewrite
        import _pytest.config

        args = [
            "-p", "no:cacheprovider",
            "-p", "no:terminal",
            "-p", "no:stepwise",
            "-p", "no:pastebin",
            "-p", "no:junitxml",
            "-p", "no:debugging",
            "-p", "no:faulthandler",
            "--noconftest",
            "--capture=sys",
            "--rootdir", self.workdir,
            "-c", self.ini_path,
            "-o", "addopts=",
            "-o", "python_files=test_*.py",
            "-o", "tmp_path_retention_count=0",
            "-W", "ignore::pytest.PytestUnraisableExceptionWarning",
            self.workdir,
        ]  # fmt: skip
        config = _pytest.config._prepareconfig(args, plugins=[self.plugin])
        config._do_configure()
        # pytest's assertion explanations of sequences and dicts ask the terminal reporter for
        # its writer (to highlight diffs); without one (`no:terminal`) a failing `assert a == b`
        # reported an internal AssertionError instead of the diff. A writer to nowhere suffices.
        import io
        from _pytest._io import TerminalWriter

        config.pluginmanager.register(_QuietTerminal(TerminalWriter(io.StringIO())), "terminalreporter")
        # Assertion rewriting of a test file is identical for every run of a suite: do it once
        # here (it only parses and compiles, never executes) and let the children reuse it.
        original = rewrite._rewrite_test
        cache = self.rewrite_cache

        def cached_rewrite_test(fn, config):
            key = (str(fn), _file_bytes(fn))
            hit = cache.get(key)
            if hit is None:
                hit = original(fn, config)
                cache[key] = hit
            return hit

        rewrite._rewrite_test = cached_rewrite_test
        return config

    def _start_session(self):
        """Create the pytest Session and run `pytest_sessionstart` once, here in the server.

        Creating a Session registers it as a plugin, and sessionstart builds the fixture
        manager, which parses every plugin's fixtures: ~5 ms a run if done in each child. Each
        forked child inherits a pristine copy and only collects and runs its own test file.
        """
        from _pytest.main import Session

        session = Session.from_config(self.config)
        self.config.hook.pytest_sessionstart(session=session)
        return session

    # ---- protocol -------------------------------------------------------------------------

    def hello(self):
        import pytest

        return {
            "op": "hello",
            "v": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "python": "%d.%d.%d" % sys.version_info[:3],
            "pytest": pytest.__version__,
        }

    def equivalent(self, req):
        """Compile the original and each mutant; a mutant with identical bytecode is equivalent."""
        original = req["original"]
        try:
            original_code = _compile_module(original)
            reference = _normalised_code(original_code)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
            return {"op": "equivalent", "error": "original does not compile: %s" % err}
        results = []
        for source in req["mutants"]:
            try:
                code = _compile_module(source)
                equivalent = _normalised_code(code) == reference
                # Line counts differ only if an edit added or removed a line: no place to pin.
                placeable = not equivalent and original.count("\n") == source.count("\n")
                lines = _changed_lines(original_code, code) if placeable else None
                results.append({"compiles": True, "equivalent": equivalent, "lines": lines})
            except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
                results.append({"compiles": False, "equivalent": False, "error": str(err)})
        return {"op": "equivalent", "results": results}

    def run(self, req):
        test_name = req["test_file"]
        module = req["module"]
        if os.sep in test_name or not test_name.endswith(".py") or not module.isidentifier():
            return {"op": "run", "status": "bad_request", "error": "bad module or test file name"}
        # The work directory is wiped after every run (and made at start), so it is empty here.
        test_path = os.path.join(self.workdir, test_name)
        with open(test_path, "w", encoding="utf-8") as handle:
            handle.write(req["tests"])
        # Pre-rewrite the test file in the trusted server so children inherit the compiled code.
        try:
            import _pytest.assertion.rewrite as rewrite

            rewrite._rewrite_test(_as_path(test_path), self.config)
        except Exception:
            pass  # a syntax error is reported by collection in the child, like plain pytest
        if len(self.rewrite_cache) > 64:
            self.rewrite_cache.clear()
        timeout = float(req.get("timeout_s", 10.0))
        read_fd, write_fd = os.pipe()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # child: never returns
            os.close(read_fd)
            self._child(req, test_path, write_fd)
        os.close(write_fd)
        req.clear()  # drop the sources from the server as well; the child has its own copy
        report_bytes, timed_out, status, rusage = _collect_child(pid, read_fd, timeout)
        wall = time.monotonic() - started
        output, truncated = _read_capped(self.output_path, int(timeout and 65536))
        stray = None
        if self.in_container:
            stray = len(_other_live_processes())
            _kill_every_other_process()
        _reset_dir(self.workdir)
        report = None
        state = "completed"
        if timed_out:
            state = "timeout"
        elif report_bytes:
            try:
                report = json.loads(report_bytes.decode("utf-8", "replace"))
            except ValueError:
                state = "no_report"
        else:
            state = "no_report"
        exit_code = os.waitstatus_to_exitcode(status) if status is not None else None
        return {
            "op": "run",
            "status": state,
            "exit_code": exit_code,
            "cpu_s": rusage.ru_utime + rusage.ru_stime if rusage else None,
            "wall_s": wall,
            "max_rss_kb": rusage.ru_maxrss if rusage else None,
            "report": report,
            "output": output,
            "output_truncated": truncated,
            "stray_processes": stray,
        }

    # ---- child ----------------------------------------------------------------------------

    def _child(self, req, test_path, report_fd):
        code = CHILD_INTERNAL_ERROR
        try:
            code = self._child_body(req, test_path, report_fd)
        except BaseException:  # noqa: BLE001 - the child must always end with _exit
            pass
        os._exit(code)

    def _child_body(self, req, test_path, report_fd):
        os.setpgid(0, 0)
        _die_with_parent(self.libc, self.pid)
        _redirect_stdio(self.output_path)
        _close_fds_except(report_fd)
        limits = req.get("limits") or {}
        _apply_rlimits(limits, float(req.get("timeout_s", 10.0)))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversize writes fail, not kill
        tmp = os.path.join(self.workdir, ".tmp")
        os.makedirs(tmp, exist_ok=True)
        os.environ.clear()
        os.environ.update({"TMPDIR": tmp, "HOME": self.workdir, "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"})
        import tempfile

        tempfile.tempdir = None
        os.chdir(self.workdir)
        seed = int(req.get("seed", 0))
        shuffle = bool(req.get("shuffle", False))
        # pytest's default traceback style costs ~130 ms per failing run; "native" ~5 ms, "line" less.
        req_tracebacks = req.get("tracebacks", True)
        self.config.option.tbstyle = "native" if req_tracebacks else "line"
        # A mutant needs only one failing test: stop there, trying the fastest tests first.
        self.config.option.maxfail = 1 if req.get("stop_on_first_failure") else 0
        first = req.get("run_first") or []
        only = req.get("only")
        # Mutant runs and their controls skip the tamper checks (~3 ms: reading every protected
        # member touches thousands of copy-on-write pages): a forged pass there only costs the
        # suite a kill, and a failure counts only once its control passes on the original.
        tamper_checks = req.get("tamper_checks", True)
        test_budget = req.get("test_budget_s")
        module_name = req["module"]
        source = req["source"]
        # Before the audit hooks: they refuse sys.settrace.
        coverage = _LineCoverage(_cut_filename(module_name, self.workdir)) if req.get("coverage") else None
        req.clear()  # the CUT's source text must not stay reachable from test code

        policy = _Policy(self.workdir, self.allowed_read_roots, self.protected)
        sys.addaudithook(policy.hook)
        policy.block_unaudited_process_creation()
        cut_code, cut_error = _compile_cut(module_name, source, self.workdir)
        del source
        # A second hook, holding what it needs in its closure only (see _white_box_guard).
        sys.addaudithook(_white_box_guard(_code_ids(cut_code), self.workdir, policy.violations))

        import random

        random.seed(seed)
        _CUT_MODULE[0] = module_name
        self.plugin.reset(
            seed, shuffle, policy if tamper_checks else None, first, test_budget, only, coverage,
            detail=bool(req_tracebacks),
        )
        if cut_error is None:
            cut_error = _exec_cut(module_name, cut_code)
        del cut_code
        session_error = None
        finished = False
        if cut_error is None:
            session_error, finished = _run_session(self.config, self.session, test_path)
        if tamper_checks:
            policy.check_snapshot()
        report = {
            "tests": [self.plugin.tests[n] for n in self.plugin.order],
            "collect_errors": self.plugin.collect_errors,
            "cut_error": cut_error,
            "session_error": session_error,
            "finished": finished,
            "violations": policy.violations[:50],
            "tampered": policy.tampered[:50],
        }
        if coverage is not None:
            report["coverage"] = coverage.report()
        all_passed = (
            finished
            and cut_error is None
            and not self.plugin.collect_errors
            and report["tests"]
            and all(t["outcome"] == "passed" for t in report["tests"])
        )
        payload = json.dumps(report).encode("utf-8")
        view = memoryview(payload)
        while view:
            written = os.write(report_fd, view)
            view = view[written:]
        os.close(report_fd)
        return CHILD_ALL_PASSED if all_passed else CHILD_SOME_FAILED


def _run_session(config, session, test_path):
    """Collect and run `test_path` in this (child) process, in the session the server started."""
    from _pytest.outcomes import Exit

    config.args = [test_path]
    error = None
    try:
        config.hook.pytest_collection(session=session)
        config.hook.pytest_runtestloop(session=session)
    except Exit as exc:
        return "pytest.exit called: %s" % _short(exc.msg, 200), False
    except session.Failed:
        pass  # maxfail reached; outcomes already recorded
    except session.Interrupted as exc:
        return "session interrupted: %s" % _short(str(exc), 200), False
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt, internal errors
        return "%s: %s" % (type(exc).__name__, _short(str(exc), 200)), False
    try:
        config.hook.pytest_sessionfinish(session=session, exitstatus=0)
    except BaseException as exc:  # noqa: BLE001
        error = "sessionfinish: %s: %s" % (type(exc).__name__, _short(str(exc), 200))
    return error, error is None


def _compile_cut(name, source, workdir):
    """The code under test's module code object, or the error that compiling it raised."""
    try:
        return compile(source, _cut_filename(name, workdir), "exec", dont_inherit=True), None
    except BaseException as exc:  # noqa: BLE001 - a broken CUT or mutant is an outcome
        return None, "%s: %s" % (type(exc).__name__, _short(str(exc), 500))


def _cut_filename(name, workdir):
    """The file name the code under test is compiled under (no such file exists)."""
    return os.path.join(workdir, name + ".py")


def _exec_cut(name, code):
    """Install the code under test as module `name` without a file a test could read."""
    module = types.ModuleType(name)
    module.__file__ = code.co_filename  # does not exist, on purpose
    module.__loader__ = None
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException as exc:  # noqa: BLE001 - a broken CUT or mutant is an outcome
        sys.modules.pop(name, None)
        return "%s: %s" % (type(exc).__name__, _short(str(exc), 500))
    return None


def _code_ids(code):
    """Identities of a module's code object and every code object nested in it."""
    ids = set()
    pending = [code] if code is not None else []
    while pending:
        current = pending.pop()
        ids.add(id(current))
        pending.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return frozenset(ids)


# Audited reads (CPython's `object.__getattr__` event) that hand out a code object, a frame, or a
# function's default values.
WHITE_BOX_ATTRIBUTES = frozenset(
    {"__code__", "__defaults__", "__kwdefaults__", "tb_frame", "f_code", "gi_code", "gi_frame",
     "cr_code", "cr_frame", "ag_code", "ag_frame"}
)


def _white_box_guard(cut_code_ids, workdir, violations):
    """An audit hook that refuses job code any look inside the code under test.

    Tests must check behaviour. Python raises audit events for the reads that expose code (a
    function's `__code__` and defaults, a traceback's frame, a frame's code, a generator's code or
    frame) however they are spelled: `f.__code__`, `getattr` with a computed name,
    `operator.attrgetter`, `type(f).__code__.__get__(f)`, through `inspect`, `dis` or pytest's own
    `ExceptionInfo.traceback`. A read is refused when its object belongs to the code under test
    (its code object is one the CUT's compilation produced: identity, not file name) and the
    innermost frame on the stack that is either CUT or job code is job code: test code, anything
    compiled from a string, or code compiled by a test under a borrowed file name. So the CUT may
    still look at itself (`logging.exception` formats its own traceback), and pytest formats
    tracebacks after the test returned, with no job frame on the stack.

    Everything this hook consults lives in its closure and is bound at creation, not looked up in
    a module a test could patch; nothing else refers to the hook, so a test cannot reach it.
    """
    import _thread
    import io

    # Builtins too: a test can rebind `builtins.type` or `builtins.open`.
    get_frame, get_ident, identity, type_of, attribute = sys._getframe, _thread.get_ident, id, type, getattr
    is_instance, size, open_file, text, raw, error = isinstance, len, io.open, str, bytes, BaseException
    function_type, traceback_type, frame_type = types.FunctionType, types.TracebackType, types.FrameType
    generator_types = {types.GeneratorType: "gi_code", types.CoroutineType: "cr_code",
                       types.AsyncGeneratorType: "ag_code"}
    violation, white_box = SandboxViolation, WHITE_BOX_ATTRIBUTES
    job_prefixes = tuple({os.path.join(workdir, ""), os.path.join(os.path.realpath(workdir), "")})
    forged = set()  # library file names job code compiled code under
    inside = set()  # threads inside this hook: its own audited reads must not re-enter it
    CUT, JOB = 1, 2

    def kind_of(code):
        if identity(code) in cut_code_ids:
            return CUT
        name = code.co_filename
        # `<string>` and the like are compiled from strings; `<frozen …>` is the import system.
        if name.startswith(job_prefixes) or name in forged:
            return JOB
        if name.startswith("<") and not name.startswith("<frozen "):
            return JOB
        return 0

    def initiator():
        """CUT or JOB: the innermost frame of either kind, from the frame that raised the event."""
        frame = get_frame(2)
        while frame is not None:
            kind = kind_of(frame.f_code)
            if kind:
                return kind
            frame = frame.f_back
        return 0

    def owned_by_cut(obj):
        cls = type_of(obj)
        if cls is function_type:
            code = obj.__code__
        elif cls is frame_type:
            code = obj.f_code
        elif cls is traceback_type:
            code = obj.tb_frame.f_code
        elif cls in generator_types:
            code = attribute(obj, generator_types[cls])
        else:
            return False
        return identity(code) in cut_code_ids

    def refuse(what):
        if size(violations) < 1000:
            violations.append(what)
        raise violation("unitforge sandbox: %s is not allowed: tests must check behaviour" % what)

    def genuine(source, filename):
        """Whether `source` is the text of the file `filename` (an import compiling a module)."""
        if not is_instance(source, (text, raw)):
            return False
        try:
            with open_file(filename, "rb") as file:
                content = file.read()
        except error:  # noqa: BLE001 - unreadable: not a genuine import
            return False
        return content == (source.encode("utf-8") if is_instance(source, text) else source)

    def hook(event, args):
        if event == "object.__getattr__":
            if args[1] not in white_box:
                return
        elif event not in ("sys._getframe", "compile", "code.__new__"):
            return
        thread = get_ident()
        if thread in inside:
            return
        inside.add(thread)
        try:
            if event == "object.__getattr__" or event == "sys._getframe":
                if owned_by_cut(args[0]) and initiator() == JOB:
                    what = args[1] if event == "object.__getattr__" else "a frame"
                    refuse("reading %s of the code under test" % what)
            else:
                # Code compiled or built by job code under a library's file name (or the import
                # system's) would pass for library code on the stack: from now on that file name
                # counts as job code.
                source, filename = args[0], args[1]
                if is_instance(filename, raw):
                    filename = filename.decode("utf-8", "surrogateescape")
                borrowed = is_instance(filename, text) and (
                    filename.startswith("<frozen ") or filename.startswith("/") and not filename.startswith(job_prefixes)
                )
                if (borrowed and initiator() == JOB
                        and (event == "code.__new__" or not genuine(source, filename))):
                    forged.add(filename)
        finally:
            inside.discard(thread)

    return hook


class _LineCoverage:
    """Which lines of the code under test each test runs (a coverage run, protocol `coverage`).

    A global trace function (installed before the audit hooks, which refuse `sys.settrace` to
    job code) traces only frames of the code under test, identified by its file name. Lines run
    while a test is being set up or called count for that test; everything else (importing the
    CUT, collecting the test file, fixtures wider than one test, teardown) counts as `shared`:
    every test may depend on it. A thread started during the run makes the coverage incomplete
    (threads are not traced), and the scorer then runs every test for every mutant.

    Job code can disturb this only to its own cost: coverage decides which tests a mutant run
    includes, and a kill counts only once the same request passes on the original (score.rs).
    """

    def __init__(self, cut_filename):
        self.shared = set()
        self.tests = {}
        self.complete = True
        self.current = None  # the node id lines are attributed to; None: shared
        self.bucket = self.shared
        buckets = self  # the closures below read the live bucket through this

        def trace_lines(frame, event, arg):
            if event == "line":
                buckets.bucket.add(frame.f_lineno)
            return trace_lines

        def trace_calls(frame, event, arg):
            if frame.f_code.co_filename != cut_filename:
                return None
            buckets.bucket.add(frame.f_lineno)
            return trace_lines

        sys.settrace(trace_calls)
        import _thread
        import threading

        start_new_thread = _thread.start_new_thread

        def start_untraced_thread(*args, **kwargs):
            buckets.complete = False
            return start_new_thread(*args, **kwargs)

        _thread.start_new_thread = threading._start_new_thread = start_untraced_thread

    def attribute_to(self, nodeid):
        """Attribute lines from now on to test `nodeid` (None: shared); returns the previous."""
        previous = self.current
        self.current = nodeid
        self.bucket = self.shared if nodeid is None else self.tests.setdefault(nodeid, set())
        return previous

    def report(self):
        return {
            "complete": self.complete,
            "shared": sorted(self.shared),
            "tests": {nodeid: sorted(lines) for nodeid, lines in self.tests.items()},
        }


# What a code object's nesting and signature are: a change there cannot be pinned to lines.
_CODE_SHAPE = operator.attrgetter("co_name", "co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_flags")


def _changed_lines(original, mutant):
    """Lines of the `original` module code whose instructions the `mutant` module code changes
    (both compiled from sources with the same line count), or None when the difference cannot
    be pinned to lines (a changed signature or nesting).

    Compares the two compilations code object by code object: what lies between the longest
    common prefix and suffix of their instruction streams is the change, on whichever side.
    Constants folded into one instruction (a tuple over several lines) land on that
    instruction's line, which is why this asks the compiler instead of the edit's position.
    """
    lines = set()
    pending = [(original, mutant)]
    while pending:
        a, b = pending.pop()
        if _CODE_SHAPE(a) != _CODE_SHAPE(b):
            return None
        first, second = _instruction_keys(a), _instruction_keys(b)
        shortest = min(len(first), len(second))
        prefix = 0
        while prefix < shortest and first[prefix][0] == second[prefix][0]:
            prefix += 1
        suffix = 0
        while suffix < shortest - prefix and first[-1 - suffix][0] == second[-1 - suffix][0]:
            suffix += 1
        for _, line in first[prefix : len(first) - suffix] + second[prefix : len(second) - suffix]:
            if line is None:
                return None
            lines.add(line)
        nested_a = [c for c in a.co_consts if isinstance(c, types.CodeType)]
        nested_b = [c for c in b.co_consts if isinstance(c, types.CodeType)]
        if len(nested_a) != len(nested_b):
            return None
        pending.extend(zip(nested_a, nested_b))
    return sorted(lines)


def _instruction_keys(code):
    """(what the instruction does, its line) for each instruction of one code object."""
    keys = []
    for instruction in dis.get_instructions(code):
        argument = instruction.argval
        if isinstance(argument, types.CodeType):
            argument = ("<code>", argument.co_name)  # compared on its own, nested
        elif instruction.opcode in dis.hasjrel or instruction.opcode in dis.hasjabs:
            argument = instruction.arg  # 3.11 jumps are relative: stable across an edit
        else:
            argument = repr(argument)
        keys.append(((instruction.opname, argument), instruction.positions.lineno))
    return keys


class _Policy:
    """The audit-hook policy of a child: deny what tests must not do, record what they tried."""

    def __init__(self, workdir, read_roots, protected):
        # `protected` is a _Snapshot.
        self.workdir = workdir
        self.read_roots = read_roots
        self.protected = protected
        self.violations = []
        self.tampered = []

    def block_unaudited_process_creation(self):
        """`_posixsubprocess.fork_exec` starts processes without raising any audit event in
        Python 3.11; replace it, and refuse re-importing the module to get it back."""
        import _posixsubprocess

        def refuse(*args, **kwargs):
            self._deny("_posixsubprocess.fork_exec")

        _posixsubprocess.fork_exec = refuse

    def _deny(self, what):
        if len(self.violations) < 1000:
            self.violations.append(what)
        raise SandboxViolation("unitforge sandbox: %s is not allowed" % what)

    def hook(self, event, args):
        if event in FORBIDDEN_EVENTS:
            self._deny(event)
        elif event == "import" and args[0] == "_posixsubprocess":
            self._deny("import _posixsubprocess")
        elif event == "open":
            self._check_open(args)
        elif event in PATH_WRITE_EVENTS:
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)) and not self._inside_workdir(path):
                    self._deny("%s %s" % (event, _as_text(path)))

    def _check_open(self, args):
        path, mode = args[0], args[1]
        flags = args[2] if len(args) > 2 else 0
        if path is None or isinstance(path, int):
            return
        writing = bool(flags & WRITE_FLAGS) or (isinstance(mode, str) and any(c in mode for c in "wax+"))
        if self._inside_workdir(path):
            return
        text = _as_text(path)
        if text in ("/dev/null", "/dev/urandom", "/dev/random"):
            return
        if writing:
            self._deny("writing %s" % text)
        full = os.path.realpath(text)
        if not any(full == root or full.startswith(root + os.sep) for root in self.read_roots):
            self._deny("reading %s" % text)

    def _inside_workdir(self, path):
        full = os.path.realpath(_as_text(path))
        return full == self.workdir or full.startswith(self.workdir + os.sep)

    def check_snapshot(self, hot_only=False):
        """Report any protected function or class member that is no longer what the server loaded.

        Python 3.11 raises no audit event for assigning to a class or module attribute, so the
        check compares identities against the server's snapshot: the objects that produce
        reports after every test, everything at the end of the run. The comparison runs in C
        (`map`), ~0.1 ms for the whole snapshot.
        """
        for name, namespace, keys, values, is_class in (self.protected.hot if hot_only else self.protected.all):
            current = tuple(map(namespace.get, keys))
            changed = is_class and len(namespace) != len(keys)
            if changed or any(map(operator.is_not, current, values)):
                self._record_tampering(name, namespace, keys, values, is_class)

    def _record_tampering(self, name, namespace, keys, values, is_class):
        changed = [key for key, value in zip(keys, values) if namespace.get(key) is not value]
        if is_class:
            # pytest itself memoises flags such as `_pytest_diamond_inheritance_warning_shown`
            # on node classes; any other new class member was added by job code.
            known = set(keys)
            changed += [k for k in namespace if k not in known and not k.startswith("_pytest_")]
        for attr in changed:
            entry = "%s.%s" % (name, attr)
            if entry not in self.tampered and len(self.tampered) < 100:
                self.tampered.append(entry)


class _Snapshot:
    """Identities of the functions and classes of pytest, pluggy and this runner, and of their
    classes' members, as the server loaded them. Each entry is (name, live namespace dict, keys,
    values, is_class); `hot` is the part that produces test reports, checked after every test."""

    HOT = ("_pytest.runner", "_pytest.reports", "__main__")

    def __init__(self):
        self.all = []
        seen_classes = set()
        for name, module in list(sys.modules.items()):
            if module is None or not name.startswith(PROTECTED_MODULE_PREFIXES):
                continue
            members = {
                attr: obj
                for attr, obj in vars(module).items()
                if isinstance(obj, (type, types.FunctionType)) and not attr.startswith("__")
            }
            self._add(name, module.__dict__, members, False)
            for obj in members.values():
                owner = getattr(obj, "__module__", "") or ""
                if isinstance(obj, type) and id(obj) not in seen_classes and owner.startswith(PROTECTED_MODULE_PREFIXES):
                    seen_classes.add(id(obj))
                    # vars(cls) is a read-only proxy onto the live class dict.
                    self._add(owner + "." + obj.__qualname__, vars(obj), dict(vars(obj)), True)
        self.hot = [entry for entry in self.all if entry[0].startswith(self.HOT)]

    def _add(self, name, namespace, members, is_class):
        keys = tuple(members)
        self.all.append((name, namespace, keys, tuple(members[k] for k in keys), is_class))


def _allowed_read_roots(root):
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    for entry in sys.path:
        if entry and os.path.isdir(entry) and not os.path.realpath(entry).startswith(os.path.realpath(root)):
            roots.add(os.path.realpath(entry))
    roots.discard("/")
    # Tracebacks through the runner's hook wrapper read its (public) source.
    roots.add(os.path.realpath(__file__))
    return sorted(roots)


def _compile_module(source):
    """Compile (never execute) a module's source, for the equivalence check and line placement."""
    return compile(source, "<unitforge>", "exec", dont_inherit=True)


def _normalised_code(code):
    """A module's bytecode with line numbers and positions removed, for equivalence checks."""

    def strip(code):
        consts = tuple(strip(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
        fields = {"co_consts": consts, "co_firstlineno": 1, "co_linetable": b""}
        return code.replace(**fields)

    return marshal.dumps(strip(code))


def _collect_child(pid, read_fd, timeout):
    """Read the child's report until it exits or the wall timeout passes; then reap its group."""
    chunks = []
    size = 0
    deadline = time.monotonic() + timeout
    pidfd = os.pidfd_open(pid)
    timed_out = False
    watching = [read_fd, pidfd]
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select(watching, [], [], remaining)
            if read_fd in ready:
                data = os.read(read_fd, 1 << 16)
                if data and size < (8 << 20):
                    chunks.append(data)
                    size += len(data)
                elif not data:
                    watching = [pidfd]
            if pidfd in ready:
                break
    finally:
        _kill_group(pid)
        _, status, rusage = os.wait4(pid, 0)
        # Late bytes written just before exit are still in the pipe.
        while True:
            ready, _, _ = select.select([read_fd], [], [], 0)
            if not ready:
                break
            data = os.read(read_fd, 1 << 16)
            if not data or size >= (8 << 20):
                break
            chunks.append(data)
            size += len(data)
        os.close(read_fd)
        os.close(pidfd)
    return b"".join(chunks), timed_out, status, rusage


def _other_live_processes():
    """Pids of live processes other than this server and init (in a container: the job's)."""
    own = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (own, 1):
            continue
        try:
            with open("/proc/%s/stat" % name) as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            found.append(int(name))
    return found


def _kill_every_other_process():
    """Kill every process this user may signal except this one (and init), then reap ours."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _load_libc():
    """libc, loaded once by the server (a per-run `import ctypes` would cost milliseconds)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):
        return None


def _die_with_parent(libc, server_pid):
    """Ask the kernel to SIGKILL this child if the server dies (a replaced, hung worker), so no
    run outlives its worker. Called before any job code runs; job code cannot call into libc
    (`ctypes.call_function` is a forbidden audit event)."""
    if libc is not None:
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != server_pid:  # the server died between fork and prctl
        os._exit(CHILD_INTERNAL_ERROR)


def _apply_rlimits(limits, timeout):
    cpu = int(limits.get("cpu_s") or max(1, int(timeout) + 1))
    settings = [
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_AS, int(limits.get("memory_mb", 1024)) << 20),
        (resource.RLIMIT_FSIZE, int(limits.get("file_size_mb", 16)) << 20),
        (resource.RLIMIT_NOFILE, int(limits.get("open_files", 256))),
        (resource.RLIMIT_CORE, 0),
    ]
    if limits.get("processes"):
        settings.append((resource.RLIMIT_NPROC, int(limits["processes"])))
    for which, value in settings:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


def _redirect_stdio(output_path):
    devnull = os.open("/dev/null", os.O_RDONLY)
    out = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(devnull)
    os.close(out)


def _close_fds_except(keep):
    """Close the protocol pipes and every other inherited descriptor but stdio and `keep`."""
    for fd in _open_fds():
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _open_fds():
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))


def _reset_dir(path):
    def make_writable(func, target, _exc):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=make_writable)
    os.makedirs(path, exist_ok=True)


def _read_capped(path, cap):
    try:
        with open(path, "rb") as handle:
            data = handle.read(cap + 1)
    except OSError:
        return "", False
    return data[:cap].decode("utf-8", "replace"), len(data) > cap


def _file_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _as_path(text):
    from pathlib import Path

    return Path(text)


def _as_text(path):
    path = os.fspath(path)
    return path.decode("utf-8", "replace") if isinstance(path, bytes) else path


def serve(root, in_container):
    """Serve requests from fd 0, answering on the original fd 1, until EOF or shutdown."""
    proto_out = os.dup(1)
    os.set_inheritable(proto_out, False)
    devnull = os.open("/dev/null", os.O_WRONLY)
    os.dup2(devnull, 1)  # stray prints (pytest's, ours) must never corrupt the protocol
    os.close(devnull)
    server = Server(root, in_container)
    # Move everything loaded so far out of the collector's reach: a child's garbage collection
    # then never walks (and copy-on-write copies) the server's pytest objects.
    gc.collect()
    gc.freeze()
    _send(proto_out, server.hello())
    buffer = bytearray()
    while True:
        newline = buffer.find(b"\n")
        if newline < 0:
            data = os.read(0, 1 << 20)
            if not data:
                return
            buffer += data
            continue
        line = bytes(buffer[:newline])
        del buffer[: newline + 1]
        try:
            req = json.loads(line)
        except ValueError as err:
            _send(proto_out, {"op": "error", "error": "bad json: %s" % err})
            continue
        del line
        op = req.get("op")
        req_id = req.get("id")
        try:
            if op == "run":
                reply = server.run(req)
            elif op == "equivalent":
                reply = server.equivalent(req)
            elif op == "hello":
                reply = server.hello()
            elif op == "shutdown":
                _send(proto_out, {"op": "shutdown", "id": req_id})
                return
            else:
                reply = {"op": "error", "error": "unknown op %r" % (op,)}
        except Exception as err:  # noqa: BLE001 - a server bug is an infrastructure error
            reply = {"op": "error", "error": "%s: %s" % (type(err).__name__, err)}
        reply["id"] = req_id
        _send(proto_out, reply)


def _send(fd, message):
    data = json.dumps(message).encode("utf-8") + b"\n"
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


if __name__ == "__main__":
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    sys.dont_write_bytecode = True
    arguments = sys.argv[1:]
    container = arguments[:1] == ["--container"]
    if container:
        arguments = arguments[1:]
    if len(arguments) != 1:
        sys.stderr.write("usage: unitforge_runner.py [--container] ROOT_DIR\n")
        sys.exit(2)
    serve(arguments[0], container)
