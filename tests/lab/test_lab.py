"""Self-test of csvlab: a 3-node cluster, its shared disk, Corosync and faults.

The tests run in file order against one cluster (module-scoped fixture) and
build on each other's state, like a scripted session: node2 is killed, then
restarted, before node3 is partitioned. Every wait has a deadline.

Run: /usr/bin/python3 -m pytest -v tests/lab
"""
import json
import os
import subprocess
import time

import pytest

from lab import Lab, LabError, NodeDown, wait_until
from lab.core import REPO, default_runs_dir

# Failure detection follows the token (5000 ms) plus consensus; generous
# deadlines absorb TCG scheduling jitter on a 2-core host.
MEMBERSHIP_TIMEOUT = 120
TIMINGS = {}


def record(key, value):
    """Figures for docs/lab.md, written next to the run directories."""
    TIMINGS[key] = value
    path = os.path.join(default_runs_dir(), "selftest-timings.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(TIMINGS, f, indent=1)


def dd_read(lab, node, block, timeout=60):
    """O_DIRECT read of 4 KiB block BLOCK of the shared disk on NODE."""
    return lab.exec(node, f"dd if={lab.disk_path()} of=/tmp/read bs=4096 count=1 "
                          f"skip={block} iflag=direct status=none && sha256sum < /tmp/read",
                    timeout=timeout)


def test_boot(lab):
    record("boot_3_nodes_s", lab.timings["boot_s"])
    assert [r["running"] for r in lab.status()] == [True, True, True]
    for node in lab.nodes:
        assert lab.sh(node, "hostname").strip() == node
        assert lab.sh(node, "uname -r").strip() == lab.kver
        # The repo is visible at the same path (host root over 9p).
        assert lab.exec(node, f"test -f {os.path.abspath(__file__)}").ok


def guest_minus_host(lab, node):
    """NODE's wall clock minus the host's, and the uncertainty of the reading."""
    t0 = time.time()
    guest = float(lab.sh(node, "date +%s.%N"))
    t1 = time.time()
    return guest - (t0 + t1) / 2, (t1 - t0) / 2


CLOCKS = {}


def test_guest_clocks_start_with_the_host(lab):
    # Booted from QEMU's RTC (whole seconds) on a calibrated clocksource: the
    # lab refuses a guest on jiffies at boot (Lab._check_clocksource).
    for node in lab.nodes:
        off, err = guest_minus_host(lab, node)
        assert abs(off) <= 2 + err, f"{node}: {off:+.2f} s from the host at boot"
        CLOCKS[node] = (time.monotonic(), off)


def test_exec_channel(lab):
    result = lab.exec("node1", "echo out; echo err >&2; exit 7")
    assert (result.rc, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert lab.exec("node1", ["printf", "%s", "a b"]).stdout == "a b"
    assert lab.exec("node1", "cat", input="piped").stdout == "piped"
    slow = lab.exec("node1", "sleep 30", timeout=1)
    assert slow.timed_out and not slow.ok
    start = time.monotonic()
    for _ in range(10):
        lab.exec("node2", "true", check=True)
    per_command = (time.monotonic() - start) / 10
    record("exec_round_trip_s", round(per_command, 3))
    assert per_command < 1.0


def test_network_between_nodes(lab):
    for node in ("node2", "node3"):
        lab.sh("node1", f"busybox ping -c 1 -W 5 {node}")


def test_shared_disk_odirect(lab):
    lab.sh("node1", "head -c 4096 /dev/urandom > /tmp/block && "
                    f"dd if=/tmp/block of={lab.disk_path()} bs=4096 seek=100 "
                    "oflag=direct conv=fsync status=none")
    written = lab.sh("node1", "sha256sum < /tmp/block")
    read_back = dd_read(lab, "node3", 100)
    assert read_back.ok, str(read_back)
    assert read_back.stdout == written


def test_corosync_quorate(lab):
    lab.corosync()
    record("corosync_quorate_s", lab.timings["quorate_s"])
    record("boot_to_quorate_s", round(lab.timings["boot_s"] + lab.timings["quorate_s"], 1))
    for node in lab.nodes:
        q = lab.quorum(node)
        assert q.quorate and q.members == [1, 2, 3]


def test_kill_node2_others_stay_quorate(lab):
    lab.kill("node2")
    assert not lab.is_running("node2")
    with pytest.raises(NodeDown):
        lab.exec("node2", "true")
    start = time.monotonic()
    lab.wait_quorate(["node1", "node3"], members=["node1", "node3"],
                     timeout=MEMBERSHIP_TIMEOUT)
    record("kill_detected_s", round(time.monotonic() - start, 1))


def test_restart_node2_rejoins(lab):
    start = time.monotonic()
    lab.restart("node2")
    record("restart_boot_s", round(time.monotonic() - start, 1))
    lab.start_corosync("node2")
    lab.wait_quorate(lab.nodes, members=lab.nodes, timeout=MEMBERSHIP_TIMEOUT)
    record("restart_to_quorate_s", round(time.monotonic() - start, 1))


def test_cut_path(lab):
    lab.cut_path("node3")
    try:
        failed = dd_read(lab, "node3", 100)
        assert failed.rc != 0
        assert "Input/output error" in failed.stderr, str(failed)
        write = lab.exec("node3", f"dd if=/dev/zero of={lab.disk_path()} bs=4096 "
                                  "count=1 seek=200 oflag=direct status=none")
        assert write.rc != 0 and "Input/output error" in write.stderr
        assert "Input/output error" not in dd_read(lab, "node1", 100).stderr
    finally:
        lab.heal_path("node3")
    assert not lab.path_is_cut("node3")
    healed = dd_read(lab, "node3", 100)
    assert healed.stderr == "" and healed.stdout == dd_read(lab, "node1", 100).stdout


def test_hung_path(lab):
    lab.cut_path("node3", hang=True)
    try:
        assert lab.path_is_cut("node3")
        stuck = dd_read(lab, "node3", 100, timeout=5)
        assert stuck.timed_out, str(stuck)
        assert dd_read(lab, "node1", 100).ok
    finally:
        lab.heal_path("node3")
    # The stalled read completes once the path is back; then I/O works again.
    wait_until(lambda: "dd if" not in lab.exec("node3", "ps -eo stat,args | grep '^D'").stdout,
               60, "the stuck dd on node3 to finish")
    assert dd_read(lab, "node3", 100).stdout == dd_read(lab, "node1", 100).stdout


def test_partition_node3(lab):
    start = time.monotonic()
    lab.partition("node3")
    assert lab.is_partitioned("node3")
    lab.wait_quorate(["node1", "node2"], members=["node1", "node2"],
                     timeout=MEMBERSHIP_TIMEOUT)
    record("partition_detected_s", round(time.monotonic() - start, 1))
    wait_until(lambda: (q := lab.quorum("node3")) and not q.quorate and q.members == [3],
               MEMBERSHIP_TIMEOUT, "node3 alone and inquorate")
    start = time.monotonic()
    lab.heal("node3")
    lab.wait_quorate(lab.nodes, members=lab.nodes, timeout=MEMBERSHIP_TIMEOUT)
    record("partition_healed_s", round(time.monotonic() - start, 1))


def test_delay(lab):
    lab.delay("node1", 200)
    try:
        out = lab.sh("node1", "busybox ping -c 1 -W 5 node2")
        rtt_ms = float(out.split("time=")[1].split()[0])
        assert rtt_ms >= 200
    finally:
        lab.clear_delay("node1")


def test_insmod_csvfs(lab):
    from lab.selfcheck import DEFAULT_MODULE, insmod_check
    if not os.path.exists(DEFAULT_MODULE):
        pytest.skip(f"{DEFAULT_MODULE} not built yet")
    assert insmod_check(lab, "node1") == 0


def test_guest_clocks_kept_the_hosts_pace(lab):
    # After the faults above (a kill, a restart, a partition, netem delays),
    # each guest's clock moved as the host's did: a clock that lost ticks
    # under load (jiffies) or ran on a TSC miscalibrated against the PIT
    # drifts by seconds per minute. node2 rebooted from the RTC (1 s steps).
    assert CLOCKS, "test_guest_clocks_start_with_the_host did not run"
    for node, (then, off0) in CLOCKS.items():
        off, err = guest_minus_host(lab, node)
        elapsed = time.monotonic() - then
        drift = off - off0
        record(f"clock_drift_{node}_s", round(drift, 3))
        assert abs(drift) <= 1.5 + err + 0.01 * elapsed, \
            f"{node}: its clock moved {drift:+.2f} s against the host's in {elapsed:.0f} s"


def test_kernel_logs_clean(lab):
    assert lab.kernel_log_problems() == []


def test_down_leaves_nothing(lab):
    pids = [lab._pid(n) for n in lab.nodes]
    # Simulate a crashed controller: state.json gone, clean up by name only.
    os.unlink(os.path.join(lab.run_dir, "state.json"))
    cli = os.path.join(REPO, "tools", "csvlab")
    subprocess.run([cli, "down", "--name", lab.name], check=True, capture_output=True)
    assert not lab._our_qemu_pids()
    assert all(not os.path.exists(f"/proc/{p}") or
               open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
               for p in pids)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab.netns not in netns
    assert not os.path.exists(lab.run_dir)  # images, sockets, logs
    with pytest.raises(LabError):
        Lab.attach(lab.name)
