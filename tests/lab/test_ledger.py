"""The debug-suite ledger (tools/lab/ledger.py), run as the pytest plugin it
is on a made-up suite: what counts as passed, what --resume skips, and what
changes the key. No lab needed."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))

from lab import ledger  # noqa: E402

# A module-scoped fixture stands for the lab: its teardown fails when the
# module's "kernel log" has a problem, as tools/lab/pytest_plugin.py does.
SUITE = {
    "conftest.py": """
import pytest

@pytest.fixture(scope="module")
def lab(request):
    yield
    if getattr(request.module, "LOG_PROBLEM", False):
        pytest.fail("kernel log problems", pytrace=False)
""",
    "test_clean.py": """
def test_a(lab): pass
def test_b(lab): pass
""",
    "test_one_fails.py": """
import os
def test_ok(lab): pass
def test_bad(lab): assert os.environ.get("FIXED") == "1"
""",
    "test_log_problem.py": """
import os
LOG_PROBLEM = os.environ.get("FIXED") != "1"
def test_passes_before_the_problem(lab): pass
def test_passes_but_log_bad(lab): pass
""",
}


def run_suite(tmp_path, ledger_file, resume, fixed=False):
    env = dict(os.environ, CSVLAB_LEDGER=str(ledger_file),
               CSVLAB_LEDGER_RESUME="1" if resume else "0", FIXED="1" if fixed else "0",
               PYTHONPATH=os.path.join(REPO, "tools"))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "lab.ledger", "-p", "no:cacheprovider",
                           "-q", "-rA", str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True)


def write_suite(tmp_path):
    for name, text in SUITE.items():
        (tmp_path / name).write_text(text)


def test_only_passes_of_modules_with_clean_logs_are_recorded(tmp_path):
    write_suite(tmp_path)
    led = tmp_path / "ledger.json"
    r = run_suite(tmp_path, led, resume=False)
    assert r.returncode == 1, r.stdout  # test_bad failed, the log check errored
    passed = set(json.loads(led.read_text())["passed"])
    assert passed == {"test_clean.py::test_a", "test_clean.py::test_b",
                      "test_one_fails.py::test_ok"}, r.stdout


def test_resume_runs_only_what_the_ledger_lacks(tmp_path):
    write_suite(tmp_path)
    led = tmp_path / "ledger.json"
    run_suite(tmp_path, led, resume=False)
    r = run_suite(tmp_path, led, resume=True, fixed=True)
    assert r.returncode == 0, r.stdout
    assert "PASSED test_one_fails.py::test_bad" in r.stdout
    assert "PASSED test_log_problem.py::test_passes_before_the_problem" in r.stdout
    assert "PASSED test_log_problem.py::test_passes_but_log_bad" in r.stdout
    assert "test_clean.py" not in r.stdout
    assert "3 deselected" in r.stdout
    data = json.loads(led.read_text())
    assert len(data["passed"]) == 6 and len(data["runs"]) == 4
    everything = [f"{m}::{t}" for m, t in [
        ("test_clean.py", "test_a"), ("test_clean.py", "test_b"), ("test_one_fails.py", "test_ok"),
        ("test_one_fails.py", "test_bad"), ("test_log_problem.py", "test_passes_before_the_problem"),
        ("test_log_problem.py", "test_passes_but_log_bad")]]
    assert ledger.missing(str(led), everything, str(tmp_path)) == []
    assert ledger.missing(str(led), everything + ["test_new.py::test_x"],
                          str(tmp_path)) == ["test_new.py::test_x"]
    # A changed test module voids its own passes, and only those.
    with open(tmp_path / "test_clean.py", "a") as f:
        f.write("# changed\n")
    assert ledger.missing(str(led), everything, str(tmp_path)) == [
        "test_clean.py::test_a", "test_clean.py::test_b"]
    r = run_suite(tmp_path, led, resume=True, fixed=True)
    assert r.returncode == 0 and "2 passed, 4 deselected" in r.stdout, r.stdout
    assert ledger.missing(str(led), everything, str(tmp_path)) == []


def test_a_run_without_resume_runs_everything_again(tmp_path):
    write_suite(tmp_path)
    led = tmp_path / "ledger.json"
    run_suite(tmp_path, led, resume=False, fixed=True)
    r = run_suite(tmp_path, led, resume=False, fixed=True)
    assert r.returncode == 0 and "6 passed" in r.stdout and "deselected" not in r.stdout


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_key_follows_sources_and_kernel_not_docs_or_test_modules(tmp_path):
    for d in ("kmod", "docs", "tests/system"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "kmod" / "super.c").write_text("int x;\n")
    (tmp_path / "docs" / "notes.md").write_text("# notes\n")
    (tmp_path / "tests" / "system" / "test_x.py").write_text("def test_x(): pass\n")
    (tmp_path / "tests" / "system" / "guest.sh").write_text("true\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    base = ledger.source_key(str(tmp_path), "k1")
    assert ledger.source_key(str(tmp_path), "k1") == base
    assert ledger.source_key(str(tmp_path), "k2") != base
    (tmp_path / "docs" / "notes.md").write_text("# notes, longer\n")
    (tmp_path / "tests" / "system" / "test_x.py").write_text("def test_x(): assert 1\n")
    assert ledger.source_key(str(tmp_path), "k1") == base  # test modules: hashed per pass
    (tmp_path / "tests" / "system" / "guest.sh").write_text("false\n")
    assert ledger.source_key(str(tmp_path), "k1") != base  # a helper of every module
    base = ledger.source_key(str(tmp_path), "k1")
    (tmp_path / "kmod" / "super.c").write_text("int y;\n")  # not committed: still counts
    assert ledger.source_key(str(tmp_path), "k1") != base


def test_build_dir_source_tree_is_read_from_its_cache(tmp_path):
    """debug-suite refuses a build/ configured for another tree (a worktree's
    copy of main's build/ compiles main's sources): the check reads the
    tree from CMake's cache, and reports an unconfigured directory as None."""
    from lab import cli
    build = tmp_path / "build"
    build.mkdir()
    assert cli.cmake_source_dir(str(build)) is None
    (build / "CMakeCache.txt").write_text("# comment\nCMAKE_BUILD_TYPE:STRING=RelWithDebInfo\n"
                                          "CMAKE_HOME_DIRECTORY:INTERNAL=/work/main\n")
    assert cli.cmake_source_dir(str(build)) == "/work/main"
