"""Operating csvfs in a 3-node lab: every csvctl command against the real
cluster state (table and --json), backup mode with a snapshot command that
runs while the lower filesystem is frozen and only after every node's kernel
confirmed FileRedirected, mount.csvfs errors, the OCF agent (ocf-tester when
installed), Pacemaker + pcs cloning the agent on the three nodes (monitor
repairs a lost mount, disable/enable), and an /etc/fstab line honoured when
a node boots (docs/operations.md says how the lab plays systemd's part)."""
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time

import pytest

from test_direct import (CSVCTL, DEV, KO, CSVD, MNT, NODES, VOL, setup_cluster, sh, volume,
                         wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MOUNT = os.path.join(REPO, "build", "tools", "mount.csvfs")
OCF = os.path.join(REPO, "tools", "ocf", "csvfs")
CTL = f"{CSVCTL} --socket /run/csvd/control.sock"

pytestmark = pytest.mark.lab(nodes=3, disk_size="2G")

FSTAB = (f"{DEV}  {MNT}  csvfs  volume={VOL},_netdev,x-systemd.requires=csvd.service,nofail  0 0")
SERVICE = os.path.join(REPO, "tools", "csvd.service")


def timed(what, t0):
    print(f"\n[timing] {what}: {time.monotonic() - t0:.1f} s", flush=True)


def install_tools(lab, node):
    """csvctl, mount.csvfs (+ umount.csvfs) and the agent where a package puts
    them, as copies in the guest's overlay: a binary run straight from 9p
    crashes if it is rebuilt while the guest has it mapped."""
    build = os.path.join(REPO, "build", "tools")
    sh(lab, node, f"install -m 755 {build}/csvctl /usr/sbin/csvctl && "
                  f"install -m 755 {build}/mount.csvfs /sbin/mount.csvfs && "
                  "ln -sf mount.csvfs /sbin/umount.csvfs && "
                  f"install -D -m 755 {OCF} /usr/lib/ocf/resource.d/csv/csvfs")


def mounted(lab, node, where=MNT):
    return lab.exec(node, f"grep -q ' {where} csvfs ' /proc/mounts").ok


def test_csvd_service_unit_verifies():
    """systemd-analyze verify of tools/csvd.service (host; csvd need not be installed)."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    text = open(SERVICE).read()
    assert "--config /etc/csv/csvd.conf" in text
    with tempfile.TemporaryDirectory() as d:
        # verify wants ExecStart to exist: point it at any executable
        with open(os.path.join(d, "csvd.service"), "w") as f:
            f.write(text.replace("/usr/sbin/csvd", "/bin/true"))
        r = subprocess.run(["systemd-analyze", "verify", os.path.join(d, "csvd.service")],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "csvd.service" not in r.stderr, r.stderr


@pytest.fixture(scope="module")
def cluster(lab):
    if not (os.path.exists(KO) and os.access(CSVD, os.X_OK) and os.access(MOUNT, os.X_OK)):
        pytest.skip("csvfs.ko, csvd or mount.csvfs not built")
    setup_cluster(lab, mount_nodes=[])
    for n in NODES:  # mount.csvfs, the default mount point
        sh(lab, n, f"{MOUNT} {VOL}")
    if pacemaker_installed() and lab.slowdown == 1:
        start_pacemaker(lab)  # for test_pacemaker_clone, started early: slow under TCG
    yield lab
    for n in NODES:
        lab.exec(n, f"umount {MNT}", timeout=60)


def wait_s(lab):
    """csvctl's --wait: its default 60 s, scaled like wait_for (a move under
    the debug kernel took 100 s, most of it the XFS mount)."""
    return int(60 * lab.slowdown)


def ctl(lab, node, args, ok=True):
    r = lab.exec(node, f"{CTL} {args}", timeout=300)  # scaled by lab.slowdown
    if ok:
        assert r.ok, f"csvctl {args}: rc={r.rc}\n{r.stdout}\n{r.stderr}"
    return r


def ctl_json(lab, node, args):
    return json.loads(ctl(lab, node, f"--json {args}").stdout)


def modes(lab, node):
    return {n["id"]: (n["io_mode"], n["reason"]) for n in volume(lab, node)["nodes"]}


def test_status_table_and_json_agree(cluster):
    lab = cluster
    s = ctl_json(lab, "node2", "status")
    assert s["node"] == 2 and s["quorate"] and sorted(s["members"]) == [1, 2, 3]
    v = [v for v in s["volumes"] if v["name"] == VOL][0]
    assert v["coordinator"] == 1 and v["ready"]
    assert {n["id"] for n in v["nodes"]} == {1, 2, 3}
    assert all(n["io_mode"] == "Direct" and n["lease"] == "valid" for n in v["nodes"])
    table = ctl(lab, "node2", "status").stdout
    assert f"{VOL} " in table and "Direct" in table and "online" in table
    assert f"  {v['epoch']} " in table or f" {v['epoch']} " in table


def test_nodes_and_volume_list_show(cluster):
    lab = cluster
    nodes = ctl_json(lab, "node3", "nodes")["nodes"]
    assert [n["id"] for n in nodes] == [1, 2, 3] and all(n["member"] for n in nodes)
    assert "LEASE" in ctl(lab, "node3", "nodes").stdout
    vols = ctl_json(lab, "node3", "volume list")["volumes"]
    assert [v["name"] for v in vols] == [VOL]
    uuid = sh(lab, "node1", f"blkid -s UUID -o value {DEV}").strip()
    assert vols[0]["uuid"] == uuid
    show = ctl_json(lab, "node3", f"volume show {VOL}")
    assert show["uuid"] == uuid and show["coordinator"] == 1
    assert uuid in ctl(lab, "node3", "volume list").stdout
    r = ctl(lab, "node3", "volume show Nope", ok=False)
    assert r.rc == 1 and "no volume Nope" in r.stderr


def set_redirect(lab, node, on):
    """`csvctl redirect` on NODE, then wait until every node's own csvd reports
    that mode (csvctl waited for NODE's view of them; each csvd applies the
    replicated flag on its own, at CPG delivery)."""
    out = ctl_json(lab, node, f"redirect {VOL} {'on' if on else 'off'}")
    assert out["redirected"] == on
    want = {("FileRedirected", "user request")} if on else {("Direct", "none")}
    for n in NODES:
        wait_for(lambda n=n: set(modes(lab, n).values()) == want, 30, f"{want} seen by {n}")


def test_redirect_on_off(cluster):
    lab = cluster
    set_redirect(lab, "node2", True)
    # I/O still works, redirected
    sh(lab, "node3", f"dd if=/dev/zero of={MNT}/redir bs=1M count=4 oflag=direct status=none")
    assert "redirect" in ctl(lab, "node1", "status").stdout
    set_redirect(lab, "node2", False)


def test_backup_freezes_while_exec_runs(cluster):
    lab = cluster
    # The snapshot command (on node3) records the status it sees, starts a
    # write into the volume in the background (blocked while frozen) and
    # sleeps 6 s: the write must end after the command.
    check = (f"{CTL} --json status > /tmp/backup-status.json; echo $CSV_VOLUME > /tmp/backup-env; "
             f"(dd if=/dev/zero of={MNT}/during bs=64k count=1 oflag=direct conv=fsync "
             "status=none; date +%s.%N > /tmp/write-done) & sleep 6; date +%s.%N > /tmp/backup-exec-end")
    out = ctl_json(lab, "node3",
                   f"backup begin {VOL} --wait {wait_s(lab)} --exec {shlex.quote(check)}")
    assert out["ok"] and out["coordinator"] == 3
    assert out["exec"]["exit_status"] == 0 and out["exec"]["thawed"]
    assert out["exec"]["frozen_ms"] >= 6000
    st = json.loads(sh(lab, "node3", "cat /tmp/backup-status.json"))
    v = [v for v in st["volumes"] if v["name"] == VOL][0]
    assert v["frozen_here"] and v["backup_node"] == 3
    assert {(n["io_mode"], n["reason"]) for n in v["nodes"]} == {("FileRedirected", "backup")}
    assert sh(lab, "node3", "cat /tmp/backup-env").strip() == VOL
    # the write from node2 completed only after the thaw
    wait_for(lambda: lab.exec("node3", "cat /tmp/write-done").ok, 60, "write after thaw")
    done = float(sh(lab, "node3", "cat /tmp/write-done"))
    end = float(sh(lab, "node3", "cat /tmp/backup-exec-end"))
    assert done >= end, (done, end)
    for n in NODES:
        assert set(modes(lab, n).values()) == {("FileRedirected", "backup")}
    r = ctl(lab, "node1", f"move {VOL} 1", ok=False)
    assert r.rc == 1 and "backup" in r.stderr
    ctl(lab, "node3", f"backup end {VOL} --wait {wait_s(lab)}")
    for n in NODES:
        wait_for(lambda n=n: set(modes(lab, n).values()) == {("Direct", "none")}, 30,
                 f"Direct on {n} after backup end")
    assert volume(lab, "node1")["backup_node"] == 0


def test_backup_exec_failure_and_move_back(cluster):
    lab = cluster
    r = ctl(lab, "node1", f"backup begin {VOL} --wait {wait_s(lab)} --exec false", ok=False)
    assert r.rc == 5 and "backup end" in r.stderr
    ctl(lab, "node1", f"backup end {VOL} --wait {wait_s(lab)}")
    out = json.loads(ctl(lab, "node1", f"--json move {VOL} 1 --wait {2 * wait_s(lab)}").stdout)
    assert out["coordinator"] == 1


def test_backup_waits_for_every_kernel(cluster):
    """backup begin freezes only once every node's kernel took FileRedirected:
    node2's csvd is stopped (SIGSTOP), so its kernel cannot be told."""
    lab = cluster
    assert volume(lab, "node1")["coordinator"] == 1
    sh(lab, "node1", "rm -f /tmp/ran /tmp/frozen-at /tmp/begin.out")
    sh(lab, "node2", "kill -STOP $(pidof csvd)")
    try:
        t0 = time.monotonic()
        r = ctl(lab, "node1", f"backup begin {VOL} --confirm-timeout 5 --exec 'touch /tmp/ran'",
                ok=False)
        timed("backup begin refused after --confirm-timeout 5", t0)
        assert r.rc == 4, (r.rc, r.stdout, r.stderr)
        assert "node 2 (Direct at epoch" in r.stderr and "Nothing was frozen" in r.stderr, r.stderr
        assert f"csvctl backup end {VOL}" in r.stderr
        assert lab.exec("node1", "test -e /tmp/ran").rc != 0, "the command ran without the confirm"
        # csvd itself refuses to freeze before the confirmation
        r = lab.exec("node1", "echo '{\"cmd\":\"freeze\",\"volume\":\"%s\"}' | "
                              "socat -t5 - UNIX-CONNECT:/run/csvd/control.sock" % VOL)
        assert "not every node's kernel has confirmed FileRedirected" in r.stdout, r.stdout
        # begin again; it waits until node2 is resumed, then freezes
        lab.spawn("node1", f"{CTL} --json backup begin {VOL} --wait {wait_s(lab)} "
                           f"--confirm-timeout {2 * wait_s(lab)} "
                           "--exec 'date +%s.%N > /tmp/frozen-at' > /tmp/begin.out 2>&1; "
                           "echo rc=$? >> /tmp/begin.out")
        wait_for(lambda: lab.exec("node1", "pgrep -f 'backup begin'").ok, 30, "begin started")
        wait_for(lambda: "node 2" in volume(lab, "node1")["kernels_not_redirected"], 30,
                 "begin waiting for node 2")
        # Whatever the timing, the freeze cannot come before node2 resumes;
        # 2 s more make it likely that begin is in its confirm loop by then.
        time.sleep(2)
        assert lab.exec("node1", "test -e /tmp/frozen-at").rc != 0
        resumed = float(sh(lab, "node1", "date +%s.%N"))
    finally:
        lab.exec("node2", "kill -CONT $(pidof csvd)")
    wait_for(lambda: "rc=" in sh(lab, "node1", "cat /tmp/begin.out"), 120, "backup begin")
    out = sh(lab, "node1", "cat /tmp/begin.out")
    assert "rc=0" in out, out
    begun = json.loads(out[:out.rindex("rc=")])
    assert begun["exec"]["exit_status"] == 0 and begun["exec"]["thawed"]
    assert {(n["kernel_mode"], n["kernel_epoch"]) for n in begun["nodes"]} == {
        ("FileRedirected", begun["epoch"])}
    assert float(sh(lab, "node1", "cat /tmp/frozen-at")) >= resumed
    ctl(lab, "node1", f"backup end {VOL} --wait {wait_s(lab)}")
    for n in NODES:
        wait_for(lambda n=n: set(modes(lab, n).values()) == {("Direct", "none")}, 30,
                 f"Direct on {n} after backup end")


def test_stats(cluster):
    lab = cluster
    # Counters are per node (requests of this node's kernel): node3 writes
    # 4 MiB under redirect here (this test must not depend on the others:
    # `csvlab debug-suite --resume` may run it alone).
    set_redirect(lab, "node1", True)
    sh(lab, "node3", f"dd if=/dev/zero of={MNT}/stats bs=1M count=4 oflag=direct status=none")
    set_redirect(lab, "node1", False)
    sh(lab, "node3", f"ls -la {MNT} >/dev/null; stat {MNT}/stats >/dev/null")
    st = ctl_json(lab, "node3", "stats")
    v = [v for v in st["volumes"] if v["name"] == VOL][0]
    assert v["metadata_ops"] > 0 and v["io_mode"] == "Direct"
    assert v["file_redirected_ios"] > 0
    assert v["file_redirected_bytes"] >= 4 << 20  # at least the 4 MiB dd under redirect
    out = ctl(lab, "node3", "--json stats --watch --interval 0.2 --count 3").stdout
    assert len([l for l in out.splitlines() if l.startswith("{")]) == 3
    assert "METADATA" in ctl(lab, "node3", "stats").stdout


def test_errors_and_exit_codes(cluster):
    lab = cluster
    r = lab.exec("node1", f"{CSVCTL} --socket /run/nothing.sock status")
    assert r.rc == 3 and "csvd is not running on this node" in r.stderr
    assert "systemctl start csvd" in r.stderr
    assert lab.exec("node1", f"{CTL} redirect {VOL} sideways").rc == 2
    r = lab.exec("node1", f"{CTL} keygen /tmp/k1 && {CTL} keygen /tmp/k1; echo rc=$?")
    assert "rc=1" in r.stdout and "exists" in r.stderr
    assert sh(lab, "node1", "stat -c '%a %s' /tmp/k1").split() == ["600", "32"]
    # csvd's config: /etc/csv/csvd.conf; the old /etc/csvfs/csvd.json is read
    # with a warning (this one fails further on: no cluster key there)
    r = lab.exec("node1", f"{CSVD} --foreground", timeout=60)
    assert r.rc == 2 and "cannot read /etc/csv/csvd.conf" in r.stderr, r.stderr
    assert "docs/operations.md" in r.stderr
    legacy = {"nodes": [{"id": 1, "addr": "127.0.0.1", "port": 7499}], "group": "csvd-legacy",
              "kernel": False, "private_mounts": False, "run_dir": "/tmp/legacy",
              "state_dir": "/tmp/legacy"}
    sh(lab, "node1", f"mkdir -p /etc/csvfs && echo '{json.dumps(legacy)}' > /etc/csvfs/csvd.json")
    try:
        # csvd exits by itself (no cluster key); the timeout only guards a
        # hang. Not 20 s: a debug guest on a busy host takes 30+ s to start
        # csvd at all (34 s measured just to fail on the missing config).
        guard = 60 * lab.slowdown
        r = lab.exec("node1", f"timeout {guard} {CSVD} --foreground", timeout=90)
        assert "reading /etc/csvfs/csvd.json (deprecated: move it to /etc/csv/csvd.conf)" \
            in r.stderr, r.stderr
        assert r.rc != 0 and "/etc/csv/cluster.key" in r.stderr, (r.rc, r.stderr)
    finally:
        lab.exec("node1", "rm -rf /etc/csvfs /tmp/legacy")


def test_mount_helper_errors(cluster):
    lab = cluster
    r = lab.exec("node2", f"{MOUNT} NoSuchVolume /mnt")
    assert r.rc == 32 and "no volume NoSuchVolume" in r.stderr
    r = lab.exec("node2", f"{MOUNT} {DEV} /mnt")
    assert r.rc == 1 and "volume=NAME" in r.stderr
    # once per node: node2 has it at the default point already
    r = lab.exec("node2", f"{MOUNT} {VOL} /mnt")
    assert r.rc == 32 and f"already mounted on this node at {MNT}" in r.stderr, r.stderr
    assert lab.exec("node2", "grep -q ' /mnt csvfs' /proc/mounts").rc != 0
    # a device that is not the volume's
    # (ext4: mkfs.xfs >= 5.19 refuses filesystems under 300 MB; guests have
    # no static /dev/loop-control node, so load loop first)
    sh(lab, "node2", "modprobe loop && truncate -s 64M /tmp/other.img && "
                     "mkfs.ext4 -q -F /tmp/other.img && "
                     "losetup -f --show /tmp/other.img > /tmp/loopdev")
    loop = sh(lab, "node2", "cat /tmp/loopdev").strip()
    try:
        r = lab.exec("node2", f"{MOUNT} {loop} /mnt -o volume={VOL}")
        assert r.rc == 32 and f"not volume {VOL}" in r.stderr
    finally:
        lab.exec("node2", f"losetup -d {loop}")
    r = lab.exec("node2", f"CSV_MOUNT_TIMEOUT=1 CSVD_CONTROL_SOCKET=/run/none.sock "
                          f"{MOUNT} {VOL} /mnt")
    assert r.rc == 32 and "csvd is not running" in r.stderr
    # umount detaches, the helper mounts again at the default point
    sh(lab, "node3", f"umount {MNT}")
    assert lab.exec("node3", f"grep -q ' {MNT} csvfs' /proc/mounts").rc != 0
    sh(lab, "node3", f"{MOUNT} {VOL} && grep -q ' {MNT} csvfs' /proc/mounts")


def test_ocf_agent(cluster):
    lab = cluster
    env = (f"OCF_ROOT=/usr/lib/ocf OCF_RESKEY_volume={VOL} OCF_RESKEY_directory=/mnt/ocf "
           f"PATH={os.path.dirname(MOUNT)}:$PATH")
    # csvfs mounts a volume once per node: the agent mounts it at /mnt/ocf,
    # so node2's mount at the default point goes first.
    sh(lab, "node2", f"umount {MNT}")
    sh(lab, "node2", f"{OCF} meta-data | grep -q 'resource-agent name=\"csvfs\"'")
    assert lab.exec("node2", f"{env} {OCF} validate-all").rc == 0
    assert lab.exec("node2", f"OCF_ROOT=/usr/lib/ocf {OCF} validate-all").rc == 6
    assert lab.exec("node2", f"{env} {OCF} monitor").rc == 7
    assert lab.exec("node2", f"{env} {OCF} start").rc == 0
    assert lab.exec("node2", f"{env} {OCF} monitor").rc == 0
    sh(lab, "node2", "umount /mnt/ocf")  # killed mount: monitor notices
    assert lab.exec("node2", f"{env} {OCF} monitor").rc == 7
    assert lab.exec("node2", f"{env} {OCF} start").rc == 0
    assert lab.exec("node2", f"{env} {OCF} stop").rc == 0
    assert lab.exec("node2", f"{env} {OCF} stop").rc == 0
    if not shutil.which("ocf-tester"):
        pytest.skip("ocf-tester not installed (resource-agents)")
    r = lab.exec("node2", f"PATH={os.path.dirname(MOUNT)}:$PATH ocf-tester -n vol "
                          f"-o volume={VOL} -o directory=/mnt/ocf {OCF}", timeout=300)
    assert r.ok and "passed all tests" in r.stdout, r.stdout + r.stderr


# ---- Pacemaker + pcs ---------------------------------------------------------
#
# The guests have no init system: pacemakerd is started by hand on the lab's
# Corosync (the same instance csvd uses; corosync.conf copied to
# /etc/corosync for pcs), by the cluster fixture so that its slow start under
# TCG overlaps the other tests (in a debug-kernel lab by test_pacemaker_clone
# itself, see below). pcs needs no pcsd for resource commands, but
# one pcs command costs 1-5 min in a TCG guest (Python importing pcs), so the
# test runs pcs on the host against a copy of the cluster's CIB (`pcs -f`,
# the agent installed in a private mount namespace so that pcs validates the
# parameters against its metadata) and pushes the configuration with
# cibadmin, as `pcs cluster cib-push --config` does. CSV_TEST_PCS_IN_GUEST=1
# runs the same pcs commands inside node1 instead (docs/operations.md).

PCS_IN_GUEST = os.environ.get("CSV_TEST_PCS_IN_GUEST") == "1"


def pacemaker_installed():
    return all(shutil.which(t) for t in ("pacemakerd", "pcs", "crm_mon", "cibadmin"))


# pacemakerd (2.1.5) SIGKILLs a subdaemon whose IPC endpoint is not up after 5
# checks, ~30 s, and starts it again. A debug-kernel guest (one TCG vCPU,
# lockdep) starting all six at once never gets there: in the debug lab
# pacemakerd respawned them for an hour (287 times on node1) while
# pacemaker-based alone, on a quiet guest, is up in 8-10 s; and that storm
# starved everything else (csvd renewed a lease 280 s late, ocf-tester ran out
# of its 900 s). So slow labs start the subdaemons one at a time, each once
# the previous one serves, and pacemakerd last: pacemakerd tracks subdaemons
# that already serve ("Tracking existing ... process") and starts none.
# The controller is staged too: started by pacemakerd it was still joining
# the cluster, its IPC not up, at the 5th check, and its SIGKILL set off the
# storm again (48 respawns on node1 in 13 min). And a debug lab starts
# Pacemaker only when test_pacemaker_clone runs: started by the fixture, its
# checks timed out (2 s each) while the other tests loaded the guests.
# The Debian-kernel lab starts pacemakerd alone, as a unit would.
PCMK_SUBDAEMONS = [  # (subdaemon, user, the IPC endpoint pacemakerd checks)
    ("pacemaker-based", "hacluster", "cib_ro"),
    ("pacemaker-fenced", "root", "stonith-ng"),
    ("pacemaker-execd", "root", "lrmd"),
    ("pacemaker-attrd", "hacluster", "attrd"),
    ("pacemaker-schedulerd", "hacluster", "pengine"),
    ("pacemaker-controld", "hacluster", "crmd"),
]


def staged_pacemaker_start(lab):
    """A shell script: the subdaemons one by one, then pacemakerd (see above)."""
    deadline = int(300 * lab.slowdown)
    # pacemakerd lets haclient's processes use Corosync (a CMAP uidgid key)
    # before it starts its subdaemons; these start before it, so set it here.
    steps = ["corosync-cmapctl -s uidgid.gid.$(getent group haclient | cut -d: -f3) u8 1"]
    for daemon, user, ipc in PCMK_SUBDAEMONS:
        run = f"/usr/lib/pacemaker/{daemon}"
        if user != "root":
            run = f"setpriv --reuid={user} --regid=haclient --init-groups {run}"
        # libqb serves IPC on an abstract socket named after the endpoint
        # (/proc/net/unix shows NUL padding of the name as '@')
        # (in a subshell: init, not pacemakerd exec'd below, is its parent)
        steps.append(f"(setsid {run} </dev/null >/dev/null 2>&1 &); t=0; "
                     f"until grep -Eq ' @{ipc}@*$' /proc/net/unix; do "
                     f"[ $t -lt {deadline} ] || {{ echo '{daemon}: no @{ipc} after {deadline} s'; "
                     "exit 1; }; sleep 1; t=$((t+1)); done; "
                     f"echo '{daemon}: serving after '$t' s'")
    # pacemakerd probes each subdaemon it finds once, with a 2 s timeout; a
    # controller still busy joining or electing misses it, and pacemakerd
    # starts a second controller (it exits, "already active") and keeps no
    # PID, so `pacemakerd --shutdown` later waits forever (session 13). So
    # pacemakerd starts only once this node's controller has settled in a
    # cluster of all three (no join left to make a DC busy).
    settled = ("crmadmin -q -t 5000 -S $(uname -n) 2>&1 | grep -Eq 'S_IDLE|S_NOT_DC' && "
               "[ $(cibadmin -Q -o status 2>/dev/null | grep -c "
               "'<node_state.*crmd=\"online\".*join=\"member\"') -eq 3 ]")
    steps.append(f"t=0; until {settled}; do [ $t -lt {deadline} ] || "
                 f"{{ echo 'controller: not settled in 3 nodes after {deadline} s'; exit 1; }}; "
                 "sleep 2; t=$((t+2)); done; echo 'controller: settled after '$t' s'")
    steps.append("exec pacemakerd")
    return "; ".join(steps)


def start_pacemaker(lab):
    for n in NODES:
        install_tools(lab, n)
        sh(lab, n, f"cp /lab/{n}/corosync.conf /etc/corosync/corosync.conf && "
                   "mkdir -p /var/log/pacemaker && chown hacluster:haclient /var/log/pacemaker")
        start = (f"sh -c {shlex.quote(staged_pacemaker_start(lab))}" if lab.slowdown > 1
                 else "pacemakerd")
        lab.spawn(n, f"PCMK_logfile=/lab/{n}/pacemaker.log {start}",
                  log=f"/lab/{n}/pacemakerd.out")


def pcs(lab, args):
    """`pcs ARGS` on the cluster (see above)."""
    if PCS_IN_GUEST:
        return sh(lab, "node1", f"pcs {args}", timeout=900)
    d = os.path.join(lab.run_dir, "pcmk")
    ra = os.path.join(d, "resource.d")
    if not os.path.isdir(os.path.join(ra, "csv")):
        shutil.copytree("/usr/lib/ocf/resource.d", ra, symlinks=True, dirs_exist_ok=True)
        os.makedirs(os.path.join(ra, "csv"), exist_ok=True)
        shutil.copy2(OCF, os.path.join(ra, "csv", "csvfs"))
    sh(lab, "node1", "mkdir -p /lab/pcmk && cibadmin --query > /lab/pcmk/cib.xml")
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount --bind {ra} /usr/lib/ocf/resource.d && exec pcs -f {d}/cib.xml {args}"],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"pcs -f ... {args}: {r.stdout}{r.stderr}"
    # pcs cluster cib-push --config: replace the configuration section only
    import xml.etree.ElementTree as ET
    conf = ET.parse(os.path.join(d, "cib.xml")).getroot().find("configuration")
    ET.ElementTree(conf).write(os.path.join(d, "conf.xml"))
    sh(lab, "node1", "cibadmin --replace --scope configuration --xml-file /lab/pcmk/conf.xml")
    return r.stdout


def crm_mon(lab, node="node1"):
    return lab.exec(node, "crm_mon -1 -r", timeout=60).stdout


def clone_started_everywhere(lab):
    return "Started: [ node1 node2 node3 ]" in crm_mon(lab) and all(
        mounted(lab, n) for n in NODES)


def test_pacemaker_clone(cluster):
    if not pacemaker_installed():
        pytest.skip("pacemaker, pacemaker-cli-utils or pcs not installed (tools/install-deps)")
    lab = cluster
    t0 = time.monotonic()
    # one mount per node: the clone mounts at the default point
    for n in NODES:
        lab.exec(n, f"umount {MNT}", timeout=60)
        assert not mounted(lab, n)
    if lab.slowdown > 1:
        start_pacemaker(lab)  # debug guests: while no other test loads them
    # Under TCG pacemakerd restarts slow subdaemons a few times before the
    # node settles: wait for all three online.
    wait_for(lambda: "Online: [ node1 node2 node3 ]" in crm_mon(lab), 420,
             "pacemaker online on the 3 nodes", interval=3)
    timed("waited for pacemaker: 3 nodes online", t0)
    # no fencing device in the lab (virtio disks have no SCSI-3 PR)
    sh(lab, "node1", "crm_attribute --type crm_config --name stonith-enabled --update false")

    t0 = time.monotonic()
    pcs(lab, f"resource create {VOL} ocf:csv:csvfs volume={VOL} device={DEV} "
             "op monitor interval=10s timeout=40s clone interleave=true")
    timed("pcs resource create ... clone (the command itself)", t0)
    wait_for(lambda: clone_started_everywhere(lab), 420, "the clone started on 3 nodes",
             interval=3)
    timed("pcs resource create ... clone -> mounted on 3 nodes", t0)
    res = sh(lab, "node1", "cibadmin -Q -o resources")
    assert f'<clone id="{VOL}-clone">' in res and 'type="csvfs" provider="csv"' in res, res

    # a lost mount: the monitor notices (fail-count), Pacemaker mounts again
    t0 = time.monotonic()
    sh(lab, "node2", f"umount {MNT}")
    wait_for(lambda: f"{VOL}: migration-threshold" in lab.exec(
        "node2", "crm_mon -1 --failcounts").stdout, 120, "the monitor's failure recorded",
        interval=2)
    failures = lab.exec("node2", "crm_mon -1 --failcounts").stdout
    assert "fail-count=" in failures and "node2" in failures, failures
    wait_for(lambda: mounted(lab, "node2") and clone_started_everywhere(lab), 300,
             "Pacemaker mounted node2 again", interval=2)
    timed("umount on node2 -> monitor failure -> mounted again", t0)
    sh(lab, "node1", f"crm_resource --cleanup --resource {VOL}")  # = pcs resource cleanup

    t0 = time.monotonic()
    pcs(lab, f"resource disable {VOL}-clone")
    wait_for(lambda: not any(mounted(lab, n) for n in NODES)
             and "Stopped (disabled): [ node1 node2 node3 ]" in crm_mon(lab), 300,
             "unmounted everywhere", interval=2)
    timed("pcs resource disable -> unmounted on 3 nodes", t0)
    t0 = time.monotonic()
    pcs(lab, f"resource enable {VOL}-clone")
    wait_for(lambda: clone_started_everywhere(lab), 420, "mounted again everywhere", interval=3)
    timed("pcs resource enable -> mounted on 3 nodes", t0)
    # I/O through a Pacemaker-made mount, seen on another node
    sh(lab, "node2", f"echo pacemaker > {MNT}/pcmk && sync")
    assert sh(lab, "node3", f"cat {MNT}/pcmk").strip() == "pacemaker"

    # leave: stop the clone (no pcs needed), then Pacemaker on every node
    t0 = time.monotonic()
    sh(lab, "node1", f"crm_resource --resource {VOL}-clone --meta --set-parameter target-role "
                     "--parameter-value Stopped")
    wait_for(lambda: not any(mounted(lab, n) for n in NODES), 300, "clone stopped", interval=2)
    for n in NODES:
        lab.spawn(n, "pacemakerd --shutdown")
    for n in NODES:
        wait_for(lambda n=n: lab.exec(n, "pgrep -x pacemakerd").rc != 0, 300,
                 f"pacemaker stopped on {n}", interval=2)
    timed("clone stopped, pacemaker shut down", t0)


# ---- /etc/fstab at boot ------------------------------------------------------

def test_fstab_mount_at_boot(cluster):
    """node3 reboots with the documented fstab line. The guests have no
    systemd: the test plays its boot order (local filesystems, csvfs.ko,
    corosync.service, csvd.service, then remote-fs.target's
    `mount -a -t csvfs -O _netdev`), except that the mount is started before
    csvd is up, which mount.csvfs must wait for."""
    lab = cluster
    sh(lab, "node1", f"mkdir -p {MNT} && (grep -q ' {MNT} csvfs ' /proc/mounts || "
                     f"{MOUNT} {VOL}) && echo before-reboot > {MNT}/boot-check && sync")
    t0 = time.monotonic()
    lab.restart("node3")
    timed("node3 power-cycled and booted", t0)
    t0 = time.monotonic()
    conf = json.load(open(os.path.join(lab.node_dir("node3"), "csvd.json")))
    del conf["key_file"]  # the default, /etc/csv/cluster.key
    with open(os.path.join(lab.node_dir("node3"), "csvd.conf"), "w") as f:
        json.dump(conf, f)
    install_tools(lab, "node3")
    sh(lab, "node3", "mkdir -p /etc/csv /run/csvd /tmp/csvd-state && "
                     "cp /lab/node3/csvd.conf /etc/csv/csvd.conf && "
                     "install -m 600 /lab/csvd.key /etc/csv/cluster.key && "
                     f"echo '{FSTAB}' >> /etc/fstab && "
                     f"cp {KO} /tmp/csvfs.ko && insmod /tmp/csvfs.ko")
    assert lab.exec("node3", "test -d /ClusterStorage").rc != 0  # a fresh root
    # remote-fs: mount -a of the _netdev csvfs lines, before csvd is up
    lab.spawn("node3", "CSV_MOUNT_TIMEOUT=300 mount -a -t csvfs -O _netdev "
                       "> /lab/node3/fstab-mount.log 2>&1; echo rc=$? >> /lab/node3/fstab-mount.log")
    lab.start_corosync("node3")
    # csvd.service: Restart=on-failure, RestartSec=2 (csvd exits if Corosync's
    # IPC is not up yet, which happens right after corosync daemonizes)
    loop = lab.spawn("node3", f"until {CSVD} --foreground; do sleep 2; done",  # default config
                     log="/lab/node3/csvd-boot.log")
    log = os.path.join(lab.node_dir("node3"), "fstab-mount.log")
    wait_for(lambda: "rc=" in open(log).read(), 360, "mount -a at boot", interval=2)
    assert "rc=0" in open(log).read(), open(log).read()
    timed("boot stage: corosync + csvd + mount -a -t csvfs -O _netdev", t0)
    line = sh(lab, "node3", f"grep ' {MNT} csvfs ' /proc/mounts")
    assert f"volume={VOL}" in line and "_netdev" not in line and "x-systemd" not in line, line
    assert sh(lab, "node3", f"cat {MNT}/boot-check").strip() == "before-reboot"
    s = json.loads(sh(lab, "node3", "csvctl --json status"))  # default socket, default config
    assert s["node"] == 3 and s["quorate"]
    assert "deprecated" not in open(os.path.join(lab.node_dir("node3"), "csvd-boot.log")).read()
    lab.exec("node3", f"kill {loop}")  # the restart loop, not csvd
    sh(lab, "node3", f"umount {MNT}")
