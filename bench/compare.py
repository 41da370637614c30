#!/usr/bin/python3
"""csvfs against what users would pick instead, in one csvlab run.

On node2 (never the coordinator), with the same fio jobs and the same file
(created once on the XFS volume, reused by NFS; GFS2 and OCFS2 are made on
the same shared disk in turn):

  raw         the shared device itself (a region no file system uses)
  csvfs       direct, block-redirected (node2's path cut), file-redirected
              (mount option redirect=file)
  NFSv4       the volume's XFS mounted on node1 (the coordinator) and
              exported with nfs-kernel-server, mounted on node2 (vers=4.2)
  GFS2        lock_dlm, dlm_controld over the lab's Corosync
  OCFS2       the o2cb stack (its own heartbeat and network, cluster.conf)

fio: 4k random read/write QD1 and QD16, 1M sequential read/write QD4, a
VM-like 70/30 random 8k mix QD8, all O_DIRECT libaio; each cell repeated
(--reps) and reported as median with min-max. Metadata: bench/meta.py
(create, stat, rename, unlink per second) on node2 in one directory and in
16 directories, and on node2 and node3 together in one directory. Memory:
csvd's VmHWM on every node and csvfs's slab caches, sampled every second.
Failover (csvfs only): csvd SIGKILLed on the coordinator node1 while fio
(4k random O_DIRECT writes, QD1) runs on node2; the pause is the largest gap
in fio's per-I/O completion log.

Results go to bench/results/compare-<UTC time>.{md,json,png}.

    sudo /usr/bin/python3 bench/compare.py [--nodes 3] [--reps 3] [--runtime 5]
        [--size 32] [--meta-files 30] [--only raw,csvfs,failover,nfs,gfs2,ocfs2] [--keep]
"""
import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, os.path.join(REPO, "tests", "system"))

from lab import Lab  # noqa: E402
import test_direct as td  # noqa: E402  (paths, csvctl helpers, fio parsing)

NODE = "node2"          # where every benchmark runs: not the coordinator
PEER = "node3"          # the second node of the two-node metadata runs
RESULTS = os.path.join(REPO, "bench", "results")
META = os.path.join(REPO, "bench", "meta.py")
FS_MB = 1536            # every file system gets the first 1536 MiB
RAW_OFFSET_MB = 1600    # the raw cells use the region after it
LOCAL_XFS_MB = (1664, 384)  # alternate: a node-local XFS on a dm-linear slice here
LOCAL_XFS_DM = "csvbench-xfs"
LOCAL_XFS_MNT = "/mnt/xfs-local"
FS_BLOCKS = FS_MB * 256  # in 4 KiB blocks, for mkfs.gfs2 / mkfs.ocfs2

# name, fio job options, metric ("iops" = read+write IOPS, "bw" = MB/s)
WORKLOADS = [
    ("4k randread QD1", "rw=randread\nbs=4k\niodepth=1", "iops"),
    ("4k randwrite QD1", "rw=randwrite\nbs=4k\niodepth=1", "iops"),
    ("4k randread QD16", "rw=randread\nbs=4k\niodepth=16", "iops"),
    ("4k randwrite QD16", "rw=randwrite\nbs=4k\niodepth=16", "iops"),
    ("1M seq read QD4", "rw=read\nbs=1M\niodepth=4", "bw"),
    ("1M seq write QD4", "rw=write\nbs=1M\niodepth=4", "bw"),
    ("8k 70/30 randrw QD8", "rw=randrw\nrwmixread=70\nbs=8k\niodepth=8", "iops"),
]
SYSTEMS = [  # key, column title
    ("raw", "raw device"),
    ("direct", "csvfs direct"),
    ("block", "csvfs block-redir."),
    ("file", "csvfs file-redir."),
    ("nfs", "NFSv4 (node1 export)"),
    ("gfs2", "GFS2 (dlm)"),
    ("ocfs2", "OCFS2 (o2cb)"),
]
META_SCENARIOS = [  # key, title, dirs, nodes
    ("one", "1 node, 1 dir", 1, 1),
    ("spread", "1 node, 16 dirs", 16, 1),
    ("two", "2 nodes, same dir", 1, 2),
]
META_PHASES = ("create", "stat", "rename", "unlink")
META_SYSTEMS = [("direct", "csvfs"), ("nfs", "NFSv4"), ("gfs2", "GFS2"), ("ocfs2", "OCFS2")]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(lab, node, cmd, timeout=300):
    return td.sh(lab, node, cmd, timeout=timeout)


def all_nodes(lab):
    return [n for n in lab.nodes]


# ----------------------------------------------------------------- csvfs set-up

def start_csvd(lab, node, log_name="csvd.log"):
    nodes = [{"id": lab.index(n), "addr": lab.addr(n), "port": 7410} for n in lab.nodes]
    conf = {"nodes": nodes, "key_file": "/lab/csvd.key", "state_dir": "/tmp/csvd-state",
            "run_dir": "/run/csvd", "path_interval_ms": 500, "path_timeout_ms": 2000}
    with open(os.path.join(lab.node_dir(node), "csvd.json"), "w") as f:
        json.dump(conf, f)
    sh(lab, node, "mkdir -p /run/csvd /tmp/csvd-state; lsmod | grep -q '^csvfs ' || "
                  f"(cp {td.KO} /tmp/csvfs.ko && insmod /tmp/csvfs.ko)")
    lab.spawn(node, f"{td.CSVD} --foreground --config /lab/{node}/csvd.json",
              log=f"/lab/{node}/{log_name}")


def setup_csvfs(lab, mount_nodes):
    """csvd everywhere, an XFS volume of FS_MB on the shared disk, node1 coordinating."""
    key = os.path.join(lab.run_dir, "csvd.key")
    if not os.path.exists(key):
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(key, 0o600)
    ids = sorted(lab.index(n) for n in lab.nodes)
    for n in lab.nodes:
        start_csvd(lab, n)
    for n in lab.nodes:
        td.wait_for(lambda n=n: (lambda s: s["synced"] and s["quorate"]
                                 and sorted(s["members"]) == ids)(td.status(lab, n)),
                    180, f"csvd on {n} synced")
    sh(lab, "node1", f"mkfs.xfs -q -f -d size={FS_MB}m {td.DEV}")
    sh(lab, "node1", f"{td.CTL} volume add {td.VOL} {td.DEV} --preferred 1")
    # The election takes the preferred owner only if its path is already known healthy;
    # else the volume goes to another node and stays there (no failback): move it.
    td.wait_for(lambda: all((lambda v: v and v["coordinator"] and v["ready"])(
        td.volume(lab, n)) for n in lab.nodes), 180, "volume ready everywhere")
    if td.volume(lab, "node1")["coordinator"] != 1:
        sh(lab, "node1", f"{td.CTL} move {td.VOL} 1 --wait 120", timeout=180)
    td.wait_for(lambda: all((lambda v: v and v["coordinator"] == 1 and v["ready"])(
        td.volume(lab, n)) for n in lab.nodes), 180, "node1 coordinating, ready everywhere")
    for n in mount_nodes:
        sh(lab, n, f"mkdir -p {td.MNT} && mount -t csvfs -o volume={td.VOL} {td.DEV} {td.MNT}")


def teardown_csvfs(lab, mount_nodes):
    for n in mount_nodes:
        lab.exec(n, f"umount {td.MNT}", timeout=120)
    sh(lab, "node1", f"{td.CTL} volume remove {td.VOL}", timeout=120)
    td.wait_for(lambda: td.volume(lab, "node1") is None, 120, "volume removed")
    for n in lab.nodes:
        lab.exec(n, "kill $(pidof csvd) 2>/dev/null; sleep 1; rmmod csvfs 2>/dev/null; true",
                 timeout=60)


# --------------------------------------------------------------------- NFS set-up

NFS_EXPORT = "/srv/vol"
NFS_MNT = "/mnt/nfs"


def setup_nfs(lab, clients):
    srv = lab.addr("node1")
    net = re.sub(r"\.\d+$", ".0/24", srv)
    sh(lab, "node1", f"""set -e
modprobe nfsd
mountpoint -q /proc/fs/nfsd || mount -t nfsd nfsd /proc/fs/nfsd
mkdir -p {NFS_EXPORT} /var/lib/nfs/v4recovery
mount {td.DEV} {NFS_EXPORT}
echo '{NFS_EXPORT} {net}(rw,sync,no_root_squash,no_subtree_check,fsid=0)' > /etc/exports
echo 10 > /proc/fs/nfsd/nfsv4leasetime
echo 10 > /proc/fs/nfsd/nfsv4gracetime
rpc.mountd -N 3
exportfs -ra
rpc.nfsd -N 3 8
exportfs -v""", timeout=120)
    for n in clients:
        sh(lab, n, f"modprobe nfsv4; mkdir -p {NFS_MNT} && "
                   f"mount -t nfs4 -o vers=4.2,proto=tcp {srv}:/ {NFS_MNT}", timeout=120)
    # the grace period (10 s) refuses OPENs: wait until one goes through
    td.wait_for(lambda: lab.exec(clients[0], f"touch {NFS_MNT}/.grace && rm {NFS_MNT}/.grace",
                                 timeout=60).ok, 120, "NFS grace period over", interval=2)


def teardown_nfs(lab, clients):
    for n in clients:
        lab.exec(n, f"umount {NFS_MNT}", timeout=120)
    lab.exec("node1", f"exportfs -ua; rpc.nfsd 0; kill $(pidof rpc.mountd); "
                      f"umount {NFS_EXPORT}", timeout=120)


# --------------------------------------------------------------------- GFS2 set-up

GFS2_MNT = "/mnt/gfs2"


def setup_gfs2(lab, mount_nodes):
    for n in lab.nodes:
        sh(lab, n, "modprobe -a dlm gfs2 && (mountpoint -q /sys/kernel/config || "
                   "mount -t configfs configfs /sys/kernel/config) && mkdir -p /etc/dlm && "
                   "printf 'enable_fencing=0\\nprotocol=tcp\\n' > /etc/dlm/dlm.conf")
        lab.spawn(n, "dlm_controld --foreground 1", log=f"/lab/{n}/dlm_controld.log")
    n_ids = len(lab.nodes)
    td.wait_for(lambda: all(
        len(re.findall(r"^node \d+ M", lab.exec(n, "dlm_tool status", timeout=30).stdout,
                       re.M)) == n_ids for n in lab.nodes), 180, "dlm_controld on every node")
    table = f"csvlab-{lab.name}:bench"
    sh(lab, "node1", f"wipefs -a -q {td.DEV}; mkfs.gfs2 -O -q -p lock_dlm -t {table} "
                     f"-j {n_ids} -J 32 -b 4096 {td.DEV} {FS_BLOCKS}", timeout=600)
    for n in mount_nodes:
        sh(lab, n, f"mkdir -p {GFS2_MNT} && mount -t gfs2 {td.DEV} {GFS2_MNT}", timeout=300)


def teardown_gfs2(lab, mount_nodes):
    for n in mount_nodes:
        lab.exec(n, f"umount {GFS2_MNT}", timeout=300)
    for n in lab.nodes:
        lab.exec(n, "kill $(pidof dlm_controld) 2>/dev/null; true", timeout=30)


# -------------------------------------------------------------------- OCFS2 set-up

OCFS2_MNT = "/mnt/ocfs2"
O2CLUSTER = "ocfslab"


def o2cb_conf(lab):
    text = f"cluster:\n\tnode_count = {len(lab.nodes)}\n\tname = {O2CLUSTER}\n" \
           "\theartbeat_mode = local\n\n"
    for n in lab.nodes:
        text += (f"node:\n\tip_port = 7777\n\tip_address = {lab.addr(n)}\n"
                 f"\tnumber = {lab.index(n)}\n\tname = {n}\n\tcluster = {O2CLUSTER}\n\n")
    return text


def setup_ocfs2(lab, mount_nodes):
    conf = o2cb_conf(lab)
    with open(os.path.join(lab.run_dir, "ocfs2-cluster.conf"), "w") as f:
        f.write(conf)
    base = f"/sys/kernel/config/cluster/{O2CLUSTER}"
    for n in lab.nodes:
        # Timeouts as in /etc/default/o2cb, but a dead threshold twice as long:
        # a TCG guest beside other labs can miss heartbeats, and o2cb fences
        # (panics) a node that it thinks lost the disk.
        sh(lab, n, f"""set -e
mkdir -p /etc/ocfs2 /dlm
cp /lab/ocfs2-cluster.conf /etc/ocfs2/cluster.conf
modprobe -a ocfs2_stack_o2cb ocfs2_dlmfs ocfs2
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
mountpoint -q /dlm || mount -t ocfs2_dlmfs ocfs2_dlmfs /dlm
o2cb register-cluster {O2CLUSTER}
echo 61 > {base}/heartbeat/dead_threshold
echo 30000 > {base}/idle_timeout_ms
echo 2000 > {base}/keepalive_delay_ms
echo 2000 > {base}/reconnect_delay_ms
cat /sys/fs/ocfs2/cluster_stack""", timeout=120)
    sh(lab, "node1", f"wipefs -a -q {td.DEV}; mkfs.ocfs2 -q -F -b 4K -C 4K -N {len(lab.nodes)} "
                     f"-L bench -J size=32M --cluster-stack=o2cb --cluster-name={O2CLUSTER} "
                     f"{td.DEV} {FS_BLOCKS}", timeout=600)
    for n in mount_nodes:
        sh(lab, n, f"mkdir -p {OCFS2_MNT} && mount -t ocfs2 {td.DEV} {OCFS2_MNT}", timeout=300)


def teardown_ocfs2(lab, mount_nodes):
    for n in mount_nodes:
        lab.exec(n, f"umount {OCFS2_MNT}", timeout=300)
    for n in lab.nodes:
        lab.exec(n, f"o2cb unregister-cluster {O2CLUSTER}", timeout=60)


# ----------------------------------------------------------------------------- fio

def job_file(target, size_mb, runtime, offset_mb=None):
    g = ["[global]", "ioengine=libaio", "direct=1", "time_based", f"runtime={runtime}",
         "ramp_time=1", "randrepeat=0", "norandommap", f"filename={target}", f"size={size_mb}M"]
    if offset_mb is not None:
        g.append(f"offset={offset_mb}M")
    parts = ["\n".join(g)]
    for i, (name, opts, _) in enumerate(WORKLOADS):
        parts.append(f"[w{i}]\nstonewall\n{opts}")
    return "\n\n".join(parts) + "\n"


def fio_cells(lab, key, target, a, results, offset_mb=None):
    """All workloads, --reps times; results[key][workload] = [values]."""
    path = os.path.join(lab.run_dir, f"fio-{key}.fio")
    with open(path, "w") as f:
        f.write(job_file(target, a.size, a.runtime, offset_mb))
    per_rep = len(WORKLOADS) * (a.runtime + 1)
    for rep in range(a.reps):
        t0 = time.monotonic()
        data = td.fio_ok(lab, NODE, f"/lab/fio-{key}.fio", timeout=per_rep * 20 + 300)
        by_name = {j["jobname"]: j for j in data["jobs"]}
        line = []
        for i, (name, _, metric) in enumerate(WORKLOADS):
            j = by_name[f"w{i}"]
            if metric == "iops":
                v = j["read"]["iops"] + j["write"]["iops"]
            else:
                v = (j["read"]["bw_bytes"] + j["write"]["bw_bytes"]) / 1e6
            results.setdefault(key, {}).setdefault(name, []).append(v)
            line.append(f"{v:.0f}" if v >= 10 else f"{v:.1f}")
        log(f"  {key} rep {rep + 1}/{a.reps} ({time.monotonic() - t0:.0f}s): "
            + " ".join(line))


def prefill(lab, path, size_mb):
    """The file every fio cell uses, written once (allocated, not a hole)."""
    # 32 KiB writes: on csvfs these allocate, so they are file-redirected, and
    # 32 KiB is what one request carries (bigger ones queue up in csvd)
    sh(lab, NODE, f"dd if=/dev/zero of={path} bs=32k count={size_mb * 32} oflag=direct "
                  "conv=fsync status=none", timeout=3600)


def setup_local_xfs(lab, size_mb):
    """A plain XFS on NODE alone (a dm-linear slice of the disk after the raw region):
    what any iomap file system of this kernel pays for O_DIRECT, against the device."""
    start, size = LOCAL_XFS_MB
    sh(lab, NODE, f"modprobe dm_mod && dmsetup create {LOCAL_XFS_DM} --table "
                  f"'0 {size * 2048} linear {td.DEV} {start * 2048}' && "
                  f"mkfs.xfs -q -f /dev/mapper/{LOCAL_XFS_DM} && mkdir -p {LOCAL_XFS_MNT} && "
                  f"mount /dev/mapper/{LOCAL_XFS_DM} {LOCAL_XFS_MNT}", timeout=600)
    path = f"{LOCAL_XFS_MNT}/bench"
    prefill(lab, path, size_mb)
    return path


def teardown_local_xfs(lab):
    lab.exec(NODE, f"umount {LOCAL_XFS_MNT}; dmsetup remove {LOCAL_XFS_DM}", timeout=300)


# ------------------------------------------------------------------------ metadata

def meta_cells(lab, key, root, a, meta, two_ok):
    """meta[key][scenario][phase] = [ops/s per rep]."""
    bdir = os.path.join(lab.run_dir, "meta-barrier")
    for rep in range(a.reps):
        for skey, _, dirs, nnodes in META_SCENARIOS:
            if nnodes == 2 and not two_ok:
                continue
            wdir = f"{root}/meta-{skey}-{rep}"
            cmd = (f"/usr/bin/python3 {META} --root {wdir} --files {a.meta_files} "
                   f"--dirs {dirs}")
            if nnodes == 1:
                out = json.loads(sh(lab, NODE, cmd, timeout=3600).strip().splitlines()[-1])
                rates = {p: out[p]["ops"] / out[p]["s"] for p in META_PHASES}
            else:
                subprocess.run(["rm", "-rf", bdir])
                os.makedirs(bdir)
                res = f"/lab/meta-{PEER}.json"
                host_res = os.path.join(lab.run_dir, f"meta-{PEER}.json")
                if os.path.exists(host_res):
                    os.unlink(host_res)
                sh(lab, PEER, f"mkdir -p {wdir}")
                common = " --peers 2 --barrier /lab/meta-barrier"
                lab.spawn(PEER, f"{cmd} --tag {PEER}{common} > {res}.tmp && mv {res}.tmp {res}",
                          log=f"/lab/{PEER}/meta.err")
                mine = json.loads(sh(lab, NODE, f"{cmd} --tag {NODE}{common}",
                                     timeout=3600).strip().splitlines()[-1])
                td.wait_for(lambda: os.path.exists(host_res), 600, f"{PEER}'s metadata run")
                theirs = json.load(open(host_res))
                rates = {p: (mine[p]["ops"] + theirs[p]["ops"]) /
                         max(mine[p]["s"], theirs[p]["s"]) for p in META_PHASES}
            for p in META_PHASES:
                meta.setdefault(key, {}).setdefault(skey, {}).setdefault(p, []).append(rates[p])
            log(f"  {key} meta {skey} rep {rep + 1}: "
                + " ".join(f"{p} {rates[p]:.0f}/s" for p in META_PHASES))
            lab.exec(NODE, f"rm -rf {wdir}", timeout=600)


# ------------------------------------------------------------------------ failover

FO_RUNTIME = 40     # s of fio per failover repetition
FO_KILL_AFTER = 10  # s after fio started


def failover_events(lab, tf, tk, coord):
    """From the csvd logs (guest clocks, converted): seconds after the kill at host time
    TK when NODE saw node1 leave, and when the new coordinator served (and its mount)."""
    out = {}
    off = tf.guest_offset(lab, NODE)
    t, _ = tf.first_event(lab, NODE, r"membership: .*left [1-9]", tk + off - 2)
    out["membership_s"] = round(t - off - tk, 2) if t else None
    cn = f"node{coord}"
    coff = off if cn == NODE else tf.guest_offset(lab, cn)
    t, _ = tf.first_event(lab, cn, r"volume=\S+ .*serving \(", tk + coff - 2)
    out["serving_s"] = round(t - coff - tk, 2) if t else None
    _, line = tf.first_event(lab, cn, r"mounted in \d+ ms", tk + coff - 2)
    m = re.search(r"mounted in (\d+) ms", line or "")
    out["mount_ms"] = int(m.group(1)) if m else None
    return out


def failover_cells(lab, path, a, r):
    """csvd SIGKILL on the coordinator (node1) while fio (O_DIRECT 4k random writes, QD1,
    psync, on the file of the fio cells) runs on NODE: the pause is the largest gap in
    fio's per-I/O completion log. node1's csvd is started again and the volume moved
    back to it after each repetition."""
    import test_failover as tf  # completion-log helpers
    ids = sorted(lab.index(n) for n in lab.nodes)
    rows = r.setdefault("failover", [])
    d = lab.node_dir(NODE)
    for rep in range(a.reps):
        tag = f"fo{rep}"
        lab.exec(NODE, f"rm -f /lab/{NODE}/{tag}_* /lab/{NODE}/{tag}-*", timeout=30)
        off = tf.guest_offset(lab, NODE)  # NODE's clock minus the host's
        lab.spawn(NODE, f"fio --output-format=json --name=fo --filename={path} --direct=1 "
                        f"--ioengine=psync --rw=randwrite --bs=4k --size={a.size}M "
                        f"--time_based --runtime={FO_RUNTIME} --randrepeat=0 --norandommap "
                        f"--log_avg_msec=0 --log_unix_epoch=1 --write_lat_log=/lab/{NODE}/{tag} "
                        f"> /lab/{NODE}/{tag}-fio.json 2>/lab/{NODE}/{tag}-fio.err; "
                        f"echo $? > /lab/{NODE}/{tag}-fio.rc")
        td.wait_for(lambda: lab.exec(NODE, "pidof fio", timeout=30).ok, 60, "fio running")
        time.sleep(FO_KILL_AFTER)
        tk = time.time()
        sh(lab, "node1", "kill -9 $(pidof csvd)", timeout=60)
        log(f"  failover rep {rep + 1}: csvd on node1 killed")
        v = td.wait_for(lambda: (lambda v: v if v and v["coordinator"] not in (None, 1)
                                 and v["ready"] else None)(td.volume(lab, NODE)),
                        180, "a new coordinator online", interval=0.2)
        t_online = time.time() - tk
        rc_path = os.path.join(d, f"{tag}-fio.rc")
        td.wait_for(lambda: os.path.exists(rc_path) and open(rc_path).read().strip(),
                    FO_RUNTIME * 10 + 300, "fio ended", interval=1)
        rc = open(rc_path).read().strip()
        text = open(os.path.join(d, f"{tag}-fio.json")).read()
        m = re.search(r"^\{.*^\}", text, re.S | re.M)
        data = json.loads(m.group(0)) if m else {}
        errs = [j.get("error", 0) for j in data.get("jobs", [])]
        clat = [f for f in os.listdir(d) if f.startswith(f"{tag}_clat.") and f.endswith(".log")]
        ts = tf.completions(os.path.join(d, clat[0])) if clat else []
        gap, g0, _ = tf.largest_gap(ts)
        row = {"pause_s": round(gap, 3),
               "gap_start_after_kill_s": round(g0 - off - tk, 2) if g0 else None,
               "new_coordinator_online_s": round(t_online, 1),
               "new_coordinator": v["coordinator"], "ios": len(ts), "fio_rc": rc,
               "fio_errors": sum(errs) if data else "no json output"}
        rows.append(row)
        log(f"  failover rep {rep + 1}: largest completion gap {gap:.2f} s, starting "
            f"{row['gap_start_after_kill_s']} s after the kill; node{v['coordinator']} "
            f"online after {t_online:.1f} s; fio rc {rc}, errors {row['fio_errors']}, "
            f"{len(ts)} I/Os")
        # node1 back, and coordinating again, for the next repetition and the teardown
        start_csvd(lab, "node1", log_name=f"csvd-{tag}.log")
        for n in lab.nodes:
            td.wait_for(lambda n=n: (lambda s: s["synced"] and s["quorate"]
                                     and sorted(s["members"]) == ids)(td.status(lab, n)),
                        180, f"csvd on {n} synced")
        if td.volume(lab, "node1")["coordinator"] != 1:
            sh(lab, "node1", f"{td.CTL} move {td.VOL} 1 --wait 120", timeout=180)
        td.wait_for(lambda: all((lambda v: v and v["coordinator"] == 1 and v["ready"])(
            td.volume(lab, n)) for n in lab.nodes), 180, "node1 coordinating again")
        try:
            row.update(failover_events(lab, tf, tk, v["coordinator"]))
            if row.get("membership_s") is not None and g0:
                row["resume_after_membership_s"] = round(
                    g0 + gap - off - tk - row["membership_s"], 2)
        except Exception as e:  # noqa: BLE001 - the pause is the measurement, events help
            row["events_error"] = repr(e)[:200]
        if rc != "0" or row["fio_errors"]:
            raise AssertionError(f"fio on {NODE} failed across the failover: rc {rc}, "
                                 f"errors {row['fio_errors']}")


# -------------------------------------------------------------------------- memory

SAMPLER = ("while :; do t=$(date +%s); p=$(pidof csvd); "
           "[ -n \"$p\" ] && echo \"$t csvd $(grep -E '^Vm(RSS|HWM)' /proc/$p/status | "
           "tr -s ' \\t' ' ' | tr '\\n' ' ')\"; "
           "grep '^csvfs' /proc/slabinfo | sed \"s/^/$t slab /\"; sleep 1; done")


def start_samplers(lab):
    pids = []
    for n in lab.nodes:
        lab.exec(n, f"rm -f /lab/{n}/mem.log", timeout=30)
        pids.append((n, lab.spawn(n, SAMPLER, log=f"/lab/{n}/mem.log")))
    return pids


def stop_samplers(lab, pids):
    for n, pid in pids:
        lab.exec(n, f"kill {pid}", timeout=30)


def read_memory(lab):
    """Peak csvd VmHWM/VmRSS and csvfs slab bytes per node, from the samplers."""
    mem = {}
    for n in lab.nodes:
        m = {"csvd_vmhwm_kib": 0, "csvd_vmrss_peak_kib": 0, "slab": {}}
        try:
            lines = open(os.path.join(lab.node_dir(n), "mem.log")).read().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            f = line.split()
            if len(f) >= 3 and f[1] == "csvd":
                kv = dict(zip(f[2::3], f[3::3]))
                m["csvd_vmhwm_kib"] = max(m["csvd_vmhwm_kib"], int(kv.get("VmHWM:", 0)))
                m["csvd_vmrss_peak_kib"] = max(m["csvd_vmrss_peak_kib"], int(kv.get("VmRSS:", 0)))
            elif len(f) >= 8 and f[1] == "slab":
                # name active_objs num_objs objsize objperslab pagesperslab : ... slabdata active num
                name, active, size = f[2], int(f[3]), int(f[5])
                sd = f.index("slabdata") if "slabdata" in f else None
                pages = int(f[7]) * int(f[sd + 2]) if sd else 0
                s = m["slab"].setdefault(name, {"peak_objs": 0, "objsize": size,
                                                "peak_bytes": 0})
                s["peak_objs"] = max(s["peak_objs"], active)
                s["peak_bytes"] = max(s["peak_bytes"], pages * 4096)
        alias = lab.exec(n, "for c in /sys/kernel/slab/csvfs*; do [ -L $c ] && "
                            "echo $(basename $c) $(readlink $c); done; true", timeout=30)
        m["merged"] = [x for x in alias.stdout.split("\n") if x.strip()] if alias.ok else []
        mem[n] = m
    return mem


# -------------------------------------------------------------------------- output

def med(vals):
    return statistics.median(vals) if vals else None


def fmt(v):
    if v is None:
        return "–"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def cell(vals):
    if not vals:
        return None
    s = fmt(med(vals))
    if len(vals) > 1:
        s += f" ({fmt(min(vals))}–{fmt(max(vals))})"
    return s


def machine_info(lab):
    def run(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except Exception:  # noqa: BLE001
            return "?"
    cpu = run("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    mem = run("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
    info = {
        "host": f"{platform.node()} {platform.system()} {platform.release()} {platform.machine()}",
        "cpu": f"{os.cpu_count()} × {cpu}", "memory": mem,
        "qemu": run("qemu-system-x86_64 --version | head -1"),
        "guest_kernel": lab.exec("node1", "uname -r", timeout=30).stdout.strip(),
        "fio": run("fio --version"),
        "packages": run("dpkg-query -W -f='${Package} ${Version}\\n' nfs-kernel-server "
                        "gfs2-utils dlm-controld ocfs2-tools xfsprogs corosync").split("\n"),
        "csvfs_commit": run(f"git -C {REPO} rev-parse --short HEAD"),
    }
    return info


def render(r):
    a = r["args"]
    out = []
    out.append(f"# csvfs vs raw, NFSv4, GFS2, OCFS2 — {r['started']}\n")
    out.append(f"Command: `{r['command']}`  ")
    m = r["machine"]
    out.append(f"Host: {m['host']}, {m['cpu']}, {m['memory']}, load average "
               f"{r['load_start']} at start, {r.get('load_end', '?')} at end.  ")
    out.append(f"Guests: {a['nodes']} × TCG ({m['qemu']}), 1 vCPU, 1 GiB, kernel "
               f"{m['guest_kernel']}; {m['fio']}; csvfs {m['csvfs_commit']}.  ")
    out.append(f"fio on {NODE} (not the coordinator), O_DIRECT libaio, {a['size']} MiB file, "
               f"{a['runtime']} s per cell (+1 s ramp), median of {a['reps']} reps "
               f"(min–max). Wall time {r.get('wall_s', 0) / 60:.1f} min.\n")
    res = r["fio"]
    cols = [(k, t) for k, t in SYSTEMS]
    main_table = any(k in res or k in r["not_run"] for k, _ in cols)  # not for --only alternate
    out.append("| workload | " + " | ".join(t for _, t in cols)
               + " | csvfs direct vs best peer | csvfs block-redir. vs NFS |")
    out.append("|---|" + "---|" * (len(cols) + 2))
    for name, _, metric in WORKLOADS:
        unit = "IOPS" if metric == "iops" else "MB/s"
        row = [f"{name} ({unit})"]
        for k, _ in cols:
            if k in r["not_run"]:
                row.append("not run")
            else:
                row.append(cell(res.get(k, {}).get(name)) or "–")
        d = med(res.get("direct", {}).get(name))
        peers = {k: med(res.get(k, {}).get(name)) for k in ("nfs", "gfs2", "ocfs2")}
        peers = {k: v for k, v in peers.items() if v}
        if d and peers:
            best = max(peers, key=peers.get)
            ratio = d / peers[best]
            row.append(f"{ratio:.2f} × {best}" + (" — **csvfs behind**" if ratio < 1 else ""))
        else:
            row.append("–")
        b, n = med(res.get("block", {}).get(name)), med(res.get("nfs", {}).get(name))
        row.append(f"{b / n:.2f}" + (" — **csvfs behind**" if b / n < 1 else "")
                   if b and n else "–")
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    if not main_table:
        del out[-(len(WORKLOADS) + 3):]
    alt_r, alt_d, alt_x = res.get("raw-alt"), res.get("direct-alt"), res.get("xfs-alt") or {}
    if alt_r and alt_d:
        out.append("Raw device, csvfs direct" + (" and a node-local XFS" if alt_x else "")
                   + " alternated rep by rep (order changed every rep; `alternate` in --only), "
                   "so that all see the same host load (load average after each cell: "
                   + ", ".join(f"{k} {v}" for k, v in r.get("alt_load", [])) + ")"
                   + (". The local XFS (mkfs.xfs on a dm-linear slice of the same disk, "
                      "mounted on node2 only, the same prefilled file) shows what any iomap "
                      "file system of this kernel pays against the raw device" if alt_x else "")
                   + ":\n")
        xhead = " local XFS | XFS / raw |" if alt_x else ""
        out.append("| workload | raw device | csvfs direct |" + xhead
                   + " direct / raw (median) | direct / raw per rep |")
        out.append("|---|---|---|" + ("---|---|" if alt_x else "") + "---|---|")
        for name, _, metric in WORKLOADS:
            rv, dv, xv = alt_r.get(name), alt_d.get(name), alt_x.get(name)
            if not rv or not dv:
                continue
            unit = "IOPS" if metric == "iops" else "MB/s"
            per = ", ".join(f"{x / y:.2f}" for x, y in zip(dv, rv))
            ratio = med(dv) / med(rv)
            xcols = (f" {cell(xv)} | {med(xv) / med(rv):.2f} |" if xv else
                     (" – | – |" if alt_x else ""))
            out.append(f"| {name} ({unit}) | {cell(rv)} | {cell(dv)} |{xcols} {ratio:.2f}"
                       + (" — **csvfs behind**" if ratio < 1 else "") + f" | {per} |")
        out.append("")
    if r["not_run"]:
        for k, why in r["not_run"].items():
            out.append(f"- **{dict(SYSTEMS).get(k, k)}: not run** — {why}")
        out.append("")

    if r["meta"]:
        out.append(f"Metadata from {NODE} (ops/s, {a['meta_files']} files per node per rep, "
                   "median (min–max)); csvfs's goes to the coordinator node1, NFS's to the "
                   "server node1:\n")
        mcols = [(k, t) for k, t in META_SYSTEMS]
        out.append("| scenario | op | " + " | ".join(t for _, t in mcols)
                   + " | csvfs vs NFS | csvfs vs best cluster fs |")
        out.append("|---|---|" + "---|" * (len(mcols) + 2))
        for skey, stitle, _, _ in META_SCENARIOS:
            for p in META_PHASES:
                row = [stitle, p]
                for k, _ in mcols:
                    if k in r["not_run"]:
                        row.append("not run")
                    else:
                        row.append(cell(r["meta"].get(k, {}).get(skey, {}).get(p)) or "–")
                c = med(r["meta"].get("direct", {}).get(skey, {}).get(p))
                n = med(r["meta"].get("nfs", {}).get(skey, {}).get(p))
                row.append(f"{c / n:.2f}" + (" **behind**" if c / n < 1 else "")
                           if c and n else "–")
                peers = {k: med(r["meta"].get(k, {}).get(skey, {}).get(p))
                         for k in ("gfs2", "ocfs2")}
                peers = {k: v for k, v in peers.items() if v}
                if c and peers:
                    best = max(peers, key=peers.get)
                    ratio = c / peers[best]
                    row.append(f"{ratio:.2f} × {best}" + (" **behind**" if ratio < 1 else ""))
                else:
                    row.append("–")
                if any(x not in ("–", "not run") for x in row[2:2 + len(mcols)]):
                    out.append("| " + " | ".join(row) + " |")
        out.append("")

    if r.get("failover") or "failover" in r["not_run"]:
        out.append(f"Failover: csvd SIGKILLed on the coordinator (node1) {FO_KILL_AFTER} s into "
                   f"a {FO_RUNTIME} s fio on {NODE} (O_DIRECT 4k random writes, QD1, psync, "
                   "on the file of the cells above; no GFS2/OCFS2 node kills). Pause = largest "
                   "gap between two completions in fio's per-I/O log:\n")
        if "failover" in r["not_run"]:
            out.append(f"- **not run** — {r['not_run']['failover']}\n")
        if r.get("failover"):
            def secs(x, k):
                return "–" if x.get(k) is None else f"{x[k]:+.2f} s"
            out.append("| rep | pause (largest completion gap) | gap starts | "
                       f"{NODE} sees node1 leave | new coordinator serving (its XFS mount) | "
                       "I/O resumes after the membership change | I/Os | fio errors |")
            out.append("|---|---|---|---|---|---|---|---|")
            for i, x in enumerate(r["failover"]):
                mnt = f" ({x['mount_ms'] / 1000:.1f} s)" if x.get("mount_ms") else ""
                out.append(f"| {i + 1} | {x['pause_s']:.2f} s | "
                           f"{secs(x, 'gap_start_after_kill_s')} | {secs(x, 'membership_s')} | "
                           f"node{x['new_coordinator']} {secs(x, 'serving_s')}{mnt} | "
                           f"{secs(x, 'resume_after_membership_s')} | {x['ios']} | "
                           f"{x['fio_errors']} (rc {x['fio_rc']}) |")
            out.append("")
            out.append("Times are from the kill (host clock; guest clocks converted). "
                       "The new coordinator first waits lease_ms + margin = 3.5 s (csvd's "
                       "defaults) for node1's lease, then mounts the XFS.\n")
    if r.get("targets"):
        out.append("DESIGN.md targets, from this run:\n")
        out.append("| target | measured | met |")
        out.append("|---|---|---|")
        for t in r["targets"]:
            out.append(f"| {t[0]} | {t[1]} | {t[2]} |")
        out.append("")

    if r.get("memory"):
        out.append("Memory (peak over the csvfs runs, sampled every second):\n")
        out.append("| node | csvd VmHWM | csvd peak VmRSS | csvfs slab caches (peak objects × size, "
                   "slab bytes) |")
        out.append("|---|---|---|---|")
        for n, mm in r["memory"].items():
            slabs = "; ".join(f"{name}: {s['peak_objs']} × {s['objsize']} B, "
                              f"{s['peak_bytes'] / 1024:.0f} KiB"
                              for name, s in sorted(mm["slab"].items())) or "none listed"
            if mm.get("merged"):
                slabs += " (merged into: " + ", ".join(mm["merged"]) + ")"
            role = " (coordinator)" if n == "node1" else " (runs the benchmarks)" \
                if n == NODE else ""
            out.append(f"| {n}{role} | {mm['csvd_vmhwm_kib'] / 1024:.1f} MiB | "
                       f"{mm['csvd_vmrss_peak_kib'] / 1024:.1f} MiB | {slabs} |")
        out.append("")
    if r.get("notes"):
        for note in r["notes"]:
            out.append(f"- {note}")
        out.append("")
    return "\n".join(out)


def verdict(a_vals, b_vals, goal):
    """met / not met, or unclear when the min-max spreads of the two cells overlap."""
    ratio = med(a_vals) / med(b_vals)
    if ratio >= goal:
        return ratio, "yes"
    # could the goal be met within the spread of both cells?
    if max(a_vals) / min(b_vals) >= goal:
        return ratio, "unclear (spreads overlap)"
    return ratio, "**no**"


def targets(r):
    res, meta, t = r["fio"], r["meta"], []

    def v(k, name):
        return res.get(k, {}).get(name)
    for name in ("4k randread QD16", "4k randwrite QD16", "1M seq read QD4", "1M seq write QD4"):
        d, raw = v("direct", name), v("raw", name)
        if d and raw:
            ratio, ok = verdict(d, raw, 0.95)
            t.append((f"direct / raw ≥ 0.95, {name}", f"{ratio:.2f}", ok))
    for name in ("4k randread QD16", "4k randwrite QD16", "1M seq read QD4", "1M seq write QD4"):
        d, raw = v("direct-alt", name), v("raw-alt", name)
        if d and raw:
            ratio, ok = verdict(d, raw, 0.95)
            t.append((f"direct / raw ≥ 0.95, {name}, alternated", f"{ratio:.2f}", ok))
    for name in ("4k randread QD16", "4k randwrite QD16", "1M seq read QD4", "1M seq write QD4"):
        b, n = v("block", name), v("nfs", name)
        if b and n:
            ratio, ok = verdict(b, n, 1.0)
            t.append((f"block-redirected / NFS ≥ 1.0, {name}", f"{ratio:.2f}", ok))
    for p in META_PHASES:
        c = meta.get("direct", {}).get("one", {}).get(p)
        n = meta.get("nfs", {}).get("one", {}).get(p)
        if c and n:
            ratio, ok = verdict(c, n, 1.0)
            t.append((f"metadata {p}/s, 1 dir, csvfs / NFS ≥ 1.0", f"{ratio:.2f}", ok))
    fo = r.get("failover")
    if fo:
        pauses = [x["pause_s"] for x in fo]
        clean = all(x["fio_rc"] == "0" and x["fio_errors"] == 0 for x in fo)
        resumed = [x["resume_after_membership_s"] for x in fo
               if x.get("resume_after_membership_s") is not None]
        got = resumed or pauses
        t.append(("coordinator crash (csvd SIGKILL) → I/O resumes ≤ 2 s after the membership "
                  "change, zero errors (includes the new coordinator's lease wait, lease_ms + "
                  "margin = 3.5 s with csvd's defaults)",
                  (f"{med(got):.2f} s ({min(got):.2f}–{max(got):.2f})" +
                   ("" if resumed else " (whole pause: no membership line found)") +
                   f"; pause {med(pauses):.2f} s; " +
                   ("no errors" if clean else "**fio errors**")),
                  "yes" if med(got) <= 2 and clean else "**no**"))
    for name, _, _ in WORKLOADS:
        d = v("direct", name)
        for k in ("gfs2", "ocfs2"):
            o = v(k, name)
            if d and o:
                ratio, ok = verdict(d, o, 1.0)
                t.append((f"csvfs direct ahead of {dict(SYSTEMS)[k]}, {name}", f"{ratio:.2f}",
                          ok))
    return t


def chart(r, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res = r["fio"]
    keys = [k for k, _ in SYSTEMS if k in res]  # not the alternated cells: see the table
    base_key, titles = "raw", dict(SYSTEMS)
    if not keys:  # --only alternate
        keys, base_key = [k for k in ("raw-alt", "direct-alt") if k in res], "raw-alt"
        titles = {"raw-alt": "raw device (alternated)", "direct-alt": "csvfs direct (alternated)"}
    fig, axes = plt.subplots(1, 2 if r["meta"] else 1, figsize=(16 if r["meta"] else 10, 6),
                             squeeze=False)
    ax = axes[0][0]
    width = 0.8 / max(1, len(keys))
    for i, k in enumerate(keys):
        xs, ys, lo, hi = [], [], [], []
        for w, (name, _, _) in enumerate(WORKLOADS):
            vals, base = res[k].get(name), med(res.get(base_key, {}).get(name))
            if not vals or not base:
                continue
            v = med(vals) / base
            xs.append(w + (i - (len(keys) - 1) / 2) * width)
            ys.append(v)
            lo.append(v - min(vals) / base)
            hi.append(max(vals) / base - v)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=titles[k])
    ax.set_xticks(range(len(WORKLOADS)))
    ax.set_xticklabels([w[0] for w in WORKLOADS], rotation=25, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("relative to the raw device (log scale; bars: min–max)")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_title(f"fio O_DIRECT on {NODE}, median of {r['args']['reps']} reps")
    ax.legend(fontsize=8)
    if r["meta"]:
        ax = axes[0][1]
        mk = [k for k, _ in META_SYSTEMS if k in r["meta"]]
        labels = []
        width = 0.8 / max(1, len(mk))
        for skey, stitle, _, _ in META_SCENARIOS:
            for p in META_PHASES:
                labels.append(f"{p}\n{stitle}")
        for i, k in enumerate(mk):
            xs, ys = [], []
            for j, (skey, _, _, _) in enumerate(META_SCENARIOS):
                for q, p in enumerate(META_PHASES):
                    vals = r["meta"][k].get(skey, {}).get(p)
                    if vals:
                        xs.append(j * len(META_PHASES) + q + (i - (len(mk) - 1) / 2) * width)
                        ys.append(med(vals))
            ax.bar(xs, ys, width, label=dict(META_SYSTEMS)[k])
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=90, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("ops/s (log scale)")
        ax.set_title(f"metadata from {NODE}")
        ax.legend(fontsize=8)
    fig.suptitle(f"csvfs comparison, {r['started']} — {r['machine']['cpu']}, guest kernel "
                 f"{r['machine']['guest_kernel']} (TCG)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def save(r, stamp):
    os.makedirs(RESULTS, exist_ok=True)
    base = os.path.join(RESULTS, f"compare-{stamp}")
    r["targets"] = targets(r)
    with open(base + ".json", "w") as f:
        json.dump(r, f, indent=1, default=str)
    md = render(r)
    with open(base + ".md", "w") as f:
        f.write(md + "\n")
    try:
        chart(r, base + ".png")
    except Exception as e:  # noqa: BLE001 - the table matters more than the chart
        log(f"chart failed: {e}")
    return base, md


# ---------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--runtime", type=int, default=5, help="seconds per fio cell")
    ap.add_argument("--size", type=int, default=32, help="MiB, the file fio works on")
    ap.add_argument("--meta-files", type=int, default=30)
    ap.add_argument("--only", default="raw,csvfs,failover,nfs,gfs2,ocfs2",
                    help="failover (a csvd kill on the coordinator under fio) needs csvfs; "
                         "alternate: raw, csvfs direct and a node-local XFS alternated rep by rep")
    ap.add_argument("--name", default="bench")
    ap.add_argument("--keep", action="store_true", help="leave the lab running")
    ap.add_argument("--attach", action="store_true",
                    help="use the running lab --name (kept by --keep) instead of a new one")
    ap.add_argument("--render", metavar="JSON",
                    help="only write the .md and .png again from a saved .json")
    a = ap.parse_args()
    if a.render:
        with open(a.render) as f:
            r = json.load(f)
        base = a.render[:-len(".json")]
        r["targets"] = targets(r)
        with open(base + ".md", "w") as f:
            f.write(render(r) + "\n")
        chart(r, base + ".png")
        print(render(r))
        return
    only = set(a.only.split(","))
    if only & {"csvfs", "alternate"} and not (os.path.exists(td.KO) and os.access(td.CSVD, os.X_OK)):
        sys.exit(f"build first: {td.KO} and {td.CSVD}")

    started = datetime.datetime.now(datetime.timezone.utc)
    stamp = started.strftime("%Y%m%d-%H%M")
    r = {"started": started.strftime("%Y-%m-%d %H:%M UTC"), "args": vars(a),
         "command": "sudo /usr/bin/python3 bench/compare.py " + " ".join(
             shlex.quote(x) for x in sys.argv[1:]),
         "load_start": open("/proc/loadavg").read().split()[0],
         "fio": {}, "meta": {}, "not_run": {}, "memory": {}, "notes": [], "phases_s": {}}
    t_start = time.monotonic()
    if a.attach:
        lab = Lab.attach(a.name)
        a.nodes = len(lab.nodes)
    else:
        lab = Lab(a.name, nodes=a.nodes, disks=1, disk_size="2G")
        lab.down()
        lab.up()
    two_ok = PEER in lab.nodes
    samplers = []
    mount_nodes = [n for n in lab.nodes if n != "node1"]  # node1 coordinates/serves
    try:
        r["machine"] = machine_info(lab)
        if not a.attach:
            lab.corosync()

        def phase(key, fn, cleanup=None):
            t0 = time.monotonic()
            log(f"== {key}")
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - record, go on with the next system
                traceback.print_exc()
                msg = [x for x in str(e).strip().splitlines() if x.strip()] or [repr(e)]
                why = msg[0][:160] + (" … " + msg[-1][:200] if len(msg) > 1 else "")
                r["not_run"].setdefault(key, "failed: " + why.replace("|", "/"))
                log(f"{key} failed: {r['not_run'][key]}")
                if cleanup:
                    try:
                        cleanup()
                    except Exception:  # noqa: BLE001
                        traceback.print_exc()
            r["phases_s"][key] = round(time.monotonic() - t0)
            save(r, stamp)  # partial results survive a later crash

        if "raw" in only:
            def raw():
                sh(lab, NODE, f"dd if=/dev/zero of={td.DEV} bs=1M seek={RAW_OFFSET_MB} "
                              f"count={a.size} oflag=direct status=none", timeout=3600)
                fio_cells(lab, "raw", td.DEV, a, r["fio"], offset_mb=RAW_OFFSET_MB)
            phase("raw", raw)

        f = f"{td.MNT}/bench"
        if "alternate" in only:
            def alternate():
                """raw, csvfs direct and a local XFS rep by rep (order rotated every rep),
                so that all see the same host load: the other cells run minutes apart."""
                if "raw" not in only:
                    sh(lab, NODE, f"dd if=/dev/zero of={td.DEV} bs=1M seek={RAW_OFFSET_MB} "
                                  f"count={a.size} oflag=direct status=none", timeout=3600)
                setup_csvfs(lab, mount_nodes)
                prefill(lab, f, a.size)
                local = setup_local_xfs(lab, a.size)
                one = argparse.Namespace(**{**vars(a), "reps": 1})
                cells = [("raw-alt", td.DEV, RAW_OFFSET_MB), ("direct-alt", f, None),
                         ("xfs-alt", local, None)]
                for rep in range(a.reps):
                    k = rep % len(cells)
                    order = cells[k:] + cells[:k]
                    for key, target, off in (order if rep % 2 == 0 else order[::-1]):
                        fio_cells(lab, key, target, one, r["fio"], offset_mb=off)
                        r.setdefault("alt_load", []).append(
                            (key, open("/proc/loadavg").read().split()[0]))
                teardown_local_xfs(lab)
                teardown_csvfs(lab, mount_nodes)
            phase("alternate", alternate)

        if "csvfs" in only:

            def direct():
                setup_csvfs(lab, mount_nodes)
                samplers.extend(start_samplers(lab))
                prefill(lab, f, a.size)
                fio_cells(lab, "direct", f, a, r["fio"])
                meta_cells(lab, "direct", td.MNT, a, r["meta"], two_ok)

            def block():
                lab.cut_path(NODE)
                try:
                    td.wait_for(lambda: td.io_mode(lab, NODE) == "BlockRedirected", 60,
                                "BlockRedirected")
                    fio_cells(lab, "block", f, a, r["fio"])
                finally:
                    lab.heal_path(NODE)
                td.wait_for(lambda: td.io_mode(lab, NODE) == "Direct", 60, "Direct again")

            def file_redirected():
                sh(lab, NODE, f"umount {td.MNT} && mount -t csvfs -o volume={td.VOL},"
                              f"redirect=file {td.DEV} {td.MNT}")
                try:
                    fio_cells(lab, "file", f, a, r["fio"])
                finally:
                    sh(lab, NODE, f"umount {td.MNT}; mount -t csvfs -o volume={td.VOL} "
                                  f"{td.DEV} {td.MNT}")

            def memory():
                r["memory"] = read_memory(lab)
                stop_samplers(lab, samplers)

            phase("direct", direct)
            phase("block", block)
            phase("file", file_redirected)
            phase("memory", memory)  # before the failover: its new coordinator is not measured
            if "failover" in only:
                phase("failover", lambda: failover_cells(lab, f, a, r))
            phase("csvfs-end", lambda: teardown_csvfs(lab, mount_nodes))

        if "nfs" in only:
            def nfs():
                if "csvfs" not in only:  # the XFS with the file on it
                    sh(lab, "node1", f"mkfs.xfs -q -f -d size={FS_MB}m {td.DEV}")
                setup_nfs(lab, mount_nodes)
                if lab.exec(NODE, f"test -s {NFS_MNT}/bench").rc != 0:
                    prefill(lab, f"{NFS_MNT}/bench", a.size)
                fio_cells(lab, "nfs", f"{NFS_MNT}/bench", a, r["fio"])
                meta_cells(lab, "nfs", NFS_MNT, a, r["meta"], two_ok)
                teardown_nfs(lab, mount_nodes)
            phase("nfs", nfs, lambda: teardown_nfs(lab, mount_nodes))

        if "gfs2" in only:
            def gfs2():
                setup_gfs2(lab, lab.nodes)
                prefill(lab, f"{GFS2_MNT}/bench", a.size)
                fio_cells(lab, "gfs2", f"{GFS2_MNT}/bench", a, r["fio"])
                meta_cells(lab, "gfs2", GFS2_MNT, a, r["meta"], two_ok)
                teardown_gfs2(lab, lab.nodes)
            phase("gfs2", gfs2, lambda: teardown_gfs2(lab, lab.nodes))

        if "ocfs2" in only:
            def ocfs2():
                setup_ocfs2(lab, lab.nodes)
                prefill(lab, f"{OCFS2_MNT}/bench", a.size)
                fio_cells(lab, "ocfs2", f"{OCFS2_MNT}/bench", a, r["fio"])
                meta_cells(lab, "ocfs2", OCFS2_MNT, a, r["meta"], two_ok)
                teardown_ocfs2(lab, lab.nodes)
            phase("ocfs2", ocfs2, lambda: teardown_ocfs2(lab, lab.nodes))

        problems = lab.kernel_log_problems()
        if problems:
            r["notes"].append("kernel log problems: " + "; ".join(map(str, problems))[:1000])
    finally:
        r["load_end"] = open("/proc/loadavg").read().split()[0]
        r["wall_s"] = time.monotonic() - t_start
        r.setdefault("machine", {"host": "?", "cpu": "?", "memory": "?", "qemu": "?",
                                 "guest_kernel": "?", "fio": "?", "csvfs_commit": "?"})
        base, md = save(r, stamp)
        print("\n" + md)
        log(f"written {base}.md, .json, .png")
        if not a.keep:
            lab.down(keep_logs=True)


if __name__ == "__main__":
    main()
