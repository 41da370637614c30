"""Operating csvfs in a 3-node lab: every csvctl command against the real
cluster state (table and --json), backup mode with a snapshot command that
runs while the lower filesystem is frozen, mount.csvfs errors, the OCF agent
(ocf-tester when installed)."""
import json
import os
import shlex
import shutil

import pytest

from test_direct import (CSVCTL, DEV, KO, CSVD, MNT, NODES, VOL, setup_cluster, sh,
                         status, volume, wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MOUNT = os.path.join(REPO, "build", "tools", "mount.csvfs")
OCF = os.path.join(REPO, "tools", "ocf", "csvfs")
CTL = f"{CSVCTL} --socket /run/csvd/control.sock"

pytestmark = pytest.mark.lab(nodes=3, disk_size="2G")


@pytest.fixture(scope="module")
def cluster(lab):
    if not (os.path.exists(KO) and os.access(CSVD, os.X_OK) and os.access(MOUNT, os.X_OK)):
        pytest.skip("csvfs.ko, csvd or mount.csvfs not built")
    setup_cluster(lab, mount_nodes=[])
    for n in NODES:  # mount.csvfs, the default mount point
        sh(lab, n, f"{MOUNT} {VOL}")
    yield lab
    for n in NODES:
        lab.exec(n, f"umount {MNT}", timeout=60)


def ctl(lab, node, args, ok=True):
    r = lab.exec(node, f"{CTL} {args}", timeout=180)
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


def test_redirect_on_off(cluster):
    lab = cluster
    out = ctl_json(lab, "node2", f"redirect {VOL} on")
    assert out["redirected"]
    # csvctl waited for node2's view; the other csvds apply the replicated
    # flag on their own (CPG delivery), so wait for each of them.
    for n in NODES:
        wait_for(lambda n=n: set(modes(lab, n).values()) == {("FileRedirected", "user request")},
                 30, f"FileRedirected (user request) seen by {n}")
    # I/O still works, redirected
    sh(lab, "node3", f"dd if=/dev/zero of={MNT}/redir bs=1M count=4 oflag=direct status=none")
    assert "redirect" in ctl(lab, "node1", "status").stdout
    ctl(lab, "node2", f"redirect {VOL} off")
    for n in NODES:
        wait_for(lambda n=n: set(modes(lab, n).values()) == {("Direct", "none")}, 30,
                 f"Direct on {n}")


def test_backup_freezes_while_exec_runs(cluster):
    lab = cluster
    # The snapshot command (on node3) records the status it sees, starts a
    # write into the volume in the background (blocked while frozen) and
    # sleeps 6 s: the write must end after the command.
    check = (f"{CTL} --json status > /tmp/backup-status.json; echo $CSV_VOLUME > /tmp/backup-env; "
             f"(dd if=/dev/zero of={MNT}/during bs=64k count=1 oflag=direct conv=fsync "
             "status=none; date +%s.%N > /tmp/write-done) & sleep 6; date +%s.%N > /tmp/backup-exec-end")
    out = ctl_json(lab, "node3", f"backup begin {VOL} --exec {shlex.quote(check)}")
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
    ctl(lab, "node3", f"backup end {VOL}")
    for n in NODES:
        wait_for(lambda n=n: set(modes(lab, n).values()) == {("Direct", "none")}, 30,
                 f"Direct on {n} after backup end")
    assert volume(lab, "node1")["backup_node"] == 0


def test_backup_exec_failure_and_move_back(cluster):
    lab = cluster
    r = ctl(lab, "node1", f"backup begin {VOL} --exec false", ok=False)
    assert r.rc == 5 and "backup end" in r.stderr
    ctl(lab, "node1", f"backup end {VOL}")
    out = json.loads(ctl(lab, "node1", f"--json move {VOL} 1 --wait 120").stdout)
    assert out["coordinator"] == 1


def test_stats(cluster):
    lab = cluster
    # Counters are per node (requests of this node's kernel): node3 did the
    # writes under redirect and backup.
    sh(lab, "node3", f"ls -la {MNT} >/dev/null; stat {MNT}/redir >/dev/null")
    st = ctl_json(lab, "node3", "stats")
    v = [v for v in st["volumes"] if v["name"] == VOL][0]
    assert v["metadata_ops"] > 0 and v["io_mode"] == "Direct"
    assert v["file_redirected_ios"] > 0  # the writes under redirect/backup
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
