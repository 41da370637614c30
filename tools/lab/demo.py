"""A csvfs cluster in a csvlab lab (csvd + csvfs.ko on every node), and the demo.

`CsvCluster` is the set-up that the demo (`tools/csvlab demo`) and the
end-to-end system tests (tests/system/test_e2e.py) share: Corosync, csvd on
every node configured as docs/operations.md says (/etc/csv/csvd.conf and
/etc/csv/cluster.key in each guest), an XFS volume added as a CSV with
`csvctl volume add`, csvfs mounted at /ClusterStorage/<Volume> on every node.
"""
import json
import os
import shlex
import time

from .core import REPO
from .errors import LabError

KO = os.path.join(REPO, "kmod", "csvfs.ko")
CSVD = os.path.join(REPO, "build", "daemon", "csvd")
CSVCTL = os.path.join(REPO, "build", "tools", "csvctl")
DEV = "/dev/disk/by-id/virtio-csvlun0"
PORT = 7410
# the snapshot of the binaries that the guests run (CsvCluster.snapshot)
GUEST_CSVD = "/lab/bin/csvd"
GUEST_CSVCTL = "/lab/bin/csvctl"


# Every wait_for deadline is multiplied by the running lab's slowdown (3
# under the debug kernel, 1 otherwise), set when a CsvCluster is made for
# it: a deadline then means the same amount of work on either kernel.
TIME_SCALE = 1


def wait_for(cond, timeout, what, interval=0.5):
    """Poll COND until true (exceptions count as false); LabError after TIMEOUT s
    (times TIME_SCALE)."""
    timeout *= TIME_SCALE
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = cond()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - conditions fail while things start
            last = e
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


class CsvCluster:
    """csvd + csvfs on the nodes of a running Lab."""

    def __init__(self, lab, volume="Volume1", dev=DEV, attr_timeout_ms=None):
        global TIME_SCALE
        TIME_SCALE = lab.slowdown
        self.lab = lab
        self.volume = volume
        self.dev = dev
        self.mnt = f"/ClusterStorage/{volume}"
        self.attr_timeout_ms = attr_timeout_ms
        self.csvd_pid = {}

    # ------------------------------------------------------------ helpers
    def sh(self, node, cmd, timeout=300, input=None):
        r = self.lab.exec(node, cmd, timeout=timeout, input=input)
        if not r.ok:
            raise LabError(f"{node}: {cmd!r} failed rc={r.rc}{' (timed out)' if r.timed_out else ''}"
                           f"\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}")
        return r.stdout

    def ctl(self, node, args, timeout=60):
        return self.sh(node, f"{GUEST_CSVCTL} {args}", timeout=timeout)

    def status(self, node):
        return json.loads(self.ctl(node, "status --json", timeout=30))

    def vol(self, node):
        for v in self.status(node)["volumes"]:
            if v["name"] == self.volume:
                return v
        return None

    def io_mode(self, node, of=None):
        """(io_mode, reason) of node OF (default NODE itself) as NODE's csvd reports it."""
        nid = self.lab.index(of or node)
        for n in (self.vol(node) or {}).get("nodes", []):
            if n["id"] == nid:
                return n["io_mode"], n["reason"]
        return None, None

    # ------------------------------------------------------------ daemon
    def snapshot(self):
        """Copy csvfs.ko, csvd and csvctl into the run dir (/lab/bin in the guests).

        The guests run the binaries from there, so that a rebuild of the working
        tree during a run (another engineer's `cmake --build`) cannot replace a
        running csvd's text under it.
        """
        import shutil
        bindir = os.path.join(self.lab.run_dir, "bin")
        os.makedirs(bindir, exist_ok=True)
        root = os.environ.get("CSVFS_BUILD_ROOT", REPO)  # another tree's build, if asked
        for src in (os.path.join(root, os.path.relpath(p, REPO)) for p in (KO, CSVD, CSVCTL)):
            if src.endswith(".ko"):
                src = self.lab.module_for(src)  # the debug kernel's build of it
            if not os.path.exists(src):
                raise LabError(f"{src} is not built (tools/build-kmod; cmake --build build)")
            tmp = os.path.join(bindir, "." + os.path.basename(src))
            shutil.copy2(src, tmp)
            os.replace(tmp, os.path.join(bindir, os.path.basename(src)))

    def config(self, node):
        nodes = [{"id": i + 1, "addr": self.lab.addr(n), "port": PORT}
                 for i, n in enumerate(self.lab.nodes)]
        return {"nodes": nodes, "key_file": "/etc/csv/cluster.key",
                "state_dir": "/var/lib/csvd", "run_dir": "/run/csvd",
                "control_socket": "/run/csvd/control.sock",
                # A probe is a read of the device: in a debug guest (KASAN,
                # lockdep; lab.slowdown 3) under load it takes more than 2 s
                # now and then, and each such "failed path" moved a
                # coordinator and, once healthy, a volume back (two XFS
                # mounts for nothing).
                "path_interval_ms": 500, "path_timeout_ms": 2000 * self.lab.slowdown}

    def install(self, node):
        """/etc/csv/{csvd.conf,cluster.key} in the guest (docs/operations.md); csvfs.ko loaded."""
        key = os.path.join(self.lab.run_dir, "cluster.key")
        if not os.path.exists(key):
            with open(key, "wb") as f:
                f.write(os.urandom(32))
            os.chmod(key, 0o600)
        with open(os.path.join(self.lab.node_dir(node), "csvd.json"), "w") as f:
            json.dump(self.config(node), f, indent=1)
        # insmod straight from 9p can fail with EIO: copy the module first.
        self.sh(node, "mkdir -p /etc/csv /var/lib/csvd /run/csvd && "
                      f"cp /lab/{node}/csvd.json /etc/csv/csvd.conf && "
                      "install -m 600 /lab/cluster.key /etc/csv/cluster.key && "
                      "(lsmod | grep -q '^csvfs ' || "
                      "(cp /lab/bin/csvfs.ko /tmp/csvfs.ko && insmod /tmp/csvfs.ko))")

    def start_csvd(self, node):
        pid = self.lab.spawn(node, [GUEST_CSVD, "--foreground", "--config", "/etc/csv/csvd.conf"],
                             log=f"/lab/{node}/csvd.log")
        self.csvd_pid[node] = pid
        return pid

    def csvd_running(self, node):
        pid = self.csvd_pid.get(node)
        return bool(pid) and self.lab.exec(node, f"kill -0 {pid}").ok

    def kill_csvd(self, node, sig="KILL"):
        pid = self.csvd_pid.pop(node)
        self.sh(node, f"kill -{sig} {pid}")
        wait_for(lambda: not self.lab.exec(node, f"kill -0 {pid}").ok, 30, f"csvd on {node} gone")

    def wait_synced(self, nodes=None, timeout=180):
        nodes = nodes or self.lab.nodes
        want = sorted(self.lab.index(n) for n in nodes)
        for n in nodes:
            wait_for(lambda n=n: (lambda s: s["synced"] and s["quorate"]
                                  and sorted(s["members"]) == want)(self.status(n)),
                     timeout, f"csvd on {n} synced with members {want}")

    def wait_online(self, nodes=None, coordinator=None, timeout=180):
        nodes = nodes or self.lab.nodes

        def ok(n):
            v = self.vol(n)
            return v and v["ready"] and v["coordinator"] and (
                coordinator is None or v["coordinator"] == coordinator)
        for n in nodes:
            wait_for(lambda n=n: ok(n), timeout, f"{self.volume} online on {n}")
        return self.vol(nodes[0])["coordinator"]

    # ------------------------------------------------------------ volume
    def mkfs_and_add(self, node="node1", preferred=None, mkfs="mkfs.xfs -q -f"):
        self.sh(node, f"{mkfs} {self.dev}", timeout=300)
        pref = f" --preferred {preferred}" if preferred else ""
        self.ctl(node, f"volume add {self.volume} {self.dev}{pref}", timeout=120)

    def mount(self, node):
        opts = f"volume={self.volume}"
        if self.attr_timeout_ms is not None:
            opts += f",attr_timeout_ms={self.attr_timeout_ms}"
        self.sh(node, f"mkdir -p {self.mnt} && mount -t csvfs -o {opts} {self.dev} {self.mnt}",
                timeout=120)

    def umount(self, node, timeout=120):
        self.sh(node, f"umount {self.mnt}", timeout=timeout)

    def is_mounted(self, node):
        r = self.lab.exec(node, f"grep -q ' {self.mnt} csvfs ' /proc/mounts")
        return r.ok

    def setup(self, preferred=1, progress=None):
        """Corosync, csvd everywhere, fresh XFS volume, mounted on every node."""
        say = progress or (lambda msg: None)
        q = self.lab.quorum(self.lab.nodes[0])
        if q is None or not q.quorate:
            say("starting Corosync on every node")
            self.lab.corosync()
        say("starting csvd on every node")
        self.snapshot()
        for n in self.lab.nodes:
            self.install(n)
            self.start_csvd(n)
        self.wait_synced()
        say(f"mkfs.xfs on {self.dev}; csvctl volume add {self.volume}")
        self.mkfs_and_add(preferred=preferred)
        coord = self.wait_online()
        if preferred and coord != preferred:
            # the first node with a healthy path may win before the preferred one probed
            say(f"moving the coordinator role to node{preferred}")
            self.ctl(self.lab.nodes[0], f"move {self.volume} {preferred} --wait 120", timeout=180)
            self.wait_online(coordinator=preferred)
        say(f"mounting {self.mnt} on every node")
        for n in self.lab.nodes:
            self.mount(n)

    def teardown(self):
        for n in self.lab.nodes:
            if self.lab.is_running(n) and self.is_mounted(n):
                self.lab.exec(n, f"umount {self.mnt}", timeout=120)

    def xfs_repair_check(self, node="node1"):
        """Unmounted everywhere, volume removed: `xfs_repair -n` output (raises if unclean)."""
        return self.sh(node, f"xfs_repair -n {self.dev} 2>&1", timeout=600)


def q(s):
    return shlex.quote(s)


# =================================================================== the demo

import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

from .core import Lab  # noqa: E402

IMG = "vm1.qcow2"
BOLD, DIM, GREEN, RED, YELLOW, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[31m",
                                        "\033[33m", "\033[0m") if sys.stdout.isatty() else ("",) * 6


class Progress:
    """One long step: a spinner with the elapsed time on a terminal, a line every 15 s otherwise."""

    def __init__(self, title):
        self.title = title
        self.done = threading.Event()
        self.t0 = time.monotonic()

    def __enter__(self):
        print(f"{BOLD}▶ {self.title}{RESET}", flush=True)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        return self

    def _spin(self):
        frames = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
        i = 0
        while not self.done.wait(0.2 if sys.stdout.isatty() else 15):
            el = time.monotonic() - self.t0
            if sys.stdout.isatty():
                sys.stdout.write(f"\r  {frames[i % len(frames)]} {el:5.0f} s {DIM}{self.title}{RESET}\033[K")
                sys.stdout.flush()
            else:
                print(f"  ... {el:.0f} s", flush=True)
            i += 1

    def __exit__(self, exc_type, exc, tb):
        self.done.set()
        self.thread.join()
        el = time.monotonic() - self.t0
        if sys.stdout.isatty():
            sys.stdout.write("\r\033[K")
        self.ok = exc_type is None
        mark = f"{GREEN}✓{RESET}" if self.ok else f"{RED}✗{RESET}"
        print(f"  {mark} {self.title} ({el:.1f} s)", flush=True)
        self.seconds = el
        return False


def say(text):
    print(f"  {text}", flush=True)


class Demo:
    def __init__(self, name="demo", keep=False, skip_build=False):
        self.name = name
        self.keep = keep
        self.skip_build = skip_build
        self.lab = None
        self.csv = None
        self.figures = []     # (what, value) shown in the summary
        self.steps = []       # (step, ok, seconds)
        self.t0 = time.monotonic()

    # ------------------------------------------------------------ helpers
    def step(self, title):
        p = Progress(title)
        self.steps.append(p)
        return p

    def fig(self, what, value):
        self.figures.append((what, value))

    def table(self, node="node2", title=None):
        out = self.csv.ctl(node, "status", timeout=30)
        print(f"  {DIM}┌─ csvctl status on {node}{(' — ' + title) if title else ''}{RESET}")
        for line in out.rstrip().splitlines():
            print(f"  {DIM}│{RESET} {line}")
        print(f"  {DIM}└─{RESET}", flush=True)

    def mode_line(self, node="node2"):
        v = self.csv.vol(node) or {}
        modes = " ".join(f"node{n['id']}={n['io_mode']}" for n in v.get("nodes", []))
        return f"coordinator node{v.get('coordinator')} epoch {v.get('epoch')}: {modes}"

    def host(self, argv, title, cwd=REPO):
        with self.step(title):
            r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
            if r.returncode:
                sys.stdout.write(r.stdout[-4000:] + r.stderr[-4000:])
                raise LabError(f"{' '.join(argv)} failed (exit {r.returncode})")

    # ------------------------------------------------------------ stages
    def prepare(self):
        need = ["qemu-system-x86_64", "corosync", "mkfs.xfs", "qemu-img", "qemu-io", "fio",
                "cmake", "busybox"]
        missing = [t for t in need if subprocess.run(["sh", "-c", f"command -v {t}"],
                                                     capture_output=True).returncode]
        if missing:
            self.host([os.path.join(REPO, "tools", "install-deps")],
                      f"installing what is missing ({', '.join(missing)})")
        else:
            say(f"{GREEN}✓{RESET} dependencies present")
        if self.skip_build and os.path.exists(KO) and os.path.exists(CSVD):
            say("build skipped (--no-build)")
            return
        if not os.path.exists(os.path.join(REPO, "build", "CMakeCache.txt")):
            self.host(["cmake", "-S", ".", "-B", "build", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
                      "configuring the build (cmake)")
        self.host(["cmake", "--build", "build", f"-j{os.cpu_count() or 2}"],
                  "building csvd, csvctl, csvio (cmake --build build)")
        self.host([os.path.join(REPO, "tools", "build-kmod")], "building csvfs.ko (tools/build-kmod)")

    def boot(self):
        self.lab = Lab(self.name, nodes=3, disks=1, disk_size="4G")
        self.lab.down()  # a leftover of an earlier demo
        with self.step("booting 3 QEMU nodes (TCG) sharing one 4 GiB LUN"):
            self.lab.up(timeout=400)
        self.fig("boot of 3 nodes", f"{self.lab.timings['boot_s']:.0f} s")
        with self.step("starting Corosync, waiting for quorum"):
            self.lab.corosync(timeout=240)
        self.fig("Corosync quorate", f"{self.lab.timings['quorate_s']:.0f} s")
        self.csv = CsvCluster(self.lab, volume="Volume1")
        with self.step("csvd on every node, XFS on the LUN, `csvctl volume add Volume1`, "
                       "mount on every node"):
            self.csv.setup(preferred=1, progress=lambda m: say(f"{DIM}{m}{RESET}"))
        self.table(title="Volume1 online, mounted at /ClusterStorage/Volume1 on node1..3")

    def disk_image(self):
        m = self.csv.mnt
        img = f"{m}/{IMG}"
        with self.step("node2: qemu-img create -f qcow2 /ClusterStorage/Volume1/vm1.qcow2 1G"):
            self.csv.sh("node2", f"qemu-img create -q -f qcow2 -o preallocation=falloc {img} 1G")
            say(self.csv.sh("node2", f"qemu-img info {img} | head -4").replace("\n", "\n  "))
        with self.step("node3: qemu-io writes 64 MiB into it, O_DIRECT (cache=none)"):
            # a first write allocates blocks: the coordinator does it (file-system redirected)
            out = self.csv.sh("node3", f"qemu-io -f qcow2 -t none -c 'write -P 0x11 0 64M' {img}",
                              timeout=900)
            say("first write (allocating, through the coordinator): "
                + out.strip().splitlines()[-1])
            self.fig("qemu-io allocating write, node3 (redirected)", rate(out))
            # an overwrite of allocated blocks goes from node3 straight to the LUN
            out = self.csv.sh("node3", f"qemu-io -f qcow2 -t none -c 'write -P 0xa5 0 64M' {img}",
                              timeout=900)
            say("overwrite (direct to the LUN): " + out.strip().splitlines()[-1])
            self.fig("qemu-io overwrite, node3 (direct)", rate(out))
        with self.step("node1: qemu-io reads it back and checks the pattern; checksums agree"):
            out = self.csv.sh("node1", f"qemu-io -f qcow2 -t none -c 'read -P 0xa5 0 64M' {img}",
                              timeout=900)
            say(out.strip().splitlines()[-1])
            self.fig("qemu-io read on node1 (direct)", rate(out))
            # O_DIRECT reads of the data written (buffered reads are uncached and redirected)
            sums = {n: self.csv.sh(n, f"dd if={img} iflag=direct bs=1M count=80 status=none | "
                                      f"sha256sum").split()[0] for n in ("node1", "node3")}
            say(f"sha256 node1 {sums['node1'][:16]}…  node3 {sums['node3'][:16]}…  "
                f"{'identical' if len(set(sums.values())) == 1 else 'DIFFERENT'}")
            if len(set(sums.values())) != 1:
                raise LabError("checksums differ between node1 and node3")
        redirected = self.csv.sh("node3", "dmesg | grep -c redirecting || true").strip()
        say(f"node3 kernel: {redirected} bios redirected (0 = every data I/O went to the LUN)")

    def migration(self):
        img = f"{self.csv.mnt}/{IMG}"
        with self.step("live migration hand-off: node3 → node1, same image, no copy"):
            ino3 = self.csv.sh("node3", f"stat -c %i {img}").strip()
            t = time.monotonic()
            # the source writes its last dirty state and closes ("stops the VM") ...
            self.csv.sh("node3", f"qemu-io -f qcow2 -t none -c 'write -P 0x3c 0 16M' -c flush {img}")
            # ... the destination opens the same file and runs on from it
            out = self.csv.sh("node1", f"qemu-io -f qcow2 -t none -c 'read -P 0x3c 0 16M' "
                                       f"-c 'write -P 0x1d 16M 16M' {img}")
            hand = time.monotonic() - t
            ino1 = self.csv.sh("node1", f"stat -c %i {img}").strip()
            check = self.csv.sh("node3", f"qemu-img check {img} 2>&1 | tail -2").strip()
            say(f"inode {ino3} on node3 = inode {ino1} on node1; nothing copied")
            say(f"qemu-img check on node3: {check.splitlines()[-1] if check else check}")
            say(out.strip().splitlines()[-1])
            self.fig("migration hand-off (flush, reopen, verify, write)", f"{hand:.1f} s")

    def path_cut(self):
        img = f"{self.csv.mnt}/{IMG}"
        log = "/tmp/demo-fio.json"
        job = (f"fio --name=vm --filename={img} --rw=randrw --bs=64k --size=128M --offset=0 "
               f"--direct=1 --ioengine=psync --time_based --runtime=60 --verify=crc32c "
               f"--verify_backlog=32 --output-format=json > {log} 2>&1; echo rc=$? >> {log}")
        # fio writes into the raw bytes of the image file: fine for a demo of the data path
        # written (not fallocated) extents: their I/O goes straight to the LUN
        self.csv.sh("node3", f"dd if=/dev/zero of={self.csv.mnt}/vm3.raw bs=1M count=128 "
                             f"oflag=direct status=none", timeout=600)
        job = job.replace(img, f"{self.csv.mnt}/vm3.raw")
        with self.step("node3's storage path cut under a running fio (verify=crc32c)"):
            self.lab.spawn("node3", job)
            time.sleep(3)
            self.lab.cut_path("node3")
            t = time.monotonic()
            try:
                wait_for(lambda: self.csv.io_mode("node2", "node3")[0] == "BlockRedirected", 30,
                         "node3 BlockRedirected")
                cut_s = time.monotonic() - t
                say(f"{YELLOW}node3 → BlockRedirected{RESET} after {cut_s:.1f} s "
                    f"(its I/O goes through the coordinator)")
                self.fig("path cut → BlockRedirected", f"{cut_s:.1f} s")
                self.table(title="node3 has no path")
            except LabError:
                say(f"{YELLOW}node3 did not report BlockRedirected within 30 s: the direct "
                    f"data path's redirect is not available in this build{RESET}")
                self.fig("path cut → BlockRedirected", "not seen")
            time.sleep(5)
            self.lab.heal_path("node3")
            t = time.monotonic()
            wait_for(lambda: self.csv.io_mode("node2", "node3")[0] == "Direct", 60, "node3 Direct")
            heal_s = time.monotonic() - t
            say(f"{GREEN}node3 → Direct{RESET} {heal_s:.1f} s after the path healed")
            self.fig("path healed → Direct", f"{heal_s:.1f} s")
            out = wait_for(lambda: (lambda o: o if "rc=" in o else None)(
                self.lab.exec("node3", f"cat {log}").stdout), 300, "fio on node3", 1)
            ok = "rc=0" in out and '"error" : 0' in out
            say(f"fio on node3: {'no error, data verified' if ok else 'FAILED'}")
            if not ok:
                raise LabError("fio on node3 failed across the path cut:\n" + out[-2000:])
            self.fig("application errors across the path cut", "0")

    def failover(self):
        img = f"{self.csv.mnt}/vm2.raw"
        log = "/tmp/demo-fo.json"
        self.csv.sh("node2", f"dd if=/dev/zero of={img} bs=1M count=64 oflag=direct status=none",
                    timeout=600)
        job = (f"fio --name=vm2 --filename={img} --rw=randwrite --bs=4k --size=64M --direct=1 "
               f"--ioengine=psync --time_based --runtime=75 --verify=crc32c --verify_backlog=32 "
               f"--write_lat_log=/tmp/demo-lat --log_avg_msec=0 --output-format=json "
               f"> {log} 2>&1; echo rc=$? >> {log}")
        with self.step("the coordinator (node1) powered off under a running fio on node2"):
            self.lab.spawn("node2", job)
            time.sleep(5)
            t = time.monotonic()
            self.lab.kill("node1")
            say(f"{RED}node1 powered off{RESET} (qemu SIGKILL)")
            v = wait_for(lambda: (lambda v: v if v and v["ready"] and v["coordinator"] not in (0, 1)
                                  else None)(self.csv.vol("node2")), 180, "a new coordinator")
            new_s = time.monotonic() - t
            say(f"new coordinator node{v['coordinator']}, epoch {v['epoch']}, online "
                f"{new_s:.1f} s after the power-off (Corosync token 5 s + consensus included)")
            self.fig("coordinator power-off → new coordinator online", f"{new_s:.1f} s")
            self.table(title="after the failover")
            out = wait_for(lambda: (lambda o: o if "rc=" in o else None)(
                self.lab.exec("node2", f"cat {log}").stdout), 300, "fio on node2", 1)
            ok = "rc=0" in out and '"error" : 0' in out
            gap = self.csv.sh("node2", "cat /tmp/demo-lat_clat.1.log 2>/dev/null | "
                                       "awk -F, '{print $2}' | sort -n | tail -1").strip()
            pause = float(gap) / 1e9 if gap else None   # clat in ns, the longest I/O
            say(f"fio on node2: {'no error, data verified' if ok else 'FAILED'}; longest I/O "
                f"{pause:.1f} s" if pause is not None else "")
            if pause is not None:
                say(f"{DIM}(fio's blocks were already mapped: its direct I/O needs the "
                    f"coordinator only for new layouts, so it barely waits for the failover){RESET}")
                self.fig("I/O pause seen by fio on node2 (longest I/O)", f"{pause:.1f} s")
            if not ok:
                raise LabError("fio on node2 failed across the failover:\n" + out[-2000:])
            self.fig("application errors across the failover", "0")

    def throughput(self):
        with self.step("throughput on node3: csvfs direct vs the raw LUN (O_DIRECT reads, 1 MiB)"):
            f = f"{self.csv.mnt}/{IMG}"
            a = fio_bw(self.csv, "node3", f"--filename={f} --rw=read --bs=1M --size=64M")
            # the raw LUN read over a range that was written (allocated in the sparse
            # image on the host, as the file's blocks are), read-only
            off, size = written_range(os.path.join(self.lab.run_dir, "disk0.img"), 64 << 20)
            b = fio_bw(self.csv, "node3", f"--filename={self.csv.dev} --rw=read --bs=1M "
                                          f"--size={size} --offset={off} --readonly")
            say(f"csvfs {a:.0f} MiB/s, raw LUN {b:.0f} MiB/s, ratio {a / b:.2f}")
            self.fig("sequential read, csvfs direct vs raw LUN (node3)",
                     f"{a:.0f} vs {b:.0f} MiB/s (×{a / b:.2f})")

    def summary(self, ok, error=None):
        total = time.monotonic() - self.t0
        print()
        print(f"{BOLD}══ csvfs demo {'finished' if ok else 'FAILED'} in {total / 60:.1f} min ══{RESET}")
        for p in self.steps:
            s = getattr(p, "seconds", None)
            print(f"  {'✓' if getattr(p, 'ok', False) else '✗'} {p.title:<78} "
                  f"{(f'{s:6.1f} s') if s is not None else ''}")
        if self.figures:
            print(f"\n{BOLD}  figures (measured in this run, TCG guests on this machine){RESET}")
            for what, value in self.figures:
                print(f"    {what:<58} {value}")
        if error:
            print(f"\n  {RED}error: {error}{RESET}")
        print()

    def run(self):
        ok, error = False, None
        try:
            self.prepare()
            self.boot()
            self.disk_image()
            self.migration()
            self.throughput()
            self.path_cut()
            self.failover()
            ok = True
        except (LabError, Exception) as e:  # noqa: BLE001 - the summary says what failed
            error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if not isinstance(e, LabError):
                import traceback
                traceback.print_exc()
        finally:
            self.summary(ok, error)
            if self.lab is not None:
                if self.keep:
                    print(f"  the cluster stays up (--keep): tools/csvlab --name {self.name} exec "
                          f"node2 -- {GUEST_CSVCTL} status;  tools/csvlab --name {self.name} down")
                else:
                    with self.step(f"cleaning up (csvlab --name {self.name} down)"):
                        self.lab.down(keep_logs=not ok)
        return 0 if ok else 1


def written_range(image, want):
    """(offset, size) of the largest data region of the host's sparse IMAGE, up to WANT bytes."""
    best = (0, 0)
    fd = os.open(image, os.O_RDONLY)
    try:
        end, pos = os.fstat(fd).st_size, 0
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            if stop - start > best[1]:
                best = (start, stop - start)
            pos = stop
    finally:
        os.close(fd)
    off = (best[0] + (1 << 20) - 1) & ~((1 << 20) - 1)
    size = max(1 << 20, min(want, (best[0] + best[1] - off) & ~((1 << 20) - 1)))
    return off, size


def rate(qemu_io_out):
    """'... (123.4 MiB/sec and 1.93 ops/sec)' -> '123.4 MiB/s'."""
    import re
    m = re.search(r"\(([\d.]+) (\w+)/sec", qemu_io_out)
    return f"{m.group(1)} {m.group(2)}/s" if m else "?"


def fio_bw(csv, node, args):
    out = csv.sh(node, f"fio --name=bw --direct=1 --ioengine=psync --output-format=json {args}",
                 timeout=900)
    data = json.loads(out[out.index("{"):])
    return data["jobs"][0]["read"]["bw"] / 1024.0


def main(args):
    return Demo(name=args.name if args.name != "lab" else "demo", keep=args.keep,
                skip_build=args.no_build).run()
