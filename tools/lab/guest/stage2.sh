#!/bin/sh
# csvlab stage 2: busybox init's sysinit, on the host's userspace (read-only
# 9p root under a tmpfs overlay). Prepares devices and network, then busybox
# init starts the agent (see /etc/inittab written by stage 1).
set -u
arg() { sed -n "s/.*csvlab\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
node=$(arg node)
addr=$(arg addr)
say() { echo "csvlab-stage2[node$node]: $*"; }

# /run, /tmp and /dev/shm are guest-private: Corosync's pid lock and libqb
# IPC files live there and must not collide with other nodes or the host.
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/lock /run/corosync
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t configfs configfs /sys/kernel/config 2>/dev/null
hostname "node$node"

modprobe -a virtio_blk virtio_net virtio_console virtio_rng || say "modprobe failed"

ip link set lo up
ip addr add "$addr" dev eth0 && ip link set eth0 up || say "network setup failed"

# Only the subsystems we need: a full trigger costs ~12 s under TCG and loads
# unrelated modules. This gives /dev/disk/by-id/virtio-<serial>.
/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add --subsystem-match=block --subsystem-match=virtio-ports
udevadm settle --timeout=60 || say "udevadm settle timed out"
# Debug kernel with kmemleak: forget what boot left behind (early-boot
# false positives), then report every later leak on the console, where the
# lab's log check sees it (lab.kmemleak_scan at the end of a test module).
if [ -w /sys/kernel/debug/kmemleak ]; then
	echo scan >/sys/kernel/debug/kmemleak
	sleep 5 # an object must be 5 s old to be reported
	echo scan >/sys/kernel/debug/kmemleak
	echo clear >/sys/kernel/debug/kmemleak
	echo 1 >/sys/module/kmemleak/parameters/verbose
	say "kmemleak: boot objects cleared, verbose"
fi
say "ready"
