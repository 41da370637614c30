"""The direct data path in a real 3-node cluster (csvd + csvfs.ko in csvlab).

node1 is the preferred coordinator; csvfs is mounted on all three nodes.
O_DIRECT I/O maps through the coordinator's layouts straight to the shared
disk; it is verified across nodes with fio (verify=crc32c), under a cut
storage path (block-level redirect through the coordinator, no error seen
by fio), and against a truncate on another node (layout recall; blocks
reallocated to a new file keep that file's content; xfs_repair -n clean).

The helpers (cluster set-up, fio) are also used by bench/direct.py.
"""
import json
import os
import re
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
KO = os.path.join(REPO, "kmod", "csvfs.ko")
CSVD = os.path.join(REPO, "build", "daemon", "csvd")
CSVCTL = os.path.join(REPO, "build", "tools", "csvctl")
DEV = "/dev/disk/by-id/virtio-csvlun0"
VOL = "V1"
MNT = "/ClusterStorage/V1"
CTL = f"{CSVCTL} --socket /run/csvd/control.sock"
NODES = ["node1", "node2", "node3"]

pytestmark = pytest.mark.lab(nodes=3, disk_size="2G")


# The running lab's lab.slowdown (3 under the debug kernel, 1 otherwise),
# set by setup_cluster: every wait_for of the system tests that use this
# module's helpers scales by it, so that a deadline means the same work.
TIME_SCALE = 1


def wait_for(cond, timeout, what, interval=0.5):
    timeout *= TIME_SCALE
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - conditions fail while things start
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def sh(lab, node, cmd, timeout=300):
    r = lab.exec(node, cmd, timeout=timeout)
    if not r.ok:
        raise AssertionError(f"{node}: {cmd!r} failed rc={r.rc}\n--- stdout\n{r.stdout}"
                             f"\n--- stderr\n{r.stderr}")
    return r.stdout


def status(lab, node):
    return json.loads(sh(lab, node, f"{CTL} status --json", timeout=30))


def volume(lab, node):
    for v in status(lab, node)["volumes"]:
        if v["name"] == VOL:
            return v
    return None


def io_mode(lab, node):
    """This node's I/O mode for the volume, as its own csvd reports it."""
    nid = int(node[-1])
    for n in volume(lab, node)["nodes"]:
        if n["id"] == nid:
            return n["io_mode"]
    return None


def start_csvd(lab, node):
    nodes = [{"id": i + 1, "addr": lab.addr(n), "port": 7410} for i, n in enumerate(NODES)]
    conf = {"nodes": nodes, "key_file": "/lab/csvd.key", "state_dir": "/tmp/csvd-state",
            "run_dir": "/run/csvd", "path_interval_ms": 500,
            # the debug kernel (lab.slowdown 3): a 2 s probe times out under load
            "path_timeout_ms": 2000 * lab.slowdown}
    with open(os.path.join(lab.node_dir(node), "csvd.json"), "w") as f:
        json.dump(conf, f)
    sh(lab, node, "mkdir -p /run/csvd /tmp/csvd-state; lsmod | grep -q '^csvfs ' || "
                  f"(cp {KO} /tmp/csvfs.ko && insmod /tmp/csvfs.ko)")
    lab.spawn(node, f"{CSVD} --foreground --config /lab/{node}/csvd.json",
              log=f"/lab/{node}/csvd.log")


def setup_cluster(lab, mount_nodes=NODES, mkfs_opts=""):
    """corosync, csvd everywhere, a fresh XFS volume, csvfs mounted."""
    global TIME_SCALE
    TIME_SCALE = lab.slowdown
    if lab.quorum("node1") is None or not lab.quorum("node1").quorate:
        lab.corosync()
    key = os.path.join(lab.run_dir, "csvd.key")
    if not os.path.exists(key):
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(key, 0o600)
    for n in NODES:
        start_csvd(lab, n)
    for n in NODES:
        wait_for(lambda n=n: (lambda s: s["synced"] and s["quorate"]
                              and sorted(s["members"]) == [1, 2, 3])(status(lab, n)),
                 120, f"csvd on {n} synced")
    sh(lab, "node1", f"mkfs.xfs -q -f {mkfs_opts} {DEV}")
    sh(lab, "node1", f"{CTL} volume add {VOL} {DEV} --preferred 1")
    wait_for(lambda: all((lambda v: v and v["coordinator"] and v["ready"])(volume(lab, n))
                         for n in NODES), 120, "volume ready on every node")
    if volume(lab, "node1")["coordinator"] != 1:
        sh(lab, "node1", f"{CTL} move {VOL} 1 --wait 120", timeout=180)
    wait_for(lambda: all((lambda v: v and v["coordinator"] == 1 and v["ready"])(volume(lab, n))
                         for n in NODES), 120, "node1 coordinating, ready on every node")
    # the debug kernel: requests outlive the default timeout (60 s) under load
    opts = f"volume={VOL}" + (f",timeout={60 * lab.slowdown}" if lab.slowdown > 1 else "")
    for n in mount_nodes:
        sh(lab, n, f"mkdir -p {MNT} && mount -t csvfs -o {opts} {DEV} {MNT}")


def fio(lab, node, args, timeout=900):
    """Runs fio with JSON output; returns (rc, parsed json or None, raw)."""
    r = lab.exec(node, f"fio --output-format=json {args}", timeout=timeout)
    data = None
    m = re.search(r"^\{.*\}\s*$", r.stdout, re.S | re.M)
    if m:
        try:
            data = json.loads(m.group(0))
        except ValueError:
            data = None
    return r, data


def fio_ok(lab, node, args, timeout=900):
    r, data = fio(lab, node, args, timeout)
    errors = [j.get("error", 0) for j in (data or {}).get("jobs", [])]
    assert r.ok and data and not any(errors), (
        f"fio on {node} failed rc={r.rc} errors={errors}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return data


def kernel_ops(lab, node, path, op):
    """csvfs.ko's count of `op` (read/write) I/Os by `path` (direct, block,
    file, cached) on node's mount, as `csvctl stats --json` reports it."""
    st = json.loads(sh(lab, node, f"{CTL} stats --json", timeout=30))
    for v in st["volumes"]:
        if v["name"] == VOL:
            return v["kernel"][path][op]["ops"]
    raise AssertionError(f"{VOL} not in csvctl stats on {node}: {st}")


def dmesg_count(lab, node, pattern):
    return int(sh(lab, node, f"dmesg | grep -c '{pattern}' || true").strip() or 0)


@pytest.fixture(scope="module")
def cluster(lab):
    if not (os.path.exists(KO) and os.access(CSVD, os.X_OK)):
        pytest.skip("csvfs.ko or csvd not built")
    setup_cluster(lab)
    yield lab
    for n in NODES:
        lab.exec(n, f"umount {MNT}", timeout=60)


VERIFY = "--direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1"


def test_write_node2_verify_node3(cluster):
    lab = cluster
    sh(lab, "node2", f"dd if=/dev/zero of={MNT}/f1 bs=1M count=64 oflag=direct status=none")
    direct_before = kernel_ops(lab, "node2", "direct", "write")
    block_before = kernel_ops(lab, "node2", "block", "write")
    for rw, bs in (("randwrite", "4k"), ("write", "1M")):
        fio_ok(lab, "node2", f"--name=w --filename={MNT}/f1 --size=64M --rw={rw} --bs={bs} "
                             f"--ioengine=libaio --iodepth=16 {VERIFY} --verify_state_save=0")
        # the same pattern, verified on another node (header seeds match)
        fio_ok(lab, "node3", f"--name=w --filename={MNT}/f1 --size=64M --rw={rw} --bs={bs} "
                             f"--ioengine=libaio --iodepth=16 {VERIFY} --verify_only")
    # direct, not redirected: node2 did its I/O through the device
    assert dmesg_count(lab, "node2", "redirecting") == 0
    assert kernel_ops(lab, "node2", "direct", "write") > direct_before
    assert kernel_ops(lab, "node2", "block", "write") == block_before


def test_concurrent_regions_all_nodes(cluster):
    lab = cluster
    sh(lab, "node1", f"dd if=/dev/zero of={MNT}/f2 bs=1M count=96 oflag=direct status=none")
    procs = []
    for i, n in enumerate(NODES):
        off = i * 32
        cmd = (f"fio --output-format=json --name=c{i} --filename={MNT}/f2 --offset={off}M "
               f"--size=32M --rw=randrw --bs=4k --ioengine=psync {VERIFY} > /tmp/c.json 2>&1;"
               " echo rc=$? >> /tmp/c.json")
        procs.append((n, lab.spawn(n, cmd)))
    for n, _ in procs:
        wait_for(lambda n=n: "rc=" in lab.exec(n, "cat /tmp/c.json").stdout, 900,
                 f"fio on {n}", interval=2)
        out = sh(lab, n, "cat /tmp/c.json")
        assert "rc=0" in out and '"error" : 0' in out, out[-3000:]
    # each region verified again from another node
    for i, n in enumerate(NODES):
        other = NODES[(i + 1) % 3]
        fio_ok(lab, other, f"--name=c{i} --filename={MNT}/f2 --offset={i * 32}M --size=32M "
                           f"--rw=randrw --bs=4k --ioengine=psync {VERIFY} --verify_only")


def test_path_loss_redirects_without_errors(cluster):
    lab = cluster
    sh(lab, "node3", f"dd if=/dev/zero of={MNT}/f3 bs=1M count=64 oflag=direct status=none")
    cmd = (f"fio --output-format=json --name=p --filename={MNT}/f3 --size=64M --rw=randwrite "
           f"--bs=4k --ioengine=libaio --iodepth=8 --time_based --runtime=40 {VERIFY} "
           "--verify_backlog=64 > /tmp/p.json 2>&1; echo rc=$? >> /tmp/p.json")
    before = kernel_ops(lab, "node3", "direct", "write")
    lab.spawn("node3", cmd)
    # cut only once fio's writes flow: cut before that, csvd's path probe
    # (every 500 ms) sees it first and no bio ever fails (slow kernels)
    wait_for(lambda: kernel_ops(lab, "node3", "direct", "write") > before + 1000,
             60, "fio's direct writes on node3")
    lab.cut_path("node3")
    try:
        cut = time.monotonic()
        wait_for(lambda: io_mode(lab, "node3") == "BlockRedirected", 30, "BlockRedirected")
        mode_s = time.monotonic() - cut
        time.sleep(10)
    finally:
        lab.heal_path("node3")
    healed = time.monotonic()
    wait_for(lambda: io_mode(lab, "node3") == "Direct", 60, "Direct again")
    direct_s = time.monotonic() - healed
    wait_for(lambda: "rc=" in lab.exec("node3", "cat /tmp/p.json").stdout, 600, "fio", 2)
    out = sh(lab, "node3", "cat /tmp/p.json")
    assert "rc=0" in out and '"error" : 0' in out, out[-3000:]
    print(f"path cut -> BlockRedirected seen after {mode_s:.1f}s; heal -> Direct {direct_s:.1f}s")
    assert dmesg_count(lab, "node3", "redirecting") >= 1
    assert kernel_ops(lab, "node3", "block", "write") > 0


def test_recall_on_truncate(cluster):
    lab = cluster
    size_mb = 32
    sh(lab, "node2", f"dd if=/dev/zero of={MNT}/f4 bs=1M count={size_mb} oflag=direct "
                     "status=none")
    # node2 keeps overwriting the file directly
    writer = (f"end=$(($(date +%s)+25)); while [ $(date +%s) -lt $end ]; do "
              f"dd if=/dev/urandom of={MNT}/f4 bs=64k count=$(({size_mb}*16)) conv=notrunc "
              "oflag=direct status=none 2>>/tmp/w.err || echo FAIL >> /tmp/w.err; done; "
              "echo done >> /tmp/w.err")
    sh(lab, "node2", "rm -f /tmp/w.err")
    lab.spawn("node2", writer)
    time.sleep(5)
    sh(lab, "node1", f"truncate -s 0 {MNT}/f4")
    # the freed blocks go to a new file with a known pattern
    sh(lab, "node1", f"xfs_io -f -d -c 'pwrite -S 0x5a -b 1m 0 {size_mb * 2}m' {MNT}/g4 "
                     ">/dev/null")
    wait_for(lambda: "done" in lab.exec("node2", "cat /tmp/w.err").stdout, 120, "writer", 2)
    err = sh(lab, "node2", "cat /tmp/w.err")
    assert "FAIL" not in err, err
    # g4 still holds only its pattern, seen from node3 through the device
    out = sh(lab, "node3", f"dd if={MNT}/g4 iflag=direct bs=1M status=none | wc -c; "
                           f"dd if={MNT}/g4 iflag=direct bs=1M status=none | tr -d 'Z' | wc -c")
    assert out.split() == [str(size_mb * 2 << 20), "0"], out


def coordinated_by(lab, nid):
    return all((lambda v: v and v["coordinator"] == nid and v["ready"])(volume(lab, n))
               for n in NODES)


def test_layouts_end_with_the_coordinator_epoch(cluster):
    """A layout node2 got from one coordinator is not used under the next:
    the new coordinator knows nothing of it and would free its blocks
    without a recall. node2 caches f5's layout from node1; the volume moves
    to node3; node3 truncates f5 to 0, gives the freed blocks to g5 (a known
    pattern) and grows f5 back (holes); node2 overwrites f5 with O_DIRECT.
    g5 must keep its pattern and f5 must hold node2's data."""
    lab = cluster
    size_mb = 16
    f, g = f"{MNT}/f5", f"{MNT}/g5"
    sh(lab, "node2", f"dd if=/dev/zero of={f} bs=1M count={size_mb} oflag=direct status=none "
                     f"&& dd if={f} of=/dev/null bs=1M iflag=direct status=none")
    try:
        sh(lab, "node1", f"{CTL} move {VOL} 3 --wait 120", timeout=180)
        wait_for(lambda: coordinated_by(lab, 3), 120, "node3 coordinating, ready everywhere")
        sh(lab, "node3", f"truncate -s 0 {f} && xfs_io -f -d -c "
                         f"'pwrite -S 0x5a -b 1m 0 {size_mb * 2}m' {g} >/dev/null && "
                         f"truncate -s {size_mb}m {f}")
        want = sh(lab, "node2", f"head -c {size_mb << 20} /dev/urandom > /tmp/f5 && "
                                f"dd if=/tmp/f5 of={f} bs=1M conv=notrunc oflag=direct "
                                "status=none && sha256sum < /tmp/f5").split()[0]
        out = sh(lab, "node1", f"dd if={g} iflag=direct bs=1M status=none | wc -c; "
                               f"dd if={g} iflag=direct bs=1M status=none | tr -d 'Z' | wc -c; "
                               f"sha256sum < {f}")
        assert out.split() == [str(size_mb * 2 << 20), "0", want, "-"], out
    finally:
        sh(lab, "node1", f"{CTL} move {VOL} 1 --wait 120", timeout=180)
        wait_for(lambda: coordinated_by(lab, 1), 120, "node1 coordinating, ready everywhere")


def test_direct_write_mtime_seen_while_open(cluster):
    """A file written directly and kept open (a VM image) shows its new
    mtime on other nodes within seconds, not only after close."""
    lab = cluster
    f = f"{MNT}/open-image"
    sh(lab, "node2", f"dd if=/dev/zero of={f} bs=1M count=4 oflag=direct status=none")
    before = int(sh(lab, "node3", f"stat -c %Y {f}"))
    time.sleep(1.1)  # mtime has whole seconds here: the write must be in a later one
    # node2 writes directly, then holds the file open: no close, no fsync
    written = "/tmp/open-image.written"
    writer = ("import mmap, os, time; fd = os.open('%s', os.O_RDWR | os.O_DIRECT); "
              "b = mmap.mmap(-1, 4096); b.write(os.urandom(4096)); "
              "assert os.pwrite(fd, b, 0) == 4096; open('%s', 'w').close(); "
              "time.sleep(600)" % (f, written))
    sh(lab, "node2", f"rm -f {written}")
    lab.spawn("node2", f'/usr/bin/python3 -c "{writer}"', log="/lab/node2/open-image.log")
    try:
        # from the write on, not from the spawn (python starts slowly in a
        # debug guest); the timer commits after 1 s, 20 s is for slow hosts
        # (wait_for scales by lab.slowdown)
        wait_for(lambda: lab.exec("node2", f"test -e {written}").ok, 60,
                 "node2's direct write")
        wait_for(lambda: int(sh(lab, "node3", f"stat -c %Y {f}")) > before, 20,
                 "node2's direct write's mtime on node3")
        assert dmesg_count(lab, "node2", "redirecting") == 0
    finally:
        # the holder must be gone before the next tests (and the unmount)
        lab.exec("node2", f"pkill -f '[o]s.open..{f}'")
        wait_for(lambda: lab.exec("node2", f"pgrep -f '[o]s.open..{f}'").rc == 1, 30,
                 "node2's open-image holder gone")


# Holds one buffered fd on node2 across node3's rewrite: reads it all,
# waits for the go file, reads it all again through the same fd.
LEASE_READER = r"""
import hashlib, os, sys, time
path, out = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDONLY)
def digest():
    h, off = hashlib.sha256(), 0
    while True:
        b = os.pread(fd, 1 << 16, off)
        if not b:
            return h.hexdigest()
        h.update(b)
        off += len(b)
def publish(name, text):  # whole or not at all: the host polls for it
    with open(name + ".tmp", "w") as f:
        f.write(text)
    os.rename(name + ".tmp", name)
publish(out + ".1", digest())
while not os.path.exists(out + ".go"):
    time.sleep(0.1)
publish(out + ".2", digest())
"""


def cached_bytes(lab, node, path):
    return int(sh(lab, node, f"fincore --bytes --noheadings --output RES {path}").strip())


def test_lease_break(cluster):
    """node2 reads a file through its page cache under a read lease; node3
    rewrites it: the coordinator breaks node2's lease (node2 drops its
    cache) before node3's open returns, and node2's next read, on the fd it
    kept open and after a new open, returns the new data."""
    lab = cluster
    size = 4 << 20
    f = f"{MNT}/leased"
    old = sh(lab, "node2", f"head -c {size} /dev/urandom > /tmp/old && cp /tmp/old {f} && "
                           "sha256sum < /tmp/old").split()[0]
    new = sh(lab, "node3", f"head -c {size} /dev/urandom > /tmp/new && sha256sum < /tmp/new"
             ).split()[0]
    # cached: the pages stay after close, and a second open keeps them
    assert sh(lab, "node2", f"sha256sum < {f}").split()[0] == old
    assert cached_bytes(lab, "node2", f) == size
    file_reads = kernel_ops(lab, "node2", "file", "read")
    assert sh(lab, "node2", f"sha256sum < {f}").split()[0] == old
    assert cached_bytes(lab, "node2", f) == size
    # the second read came from the cache: no READ request went out
    assert kernel_ops(lab, "node2", "file", "read") == file_reads
    assert kernel_ops(lab, "node2", "cached", "read") > 0
    # an uncached node for contrast: O_DIRECT reads never fill the cache
    sh(lab, "node1", f"dd if={f} iflag=direct bs=1M status=none | wc -c")
    assert cached_bytes(lab, "node1", f) == 0

    res = os.path.join(lab.run_dir, "lease")
    for suffix in (".1", ".2", ".go"):
        if os.path.exists(res + suffix):
            os.unlink(res + suffix)
    with open(os.path.join(lab.run_dir, "lease_reader.py"), "w") as fh:
        fh.write(LEASE_READER)
    lab.spawn("node2", f"/usr/bin/python3 /lab/lease_reader.py {f} /lab/lease",
              log="/lab/node2/lease_reader.log")
    wait_for(lambda: os.path.exists(res + ".1"), 120, "node2's first read")
    assert open(res + ".1").read() == old
    assert cached_bytes(lab, "node2", f) == size

    # node3 rewrites in place: its open for writing breaks node2's lease
    sh(lab, "node3", f"dd if=/tmp/new of={f} bs=1M conv=notrunc status=none")
    assert cached_bytes(lab, "node2", f) == 0, "node2 kept its cache after the break"
    open(res + ".go", "w").close()
    wait_for(lambda: os.path.exists(res + ".2"), 120, "node2's second read")
    assert open(res + ".2").read() == new, "node2 read stale data through its open fd"
    assert sh(lab, "node2", f"sha256sum < {f}").split()[0] == new
    # once node3's close (an asynchronous RELEASE) is in, node2 caches again
    wait_for(lambda: sh(lab, "node2", f"sha256sum < {f}").split()[0] == new
             and cached_bytes(lab, "node2", f) == size, 30, "node2 caching again")


def test_zz_unmount_and_repair(cluster):
    lab = cluster
    for n in NODES:
        r = lab.exec(n, f"umount {MNT}", timeout=300)
        # a busy mount is a test that left a process behind: name it
        assert r.ok, f"{n}: umount: {r.stderr}\n" + lab.exec(n, f"fuser -vm {MNT} 2>&1").stdout
    # removing the volume closes the coordinator's service: syncfs, unmount
    sh(lab, "node1", f"{CTL} volume remove {VOL}")
    wait_for(lambda: volume(lab, "node1") is None, 60, "volume removed")
    time.sleep(2)
    out = lab.exec("node1", f"xfs_repair -n {DEV}", timeout=300)
    assert out.rc == 0, out.stdout + out.stderr
