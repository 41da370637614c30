// The ring of recent operation records on the volume (oplog.h).
#include "coordinator/oplog.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace csv::coord {
namespace {

constexpr uint32_t kMagic = 0x504f5343;  // "CSOP"
constexpr size_t kKeyMax = 224;

// Slot layout, little-endian (every supported host): magic u32, check u32
// (FNV-1a of bytes 8..511), seq u64, op_id u64, node u32, cmd u8, state u8,
// pre_exists u8, 0 u8, err s32, key1 len u16, key2 len u16, key1, key2.
struct Slot {
  uint32_t magic;
  uint32_t check;
  uint64_t seq;
  uint64_t op_id;
  uint32_t node;
  uint8_t cmd;
  uint8_t state;
  uint8_t pre_exists;
  uint8_t zero;
  int32_t err;
  uint16_t key1_len;
  uint16_t key2_len;
  uint8_t key1[kKeyMax];
  uint8_t key2[kKeyMax];
};
static_assert(sizeof(Slot) <= OpLog::kSlotSize);

uint32_t Check(const uint8_t* p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 16777619u;
  return h;
}

int Err() { return errno ? -errno : -EIO; }

}  // namespace

int OpLog::Open(int root_fd) {
  constexpr off_t kBytes = static_cast<off_t>(kSlots) * kSlotSize;
  UniqueFd fd(::openat(root_fd, kName, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  struct stat st {};
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0) return Err();
  if (!S_ISREG(st.st_mode)) return -EINVAL;
  std::vector<uint8_t> all(kBytes, 0);
  if (st.st_size < kBytes) {
    // Written zeros (not a hole): slot writes then change no metadata.
    ssize_t n = ::pwrite(fd.get(), all.data(), all.size(), 0);
    if (n != kBytes || ::fsync(fd.get()) != 0 || ::fsync(root_fd) != 0) return Err();
  }
  ssize_t n = ::pread(fd.get(), all.data(), all.size(), 0);
  if (n != kBytes) return n < 0 ? Err() : -EIO;
  std::lock_guard lock(mu_);
  ops_.clear();
  std::fill(slots_.begin(), slots_.end(), std::nullopt);
  uint64_t best = 0;
  for (uint32_t i = 0; i < kSlots; ++i) {
    Slot s;
    const uint8_t* p = all.data() + static_cast<size_t>(i) * kSlotSize;
    std::memcpy(&s, p, sizeof s);
    if (s.magic != kMagic || s.check != Check(p + 8, kSlotSize - 8) || s.key1_len > kKeyMax ||
        s.key2_len > kKeyMax)
      continue;  // empty or torn
    OpRecord r;
    r.node = s.node;
    r.op_id = s.op_id;
    r.cmd = s.cmd;
    r.state = s.state;
    r.pre_exists = s.pre_exists != 0;
    r.err = s.err;
    r.key1.assign(s.key1, s.key1 + s.key1_len);
    r.key2.assign(s.key2, s.key2 + s.key2_len);
    r.slot = i;
    Key k{r.node, r.op_id};
    slots_[i] = k;
    ops_[k] = std::move(r);
    if (s.seq >= best) {
      best = s.seq;
      next_slot_ = (i + 1) % kSlots;
    }
  }
  seq_ = best + 1;
  fd_ = std::move(fd);
  return 0;
}

std::optional<OpRecord> OpLog::Find(uint32_t node, uint64_t op_id) const {
  std::lock_guard lock(mu_);
  auto it = ops_.find({node, op_id});
  if (it == ops_.end()) return std::nullopt;
  return it->second;
}

size_t OpLog::size() const {
  std::lock_guard lock(mu_);
  return ops_.size();
}

int OpLog::Write(OpRecord* rec, bool new_slot) {
  if (rec->key1.size() > kKeyMax || rec->key2.size() > kKeyMax) return -EINVAL;
  std::vector<uint8_t> buf(kSlotSize, 0);
  Slot s{};
  uint64_t seq;
  {
    std::lock_guard lock(mu_);
    if (!fd_.valid()) return -EIO;
    if (new_slot) {
      rec->slot = next_slot_;
      next_slot_ = (next_slot_ + 1) % kSlots;
      if (auto& old = slots_[rec->slot]) {
        if (!running_.count(*old)) ops_.erase(*old);
      }
      slots_[rec->slot] = Key{rec->node, rec->op_id};
    }
    seq = seq_++;
    ops_[{rec->node, rec->op_id}] = *rec;
  }
  s.magic = kMagic;
  s.seq = seq;
  s.op_id = rec->op_id;
  s.node = rec->node;
  s.cmd = rec->cmd;
  s.state = rec->state;
  s.pre_exists = rec->pre_exists ? 1 : 0;
  s.err = rec->err;
  s.key1_len = static_cast<uint16_t>(rec->key1.size());
  s.key2_len = static_cast<uint16_t>(rec->key2.size());
  std::copy(rec->key1.begin(), rec->key1.end(), s.key1);
  std::copy(rec->key2.begin(), rec->key2.end(), s.key2);
  std::memcpy(buf.data(), &s, sizeof s);
  s.check = Check(buf.data() + 8, kSlotSize - 8);
  std::memcpy(buf.data() + 4, &s.check, sizeof s.check);
  const off_t at = static_cast<off_t>(rec->slot) * kSlotSize;
  if (::pwrite(fd_.get(), buf.data(), buf.size(), at) != static_cast<ssize_t>(buf.size()))
    return Err();
  if (::fdatasync(fd_.get()) != 0) return Err();
  return 0;
}

void OpLog::Begin(uint32_t node, uint64_t op_id) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !running_.count({node, op_id}); });
  running_.insert({node, op_id});
}

void OpLog::End(uint32_t node, uint64_t op_id) {
  {
    std::lock_guard lock(mu_);
    running_.erase({node, op_id});
  }
  cv_.notify_all();
}

}  // namespace csv::coord
