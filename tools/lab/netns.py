"""The lab's private network: a namespace holding a bridge and one tap per node.

Nothing is routed out: the namespace has no uplink, and guests only use
link-local 169.254.x.y addresses.
"""
import subprocess

from .errors import LabError

BRIDGE = "br0"


def run_ip(*args, check=True):
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode:
        raise LabError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


def tap(node_index):
    return f"tap{node_index}"


def exists(ns):
    return ns in run_ip("netns", "list").stdout.split()


def create(ns, n_nodes):
    if exists(ns):
        raise LabError(f"network namespace {ns} already exists: a lab of that name "
                       f"is up or crashed; run `csvlab down` for it first")
    run_ip("netns", "add", ns)
    run_ip("-n", ns, "link", "set", "lo", "up")
    # No STP, no forwarding delay: a port that comes back up forwards at once.
    run_ip("-n", ns, "link", "add", BRIDGE, "type", "bridge",
           "stp_state", "0", "forward_delay", "0")
    run_ip("-n", ns, "link", "set", BRIDGE, "up")
    for i in range(1, n_nodes + 1):
        run_ip("-n", ns, "tuntap", "add", "dev", tap(i), "mode", "tap")
        run_ip("-n", ns, "link", "set", tap(i), "master", BRIDGE, "up")


def set_link(ns, node_index, up):
    run_ip("-n", ns, "link", "set", tap(node_index), "up" if up else "down")


def link_is_up(ns, node_index):
    out = run_ip("-n", ns, "-o", "link", "show", tap(node_index)).stdout
    flags = out.split("<", 1)[1].split(">", 1)[0].split(",")
    return "UP" in flags


def delete(ns):
    """Remove the namespace (taps and bridge go with it); fine if absent."""
    if exists(ns):
        run_ip("netns", "delete", ns)
