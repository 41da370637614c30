#!/usr/bin/python3
"""Metadata micro-benchmark, run inside a lab guest by bench/compare.py.

Creates N empty files (open O_CREAT|O_EXCL + close), stats them, renames
them, unlinks them; each phase is timed on its own and reported in ops/s.
The files go into one directory (--dirs 1) or are spread round-robin over
several. With --peers K and --barrier DIR (a directory every node sees, the
lab's /lab share), K workers on different nodes start each phase together:
each writes DIR/<phase>.<tag> and waits until K such files exist.

Prints one JSON object: {"create": {"ops": N, "s": secs}, "stat": ...}.
"""
import argparse
import json
import os
import sys
import time

PHASES = ("create", "stat", "rename", "unlink")


def barrier(bdir, phase, tag, peers, timeout=600):
    if not bdir or peers <= 1:
        return
    open(os.path.join(bdir, f"{phase}.{tag}"), "w").close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for n in os.listdir(bdir) if n.startswith(phase + ".")) >= peers:
            return
        time.sleep(0.01)
    sys.exit(f"barrier {phase}: peers did not arrive within {timeout}s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True, help="directory to work in (created)")
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--dirs", type=int, default=1)
    ap.add_argument("--tag", default="w")
    ap.add_argument("--peers", type=int, default=1)
    ap.add_argument("--barrier", default=None)
    a = ap.parse_args()

    dirs = [a.root] if a.dirs == 1 else [os.path.join(a.root, f"d{i:03d}") for i in range(a.dirs)]
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    names = [os.path.join(dirs[i % len(dirs)], f"{a.tag}-{i:06d}") for i in range(a.files)]
    renamed = [n + ".r" for n in names]
    out = {}

    def timed(phase, fn):
        barrier(a.barrier, phase, a.tag, a.peers)
        t0 = time.monotonic()
        fn()
        out[phase] = {"ops": a.files, "s": time.monotonic() - t0}

    def create():
        for n in names:
            os.close(os.open(n, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))

    def stat():
        for n in names:
            os.stat(n)

    def rename():
        for n, r in zip(names, renamed):
            os.rename(n, r)

    def unlink():
        for r in renamed:
            os.unlink(r)

    for phase, fn in zip(PHASES, (create, stat, rename, unlink)):
        timed(phase, fn)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
