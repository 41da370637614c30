"""A csvfs cluster in a csvlab lab (csvd + csvfs.ko on every node), and the demo.

`CsvCluster` is the set-up that the demo (`tools/csvlab demo`) and the
end-to-end system tests (tests/system/test_e2e.py) share: Corosync, csvd on
every node configured as docs/daemon.md says (/etc/csvfs/csvd.json and
/etc/csvfs/cluster.key in each guest), an XFS volume added as a CSV with
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


def wait_for(cond, timeout, what, interval=0.5):
    """Poll COND until true (exceptions count as false); LabError after TIMEOUT s."""
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
            if not os.path.exists(src):
                raise LabError(f"{src} is not built (tools/build-kmod; cmake --build build)")
            tmp = os.path.join(bindir, "." + os.path.basename(src))
            shutil.copy2(src, tmp)
            os.replace(tmp, os.path.join(bindir, os.path.basename(src)))

    def config(self, node):
        nodes = [{"id": i + 1, "addr": self.lab.addr(n), "port": PORT}
                 for i, n in enumerate(self.lab.nodes)]
        return {"nodes": nodes, "key_file": "/etc/csvfs/cluster.key",
                "state_dir": "/var/lib/csvd", "run_dir": "/run/csvd",
                "control_socket": "/run/csvd/control.sock",
                "path_interval_ms": 500, "path_timeout_ms": 2000}

    def install(self, node):
        """/etc/csvfs/{csvd.json,cluster.key} in the guest; csvfs.ko loaded."""
        key = os.path.join(self.lab.run_dir, "cluster.key")
        if not os.path.exists(key):
            with open(key, "wb") as f:
                f.write(os.urandom(32))
            os.chmod(key, 0o600)
        with open(os.path.join(self.lab.node_dir(node), "csvd.json"), "w") as f:
            json.dump(self.config(node), f, indent=1)
        # insmod straight from 9p can fail with EIO: copy the module first.
        self.sh(node, "mkdir -p /etc/csvfs /var/lib/csvd /run/csvd && "
                      f"cp /lab/{node}/csvd.json /etc/csvfs/csvd.json && "
                      "install -m 600 /lab/cluster.key /etc/csvfs/cluster.key && "
                      "(lsmod | grep -q '^csvfs ' || "
                      "(cp /lab/bin/csvfs.ko /tmp/csvfs.ko && insmod /tmp/csvfs.ko))")

    def start_csvd(self, node):
        pid = self.lab.spawn(node, [GUEST_CSVD, "--foreground", "--config", "/etc/csvfs/csvd.json"],
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
