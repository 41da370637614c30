#!/usr/bin/python3
"""fio O_DIRECT on a non-coordinator node (node2) of a 3-node csvlab cluster:
(a) the raw shared device (a region XFS does not use), (b) csvfs direct,
(c) csvfs block-redirected (node2's storage path cut), (d) csvfs
file-redirected (mount option redirect=file). Prints a table with ratios to
(a). A benchmark, not a test: figures under TCG mean little on their own,
compare the ratios of one run.

    sudo /usr/bin/python3 bench/direct.py [--runtime 20] [--size 128] [--keep]
"""
import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, os.path.join(REPO, "tests", "system"))

from lab import Lab  # noqa: E402
import test_direct as td  # noqa: E402

NODE = "node2"
RAW_OFFSET_MB = 1600          # XFS is made 1536 MiB long: the rest is raw
WORKLOADS = [                 # name, fio options, metric
    ("4k randread QD16", "--rw=randread --bs=4k --iodepth=16", "iops"),
    ("4k randwrite QD16", "--rw=randwrite --bs=4k --iodepth=16", "iops"),
    ("1M seq read QD4", "--rw=read --bs=1M --iodepth=4", "bw"),
    ("1M seq write QD4", "--rw=write --bs=1M --iodepth=4", "bw"),
]


def run_fio(lab, target, opts, runtime, size_mb):
    args = (f"--name=b --filename={target} --size={size_mb}M --direct=1 --ioengine=libaio "
            f"--time_based --runtime={runtime} --ramp_time=2 --randrepeat=0 {opts}")
    data = td.fio_ok(lab, NODE, args, timeout=runtime * 10 + 300)
    job = data["jobs"][0]
    side = job["read"] if job["read"]["io_bytes"] else job["write"]
    return {"iops": side["iops"], "bw": side["bw_bytes"] / 1e6}


def measure(lab, label, target, runtime, size_mb, results):
    for name, opts, metric in WORKLOADS:
        r = run_fio(lab, target, opts, runtime, size_mb)
        results.setdefault(name, {})[label] = r[metric]
        unit = "IOPS" if metric == "iops" else "MB/s"
        print(f"  {label:<26} {name:<20} {r[metric]:10.1f} {unit}", flush=True)


def remount(lab, opts):
    td.sh(lab, NODE, f"umount {td.MNT} && mount -t csvfs -o volume={td.VOL}{opts} "
                     f"{td.DEV} {td.MNT}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runtime", type=int, default=20)
    ap.add_argument("--size", type=int, default=128, help="MiB per target")
    ap.add_argument("--name", default="bench")
    ap.add_argument("--keep", action="store_true", help="leave the lab running")
    a = ap.parse_args()

    lab = Lab(a.name, nodes=3, disks=1, disk_size="2G")
    lab.down()
    lab.up()
    try:
        td.setup_cluster(lab, mount_nodes=[NODE], mkfs_opts="-d size=1536m")
        f = f"{td.MNT}/bench"
        td.sh(lab, NODE, f"dd if=/dev/zero of={f} bs=1M count={a.size} oflag=direct "
                         "status=none", timeout=1800)
        results = {}
        labels = ["(a) raw device", "(b) csvfs direct", "(c) block-redirected",
                  "(d) file-redirected"]
        measure(lab, labels[0], f"{td.DEV} --offset={RAW_OFFSET_MB}M", a.runtime, a.size,
                results)
        measure(lab, labels[1], f, a.runtime, a.size, results)
        lab.cut_path(NODE)
        try:
            td.wait_for(lambda: td.io_mode(lab, NODE) == "BlockRedirected", 60,
                        "BlockRedirected")
            measure(lab, labels[2], f, a.runtime, a.size, results)
        finally:
            lab.heal_path(NODE)
        td.wait_for(lambda: td.io_mode(lab, NODE) == "Direct", 60, "Direct again")
        remount(lab, ",redirect=file")
        measure(lab, labels[3], f, a.runtime, a.size, results)
        remount(lab, "")

        print(f"\nfio O_DIRECT on {NODE} (non-coordinator), libaio, runtime {a.runtime}s, "
              f"{a.size} MiB, TCG lab; ratio = value / (a)")
        head = f"| {'workload':<20} |" + "".join(f" {lab_:<22} |" for lab_ in labels)
        print(head)
        print("|" + "-" * 22 + "|" + ("-" * 24 + "|") * len(labels))
        for name, _, metric in WORKLOADS:
            unit = "IOPS" if metric == "iops" else "MB/s"
            base = results[name][labels[0]]
            cells = []
            for lab_ in labels:
                v = results[name][lab_]
                ratio = v / base if base else 0.0
                cells.append(f" {v:8.1f} {unit:<4} ({ratio:4.2f}) ".ljust(23) + "|")
            print(f"| {name:<20} |" + "".join(cells))
    finally:
        if not a.keep:
            lab.down(keep_logs=True)


if __name__ == "__main__":
    main()
