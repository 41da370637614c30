"""Failover without application errors: retries of non-idempotent ops.

The coordinator's csvd is made to die (test seam CSVD_TEST_CRASH) after it
executed an op and before it replied; the client's daemon re-sends the op
(same OP_ID) to the new coordinator, which must answer with the original
result, never EEXIST/ENOENT. Runs on its own three-node cluster.
"""
import json
import signal
import subprocess
import time

import pytest

from cluster import CSVIO, wait_for
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


@pytest.mark.parametrize("how", ["crash", "move"])
def test_open_file_that_lost_its_name_survives_the_coordinator(cluster, tmp_path, how):
    """node2 holds a file open; node3 unlinks it; the coordinator (node1)
    crashes or hands the volume over. The file lives on in the volume's
    hidden orphan directory (XFS would free an unlinked inode at the old
    coordinator's unmount or log recovery), node2's daemon reclaims its open
    with the new coordinator, and after the grace period node2 still reads
    the file through its open; node2's release then removes it."""
    n1, n2, n3 = cluster.node(1), cluster.node(2), cluster.node(3)
    make_coordinator(cluster, 1)
    data = f"held across a {how} " * 300
    n2.io("mkdir", "-p", "/o")
    n2.io("write", f"/o/{how}", "--data", data)
    stop = tmp_path / "stop"
    holder = subprocess.Popen([CSVIO, "--socket", n2.test_socket, "--volume", VOL, "--timeout", "120",
                               "hold", f"/o/{how}", "--until", str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert '"held":true' in holder.stdout.readline()
        n3.io("unlink", f"/o/{how}")
        assert n3.io_json("ls", "/o")["entries"] == []
        reclaimed = n2.status()["counters"]["reclaimed"]
        if how == "crash":
            n1.kill_csvd(signal.SIGKILL)
            v = online(cluster, [n2, n3], not_on=1)
        else:
            r = n2.ctl("move", VOL, "3", "--wait", "60")
            assert r.returncode == 0, r.stderr
            v = online(cluster)
        new = cluster.node(v["coordinator"])
        wait_for(lambda: n2.status()["counters"]["reclaimed"] > reclaimed, 30,
                 "node2's daemon reclaimed its open")
        # the new coordinator's grace period ends; the reclaimed file stays
        wait_for(lambda: "reclaim grace over: 0 unreclaimed" in open(new.log).read(), 30,
                 "the end of the reclaim grace period")
        stop.touch()
        out, err = holder.communicate(timeout=120)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert holder.returncode == 0, err + out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["data"] == data and res["nlink"] == 0
    wait_for(lambda: new.volume(VOL)["orphans_removed"] == 1, 30,
             "the orphan removed at node2's release")
    assert n2.volume(VOL)["opens_here"] == 0
    if how == "crash":
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
