"""Minimal QMP client: one connection per command (QMP serves one client)."""
import json
import socket

from .errors import LabError, NodeDown


def qmp(sock_path, command, timeout=30.0, **arguments):
    """Run one QMP command and return its "return" value; LabError on error."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(sock_path)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        sock.close()
        raise NodeDown(f"QMP socket {sock_path}: {e.strerror}: is the VM running?") from None
    with sock, sock.makefile("rwb") as f:
        _read_reply(f)  # greeting
        for cmd, args in (("qmp_capabilities", {}), (command, arguments)):
            msg = {"execute": cmd}
            if args:
                msg["arguments"] = args
            f.write((json.dumps(msg) + "\n").encode())
            f.flush()
            reply = _read_reply(f)
            if "error" in reply:
                raise LabError(f"QMP {cmd} failed: {reply['error'].get('desc')}")
        return reply.get("return")


def _read_reply(f):
    """Next non-event message."""
    while True:
        line = f.readline()
        if not line:
            raise NodeDown("QMP connection closed (VM exited?)")
        msg = json.loads(line)
        if "event" not in msg:
            return msg
