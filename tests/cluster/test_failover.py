"""Failover without application errors: retries of non-idempotent ops.

The coordinator's csvd is made to die (test seam CSVD_TEST_CRASH) after it
executed an op and before it replied; the client's daemon re-sends the op
(same OP_ID) to the new coordinator, which must answer with the original
result, never EEXIST/ENOENT. Runs on its own three-node cluster.
"""
import signal
import time

import pytest

from test_cluster import VOL, all_paths_healthy, online


def make_coordinator(c, nid):
    all_paths_healthy(c)
    if online(c)["coordinator"] != nid:
        r = c.node(2 if nid != 2 else 3).ctl("move", VOL, str(nid))
        assert r.returncode == 0, r.stderr
    assert online(c)["coordinator"] == nid


def test_setup(cluster):
    r = cluster.node(1).ctl("volume", "add", VOL, cluster.loop, "--preferred", "1")
    assert r.returncode == 0, r.stderr
    make_coordinator(cluster, 1)
    n2 = cluster.node(2)
    n2.io("mkdir", "-p", "/r/d")
    n2.io("mkdir", "/r/gone")
    n2.io("write", "/r/f", "--data", "x" * 100)
    n2.io("write", "/r/u", "--data", "y" * 100)
    # The op record is hidden and its name is reserved.
    assert n2.io_json("ls", "/")["entries"] == ["r"]
    r = n2.io("mkdir", "/.csvfs-oplog", check=False)
    assert r.returncode != 0


CASES = [
    ("exec:MKDIR", ("mkdir", "/r/new1")),
    ("done:MKDIR", ("mkdir", "/r/new2")),
    ("exec:RENAME", ("rename", "/r/f", "/r/d/f2")),
    ("done:UNLINK", ("unlink", "/r/u")),
    ("exec:RMDIR", ("rmdir", "/r/gone")),
]


@pytest.mark.parametrize("crash,op", CASES, ids=[c for c, _ in CASES])
def test_retry_after_coordinator_crash_gets_original_result(cluster, crash, op):
    n1, n2 = cluster.node(1), cluster.node(2)
    n1.kill_csvd(signal.SIGTERM)
    n1.start_csvd(env={"CSVD_TEST_CRASH": crash})
    cluster.wait_synced()
    make_coordinator(cluster, 1)
    before = n2.status()["counters"]
    t0 = time.monotonic()
    r = n2.io(*op, check=False)
    took = time.monotonic() - t0
    assert r.returncode == 0, f"{op} after a crash at {crash}: {r.stdout} {r.stderr}"
    assert n1.csvd.wait(timeout=30) == -signal.SIGKILL, "the coordinator crashed"
    n1.csvd = None
    after = n2.status()["counters"]
    assert after["resent"] > before["resent"], "the op was re-sent to the new coordinator"
    v = online(cluster, [n2, cluster.node(3)], not_on=1)
    print(f"\n{crash}: {op[0]} answered in {took * 1000:.0f} ms via node {v['coordinator']}")
    with open(cluster.node(v["coordinator"]).log) as f:
        log = f.read()
    assert "is a retry" in log
    # The survivor elected first waited out the lost node's lease.
    logs = "".join(open(n.log).read() for n in cluster.nodes[1:])
    assert "for the lease of a node that left" in logs
    # Before it served, the new coordinator had every member end the layouts
    # of earlier coordinators: both survivors answered (none timed out).
    assert "layouts of earlier coordinators ended on every node" in log
    assert "no answer to the recall of all layouts" not in log
    n1.start_csvd()
    cluster.wait_synced()


def test_tree_is_exactly_as_expected(cluster):
    n3 = cluster.node(3)
    assert n3.io_json("ls", "/r")["entries"] == ["d", "new1", "new2"]
    assert n3.io_json("ls", "/r/d")["entries"] == ["f2"]
    assert n3.io_json("stat", "/r/d/f2")["attr"]["size"] == 100


def test_xfs_repair_clean(cluster):
    from cluster import run
    for n in cluster.nodes:
        n.kill_csvd(signal.SIGTERM)
    r = run(["xfs_repair", "-n", cluster.loop], check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
