// The coordinator's record of recent non-idempotent operations, so that a
// request re-sent after a coordinator crash (same node, same OP_ID) gets the
// original result instead of a spurious EEXIST/ENOENT (docs/failover.md).
//
// The record lives on the volume itself, in the lower filesystem's root:
// the file kName (reserved: the service hides it and refuses the name), a
// ring of kSlots fixed 512-byte slots, each a whole record with a checksum,
// written with pwrite + fdatasync. An operation writes its slot twice:
// INTENT (with what it needs to judge the outcome later: did the name exist,
// which file it named) before it runs, DONE (with its errno) after it ran
// and its directories were fsync'd. Any coordinator that later mounts the
// volume loads the ring.
//
// Thread-safety: every method may be called concurrently.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "coordinator/lower_fs.h"
#include "coordinator/unique_fd.h"

namespace csv::coord {

struct OpRecord {
  enum State : uint8_t { kIntent = 1, kDone = 2 };
  uint32_t node = 0;
  uint64_t op_id = 0;
  uint8_t cmd = 0;
  uint8_t state = kIntent;
  bool pre_exists = false;  // the name the op creates existed before it ran
  int32_t err = 0;          // DONE: the result
  FileKey key1;             // the file the op removes or renames, before it ran
  FileKey key2;             // RENAME: the file at the new name, before it ran
  uint32_t slot = 0;        // where it is stored
};

class OpLog {
 public:
  static constexpr const char* kName = ".csvfs-oplog";
  static constexpr uint32_t kSlots = 4096;
  static constexpr uint32_t kSlotSize = 512;

  // Opens (creating and zero-filling if needed) the ring in the root
  // directory `root_fd` and loads it. 0 or -errno.
  int Open(int root_fd);

  // The recorded op of (node, op_id), if any.
  std::optional<OpRecord> Find(uint32_t node, uint64_t op_id) const;
  // Stores `rec` durably; a new op gets a slot (rec->slot). 0 or -errno.
  int Write(OpRecord* rec, bool new_slot);

  // Serializes ops with the same (node, op_id): a re-send that arrives
  // while the original still runs waits for it.
  void Begin(uint32_t node, uint64_t op_id);
  void End(uint32_t node, uint64_t op_id);

  size_t size() const;

 private:
  using Key = std::pair<uint32_t, uint64_t>;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  UniqueFd fd_;
  std::map<Key, OpRecord> ops_;
  std::vector<std::optional<Key>> slots_ = std::vector<std::optional<Key>>(kSlots);
  std::set<Key> running_;
  uint64_t seq_ = 1;
  uint32_t next_slot_ = 0;
};

}  // namespace csv::coord
