"""Checks of the lab against the kernel module being built in the repo."""
import os

from .core import REPO

DEFAULT_MODULE = os.path.join(REPO, "kmod", "csvfs.ko")


def insmod_check(lab, node="node1", module=None):
    """Load and unload MODULE in NODE; 0 if clean, 1 on a problem, 2 if no module."""
    module = module or DEFAULT_MODULE
    if not os.path.exists(lab.module_for(module)):
        how = ("tools/build-debug-kernel" if lab.kernel == "debug" else
               f"make -C /lib/modules/{lab.kver}/build M={REPO} modules")
        print(f"insmod-check: SKIP: {lab.module_for(module)} not built yet ({how})")
        return 2
    before = len(lab.kernel_log_problems(node))
    name = os.path.basename(module)[:-3]
    # The guest sees the host's files at the same path (host root over 9p);
    # under the debug kernel, DEFAULT_MODULE is the debug build (stage 1).
    for cmd in (f"insmod {module}", f"grep -w ^{name} /proc/modules", f"rmmod {name}"):
        result = lab.exec(node, cmd, timeout=120)
        if not result.ok:
            print(f"insmod-check: FAIL: {result}")
            return 1
    dmesg = lab.sh(node, "dmesg")
    problems = lab.kernel_log_problems(node)[before:]
    problems += [l for l in dmesg.splitlines() if "csvfs" in l and "error" in l.lower()]
    if problems:
        print("insmod-check: FAIL: kernel log problems:\n" + "\n".join(problems))
        return 1
    print(f"insmod-check: OK: {module} loaded and unloaded on {lab.node_name(node)}")
    return 0
