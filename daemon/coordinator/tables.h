// The coordinator's per-file state: layouts handed out, caching leases,
// cluster-wide locks, and a per-file gate that orders block-moving
// operations against layout grants.
//
// LayoutTable, LeaseTable and LockTable are plain data structures and not
// thread-safe: the service holds its mutex around every call. KeyGate is
// thread-safe and has its own lock (it blocks).
//
// Units: file and device offsets in bytes; ranges are half-open [start, end).
#pragma once

#include <linux/csvfs.h>

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "coordinator/lower_fs.h"

namespace csv::coord {

constexpr uint64_t kToEof = ~0ULL;

struct Range {
  uint64_t start = 0;
  uint64_t end = kToEof;  // exclusive

  bool Overlaps(const Range& o) const { return start < o.end && o.start < end; }
  bool Contains(const Range& o) const { return start <= o.start && o.end <= end; }
};

// A per-file reader/writer gate that never blocks readers: a reader that
// finds a writer gets false (the caller answers -EAGAIN, "ask again"), so a
// node answering a recall can never deadlock on its own layout request.
// Writers wait for each other and for readers to leave.
class KeyGate {
 public:
  bool TryEnterShared(const FileKey& key);
  void LeaveShared(const FileKey& key);
  void EnterExclusive(const FileKey& key);
  void LeaveExclusive(const FileKey& key);

 private:
  struct State {
    int readers = 0;
    bool writer = false;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<FileKey, State> states_;  // guarded by mu_; idle keys are erased
};

// Holds a KeyGate exclusively for one scope.
class ExclusiveGuard {
 public:
  ExclusiveGuard(KeyGate* gate, const FileKey& key) : gate_(gate), key_(key) {
    gate_->EnterExclusive(key_);
  }
  ~ExclusiveGuard() { gate_->LeaveExclusive(key_); }
  ExclusiveGuard(const ExclusiveGuard&) = delete;
  ExclusiveGuard& operator=(const ExclusiveGuard&) = delete;

 private:
  KeyGate* gate_;
  FileKey key_;
};

// One LAYOUT_GET grant: a file range of one node and the extents it got.
struct LayoutGrant {
  uint32_t node = 0;
  Range range;
  uint32_t iomode = CSVFS_LAYOUT_READ;
  std::vector<csvfs_extent> extents;
};

class LayoutTable {
 public:
  void Grant(const FileKey& key, LayoutGrant grant);
  // Forgets what `node` holds inside `range` (all of it if nullopt).
  void Return(const FileKey& key, uint32_t node, std::optional<Range> range);
  // Nodes other than `except` holding a layout overlapping `range`.
  std::vector<uint32_t> Holders(const FileKey& key, const Range& range, uint32_t except) const;
  // Nodes other than `except` whose layouts say HOLE, UNWRITTEN or DELALLOC
  // somewhere in `range`: a write there makes their layouts stale.
  std::vector<uint32_t> HoldersNotWritten(const FileKey& key, const Range& range,
                                          uint32_t except) const;
  // Forgets every node's layouts inside `range` (after a recall).
  void Drop(const FileKey& key, const Range& range);
  void ForgetNode(uint32_t node);
  // True if `node` holds an RW layout whose WRITTEN extents cover the
  // device range [dev_offset, dev_offset + length).
  bool CoversForWrite(uint32_t node, uint64_t dev_offset, uint64_t length) const;
  size_t GrantCount(const FileKey& key) const;

 private:
  void Subtract(const FileKey& key, const Range& range, std::optional<uint32_t> node);

  std::map<FileKey, std::vector<LayoutGrant>> grants_;
};

// The grant minus `cut`: zero, one or two grants, extents clipped.
std::vector<LayoutGrant> SubtractRange(const LayoutGrant& grant, const Range& cut);

class LeaseTable {
 public:
  uint32_t Level(const FileKey& key, uint32_t node) const;
  // Sets (or with CSVFS_LEASE_NONE clears) the lease of `node`.
  void Set(const FileKey& key, uint32_t node, uint32_t level);
  // Holders other than `node` whose lease conflicts with `node` wanting
  // `wanted`, with the level each must be broken to.
  std::vector<std::pair<uint32_t, uint32_t>> Conflicts(const FileKey& key, uint32_t node,
                                                       uint32_t wanted) const;
  void ForgetNode(uint32_t node);

 private:
  std::map<FileKey, std::map<uint32_t, uint32_t>> leases_;  // key -> node -> level
};

// A lock as the table keeps it: POSIX byte ranges or flock (whole file),
// owned by (node, owner).
struct LockRecord {
  uint32_t node = 0;
  uint64_t owner = 0;
  uint32_t pid = 0;
  uint32_t type = CSVFS_LOCK_UNLOCK;
  uint64_t start = 0;
  uint64_t end = kToEof;  // inclusive, as in struct csvfs_lock
  bool flock = false;
};

class LockTable {
 public:
  // The first lock of another owner that conflicts with `want`, if any.
  std::optional<LockRecord> FindConflict(const FileKey& key, const LockRecord& want) const;
  // Sets or (type UNLOCK) clears `want`; -EAGAIN and *conflict when another
  // owner's lock conflicts. POSIX locks of one owner merge and split.
  int Apply(const FileKey& key, const LockRecord& want, LockRecord* conflict);
  void ForgetNode(uint32_t node);
  std::vector<LockRecord> LocksOf(const FileKey& key) const;

 private:
  std::map<FileKey, std::vector<LockRecord>> locks_;
};

}  // namespace csv::coord
