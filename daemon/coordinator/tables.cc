#include "coordinator/tables.h"

#include <algorithm>
#include <cerrno>

namespace csv::coord {

// ---- KeyGate ------------------------------------------------------------

bool KeyGate::TryEnterShared(const FileKey& key) {
  std::lock_guard lock(mu_);
  State& s = states_[key];
  if (s.writer) return false;  // a recall is running: ask again
  ++s.readers;
  return true;
}

void KeyGate::LeaveShared(const FileKey& key) {
  std::lock_guard lock(mu_);
  auto it = states_.find(key);
  if (it == states_.end()) return;
  if (--it->second.readers == 0 && !it->second.writer) states_.erase(it);
  cv_.notify_all();
}

void KeyGate::EnterExclusive(const FileKey& key) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !states_[key].writer; });
  states_[key].writer = true;  // new readers are turned away from here on
  cv_.wait(lock, [&] { return states_[key].readers == 0; });
}

void KeyGate::LeaveExclusive(const FileKey& key) {
  std::lock_guard lock(mu_);
  auto it = states_.find(key);
  if (it == states_.end()) return;
  it->second.writer = false;
  if (it->second.readers == 0) states_.erase(it);
  cv_.notify_all();
}

// ---- Layouts ------------------------------------------------------------

namespace {

bool HasDeviceOffset(uint32_t state) {
  return state == CSVFS_EXT_WRITTEN || state == CSVFS_EXT_UNWRITTEN;
}

// The parts of `extents` inside `piece`, device offsets moved along.
std::vector<csvfs_extent> ClipExtents(const std::vector<csvfs_extent>& extents,
                                      const Range& piece) {
  std::vector<csvfs_extent> out;
  for (const auto& e : extents) {
    Range r{e.file_offset, e.file_offset + e.length};
    if (!r.Overlaps(piece)) continue;
    uint64_t start = std::max(r.start, piece.start);
    uint64_t end = std::min(r.end, piece.end);
    csvfs_extent c = e;
    if (HasDeviceOffset(e.state)) c.dev_offset += start - e.file_offset;
    c.file_offset = start;
    c.length = end - start;
    out.push_back(c);
  }
  return out;
}

}  // namespace

std::vector<LayoutGrant> SubtractRange(const LayoutGrant& grant, const Range& cut) {
  if (!grant.range.Overlaps(cut)) return {grant};
  std::vector<LayoutGrant> out;
  std::vector<Range> pieces;
  if (grant.range.start < cut.start) pieces.push_back({grant.range.start, cut.start});
  if (cut.end < grant.range.end) pieces.push_back({cut.end, grant.range.end});
  for (const Range& p : pieces) {
    LayoutGrant g = grant;
    g.range = p;
    g.extents = ClipExtents(grant.extents, p);
    out.push_back(std::move(g));
  }
  return out;
}

void LayoutTable::Grant(const FileKey& key, LayoutGrant grant) {
  grants_[key].push_back(std::move(grant));
}

void LayoutTable::Subtract(const FileKey& key, const Range& range, std::optional<uint32_t> node) {
  auto it = grants_.find(key);
  if (it == grants_.end()) return;
  std::vector<LayoutGrant> kept;
  for (const auto& g : it->second) {
    if (node && g.node != *node) {
      kept.push_back(g);
      continue;
    }
    for (auto& piece : SubtractRange(g, range)) kept.push_back(std::move(piece));
  }
  if (kept.empty())
    grants_.erase(it);
  else
    it->second = std::move(kept);
}

void LayoutTable::Return(const FileKey& key, uint32_t node, std::optional<Range> range) {
  Subtract(key, range.value_or(Range{}), node);
}

void LayoutTable::Drop(const FileKey& key, const Range& range) {
  Subtract(key, range, std::nullopt);
}

std::vector<uint32_t> LayoutTable::Holders(const FileKey& key, const Range& range,
                                           uint32_t except) const {
  std::vector<uint32_t> nodes;
  auto it = grants_.find(key);
  if (it == grants_.end()) return nodes;
  for (const auto& g : it->second) {
    if (g.node != except && g.range.Overlaps(range) &&
        std::find(nodes.begin(), nodes.end(), g.node) == nodes.end())
      nodes.push_back(g.node);
  }
  return nodes;
}

std::vector<uint32_t> LayoutTable::HoldersNotWritten(const FileKey& key, const Range& range,
                                                     uint32_t except) const {
  std::vector<uint32_t> nodes;
  auto it = grants_.find(key);
  if (it == grants_.end()) return nodes;
  for (const auto& g : it->second) {
    if (g.node == except || !g.range.Overlaps(range)) continue;
    bool stale = std::any_of(g.extents.begin(), g.extents.end(), [&](const csvfs_extent& e) {
      Range r{e.file_offset, e.file_offset + e.length};
      return e.state != CSVFS_EXT_WRITTEN && r.Overlaps(range);
    });
    if (stale && std::find(nodes.begin(), nodes.end(), g.node) == nodes.end())
      nodes.push_back(g.node);
  }
  return nodes;
}

void LayoutTable::ForgetNode(uint32_t node) {
  for (auto it = grants_.begin(); it != grants_.end();) {
    std::erase_if(it->second, [node](const LayoutGrant& g) { return g.node == node; });
    it = it->second.empty() ? grants_.erase(it) : std::next(it);
  }
}

bool LayoutTable::CoversForWrite(uint32_t node, uint64_t dev_offset, uint64_t length) const {
  std::vector<Range> written;
  for (const auto& [key, grants] : grants_) {
    for (const auto& g : grants) {
      if (g.node != node || g.iomode != CSVFS_LAYOUT_RW) continue;
      for (const auto& e : g.extents)
        if (e.state == CSVFS_EXT_WRITTEN)
          written.push_back({e.dev_offset, e.dev_offset + e.length});
    }
  }
  std::sort(written.begin(), written.end(),
            [](const Range& a, const Range& b) { return a.start < b.start; });
  uint64_t at = dev_offset;
  const uint64_t end = dev_offset + length;
  for (const Range& r : written) {
    if (r.start > at) break;
    at = std::max(at, r.end);
    if (at >= end) return true;
  }
  return at >= end;
}

size_t LayoutTable::GrantCount(const FileKey& key) const {
  auto it = grants_.find(key);
  return it == grants_.end() ? 0 : it->second.size();
}

// ---- Leases -------------------------------------------------------------

uint32_t LeaseTable::Level(const FileKey& key, uint32_t node) const {
  auto it = leases_.find(key);
  if (it == leases_.end()) return CSVFS_LEASE_NONE;
  auto n = it->second.find(node);
  return n == it->second.end() ? static_cast<uint32_t>(CSVFS_LEASE_NONE) : n->second;
}

void LeaseTable::Set(const FileKey& key, uint32_t node, uint32_t level) {
  if (level != CSVFS_LEASE_NONE) {
    leases_[key][node] = level;
    return;
  }
  auto it = leases_.find(key);
  if (it == leases_.end()) return;
  it->second.erase(node);
  if (it->second.empty()) leases_.erase(it);
}

std::vector<std::pair<uint32_t, uint32_t>> LeaseTable::Conflicts(const FileKey& key, uint32_t node,
                                                                 uint32_t wanted) const {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  auto it = leases_.find(key);
  if (it == leases_.end()) return out;
  for (const auto& [holder, level] : it->second) {
    if (holder == node) continue;
    if (wanted == CSVFS_LEASE_WRITE)
      out.emplace_back(holder, CSVFS_LEASE_NONE);  // writes elsewhere: nobody caches
    else if (level == CSVFS_LEASE_WRITE)
      out.emplace_back(holder, CSVFS_LEASE_READ);  // readers elsewhere: share
  }
  return out;
}

void LeaseTable::ForgetNode(uint32_t node) {
  for (auto it = leases_.begin(); it != leases_.end();) {
    it->second.erase(node);
    it = it->second.empty() ? leases_.erase(it) : std::next(it);
  }
}

// ---- Locks --------------------------------------------------------------

namespace {

bool SameOwner(const LockRecord& a, const LockRecord& b) {
  return a.node == b.node && a.owner == b.owner && a.flock == b.flock;
}

bool Conflicts(const LockRecord& held, const LockRecord& want) {
  if (held.flock != want.flock || SameOwner(held, want)) return false;  // flock and POSIX
  if (held.end < want.start || want.end < held.start) return false;     // are independent
  return held.type == CSVFS_LOCK_WRITE || want.type == CSVFS_LOCK_WRITE;
}

// `held` minus the inclusive range [start, end]: zero, one or two locks.
void SplitAround(const LockRecord& held, uint64_t start, uint64_t end,
                 std::vector<LockRecord>* out) {
  if (held.end < start || end < held.start) {
    out->push_back(held);
    return;
  }
  if (held.start < start) {
    LockRecord left = held;
    left.end = start - 1;
    out->push_back(left);
  }
  if (end < held.end) {
    LockRecord right = held;
    right.start = end + 1;
    out->push_back(right);
  }
}

}  // namespace

std::optional<LockRecord> LockTable::FindConflict(const FileKey& key,
                                                  const LockRecord& want) const {
  auto it = locks_.find(key);
  if (it == locks_.end() || want.type == CSVFS_LOCK_UNLOCK) return std::nullopt;
  for (const auto& held : it->second)
    if (Conflicts(held, want)) return held;
  return std::nullopt;
}

int LockTable::Apply(const FileKey& key, const LockRecord& want, LockRecord* conflict) {
  if (auto c = FindConflict(key, want)) {
    *conflict = *c;
    return -EAGAIN;
  }
  std::vector<LockRecord>& held = locks_[key];
  std::vector<LockRecord> kept;
  for (const auto& h : held) {
    if (SameOwner(h, want))
      SplitAround(h, want.start, want.end, &kept);
    else
      kept.push_back(h);
  }
  if (want.type != CSVFS_LOCK_UNLOCK) kept.push_back(want);
  held = std::move(kept);
  if (held.empty()) locks_.erase(key);
  return 0;
}

void LockTable::ForgetNode(uint32_t node) {
  for (auto it = locks_.begin(); it != locks_.end();) {
    std::erase_if(it->second, [node](const LockRecord& l) { return l.node == node; });
    it = it->second.empty() ? locks_.erase(it) : std::next(it);
  }
}

std::vector<LockRecord> LockTable::LocksOf(const FileKey& key) const {
  auto it = locks_.find(key);
  return it == locks_.end() ? std::vector<LockRecord>{} : it->second;
}

}  // namespace csv::coord
