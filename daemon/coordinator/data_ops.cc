// Open state and data: OPEN/RELEASE/FSYNC, READ/WRITE (file-system
// redirected), BLOCK_READ/BLOCK_WRITE (block-level redirected), FALLOCATE,
// LSEEK, and truncation.
//
// Caching policy: the coordinator never keeps file data in its page cache.
// Reads always go O_DIRECT, widened to the device's logical block and
// copied out of an aligned bounce buffer. Aligned writes go O_DIRECT.
// Unaligned writes go through a buffered fd (the page lock makes the
// read-modify-write of a partial block atomic against other writers), then
// fdatasync and POSIX_FADV_DONTNEED drop the pages again.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>

#include "coordinator/service_impl.h"

namespace csv::coord {
namespace {

constexpr uint64_t kMemAlign = 4096;
constexpr uint64_t kMaxOffset = static_cast<uint64_t>(INT64_MAX);

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// A buffer aligned for O_DIRECT.
struct AlignedBuffer {
  explicit AlignedBuffer(uint64_t size)
      : data(static_cast<uint8_t*>(std::aligned_alloc(kMemAlign, RoundUp(size, kMemAlign)))) {}
  ~AlignedBuffer() { std::free(data); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  uint8_t* data;
};

// pread/pwrite until done, EOF (reads) or an error; bytes moved or -errno.
int64_t FullPread(int fd, uint8_t* buf, uint64_t len, uint64_t off) {
  uint64_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(fd, buf + done, len - done, static_cast<off_t>(off + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return LastError();
    if (n == 0) break;
    done += static_cast<uint64_t>(n);
  }
  return static_cast<int64_t>(done);
}

// rwf: pwritev2 flags (RWF_DSYNC).
int FullPwrite(int fd, const uint8_t* buf, uint64_t len, uint64_t off, int rwf = 0) {
  uint64_t done = 0;
  while (done < len) {
    iovec iov{const_cast<uint8_t*>(buf + done), len - done};
    ssize_t n = ::pwritev2(fd, &iov, 1, static_cast<off_t>(off + done), rwf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return LastError();
    if (n == 0) return -EIO;
    done += static_cast<uint64_t>(n);
  }
  return 0;
}

constexpr int kAllocFlags = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE |
                            FALLOC_FL_ZERO_RANGE | FALLOC_FL_INSERT_RANGE | FALLOC_FL_UNSHARE_RANGE;
// Modes that free or move blocks: other nodes' layouts are recalled first.
constexpr int kMovesBlocks = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE |
                             FALLOC_FL_ZERO_RANGE | FALLOC_FL_INSERT_RANGE |
                             FALLOC_FL_UNSHARE_RANGE;

}  // namespace

// reclaim: the OPEN_ID an earlier coordinator gave this open (0: a new open).
int ServiceImpl::AddOpen(Call& c, std::shared_ptr<OpenFile> file, uint64_t reclaim) {
  uint32_t lease = CSVFS_LEASE_NONE;
  uint64_t id = reclaim;
  {
    std::lock_guard lock(mu_);
    // Ids of an earlier coordinator (still held by nodes) must not name a
    // new open here: the first open of this service starts at a random id.
    if (next_open_id_ == 1) next_open_id_ = (std::random_device{}() * 0x10000ull + 1) << 16;
    while (!id && opens_.count(next_open_id_)) ++next_open_id_;
    if (!id) id = next_open_id_++;
    if (auto it = opens_.find(id); reclaim && it != opens_.end()) {
      // A reclaim re-sent: fine if it is this node's open of this file.
      return it->second->node == file->node && it->second->key == file->key ? 0 : -EEXIST;
    }
    lease = leases_.Level(file->key, file->node);
    opens_.emplace(id, std::move(file));
  }
  c.reply.PutU64(CSVFS_A_OPEN_ID, id);
  if (lease != CSVFS_LEASE_NONE) c.reply.PutU32(CSVFS_A_LEASE, lease);
  return 0;
}

// With an OPEN_ID: a node reclaims an open it made under an earlier
// coordinator (its daemon re-sends every open after a failover or a move,
// see orphans.cc); it keeps its id, and opening has no side effects.
int ServiceImpl::Open(Call& c) {
  const uint64_t reclaim = c.req.GetU64(CSVFS_A_OPEN_ID).value_or(0);
  int flags = static_cast<int>(*c.req.GetU32(CSVFS_A_FLAGS));
  if (reclaim) flags &= ~(O_TRUNC | O_CREAT | O_EXCL);
  const int accmode = flags & O_ACCMODE;
  if (accmode == O_ACCMODE) return -EINVAL;
  auto file = std::make_shared<OpenFile>();
  UniqueFd path;
  struct stat st {};
  if (int err = OpenFhKey(c, O_PATH, &path, &file->key, &st)) return err;
  if ((flags & O_DIRECTORY) && !S_ISDIR(st.st_mode)) return -ENOTDIR;
  if (S_ISLNK(st.st_mode)) return -ELOOP;
  if (S_ISDIR(st.st_mode) && accmode != O_RDONLY) return -EISDIR;
  file->node = c.node;
  file->accmode = accmode;
  file->type = st.st_mode & S_IFMT;
  if (S_ISREG(st.st_mode)) {
    int extra = flags & (O_NOATIME | O_SYNC | O_DSYNC);
    if (int err = ReopenRegular(file->key, st, accmode | extra, &file->fd, &file->direct))
      return err;
    if (accmode != O_RDONLY && (flags & O_TRUNC) && st.st_size > 0) {
      if (int err = Truncate(file->key, st, 0, c.node)) return err;
    }
    if (!reclaim)
      BreakLeases(file->key, c.node, accmode != O_RDONLY ? CSVFS_LEASE_WRITE : CSVFS_LEASE_READ);
  } else if (S_ISDIR(st.st_mode)) {
    if (int err = fs_->Open(file->key, O_RDONLY | O_DIRECTORY, &file->fd)) return err;
  }  // FIFOs, sockets, devices: node-local objects, no lower fd
  return AddOpen(c, std::move(file), reclaim);
}

int ServiceImpl::Release(Call& c) {
  const uint64_t id = *c.req.GetU64(CSVFS_A_OPEN_ID);
  std::shared_ptr<OpenFile> file;  // closed outside the lock
  std::lock_guard lock(mu_);
  auto it = opens_.find(id);
  // Unknown: already released (a RELEASE re-sent after a daemon restart) or
  // forgotten with its node's daemon (ForgetNode), or opened on an earlier
  // coordinator. Nothing is left to release.
  if (it == opens_.end()) return 0;
  if (it->second->node != c.node) return -EBADF;
  file = std::move(it->second);
  opens_.erase(it);
  // Its last open anywhere: an orphan goes now (after the grace period).
  RemoveOrphans(TakeUnusedOrphans());
  return 0;
}

int ServiceImpl::Fsync(Call& c) {
  std::shared_ptr<OpenFile> file;
  if (c.req.Has(CSVFS_A_OPEN_ID)) {
    if (int err = IoFile(c, -1, &file)) return err;
  } else {
    UniqueFd path;
    file = std::make_shared<OpenFile>();
    struct stat st {};
    if (int err = OpenFhKey(c, O_PATH, &path, &file->key, &st)) return err;
    if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
      if (int err = fs_->Open(file->key, O_RDONLY, &file->fd)) return err;
    }
  }
  if (!file->fd.valid()) return 0;  // nothing of it lives here
  int rc = c.req.Has(CSVFS_A_DATASYNC) ? ::fdatasync(file->fd.get()) : ::fsync(file->fd.get());
  return rc == 0 ? 0 : LastError();
}

// The file a READ/WRITE/FSYNC works on: the node's OPEN_ID if given (it must
// be this node's, of this FH, with the access needed; accmode -1: any),
// else a transient O_DIRECT open of the FH. An OPEN_ID that this service
// does not know (opened on an earlier coordinator, or dropped by ForgetNode
// when the node's daemon restarted) is served like no OPEN_ID: the opens are
// not reclaimed, but the client's I/O goes on (its kernel checked access).
int ServiceImpl::IoFile(const Call& c, int accmode, std::shared_ptr<OpenFile>* file) {
  if (auto id = c.req.GetU64(CSVFS_A_OPEN_ID)) {
    auto fh = c.req.GetBinary(CSVFS_A_FH);
    std::lock_guard lock(mu_);
    if (auto it = opens_.find(*id); it != opens_.end()) {
      if (it->second->node != c.node || !fh ||
          !std::equal(fh->begin(), fh->end(), it->second->key.begin(), it->second->key.end()))
        return -EBADF;
      const auto& f = it->second;
      if (accmode >= 0 && f->type == S_IFDIR) return -EISDIR;
      if (accmode >= 0 && f->type != S_IFREG) return -EINVAL;
      if ((accmode == O_WRONLY && f->accmode == O_RDONLY) ||
          (accmode == O_RDONLY && f->accmode == O_WRONLY))
        return -EBADF;
      *file = f;
      return 0;
    }
  }
  auto f = std::make_shared<OpenFile>();
  UniqueFd path;
  struct stat st {};
  if (int err = OpenFhKey(c, O_PATH, &path, &f->key, &st)) return err;
  f->node = c.node;
  f->accmode = accmode < 0 ? O_RDONLY : accmode;
  f->type = st.st_mode & S_IFMT;
  if (int err = ReopenRegular(f->key, st, f->accmode, &f->fd, &f->direct)) return err;
  *file = std::move(f);
  return 0;
}

int ServiceImpl::ReadFile(const OpenFile& f, uint64_t off, uint64_t len,
                          std::vector<uint8_t>* out) const {
  out->clear();
  if (len == 0) return 0;
  const uint64_t start = off / dio_align_ * dio_align_;
  const uint64_t end = RoundUp(off + len, dio_align_);
  AlignedBuffer buf(end - start);
  if (!buf.data) return -ENOMEM;
  int64_t n = FullPread(f.fd.get(), buf.data, end - start, start);
  if (n < 0) return static_cast<int>(n);
  const uint64_t skip = off - start;
  if (static_cast<uint64_t>(n) > skip) {
    uint64_t got = std::min<uint64_t>(static_cast<uint64_t>(n) - skip, len);
    out->assign(buf.data + skip, buf.data + skip + got);
  }
  return 0;
}

int ServiceImpl::WriteFile(const OpenFile& f, uint64_t off, std::span<const uint8_t> data) const {
  if (data.empty()) return 0;
  if (f.direct && off % dio_align_ == 0 && data.size() % dio_align_ == 0) {
    AlignedBuffer buf(data.size());
    if (!buf.data) return -ENOMEM;
    std::memcpy(buf.data, data.data(), data.size());
    // RWF_DSYNC: a write that allocates or extends the file is answered
    // only once the lower filesystem's log holds the change, so that a
    // coordinator that dies next loses nothing a node was told is written
    // (the node's application sees no failover). An overwrite of written
    // blocks needs no log force, only the device's cache flush.
    return FullPwrite(f.fd.get(), buf.data, data.size(), off, RWF_DSYNC);
  }
  UniqueFd buffered;
  if (int err = fs_->Open(f.key, O_WRONLY, &buffered)) return err;
  if (int err = FullPwrite(buffered.get(), data.data(), data.size(), off)) return err;
  if (::fdatasync(buffered.get()) != 0) return LastError();
  ::posix_fadvise(buffered.get(), static_cast<off_t>(off), static_cast<off_t>(data.size()),
                  POSIX_FADV_DONTNEED);
  return 0;
}

int ServiceImpl::Read(Call& c) {
  const uint64_t off = *c.req.GetU64(CSVFS_A_OFFSET);
  const uint64_t len = *c.req.GetU64(CSVFS_A_LENGTH);
  if (len > CSVFS_MAX_IO) return -EINVAL;
  if (off > kMaxOffset - len) return -EINVAL;
  std::shared_ptr<OpenFile> file;
  if (int err = IoFile(c, O_RDONLY, &file)) return err;
  std::vector<uint8_t> data;
  if (int err = ReadFile(*file, off, len, &data)) return err;
  c.reply.PutBinary(CSVFS_A_DATA, data);
  return 0;
}

// A redirected write may fill holes or unwritten extents that other nodes
// hold layouts of (which say "zeros"): those layouts are recalled first.
int ServiceImpl::Write(Call& c) {
  const uint64_t off = *c.req.GetU64(CSVFS_A_OFFSET);
  const auto data = *c.req.GetBinary(CSVFS_A_DATA);
  if (off > kMaxOffset - data.size()) return -EFBIG;
  std::shared_ptr<OpenFile> file;
  if (int err = IoFile(c, O_WRONLY, &file)) return err;
  BreakLeases(file->key, c.node, CSVFS_LEASE_WRITE);
  const Range range{off / 512 * 512, RoundUp(off + data.size(), 512)};
  bool stale = false;
  {
    std::lock_guard lock(mu_);
    stale = !layouts_.HoldersNotWritten(file->key, range, c.node).empty();
  }
  std::optional<ExclusiveGuard> guard;
  if (stale) {
    guard.emplace(&layout_gate_, file->key);
    RecallLayouts(file->key, range, c.node);
  }
  if (int err = WriteFile(*file, off, data)) return err;
  return PutAttr(c, file->fd.get());
}

int ServiceImpl::CheckDeviceRange(uint64_t off, uint64_t len) const {
  if (len == 0 || off % 512 || len % 512) return -EINVAL;
  if (off % dev_block_ || len % dev_block_) return -EINVAL;  // a 4Kn device
  if (off > dev_size_ || len > dev_size_ - off) return -ERANGE;
  return 0;
}

int ServiceImpl::BlockRead(Call& c) {
  const uint64_t off = *c.req.GetU64(CSVFS_A_DEV_OFFSET);
  const uint64_t len = *c.req.GetU64(CSVFS_A_LENGTH);
  if (len > CSVFS_MAX_IO) return -EINVAL;
  if (int err = CheckDeviceRange(off, len)) return err;
  AlignedBuffer buf(len);
  if (!buf.data) return -ENOMEM;
  int64_t n = FullPread(dev_fd_.get(), buf.data, len, off);
  if (n < 0) return static_cast<int>(n);
  if (static_cast<uint64_t>(n) != len) return -EIO;
  c.reply.PutBinary(CSVFS_A_DATA, std::span<const uint8_t>(buf.data, len));
  return 0;
}

// Only into blocks the node holds an RW layout of, WRITTEN: a stale or
// forged device offset must never overwrite metadata or another file.
int ServiceImpl::BlockWrite(Call& c) {
  const uint64_t off = *c.req.GetU64(CSVFS_A_DEV_OFFSET);
  const auto data = *c.req.GetBinary(CSVFS_A_DATA);
  if (int err = CheckDeviceRange(off, data.size())) return err;
  {
    std::lock_guard lock(mu_);
    if (!layouts_.CoversForWrite(c.node, off, data.size())) return -EPERM;
  }
  AlignedBuffer buf(data.size());
  if (!buf.data) return -ENOMEM;
  std::memcpy(buf.data, data.data(), data.size());
  return FullPwrite(dev_fd_.get(), buf.data, data.size(), off);
}

int ServiceImpl::Fallocate(Call& c) {
  const uint64_t off = *c.req.GetU64(CSVFS_A_OFFSET);
  const uint64_t len = *c.req.GetU64(CSVFS_A_LENGTH);
  const int mode = static_cast<int>(*c.req.GetU32(CSVFS_A_FLAGS));
  if (mode & ~kAllocFlags) return -EOPNOTSUPP;
  if (len == 0 || off > kMaxOffset - len) return -EINVAL;
  UniqueFd path, fd;
  FileKey key;
  struct stat st {};
  bool direct = false;
  if (int err = OpenFhKey(c, O_PATH, &path, &key, &st)) return err;
  if (int err = ReopenRegular(key, st, O_RDWR, &fd, &direct)) return err;
  // Any mode may change what other nodes cache (data or size).
  BreakLeases(key, c.node, CSVFS_LEASE_WRITE);
  std::optional<ExclusiveGuard> guard;
  if (mode & kMovesBlocks) {
    guard.emplace(&layout_gate_, key);
    bool shifts = mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE);
    RecallLayouts(key, {off / 512 * 512, shifts ? kToEof : RoundUp(off + len, 512)}, c.node);
  }
  if (::fallocate(fd.get(), mode, static_cast<off_t>(off), static_cast<off_t>(len)) != 0)
    return LastError();
  // Durable before the answer, like every change a node is told about.
  if (::fdatasync(fd.get()) != 0) return LastError();
  return PutAttr(c, fd.get());
}

int ServiceImpl::Lseek(Call& c) {
  const uint64_t off = *c.req.GetU64(CSVFS_A_OFFSET);
  const int whence = static_cast<int>(*c.req.GetU32(CSVFS_A_WHENCE));
  if (off > kMaxOffset || whence > SEEK_HOLE) return -EINVAL;
  UniqueFd path, fd;
  FileKey key;
  struct stat st {};
  bool direct = false;
  if (int err = OpenFhKey(c, O_PATH, &path, &key, &st)) return err;
  if (int err = ReopenRegular(key, st, O_RDONLY, &fd, &direct)) return err;
  off_t pos = ::lseek(fd.get(), static_cast<off_t>(off), whence);
  if (pos < 0) return LastError();
  c.reply.PutU64(CSVFS_A_OFFSET, static_cast<uint64_t>(pos));
  return 0;
}

// A new size breaks other nodes' caching leases (their cached pages and
// size would be stale). Shrinking also frees blocks: with the file's layout
// gate held, their layouts past the new size are recalled.
int ServiceImpl::Truncate(const FileKey& key, const struct stat& st, uint64_t size, uint32_t node) {
  if (size > kMaxOffset) return -EFBIG;
  UniqueFd fd;
  if (int err = fs_->Open(key, O_WRONLY, &fd)) return err;
  std::optional<ExclusiveGuard> guard;
  if (size != static_cast<uint64_t>(st.st_size)) BreakLeases(key, node, CSVFS_LEASE_WRITE);
  if (size < static_cast<uint64_t>(st.st_size)) {
    guard.emplace(&layout_gate_, key);
    RecallLayouts(key, {size / 512 * 512, kToEof}, node);
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return LastError();
  // The new size is durable before the answer (a coordinator crash must
  // not undo what a node was told; fdatasync writes a size change).
  if (::fdatasync(fd.get()) != 0) return LastError();
  return 0;
}

}  // namespace csv::coord
