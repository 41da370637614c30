"""A three-node csvd cluster on one host, for the daemon's multi-node tests.

Each node is a network namespace joined to a bridge in a "switch" namespace
(link-local addresses, no routes), running its own Corosync (private /run,
its own config, a shared authkey, sched_rr off: LAB-NOTES) and its own csvd.
One XFS image on a loop device is the shared LUN: every node sees the same
/dev/loopN. Everything is torn down by close(), which tolerates partial
set-up, so a failing test never leaves namespaces, loops or processes.
"""
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("CSV_BUILD", os.path.join(TOP, "build"))
CSVD = os.path.join(BUILD, "daemon", "csvd")
CSVCTL = os.path.join(BUILD, "tools", "csvctl")
CSVIO = os.path.join(BUILD, "tools", "csvio")
PORT = 7410


def run(cmd, check=True, timeout=60, **kw):
    return subprocess.run(cmd, check=check, timeout=timeout, capture_output=True, text=True, **kw)


def wait_for(cond, timeout, what, interval=0.05):
    """Polls cond() until it returns a true value; fails after timeout s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - conditions may fail while things start
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Node:
    def __init__(self, cluster, nid):
        self.c = cluster
        self.id = nid
        self.ns = f"{cluster.prefix}n{nid}"
        self.addr = f"169.254.77.{nid}"
        self.dir = os.path.join(cluster.tmp, f"node{nid}")
        self.run_dir = os.path.join(self.dir, "run")
        self.control = os.path.join(self.run_dir, "control.sock")
        self.test_socket = os.path.join(self.run_dir, "test.sock")
        self.fault_file = os.path.join(self.dir, "path-fault")
        self.config = os.path.join(self.dir, "csvd.json")
        self.log = os.path.join(self.dir, "csvd.log")
        self.corosync = None
        self.csvd = None

    # -- processes --
    def start_corosync(self):
        conf = os.path.join(self.dir, "corosync.conf")
        inner = f"mount -t tmpfs tmpfs /run && exec corosync -f -c {conf}"
        self.corosync = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "unshare", "-m", "--propagation", "private",
             "sh", "-c", inner],
            stdout=open(os.path.join(self.dir, "corosync.out"), "w"), stderr=subprocess.STDOUT)

    def start_csvd(self, key=None, env=None):
        with open(self.log, "a") as log:
            self.csvd = subprocess.Popen(
                ["ip", "netns", "exec", self.ns]
                + os.environ.get("CSV_CSVD_WRAP", "").split()
                + [CSVD, "--foreground", "--config", self.config]
                + (["--key-file", key] if key else []),
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **env} if env else None)

    def kill_csvd(self, sig=signal.SIGKILL):
        if self.csvd and self.csvd.poll() is None:
            self.csvd.send_signal(sig)
            try:
                self.csvd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.csvd.kill()
                self.csvd.wait()
        self.csvd = None

    # -- clients --
    def ctl(self, *args, check=False):
        return run([CSVCTL, "--socket", self.control, *args], check=check)

    def status(self):
        r = self.ctl("status", "--json")
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        return json.loads(r.stdout)

    def volume(self, name):
        for v in self.status()["volumes"]:
            if v["name"] == name:
                return v
        return None

    def io(self, *args, check=True, timeout=120):
        r = run([CSVIO, "--socket", self.test_socket, "--volume", self.c.volume, *args],
                check=False, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"csvio {' '.join(args)} on node {self.id} failed: "
                                 f"{r.stderr.strip()} {r.stdout.strip()}")
        return r

    def io_json(self, *args, **kw):
        return json.loads(self.io(*args, **kw).stdout.strip().splitlines()[-1])

    def netns(self, *cmd, check=True, timeout=60):
        return run(["ip", "netns", "exec", self.ns, *cmd], check=check, timeout=timeout)


class Cluster:
    def __init__(self, n=3, volume="Volume1"):
        self.prefix = f"csvt{os.getpid() % 100000}"
        self.switch = f"{self.prefix}sw"
        self.tmp = tempfile.mkdtemp(prefix="csvd-cluster-")
        self.volume = volume
        self.nodes = [Node(self, i) for i in range(1, n + 1)]
        self.loop = None
        self.image = os.path.join(self.tmp, "lun.img")
        self.key = os.path.join(self.tmp, "cluster.key")
        self.wrong_key = os.path.join(self.tmp, "wrong.key")
        self.namespaces = []

    def node(self, nid):
        return self.nodes[nid - 1]

    def start(self):
        for p in (CSVD, CSVCTL, CSVIO):
            if not os.access(p, os.X_OK):
                raise RuntimeError(f"{p} is not built (cmake --build build)")
        self._network()
        self._keys()
        self._lun()
        for n in self.nodes:
            os.makedirs(n.run_dir, exist_ok=True)
            self._corosync_conf(n)
            self._csvd_conf(n)
            n.start_corosync()
        for n in self.nodes:
            wait_for(lambda n=n: "Quorate:          Yes" in
                     n.netns("corosync-quorumtool", "-s", check=False).stdout,
                     60, f"corosync quorum on node {n.id}", interval=0.2)
        for n in self.nodes:
            n.start_csvd()
        self.wait_synced()

    def wait_synced(self, nodes=None):
        nodes = nodes or self.nodes
        ids = sorted(n.id for n in nodes)
        for n in nodes:
            wait_for(lambda n=n: (lambda s: s["synced"] and s["quorate"]
                                  and sorted(s["members"]) == ids)(n.status()),
                     30, f"csvd on node {n.id} synced with members {ids}")

    def _network(self):
        run(["ip", "netns", "add", self.switch])
        self.namespaces.append(self.switch)
        sw = ["ip", "-n", self.switch]
        run(sw + ["link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"])
        run(sw + ["link", "set", "br0", "up"])
        run(sw + ["link", "set", "lo", "up"])
        for n in self.nodes:
            run(["ip", "netns", "add", n.ns])
            self.namespaces.append(n.ns)
            run(["ip", "-n", n.ns, "link", "add", "eth0", "type", "veth", "peer", "name",
                 f"p{n.id}", "netns", self.switch])
            run(sw + ["link", "set", f"p{n.id}", "master", "br0", "up"])
            run(["ip", "-n", n.ns, "addr", "add", f"{n.addr}/24", "dev", "eth0"])
            run(["ip", "-n", n.ns, "link", "set", "eth0", "up"])
            run(["ip", "-n", n.ns, "link", "set", "lo", "up"])

    def _keys(self):
        run(["corosync-keygen", "-l", "-k", os.path.join(self.tmp, "authkey")])
        for path in (self.key, self.wrong_key):
            with open(path, "wb") as f:
                f.write(secrets.token_bytes(32))
            os.chmod(path, 0o600)

    def _lun(self):
        with open(self.image, "wb") as f:
            f.truncate(512 << 20)
        run(["mkfs.xfs", "-q", self.image])
        self.loop = run(["losetup", "-f", "--show", self.image]).stdout.strip()

    def _corosync_conf(self, n):
        lines = ["totem {", "    version: 2", f"    cluster_name: {self.prefix}",
                 "    transport: knet", "    crypto_cipher: aes256", "    crypto_hash: sha256",
                 f"    keyfile: {os.path.join(self.tmp, 'authkey')}", "    token: 3000", "}",
                 "nodelist {"]
        for m in self.nodes:
            lines += ["    node {", f"        nodeid: {m.id}", f"        name: node{m.id}",
                      f"        ring0_addr: {m.addr}", "    }"]
        lines += ["}", "quorum {", "    provider: corosync_votequorum", "}",
                  "logging {", "    to_stderr: no", "    to_syslog: no", "    to_logfile: yes",
                  f"    logfile: {os.path.join(n.dir, 'corosync.log')}", "    timestamp: on", "}",
                  "system {", f"    state_dir: {os.path.join(n.dir, 'corosync-state')}",
                  "    sched_rr: no", "}"]
        os.makedirs(os.path.join(n.dir, "corosync-state"), exist_ok=True)
        with open(os.path.join(n.dir, "corosync.conf"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def _csvd_conf(self, n):
        conf = {
            "nodes": [{"id": m.id, "addr": m.addr, "port": PORT} for m in self.nodes],
            "key_file": self.key,
            "state_dir": os.path.join(n.dir, "state"),
            "run_dir": n.run_dir,
            "test_socket": n.test_socket,
            "path_fault_file": n.fault_file,
            "path_interval_ms": 500,
            "path_timeout_ms": 2000,
            "lease_ms": 1000,
            "lease_margin_ms": 200,
            # short, so that the tests see the grace period end
            "reclaim_grace_ms": 2000,
        }
        with open(n.config, "w") as f:
            json.dump(conf, f, indent=2)

    def close(self):
        for n in self.nodes:
            try:
                n.kill_csvd(signal.SIGTERM)
            except Exception:  # noqa: BLE001
                pass
        for n in self.nodes:
            if n.corosync and n.corosync.poll() is None:
                n.corosync.terminate()
                try:
                    n.corosync.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    n.corosync.kill()
                    n.corosync.wait()
        for ns in reversed(self.namespaces):
            # Anything still running in the namespace goes first.
            pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run(["ip", "netns", "del", ns], check=False)
        if self.loop:
            run(["losetup", "-d", self.loop], check=False)
        for f in os.listdir("/dev/shm"):
            if f.startswith("qb-") and "corosync" in f:
                pid = f.split("-")[2] if len(f.split("-")) > 2 else ""
                if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                    try:
                        os.unlink(os.path.join("/dev/shm", f))
                    except OSError:
                        pass
        if os.environ.get("CSV_KEEP_LOGS"):
            print(f"cluster logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def logs(self):
        out = []
        for n in self.nodes:
            try:
                with open(n.log) as f:
                    out.append(f"---- csvd node {n.id}\n" + "".join(f.readlines()[-60:]))
            except OSError:
                pass
        return "\n".join(out)
