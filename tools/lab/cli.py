"""Command line of csvlab (tools/csvlab)."""
import argparse
import os
import re
import sys

from .core import Lab
from .errors import LabError


def cmd_up(args):
    lab = Lab(args.name, nodes=args.nodes, disks=args.disks, disk_size=args.disk_size,
              kvm=args.kvm, memory_mb=args.memory, kernel=args.kernel)
    lab.up(timeout=args.timeout)
    print(f"lab {lab.name}: {lab.n_nodes} nodes of {lab.kver} booted in "
          f"{lab.timings['boot_s']}s (run dir {lab.run_dir})")
    print_status(lab)


def cmd_exec(args):
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise LabError("usage: csvlab exec NODE -- CMD...")
    # One word: a shell command line; several: an argv.
    result = Lab.attach(args.name).exec(args.node, cmd[0] if len(cmd) == 1 else cmd,
                                        timeout=args.timeout)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.timed_out:
        print(f"csvlab: command timed out after {args.timeout}s", file=sys.stderr)
        return 124
    return result.rc


def print_status(lab):
    for row in lab.status():
        state = "running" if row["running"] else "stopped"
        extra = " PARTITIONED" if row["partitioned"] else ""
        print(f"{row['node']:6} {row['addr']:16} {state:8} pid {row['pid'] or '-'}{extra}")


def cmd_status(args):
    print_status(Lab.attach(args.name))


def cmd_down(args):
    try:
        lab = Lab.attach(args.name)
    except LabError:
        lab = Lab(args.name)  # no state left: clean up by name anyway
    lab.down(keep_logs=args.keep_logs)
    print(f"lab {args.name}: down")


def cmd_corosync(args):
    lab = Lab.attach(args.name)
    lab.corosync(token_ms=args.token, timeout=args.timeout)
    print(f"lab {lab.name}: corosync quorate in {lab.timings['quorate_s']}s")


def cmd_demo(args):
    from . import demo
    return demo.main(args)


def kmod_sources(repo):
    """What kmod/csvfs.ko is built from: a build older than any of them is stale."""
    import glob
    pats = ("kmod/*.c", "kmod/*.h", "kmod/tests/*.c", "kmod/tests/*.h", "kmod/Kbuild",
            "Kbuild", "include/uapi/linux/csvfs.h")
    return [f for pat in pats for f in glob.glob(os.path.join(repo, pat))
            if not f.endswith(".mod.c")]  # written by modpost, not a source


def is_stale(target, sources):
    """True if TARGET is missing or older than any of SOURCES."""
    try:
        built = os.stat(target).st_mtime_ns
    except FileNotFoundError:
        return True
    return any(os.stat(src).st_mtime_ns > built for src in sources)


def cmd_debug_suite(args):
    """Build the debug kernel and csvfs.ko for it, then run pytest on the
    system tests (or ARGS) with CSVLAB_KERNEL=debug. --name NAME names the
    labs NAME-<module> (one per test module) instead of t<pid>-<module>.
    Passes are recorded in the ledger of these sources (tools/lab/ledger.py);
    --resume runs only what it lacks, --status only reports it."""
    import subprocess
    from .core import NAME_PREFIX_MAX, REPO
    env = dict(os.environ, CSVLAB_KERNEL="debug")
    if args.name is not None:
        if not re.match(rf"^[a-z0-9][a-z0-9-]{{0,{NAME_PREFIX_MAX - 1}}}$", args.name):
            raise LabError(f"--name {args.name!r}: debug-suite names each test module's lab "
                           f"NAME-<module>; use 1-{NAME_PREFIX_MAX} of [a-z0-9-]")
        env["CSVLAB_NAME"] = args.name
    if not args.status:
        build_for_debug_suite()
    ledger = debug_suite_ledger()
    env.update(CSVLAB_LEDGER=ledger, CSVLAB_LEDGER_RESUME="1" if args.resume else "0",
               PYTHONPATH=os.pathsep.join(filter(None, [os.path.join(REPO, "tools"),
                                                        os.environ.get("PYTHONPATH")])))
    rc = 0
    if not args.status:
        cmd = ["/usr/bin/python3", "-m", "pytest", "-p", "lab.ledger", "-ra", "-v",
               *(args.pytest_args or ["tests/system"])]
        labs = f" (labs {args.name}-<module>)" if args.name is not None else ""
        print("csvlab debug-suite: CSVLAB_KERNEL=debug " + " ".join(cmd) + labs, flush=True)
        rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    complete = print_debug_suite_status(ledger, env)
    return rc if not args.status else (0 if complete else 1)


def build_for_debug_suite():
    """The debug kernel (cached), then always csvfs.ko for it (make rebuilds
    what changed: Kbuild's dependency files cover every header, kmod/tests
    included), and the userspace the guests run (build/)."""
    import subprocess
    from .core import REPO
    idle = ["nice", "-n", "19", "ionice", "-c3"]
    steps = [[os.path.join(REPO, "tools", "build-debug-kernel")]]
    if is_stale(os.path.join(REPO, "kmod", "csvfs.ko"), kmod_sources(REPO)):
        # The tests skip unless the Debian build exists on the host, and
        # host-side steps use it: missing or older than its sources, rebuild.
        # (kmod/tests/*.c are not compiled for the Debian kernel, so after a
        # change there only this check runs again next time; make does nothing.)
        steps.append(idle + [os.path.join(REPO, "tools", "build-kmod")])
    configure = "cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo"
    source = cmake_source_dir(os.path.join(REPO, "build"))
    if source is None:
        raise LabError(f"no userspace build in build/: run `{configure}` first")
    if os.path.realpath(source) != os.path.realpath(REPO):
        # A build/ copied from another tree (a worktree made with cp -a)
        # compiles that tree's sources, with only a warning from cmake: the
        # ledger would then record passes of binaries it did not key.
        raise LabError(f"build/ was configured for {source}, not {REPO}: "
                       f"run `rm -rf build && {configure}` here")
    for step in steps:
        if subprocess.run(step, cwd=REPO).returncode:
            raise LabError(f"{' '.join(step)} failed")
    # The ledger is keyed by the sources: the binaries must be built from them
    # (make's "Built target" lines are noise; errors go to stderr).
    step = idle + ["cmake", "--build", os.path.join(REPO, "build"), "-j2"]
    if subprocess.run(step, cwd=REPO, stdout=subprocess.DEVNULL).returncode:
        raise LabError(f"{' '.join(step)} failed (run it to see why)")


def cmake_source_dir(build_dir):
    """The source tree BUILD_DIR was configured for; None if not configured."""
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt"), encoding="utf-8") as cache:
            for line in cache:
                if line.startswith("CMAKE_HOME_DIRECTORY:"):
                    return line.split("=", 1)[1].strip()
    except FileNotFoundError:
        return None
    return None


def debug_suite_ledger():
    """The ledger file of the current sources and debug kernel."""
    from . import ledger
    from .core import REPO, debug_kernel_dir
    return ledger.ledger_path(ledger.source_key(REPO, os.path.basename(debug_kernel_dir())))


def print_debug_suite_status(path, env):
    """How much of the whole system suite the ledger at PATH holds; True if all."""
    import subprocess
    from . import ledger
    from .core import REPO
    proc = subprocess.run(["/usr/bin/python3", "-m", "pytest", "--collect-only", "-q",
                           "tests/system"], cwd=REPO, env=env, capture_output=True, text=True)
    suite = [line for line in proc.stdout.splitlines() if "::" in line]
    if proc.returncode or not suite:
        raise LabError(f"cannot collect tests/system: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    lacking = ledger.missing(path, suite, REPO)
    print(f"csvlab debug-suite: {len(suite) - len(lacking)} of {len(suite)} system tests "
          f"have passed under the debug kernel at these sources (ledger {path})")
    for module in dict.fromkeys(ledger.module_of(n) for n in suite):
        total = [n for n in suite if ledger.module_of(n) == module]
        left = [n.split("::", 1)[1] for n in lacking if ledger.module_of(n) == module]
        print(f"  {module}: {len(total) - len(left)}/{len(total)}"
              + (f"; not yet: {' '.join(left)}" if left else ""))
    print("  the whole system suite has passed under the debug kernel" if not lacking else
          "  `tools/csvlab debug-suite --resume` runs the rest")
    return not lacking


def cmd_quorum(args):
    q = Lab.attach(args.name).quorum(args.node)
    print(q if q else f"{args.node}: corosync not answering")


def cmd_problems(args):
    problems = Lab.attach(args.name).kernel_log_problems(args.node)
    print("\n".join(problems) if problems else "kernel logs clean")
    return 1 if problems else 0


def cmd_insmod_check(args):
    from .selfcheck import insmod_check
    return insmod_check(Lab.attach(args.name), args.node, args.module)


def node_action(method, **kwargs):
    def run(args):
        extra = {k: getattr(args, k) for k in kwargs}
        getattr(Lab.attach(args.name), method)(args.node, **extra)
    return run


def parser():
    p = argparse.ArgumentParser(prog="csvlab", description="A multi-VM csvfs test cluster.")
    # default None: debug-suite tells "not given" from "lab"; main() makes it "lab".
    p.add_argument("--name", default=None, help="lab name (default: lab)")
    # --name also after the subcommand; SUPPRESS keeps the top-level value otherwise.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=argparse.SUPPRESS, help="lab name (default: lab)")
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser
    sub.add_parser = lambda *a, **k: add(*a, parents=[common], **k)

    up = sub.add_parser("up", help="boot a cluster")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--disks", type=int, default=1)
    up.add_argument("--disk-size", default="2G")
    up.add_argument("--memory", type=int, default=1024, help="MiB per guest")
    up.add_argument("--kvm", action="store_true", help="use KVM instead of TCG")
    up.add_argument("--timeout", type=float, default=300)
    up.add_argument("--kernel", choices=["debian", "debug"], default=None,
                    help="debian (default) or debug (tools/build-debug-kernel); "
                         "default from $CSVLAB_KERNEL")
    up.set_defaults(func=cmd_up)

    ex = sub.add_parser("exec", help="run a command on a node")
    ex.add_argument("--timeout", type=float, default=600)
    ex.add_argument("node")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)

    for name, method, helptext in (
            ("kill", "kill", "SIGKILL a node's VM"),
            ("restart", "restart", "power-cycle a node"),
            ("partition", "partition", "cut a node off the network"),
            ("heal", "heal", "undo partition"),
            ("heal-path", "heal_path", "undo cut-path (either kind)"),
            ("clear-delay", "clear_delay", "undo delay")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("node")
        s.set_defaults(func=node_action(method))

    cut = sub.add_parser("cut-path", help="fail (EIO) or --hang a node's shared disk I/O")
    cut.add_argument("node")
    cut.add_argument("--disk", type=int, default=None)
    cut.add_argument("--hang", action="store_true", help="I/O never completes until heal-path")
    cut.set_defaults(func=node_action("cut_path", disk=None, hang=None))

    d = sub.add_parser("delay", help="netem delay/loss on a node's interface")
    d.add_argument("node")
    d.add_argument("ms", type=int)
    d.add_argument("--loss", dest="loss_pct", type=float, default=0.0)
    d.set_defaults(func=node_action("delay", ms=None, loss_pct=None))

    c = sub.add_parser("corosync", help="configure and start corosync, wait for quorum")
    c.add_argument("--token", type=int, default=5000)
    c.add_argument("--timeout", type=float, default=180)
    c.set_defaults(func=cmd_corosync)

    q = sub.add_parser("quorum", help="a node's quorum view")
    q.add_argument("node")
    q.set_defaults(func=cmd_quorum)

    sub.add_parser("status", help="list nodes").set_defaults(func=cmd_status)
    dm = sub.add_parser("demo", help="install, build, boot a 3-node cluster and show csvfs at work "
                                     "(docs/demo.md)")
    dm.add_argument("--keep", action="store_true", help="leave the cluster up at the end")
    dm.add_argument("--no-build", action="store_true", help="use the binaries already built")
    dm.set_defaults(func=cmd_demo)

    dn = sub.add_parser("down", help="destroy the lab (works after a crash)")
    dn.add_argument("--keep-logs", action="store_true")
    dn.set_defaults(func=cmd_down)

    pr = sub.add_parser("problems", help="Oops/BUG/WARNING lines in the kernel logs")
    pr.add_argument("node", nargs="?")
    pr.set_defaults(func=cmd_problems)

    ds = sub.add_parser("debug-suite", help="build the debug kernel (cached) and run the "
                                            "system tests under it (docs/debug-kernel.md)")
    ds.add_argument("--resume", action="store_true",
                    help="skip the tests that have already passed at these sources")
    ds.add_argument("--status", action="store_true",
                    help="only report which system tests have passed at these sources")
    ds.add_argument("pytest_args", nargs=argparse.REMAINDER,
                    help="pytest arguments (default: tests/system)")
    ds.set_defaults(func=cmd_debug_suite)

    im = sub.add_parser("insmod-check", help="load and unload kmod/csvfs.ko in a guest")
    im.add_argument("node", nargs="?", default="node1")
    im.add_argument("--module", default=None)
    im.set_defaults(func=cmd_insmod_check)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.name is None and args.func is not cmd_debug_suite:
        args.name = "lab"
    try:
        return args.func(args) or 0
    except LabError as e:
        print(f"csvlab: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
