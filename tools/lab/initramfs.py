"""Build the small initramfs that mounts the host root and switches into it."""
import os
import shutil
import subprocess
import tempfile

from .errors import LabError

# Load order matters (LAB-NOTES): virtio core first, netfs before fscache.
MODULES = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
           "virtio_pci", "netfs", "fscache", "9pnet", "9pnet_virtio", "9p", "overlay"]
BUSYBOX = "/bin/busybox"
GUEST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guest")


def find_module(kver, name):
    """Path of NAME.ko for kernel KVER (uncompressed: busybox insmod needs that)."""
    root = f"/lib/modules/{kver}/kernel"
    for dirpath, _, files in os.walk(root):
        if name + ".ko" in files:
            return os.path.join(dirpath, name + ".ko")
    raise LabError(f"module {name}.ko not found under {root}: is "
                   f"linux-image-{kver} installed (tools/install-deps)?")


def build(kver, out_path, modules=None):
    """Write a gzip'd newc cpio to OUT_PATH, with MODULES (default: MODULES,
    for a kernel that has them as modules) loaded in that order by /init."""
    modules = MODULES if modules is None else modules
    if not os.path.exists(BUSYBOX):
        raise LabError(f"{BUSYBOX} missing: install busybox-static (tools/install-deps)")
    with tempfile.TemporaryDirectory(prefix="csvlab-initrd-") as tmp:
        for d in ("bin", "mods", "proc", "sys", "dev"):
            os.makedirs(os.path.join(tmp, d))
        shutil.copy2(BUSYBOX, os.path.join(tmp, "bin/busybox"))
        shutil.copy2(os.path.join(GUEST_DIR, "init"), os.path.join(tmp, "init"))
        for m in modules:
            shutil.copy2(find_module(kver, m), os.path.join(tmp, "mods", m + ".ko"))
        with open(os.path.join(tmp, "modules.order"), "w") as f:
            f.write("".join(m + "\n" for m in modules))
        with open(out_path, "wb") as out:
            find = subprocess.Popen(["find", "."], cwd=tmp, stdout=subprocess.PIPE)
            cpio = subprocess.Popen(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tmp,
                                    stdin=find.stdout, stdout=subprocess.PIPE)
            gz = subprocess.Popen(["gzip", "-1"], stdin=cpio.stdout, stdout=out)
            find.stdout.close()
            cpio.stdout.close()
            if gz.wait() or cpio.wait() or find.wait():
                raise LabError("building the initramfs failed (find | cpio | gzip)")
