"""Which system tests have passed under the debug kernel, for one state of
the sources: the record that lets `csvlab debug-suite --resume` spread the
whole suite over several runs (under KASAN/lockdep in TCG guests it takes
longer than a working session on a 2-core machine) without counting a pass
twice or a stale one at all.

The ledger is keyed by a hash of everything a result depends on: the tracked
files under kmod/, include/, daemon/, tools/ (csvctl, mount.csvfs, the lab,
the debug kernel's configuration), tests/system/ and tests/lab/, the top
CMakeLists.txt and Kbuild, and the debug kernel's own cache key. Any change
there starts a new, empty ledger; docs, the style and CI scripts and the
debug-suite command itself (UNKEYED) do not. A test module's own file
(tests/system/test_*.py) is not in that key: each pass records the hash of
its module's file and counts only while the file is unchanged, so fixing
one module's test does not void the others.

A test counts as passed only if it passed (setup, call and teardown) AND its
module's lab ended clean: the lab fixture's end-of-module kmemleak scan and
kernel-log check (tools/lab/pytest_plugin.py) fail the last test's teardown
otherwise, and then none of that module's passes are recorded. A module is
recorded once its lab is down, so a run stopped halfway keeps the modules it
finished.

Used as a pytest plugin (`-p lab.ledger`, which debug-suite adds) with
CSVLAB_LEDGER=<file>; CSVLAB_LEDGER_RESUME=1 also deselects what the ledger
already holds.
"""
import datetime
import fcntl
import hashlib
import json
import os
import re
import subprocess

import pytest

from .core import REPO

# In the repository (docs/, outside the key), not in a machine cache: the
# suite takes longer than a session, sessions may land on a fresh machine,
# and a ledger committed with the sources it keys survives that.
LEDGER_ROOT = os.environ.get("CSVFS_DEBUG_SUITE_LEDGERS",
                             os.path.join(REPO, "docs", "debug-suite"))
KEYED_PATHS = ("kmod", "include", "daemon", "tools", "tests/system", "tests/lab",
               "CMakeLists.txt", "Kbuild")
# Under tools/ but not what runs in or against the guests: editing them must
# not throw away hours of debug-kernel results.
UNKEYED = {"tools/check-style", "tools/run-tests", "tools/lab/cli.py", "tools/lab/ledger.py",
           "tests/lab/test_ledger.py"}
# A test module is keyed on its own: its passes stay valid while another
# module's file changes (each entry carries the hash of its module's file).
TEST_MODULE = re.compile(r"^tests/system/test_[^/]*\.py$")


def _file_hash(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:  # deleted, not yet committed
        return "deleted"


def source_key(repo=REPO, kernel_key=""):
    """A hash of the working-tree contents of the tracked files every
    debug-suite result depends on (all but the test modules), and of the
    debug kernel's key."""
    names = subprocess.run(["git", "-C", repo, "ls-files", "-z", "--", *KEYED_PATHS],
                           capture_output=True, check=True).stdout.decode().split("\0")
    h = hashlib.sha256(f"kernel {kernel_key}\n".encode())
    for name in sorted(n for n in names if n and n not in UNKEYED and not TEST_MODULE.match(n)):
        h.update(f"{name}\0{_file_hash(os.path.join(repo, name))}\n".encode())
    return h.hexdigest()[:16]


def module_of(nodeid):
    """The test module file (relative path) of a pytest NODEID."""
    return nodeid.split("::", 1)[0]


def module_hash(repo, nodeid):
    """The hash of the test module file NODEID lives in."""
    return _file_hash(os.path.join(repo, module_of(nodeid)))[:16]


def ledger_path(key):
    return os.path.join(LEDGER_ROOT, f"{key}.json")


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"passed": {}, "runs": []}


def valid_passes(path, repo):
    """The ledger's passes whose test module is still the file that passed."""
    hashes = {}
    out = {}
    for nodeid, entry in load(path)["passed"].items():
        module = module_of(nodeid)
        if module not in hashes:
            hashes[module] = module_hash(repo, nodeid)
        if entry.get("module") == hashes[module]:
            out[nodeid] = entry
    return out


def record(path, passed, run, repo):
    """Add PASSED ({nodeid: seconds}) to the ledger at PATH, as RUN (a label),
    under an exclusive lock: two debug-suite runs may share one ledger."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = load(path)
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for nodeid, seconds in passed.items():
            data["passed"][nodeid] = {"at": now, "run": run, "seconds": round(seconds, 1),
                                      "module": module_hash(repo, nodeid)}
        data["runs"].append({"at": now, "run": run, "passed": sorted(passed)})
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)


def missing(path, nodeids, repo):
    """The NODEIDS the ledger at PATH does not hold as (validly) passed."""
    passed = valid_passes(path, repo)
    return [n for n in nodeids if n not in passed]


# ---------------------------------------------------------------- pytest plugin

class _Module:
    def __init__(self):
        self.passed = {}       # nodeid -> seconds of its call phase
        self.failed = set()    # nodeids with a failed (or erroring) phase
        self.teardown_failed = False


_modules = {}


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CSVLAB_LEDGER_RESUME") != "1":
        return
    passed = valid_passes(os.environ["CSVLAB_LEDGER"], str(config.rootpath))
    keep = [i for i in items if i.nodeid not in passed]
    done = [i for i in items if i.nodeid in passed]
    if done:
        config.hook.pytest_deselected(items=done)
        items[:] = keep


def pytest_runtest_logreport(report):
    mod = _modules.setdefault(module_of(report.nodeid), _Module())
    if report.failed:
        mod.failed.add(report.nodeid)
        if report.when == "teardown":
            mod.teardown_failed = True
    elif report.when == "call" and report.passed:
        mod.passed[report.nodeid] = report.duration


def _module_done(item, nextitem):
    return nextitem is None or module_of(nextitem.nodeid) != module_of(item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """After a module's last test (its lab fixture torn down, the log checked):
    record the module's passes unless a teardown failed."""
    yield
    path = os.environ.get("CSVLAB_LEDGER")
    if not path or not _module_done(item, nextitem):
        return
    mod = _modules.pop(module_of(item.nodeid), _Module())
    if mod.teardown_failed:
        return
    good = {n: s for n, s in mod.passed.items() if n not in mod.failed}
    if good:
        record(path, good, os.environ.get("CSVLAB_NAME") or f"pid {os.getpid()}",
               str(item.config.rootpath))
