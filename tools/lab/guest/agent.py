#!/usr/bin/python3
"""csvlab guest agent: runs commands for the host over a virtio-serial port.

Protocol: one JSON object per line in each direction.
  request  {"id": "...", "op": "ping"}
           {"id": "...", "op": "exec", "cmd": str|list, "timeout": s, "input": str|null}
           {"id": "...", "op": "spawn", "cmd": str|list, "log": path}
  reply    {"id": "...", "ok": true, ...} or {"id": "...", "ok": false, "error": "..."}
A string cmd runs under /bin/sh -c, a list is an argv.

The host connects once per request, so the port often has no host side:
reads then return EOF/POLLHUP, which only means "wait and retry".
Started (and restarted if it dies) by busybox init; stderr goes to
/lab/nodeN/agent.log.
"""
import glob
import json
import os
import select
import signal
import subprocess
import sys
import time

PORT_NAME = "csvlab.agent"
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}
# After the command exits, how long to keep reading output that a leftover
# background child may still hold open before returning what we have.
PIPE_GRACE_S = 0.3

spawned = []  # Popen objects of background commands, reaped in the main loop


def find_port():
    """Device node of our virtio-serial port (no udev needed)."""
    while True:
        for name_file in glob.glob("/sys/class/virtio-ports/*/name"):
            try:
                with open(name_file) as f:
                    if f.read().strip() == PORT_NAME:
                        return "/dev/" + os.path.basename(os.path.dirname(name_file))
            except OSError:
                pass
        time.sleep(0.2)


def argv_of(cmd):
    return ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)


def collect(proc, deadline):
    """Read stdout/stderr until EOF, the deadline, or the grace period after exit."""
    out = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    open_fds = set(out)
    exited_at = None
    while open_fds:
        now = time.monotonic()
        if now > deadline:
            return out, True
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > PIPE_GRACE_S:
            break
        ready, _, _ = select.select(list(open_fds), [], [], 0.05)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                out[fd] += chunk
            else:
                open_fds.discard(fd)
    return out, False


def run(req):
    timeout = float(req.get("timeout") or 60)
    data = req.get("input")
    proc = subprocess.Popen(
        argv_of(req["cmd"]),
        stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        cwd=req.get("cwd") or "/",
        start_new_session=True,  # so a timeout can kill the whole group
    )
    if data is not None:
        try:
            proc.stdin.write(data.encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
    start = time.monotonic()
    out, timed_out = collect(proc, start + timeout)
    rc = None
    if timed_out:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            rc = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            # Stuck in D state (e.g. I/O on a hung path): report now, reap later.
            spawned.append(proc)
            rc = -signal.SIGKILL
    if rc is None:
        rc = proc.wait()
    stdout = bytes(out[proc.stdout.fileno()]).decode(errors="replace")
    stderr = bytes(out[proc.stderr.fileno()]).decode(errors="replace")
    proc.stdout.close()
    proc.stderr.close()
    return {
        "ok": True,
        "rc": rc,
        "timed_out": timed_out,
        "stdout": stdout,
        "stderr": stderr,
        "seconds": round(time.monotonic() - start, 3),
    }


def spawn(req):
    log = req.get("log") or "/dev/null"
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            argv_of(req["cmd"]), stdin=subprocess.DEVNULL, stdout=f, stderr=f,
            env=ENV, cwd=req.get("cwd") or "/", start_new_session=True)
    spawned.append(proc)
    return {"ok": True, "pid": proc.pid}


def handle(line):
    try:
        req = json.loads(line)
    except ValueError as e:
        return {"id": None, "ok": False, "error": f"bad JSON: {e}"}
    try:
        op = req.get("op")
        if op == "ping":
            reply = {"ok": True}
        elif op == "exec":
            reply = run(req)
        elif op == "spawn":
            reply = spawn(req)
        else:
            reply = {"ok": False, "error": f"unknown op {op!r}"}
    except Exception as e:  # report, never die: the host waits for a reply
        reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    reply["id"] = req.get("id")
    return reply


def send(fd, reply):
    data = (json.dumps(reply) + "\n").encode()
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError as e:  # host went away; it will ask again
        print(f"agent: reply lost: {e}", file=sys.stderr, flush=True)


def reap():
    spawned[:] = [p for p in spawned if p.poll() is None]


def main():
    path = find_port()
    fd = os.open(path, os.O_RDWR)
    print(f"agent: serving on {path}", file=sys.stderr, flush=True)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    buf = b""
    while True:
        reap()
        events = poller.poll(1000)
        if not events:
            continue
        data = b""
        if events[0][1] & select.POLLIN:
            data = os.read(fd, 65536)
        if not data:
            # No host connected: drop any half line and wait for the next one.
            buf = b""
            time.sleep(0.05)
            continue
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                send(fd, handle(line))


if __name__ == "__main__":
    main()
