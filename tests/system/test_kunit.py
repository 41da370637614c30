"""The KUnit suites of csvfs.ko (kmod/tests/) in the lab's debug kernel.

In a kernel with KUnit built in, csvfs.ko carries the suites csvfs_layout
and csvfs_request (compiled into layout.c and request.c) and KUnit runs them
at every insmod. This loads the module in a one-node lab, reads each suite's
results from debugfs and requires every case to pass. Skipped under the
Debian kernel (no KUnit there): run it with

    CSVLAB_KERNEL=debug /usr/bin/python3 -m pytest -v tests/system/test_kunit.py

(tools/build-debug-kernel first; docs/debug-kernel.md). A failed expectation
also prints "EXPECTATION FAILED" on the console, which the lab's kernel log
check reports in every other test module loading the module.
"""
import os
import re
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools"))

from lab.core import kernel_choice  # noqa: E402

KO = os.path.join(REPO, "kmod", "csvfs.ko")
NODE = "node1"
# suite -> number of cases (kmod/tests/*.c)
SUITES = {"csvfs_layout": "layout_test.c", "csvfs_request": "request_test.c"}


def case_count(source):
    """The KUNIT_CASE entries of kmod/tests/SOURCE: every one must run and pass."""
    with open(os.path.join(REPO, "kmod", "tests", source)) as f:
        return len(re.findall(r"^\s*KUNIT_CASE\(", f.read(), flags=re.M))

pytestmark = [
    pytest.mark.lab(nodes=1),
    pytest.mark.skipif(kernel_choice() != "debug",
                       reason="KUnit runs in the debug kernel only (CSVLAB_KERNEL=debug)"),
]


def test_kunit_suites(lab):
    if not os.path.exists(lab.module_for(KO)):
        pytest.skip(f"{lab.module_for(KO)} not built (tools/build-debug-kernel)")
    script = (f"rmmod csvfs 2>/dev/null; cp {KO} /tmp/csvfs.ko && insmod /tmp/csvfs.ko && "
              + "".join(f"echo '=== {s}'; cat /sys/kernel/debug/kunit/{s}/results; "
                        for s in SUITES)
              + "rmmod csvfs")
    out = lab.sh(NODE, script, timeout=600)
    print(out)
    parts = re.split(r"^=== (\S+)$", out, flags=re.M)
    results = dict(zip(parts[1::2], parts[2::2]))
    for suite, source in SUITES.items():
        cases = case_count(source)
        text = results.get(suite, "")
        failed = re.findall(r"^\s*not ok \d+ .*$", text, flags=re.M)
        assert not failed, f"{suite}: failed cases:\n" + "\n".join(failed) + "\n" + text
        passed = re.findall(r"^\s+ok \d+ (?:- )?\w+", text, flags=re.M)
        assert len(passed) == cases, f"{suite}: {len(passed)} of {cases} cases passed:\n{text}"
    problems = lab.kernel_log_problems(NODE)
    assert not problems, "\n".join(problems)
