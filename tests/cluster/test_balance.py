"""Several volumes: coordinators spread and rebalanced; the rejoin rule.

Three volumes without a preferred owner (three XFS images on loop devices)
on the host cluster (its own three nodes). Their coordinators spread one
per node; a killed coordinator's volume goes to a node that has the fewest
volumes; when the node comes back (csvd restarted) one volume moves back to
it, so each node coordinates one again. Then node 3 is partitioned off (its
link on the switch down): it loses quorum and serves nothing; when the
partition heals it takes the majority's state (it never sends its own,
older one) and rejoins with no manual step. Runs on its own cluster.
"""
import os
import signal
import time

import pytest

from cluster import run, wait_for

VOLS = ["Vb1", "Vb2", "Vb3"]


@pytest.fixture(scope="module")
def vols(cluster):
    loops = []
    try:
        for v in VOLS:
            img = os.path.join(cluster.tmp, f"{v}.img")
            with open(img, "wb") as f:
                f.truncate(320 << 20)
            run(["mkfs.xfs", "-q", img])
            loops.append(run(["losetup", "-f", "--show", img]).stdout.strip())
        for v, loop in zip(VOLS, loops):
            r = cluster.node(1).ctl("volume", "add", v, loop)
            assert r.returncode == 0, r.stderr
        yield loops
    finally:
        for n in cluster.nodes:
            n.kill_csvd(signal.SIGTERM)
        for loop in loops:
            run(["losetup", "-d", loop], check=False)


def placement(cluster, nodes=None):
    """{volume: coordinator} once every given node agrees and every volume is ready."""
    nodes = nodes or [n for n in cluster.nodes if n.csvd]

    def agreed():
        views = []
        for n in nodes:
            vs = {v["name"]: v for v in n.status()["volumes"]}
            if sorted(vs) != VOLS or not all(v["ready"] and v["coordinator"] for v in vs.values()):
                return None
            views.append({k: (v["coordinator"], v["epoch"]) for k, v in vs.items()})
        if any(x != views[0] for x in views):
            return None
        return {k: c for k, (c, _) in views[0].items()}
    return wait_for(agreed, 60, f"{VOLS} ready and agreed on {[n.id for n in nodes]}")


def loads(p):
    out = {}
    for c in p.values():
        out[c] = out.get(c, 0) + 1
    return out


def test_spread_one_volume_per_node(cluster, vols):
    p = wait_for(lambda: (lambda p: p if sorted(loads(p).values()) == [1, 1, 1] else None)(
        placement(cluster)), 60, "one volume per node")
    print(f"\nplacement: {p}")


def test_failover_to_least_loaded_and_rebalance_on_rejoin(cluster, vols):
    p = placement(cluster)
    victim = cluster.node(p["Vb1"])
    lost = [v for v, c in p.items() if c == victim.id]
    victim.kill_csvd(signal.SIGKILL)
    rest = [n for n in cluster.nodes if n is not victim]
    q = wait_for(lambda: (lambda q: q if victim.id not in q.values() else None)(
        placement(cluster, rest)), 60, "the victim's volumes elsewhere")
    assert sorted(loads(q).values()) == [1, 2], q
    t0 = time.monotonic()
    victim.start_csvd()
    cluster.wait_synced()
    r = wait_for(lambda: (lambda r: r if sorted(loads(r).values()) == [1, 1, 1] else None)(
        placement(cluster)), 60, "one volume per node again")
    moved = [v for v in VOLS if r[v] != q[v]]
    print(f"\nnode {victim.id} lost {lost}: {q}; rejoined, rebalanced in "
          f"{time.monotonic() - t0:.1f} s: {r} (moved {moved})")
    assert len(moved) == 1 and r[moved[0]] == victim.id


def test_partitioned_node_rejoins_with_the_majority_state(cluster, vols):
    n1, n2, n3 = cluster.nodes
    before = placement(cluster)
    sw = ["ip", "-n", cluster.switch, "link", "set", "p3"]
    run(sw + ["down"])
    try:
        wait_for(lambda: sorted(n1.status()["members"]) == [1, 2], 60, "node 3 gone (majority)")
        wait_for(lambda: not n3.status()["quorate"], 60, "node 3 without quorum")
        mid = placement(cluster, [n1, n2])
        assert 3 not in mid.values(), mid
        wait_for(lambda: not any(v["serving_here"] for v in n3.status()["volumes"]), 30,
                 "node 3 serving nothing")
    finally:
        run(sw + ["up"])
    t0 = time.monotonic()
    cluster.wait_synced()
    # node 3 publishes its path again and takes one volume back
    after = wait_for(lambda: (lambda p: p if sorted(loads(p).values()) == [1, 1, 1] else None)(
        placement(cluster)), 60, "one volume per node after the heal")
    took = time.monotonic() - t0
    with open(n3.log) as f:
        log3 = f.read()
    assert "rejoining without quorum before" in log3
    # node 3 adopted the majority's state: no epoch went back
    epochs_mid = {v["name"]: v["epoch"] for v in n1.status()["volumes"]}
    for v in n3.status()["volumes"]:
        assert v["epoch"] >= epochs_mid[v["name"]], (v, epochs_mid)
    print(f"\nbefore {before}; during the partition {mid}; after the heal {after} "
          f"({took:.1f} s)")


def test_node_started_alone_never_overwrites_the_cluster_state(cluster, vols):
    """A csvd that starts while its Corosync has not merged with the others
    (a node booting with its cluster network not up yet) makes up a state of
    its own, here one without any volume. When the networks merge, both
    sides send their state; the quorate side ignores the lone node's,
    whatever the delivery order, and the lone node adopts theirs: no volume
    vanishes anywhere (docs/operations.md)."""
    n1, n2, n3 = cluster.nodes
    placement(cluster)
    sw = ["ip", "-n", cluster.switch, "link", "set", "p3"]
    run(sw + ["down"])
    try:
        wait_for(lambda: sorted(n1.status()["members"]) == [1, 2], 60, "node 3 gone (majority)")
        n3.kill_csvd(signal.SIGKILL)
        saved = os.path.join(n3.dir, "state", "volumes.json")
        if os.path.exists(saved):
            os.unlink(saved)  # a node that knows no volume yet
        mark = {n.id: os.path.getsize(n.log) for n in cluster.nodes}
        n3.start_csvd()
        wait_for(lambda: (lambda s: s["synced"] and s["members"] == [3] and not s["volumes"])(
            n3.status()), 60, "node 3 synced with itself alone, with no volume")
    finally:
        run(sw + ["up"])
    cluster.wait_synced()
    after = placement(cluster)  # every volume, ready and agreed, on every node
    logs = {}
    for n in cluster.nodes:
        with open(n.log) as f:
            f.seek(mark[n.id])
            logs[n.id] = f.read()
    assert "sending state sync (0 volumes, not from a quorate membership)" in logs[3], logs[3]
    for nid in (1, 2):
        assert "ignoring node 3's state sync (0 volumes)" in logs[nid], logs[nid]
        assert "state synced from node 3" not in logs[nid], logs[nid]
    print(f"\nafter the merge: {after}")
