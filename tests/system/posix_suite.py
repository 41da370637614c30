#!/usr/bin/python3
"""csvfs's own POSIX behaviour suite, run inside a guest on a csvfs directory.

    posix_suite.py DIR [--other-fs DIR2] [--big N]

Every check is a function `t_*`; the result is one JSON line on stdout:
{"passed": [...], "failed": {"name": "why"}}. Exit 0 when all passed.
The checks are single-node semantics (errnos, open-file lifetime, sparse
files, large directories); the cross-node ones live in test_e2e.py.
"""
import ctypes
import errno
import json
import os
import stat
import subprocess
import sys
import traceback

DIR = None
OTHER_FS = "/tmp"
BIG = 3000
USER = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"]

libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
AT_FDCWD = -100


def renameat2(old, new, flags):
    if libc.renameat2(AT_FDCWD, old.encode(), AT_FDCWD, new.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), old)


def p(*parts):
    return os.path.join(DIR, *parts)


def write(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def expect_errno(code, fn, *args, **kw):
    codes = code if isinstance(code, tuple) else (code,)
    names = "/".join(errno.errorcode[c] for c in codes)
    try:
        fn(*args, **kw)
    except OSError as e:
        if e.errno not in codes:
            raise AssertionError(f"{fn.__name__}{args}: errno {errno.errorcode.get(e.errno)}, "
                                 f"expected {names}") from e
        return
    raise AssertionError(f"{fn.__name__}{args}: succeeded, expected {names}")


def as_user(code):
    """Run python CODE as uid/gid 1000 with no groups; returns (rc, stdout)."""
    r = subprocess.run(USER + [sys.executable, "-c", code], capture_output=True, text=True,
                       cwd="/")
    return r.returncode, r.stdout.strip() + r.stderr.strip()


# ---------------------------------------------------------------- errnos

def t_enoent():
    expect_errno(errno.ENOENT, os.stat, p("nope"))
    expect_errno(errno.ENOENT, os.open, p("nope"), os.O_RDONLY)
    expect_errno(errno.ENOENT, os.unlink, p("nope"))
    expect_errno(errno.ENOENT, os.rmdir, p("nope"))
    expect_errno(errno.ENOENT, os.rename, p("nope"), p("nope2"))
    expect_errno(errno.ENOENT, os.mkdir, p("nope", "sub"))
    expect_errno(errno.ENOENT, os.readlink, p("nope"))
    expect_errno(errno.ENOENT, os.link, p("nope"), p("nope2"))
    os.symlink("nope", p("dangling"))
    expect_errno(errno.ENOENT, os.stat, p("dangling"))
    assert os.lstat(p("dangling")).st_size == 4


def t_eexist():
    os.mkdir(p("d"))
    write(p("f"), b"x")
    expect_errno(errno.EEXIST, os.mkdir, p("d"))
    expect_errno(errno.EEXIST, os.mkdir, p("f"))
    expect_errno(errno.EEXIST, os.open, p("f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    expect_errno(errno.EEXIST, os.open, p("d"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    expect_errno(errno.EEXIST, os.link, p("f"), p("d"))
    expect_errno(errno.EEXIST, os.symlink, "x", p("f"))
    expect_errno(errno.EEXIST, os.mknod, p("f"), 0o600 | stat.S_IFIFO)
    write(p("g"), b"y")
    expect_errno(errno.EEXIST, renameat2, p("g"), p("f"), RENAME_NOREPLACE)
    assert read(p("f")) == b"x" and read(p("g")) == b"y"


def t_enotempty():
    os.makedirs(p("full", "sub"))
    os.mkdir(p("empty"))
    expect_errno(errno.ENOTEMPTY, os.rmdir, p("full"))
    # POSIX allows either for a rename over a non-empty directory (XFS: EEXIST)
    expect_errno((errno.ENOTEMPTY, errno.EEXIST), os.rename, p("empty"), p("full"))
    os.rename(p("full", "sub"), p("moved"))     # now empty: rename over it works
    os.rename(p("empty"), p("full"))
    assert not os.listdir(p("full"))
    os.rmdir(p("full"))


def t_eisdir():
    os.mkdir(p("d"))
    write(p("f"), b"x")
    expect_errno(errno.EISDIR, os.open, p("d"), os.O_WRONLY)
    expect_errno(errno.EISDIR, os.open, p("d"), os.O_RDWR)
    expect_errno(errno.EISDIR, os.unlink, p("d"))
    expect_errno(errno.EISDIR, os.rename, p("f"), p("d"))
    fd = os.open(p("d"), os.O_RDONLY)
    try:
        expect_errno(errno.EISDIR, os.read, fd, 10)
    finally:
        os.close(fd)


def t_enotdir():
    write(p("f"), b"x")
    os.mkdir(p("d"))
    expect_errno(errno.ENOTDIR, os.mkdir, p("f", "sub"))
    expect_errno(errno.ENOTDIR, os.stat, p("f", "sub"))
    expect_errno(errno.ENOTDIR, os.open, p("f", "x"), os.O_RDONLY)
    expect_errno(errno.ENOTDIR, os.rmdir, p("f"))
    expect_errno(errno.ENOTDIR, os.rename, p("d"), p("f"))
    expect_errno(errno.ENOTDIR, os.listdir, p("f"))
    expect_errno(errno.ENOTDIR, os.open, p("f"), os.O_RDONLY | os.O_DIRECTORY)


def t_exdev():
    write(p("f"), b"x")
    other = os.path.join(OTHER_FS, f"csvfs-exdev-{os.getpid()}")
    write(other, b"y")
    try:
        expect_errno(errno.EXDEV, os.rename, p("f"), other + ".moved")
        expect_errno(errno.EXDEV, os.rename, other, p("g"))
        expect_errno(errno.EXDEV, os.link, p("f"), other + ".link")
        expect_errno(errno.EXDEV, os.link, other, p("g"))
    finally:
        os.unlink(other)


def t_enametoolong():
    long = "n" * 256
    ok = "n" * 255
    expect_errno(errno.ENAMETOOLONG, os.open, p(long), os.O_CREAT | os.O_WRONLY)
    expect_errno(errno.ENAMETOOLONG, os.mkdir, p(long))
    expect_errno(errno.ENAMETOOLONG, os.stat, p(long))
    expect_errno(errno.ENAMETOOLONG, os.symlink, "x", p(long))
    write(p(ok), b"255")
    assert ok in os.listdir(DIR)
    expect_errno(errno.ENAMETOOLONG, os.rename, p(ok), p(long))
    os.unlink(p(ok))


def t_eacces_non_root():
    os.chmod(DIR, 0o755)
    write(p("secret"), b"s", 0o600)
    os.chmod(p("secret"), 0o600)
    write(p("ro"), b"r", 0o444)
    os.chmod(p("ro"), 0o444)
    os.mkdir(p("closed"), 0o700)
    os.chmod(p("closed"), 0o700)
    write(p("closed", "inner"), b"i")
    os.mkdir(p("mine"))
    os.chown(p("mine"), 1000, 1000)
    code = f"""
import errno, os, sys
d = {DIR!r}
def want(code, fn, *a):
    try:
        fn(*a)
    except OSError as e:
        if e.errno != code:
            print("wrong errno", fn.__name__, a, e); sys.exit(1)
        return
    print("no error", fn.__name__, a); sys.exit(1)
want(errno.EACCES, os.open, d + "/secret", os.O_RDONLY)
want(errno.EACCES, os.open, d + "/ro", os.O_WRONLY)
want(errno.EACCES, os.open, d + "/new", os.O_CREAT | os.O_WRONLY, 0o644)
want(errno.EACCES, os.mkdir, d + "/newdir")
want(errno.EACCES, os.unlink, d + "/ro")
want(errno.EACCES, os.rename, d + "/ro", d + "/mine/ro")
want(errno.EACCES, os.stat, d + "/closed/inner")
want(errno.EACCES, os.listdir, d + "/closed")
want(errno.EPERM, os.chmod, d + "/ro", 0o666)
want(errno.EPERM, os.chown, d + "/mine", 0, 0)
# in a directory of its own the user may do everything, files get its ids
fd = os.open(d + "/mine/f", os.O_CREAT | os.O_WRONLY, 0o640); os.write(fd, b"u"); os.close(fd)
os.mkdir(d + "/mine/sub")
st = os.stat(d + "/mine/f")
assert (st.st_uid, st.st_gid) == (1000, 1000), (st.st_uid, st.st_gid)
assert open(d + "/ro").read() == "r"
print("ok")
"""
    rc, out = as_user(code)
    assert rc == 0 and out.endswith("ok"), f"as uid 1000: rc={rc} {out}"
    st = os.stat(p("mine", "sub"))
    assert (st.st_uid, st.st_gid) == (1000, 1000), (st.st_uid, st.st_gid)


# ---------------------------------------------------------------- renames

def t_rename_over_open_file():
    write(p("a"), b"new content")
    write(p("b"), b"old content")
    fd = os.open(p("b"), os.O_RDONLY)
    try:
        os.rename(p("a"), p("b"))
        assert os.pread(fd, 100, 0) == b"old content", "the open victim must stay readable"
        assert read(p("b")) == b"new content"
        assert not os.path.exists(p("a"))
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)


def t_rename_exchange_and_dirs():
    write(p("x"), b"X")
    os.mkdir(p("y"))
    renameat2(p("x"), p("y"), RENAME_EXCHANGE)
    assert os.path.isdir(p("x")) and read(p("y")) == b"X"
    os.makedirs(p("t1", "deep"))
    os.rename(p("t1"), p("t2"))
    assert os.path.isdir(p("t2", "deep")) and not os.path.exists(p("t1"))
    expect_errno(errno.EINVAL, os.rename, p("t2"), p("t2", "deep", "inside"))
    os.rename(p("y"), p("y"))  # same name: no-op
    assert read(p("y")) == b"X"


def t_unlink_open_file_readable_until_close():
    data = os.urandom(200_000)
    write(p("u"), data)
    fd = os.open(p("u"), os.O_RDWR)
    try:
        os.unlink(p("u"))
        assert not os.path.exists(p("u"))
        assert os.pread(fd, len(data) + 10, 0) == data
        os.pwrite(fd, b"more", len(data))
        assert os.pread(fd, 4, len(data)) == b"more"
        assert os.fstat(fd).st_nlink == 0
        assert os.fstat(fd).st_size == len(data) + 4
    finally:
        os.close(fd)
    assert "u" not in os.listdir(DIR)


def t_hard_links():
    write(p("h"), b"h")
    os.link(p("h"), p("h2"))
    assert os.stat(p("h")).st_nlink == 2
    assert os.stat(p("h")).st_ino == os.stat(p("h2")).st_ino
    os.unlink(p("h"))
    assert os.stat(p("h2")).st_nlink == 1 and read(p("h2")) == b"h"
    os.mkdir(p("dd"))
    base = os.stat(DIR).st_nlink
    os.mkdir(p("dd", "s1"))
    os.mkdir(p("dd", "s2"))
    assert os.stat(p("dd")).st_nlink == 4
    os.rmdir(p("dd", "s1"))
    assert os.stat(p("dd")).st_nlink == 3
    assert os.stat(DIR).st_nlink == base


# ---------------------------------------------------------------- data

def t_sparse_seek_hole():
    fd = os.open(p("sparse"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"A" * 4096, 0)
        os.pwrite(fd, b"B" * 4096, 8 << 20)
        os.ftruncate(fd, 16 << 20)
        st = os.fstat(fd)
        assert st.st_size == 16 << 20
        assert st.st_blocks * 512 < 1 << 20, f"not sparse: {st.st_blocks} blocks"
        assert os.lseek(fd, 0, os.SEEK_DATA) == 0
        hole = os.lseek(fd, 0, os.SEEK_HOLE)
        assert 4096 <= hole <= 8 << 20, hole
        data = os.lseek(fd, hole, os.SEEK_DATA)
        assert hole < data <= 8 << 20, data
        assert os.lseek(fd, 8 << 20, os.SEEK_HOLE) >= (8 << 20) + 4096
        assert os.lseek(fd, 12 << 20, os.SEEK_HOLE) == 12 << 20
        expect_errno(errno.ENXIO, os.lseek, fd, 16 << 20, os.SEEK_HOLE)
        expect_errno(errno.ENXIO, os.lseek, fd, (8 << 20) + (1 << 20), os.SEEK_DATA)
        expect_errno(errno.ENXIO, os.lseek, fd, 17 << 20, os.SEEK_DATA)
        assert os.pread(fd, 4096, 1 << 20) == b"\0" * 4096
        assert os.pread(fd, 4096, 8 << 20) == b"B" * 4096
        assert os.lseek(fd, 0, os.SEEK_END) == 16 << 20
    finally:
        os.close(fd)


def t_truncate_append_fallocate():
    write(p("t"), b"0123456789")
    os.truncate(p("t"), 4)
    assert read(p("t")) == b"0123"
    os.truncate(p("t"), 8)
    assert read(p("t")) == b"0123\0\0\0\0"
    fd = os.open(p("t"), os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"ab")
    os.close(fd)
    assert read(p("t")) == b"0123\0\0\0\0ab"
    fd = os.open(p("t"), os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, 1 << 20)
        assert os.fstat(fd).st_size == 1 << 20
        assert os.pread(fd, 10, 0) == b"0123\0\0\0\0ab"
    finally:
        os.close(fd)
    fd = os.open(p("t"), os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert os.stat(p("t")).st_size == 0


def t_unaligned_io_and_large_file():
    data = os.urandom(3 * 1024 * 1024 + 12345)
    write(p("big"), data)
    assert read(p("big")) == data
    fd = os.open(p("big"), os.O_RDWR)
    try:
        os.pwrite(fd, b"Z" * 777, 65531)
        data = data[:65531] + b"Z" * 777 + data[65531 + 777:]
        assert os.pread(fd, len(data), 0) == data
    finally:
        os.close(fd)


def t_mmap_shared_write():
    import mmap
    write(p("m"), b"\0" * 65536)
    fd = os.open(p("m"), os.O_RDWR)
    try:
        mm = mmap.mmap(fd, 65536)
        mm[100:105] = b"hello"
        mm[60000:60003] = b"end"
        mm.flush()
        mm.close()
    finally:
        os.close(fd)
    d = read(p("m"))
    assert d[100:105] == b"hello" and d[60000:60003] == b"end"


def t_xattrs_symlinks_times():
    write(p("x"), b"x")
    os.setxattr(p("x"), "user.k", b"v1")
    assert os.getxattr(p("x"), "user.k") == b"v1"
    assert "user.k" in os.listxattr(p("x"))
    os.removexattr(p("x"), "user.k")
    expect_errno(errno.ENODATA, os.getxattr, p("x"), "user.k")
    os.symlink("x", p("lnk"))
    assert os.readlink(p("lnk")) == "x" and read(p("lnk")) == b"x"
    os.utime(p("x"), ns=(1_000_000_123, 2_000_000_456))
    st = os.stat(p("x"))
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456), st
    os.chmod(p("x"), 0o4751)
    assert stat.S_IMODE(os.stat(p("x")).st_mode) == 0o4751
    os.mkfifo(p("fifo"))
    assert stat.S_ISFIFO(os.lstat(p("fifo")).st_mode)


# ---------------------------------------------------------------- big dirs

def t_large_directory():
    os.mkdir(p("big"))
    names = {f"entry-{i:06d}-{'x' * (i % 40)}" for i in range(BIG)}
    for n in names:
        os.close(os.open(p("big", n), os.O_CREAT | os.O_WRONLY, 0o644))
    listed = os.listdir(p("big"))
    assert len(listed) == len(set(listed)) == BIG, (len(listed), len(set(listed)))
    assert set(listed) == names
    # readdir positions are stable: a directory read in small steps while
    # entries are removed behind the cursor still returns each remaining
    # entry exactly once
    seen = []
    with os.scandir(p("big")) as it:
        for i, e in enumerate(it):
            seen.append(e.name)
            if i % 3 == 0:
                os.unlink(e.path)
    assert len(seen) == len(set(seen)) == BIG, (len(seen), len(set(seen)))
    left = os.listdir(p("big"))
    assert len(left) == BIG - (BIG + 2) // 3, len(left)
    for n in left:
        os.unlink(p("big", n))
    os.rmdir(p("big"))


def main():
    global DIR, OTHER_FS, BIG
    args = sys.argv[1:]
    DIR = os.path.abspath(args.pop(0))
    while args:
        opt = args.pop(0)
        if opt == "--other-fs":
            OTHER_FS = args.pop(0)
        elif opt == "--big":
            BIG = int(args.pop(0))
    os.umask(0o022)
    root = DIR
    passed, failed = [], {}
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("t_")]
    only = os.environ.get("POSIX_ONLY")
    for name, fn in tests:
        if only and name not in only.split(","):
            continue
        DIR = os.path.join(root, name)
        os.mkdir(DIR)
        try:
            fn()
            passed.append(name)
        except Exception as e:  # noqa: BLE001 - report every failure
            failed[name] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
    print(json.dumps({"passed": passed, "failed": failed}))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
