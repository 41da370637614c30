"""csvd on three nodes: real Corosync in network namespaces, one XFS LUN.

The tests share one cluster (module fixture) and run in file order: each
leaves the cluster as the next expects it (all nodes up, Volume1 online).
"""
import json
import os
import signal
import socket
import struct
import subprocess
import re
import time

import pytest

from cluster import CSVIO, PORT, run, wait_for

VOL = "Volume1"
HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "include",
                      "uapi", "linux", "csvfs.h")
ABI_VERSION = int(re.search(r"#define CSVFS_ABI_VERSION\s+(\d+)", open(HEADER).read()).group(1))


def coordinator(c):
    v = c.node(1).volume(VOL) if c.node(1).csvd else c.node(2).volume(VOL)
    return v["coordinator"] if v else 0


def online(c, nodes=None, not_on=None):
    """Waits until every given node sees VOL ready with one coordinator."""
    nodes = nodes or [n for n in c.nodes if n.csvd]

    def agreed():
        vs = [n.volume(VOL) for n in nodes]
        if not all(v and v["ready"] and v["coordinator"] for v in vs):
            return None
        if len({(v["coordinator"], v["epoch"]) for v in vs}) != 1:
            return None
        if not_on is not None and vs[0]["coordinator"] == not_on:
            return None
        return vs[0]
    return wait_for(agreed, 60, f"{VOL} online on nodes {[n.id for n in nodes]}")


def all_paths_healthy(c):
    wait_for(lambda: all(x["path_healthy"] for n in c.nodes if n.csvd
                         for x in n.volume(VOL)["nodes"]), 30, "every path healthy")


def test_cluster_forms(cluster):
    for n in cluster.nodes:
        s = n.status()
        assert s["synced"] and s["quorate"]
        assert sorted(s["members"]) == [1, 2, 3]


def test_event_loop_runs_realtime_and_workers_do_not(cluster):
    """The loop that renews the kernel's lease runs SCHED_RR (docs/daemon.md
    "Scheduling"); the worker threads, which do the file-system work, stay
    SCHED_OTHER (SCHED_RESET_ON_FORK)."""
    if os.environ.get("CSV_CSVD_WRAP"):
        pytest.skip("csvd runs under CSV_CSVD_WRAP: its pid is the wrapper's")
    for n in cluster.nodes:
        pid = n.csvd.pid
        with open(f"/proc/{pid}/comm") as f:
            assert f.read().strip() == "csvd", "ip netns exec should exec csvd in place"
        policy = os.sched_getscheduler(pid)
        assert policy == os.SCHED_RR | os.SCHED_RESET_ON_FORK, policy
        assert os.sched_getparam(pid).sched_priority == 99
        workers = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
        assert len(workers) >= 4  # config workers, default 4
        assert all(os.sched_getscheduler(t) == os.SCHED_OTHER for t in workers)
        # reported (they count only with csvfs.ko: see test_failover.py in the lab)
        assert {"lease_renew_max_gap_ms", "lease_renewals_late"} <= n.status()["counters"].keys()


def test_volume_add_elects_one_coordinator(cluster):
    n1 = cluster.node(1)
    r = n1.ctl("volume", "add", VOL, cluster.loop, "--preferred", "1")
    assert r.returncode == 0, r.stderr
    v = online(cluster)
    # The first node to publish a healthy path is elected and then kept.
    assert v["coordinator"] in (1, 2, 3)
    assert v["epoch"] >= 1
    # Every node found the volume by its UUID and published a healthy path.
    all_paths_healthy(cluster)
    for n in cluster.nodes:
        vol = n.volume(VOL)
        assert vol["device"] == cluster.loop
        assert all(x["path_healthy"] and x["io_mode"] == "Direct" for x in vol["nodes"])
    lst = json.loads(cluster.node(3).ctl("volume", "list", "--json").stdout)
    assert [x["name"] for x in lst["volumes"]] == [VOL]
    # Adding it again under another name is refused.
    r = n1.ctl("volume", "add", "Other", cluster.loop)
    assert r.returncode == 1 and "already volume" in r.stderr


def same(a, b):
    """Byte equality without pytest's (very slow) diff of large buffers."""
    if a == b:
        return True
    first = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    raise AssertionError(f"data differs: lengths {len(a)} vs {len(b)}, first difference at {first}")


def test_files_and_directories_across_nodes(cluster, tmp_path):
    n2, n3 = cluster.node(2), cluster.node(3)
    n2.io("mkdir", "-p", "/tree/a/b/c")
    n3.io("mkdir", "/tree/a/x")
    assert n2.io_json("ls", "/tree/a")["entries"] == ["b", "x"]
    assert n3.io_json("ls", "/tree/a/b")["entries"] == ["c"]

    # File-redirected write on node 2, read on node 3 (both modes).
    data = os.urandom(100 * 1024 + 123)
    src = tmp_path / "src"
    src.write_bytes(data)
    w = n2.io_json("write", "/tree/a/b/c/file1", "--data-file", str(src))
    assert w["written"] == len(data) and w["block_bytes"] == 0
    out = tmp_path / "out"
    n3.io("read", "/tree/a/b/c/file1", "--out", str(out))
    assert same(out.read_bytes(), data)

    # Block-redirected write (LAYOUT_GET + BLOCK_WRITE) on node 3, read on node 2.
    blk = os.urandom(256 * 1024)
    src.write_bytes(blk)
    w = n3.io_json("write", "/tree/a/x/blocks", "--data-file", str(src), "--mode", "block")
    assert w["block_bytes"] == len(blk), "the data went to the device blocks"
    for mode in ("file", "block"):
        r = n2.io_json("read", "/tree/a/x/blocks", "--out", str(out), "--mode", mode)
        assert same(out.read_bytes(), blk), f"{mode} read on node 2"
        assert mode == "file" or r["block_bytes"] == len(blk)

    # Rename on node 2, seen on node 3.
    n2.io("rename", "/tree/a/b/c/file1", "/tree/a/x/moved")
    assert n3.io_json("ls", "/tree/a/x")["entries"] == ["blocks", "moved"]
    assert n3.io_json("ls", "/tree/a/b/c")["entries"] == []
    n3.io("read", "/tree/a/x/moved", "--out", str(out))
    assert same(out.read_bytes(), data)

    # Truncate on node 3, seen on node 2.
    n3.io("truncate", "/tree/a/x/moved", "4096")
    assert n2.io_json("stat", "/tree/a/x/moved")["attr"]["size"] == 4096
    n2.io("read", "/tree/a/x/moved", "--out", str(out))
    assert same(out.read_bytes(), data[:4096])

    # Unlink and rmdir on one node, gone on the other.
    n2.io("unlink", "/tree/a/x/moved")
    r = n3.io("stat", "/tree/a/x/moved", check=False)
    assert r.returncode == 1 and '"errno":-2' in r.stdout
    n3.io("rmdir", "/tree/a/b/c")
    assert n2.io_json("ls", "/tree/a/b")["entries"] == []
    st = n2.io_json("stat", "/tree/a/x/blocks")["attr"]
    assert st["type"] == "file" and st["size"] == len(blk)


def start_workload(node, name, stop):
    return subprocess.Popen(
        [CSVIO, "--socket", node.test_socket, "--volume", VOL, "workload", f"/{name}",
         "--min-rounds", "3", "--stop-file", stop, "--max-seconds", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_workload(p):
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, f"workload failed: {err.strip()} {out.strip()}"
    return json.loads(out.strip().splitlines()[-1])


def test_coordinator_killed_mid_workload(cluster, tmp_path):
    if online(cluster)["coordinator"] != 1:
        assert cluster.node(2).ctl("move", VOL, "1").returncode == 0
    assert online(cluster)["coordinator"] == 1
    n1, n2, n3 = cluster.nodes
    stop = str(tmp_path / "stop")
    before = [n.status()["counters"]["requests"] for n in (n2, n3)]
    loads = [start_workload(n2, "wl2", stop), start_workload(n3, "wl3", stop)]
    try:
        # Both workloads are running (their daemons see requests).
        wait_for(lambda: all(n.status()["counters"]["requests"] > b + 40
                             for n, b in zip((n2, n3), before)), 60, "workloads running")
        old_epoch = n2.volume(VOL)["epoch"]
        t0 = time.monotonic()
        n1.kill_csvd(signal.SIGKILL)
        v = online(cluster, [n2, n3], not_on=1)
        takeover = time.monotonic() - t0
        assert v["epoch"] > old_epoch
        progress = [n.status()["counters"]["requests"] for n in (n2, n3)]
        wait_for(lambda: all(n.status()["counters"]["requests"] > p + 40
                             for n, p in zip((n2, n3), progress)), 60, "workloads resumed")
    finally:
        open(stop, "w").close()
    results = [finish_workload(p) for p in loads]
    resume = max(r["max_op_ms"] for r in results)
    print(f"\nfailover: coordinator 1 killed -> node {v['coordinator']} online in "
          f"{takeover * 1000:.0f} ms; longest client operation {resume:.0f} ms "
          f"({', '.join(r['max_op'] for r in results)}); rounds {[r['rounds'] for r in results]}")
    assert all(r["ok"] for r in results)
    # Node 1 comes back and joins; the coordinator is kept.
    n1.start_csvd()
    cluster.wait_synced()
    assert online(cluster)["coordinator"] == v["coordinator"]


def test_planned_move(cluster):
    n1 = cluster.node(1)
    all_paths_healthy(cluster)
    r = n1.ctl("move", VOL, "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["coordinator"] == 3
    print(f"\nplanned move to node 3: online after {out['online_after_ms']:.0f} ms")
    assert online(cluster)["coordinator"] == 3
    assert cluster.node(2).io_json("ls", "/tree/a")["entries"] == ["b", "x"]
    # Without a target: the next eligible node after 3 (wraps to 1).
    r = n1.ctl("move", VOL, "--json")
    assert r.returncode == 0, r.stderr
    assert online(cluster)["coordinator"] == 1
    # A node that is not a member cannot be the target.
    r = n1.ctl("move", VOL, "9")
    assert r.returncode == 1 and "cannot serve" in r.stderr


def blocked_threads(pid):
    """Threads of PID in uninterruptible sleep (e.g. waiting on a frozen filesystem)."""
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                n += f.read().rsplit(")", 1)[1].split()[0] == "D"
        except FileNotFoundError:
            pass
    return n


def test_busy_workers_do_not_fail_the_path(cluster):
    """Every worker of the coordinator waits on its frozen filesystem (as in a
    backup, or a slow fsync): its path is fine, and its probes, on their own
    threads, keep saying so; the role stays (docs/daemon.md "Path monitor").
    Probes queued behind the requests timed out and moved the role away."""
    all_paths_healthy(cluster)
    v = online(cluster)
    coord = cluster.node(v["coordinator"])
    others = [n for n in cluster.nodes if n is not coord]
    mnt = os.path.join(coord.run_dir, "mnt", VOL)
    freeze = ["nsenter", "-t", str(coord.csvd.pid), "-m", "fsfreeze"]
    run(freeze + ["-f", mnt])
    clients = []
    try:
        for i in range(8):  # more than the coordinator's 4 workers
            n = others[i % len(others)]
            clients.append(subprocess.Popen(
                [CSVIO, "--socket", n.test_socket, "--volume", VOL, "mkdir", f"/frozen-{i}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        wait_for(lambda: blocked_threads(coord.csvd.pid) >= 4, 30,
                 "the coordinator's 4 workers blocked on the frozen filesystem")
        with open(coord.config) as f:
            path_timeout_s = json.load(f)["path_timeout_ms"] / 1000
        deadline = time.monotonic() + 3 * path_timeout_s
        while time.monotonic() < deadline:
            seen = coord.volume(VOL)
            me = next(x for x in seen["nodes"] if x["id"] == coord.id)
            assert me["path_healthy"] and seen["coordinator"] == coord.id, (
                f"workers busy on a frozen filesystem made a failed path: {seen}")
            time.sleep(0.1)
        assert all(c.poll() is None for c in clients), "a request did not wait for the thaw"
    finally:
        run(freeze + ["-u", mnt], check=False)
        for c in clients:
            out, err = c.communicate(timeout=60)
            assert c.returncode == 0, f"mkdir after the thaw: {err.strip()} {out.strip()}"
    assert {f"frozen-{i}" for i in range(8)} <= set(others[0].io_json("ls", "/")["entries"])
    for i in range(8):
        others[0].io("rmdir", f"/frozen-{i}")


def test_path_failure_moves_role_and_redirects(cluster):
    n1, n2 = cluster.node(1), cluster.node(2)
    all_paths_healthy(cluster)
    assert online(cluster)["coordinator"] == 1
    open(n1.fault_file, "w").close()
    try:
        v = online(cluster, not_on=1)
        mine = next(x for x in n2.volume(VOL)["nodes"] if x["id"] == 1)
        assert not mine["path_healthy"]
        assert mine["io_mode"] == "BlockRedirected" and mine["reason"] == "no path"
        # Node 1 still does I/O, through the new coordinator.
        r = n1.io_json("write", "/tree/from-node1", "--data", "x" * 4096, "--mode", "block")
        assert r["block_bytes"] == 4096
        assert v["coordinator"] != 1
    finally:
        os.unlink(n1.fault_file)
    wait_for(lambda: all(x["path_healthy"] for x in n2.volume(VOL)["nodes"]), 30,
             "node 1's path healthy again")


def test_wrong_key_and_non_member_refused(cluster):
    n1, n2 = cluster.node(1), cluster.node(2)
    before = n2.status()["counters"]["peer_auth_failures"]
    r = n1.netns(CSVIO, "auth-probe", "--addr", n2.addr, "--port", str(PORT),
                 "--key", cluster.wrong_key, "--node-id", "1", check=False)
    assert r.returncode == 3, r.stdout + r.stderr
    r = n1.netns(CSVIO, "auth-probe", "--addr", n2.addr, "--port", str(PORT),
                 "--key", cluster.key, "--node-id", "7", check=False)
    assert r.returncode == 3, "a node id outside the membership is refused"
    # A peer that connects and says nothing is cut off by the handshake's
    # watchdog, and the log says so, not "wrong cluster key?".
    silent = (f"import socket\ns = socket.create_connection(('{n2.addr}', {PORT}))\n"
              "s.settimeout(20)\nwhile s.recv(4096):\n    pass\nprint('closed by csvd')")
    r = n1.netns("/usr/bin/python3", "-c", silent, check=False, timeout=30)
    assert r.returncode == 0 and "closed by csvd" in r.stdout, r.stdout + r.stderr
    wait_for(lambda: n2.status()["counters"]["peer_auth_failures"] >= before + 3, 10,
             "refusals counted")
    with open(n2.log) as f:
        log = f.read()
    assert "authentication failed" in log and "not a member" in log
    assert "no HELLO: connection closed or no answer within 5 s" in log
    # A csvd started with the wrong key cannot talk to its peers.
    r = run(["stat", "-c", "%a", cluster.wrong_key])
    assert r.stdout.strip() == "600"


def frame(cmd, attrs=b"", magic=0x43535631, version=ABI_VERSION, length=None):
    return struct.pack("<IIBBH", magic, len(attrs) if length is None else length, cmd,
                       version, 0) + attrs


def nla(t, payload):
    n = 4 + len(payload)
    return struct.pack("<HH", n, t) + payload + b"\0" * ((4 - n % 4) % 4)


def test_malformed_frames_do_not_crash(cluster):
    n2 = cluster.node(2)
    # A well-framed message with a bad attribute: refused with -EINVAL.
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(n2.test_socket)
    s.sendall(frame(9, nla(1, struct.pack("<Q", 5)) + nla(200, b"junk")))  # unknown attr
    reply = s.recv(4096)
    assert len(reply) >= 12 and reply[8] == 2  # a REPLY
    assert struct.pack("<i", -22) in reply
    # Garbage header: the connection is closed.
    s.sendall(b"\xff" * 64)
    assert s.recv(4096) == b""
    s.close()
    # Oversized length, truncated frames, random bytes: test channel and peer port.
    for payload in (frame(9, length=1 << 30), frame(9, b"\x01\x00"), os.urandom(4096),
                    frame(250, b""), frame(9, nla(1, b"\x01"))):
        s = socket.socket(socket.AF_UNIX)
        s.connect(n2.test_socket)
        s.sendall(payload)
        s.close()
        n2.netns("/usr/bin/python3", "-c",
                 "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])),5);"
                 "s.sendall(bytes.fromhex(sys.argv[3])); s.settimeout(5)\n"
                 "try: s.recv(4096)\nexcept Exception: pass",
                 n2.addr, str(PORT), payload.hex(), check=False)
    assert n2.csvd.poll() is None, "csvd survived"
    assert n2.status()["counters"]["malformed_frames"] >= 1
    assert n2.io_json("ls", "/tree")["entries"]


def test_csvctl_errors(cluster, tmp_path):
    from cluster import CSVCTL
    r = run([CSVCTL, "--socket", str(tmp_path / "none.sock"), "status"], check=False)
    assert r.returncode == 3 and "csvd is not running" in r.stderr
    img = tmp_path / "empty.img"
    img.write_bytes(b"\0" * (1 << 20))
    r = cluster.node(1).ctl("volume", "add", "Empty", str(img))
    assert r.returncode == 1 and "no filesystem" in r.stderr
    r = cluster.node(1).ctl("volume", "remove", "Nope")
    assert r.returncode == 1 and "no volume" in r.stderr
    r = cluster.node(1).ctl("status")
    assert r.returncode == 0 and VOL in r.stdout and "COORDINATOR" in r.stdout


def control(node, req, timeout=15):
    """One request on csvd's control socket (JSON lines), as mount.csvfs sends it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(node.control)
        s.sendall((json.dumps(req) + "\n").encode())
        data = b""
        while b"\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise AssertionError("csvd closed the control socket without answering")
            data += chunk
    return json.loads(data.split(b"\n")[0])


def test_node_started_alone_waits_for_the_clusters_state(cluster):
    """A node whose csvd started before its Corosync merged with the cluster
    (a reboot: corosync.service and csvd.service start before the network
    settles) synced with itself alone. At the merge it is quorate before the
    cluster's state reaches it; meanwhile it must neither answer "no volume"
    to mount.csvfs nor act on its own, stale volume list. Here that list
    names the volume "Old" (it was removed and added again as Volume1 while
    node 3 was down) and prefers node 3: acting on it would mount the XFS
    that node 1, the coordinator, has mounted. The others' csvd are stopped
    (SIGSTOP) across the merge to hold their state sync back while node 3
    is asked."""
    n1, n2, n3 = cluster.nodes
    if online(cluster)["coordinator"] != 1:
        assert n2.ctl("move", VOL, "1").returncode == 0
    assert online(cluster)["coordinator"] == 1
    n3.kill_csvd(signal.SIGTERM)
    n3.corosync.terminate()
    n3.corosync.wait(timeout=30)
    n3.netns("ip", "link", "set", "eth0", "down")
    state = os.path.join(n3.dir, "state", "volumes.json")
    vols = json.load(open(state))
    assert [v["name"] for v in vols] == [VOL]
    vols[0].update(name="Old", preferred=3)
    with open(state, "w") as f:
        json.dump(vols, f)
    stopped = []
    try:
        n3.start_corosync()
        # csvd exits if Corosync's IPC is not up yet (systemd restarts it)
        wait_for(lambda: n3.netns("corosync-cmapctl", "-g", "totem.cluster_name",
                                  check=False).returncode == 0, 60, "corosync up on node 3")
        n3.start_csvd()
        wait_for(lambda: (lambda s: s["synced"] and s["members"] == [3]
                          and not s["quorate"])(n3.status()), 60, "node 3 synced alone")
        r = control(n3, {"cmd": "attach", "volume": VOL})
        assert not r["ok"] and "not synchronised" in r["error"], r
        log_mark = os.path.getsize(n3.log)
        for n in (n1, n2):
            n.csvd.send_signal(signal.SIGSTOP)
            stopped.append(n)
        n3.netns("ip", "link", "set", "eth0", "up")
        wait_for(lambda: (lambda s: s["quorate"] and sorted(s["members"]) == [1, 2, 3])(
            n3.status()), 60, "node 3 merged with the cluster")
        answers = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            answers.append(control(n3, {"cmd": "attach", "volume": VOL}))
            time.sleep(0.05)
        assert all(not r["ok"] and "not synchronised" in r["error"] for r in answers), answers
        assert not any(v["serving_here"] for v in n3.status()["volumes"])
        with open(n3.log) as f:
            f.seek(log_mark)
            assert "elected: mounting" not in f.read()
    finally:
        n3.netns("ip", "link", "set", "eth0", "up")
        for n in stopped:
            n.csvd.send_signal(signal.SIGCONT)
    cluster.wait_synced()
    assert online(cluster)["coordinator"] == 1
    r = control(n3, {"cmd": "attach", "volume": VOL})
    assert r["ok"] and r["coordinator"] == 1, r
    r = control(n3, {"cmd": "attach", "volume": "NoSuchVolume"})
    assert not r["ok"] and "no volume NoSuchVolume in this cluster" in r["error"], r
    with open(n3.log) as f:
        f.seek(log_mark)
        assert "elected: mounting" not in f.read()
    assert n3.io_json("ls", "/tree")["entries"]


def test_quorum_loss_pauses(cluster):
    n1, n2, n3 = cluster.nodes
    n2.kill_csvd(signal.SIGTERM)
    n3.kill_csvd(signal.SIGTERM)

    def paused():
        s = n1.status()
        v = s["volumes"][0]
        me = next(x for x in v["nodes"] if x["id"] == 1)
        return (not s["quorate"] and v["coordinator"] == 0 and me["io_mode"] == "Paused"
                and me["reason"] == "no quorum" and not v["serving_here"])
    wait_for(paused, 30, "node 1 paused without quorum")
    n2.start_csvd()
    n3.start_csvd()
    cluster.wait_synced()
    online(cluster)


def test_xfs_repair_clean_at_the_end(cluster):
    for n in cluster.nodes:
        n.kill_csvd(signal.SIGTERM)
    r = run(["xfs_repair", "-n", cluster.loop], check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
