"""The lab: N QEMU/TCG guests of the Debian kernel sharing one disk image.

Layout of a run directory (default <repo>/lab-runs/<name>, gitignored; it is
also mounted writable at /lab in every guest):
  state.json            what `up` created (read back by attach/down)
  hosts                 /etc/hosts for the guests
  guest/                the guest scripts (stage2.sh, agent.py)
  disk0.img [disk1.img] the shared LUNs (raw, sparse)
  initramfs.cpio.gz
  corosync/authkey
  nodeN/                console.log, agent.log, corosync.conf, corosync.log,
                        qemu.pid, qmp.sock, agent.sock, agent.lock
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

from . import corosync, initramfs, netns
from .channel import Channel, ExecError, Result
from .errors import LabError, NodeDown
from .qmp import qmp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUEST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guest")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")
# $CSVLAB_NAME (csvlab debug-suite --name) replaces the t<pid> prefix of the
# pytest fixture's lab names; with "-" and a module stem of up to 6
# characters, NAME-<module> must still fit the 16 of a lab name.
NAME_PREFIX_MAX = 9
QEMU = "qemu-system-x86_64"
SERIAL_PREFIX = "csvlun"

# Lines of a kernel log that mean the kernel is in trouble. The second half
# is what the debug kernel adds (KASAN, lockdep, atomic sleep, kmemleak,
# UBSAN, failed KUnit checks); most also start with "BUG:" or "WARNING:",
# but are named so that a change of prefix cannot hide them.
KERNEL_PROBLEMS = re.compile(
    r"Oops|BUG:|WARNING:|general protection|soft lockup|hard LOCKUP|"
    r"blocked for more than|hung_task|Kernel panic|RCU stall|rcu_sched self-detected|"
    r"BUG: KASAN|possible circular locking|inconsistent lock state|"
    r"possible recursive locking|sleeping function called from invalid context|"
    r"unreferenced object|suspected memory leak|UBSAN:|kernel BUG at|"
    r"EXPECTATION FAILED|ASSERTION FAILED")

# The kernels a lab can boot (Lab(kernel=...), env CSVLAB_KERNEL):
#   debian  /boot/vmlinuz-$(tools/kernel-version), modules from the initramfs,
#           csvfs.ko = <repo>/kmod/csvfs.ko (tools/build-kmod)
#   debug   tools/build-debug-kernel's KASAN/lockdep/kmemleak kernel, all
#           drivers built in, csvfs.ko = <repo>/build-debug/kmod/csvfs.ko,
#           which the guest sees at <repo>/kmod/csvfs.ko (docs/debug-kernel.md)
KERNELS = ("debian", "debug")
DEBUG_KMOD = os.path.join(REPO, "build-debug", "kmod", "csvfs.ko")
KMOD = os.path.join(REPO, "kmod", "csvfs.ko")
# Extra command line of the debug kernel: slab debugging (redzones, poison,
# sanity checks, owner tracking); kmemleak quiet until the boot-time objects
# are cleared (guest/stage2.sh), then verbose so leaks reach the console log;
# KUnit on (allnoconfig left KUNIT_DEFAULT_ENABLED off: without this the
# module's suites are skipped with "kunit: disabled").
DEBUG_APPEND = "slub_debug=FZPU kmemleak.verbose=0 no_hash_pointers kunit.enable=1"
# Everything runs a few times slower in a debug guest under TCG: boot and
# command deadlines are multiplied by this (never shortened).
DEBUG_SLOWDOWN = 3


def default_runs_dir():
    return os.environ.get("CSVLAB_RUNS") or os.path.join(REPO, "lab-runs")


def kernel_version():
    proc = subprocess.run([os.path.join(REPO, "tools", "kernel-version")],
                          capture_output=True, text=True)
    if proc.returncode:
        raise LabError(proc.stderr.strip() or "tools/kernel-version failed")
    return proc.stdout.strip()


def kernel_choice(kernel=None):
    """KERNEL, else $CSVLAB_KERNEL, else "debian"; LabError if unknown."""
    choice = kernel or os.environ.get("CSVLAB_KERNEL") or "debian"
    if choice not in KERNELS:
        raise LabError(f"kernel {choice!r} (CSVLAB_KERNEL?): use one of {', '.join(KERNELS)}")
    return choice


def debug_kernel_dir():
    """The cache directory of the built debug kernel (tools/build-debug-kernel)."""
    proc = subprocess.run([os.path.join(REPO, "tools", "build-debug-kernel"), "--print-dir"],
                          capture_output=True, text=True)
    if proc.returncode:
        raise LabError(proc.stderr.strip() or "tools/build-debug-kernel --print-dir failed")
    return proc.stdout.strip()


def subnet_of(name):
    """Third octet of the lab's 169.254.x.0/24, stable per lab name (1..254)."""
    return 1 + zlib.crc32(name.encode()) % 254


def wait_until(predicate, timeout, what, interval=0.5):
    """Poll PREDICATE until it returns a true value; LabError after TIMEOUT s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _proc_stat(pid):
    """(state, start time) of PID from /proc/PID/stat, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def kill_and_wait(pids, what, sig=signal.SIGKILL, timeout=30):
    """Send SIG to PIDS and wait until every one has fully exited.

    Not pid_alive(): a process's command line reads empty as soon as it
    starts exiting (its memory goes first), while it still holds its files,
    e.g. a qemu's disk image lock, for a while longer. A process has exited
    when it is gone, a zombie, or its pid belongs to a newer process.
    """
    started = {}
    for pid in pids:
        stat = _proc_stat(pid)
        if stat is None:
            continue
        started[pid] = stat[1]
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def exited(pid):
        stat = _proc_stat(pid)
        return stat is None or stat[0] == "Z" or stat[1] != started[pid]

    wait_until(lambda: all(exited(p) for p in started), timeout, what, 0.05)


def pid_alive(pid, marker):
    """True if PID runs (not a zombie) and its command line contains MARKER."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and marker in cmdline


class Lab:
    """A cluster of guests. Create with Lab(...).up() or attach to a running one."""

    def __init__(self, name="lab", nodes=3, disks=1, disk_size="2G", kvm=False,
                 memory_mb=1024, runs_dir=None, kernel=None):
        if not NAME_RE.match(name):
            raise LabError(f"lab name {name!r}: use 1-16 of [a-z0-9-], starting "
                           f"with a letter or digit")
        if not 1 <= nodes <= 4:
            raise LabError(f"--nodes {nodes}: the lab runs 1 to 4 nodes")
        if not 1 <= disks <= 2:
            raise LabError(f"--disks {disks}: the lab attaches 1 or 2 shared disks")
        self.name = name
        self.n_nodes = nodes
        self.n_disks = disks
        self.disk_size = disk_size
        self.kvm = kvm
        self.memory_mb = memory_mb
        self.run_dir = os.path.join(runs_dir or default_runs_dir(), name)
        self.netns = f"csvlab-{name}"
        self.subnet = subnet_of(name)
        self.kernel = kernel_choice(kernel)
        self.kdir = None  # the debug kernel's cache directory
        self.kver = None
        self.timings = {}
        self.allowed_problems = []

    # ---------------------------------------------------------------- naming

    @property
    def nodes(self):
        return [f"node{i}" for i in range(1, self.n_nodes + 1)]

    def index(self, node):
        """1-based index of NODE given as 2, "2" or "node2"."""
        text = str(node)
        text = text[4:] if text.startswith("node") else text
        if not text.isdigit() or not 1 <= int(text) <= self.n_nodes:
            raise LabError(f"no node {node!r} in lab {self.name} (nodes: "
                           f"{', '.join(self.nodes)})")
        return int(text)

    def node_name(self, node):
        return f"node{self.index(node)}"

    def addr(self, node):
        """The node's link-local address on the lab network."""
        return f"169.254.{self.subnet}.{self.index(node)}"

    def disk_path(self, disk=0):
        """Path of shared disk DISK inside every guest."""
        return f"/dev/disk/by-id/virtio-{SERIAL_PREFIX}{disk}"

    def node_dir(self, node):
        return os.path.join(self.run_dir, self.node_name(node))

    def _path(self, node, fname):
        return os.path.join(self.node_dir(node), fname)

    def console_log(self, node):
        return self._path(node, "console.log")

    def _marker(self, node=None):
        """Text in a VM's command line that identifies it as ours."""
        return f"csvlab:{self.name}:" + (self.node_name(node) if node else "node")

    # ----------------------------------------------------------------- state

    def _save_state(self):
        state = {k: getattr(self, k) for k in
                 ("name", "n_nodes", "n_disks", "disk_size", "kvm", "memory_mb",
                  "subnet", "netns", "kver", "kernel", "kdir")}
        with open(os.path.join(self.run_dir, "state.json"), "w") as f:
            json.dump(state, f, indent=1)

    @classmethod
    def attach(cls, name="lab", runs_dir=None):
        """The lab NAME as `up` left it (from its state.json)."""
        path = os.path.join(runs_dir or default_runs_dir(), name, "state.json")
        try:
            with open(path) as f:
                state = json.load(f)
        except FileNotFoundError:
            raise LabError(f"no lab {name!r} is up ({path} missing); "
                           f"start one with `csvlab up --name {name}`") from None
        lab = cls(name, state["n_nodes"], state["n_disks"], state["disk_size"],
                  state["kvm"], state["memory_mb"], runs_dir, state.get("kernel", "debian"))
        lab.kver = state["kver"]
        lab.kdir = state.get("kdir")
        return lab

    # ------------------------------------------------------------------- up

    def up(self, timeout=300):
        """Create everything and boot all nodes; return when every agent answers."""
        if os.path.exists(os.path.join(self.run_dir, "state.json")) or netns.exists(self.netns):
            raise LabError(f"lab {self.name!r} already exists ({self.run_dir}); "
                           f"`csvlab down --name {self.name}` first")
        self._check_prerequisites()
        start = time.monotonic()
        try:
            self._prepare_run_dir()
            netns.create(self.netns, self.n_nodes)
            for node in self.nodes:
                self._start_vm(node)
            self.wait_ready(self.nodes, timeout)
        except BaseException:
            self.down(keep_logs=True)
            raise
        self.timings["boot_s"] = round(time.monotonic() - start, 1)
        return self

    def _check_prerequisites(self):
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, taps)")
        if not shutil.which(QEMU):
            raise LabError(f"{QEMU} not found: run tools/install-deps")
        if self.kernel == "debug":
            self.kdir = debug_kernel_dir()
            with open(os.path.join(self.kdir, "release")) as f:
                self.kver = f.read().strip()
            if not os.path.exists(DEBUG_KMOD):
                raise LabError(f"{DEBUG_KMOD} missing: run tools/build-debug-kernel")
        else:
            self.kver = kernel_version()
        if not os.path.exists(self.kernel_image):
            raise LabError(f"{self.kernel_image} missing: run tools/install-deps"
                           + (" and tools/build-debug-kernel" if self.kdir else ""))
        longest = os.path.join(self.run_dir, "node4", "agent.sock")
        if len(longest) >= 108:
            raise LabError(f"run directory path too long for unix sockets "
                           f"({longest}); set CSVLAB_RUNS to a shorter directory")

    @property
    def kernel_image(self):
        if self.kernel == "debug":
            return os.path.join(self.kdir, "bzImage")
        return f"/boot/vmlinuz-{self.kver}"

    def module_for(self, path=KMOD):
        """Host path of the csvfs.ko to load for this lab's kernel: PATH (a
        build of kmod/csvfs.ko for the Debian kernel) or, under the debug
        kernel, its build for that kernel. Inside the guests PATH itself is
        the right one either way (stage 1 puts the debug build there)."""
        return DEBUG_KMOD if self.kernel == "debug" else path

    def _prepare_run_dir(self):
        os.makedirs(self.run_dir, exist_ok=True)
        for node in self.nodes:
            os.makedirs(self.node_dir(node), exist_ok=True)
        shutil.copytree(GUEST_DIR, os.path.join(self.run_dir, "guest"), dirs_exist_ok=True)
        hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        hosts += [f"{self.addr(n)} {n}" for n in self.nodes]
        with open(os.path.join(self.run_dir, "hosts"), "w") as f:
            f.write("\n".join(hosts) + "\n")
        for disk in range(self.n_disks):
            subprocess.run(["truncate", "-s", self.disk_size, self._disk_image(disk)],
                           check=True)
        # The debug kernel has every driver built in: no modules to load.
        initramfs.build(self.kver, os.path.join(self.run_dir, "initramfs.cpio.gz"),
                        modules=[] if self.kernel == "debug" else None)
        self._save_state()

    def _disk_image(self, disk):
        return os.path.join(self.run_dir, f"disk{disk}.img")

    def _qemu_args(self, node):
        i = self.index(node)
        accel = ["-accel", "kvm", "-cpu", "host"] if self.kvm else \
            ["-accel", "tcg,tb-size=256", "-cpu", "max"]
        append = (f"console=ttyS0 net.ifnames=0 mitigations=off panic=5 "
                  f"csvlab.node={i} csvlab.addr={self.addr(node)}/24")
        if self.kernel == "debug":
            # Stage 1 copies these from the host root into the guest's overlay.
            append += (f" {DEBUG_APPEND} csvlab.kmod={DEBUG_KMOD} csvlab.kmod_at={KMOD}"
                       f" csvlab.modules={self.kdir}/modroot/lib/modules/{self.kver}")
        args = [QEMU, "-name", self._marker(node), *accel,
                "-smp", "1", "-m", str(self.memory_mb),
                "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
                "-no-reboot",  # a panicked guest stops instead of rebooting
                "-kernel", self.kernel_image,
                "-initrd", os.path.join(self.run_dir, "initramfs.cpio.gz"),
                "-append", append,
                "-chardev", f"file,id=con,path={self.console_log(node)}",
                "-serial", "chardev:con",
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,"
                           "readonly=on,multidevs=remap",
                "-virtfs", f"local,path={self.run_dir},mount_tag=lab,security_model=none,"
                           "multidevs=remap",
                "-netdev", f"tap,id=net0,ifname={netns.tap(i)},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=net0,mac=52:54:00:{self.subnet:02x}:00:{i:02x}",
                "-device", "virtio-rng-pci",
                "-device", "virtio-serial-pci",
                "-chardev", f"socket,id=agent,path={self._path(node, 'agent.sock')},"
                            "server=on,wait=off",
                "-device", "virtserialport,chardev=agent,name=csvlab.agent",
                "-qmp", f"unix:{self._path(node, 'qmp.sock')},server=on,wait=off",
                "-pidfile", self._path(node, "qemu.pid"),
                "-daemonize"]
        for disk in range(self.n_disks):
            # Shared LUN: no host cache, no image locking, share-rw (LAB-NOTES).
            args += ["-blockdev", f"driver=file,node-name=f{disk},filename={self._disk_image(disk)},"
                                  "cache.direct=on,locking=off,aio=threads",
                     "-blockdev", f"driver=raw,node-name=d{disk},file=f{disk}",
                     "-device", f"virtio-blk-pci,drive=d{disk},serial={SERIAL_PREFIX}{disk},"
                                "share-rw=on"]
        return args

    def _start_vm(self, node):
        """Start NODE's qemu (daemonized: errors in its setup are reported here)."""
        for stale in ("qemu.pid", "agent.sock", "qmp.sock"):
            if os.path.exists(self._path(node, stale)):
                os.unlink(self._path(node, stale))
        with open(self.console_log(node), "a") as f:
            f.write(f"\n==== csvlab: starting {self.node_name(node)} at {time.ctime()} ====\n")
        proc = subprocess.run(["ip", "netns", "exec", self.netns, *self._qemu_args(node)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise LabError(f"{self.node_name(node)}: qemu failed to start: "
                           f"{proc.stderr.strip()}")

    @property
    def slowdown(self):
        """Factor applied to boot and command timeouts (debug kernel: slower)."""
        return DEBUG_SLOWDOWN if self.kernel == "debug" else 1

    def wait_ready(self, nodes, timeout=300):
        """Wait until the agents of NODES answer (the guests have booted)."""
        deadline = time.monotonic() + timeout * self.slowdown
        for node in nodes:
            self._wait_agent(node, deadline)
            self._check_clocksource(node)

    def _check_clocksource(self, node):
        """Leases, Corosync's token and every timeout in a guest run on its
        clock. A jiffies clocksource loses every tick a loaded host does not
        deliver (a TCG guest without HPET or ACPI PM timer ends up on it, its
        TSC uncalibrated): refuse such a guest instead of testing on it."""
        path = "/sys/devices/system/clocksource/clocksource0/current_clocksource"
        r = self.exec(node, f"cat {path}", timeout=60)
        src = r.stdout.strip()
        if not r.ok or not src or "jiffies" in src:
            raise LabError(f"{self.node_name(node)}: clocksource {src or r.stderr.strip()!r}: no "
                           f"calibrated clock (kernel without ACPI/HPET?); see "
                           f"{self.console_log(node)}")

    def _wait_agent(self, node, deadline):
        name = self.node_name(node)
        while True:
            if not self.is_running(node):
                raise LabError(f"{name}: qemu exited during boot; see {self.console_log(node)}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError(f"{name}: agent did not answer before the boot deadline; "
                               f"see {self.console_log(node)}")
            try:
                self._channel(node).ping(timeout=min(left, 30))
                return
            except NodeDown:
                time.sleep(0.2)  # socket not served yet
            except LabError:
                pass  # still booting: ping again until the deadline

    # ------------------------------------------------------------- commands

    def _channel(self, node):
        return Channel(self.node_name(node), self._path(node, "agent.sock"),
                       self._path(node, "agent.lock"))

    def exec(self, node, cmd, timeout=60.0, check=False, input=None, cwd=None):
        """Run CMD (str: via sh -c; list: argv) on NODE; return a Result.

        check=True raises ExecError on a non-zero exit or a timeout.
        """
        result = self._channel(node).exec(cmd, timeout=timeout * self.slowdown, input=input,
                                          cwd=cwd)
        if check and not result.ok:
            raise ExecError(result)
        return result

    def sh(self, node, cmd, timeout=60.0, input=None):
        """Run CMD on NODE, require success, return its stdout."""
        return self.exec(node, cmd, timeout=timeout, check=True, input=input).stdout

    def spawn(self, node, cmd, log=None, cwd=None):
        """Start CMD on NODE in the background (own session); return its guest pid.

        Output goes to LOG (a guest path, e.g. /lab/node1/x.log) or /dev/null.
        """
        return self._channel(node).spawn(cmd, log=log, cwd=cwd)

    # --------------------------------------------------------------- faults

    def _pid(self, node):
        try:
            with open(self._path(node, "qemu.pid")) as f:
                return int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    def is_running(self, node):
        pid = self._pid(node)
        return pid is not None and pid_alive(pid, self._marker(node))

    def kill(self, node):
        """Power cut: SIGKILL the node's qemu and wait until it is gone."""
        pid = self._pid(node)
        if pid is None or not pid_alive(pid, self._marker(node)):
            raise NodeDown(f"{self.node_name(node)} is not running")
        # Also a stopped qemu-nbd of a hung path (its export name has the marker).
        pids = [pid] + [p for p in self._our_qemu_pids(node) if p != pid]
        kill_and_wait(pids, f"qemu of {self.node_name(node)} (pid {pid}) to die")

    def restart(self, node, timeout=300):
        """Power-cycle NODE (kill if running), boot it again, wait for its agent.

        Network partitions persist across a restart; a cut storage path does
        not (the new qemu has a fresh block graph). Corosync is not restarted.
        """
        if self.is_running(node):
            self.kill(node)
        self._start_vm(node)
        self.wait_ready([node], timeout)

    def cut_path(self, node, disk=None, hang=False):
        """Make NODE's shared disk(s) fail every read and write with EIO,
        or with HANG=True never complete them (a hung path; heal_path
        lets them complete).

        Host side (QMP), invisible to the guest as a device change: a node is
        put between the raw node and the image file. For errors a blkdebug
        node, with iotype set on each rule so flushes still succeed and
        heal_path can reopen (LAB-NOTES). For a hang an NBD client node whose
        server (qemu-nbd on the same image) is SIGSTOPped.
        """
        for k in self._disks(disk):
            if hang:
                self._start_hung_nbd(node, k)
                child = f"hang{k}"
            else:
                rules = [{"event": "read_aio", "iotype": "read", "errno": 5},
                         {"event": "write_aio", "iotype": "write", "errno": 5}]
                self._qmp(node, "blockdev-add", driver="blkdebug", image=f"f{k}",
                          **{"node-name": f"cut{k}", "inject-error": rules})
                child = f"cut{k}"
            self._qmp(node, "blockdev-reopen",
                      options=[{"driver": "raw", "node-name": f"d{k}", "file": child}])
            if hang:
                os.kill(self._nbd_pid(node, k), signal.SIGSTOP)

    def _start_hung_nbd(self, node, k):
        """qemu-nbd serving disk K to NODE's qemu over a unix socket in the run dir."""
        sock = self._path(node, f"nbd{k}.sock")
        image = (f"driver=raw,file.driver=file,file.filename={self._disk_image(k)},"
                 "file.locking=off,file.aio=threads,file.cache.direct=on")
        # The export name carries the marker so that down() finds the process.
        proc = subprocess.run(["qemu-nbd", "--fork", "--persistent", "--shared=0",
                               "--image-opts", image, "-x", self._marker(node),
                               "-k", sock, "--pid-file", self._path(node, f"nbd{k}.pid")],
                              capture_output=True, text=True)
        if proc.returncode:
            raise LabError(f"qemu-nbd for {self.node_name(node)} failed: {proc.stderr.strip()}")
        self._qmp(node, "blockdev-add", driver="nbd", export=self._marker(node),
                  server={"type": "unix", "path": sock}, **{"node-name": f"hang{k}"})

    def _nbd_pid(self, node, k):
        with open(self._path(node, f"nbd{k}.pid")) as f:
            return int(f.read().strip())

    def heal_path(self, node, disk=None):
        """Undo cut_path: reopen the raw node on the file, drop the filter node."""
        present = self._block_nodes(node)
        for k in self._disks(disk):
            if f"hang{k}" in present:
                # Let the stalled requests complete first: reopen drains them.
                pid = self._nbd_pid(node, k)
                os.kill(pid, signal.SIGCONT)
            for child in (f"cut{k}", f"hang{k}"):
                if child not in present:
                    continue  # never cut, or the VM restarted since
                self._qmp(node, "blockdev-reopen",
                          options=[{"driver": "raw", "node-name": f"d{k}", "file": f"f{k}"}])
                self._qmp(node, "blockdev-del", **{"node-name": child})
            if f"hang{k}" in present:
                kill_and_wait([pid], f"qemu-nbd of {self.node_name(node)} to exit",
                              signal.SIGTERM)
                os.unlink(self._path(node, f"nbd{k}.pid"))

    def path_is_cut(self, node, disk=0):
        """True while disk DISK of NODE fails (cut) or hangs."""
        present = self._block_nodes(node)
        return f"cut{disk}" in present or f"hang{disk}" in present

    def _block_nodes(self, node):
        return {n["node-name"] for n in self._qmp(node, "query-named-block-nodes")}

    def _qmp(self, node, command, **arguments):
        return qmp(self._path(node, "qmp.sock"), command, **arguments)

    def _disks(self, disk):
        if disk is None:
            return range(self.n_disks)
        if not 0 <= int(disk) < self.n_disks:
            raise LabError(f"no disk {disk} (the lab has {self.n_disks})")
        return [int(disk)]

    def partition(self, node):
        """Cut NODE off the lab network (its tap goes down; the guest sees no change)."""
        netns.set_link(self.netns, self.index(node), up=False)

    def heal(self, node):
        """Undo partition."""
        netns.set_link(self.netns, self.index(node), up=True)

    def is_partitioned(self, node):
        return not netns.link_is_up(self.netns, self.index(node))

    def delay(self, node, ms, loss_pct=0.0, jitter_ms=0):
        """Add latency (and loss) to NODE's outgoing packets with netem in the guest."""
        spec = f"delay {ms}ms" + (f" {jitter_ms}ms" if jitter_ms else "")
        if loss_pct:
            spec += f" loss {loss_pct}%"
        self.sh(node, f"modprobe sch_netem && tc qdisc replace dev eth0 root netem {spec}")

    def clear_delay(self, node):
        self.exec(node, "tc qdisc del dev eth0 root")

    # ------------------------------------------------------------- corosync

    def corosync(self, token_ms=5000, timeout=180):
        """Configure and start Corosync on every running node; wait until quorate."""
        start = time.monotonic()
        self.write_corosync_config(token_ms)
        running = [n for n in self.nodes if self.is_running(n)]
        # In parallel: each start costs seconds under TCG (memory locking, crypto).
        with ThreadPoolExecutor(len(running)) as pool:
            list(pool.map(self.start_corosync, running))
        self.wait_quorate(running, members=running, timeout=timeout)
        self.timings["quorate_s"] = round(time.monotonic() - start, 1)

    def write_corosync_config(self, token_ms=5000):
        keydir = os.path.join(self.run_dir, "corosync")
        os.makedirs(keydir, exist_ok=True)
        key = os.path.join(keydir, "authkey")
        if not os.path.exists(key):
            proc = subprocess.run(["corosync-keygen", "-k", key], capture_output=True, text=True)
            if proc.returncode:
                raise LabError(f"corosync-keygen failed: {proc.stderr.strip()}")
        members = [(self.index(n), n, self.addr(n)) for n in self.nodes]
        for node in self.nodes:
            text = corosync.config(f"csvlab-{self.name}", members, node,
                                   keyfile="/lab/corosync/authkey",
                                   logfile=f"/lab/{node}/corosync.log", token_ms=token_ms)
            with open(self._path(node, "corosync.conf"), "w") as f:
                f.write(text)

    def start_corosync(self, node, lock_memory=False):
        """Start Corosync on NODE (configured by corosync() or write_corosync_config()).

        Without CAP_IPC_LOCK Corosync's mlockall() fails (a logged warning) and
        it starts in ~2 s instead of stalling ~10 s under TCG while every
        mapped library page is read in over 9p. Guests have no swap, so the
        lock would buy nothing here. LOCK_MEMORY=True keeps the stock behaviour.
        """
        name = self.node_name(node)
        drop = "" if lock_memory else "setpriv --bounding-set -ipc_lock --inh-caps -ipc_lock "
        self.sh(node, f"{drop}corosync -c /lab/{name}/corosync.conf", timeout=60)

    def stop_corosync(self, node):
        self.exec(node, "corosync-cfgtool -H --force || kill $(cat /run/corosync.pid)",
                  timeout=60)

    def quorum(self, node):
        """NODE's view: Quorum(quorate, members) or None if Corosync does not answer."""
        try:
            result = self.exec(node, "corosync-quorumtool -s", timeout=20)
        except LabError:
            return None
        # It exits non-zero when not quorate, and can fail during transitions.
        return corosync.parse_quorumtool(result.stdout)

    def wait_quorate(self, nodes, members=None, timeout=180):
        """Wait until every node in NODES is quorate (with exactly MEMBERS, if given)."""
        want = sorted(self.index(m) for m in members) if members is not None else None

        def all_agree():
            for node in nodes:
                q = self.quorum(node)
                if q is None or not q.quorate or (want is not None and q.members != want):
                    return False
            return True

        wait_until(all_agree, timeout, f"{', '.join(map(str, nodes))} quorate"
                   + (f" with members {want}" if want else ""), interval=1.0)

    # ----------------------------------------------------------- inspection

    def allow_kernel_log(self, regex):
        """Stop reporting console lines matching REGEX (e.g. a hung-task warning
        that a test provokes on purpose with cut_path(hang=True))."""
        self.allowed_problems.append(re.compile(regex))

    def kmemleak_scan(self, nodes=None, timeout=600):
        """On running nodes whose kernel has kmemleak: scan twice (an object
        must look unreferenced in two scans 5 s apart to be reported). Leaks
        go to the console log as "unreferenced object" lines (verbose mode,
        see guest/stage2.sh), which kernel_log_problems reports. Returns the
        nodes scanned."""
        running = [n for n in (nodes or self.nodes) if self.is_running(n)]
        if not running:
            return []

        def scan(node):  # minutes per node in a loaded TCG guest: in parallel
            return self.exec(node, "f=/sys/kernel/debug/kmemleak; [ -w $f ] || exit 3; "
                                   "echo scan > $f && sleep 6 && echo scan > $f",
                             timeout=timeout)

        scanned = []
        with ThreadPoolExecutor(len(running)) as pool:
            for node, res in zip(running, pool.map(scan, running)):
                if res.rc == 0:
                    scanned.append(self.node_name(node))
                elif res.rc != 3:
                    raise LabError(f"{self.node_name(node)}: kmemleak scan failed: {res}")
        return scanned

    def kernel_log_problems(self, node=None):
        """Oops/BUG/WARNING/GPF/lockup/hung-task lines of the console logs,
        as "nodeN: line", minus those allowed with allow_kernel_log."""
        problems = []
        for n in [node] if node else self.nodes:
            try:
                with open(self.console_log(n), errors="replace") as f:
                    problems += [f"{self.node_name(n)}: {line.rstrip()}" for line in f
                                 if KERNEL_PROBLEMS.search(line)
                                 and not any(a.search(line) for a in self.allowed_problems)]
            except FileNotFoundError:
                pass
        return problems

    def status(self):
        """One dict per node: name, addr, running, pid, partitioned."""
        rows = []
        for node in self.nodes:
            rows.append({"node": node, "addr": self.addr(node), "running": self.is_running(node),
                         "pid": self._pid(node),
                         "partitioned": netns.exists(self.netns) and self.is_partitioned(node)})
        return rows

    # ----------------------------------------------------------------- down

    def down(self, keep_logs=False):
        """Kill every VM, remove the namespace (taps, bridge), images, run dir.

        Works after a crash: VMs are also found by the marker in their command
        line, not only by pidfile. KEEP_LOGS keeps the *.log files.
        """
        kill_and_wait(self._our_qemu_pids(), f"the VMs of lab {self.name} to die")
        netns.delete(self.netns)
        if keep_logs:
            self._remove_all_but_logs()
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _our_qemu_pids(self, node=None):
        """Pids of our qemu (and qemu-nbd) processes, of NODE or of the whole lab."""
        marker = self._marker(node)
        return [int(p) for p in os.listdir("/proc")
                if p.isdigit() and pid_alive(int(p), marker)]

    def _remove_all_but_logs(self):
        for dirpath, _, files in os.walk(self.run_dir, topdown=False):
            for fname in files:
                if not fname.endswith(".log"):
                    os.unlink(os.path.join(dirpath, fname))
            if not os.listdir(dirpath):
                os.rmdir(dirpath)
