// Layouts (LAYOUT_GET/RETURN/COMMIT and recalls), caching leases (LEASE_GET/
// RETURN and breaks) and cluster-wide locks (LOCK).
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "coordinator/service_impl.h"

namespace csv::coord {
namespace {

constexpr uint32_t kFiemapBatch = 128;
constexpr uint64_t kMaxRangeEnd = static_cast<uint64_t>(INT64_MAX) / 512 * 512;

// Flags after which an extent's blocks may not be read or written directly.
constexpr uint32_t kNotDirectSafe = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |
                                    FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_DATA_ENCRYPTED |
                                    FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_INLINE |
                                    FIEMAP_EXTENT_DATA_TAIL;

// DELALLOC doubles as "no direct mapping: ask again or redirect", since the
// ABI has no separate state for it (see docs/coordinator.md).
uint32_t ExtentState(uint32_t flags, uint32_t iomode) {
  if (flags & kNotDirectSafe) return CSVFS_EXT_DELALLOC;
  // A reflinked extent is shared with another file: writing it in place
  // would change both.
  if ((flags & FIEMAP_EXTENT_SHARED) && iomode == CSVFS_LAYOUT_RW) return CSVFS_EXT_DELALLOC;
  if (flags & FIEMAP_EXTENT_UNWRITTEN) return CSVFS_EXT_UNWRITTEN;
  return CSVFS_EXT_WRITTEN;
}

void AddExtent(std::vector<csvfs_extent>* out, uint64_t start, uint64_t end, uint64_t dev,
               uint32_t state) {
  if (start >= end || out->size() >= CSVFS_MAX_EXTENTS) return;
  if (start % 512 || end % 512 || dev % 512) state = CSVFS_EXT_DELALLOC;
  bool mapped = state == CSVFS_EXT_WRITTEN || state == CSVFS_EXT_UNWRITTEN;
  out->push_back({start, end - start, mapped ? dev : 0, state, 0});
}

Range RequestRange(uint64_t off, uint64_t len) {
  uint64_t start = off / 512 * 512;
  uint64_t end = (len > kMaxRangeEnd || off > kMaxRangeEnd - len) ? kMaxRangeEnd
                                                                  : (off + len + 511) / 512 * 512;
  return {start, end};
}

}  // namespace

// One FIEMAP pass over `want` (FIEMAP_FLAG_SYNC first, so delayed
// allocations get real blocks), gaps as HOLE, at most CSVFS_MAX_EXTENTS.
int ServiceImpl::MapExtents(int fd, Range want, uint32_t iomode,
                            std::vector<csvfs_extent>* out) const {
  std::vector<uint64_t> storage(
      (sizeof(fiemap) + kFiemapBatch * sizeof(fiemap_extent)) / sizeof(uint64_t) + 1);
  auto* fm = reinterpret_cast<fiemap*>(storage.data());
  uint64_t at = want.start;
  bool sync = true;
  while (at < want.end && out->size() < CSVFS_MAX_EXTENTS) {
    std::memset(fm, 0, sizeof *fm);
    fm->fm_start = at;
    fm->fm_length = want.end - at;
    fm->fm_flags = sync ? FIEMAP_FLAG_SYNC : 0;
    fm->fm_extent_count = kFiemapBatch;
    sync = false;
    if (::ioctl(fd, FS_IOC_FIEMAP, fm) != 0) return LastError();
    const uint64_t before = at;
    bool last = fm->fm_mapped_extents == 0;
    for (uint32_t i = 0; i < fm->fm_mapped_extents && at < want.end; ++i) {
      const fiemap_extent& fe = fm->fm_extents[i];
      uint64_t start = std::max<uint64_t>(fe.fe_logical, at);
      uint64_t end = std::min<uint64_t>(fe.fe_logical + fe.fe_length, want.end);
      if (start >= end) continue;
      AddExtent(out, at, start, 0, CSVFS_EXT_HOLE);
      AddExtent(out, start, end, fe.fe_physical + (start - fe.fe_logical),
                ExtentState(fe.fe_flags, iomode));
      at = end;
      last = last || (fe.fe_flags & FIEMAP_EXTENT_LAST);
    }
    if (last || at == before) break;
  }
  if (at < want.end) AddExtent(out, at, want.end, 0, CSVFS_EXT_HOLE);
  return 0;
}

int ServiceImpl::LayoutGet(Call& c) {
  const Range want = RequestRange(*c.req.GetU64(CSVFS_A_OFFSET), *c.req.GetU64(CSVFS_A_LENGTH));
  const uint32_t iomode = *c.req.GetU32(CSVFS_A_LAYOUT_IOMODE);
  if (want.start >= want.end) return -EINVAL;
  if (iomode != CSVFS_LAYOUT_READ && iomode != CSVFS_LAYOUT_RW) return -EINVAL;
  UniqueFd path, fd;
  FileKey key;
  struct stat st {};
  bool direct = false;
  if (int err = OpenFhKey(c, O_PATH, &path, &key, &st)) return err;
  if (int err = ReopenRegular(key, st, O_RDONLY, &fd, &direct)) return err;
  if (!layout_gate_.TryEnterShared(key)) return -EAGAIN;  // being recalled
  // A file without links is freed by XFS itself (last close, unmount, log
  // recovery) with no recall first: never hand out its blocks. Nor those of
  // an orphan: RemoveOrphans frees them without a recall. Checked inside
  // the gate, which an unlink holds across its recall.
  struct stat now {};
  if (::fstat(fd.get(), &now) != 0 || now.st_nlink == 0 || IsOrphan(now.st_ino)) {
    layout_gate_.LeaveShared(key);
    return -ESTALE;
  }
  std::vector<csvfs_extent> extents;
  int err = MapExtents(fd.get(), want, iomode, &extents);
  if (err == 0 && !extents.empty()) {
    const auto& tail = extents.back();
    std::lock_guard lock(mu_);
    layouts_.Grant(key, {c.node, {want.start, tail.file_offset + tail.length}, iomode, extents});
  }
  layout_gate_.LeaveShared(key);
  if (err) return err;
  c.reply.PutRaw(CSVFS_A_EXTENTS, extents.data(), extents.size() * sizeof(csvfs_extent));
  return 0;
}

// Keyed by the handle as sent: a returned layout of a deleted file is
// still forgotten.
int ServiceImpl::LayoutReturn(Call& c) {
  auto fh = c.req.GetBinary(CSVFS_A_FH);
  auto off = c.req.GetU64(CSVFS_A_OFFSET);
  auto len = c.req.GetU64(CSVFS_A_LENGTH);
  std::optional<Range> range;
  if (off && len) range = RequestRange(*off, *len);
  std::lock_guard lock(mu_);
  layouts_.Return(FileKey(fh->begin(), fh->end()), c.node, range);
  return 0;
}

// After direct writes: size grows (never shrinks here), times as given.
int ServiceImpl::LayoutCommit(Call& c) {
  auto sa = c.req.GetStruct<csvfs_setattr>(CSVFS_A_SETATTR);
  if (!sa) return -EINVAL;
  UniqueFd path;
  FileKey key;
  struct stat st {};
  if (int err = OpenFhKey(c, O_PATH, &path, &key, &st)) return err;
  if (!S_ISREG(st.st_mode)) return -EINVAL;
  if ((sa->valid & CSVFS_SETATTR_SIZE) && sa->size > static_cast<uint64_t>(st.st_size)) {
    if (int err = Truncate(key, st, sa->size, c.node)) return err;
  }
  csvfs_setattr times = *sa;
  times.valid &=
      CSVFS_SETATTR_ATIME | CSVFS_SETATTR_MTIME | CSVFS_SETATTR_ATIME_NOW | CSVFS_SETATTR_MTIME_NOW;
  if (int err = SetOwnerModeTimes(path.get(), st, times)) return err;
  if (int err = SyncInode(key, st)) return err;
  return PutAttr(c, path.get());
}

void ServiceImpl::RecallLayouts(const FileKey& key, const Range& range, uint32_t node) {
  std::vector<uint32_t> holders;
  {
    std::lock_guard lock(mu_);
    holders = layouts_.Holders(key, range, node);
  }
  for (uint32_t holder : holders) {
    if (!options_.call_node) break;
    abi::Message m = NodeRequest(CSVFS_CMD_LAYOUT_RECALL, key);
    m.PutU64(CSVFS_A_OFFSET, range.start);
    m.PutU64(CSVFS_A_LENGTH, range.end - range.start);
    // Any answer ends the wait: an ack, or -ETIMEDOUT once the holder's
    // lease ran out (it has stopped all direct I/O by then).
    options_.call_node(holder, m);
  }
  std::lock_guard lock(mu_);
  layouts_.Drop(key, range);
}

// ---- leases -------------------------------------------------------------

// What `node` may have: nothing while another node has the file open for
// writing, READ at most while others have it open for reading.
uint32_t ServiceImpl::GrantableLease(const FileKey& key, uint32_t node, uint32_t wanted) const {
  uint32_t granted = wanted;
  std::lock_guard lock(mu_);
  for (const auto& [id, f] : opens_) {
    if (f->node == node || f->key != key) continue;
    if (f->accmode != O_RDONLY) return CSVFS_LEASE_NONE;
    granted = std::min<uint32_t>(granted, CSVFS_LEASE_READ);
  }
  return granted;
}

void ServiceImpl::BreakLeases(const FileKey& key, uint32_t node, uint32_t wanted) {
  {
    std::lock_guard lock(mu_);
    if (leases_.Conflicts(key, node, wanted).empty()) return;  // the common case
  }
  ExclusiveGuard guard(&lease_gate_, key);
  std::vector<std::pair<uint32_t, uint32_t>> conflicts;
  {
    std::lock_guard lock(mu_);
    conflicts = leases_.Conflicts(key, node, wanted);
  }
  for (const auto& [holder, level] : conflicts) {
    if (options_.call_node) {
      abi::Message m = NodeRequest(CSVFS_CMD_LEASE_BREAK, key);
      m.PutU32(CSVFS_A_LEASE, level);
      options_.call_node(holder, m);  // the holder flushes and invalidates, then acks
    }
    std::lock_guard lock(mu_);
    if (leases_.Level(key, holder) > level) leases_.Set(key, holder, level);
  }
}

int ServiceImpl::LeaseGet(Call& c) {
  const uint32_t wanted = *c.req.GetU32(CSVFS_A_LEASE);
  if (wanted >= __CSVFS_LEASE_MAX) return -EINVAL;
  UniqueFd path;
  FileKey key;
  struct stat st {};
  if (int err = OpenFhKey(c, O_PATH, &path, &key, &st)) return err;
  if (!S_ISREG(st.st_mode)) return -EINVAL;
  uint32_t granted = GrantableLease(key, c.node, wanted);
  if (granted != CSVFS_LEASE_NONE) BreakLeases(key, c.node, granted);
  ExclusiveGuard guard(&lease_gate_, key);
  {
    std::lock_guard lock(mu_);
    // A grant raced in while breaking: settle for what still fits.
    if (!leases_.Conflicts(key, c.node, granted).empty()) granted = CSVFS_LEASE_NONE;
    leases_.Set(key, c.node, granted);
  }
  c.reply.PutU32(CSVFS_A_LEASE, granted);
  return 0;
}

int ServiceImpl::LeaseReturn(Call& c) {
  auto fh = c.req.GetBinary(CSVFS_A_FH);
  std::lock_guard lock(mu_);
  leases_.Set(FileKey(fh->begin(), fh->end()), c.node, CSVFS_LEASE_NONE);
  return 0;
}

// ---- locks --------------------------------------------------------------

// POSIX locks of (node, owner) and flock locks; a conflict is -EAGAIN, also
// with CSVFS_LOCK_F_WAIT: the node retries (no server-side wait queue yet).
int ServiceImpl::Lock(Call& c) {
  auto l = c.req.GetStruct<csvfs_lock>(CSVFS_A_LOCK);
  if (!l || l->type >= __CSVFS_LOCK_TYPE_MAX || l->start > l->end) return -EINVAL;
  const bool test = l->flags & CSVFS_LOCK_F_TEST;
  if (test && l->type == CSVFS_LOCK_UNLOCK) return -EINVAL;
  FileKey key;
  auto fh = c.req.GetBinary(CSVFS_A_FH);
  if (l->type == CSVFS_LOCK_UNLOCK) {
    key.assign(fh->begin(), fh->end());  // unlock even a deleted file
  } else {
    UniqueFd path;
    struct stat st {};
    if (int err = OpenFhKey(c, O_PATH, &path, &key, &st)) return err;
  }
  LockRecord want{
      c.node, l->owner, l->pid, l->type, l->start, l->end, (l->flags & CSVFS_LOCK_F_FLOCK) != 0};
  if (want.flock) want.start = 0, want.end = kToEof;
  LockRecord conflict;
  csvfs_lock out = *l;
  {
    std::lock_guard lock(mu_);
    if (test) {
      auto found = locks_.FindConflict(key, want);
      if (found) conflict = *found;
      out.type = found ? found->type : static_cast<uint32_t>(CSVFS_LOCK_UNLOCK);
    } else if (int err = locks_.Apply(key, want, &conflict)) {
      return err;
    }
  }
  if (test && out.type != CSVFS_LOCK_UNLOCK) {
    out.start = conflict.start;
    out.end = conflict.end;
    out.owner = conflict.owner;
    out.pid = conflict.pid;
    out.flags = conflict.flock ? CSVFS_LOCK_F_FLOCK : 0;
  }
  c.reply.PutStruct(CSVFS_A_LOCK, out);
  return 0;
}

}  // namespace csv::coord
