// Namespace and attribute commands: LOOKUP .. READLINK, STATFS, xattrs.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "coordinator/service_impl.h"

namespace csv::coord {
namespace {

// As getdents64(2) fills its buffer.
struct LinuxDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

constexpr size_t kDirentBuffer = 32768;

timespec SetattrTime(uint32_t valid, uint32_t set_bit, uint32_t now_bit, int64_t sec,
                     uint32_t nsec) {
  if (valid & now_bit) return {0, UTIME_NOW};
  if (valid & set_bit) return {sec, static_cast<long>(nsec)};
  return {0, UTIME_OMIT};
}

}  // namespace

// chmod of an fd of any kind, O_PATH included, through /proc.
int ServiceImpl::ChmodFd(int fd, mode_t mode) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  return ::chmod(path, mode) == 0 ? 0 : LastError();
}

int ServiceImpl::Lookup(Call& c) {
  std::string name;
  UniqueFd dir, child;
  if (int err = GetName(c, CSVFS_A_NAME, &name)) return err == -EPERM ? -ENOENT : err;
  if (int err = OpenFh(c, CSVFS_A_PARENT_FH, O_PATH | O_DIRECTORY, &dir)) return err;
  if (int err = LowerFs::OpenChild(dir.get(), name, &child)) return err;
  return PutEntry(c, child.get());
}

int ServiceImpl::Getattr(Call& c) {
  UniqueFd fd;
  if (int err = OpenFh(c, CSVFS_A_FH, O_PATH, &fd)) return err;
  return PutAttr(c, fd.get());
}

int ServiceImpl::Setattr(Call& c) {
  auto sa = c.req.GetStruct<csvfs_setattr>(CSVFS_A_SETATTR);
  if (!sa || (sa->valid & ~CSVFS_SETATTR_ALL)) return -EINVAL;
  UniqueFd fd;
  FileKey key;
  struct stat st {};
  if (int err = OpenFhKey(c, O_PATH, &fd, &key, &st)) return err;
  if (sa->valid & CSVFS_SETATTR_SIZE) {
    if (S_ISDIR(st.st_mode)) return -EISDIR;
    if (!S_ISREG(st.st_mode)) return -EINVAL;
    if (int err = Truncate(key, st, sa->size, c.node)) return err;
  }
  if (int err = SetOwnerModeTimes(fd.get(), st, *sa)) return err;
  if (int err = SyncInode(key, st)) return err;
  return PutAttr(c, fd.get());
}

int ServiceImpl::SyncInode(const FileKey& key, const struct stat& st) {
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return 0;
  UniqueFd fd;
  if (int err = fs_->Open(key, S_ISDIR(st.st_mode) ? O_RDONLY | O_DIRECTORY : O_RDONLY, &fd))
    return err;
  return ::fsync(fd.get()) == 0 ? 0 : LastError();
}

// Owner before mode (chown clears set-id bits), times last. CTIME cannot
// be set on Linux: the kernel stamps it on every change.
int ServiceImpl::SetOwnerModeTimes(int fd, const struct stat& st, const csvfs_setattr& sa) {
  const uint32_t v = sa.valid;
  if (v & (CSVFS_SETATTR_UID | CSVFS_SETATTR_GID)) {
    uid_t uid = (v & CSVFS_SETATTR_UID) ? sa.uid : static_cast<uid_t>(-1);
    gid_t gid = (v & CSVFS_SETATTR_GID) ? sa.gid : static_cast<gid_t>(-1);
    if (::fchownat(fd, "", uid, gid, AT_EMPTY_PATH) != 0) return LastError();
  }
  if (v & CSVFS_SETATTR_MODE) {
    if (S_ISLNK(st.st_mode)) return -EOPNOTSUPP;
    if (int err = ChmodFd(fd, sa.mode & 07777)) return err;
  }
  if (!(v & (CSVFS_SETATTR_ATIME | CSVFS_SETATTR_MTIME | CSVFS_SETATTR_ATIME_NOW |
             CSVFS_SETATTR_MTIME_NOW)))
    return 0;
  if (sa.atime_nsec >= 1000000000 || sa.mtime_nsec >= 1000000000) return -EINVAL;
  timespec ts[2] = {
      SetattrTime(v, CSVFS_SETATTR_ATIME, CSVFS_SETATTR_ATIME_NOW, sa.atime, sa.atime_nsec),
      SetattrTime(v, CSVFS_SETATTR_MTIME, CSVFS_SETATTR_MTIME_NOW, sa.mtime, sa.mtime_nsec)};
  if (::utimensat(fd, "", ts, AT_EMPTY_PATH) != 0) return LastError();
  return 0;
}

// Creates (or, without O_EXCL, opens) a regular file, O_DIRECT. The mode is
// applied exactly: the daemon's umask must not change what the node asked.
int ServiceImpl::CreateOpen(int dirfd, const std::string& name, int flags, mode_t mode,
                            UniqueFd* fd, bool* created) {
  *created = false;
  const int base = (flags & (O_ACCMODE | O_NONBLOCK | O_SYNC | O_DSYNC | O_NOATIME)) | O_NOFOLLOW |
                   O_CLOEXEC | O_NOCTTY | O_DIRECT;
  fd->Reset(::openat(dirfd, name.c_str(), base | O_CREAT | O_EXCL, mode));
  if (fd->valid()) {
    *created = true;
    struct stat st {};
    if (::fstat(fd->get(), &st) == 0 && (st.st_mode & 07777) != mode) ::fchmod(fd->get(), mode);
    return 0;
  }
  if (errno != EEXIST || (flags & O_EXCL)) return LastError();
  // It exists: open it as OPEN would, never a FIFO or device here.
  UniqueFd path;
  struct stat st {};
  FileKey key;
  bool direct = false;
  if (int err = LowerFs::OpenChild(dirfd, name, &path)) return err;
  if (::fstat(path.get(), &st) != 0) return LastError();
  if (S_ISLNK(st.st_mode)) return -ELOOP;
  if (int err = fs_->HandleOf(path.get(), &key)) return err;
  return ReopenRegular(key, st, base & ~(O_DIRECT | O_NOFOLLOW), fd, &direct);
}

int ServiceImpl::Create(Call& c) {
  std::string name;
  UniqueFd dir;
  const int flags = static_cast<int>(*c.req.GetU32(CSVFS_A_FLAGS));
  const mode_t mode = *c.req.GetU32(CSVFS_A_MODE);
  if ((mode & S_IFMT) && !S_ISREG(mode)) return -EINVAL;
  if ((flags & O_ACCMODE) == O_ACCMODE) return -EINVAL;
  if (int err = GetName(c, CSVFS_A_NAME, &name)) return err;
  if (int err = OpenFh(c, CSVFS_A_PARENT_FH, O_PATH | O_DIRECTORY, &dir)) return err;
  auto file = std::make_shared<OpenFile>();
  bool created = false;
  if (int err = CreateOpen(dir.get(), name, flags, mode & 07777, &file->fd, &created)) return err;
  if (created) {
    if (int err = ApplyCreator(c, dir.get(), file->fd.get())) return err;
  }
  struct stat st {};
  if (int err = fs_->HandleOf(file->fd.get(), &file->key)) return err;
  if (::fstat(file->fd.get(), &st) != 0) return LastError();
  file->node = c.node;
  file->accmode = flags & O_ACCMODE;
  file->type = S_IFREG;
  file->direct = true;
  const bool writes = file->accmode != O_RDONLY;
  if (writes && (flags & O_TRUNC) && st.st_size > 0) {
    if (int err = Truncate(file->key, st, 0, c.node)) return err;
  }
  BreakLeases(file->key, c.node, writes ? CSVFS_LEASE_WRITE : CSVFS_LEASE_READ);
  if (int err = PutEntry(c, file->fd.get())) return err;
  return AddOpen(c, std::move(file));
}

// The daemon creates as root; the inode belongs to the node's caller. In a
// set-gid directory the group stays the inherited one, as the VFS would do.
int ServiceImpl::ApplyCreator(const Call& c, int dirfd, int fd) {
  auto uid = c.req.GetU32(CSVFS_A_UID);
  auto gid = c.req.GetU32(CSVFS_A_GID);
  if (!uid && !gid) return 0;
  struct stat dir {};
  if (::fstat(dirfd, &dir) != 0) return LastError();
  const gid_t group = (!gid || (dir.st_mode & S_ISGID)) ? static_cast<gid_t>(-1) : *gid;
  const uid_t owner = uid ? *uid : static_cast<uid_t>(-1);
  if (::fchownat(fd, "", owner, group, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0)
    return LastError();
  return 0;
}

// After mknod/mkdir: the owner and the mode exactly as asked (plus a
// directory's inherited set-gid bit), then FH and ATTR. chown comes first:
// it clears set-id bits that the chmod then restores.
int ServiceImpl::FinishCreate(Call& c, int dirfd, const std::string& name, mode_t mode) {
  UniqueFd child;
  struct stat st {};
  if (int err = LowerFs::OpenChild(dirfd, name, &child)) return err;
  if (int err = ApplyCreator(c, dirfd, child.get())) return err;
  if (::fstat(child.get(), &st) != 0) return LastError();
  mode_t want = (mode & 07777) | (S_ISDIR(st.st_mode) ? (st.st_mode & S_ISGID) : 0);
  if ((st.st_mode & 07777) != want) {
    if (int err = ChmodFd(child.get(), want)) return err;
  }
  return PutEntry(c, child.get());
}

int ServiceImpl::Mknod(Call& c) {
  std::string name;
  UniqueFd dir;
  const mode_t mode = *c.req.GetU32(CSVFS_A_MODE);
  const dev_t rdev = *c.req.GetU32(CSVFS_A_RDEV);  // new_encode_dev == glibc's
  const mode_t type = mode & S_IFMT;
  if (type != S_IFREG && type != S_IFCHR && type != S_IFBLK && type != S_IFIFO && type != S_IFSOCK)
    return -EINVAL;
  if (int err = GetName(c, CSVFS_A_NAME, &name)) return err;
  if (int err = OpenFh(c, CSVFS_A_PARENT_FH, O_PATH | O_DIRECTORY, &dir)) return err;
  if (::mknodat(dir.get(), name.c_str(), mode, rdev) != 0) return LastError();
  return FinishCreate(c, dir.get(), name, mode);
}

int ServiceImpl::Mkdir(Call& c) {
  std::string name;
  UniqueFd dir;
  const mode_t mode = *c.req.GetU32(CSVFS_A_MODE) & 07777;
  if (int err = GetName(c, CSVFS_A_NAME, &name)) return err;
  if (int err = OpenFh(c, CSVFS_A_PARENT_FH, O_PATH | O_DIRECTORY, &dir)) return err;
  if (::mkdirat(dir.get(), name.c_str(), mode) != 0) return LastError();
  return FinishCreate(c, dir.get(), name, mode);
}

int ServiceImpl::Symlink(Call& c) {
  std::string name;
  UniqueFd dir, child;
  auto target = c.req.GetString(CSVFS_A_TARGET);
  if (!target || target->empty() || target->size() >= CSVFS_MAX_PATH) return -EINVAL;
  if (int err = GetName(c, CSVFS_A_NAME, &name)) return err;
  if (int err = OpenFh(c, CSVFS_A_PARENT_FH, O_PATH | O_DIRECTORY, &dir)) return err;
  if (::symlinkat(std::string(*target).c_str(), dir.get(), name.c_str()) != 0) return LastError();
  if (int err = LowerFs::OpenChild(dir.get(), name, &child)) return err;
  if (int err = ApplyCreator(c, dir.get(), child.get())) return err;
  return PutEntry(c, child.get());
}

int ServiceImpl::Link(Call& c) {
  std::string name;
  UniqueFd file, dir;
  if (int err = GetName(c, CSVFS_A_NEW_NAME, &name)) return err;
  if (int err = OpenFh(c, CSVFS_A_FH, O_PATH, &file)) return err;
  if (int err = OpenFh(c, CSVFS_A_NEW_PARENT_FH, O_PATH | O_DIRECTORY, &dir)) return err;
  if (::linkat(file.get(), "", dir.get(), name.c_str(), AT_EMPTY_PATH) != 0) return LastError();
  return PutAttr(c, file.get());
}

int ServiceImpl::VictimKey(int dirfd, const std::string& name, std::optional<FileKey>* key) const {
  UniqueFd child;
  struct stat st {};
  if (LowerFs::OpenChild(dirfd, name, &child) != 0) return 0;  // the syscall will say
  if (::fstat(child.get(), &st) != 0) return LastError();
  if (!S_ISREG(st.st_mode) || st.st_nlink != 1) return 0;  // no blocks are freed
  FileKey k;
  if (int err = fs_->HandleOf(child.get(), &k)) return err;
  *key = std::move(k);
  return 0;
}

// unlinkat, after recalling other nodes' layouts of a file losing its last
// link (its blocks are freed once nobody has it open).
int ServiceImpl::RemoveEntry(Call& c, int dirfd, const std::string& name, int at_flags) {
  std::optional<FileKey> victim;
  if (!(at_flags & AT_REMOVEDIR)) {
    if (int err = VictimKey(dirfd, name, &victim)) return err;
  }
  std::optional<ExclusiveGuard> guard;
  int64_t orphan = 0;
  if (victim) {
    guard.emplace(&layout_gate_, *victim);
    RecallLayouts(*victim, Range{}, c.node);
    orphan = OrphanIfOpen(dirfd, name, *victim);
    if (orphan < 0) return static_cast<int>(orphan);
  }
  if (::unlinkat(dirfd, name.c_str(), at_flags) != 0) {
    int err = LastError();
    UndoOrphan(orphan);
    return err;
  }
  return 0;
}

int ServiceImpl::Remove(Call& c, int at_flags) {
  std::string name;
  UniqueFd dir;
  if (int err = GetName(c, CSVFS_A_NAME, &name)) return err;
  if (int err = OpenFh(c, CSVFS_A_PARENT_FH, O_PATH | O_DIRECTORY, &dir)) return err;
  return RemoveEntry(c, dir.get(), name, at_flags);
}

int ServiceImpl::Unlink(Call& c) { return Remove(c, 0); }
int ServiceImpl::Rmdir(Call& c) { return Remove(c, AT_REMOVEDIR); }

// Two names of one file: a rename between them changes nothing (POSIX).
static bool SameInode(int dir, const std::string& name, int new_dir, const std::string& new_name) {
  struct stat a {
  }, b{};
  return ::fstatat(dir, name.c_str(), &a, AT_SYMLINK_NOFOLLOW) == 0 &&
         ::fstatat(new_dir, new_name.c_str(), &b, AT_SYMLINK_NOFOLLOW) == 0 &&
         a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

int ServiceImpl::Rename(Call& c) {
  std::string name, new_name;
  UniqueFd dir, new_dir;
  const uint32_t flags = *c.req.GetU32(CSVFS_A_FLAGS);
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) return -EINVAL;
  if (int err = GetName(c, CSVFS_A_NAME, &name)) return err;
  if (int err = GetName(c, CSVFS_A_NEW_NAME, &new_name)) return err;
  if (int err = OpenFh(c, CSVFS_A_PARENT_FH, O_PATH | O_DIRECTORY, &dir)) return err;
  if (int err = OpenFh(c, CSVFS_A_NEW_PARENT_FH, O_PATH | O_DIRECTORY, &new_dir)) return err;
  std::optional<FileKey> victim;  // a file replaced by the rename
  if (!(flags & (RENAME_NOREPLACE | RENAME_EXCHANGE))) {
    if (int err = VictimKey(new_dir.get(), new_name, &victim)) return err;
  }
  std::optional<ExclusiveGuard> guard;
  int64_t orphan = 0;
  if (victim && !SameInode(dir.get(), name, new_dir.get(), new_name)) {
    guard.emplace(&layout_gate_, *victim);
    RecallLayouts(*victim, Range{}, c.node);
    orphan = OrphanIfOpen(new_dir.get(), new_name, *victim);
    if (orphan < 0) return static_cast<int>(orphan);
  }
  if (::renameat2(dir.get(), name.c_str(), new_dir.get(), new_name.c_str(), flags) != 0) {
    int err = LastError();
    UndoOrphan(orphan);
    return err;
  }
  return 0;
}

// Entries from the lower directory's own positions (XFS dataptr, ext4
// htree hash): a COOKIE stays valid however large the directory. "." and
// ".." are not sent; the node knows its own and its parent's inodes.
int ServiceImpl::Readdir(Call& c) {
  UniqueFd dir;
  const uint64_t cookie = *c.req.GetU64(CSVFS_A_COOKIE);
  if (int err = OpenFh(c, CSVFS_A_FH, O_RDONLY | O_DIRECTORY, &dir)) return err;
  if (::lseek(dir.get(), static_cast<off_t>(cookie), SEEK_SET) < 0) return LastError();
  std::vector<uint8_t> packed;
  std::vector<char> buf(kDirentBuffer);
  bool eof = false;
  for (;;) {
    long n = ::syscall(SYS_getdents64, dir.get(), buf.data(), buf.size());
    if (n < 0) return LastError();
    if (n == 0) {
      eof = true;
      break;
    }
    std::vector<abi::DirEntry> batch;
    for (long at = 0; at < n;) {
      const auto* d = reinterpret_cast<const LinuxDirent64*>(buf.data() + at);
      at += d->d_reclen;
      std::string_view entry(d->d_name);
      if (entry == "." || entry == ".." || entry == OpLog::kName || entry == kOrphanDir) continue;
      batch.push_back({d->d_ino, static_cast<uint64_t>(d->d_off), d->d_type, std::string(entry)});
    }
    if (abi::PackDirents(batch, &packed) < batch.size()) break;  // reply is full
  }
  c.reply.PutBinary(CSVFS_A_DIRENTS, packed);
  if (eof) c.reply.PutFlag(CSVFS_A_EOF);
  return 0;
}

int ServiceImpl::Readlink(Call& c) {
  UniqueFd fd;
  struct stat st {};
  if (int err = OpenFh(c, CSVFS_A_FH, O_PATH, &fd)) return err;
  if (::fstat(fd.get(), &st) != 0) return LastError();
  if (!S_ISLNK(st.st_mode)) return -EINVAL;
  std::vector<char> buf(CSVFS_MAX_PATH);
  ssize_t n = ::readlinkat(fd.get(), "", buf.data(), buf.size());
  if (n < 0) return LastError();
  if (static_cast<size_t>(n) >= buf.size()) return -ENAMETOOLONG;
  c.reply.PutString(CSVFS_A_TARGET, std::string_view(buf.data(), static_cast<size_t>(n)));
  return 0;
}

int ServiceImpl::Statfs(Call& c) {
  struct statfs s {};
  if (::fstatfs(fs_->mount_fd(), &s) != 0) return LastError();
  csvfs_statfs out{};
  out.blocks = s.f_blocks;
  out.bfree = s.f_bfree;
  out.bavail = s.f_bavail;
  out.files = s.f_files;
  out.ffree = s.f_ffree;
  out.bsize = static_cast<uint32_t>(s.f_bsize);
  out.namelen = static_cast<uint32_t>(s.f_namelen);
  out.frsize = static_cast<uint32_t>(s.f_frsize);
  c.reply.PutStruct(CSVFS_A_STATFS, out);
  return 0;
}

// xattrs need a real fd: regular files, directories and FIFOs (opened
// O_NONBLOCK, so never waiting for a writer). Symlinks and device nodes:
// -EOPNOTSUPP (see docs/coordinator.md).
int ServiceImpl::OpenXattrFd(const Call& c, UniqueFd* fd) const {
  UniqueFd path;
  struct stat st {};
  if (int err = OpenFh(c, CSVFS_A_FH, O_PATH, &path)) return err;
  if (::fstat(path.get(), &st) != 0) return LastError();
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISFIFO(st.st_mode))
    return OpenFh(c, CSVFS_A_FH, O_RDONLY | O_NONBLOCK, fd);
  return -EOPNOTSUPP;
}

int ServiceImpl::Getxattr(Call& c) {
  UniqueFd fd;
  std::string name(*c.req.GetString(CSVFS_A_XATTR_NAME));
  const size_t size = std::min<size_t>(*c.req.GetU32(CSVFS_A_SIZE), CSVFS_MAX_XATTR_VALUE);
  if (int err = OpenXattrFd(c, &fd)) return err;
  std::vector<uint8_t> value(size);
  ssize_t n = ::fgetxattr(fd.get(), name.c_str(), size ? value.data() : nullptr, size);
  if (n < 0) return LastError();
  if (size == 0) {
    c.reply.PutU32(CSVFS_A_SIZE, static_cast<uint32_t>(n));  // the size needed
    return 0;
  }
  value.resize(static_cast<size_t>(n));
  c.reply.PutBinary(CSVFS_A_XATTR_VALUE, value);
  return 0;
}

int ServiceImpl::Setxattr(Call& c) {
  UniqueFd fd;
  std::string name(*c.req.GetString(CSVFS_A_XATTR_NAME));
  auto value = *c.req.GetBinary(CSVFS_A_XATTR_VALUE);
  const uint32_t flags = *c.req.GetU32(CSVFS_A_FLAGS);
  if (flags & ~static_cast<uint32_t>(XATTR_CREATE | XATTR_REPLACE)) return -EINVAL;
  if (int err = OpenXattrFd(c, &fd)) return err;
  if (::fsetxattr(fd.get(), name.c_str(), value.data(), value.size(), static_cast<int>(flags)))
    return LastError();
  return 0;
}

int ServiceImpl::Listxattr(Call& c) {
  UniqueFd fd;
  const size_t size = std::min<size_t>(*c.req.GetU32(CSVFS_A_SIZE), CSVFS_MAX_XATTR_LIST);
  if (int err = OpenXattrFd(c, &fd)) return err;
  std::vector<uint8_t> list(size);
  ssize_t n = ::flistxattr(fd.get(), size ? reinterpret_cast<char*>(list.data()) : nullptr, size);
  if (n < 0) return LastError();
  if (size == 0) {
    c.reply.PutU32(CSVFS_A_SIZE, static_cast<uint32_t>(n));
    return 0;
  }
  list.resize(static_cast<size_t>(n));
  c.reply.PutBinary(CSVFS_A_XATTR_VALUE, list);
  return 0;
}

int ServiceImpl::Removexattr(Call& c) {
  UniqueFd fd;
  std::string name(*c.req.GetString(CSVFS_A_XATTR_NAME));
  if (int err = OpenXattrFd(c, &fd)) return err;
  if (::fremovexattr(fd.get(), name.c_str()) != 0) return LastError();
  return 0;
}

}  // namespace csv::coord
