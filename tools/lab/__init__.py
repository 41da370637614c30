"""csvlab: a multi-VM cluster on one machine (QEMU/TCG, shared disk, Corosync).

    from lab import Lab
    lab = Lab("t1", nodes=3).up()
    lab.sh("node1", "uname -r")
    lab.corosync()
    lab.down()

See docs/lab.md.
"""
from .channel import ExecError, Result
from .core import Lab, wait_until
from .corosync import Quorum
from .errors import LabError, NodeDown

__all__ = ["Lab", "LabError", "NodeDown", "ExecError", "Result", "Quorum", "wait_until"]
