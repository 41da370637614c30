"""The `lab` fixture (a running csvlab cluster, module scope) for these tests.

Defined in tools/lab/pytest_plugin.py so other test directories can import
it the same way; see that module and docs/lab.md.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))

from lab.pytest_plugin import lab, pytest_configure, pytest_runtest_makereport  # noqa: E402,F401
