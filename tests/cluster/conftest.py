import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, loop devices)")
    # A test run stopped with SIGTERM still tears the cluster down.
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    previous = signal.signal(signal.SIGTERM, interrupt)
    c = Cluster()
    try:
        c.start()
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.close()
        signal.signal(signal.SIGTERM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed and "cluster" in item.funcargs:
        rep.sections.append(("csvd logs", item.funcargs["cluster"].logs()))
