"""Host side of the guest agent: JSON lines over the virtio-serial socket.

QEMU's chardev socket serves one client at a time, so every request opens
its own connection, under an flock per node: several host processes (a
test and a `csvlab exec` in a terminal) then take turns instead of blocking
each other forever.
"""
import fcntl
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass

from .errors import LabError, NodeDown


@dataclass
class Result:
    """Outcome of one command run in a guest."""
    node: str
    cmd: object
    rc: int
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float

    @property
    def ok(self):
        return self.rc == 0 and not self.timed_out

    def __str__(self):
        state = "timed out" if self.timed_out else f"exit {self.rc}"
        return (f"{self.node}: {self.cmd!r}: {state} after {self.seconds:.2f}s\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")


class ExecError(LabError):
    def __init__(self, result):
        super().__init__(str(result))
        self.result = result


# Margin on top of the command's own timeout for the round trip under TCG.
TRANSPORT_MARGIN_S = 15.0


class Channel:
    def __init__(self, node, sock_path, lock_path):
        self.node = node
        self.sock_path = sock_path
        self.lock_path = lock_path

    def request(self, req, timeout):
        """Send one request, return its reply dict; NodeDown if unreachable."""
        req = dict(req, id=uuid.uuid4().hex[:16])
        deadline = time.monotonic() + timeout
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with self._connect() as sock:
                sock.sendall((json.dumps(req) + "\n").encode())
                return self._read_reply(sock, req["id"], deadline)

    def _connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.sock_path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            raise NodeDown(f"{self.node}: agent socket {self.sock_path} not "
                           f"served ({e.strerror}): is the VM running?") from None
        return sock

    def _read_reply(self, sock, want_id, deadline):
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError(f"{self.node}: no reply from the guest agent in time "
                               f"(VM hung, or still booting?)")
            sock.settimeout(left)
            try:
                chunk = sock.recv(1 << 20)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise NodeDown(f"{self.node}: connection to the agent closed "
                               f"(VM killed or crashed?)")
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                reply = json.loads(line)
                # Replies to requests abandoned by an earlier client are skipped.
                if reply.get("id") == want_id:
                    if not reply.get("ok"):
                        raise LabError(f"{self.node}: agent error: {reply.get('error')}")
                    return reply

    def ping(self, timeout):
        self.request({"op": "ping"}, timeout)

    def exec(self, cmd, timeout=60.0, input=None, cwd=None):
        start = time.monotonic()
        reply = self.request(
            {"op": "exec", "cmd": cmd, "timeout": timeout, "input": input, "cwd": cwd},
            timeout + TRANSPORT_MARGIN_S)
        return Result(self.node, cmd, reply["rc"], reply["stdout"], reply["stderr"],
                      reply["timed_out"], time.monotonic() - start)

    def spawn(self, cmd, log=None, cwd=None):
        return self.request({"op": "spawn", "cmd": cmd, "log": log, "cwd": cwd},
                            TRANSPORT_MARGIN_S)["pid"]
