"""Exceptions of the lab; messages say what to do, not only what broke."""


class LabError(Exception):
    """Anything the lab could not do."""


class NodeDown(LabError):
    """The node's VM is not running or its agent is unreachable."""
