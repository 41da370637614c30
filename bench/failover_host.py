#!/usr/bin/python3
"""Coordinator crash recovery without TCG: csvd on three host "nodes".

The lab's guests run under TCG, where mounting the XFS with log recovery
takes 5-20 s, so the lab cannot show what recovery costs on real hardware.
This runs the daemon-level cluster of tests/cluster (real Corosync in
network namespaces, real XFS on a loop device, csvd built in build/) on
the host kernel, and crashes the coordinator the way a power cut does for
the filesystem: the lower XFS is shut down without flushing its log
(`xfs_io -x -c shutdown`, run in csvd's mount namespace) and csvd is
SIGKILLed, while a metadata + data workload (csvio workload) runs on
another node. The next coordinator then mounts with log recovery, as after
a power cut.

For each round it prints, from the new coordinator's csvd log: detection
(the kill -> its "membership:" line; Corosync's token timeout, 3 s here:
corosync is killed too), the lease wait, the mount (log recovery) and the
end of the layout recall, that is recovery = membership line -> "serving";
whether the host kernel logged an XFS log recovery for that mount; and how
long the workload node's last re-sent request had been held (csvd's
last_hold_ms). The workload (its longest op spans detection + recovery)
must end with no error. Then `csvctl move` round the nodes under the same workload:
csvctl's "online after" (request -> READY at the new epoch, polled) and
the new coordinator's mount. Writes the table to
bench/results/failover-host-<time>.txt.

    sudo /usr/bin/python3 bench/failover_host.py [--rounds 5]
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "cluster"))
from cluster import CSVIO, Cluster, run, wait_for  # noqa: E402

VOL = "Volume1"
STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z (.*)$")


def log_events(path, since):
    """[(unix time, text)] of a csvd log from `since` on."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            m = STAMP.match(line)
            if m:
                t = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(
                    tzinfo=timezone.utc).timestamp()
                if t >= since:
                    out.append((t, m.group(2)))
    return out


def first(events, pattern):
    for t, text in events:
        m = re.search(pattern, text)
        if m:
            return t, m
    return None, None


def online(c, nodes, not_on):
    def agreed():
        vs = [n.volume(VOL) for n in nodes]
        if not all(v and v["ready"] and v["coordinator"] for v in vs):
            return None
        if len({(v["coordinator"], v["epoch"]) for v in vs}) != 1 or vs[0]["coordinator"] == not_on:
            return None
        return vs[0]
    return wait_for(agreed, 120, "the volume online on a new coordinator")


def kernel_log_since(marker):
    """Host kernel log lines after the line `marker` (written to /dev/kmsg)."""
    lines = run(["dmesg", "--notime"], check=False).stdout.splitlines()
    at = max((i for i, line in enumerate(lines) if marker in line), default=len(lines))
    return lines[at + 1:]


def crash(node, mount_dir):
    """Power cut, as the filesystem and the clients see it: csvd stopped
    first (no reply leaves it after this: a shut-down XFS fails the ops in
    flight with EIO, and a real power cut answers nothing), XFS shut down
    with its log unflushed, then csvd SIGKILLed."""
    pid = node.csvd.pid
    t = time.time()
    os.kill(pid, signal.SIGSTOP)
    r = run(["nsenter", "-t", str(pid), "-m", "xfs_io", "-x", "-c", "shutdown", mount_dir],
            check=False)
    # Corosync too: the others notice at the token timeout, not at once
    # through CPG (which is what a killed daemon on a live node looks like).
    node.corosync.send_signal(signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    node.corosync.wait(timeout=30)
    node.csvd.wait(timeout=30)
    node.csvd = node.corosync = None
    return t, r.returncode == 0


def power_on(c, node):
    node.start_corosync()
    wait_for(lambda: "Quorate:          Yes" in
             node.netns("corosync-quorumtool", "-s", check=False).stdout,
             60, f"corosync quorum on node {node.id}", interval=0.2)
    node.start_csvd()
    c.wait_synced()


def one_round(c, k, workload_node):
    cur = workload_node.volume(VOL)["coordinator"]
    victim = c.node(cur)
    survivors = [n for n in c.nodes if n is not victim]
    marker = f"csvfs bench/failover_host.py round {k} pid {os.getpid()}"
    with open("/dev/kmsg", "w") as f:
        f.write(marker + "\n")
    time.sleep(1.0)  # the workload has changes in the log
    t_kill, shut = crash(victim, os.path.join(victim.run_dir, "mnt", VOL))
    v = online(c, survivors, not_on=cur)
    new = c.node(v["coordinator"])
    ev = log_events(new.log, t_kill - 0.5)
    t_mem, _ = first(ev, r": membership:")
    t_wait, m_wait = first(ev, r"waiting (\d+) ms for the lease")
    t_mnt, m_mnt = first(ev, r"mounted in (\d+) ms")
    t_srv, m_srv = first(ev, r"serving \((\d+) ms\)")
    recovered = any("Starting recovery" in line for line in kernel_log_since(marker))
    row = {"round": k, "killed": cur, "new": v["coordinator"], "xfs_shutdown": shut,
           "detection_s": round(t_mem - t_kill, 3) if t_mem else None,
           "lease_wait_ms": int(m_wait.group(1)) if m_wait else 0,
           "mount_ms": int(m_mnt.group(1)) if m_mnt else None,
           "open_to_serving_ms": int(m_srv.group(1)) if m_srv else None,
           "recovery_s": round(t_srv - t_mem, 3) if t_srv and t_mem else None,
           "xfs_log_recovery": recovered}
    counters = workload_node.status()["counters"]
    row["client_last_hold_s"] = round(counters["last_hold_ms"] / 1000, 3)
    power_on(c, victim)
    return row


def one_move(c, k, workload_node):
    cur = workload_node.volume(VOL)["coordinator"]
    target = c.node(cur % len(c.nodes) + 1)
    t0 = time.time()
    r = workload_node.ctl("move", VOL, str(target.id), "--wait", "60")
    assert r.returncode == 0, r.stderr
    m = re.search(r"online after (\d+) ms", r.stdout)
    ev = log_events(target.log, t0 - 0.5)
    _, m_mnt = first(ev, r"mounted in (\d+) ms")
    return {"move": k, "from": cur, "to": target.id,
            "online_after_ms": int(m.group(1)) if m else None,
            "mount_ms": int(m_mnt.group(1)) if m_mnt else None,
            "client_last_hold_s": round(workload_node.status()["counters"]["last_hold_ms"] / 1000,
                                        3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="power cuts of the coordinator")
    ap.add_argument("--moves", type=int, default=5, help="csvctl move, then")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, loop devices, mounts)")
    c = Cluster()
    rows, moves, result = [], [], None
    try:
        c.start()
        r = c.node(1).ctl("volume", "add", VOL, c.loop, "--preferred", "1")
        assert r.returncode == 0, r.stderr
        online(c, c.nodes, not_on=None)
        n2 = c.node(2)
        stop = os.path.join(c.tmp, "stop")
        wl = subprocess.Popen([CSVIO, "--socket", n2.test_socket, "--volume", VOL, "--timeout",
                               "300", "workload", "/w", "--stop-file", stop, "--max-seconds",
                               "1800"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(1, args.rounds + 1):
            # never the workload's own node: its client would go with it
            while n2.volume(VOL)["coordinator"] == 2:
                c.node(3).ctl("move", VOL, "3", "--wait", "60")
            rows.append(one_round(c, k, n2))
            print(json.dumps(rows[-1]), flush=True)
        for k in range(1, args.moves + 1):
            moves.append(one_move(c, k, n2))
            print(json.dumps(moves[-1]), flush=True)
            time.sleep(0.5)  # some ops between the moves
        open(stop, "w").close()
        out, err = wl.communicate(timeout=600)
        result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err}
    finally:
        c.close()
    stamp = time.strftime("%Y%m%d-%H%M")
    path = os.path.join(HERE, "results", f"failover-host-{stamp}.txt")
    with open(path, "w") as f:
        f.write("sudo /usr/bin/python3 bench/failover_host.py --rounds %d --moves %d\n"
                % (args.rounds, args.moves))
        for row in rows + moves:
            f.write(json.dumps(row) + "\n")
        f.write("workload: " + json.dumps(result) + "\n")
    rec = sorted(r["recovery_s"] for r in rows if r["recovery_s"] is not None)
    print(f"workload: {json.dumps(result)}")
    if rec:
        print(f"recovery (membership -> serving) median {rec[len(rec) // 2]:.3f} s, "
              f"max {rec[-1]:.3f} s over {len(rec)} rounds; written to {path}")
    mv = sorted(m["online_after_ms"] for m in moves if m["online_after_ms"] is not None)
    if mv:
        print(f"csvctl move: online after median {mv[len(mv) // 2]} ms, max {mv[-1]} ms "
              f"over {len(mv)} moves")
    ok = result and result.get("ok") and len(rec) == args.rounds
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
