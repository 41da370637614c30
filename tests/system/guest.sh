# Guest-side helpers for tests/system (sourced in a csvlab guest).
# The seam responder is a TEST SEAM standing in for csvd; see
# seam_responder.py.
# The repository the tests run from (test_kmod.py sets it): its kmod/csvfs.ko
# is what load_module inserts - under the debug kernel, the lab's stage 1
# put the debug build there (docs/debug-kernel.md).
REPO=${REPO:-/work/main}
DEV=/dev/disk/by-id/virtio-csvlun0
MNT=/ClusterStorage/V1
SEAM_ROOT=/tmp/seamroot

load_module() {
	lsmod | grep -q '^csvfs ' && return 0
	# a copy: a .ko rebuilt on the host while the guest runs may read
	# back as EIO through 9p
	cp "$REPO/kmod/csvfs.ko" /tmp/csvfs.ko && insmod /tmp/csvfs.ko
}

seam_start() {	# [seam options...]
	mkdir -p "$SEAM_ROOT"
	rm -f /tmp/seam.log
	setsid python3 "$REPO/tests/system/seam_responder.py" --root "$SEAM_ROOT" \
		--log /tmp/seam.log "$@" </dev/null >/dev/null 2>&1 &
	echo $! > /tmp/seam.pid
	# Up to 120 s: python starts in ~1 s under the Debian kernel, in ~30 s
	# in a loaded debug (KASAN) guest.
	for i in $(seq 600); do
		grep -q registered /tmp/seam.log 2>/dev/null && return 0
		sleep 0.2
	done
	echo "seam did not register within 120 s" >&2
	return 1
}

seam_stop() {
	[ -f /tmp/seam.pid ] || return 0
	kill "$(cat /tmp/seam.pid)" 2>/dev/null
	for i in $(seq 50); do
		kill -0 "$(cat /tmp/seam.pid)" 2>/dev/null || break
		sleep 0.1
	done
	rm -f /tmp/seam.pid
}

csv_mount() {	# [extra options]
	mkdir -p "$MNT"
	mount -t csvfs -o "volume=V1${1:+,$1}" "$DEV" "$MNT"
}

reset_all() {
	umount "$MNT" 2>/dev/null
	seam_stop
	rm -rf "$SEAM_ROOT"
	rmmod csvfs 2>/dev/null
	true
}
