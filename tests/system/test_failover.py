"""Failover, planned move and fencing in a real 3-node lab (issue 7).

Two volumes on two shared disks (`--disks 2`): Volume1 (csvlun0, preferred
owner node1) and Volume2 (csvlun1, no preferred owner), csvd + csvfs.ko on
every node, csvfs mounted on every node. csvd runs with a 1 s node lease
(LEASE_MS) and 0.5 s margin; csvfs is mounted with timeout=300 so that a
request held through a failover under TCG (Corosync detection alone takes
10-20 s here) is not ended by the mount's request timeout.

1. The coordinator (node1) is powered off while fio (O_DIRECT, verify=crc32c)
   runs on node2 and node3: one job overwrites a written file (direct I/O,
   mapped blocks), one writes a new file (allocating writes, served by the
   coordinator). fio ends with no I/O or verify error. Its per-I/O
   completion log (`--write_lat_log --log_avg_msec=0 --log_unix_epoch=1`)
   gives the pause (largest gap between completions), split into
   detection (power-off -> csvd's `membership:` line on the fio node, both
   on the guest's clock) and recovery (that line -> the first completion
   after the gap).
2. A create/rename/mkdir/unlink/rmdir loop that checks every result runs
   on node2 while the coordinator is killed again and again: csvd SIGKILL
   (`CSV_FAILOVER_CSVD_KILLS`, default 2) and VM power cut
   (`CSV_FAILOVER_POWER_KILLS`, default 1: a power round with the reboot
   takes 3-5 min under TCG on a busy host). Each killed node is brought back
   (VM restart, Corosync, csvfs.ko, csvd, mount) before the next kill. The
   loop ends with exactly the tree it expects, seen the same from node3.
3. `csvctl move Volume1` node1 -> node3 -> node1 under fio on node2: the
   pause (largest completion gap around each move) is printed.
   Then a file node2 holds open loses its name on node3 and the volume
   moves: node2 reads and writes it through its open afterwards (the
   file lives on as an orphan and node2's csvd reclaims the open).
4. node3 is partitioned while it writes stamped blocks with O_DIRECT and
   its csvd is stopped (SIGSTOP: a hung daemon renews no lease): reading
   the file on the majority during the partition shows no block stamped
   after node3's lease deadline (last renewal <= SIGSTOP, + LEASE_MS), but
   blocks stamped between the SIGSTOP and the deadline; the majority keeps
   writing; after SIGCONT and heal node3 rejoins by itself (synced, Direct)
   and its held writes complete with no error.
5. Coordinators of the two volumes are spread over the nodes; when a node
   rejoins, the balance is restored.
Finally every node unmounts, the volumes are removed and `xfs_repair -n`
is clean on both disks. Timings of each step are printed.

    sudo /usr/bin/python3 -m pytest -s -v tests/system/test_failover.py
    CSV_FAILOVER_CSVD_KILLS=5 CSV_FAILOVER_POWER_KILLS=5 sudo -E /usr/bin/python3 -m pytest -s ...
"""
import json
import os
import re
import sys
import time
from datetime import datetime, timezone

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools"))

from lab import demo  # noqa: E402
from lab.demo import CSVD, KO, CsvCluster, wait_for  # noqa: E402

pytestmark = pytest.mark.lab(nodes=3, disks=2, disk_size="2G")

NODES = ["node1", "node2", "node3"]
PY = "/usr/bin/python3"
LEASE_MS = 1000
LEASE_MARGIN_MS = 500
MOUNT_TIMEOUT_S = 300
RECLAIM_GRACE_MS = 5000  # short: test 3b waits for its end
CSVD_KILLS = int(os.environ.get("CSV_FAILOVER_CSVD_KILLS", "2"))
POWER_KILLS = int(os.environ.get("CSV_FAILOVER_POWER_KILLS", "1"))
# csvd's realtime_priority (unset: csvd's default, SCHED_RR 99); 0 for an A/B
# of the lease renewals with a normal-priority event loop (docs/failover.md)
REALTIME_PRIORITY = os.environ.get("CSV_FAILOVER_REALTIME_PRIORITY")
# generous bounds for a loaded TCG lab; the targets (DESIGN.md) are printed
RECOVERY_LIMIT_S = 60.0      # target 2 s, from the membership change
RESUME_LIMIT_S = 5.0         # from the new coordinator serving to I/O completing again
MOVE_PAUSE_LIMIT_S = 60.0    # target 0.5 s
# Direct I/O to written blocks goes on through a failover or a move (cached
# layouts stay valid until the new coordinator recalls them all): its
# largest gap there is a short stall, not the hand-over (targets 2 s / 0.5 s)
DIRECT_PAUSE_LIMIT_S = 5.0


def limit(seconds):
    """A bound above, for the running lab's kernel: the bounds are for the Debian
    kernel, and a KASAN/lockdep guest does the same work lab.slowdown times slower
    (demo.TIME_SCALE, set when the env's CsvClusters are made)."""
    return seconds * demo.TIME_SCALE


TIMINGS = {}


def log(msg):
    print(f"[failover {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Timed:
    def __init__(self, what):
        self.what = what

    def __enter__(self):
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        TIMINGS[self.what] = time.monotonic() - self.t0
        log(f"{self.what}: {TIMINGS[self.what]:.1f} s")
        return False


class FoCluster(CsvCluster):
    """CsvCluster with a short lease and a long request timeout (see the module doc)."""

    def config(self, node):
        c = super().config(node)
        c.update(lease_ms=LEASE_MS, lease_margin_ms=LEASE_MARGIN_MS,
                 reclaim_grace_ms=RECLAIM_GRACE_MS)
        if REALTIME_PRIORITY is not None:
            c["realtime_priority"] = int(REALTIME_PRIORITY)
        return c

    def mount(self, node):
        self.sh(node, f"mkdir -p {self.mnt} && grep -q ' {self.mnt} csvfs ' /proc/mounts || "
                      f"mount -t csvfs -o volume={self.volume},timeout={MOUNT_TIMEOUT_S} "
                      f"{self.dev} {self.mnt}", timeout=120)


class Env:
    """The two volumes; v1.csvd_pid is shared (one csvd per node serves both)."""

    def __init__(self, lab):
        self.lab = lab
        self.v1 = FoCluster(lab, volume="Volume1", dev="/dev/disk/by-id/virtio-csvlun0")
        self.v2 = FoCluster(lab, volume="Volume2", dev="/dev/disk/by-id/virtio-csvlun1")
        self.v2.csvd_pid = self.v1.csvd_pid
        self.vols = (self.v1, self.v2)

    def coordinators(self, node):
        return {c.volume: (c.vol(node) or {}).get("coordinator") for c in self.vols}

    def wait_online_all(self, nodes=None, timeout=240):
        for c in self.vols:
            c.wait_online(nodes=nodes, timeout=timeout)

    def revive(self, node):
        """Bring a killed node (VM or csvd) back: boot, Corosync, module, csvd, mounts."""
        lab = self.lab
        t0 = time.monotonic()
        if not lab.is_running(node):
            self.v1.csvd_pid.pop(node, None)
            lab.restart(node, timeout=400)
            lab.start_corosync(node)
        lab.wait_quorate(NODES, members=NODES, timeout=300)
        if not self.v1.csvd_running(node):
            self.v1.install(node)
            self.v1.start_csvd(node)
        self.v1.wait_synced(timeout=240)
        self.wait_online_all(timeout=240)
        for c in self.vols:
            c.mount(node)
        return time.monotonic() - t0

    def move(self, vol, node):
        out = vol.ctl("node2", f"move {vol.volume} {self.lab.index(node)} "
                               f"--wait {limit(120):.0f}", timeout=180)  # exec scales it
        vol.wait_online(coordinator=self.lab.index(node), timeout=120)
        return out.strip()


@pytest.fixture(scope="module")
def env(lab):
    if not (os.path.exists(KO) and os.access(CSVD, os.X_OK)):
        pytest.skip("csvfs.ko or csvd not built (tools/build-kmod; cmake --build build)")
    t0 = time.monotonic()
    TIMINGS["boot + Corosync"] = sum(lab.timings.get(k, 0) for k in ("boot_s",))
    e = Env(lab)
    with Timed("set-up (Corosync, csvd, 2 volumes, mounts)"):
        e.v1.setup(preferred=1, progress=log)
        e.v2.mkfs_and_add(preferred=None)
        e.v2.wait_online(timeout=180)
        for n in NODES:
            e.v2.mount(n)
    log(f"coordinators: {e.coordinators('node2')}")
    yield e
    TIMINGS["module total (after boot)"] = time.monotonic() - t0
    log("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMINGS.items()))
    for c in e.vols:
        c.teardown()


# ------------------------------------------------------------------ helpers

def guest_offset(lab, node):
    """guest CLOCK_REALTIME minus host time.time(), from the best of 3 round trips."""
    best = None
    for _ in range(3):
        a = time.time()
        g = float(lab.sh(node, "date +%s.%N").strip())
        b = time.time()
        if best is None or b - a < best[0]:
            best = (b - a, g - (a + b) / 2)
    return best[1]


STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z (.*)$")


def csvd_log(lab, node, since=0.0):
    """[(guest unix time, line)] of NODE's csvd log (lines stamped by csvd)."""
    out = []
    try:
        with open(os.path.join(lab.node_dir(node), "csvd.log"), errors="replace") as f:
            for line in f:
                m = STAMP.match(line)
                if not m:
                    continue
                t = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(
                    tzinfo=timezone.utc).timestamp()
                if t >= since:
                    out.append((t, m.group(2)))
    except FileNotFoundError:
        pass
    return out


def csvd_warnings(lab, node, pattern):
    """NODE's csvd log lines that match pattern, joined (for a test's log)."""
    return "; ".join(line for _, line in csvd_log(lab, node) if re.search(pattern, line)) or "-"


def first_event(lab, node, pattern, since):
    for t, line in csvd_log(lab, node, since):
        if re.search(pattern, line):
            return t, line
    return None, None


def completions(path):
    """Sorted completion times (s, guest clock) of a fio per-I/O log with unix epoch."""
    ts = []
    with open(path) as f:
        for line in f:
            parts = line.split(",")
            if len(parts) >= 2:
                ts.append(int(parts[0]) / 1000.0)
    ts.sort()
    return ts


def largest_gap(ts, lo=None, hi=None):
    """(gap, start, end) of the largest gap between completions, optionally only gaps
    that overlap [lo, hi]."""
    best = (0.0, None, None)
    for a, b in zip(ts, ts[1:]):
        if lo is not None and (b < lo or a > hi):
            continue
        if b - a > best[0]:
            best = (b - a, a, b)
    return best


FIO_COMMON = ("--direct=1 --ioengine=psync --time_based --verify=crc32c --verify_fatal=1 "
              "--verify_backlog=32 --log_avg_msec=0 --log_unix_epoch=1 --output-format=json")


def prepare_fio(env, node, vol, tag):
    """The files of start_fio: 'mapped' written (4 MiB), 'alloc' absent."""
    m = vol.mnt
    vol.sh(node, f"rm -f {m}/{tag}-{node}-alloc /lab/{node}/{tag}-*.log && "
                 f"dd if=/dev/zero of={m}/{tag}-{node}-mapped bs=1M count=4 oflag=direct "
                 f"status=none", timeout=600)


def start_fio(env, node, vol, tag, runtime):
    """Two jobs on NODE: 'mapped' overwrites a written file (direct I/O), 'alloc' writes a
    new one (allocating: through the coordinator). Logs go to the run dir (/lab/NODE/TAG-*).
    RUNTIME is for the Debian kernel: the steps between the start and the fault take
    lab.slowdown times longer in a debug guest, so fio runs that much longer there."""
    m = vol.mnt
    cmd = (f"fio {FIO_COMMON} --runtime={int(limit(runtime))} "
           f"--name=mapped --filename={m}/{tag}-{node}-mapped --rw=randwrite --bs=4k --size=4M "
           f"--write_lat_log=/lab/{node}/{tag}-mapped "
           f"--name=alloc --filename={m}/{tag}-{node}-alloc --rw=write --bs=64k --size=64M "
           f"--write_lat_log=/lab/{node}/{tag}-alloc "
           f"> /lab/{node}/{tag}-fio.log 2>&1; echo rc=$? >> /lab/{node}/{tag}-fio.log")
    env.lab.spawn(node, cmd)


def fio_running(env, node, vol, tag, min_bytes=256 << 10):
    r = env.lab.exec(node, f"stat -c %s {vol.mnt}/{tag}-{node}-alloc")
    return r.ok and int(r.stdout.strip() or 0) >= min_bytes


def stop_fio(env, node):
    """End fio on NODE now. On SIGINT fio stops its jobs, flushes its logs,
    writes its JSON report (each job's error count) and exits 128."""
    env.lab.exec(node, "pkill -INT -x fio")


def fio_result(env, node, tag, timeout=600, stopped=False):
    """fio's JSON report; STOPPED: the test ended it (stop_fio), so exit 128 is fine."""
    path = os.path.join(env.lab.node_dir(node), f"{tag}-fio.log")

    def done():
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        return text if "rc=" in text else None
    text = wait_for(done, timeout, f"fio {tag} on {node}", 1)
    rc = re.search(r"rc=(\d+)", text).group(1)
    data = None
    m = re.search(r"^\{.*^\}", text, re.S | re.M)
    if m:
        data = json.loads(m.group(0))
    errors = {j["jobname"]: j.get("error", 0) for j in (data or {}).get("jobs", [])}
    assert rc in (("0", "128") if stopped else ("0",)) and data and not any(errors.values()), \
        f"fio {tag} on {node}: rc={rc} errors={errors}\n{text[-4000:]}"
    return data


def fio_logs(env, node, tag, job):
    d = env.lab.node_dir(node)
    names = [f for f in os.listdir(d) if f.startswith(f"{tag}-{job}_clat.") and f.endswith(".log")]
    assert names, f"no completion log {tag}-{job}_clat.*.log on {node}"
    return completions(os.path.join(d, names[0]))


def revive_any_down(env):
    """An earlier test that failed may have left a node powered off or its csvd dead."""
    for n in NODES:
        if not env.lab.is_running(n) or not env.v1.csvd_running(n):
            env.revive(n)


# ------------------------------------------------------------------ 1. power-off under fio

def test_power_off_coordinator_under_fio(env):
    lab, v1 = env.lab, env.v1
    with Timed("1. coordinator power-off under fio"):
        if v1.vol("node2")["coordinator"] != 1:
            env.move(v1, "node1")
        for n in ("node2", "node3"):
            prepare_fio(env, n, v1, "po")
        # fio runs until the test stops it after the failover window: the steps
        # before the power-off take minutes in loaded debug guests, and a fixed
        # runtime ended before it there (this one is only an upper bound).
        for n in ("node2", "node3"):
            start_fio(env, n, v1, "po", runtime=600)
        for n in ("node2", "node3"):
            wait_for(lambda n=n: fio_running(env, n, v1, "po"), 120, f"fio running on {n}")
        offs = {n: guest_offset(lab, n) for n in ("node2", "node3")}
        lapses = {n: int(kernel_field(lab, n, "Volume1", "lease_lapses"))
                  for n in ("node2", "node3")}
        t_kill = time.time()
        lab.kill("node1")
        log("node1 (coordinator of Volume1) powered off")
        v = wait_for(lambda: (lambda v: v if v and v["ready"] and v["coordinator"] not in (0, 1)
                              else None)(v1.vol("node2")), 180, "a new coordinator of Volume1")
        online_s = time.time() - t_kill
        log(f"new coordinator node{v['coordinator']} epoch {v['epoch']} online {online_s:.1f} s "
            f"after the power-off (host clock)")
        # The window measured below ends at most the resume bound after the
        # new coordinator serves; fio goes on through it, with a margin.
        time.sleep(limit(RESUME_LIMIT_S) + 5)
        for n in ("node2", "node3"):
            stop_fio(env, n)
        res = {n: fio_result(env, n, "po", timeout=400, stopped=True) for n in ("node2", "node3")}
        new = f"node{v['coordinator']}"
        rows = []
        for n in ("node2", "node3"):
            tk = t_kill + offs[n]            # the power-off on this guest's clock
            t_mem, line = first_event(lab, n, r"membership: .*left [1-9]", tk - 1)
            assert t_mem, f"no membership change in {n}'s csvd log"
            t_serving, _ = first_event(lab, new, r"volume=Volume1 .*serving", tk - 1)
            t_wait, wline = first_event(lab, new, r"volume=Volume1 .*for the lease", tk - 1)
            # the failover on this guest's clock: the power-off until I/O flows again
            # for sure (serving + the resume bound)
            window_end = (t_serving + offs[n] - guest_offset(lab, new) if t_serving
                          else t_mem) + limit(RESUME_LIMIT_S)
            ended = res[n]["timestamp_ms"] / 1000   # fio's end, on this guest's clock
            assert ended >= window_end, (
                f"fio on {n} ended {ended - tk:+.1f} s from the power-off, before the end of "
                f"the failover window it is to measure ({window_end - tk:+.1f} s): its runtime "
                "is too short for this lab")
            for job in ("mapped", "alloc"):
                ts = fio_logs(env, n, "po", job)
                gap, a, b = largest_gap(ts, tk, window_end)
                rows.append(dict(node=n, job=job, ios=len(ts), pause=gap,
                                 detection=t_mem - tk, recovery=(b - t_mem) if b else None,
                                 gap_start=(a - tk) if a else None))
            coord_off = offs[n] - guest_offset(lab, new) if new != n else 0.0
            for r in rows:
                if r["node"] == n and t_serving:
                    r["serving"] = t_serving + coord_off - t_mem   # after the membership change
            if t_serving:
                log(f"{n}: membership change {t_mem - tk:.2f} s after the power-off; new "
                    f"coordinator {new} serving {t_serving + coord_off - t_mem:.2f} s after it"
                    + (f" (lease wait logged at {t_wait + coord_off - t_mem:+.2f} s: {wline})"
                       if t_wait else ""))
        for n in lapses:
            lapses[n] = int(kernel_field(lab, n, "Volume1", "lease_lapses")) - lapses[n]
            if lapses[n]:
                log(f"{n}: its lease ran out {lapses[n]} time(s) during the failover (csvd renewed "
                    f"late: {csvd_warnings(lab, n, 'lease renewed')}); it dropped its layouts")
            c = v1.status(n)["counters"]
            log(f"{n}: csvd's longest time between two lease renewals since it started "
                f"{c['lease_renew_max_gap_ms']} ms, {c['lease_renewals_late']} later than the lease")
        for r in rows:
            r["lease_lapses"] = lapses[r["node"]]
            if r["job"] == "mapped":
                log(f"fio {r['node']}/mapped (direct I/O to written blocks): {r['ios']} I/Os, "
                    f"largest gap during the failover {r['pause']:.2f} s (starts "
                    f"{r['gap_start']:+.2f} s from the power-off; detection {r['detection']:.2f}"
                    f" s): direct I/O went on (target: pause <= 2 s)")
                continue
            log(f"fio {r['node']}/{r['job']}: {r['ios']} I/Os, largest gap {r['pause']:.2f} s "
                f"(starts {r['gap_start']:+.2f} s from the power-off); detection "
                f"{r['detection']:.2f} s, recovery {r['recovery']:.2f} s (target <= 2 s) = "
                f"lease wait + mount until serving {r.get('serving', float('nan')):.2f} s + I/O "
                f"resumed {r['recovery'] - r.get('serving', float('nan')):.2f} s later")
        for n, data in res.items():
            for j in data["jobs"]:
                assert j["error"] == 0, (n, j["jobname"], j["error"])
                assert j["write"]["io_bytes"] > 0, (n, j["jobname"])
        # Allocating I/O needs the coordinator: it pauses during the failover (the
        # volume is Paused until the new coordinator is READY) and resumes soon after
        # the new coordinator serves; the mount (XFS log recovery) takes what the loaded
        # TCG guest gives it, hence the loose total bound. Direct I/O to written blocks
        # does not wait for any of it - unless the node's own lease ran out (its csvd
        # renewed late: held up while Corosync formed the new membership), which ends
        # its layouts: then it waits for the new coordinator like allocating I/O.
        for r in rows:
            if r["job"] == "mapped" and not r["lease_lapses"]:
                assert r["pause"] <= limit(DIRECT_PAUSE_LIMIT_S), r
                continue
            assert r["recovery"] is not None and r["recovery"] <= limit(RECOVERY_LIMIT_S), r
            assert r["recovery"] - r["serving"] <= limit(RESUME_LIMIT_S), r
        TIMINGS["1. power-off: new coordinator online (host)"] = online_s
    with Timed("1. node1 back (boot, Corosync, csvd, mount)"):
        env.revive("node1")


# ------------------------------------------------------------------ 2. metadata loop

META = r"""
import errno, json, os, sys, time
D, STOP, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
model = {}          # relative path -> bytes (file) or None (directory)
errors, ops, stamps = [], 0, []
def err(msg):
    errors.append(f"{time.time():.3f} {msg}")
def op(what, fn, *a):
    global ops
    try:
        r = fn(*a)
    except OSError as e:
        err(f"{what}{a}: {e}")
        return False
    ops += 1
    stamps.append(time.time())
    return True if r is None else r
def create(p, data):
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
def read(p):
    with open(p, "rb") as f:
        return f.read()
def check_file(rel):
    try:
        got = read(os.path.join(D, rel))
    except OSError as e:
        err(f"read {rel}: {e}")
        return
    if got != model[rel]:
        err(f"content of {rel}: {len(got)} bytes, expected {len(model[rel])}")
def check_gone(rel):
    if os.path.lexists(os.path.join(D, rel)):
        err(f"{rel} still exists")
os.makedirs(D, exist_ok=True)
i = 0
while not os.path.exists(STOP):
    f, g, sub = f"f{i}", f"g{i}", f"d{i}"
    data = (f"{i}:" * (1 + i % 97)).encode()
    if op("create", create, os.path.join(D, f), data):
        model[f] = data
        check_file(f)
    if op("rename", os.rename, os.path.join(D, f), os.path.join(D, g)):
        model[g] = model.pop(f)
        check_gone(f)
        check_file(g)
    if i % 2 == 0 and op("mkdir", os.mkdir, os.path.join(D, sub)):
        model[sub] = None
        if op("rename-into", os.rename, os.path.join(D, g), os.path.join(D, sub, "h")):
            model[f"{sub}/h"] = model.pop(g)
            check_gone(g)
            check_file(f"{sub}/h")
    if i % 4:
        rel = f"{sub}/h" if f"{sub}/h" in model else g
        if op("unlink", os.unlink, os.path.join(D, rel)):
            model.pop(rel)
            check_gone(rel)
        if sub in model and op("rmdir", os.rmdir, os.path.join(D, sub)):
            model.pop(sub)
            check_gone(sub)
    if i % 10 == 9:
        names = set(os.listdir(D))
        want = {k for k in model if "/" not in k}
        if names != want:
            err(f"listdir: {len(names ^ want)} names differ: {sorted(names ^ want)[:5]}")
    i += 1
    if i % 25 == 0:
        with open(OUT + ".progress", "w") as p:
            p.write(f"{i} {ops} {len(errors)}\n" + "".join(e + "\n" for e in errors[:5]))
# the tree: names and sizes of everything, contents of every 10th file (each
# file's content was checked when it was created and renamed)
tree, k = {}, 0
for d, dirs, files in os.walk(D):
    for n in dirs:
        tree[os.path.relpath(os.path.join(d, n), D)] = None
    for n in files:
        p = os.path.join(d, n)
        rel = os.path.relpath(p, D)
        k += 1
        if k % 10 == 0:
            tree[rel] = read(p)
        else:
            size = os.lstat(p).st_size
            want = model.get(rel)
            tree[rel] = want if want is not None and len(want) == size else b"?" * size
diff = sorted(set(tree) ^ set(model)) + sorted(k for k in tree if k in model and tree[k] != model[k])
gaps = sorted(((b - a, a) for a, b in zip(stamps, stamps[1:])), reverse=True)[:10]
json.dump({"iterations": i, "ops": ops, "errors": errors[:50], "n_errors": len(errors),
           "tree_diff": diff[:50], "n_entries": len(tree), "expected": sorted(model),
           "gaps": gaps}, open(OUT, "w"))
"""


def meta_progress(env, out):
    """(iterations, ops, number of errors, the first errors) of the loop so far."""
    try:
        with open(os.path.join(env.lab.run_dir, os.path.basename(out) + ".progress")) as f:
            head, *first = f.read().splitlines()
        i, ops, errs = map(int, head.split())
    except (FileNotFoundError, ValueError):
        i, ops, errs, first = 0, 0, 0, []
    return i, ops, errs, first


def coordinator_not(env, vol, avoid):
    """Make sure VOL's coordinator is not AVOID (the loop's node): move it if so."""
    c = vol.vol("node2")["coordinator"]
    if c == env.lab.index(avoid):
        target = "node1" if env.lab.is_running("node1") else "node3"
        env.move(vol, target)
        c = env.lab.index(target)
    return f"node{c}"


def test_metadata_loop_under_repeated_coordinator_kills(env):
    lab, v1 = env.lab, env.v1
    revive_any_down(env)
    d = f"{v1.mnt}/meta"
    with open(os.path.join(lab.run_dir, "meta.py"), "w") as f:
        f.write(META)
    stop = os.path.join(lab.run_dir, "meta.stop")
    if os.path.exists(stop):
        os.unlink(stop)
    out = "/lab/meta.json"
    lab.spawn("node2", f"{PY} /lab/meta.py {d} /lab/meta.stop {out}", log="/lab/node2/meta.log")
    wait_for(lambda: meta_progress(env, out)[0] >= 25, 180, "metadata loop under way")
    # alternate csvd and power kills while both are left
    kinds, nc, np = [], CSVD_KILLS, POWER_KILLS
    while nc or np:
        if nc:
            kinds.append("csvd")
            nc -= 1
        if np:
            kinds.append("power")
            np -= 1
    rounds = []
    t_all = time.monotonic()
    for k, kind in enumerate(kinds, 1):
        victim = coordinator_not(env, v1, "node2")
        before = meta_progress(env, out)[1]
        t0 = time.monotonic()
        if kind == "csvd":
            v1.kill_csvd(victim)
        else:
            lab.kill(victim)
        vic = lab.index(victim)
        v = wait_for(lambda: (lambda v: v if v and v["ready"] and v["coordinator"] not in (0, vic)
                              else None)(v1.vol("node2")), 240, "a new coordinator")
        online = time.monotonic() - t0
        # the loop goes on after the failover
        wait_for(lambda: meta_progress(env, out)[1] >= before + 30, 240, "the loop resuming")
        resumed = time.monotonic() - t0
        back = env.revive(victim)
        i, ops, errs, first_errors = meta_progress(env, out)
        rounds.append(dict(kind=kind, victim=victim, new=v["coordinator"], online=online,
                           resumed=resumed, back=back, errors=errs))
        log(f"kill {k}/{len(kinds)} ({kind} of {victim}): node{v['coordinator']} online "
            f"{online:.1f} s, loop resumed {resumed:.1f} s, {victim} back in {back:.1f} s; "
            f"loop at {i} iterations, {ops} ops, {errs} errors")
        assert errs == 0, f"the loop saw errors: {first_errors}"
    open(stop, "w").close()
    res_path = os.path.join(lab.run_dir, "meta.json")
    wait_for(lambda: os.path.exists(res_path) and os.path.getsize(res_path) > 0, 900,
             "the loop's result", 2)
    with open(res_path) as f:
        r = json.load(f)
    TIMINGS["2. kills"] = time.monotonic() - t_all
    log(f"metadata loop: {r['iterations']} iterations, {r['ops']} ops, {r['n_errors']} errors, "
        f"{r['n_entries']} entries left; longest pauses "
        + ", ".join(f"{g:.1f} s" for g, _ in r["gaps"][:len(kinds)]))
    log("kills: " + "; ".join(f"{x['kind']} {x['victim']} -> node{x['new']} {x['online']:.1f} s"
                              for x in rounds))
    assert r["n_errors"] == 0, r["errors"]
    assert not r["tree_diff"], r["tree_diff"]
    assert r["iterations"] > 50
    # another node sees exactly that tree (after the attribute cache timeout)
    want = sorted(r["expected"])
    wait_for(lambda: sorted(v1.sh("node3", f"cd {d} && find . -mindepth 1 | sed 's|^./||'")
                            .split()) == want, 300, "node3 seeing the expected tree", 5)
    assert len(rounds) == len(kinds)


# ------------------------------------------------------------------ 3. planned move

def test_planned_move_under_fio(env):
    lab, v1 = env.lab, env.v1
    with Timed("3. planned moves under fio"):
        if v1.vol("node2")["coordinator"] != 1:
            env.move(v1, "node1")
        prepare_fio(env, "node2", v1, "mv")
        start_fio(env, "node2", v1, "mv", runtime=40)
        wait_for(lambda: fio_running(env, "node2", v1, "mv"), 120, "fio running on node2")
        off = guest_offset(lab, "node2")
        moves = []
        for target in ("node3", "node1"):
            t0 = time.time()
            printed = env.move(v1, target)
            t1 = time.time()
            moves.append((target, t0 + off, t1 + off, printed))
            log(f"csvctl move Volume1 {target}: {printed} ({t1 - t0:.2f} s with the wait)")
            time.sleep(2)  # some I/O between the moves, to tell their pauses apart
        fio_result(env, "node2", "mv", timeout=300)
        slow = []
        for job in ("mapped", "alloc"):
            ts = fio_logs(env, "node2", "mv", job)
            for target, a, b, printed in moves:
                gap, _, _ = largest_gap(ts, a, b)
                m = re.search(r"online after (\d+) ms", printed)
                handover = int(m.group(1)) / 1000.0 if m else float("nan")
                log(f"move to {target}: fio node2/{job} largest completion gap {gap:.3f} s "
                    f"(target <= 0.5 s); the hand-over (unmount, mount, READY) took "
                    f"{handover:.2f} s")
                TIMINGS[f"3. move to {target} pause {job}"] = gap
                # I/O resumes soon after the new coordinator is online; the mount
                # itself takes what the loaded TCG guest gives it. Direct I/O to
                # written blocks does not wait for the hand-over at all.
                bound = (limit(DIRECT_PAUSE_LIMIT_S) if job == "mapped"
                         else min(handover + limit(RESUME_LIMIT_S), limit(MOVE_PAUSE_LIMIT_S)))
                if not gap <= bound:
                    slow.append((target, job, gap, handover))
        assert not slow, slow


# Holds PATH open on node2 across a move: writes DATA, publishes OUT.1,
# waits for OUT.go, then reads DATA back and appends through the same fd.
HOLDER = r"""
import json, os, sys, time
path, out, data = sys.argv[1], sys.argv[2], sys.argv[3].encode() * 1000
def publish(name, text):
    with open(name + ".tmp", "w") as f:
        f.write(text)
    os.rename(name + ".tmp", name)
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
os.pwrite(fd, data, 0)
os.fsync(fd)
publish(out + ".1", "open")
while not os.path.exists(out + ".go"):
    time.sleep(0.1)
res = {"same": os.pread(fd, len(data), 0) == data}
res["appended"] = os.pwrite(fd, b"after the move", len(data))
os.fsync(fd)
res["size"] = os.fstat(fd).st_size
res["nlink"] = os.fstat(fd).st_nlink
os.close(fd)
publish(out + ".2", json.dumps(res))
"""


def test_open_file_unlinked_elsewhere_survives_a_move(env):
    """XFS frees an unlinked inode at the old coordinator's unmount (or log
    recovery after a crash); the file node2 holds open must not go with it."""
    lab, v1 = env.lab, env.v1
    with Timed("3b. an open file unlinked on another node, across a move"):
        f, out = f"{v1.mnt}/held-open", "/tmp/holder"
        lab.exec("node2", f"rm -f {out}.*")
        with open(os.path.join(lab.node_dir("node2"), "holder.py"), "w") as fh:
            fh.write(HOLDER)
        lab.spawn("node2", f"{PY} /lab/node2/holder.py {f} {out} csvfs-orphan",
                  log="/lab/node2/holder.log")
        wait_for(lambda: lab.exec("node2", f"test -e {out}.1").ok, 120, "node2 holding the file")
        v1.sh("node3", f"rm {f} && ! test -e {f}")
        reclaimed = v1.status("node2")["counters"]["reclaimed"]
        target = "node3" if v1.vol("node2")["coordinator"] != 3 else "node1"
        since = time.time() + guest_offset(lab, target)
        log(f"csvctl move Volume1 {target}: {env.move(v1, target)}")
        wait_for(lambda: v1.status("node2")["counters"]["reclaimed"] > reclaimed, 120,
                 "node2's csvd reclaimed the open")
        wait_for(lambda: first_event(lab, target, "reclaim grace over: 0 unreclaimed",
                                     since)[0], 120, "the end of the reclaim grace period")
        lab.exec("node2", f"touch {out}.go")
        wait_for(lambda: lab.exec("node2", f"test -e {out}.2").ok, 120, "node2's holder done")
        res = json.loads(v1.sh("node2", f"cat {out}.2"))
        log(f"node2 after the move: {res}")
        assert res == {"same": True, "appended": 14, "size": 12000 + 14, "nlink": 0}, res
        wait_for(lambda: v1.vol(target)["orphans_removed"] == 1, 60,
                 "the orphan removed at node2's close")


# ------------------------------------------------------------------ 4. partition

WRITER = r"""
import json, mmap, os, struct, sys, threading, time
PATH, STOP, OUT, NBLK, THREADS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), 4
fd = os.open(PATH, os.O_WRONLY | os.O_DIRECT)
lock = threading.Lock()
stats = {"writes": 0, "errors": [], "slow": []}
def worker(k):
    buf = mmap.mmap(-1, 4096)
    seq = 0
    per = NBLK // THREADS
    while not os.path.exists(STOP):
        blk = k * per + seq % per
        t = time.time_ns()
        buf.seek(0)
        buf.write(b"CSVP" + struct.pack("<IQQ", k, seq, t) + bytes(4096 - 24))
        try:
            os.pwrite(fd, buf, blk * 4096)
        except OSError as e:
            with lock:
                stats["errors"].append(f"{blk}: {e}")
            time.sleep(0.1)
            continue
        done = time.time_ns()
        with lock:
            stats["writes"] += 1
            if done - t > 500_000_000:
                stats["slow"].append([t / 1e9, done / 1e9])
        seq += 1
        if k == 0 and seq % 200 == 0:
            with open(OUT + ".progress", "w") as p:
                p.write(f"{stats['writes']}\n")
ts = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
for t in ts:
    t.start()
for t in ts:
    t.join()
json.dump(stats, open(OUT, "w"))
"""

SCAN = r"""
import json, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
import mmap
buf = mmap.mmap(-1, 1 << 20)
stamps, off = [], 0
while True:
    n = os.preadv(fd, [buf], off)
    if n <= 0:
        break
    for i in range(0, n, 4096):
        b = buf[i:i + 24]
        if b[:4] == b"CSVP":
            k, seq, t = struct.unpack("<IQQ", b[4:24])
            stamps.append(t / 1e9)
    off += n
print(json.dumps({"blocks": len(stamps), "max": max(stamps) if stamps else 0,
                  "stamps": sorted(stamps)[-4000:]}))
"""


def kernel_field(lab, node, volume, field):
    """One line of node's csvfs.ko view of volume (/proc/fs/csvfs, kmod/stats.c)."""
    out = lab.sh(node, "cat /proc/fs/csvfs/*")
    current = None
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key == "volume":
            current = value
        elif key == field and current == volume:
            return value
    raise AssertionError(f"no {field} of {volume} on {node}:\n{out}")


def lease_deadline(lab, node, volume):
    """The wall-clock time at which node's kernel stops direct I/O to
    volume unless its daemon renews the lease."""
    return float(kernel_field(lab, node, volume, "node_lease_deadline"))


def scan(env, node, path):
    out = env.v1.sh(node, f"{PY} /lab/scan.py {path}", timeout=120)
    return json.loads(out.strip().splitlines()[-1])


def test_partition_minority_stops_direct_io_at_its_deadline(env):
    lab, v1 = env.lab, env.v1
    with Timed("4. partition of node3"):
        # node3 coordinates nothing: its lower XFS is not fenced by the lease (STONITH's job)
        for c in env.vols:
            if c.vol("node2")["coordinator"] == 3:
                env.move(c, "node1")
        nblk = 1024
        f = f"{v1.mnt}/part-node3"
        v1.sh("node3", f"dd if=/dev/zero of={f} bs=1M count={nblk // 256} oflag=direct "
                       f"status=none", timeout=300)
        for name, code in (("writer.py", WRITER), ("scan.py", SCAN)):
            with open(os.path.join(lab.run_dir, name), "w") as fh:
                fh.write(code)
        stop = os.path.join(lab.run_dir, "part.stop")
        if os.path.exists(stop):
            os.unlink(stop)
        lab.spawn("node3", f"{PY} /lab/writer.py {f} /lab/part.stop /lab/part.json {nblk}",
                  log="/lab/node3/writer.log")
        prog = os.path.join(lab.run_dir, "part.json.progress")
        wait_for(lambda: os.path.exists(prog) and int(open(prog).read() or 0) >= 2000, 180,
                 "node3 writing")
        assert v1.io_mode("node3")[0] == "Direct"
        pid = v1.csvd_pid["node3"]
        # a hung daemon (renews nothing) and a partition at once; the stop
        # lies between the two clock readings (a busy TCG guest may take
        # long to run the second)
        t_stop, t_stopped = map(float, lab.sh(
            "node3", f"date +%s.%N && kill -STOP {pid} && date +%s.%N").split())
        lab.partition("node3")
        t_part = time.time()
        try:
            wait_for(lambda: sorted(v1.status("node1")["members"]) == [1, 2], 180,
                     "node1 and node2 without node3")
            detect = time.time() - t_part
            # the kernel's own deadline: the last renewal (before the stop)
            # + LEASE_MS, in wall-clock time; + timer granularity
            last = lease_deadline(lab, "node3", v1.volume)
            assert last <= t_stopped + LEASE_MS / 1000.0, \
                f"node3's lease was renewed after its daemon stopped ({last - t_stopped:+.3f} s)"
            deadline = last + 0.02
            # the majority goes on: a write and read on node2
            v1.sh("node2", f"dd if=/dev/urandom of=/tmp/maj bs=1M count=4 status=none && "
                           f"dd if=/tmp/maj of={v1.mnt}/majority bs=1M oflag=direct status=none && "
                           f"cmp /tmp/maj {v1.mnt}/majority")
            during = scan(env, "node1", f)
            # where node3's writer threads are: logged when none wrote on
            stacks = lab.exec("node3", "for p in $(pgrep -f '[w]riter.py'); do "
                                       "for t in /proc/$p/task/*; do echo $t $(cat $t/comm); "
                                       "cat $t/stack; done; done; "
                                       "cat /proc/fs/csvfs/* 2>/dev/null").stdout
        finally:
            lab.sh("node3", f"kill -CONT {pid}")
            lab.heal("node3")
        t_heal = time.time()
        late = [t for t in during["stamps"] if t > deadline]
        in_lease = [t for t in during["stamps"] if t_stop < t <= deadline]
        log(f"partition: node1+node2 saw node3 leave after {detect:.1f} s; on the disk during "
            f"the partition: {during['blocks']} stamped blocks, newest "
            f"{during['max'] - t_stop:+.3f} s from the daemon's stop (taking "
            f"{t_stopped - t_stop:.3f} s), kernel's deadline {last - t_stop:+.3f} s; "
            f"{len(in_lease)} blocks written after the stop and "
            f"before the deadline, {len(late)} after the deadline")
        if not in_lease:
            log("no block written after the stop; node3's writer then:\n" + stacks)
        assert during["blocks"] >= nblk // 2, during["blocks"]
        assert not late, f"{len(late)} blocks stamped after node3's lease deadline reached the disk"
        with Timed("4. node3 rejoined by itself (synced, Direct)"):
            v1.wait_synced(timeout=240)
            wait_for(lambda: v1.io_mode("node2", "node3")[0] == "Direct", 120, "node3 Direct")
            wait_for(lambda: v1.io_mode("node3")[0] == "Direct", 120, "node3 Direct (own view)")
        open(stop, "w").close()
        res_path = os.path.join(lab.run_dir, "part.json")
        wait_for(lambda: os.path.exists(res_path) and os.path.getsize(res_path) > 0, 300,
                 "the writer's result")
        with open(res_path) as fh:
            w = json.load(fh)
        heal_g = t_heal + guest_offset(lab, "node3")
        # Held: waited across the partition (the lease ran out while they
        # were under way or before they started) and completed after the heal.
        held = [(a, b) for a, b in w["slow"] if b > heal_g - 1]
        log(f"node3's writer: {w['writes']} writes, {len(w['errors'])} errors; {len(held)} "
            f"writes held across the partition, completed "
            + (f"{min(b for _, b in held) - heal_g:+.1f} .. {max(b for _, b in held) - heal_g:+.1f}"
               f" s from the heal" if held else "(none)"))
        assert not w["errors"], w["errors"][:10]
        assert held, "no write was held across the partition"
        assert all(b > heal_g - 1 for a, b in w["slow"] if a > deadline), \
            "a write issued after the deadline completed before the heal"
        after = scan(env, "node1", f)
        assert after["max"] > deadline, "the held writes reached the disk after the heal"
        TIMINGS["4. partition detected by the majority"] = detect


# ------------------------------------------------------------------ 5. balance

def test_coordinators_spread_and_rebalanced(env):
    coords = env.coordinators("node2")
    log(f"coordinators: {coords}")
    assert all(coords.values()), coords
    assert len(set(coords.values())) == 2, f"both volumes on one node: {coords}"


# ------------------------------------------------------------------ end

def test_zz_unmount_everywhere_and_xfs_repair_clean(env):
    lab = env.lab
    with Timed("unmount, remove, xfs_repair -n"):
        revive_any_down(env)   # what an earlier failed test left down is still to check
        for c in env.vols:
            for n in NODES:
                c.umount(n)
            c.ctl("node1", f"volume remove {c.volume}")
            wait_for(lambda c=c: all(c.vol(n) is None for n in NODES), 60,
                     f"{c.volume} removed everywhere")
        for n in NODES:
            pid = env.v1.csvd_pid[n]
            wait_for(lambda pid=pid, n=n: " xfs " not in env.v1.sh(n, f"cat /proc/{pid}/mounts"),
                     60, f"lower XFS unmounted on {n}")
        for c in env.vols:
            r = lab.exec("node2", f"xfs_repair -n {c.dev}", timeout=600)
            assert r.rc == 0, f"{c.dev}: xfs_repair -n rc={r.rc}\n{r.stdout[-3000:]}\n{r.stderr}"
