#!/usr/bin/python3
"""TEST SEAM: a stand-in for csvd that answers csvfs.ko from a local directory.

This is not the daemon. It exists so that the kernel module's request path
(every VFS operation -> genl request -> REPLY) can be exercised in the lab
before and independently of csvd. It registers with CSVFS_CMD_HELLO and
answers each request from the files under --root, on this node only.

File handles are struct csvfs_fh {type=0x5e, len=8} + the inode number;
a dict maps inode numbers back to paths (rebuilt by a walk when stale).

Faults, for tests of the kernel's validation and re-send logic:
  --fault bad-fh      LOOKUP replies carry a handle whose len is inconsistent
  --fault big-data    READ replies carry more bytes than asked for
  --fault bad-dirent  READDIR replies carry an entry with namelen > NAME_MAX
  --fault errno       every reply carries ERRNO=+5 (not a negative errno)
  --fault drop:CMD    never answer CMD (e.g. drop:GETATTR)
  --exit-on CMD       exit, without answering, when CMD arrives
Attribute and command numbers are read from include/uapi/linux/csvfs.h.
"""
import argparse
import errno
import os
import re
import socket
import stat
import struct
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = os.path.join(REPO, "include/uapi/linux/csvfs.h")

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4

ATTR_FMT = "=QQQqqqIIIIIIIIIIII"  # ... generation, flags, padding
SETATTR_FMT = "=IIIIQqqqIIII"
STATFS_FMT = "=QQQQQIIII"
FH_TYPE = 0x5E


def parse_header():
    text = open(HEADER).read()
    body = text[text.index("enum csvfs_cmd {"):]
    body = body[:body.index("};")]
    cmds = re.findall(r"^\s*CSVFS_CMD_([A-Z_]+)\s*,", body, re.M)
    table = text[text.index("#define CSVFS_ATTR_TABLE(X)"):]
    table = table[:table.index("enum csvfs_attr_type")]
    attrs = re.findall(r"X\((\w+),", table)
    return ({n: i for i, n in enumerate(cmds)},
            {n: i + 1 for i, n in enumerate(attrs)})


CMD, A = parse_header()
ABI_VERSION = int(re.search(r"#define CSVFS_ABI_VERSION\s+(\d+)", open(HEADER).read()).group(1))
CMD_NAME = {v: k for k, v in CMD.items()}


def nla(t, data):
    hdr = struct.pack("=HH", 4 + len(data), t)
    pad = b"\0" * ((4 - len(data) % 4) % 4)
    return hdr + data + pad


def parse_attrs(buf):
    out = {}
    off = 0
    while off + 4 <= len(buf):
        ln, t = struct.unpack_from("=HH", buf, off)
        if ln < 4:
            break
        out[t & 0x3FFF] = buf[off + 4:off + ln]
        off += (ln + 3) & ~3
    return out


class Netlink:
    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))
        self.seq = 0
        self.family = self.resolve("csvfs")

    def send(self, msg_type, cmd, payload, flags=NLM_F_REQUEST):
        self.seq += 1
        genl = struct.pack("=BBH", cmd, 1, 0)
        hdr = struct.pack("=IHHII", 16 + len(genl) + len(payload), msg_type, flags,
                          self.seq, 0)
        self.sock.send(hdr + genl + payload)

    def recv(self):
        data = self.sock.recv(1 << 20)
        msgs = []
        off = 0
        while off + 16 <= len(data):
            ln, typ, flags, seq, pid = struct.unpack_from("=IHHII", data, off)
            msgs.append((typ, data[off + 16:off + ln]))
            off += (ln + 3) & ~3
        return msgs

    def resolve(self, name):
        self.send(GENL_ID_CTRL, CTRL_CMD_GETFAMILY,
                  nla(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"))
        for typ, body in self.recv():
            if typ == NLMSG_ERROR:
                err = struct.unpack_from("=i", body)[0]
                raise SystemExit(f"seam: genl family {name}: {os.strerror(-err)}")
            attrs = parse_attrs(body[4:])
            return struct.unpack("=H", attrs[CTRL_ATTR_FAMILY_ID][:2])[0]
        raise SystemExit("seam: no answer from nlctrl")


class Store:
    """The files the seam serves, addressed by inode-number handles."""

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.paths = {os.lstat(self.root).st_ino: self.root}
        self.opens = {}
        self.next_open = 1
        self.xattrs = {}

    def fh(self, path):
        st = os.lstat(path)
        self.paths[st.st_ino] = path
        return struct.pack("=IIQ", FH_TYPE, 8, st.st_ino)

    def path(self, fh):
        if len(fh) != 16:
            raise OSError(errno.ESTALE, "bad handle")
        typ, ln, ino = struct.unpack("=IIQ", fh)
        if typ != FH_TYPE or ln != 8:
            raise OSError(errno.ESTALE, "bad handle")
        p = self.paths.get(ino)
        if p is not None:
            try:
                if os.lstat(p).st_ino == ino:
                    return p
            except FileNotFoundError:
                pass
        for d, dirs, files in os.walk(self.root):
            for n in dirs + files:
                q = os.path.join(d, n)
                if os.lstat(q).st_ino == ino:
                    self.paths[ino] = q
                    return q
        raise OSError(errno.ESTALE, "stale handle")

    @staticmethod
    def attr(path):
        st = os.lstat(path)
        return struct.pack(ATTR_FMT, st.st_ino, st.st_size, st.st_blocks,
                           int(st.st_atime), int(st.st_mtime), int(st.st_ctime),
                           st.st_atime_ns % 10**9, st.st_mtime_ns % 10**9,
                           st.st_ctime_ns % 10**9, st.st_mode, st.st_nlink,
                           st.st_uid, st.st_gid, st.st_rdev & 0xFFFFFFFF,
                           st.st_blksize, 0, 0, 0)  # flags 0: nodes look for caps


def s(attrs, name):
    return attrs[A[name]].split(b"\0")[0].decode()


def u32(attrs, name):
    return struct.unpack("=I", attrs[A[name]])[0]


def u64(attrs, name):
    return struct.unpack("=Q", attrs[A[name]])[0]


def child(store, attrs, fh_attr="PARENT_FH", name_attr="NAME"):
    name = s(attrs, name_attr)
    if "/" in name or name in ("", ".", ".."):
        raise OSError(errno.EINVAL, "bad name")
    return os.path.join(store.path(attrs[A[fh_attr]]), name)


def entry(store, path):
    return [nla(A["FH"], store.fh(path)), nla(A["ATTR"], store.attr(path))]


def do_setattr(store, attrs):
    p = store.path(attrs[A["FH"]])
    (valid, mode, uid, gid, size, at, mt, ct, atn, mtn, ctn, _) = struct.unpack(
        SETATTR_FMT, attrs[A["SETATTR"]])
    if valid & 1:
        os.chmod(p, mode & 0o7777)
    if valid & 6:
        os.lchown(p, uid if valid & 2 else -1, gid if valid & 4 else -1)
    if valid & 8:
        os.truncate(p, size)
    if valid & (0x10 | 0x20 | 0x40 | 0x80):
        st = os.lstat(p)
        now = time.time_ns()
        a = now if valid & 0x40 else (at * 10**9 + atn if valid & 0x10 else st.st_atime_ns)
        m = now if valid & 0x80 else (mt * 10**9 + mtn if valid & 0x20 else st.st_mtime_ns)
        if not stat.S_ISLNK(st.st_mode):
            os.utime(p, ns=(a, m))
    return [nla(A["ATTR"], store.attr(p))]


def do_readdir(store, attrs, fault):
    p = store.path(attrs[A["FH"]])
    cookie = u64(attrs, "COOKIE")
    names = [".", ".."] + sorted(os.listdir(p))
    out = b""
    eof = True
    for i in range(cookie, len(names)):
        n = names[i].encode()
        q = os.path.join(p, names[i]) if i >= 2 else (p if i == 0 else os.path.dirname(p))
        st = os.lstat(q)
        dtype = (st.st_mode >> 12) & 15
        rec = struct.pack("=QQII", st.st_ino, i + 1, len(n), dtype) + n
        rec += b"\0" * ((8 - len(rec) % 8) % 8)
        if len(out) + len(rec) > 4096:   # small batches: exercise cookies
            eof = False
            break
        out += rec
    if fault == "bad-dirent" and out:
        out = out[:16] + struct.pack("=I", 300) + out[20:]   # namelen > NAME_MAX
    res = [nla(A["DIRENTS"], out)]
    if eof:
        res.append(nla(A["EOF"], b""))
    return res


def handle(store, cmd, attrs, fault):
    name = CMD_NAME.get(cmd, "?")
    if name == "MOUNT":
        st = os.statvfs(store.root)
        return entry(store, store.root) + [nla(A["EPOCH"], struct.pack("=Q", 1)),
                                           nla(A["DEV_SIZE"], struct.pack("=Q", st.f_blocks * st.f_frsize))]
    if name == "UNMOUNT":
        return []
    if name == "LOOKUP":
        p = child(store, attrs)
        res = entry(store, p)
        if fault == "bad-fh":
            res[0] = nla(A["FH"], struct.pack("=II", FH_TYPE, 99) + b"x" * 8)
        return res
    if name == "GETATTR":
        return [nla(A["ATTR"], store.attr(store.path(attrs[A["FH"]])))]
    if name == "SETATTR":
        return do_setattr(store, attrs)
    if name == "CREATE":
        p = child(store, attrs)
        flags = u32(attrs, "FLAGS")
        fd = os.open(p, (flags & (os.O_ACCMODE | os.O_EXCL)) | os.O_CREAT,
                     u32(attrs, "MODE") & 0o7777)
        oid = store.next_open
        store.next_open += 1
        store.opens[oid] = fd
        return entry(store, p) + [nla(A["OPEN_ID"], struct.pack("=Q", oid))]
    if name == "MKNOD":
        p = child(store, attrs)
        os.mknod(p, u32(attrs, "MODE"), u32(attrs, "RDEV"))
        return entry(store, p)
    if name == "MKDIR":
        p = child(store, attrs)
        os.mkdir(p, u32(attrs, "MODE") & 0o7777)
        return entry(store, p)
    if name == "SYMLINK":
        p = child(store, attrs)
        os.symlink(s(attrs, "TARGET"), p)
        return entry(store, p)
    if name == "LINK":
        src = store.path(attrs[A["FH"]])
        dst = child(store, attrs, "NEW_PARENT_FH", "NEW_NAME")
        os.link(src, dst)
        return [nla(A["ATTR"], store.attr(dst))]
    if name == "UNLINK":
        os.unlink(child(store, attrs))
        return []
    if name == "RMDIR":
        os.rmdir(child(store, attrs))
        return []
    if name == "RENAME":
        src = child(store, attrs)
        dst = child(store, attrs, "NEW_PARENT_FH", "NEW_NAME")
        flags = u32(attrs, "FLAGS")
        if flags & 2:
            raise OSError(errno.EINVAL, "exchange unsupported by the seam")
        if flags & 1 and os.path.lexists(dst):
            raise OSError(errno.EEXIST, "exists")
        os.rename(src, dst)
        return []
    if name == "READDIR":
        return do_readdir(store, attrs, fault)
    if name == "READLINK":
        return [nla(A["TARGET"], os.readlink(store.path(attrs[A["FH"]])).encode() + b"\0")]
    if name == "OPEN":
        p = store.path(attrs[A["FH"]])
        fd = os.open(p, u32(attrs, "FLAGS") & os.O_ACCMODE)
        oid = store.next_open
        store.next_open += 1
        store.opens[oid] = fd
        return [nla(A["OPEN_ID"], struct.pack("=Q", oid))]
    if name == "RELEASE":
        fd = store.opens.pop(u64(attrs, "OPEN_ID"), None)
        if fd is None:
            raise OSError(errno.EBADF, "no such open")
        os.close(fd)
        return []
    if name == "FSYNC":
        return []
    if name == "STATFS":
        st = os.statvfs(store.root)
        return [nla(A["STATFS"], struct.pack(STATFS_FMT, st.f_blocks, st.f_bfree, st.f_bavail,
                                             st.f_files, st.f_ffree, st.f_bsize, st.f_namemax,
                                             st.f_frsize, 0))]
    if name in ("GETXATTR", "LISTXATTR", "SETXATTR", "REMOVEXATTR"):
        return do_xattr(store, name, attrs)
    if name == "FALLOCATE":
        p = store.path(attrs[A["FH"]])
        if u32(attrs, "FLAGS"):
            raise OSError(errno.EOPNOTSUPP, "seam: plain fallocate only")
        fd = os.open(p, os.O_WRONLY)
        try:
            os.posix_fallocate(fd, u64(attrs, "OFFSET"), u64(attrs, "LENGTH"))
        finally:
            os.close(fd)
        return [nla(A["ATTR"], store.attr(p))]
    if name == "LSEEK":
        p = store.path(attrs[A["FH"]])
        fd = os.open(p, os.O_RDONLY)
        try:
            off = os.lseek(fd, u64(attrs, "OFFSET"), u32(attrs, "WHENCE"))
        finally:
            os.close(fd)
        return [nla(A["OFFSET"], struct.pack("=Q", off))]
    if name == "READ":
        p = store.path(attrs[A["FH"]])
        length = u64(attrs, "LENGTH")
        with open(p, "rb") as f:
            f.seek(u64(attrs, "OFFSET"))
            data = f.read(length)
        if fault == "big-data":  # more than LENGTH, whatever the file holds
            data = data.ljust(length, b"!") + b"!" * 16
        return [nla(A["DATA"], data)]
    if name == "WRITE":
        p = store.path(attrs[A["FH"]])
        fd = os.open(p, os.O_WRONLY)
        try:
            os.pwrite(fd, attrs[A["DATA"]], u64(attrs, "OFFSET"))
        finally:
            os.close(fd)
        return [nla(A["ATTR"], store.attr(p))]
    raise OSError(errno.EOPNOTSUPP, f"seam: {name} not handled")


def do_xattr(store, name, attrs):
    p = store.path(attrs[A["FH"]])
    ino = os.lstat(p).st_ino
    xs = store.xattrs.setdefault(ino, {})
    if name == "SETXATTR":
        key = s(attrs, "XATTR_NAME")
        flags = u32(attrs, "FLAGS")
        if flags & 1 and key in xs:
            raise OSError(errno.EEXIST, "exists")
        if flags & 2 and key not in xs:
            raise OSError(errno.ENODATA, "no such xattr")
        xs[key] = attrs[A["XATTR_VALUE"]]
        return []
    if name == "REMOVEXATTR":
        if xs.pop(s(attrs, "XATTR_NAME"), None) is None:
            raise OSError(errno.ENODATA, "no such xattr")
        return []
    if name == "GETXATTR":
        key = s(attrs, "XATTR_NAME")
        if key not in xs:
            raise OSError(errno.ENODATA, "no such xattr")
        value = xs[key]
    else:
        value = b"".join(k.encode() + b"\0" for k in sorted(xs))
    size = u32(attrs, "SIZE")
    if size == 0:
        return [nla(A["SIZE"], struct.pack("=I", len(value)))]
    if len(value) > size:
        raise OSError(errno.ERANGE, "too small")
    return [nla(A["XATTR_VALUE"], value)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="directory to serve")
    ap.add_argument("--fault", default="")
    ap.add_argument("--exit-on", default="")
    ap.add_argument("--log", default="")
    args = ap.parse_args()
    log = open(args.log, "a", buffering=1) if args.log else sys.stderr
    store = Store(args.root)
    nl = Netlink()
    nl.send(nl.family, CMD["HELLO"],
            nla(A["ABI_VERSION"], struct.pack("=I", ABI_VERSION)) +
            nla(A["REQ_ID"], struct.pack("=Q", 0)), NLM_F_REQUEST | NLM_F_ACK)
    print(f"seam: registered, family {nl.family}, pid {os.getpid()}", file=log)
    drop = args.fault[5:] if args.fault.startswith("drop:") else ""
    while True:
        for typ, body in nl.recv():
            if typ == NLMSG_ERROR:
                err = struct.unpack_from("=i", body)[0]
                if err:
                    print(f"seam: kernel said {os.strerror(-err)}", file=log)
                continue
            if typ != nl.family:
                continue
            cmd = body[0]
            attrs = parse_attrs(body[4:])
            cname = CMD_NAME.get(cmd, str(cmd))
            print(f"seam: {cname}", file=log)
            if cname == args.exit_on:
                print("seam: exiting on request", file=log)
                os._exit(0)
            if cname == drop:
                continue
            req_id = attrs.get(A["REQ_ID"], b"\0" * 8)
            try:
                res = handle(store, cmd, attrs, args.fault)
                err = 0
            except OSError as e:
                res, err = [], -(e.errno or errno.EIO)
            if args.fault == "errno":
                err = 5
            payload = nla(A["REQ_ID"], req_id) + nla(A["ERRNO"], struct.pack("=i", err))
            if not err:
                payload += b"".join(res)
            nl.send(nl.family, CMD["REPLY"], payload)


if __name__ == "__main__":
    main()
