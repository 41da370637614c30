"""pytest fixture giving a test module a running csvlab cluster.

Use it from any conftest.py (tests/lab/conftest.py does):

    sys.path.insert(0, "<repo>/tools")
    from lab.pytest_plugin import lab, pytest_configure, pytest_runtest_makereport  # noqa

    def test_something(lab):          # 3 nodes, 1 shared disk, module scope
        lab.sh("node1", "uname -r")

A module picks another shape with
    pytestmark = pytest.mark.lab(nodes=2, disks=2, disk_size="4G")
The lab is torn down at the end of the module; its kernel logs must be free
of Oops/BUG/WARNING/lockup lines (and, under the debug kernel, KASAN,
lockdep, atomic-sleep and kmemleak reports: kmemleak scans first), or the
module errors. CSVLAB_KERNEL=debug boots the debug kernel; CSVLAB_NAME=NAME
names the labs NAME-<module> (default t<pid>-<module>). Logs are kept under
lab-runs/<name>/ when a test failed, the kernel logs had problems, or
CSVLAB_KEEP_LOGS=1.
"""
import os

import pytest

from .core import NAME_PREFIX_MAX, Lab


def pytest_configure(config):
    config.addinivalue_line("markers", "lab(nodes=3, disks=1, disk_size='2G'): "
                                       "shape of the csvlab cluster of the module")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed:
        item.module.__dict__["_csvlab_failed"] = True


def lab_name(module):
    """Unique per pytest process and module, short enough for a netns name:
    t<pid>-<module>, or $CSVLAB_NAME-<module> when set."""
    stem = os.path.splitext(os.path.basename(module.__file__))[0].replace("test_", "")
    stem = "".join(c for c in stem.lower() if c.isalnum())[:6]
    prefix = os.environ.get("CSVLAB_NAME") or f"t{os.getpid() % 100000}"
    if len(prefix) > NAME_PREFIX_MAX:
        raise ValueError(f"CSVLAB_NAME={prefix!r}: at most {NAME_PREFIX_MAX} characters")
    return f"{prefix}-{stem}"


@pytest.fixture(scope="module")
def lab(request):
    if os.geteuid() != 0:
        pytest.skip("csvlab needs root")
    marker = request.node.get_closest_marker("lab")
    shape = dict(nodes=3, disks=1, disk_size="2G")
    shape.update(marker.kwargs if marker else {})
    cluster = Lab(lab_name(request.module), **shape)
    cluster.down()  # a leftover of a crashed run with the same name
    cluster.up()
    yield cluster
    try:
        cluster.kmemleak_scan()  # debug kernel: leaks become log problems
    except Exception as e:  # a dead node must not hide the log check
        print(f"csvlab: kmemleak scan: {e}")
    problems = cluster.kernel_log_problems()
    failed = request.module.__dict__.get("_csvlab_failed", False)
    keep = bool(problems or failed or os.environ.get("CSVLAB_KEEP_LOGS"))
    cluster.down(keep_logs=keep)
    if problems:
        pytest.fail("kernel log problems (logs kept in %s):\n%s"
                    % (cluster.run_dir, "\n".join(problems)), pytrace=False)
