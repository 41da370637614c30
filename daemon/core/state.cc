#include "core/state.h"

#include <algorithm>
#include <cstring>

namespace csv::core {
namespace {

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(v); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void Bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void Str(const std::string& s) {
    U16(static_cast<uint16_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
  }
  std::vector<uint8_t>& out() { return out_; }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t> out_;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  bool U8(uint8_t* v) {
    uint64_t x;
    if (!Le(&x, 1)) return false;
    *v = static_cast<uint8_t>(x);
    return true;
  }
  bool U16(uint16_t* v) {
    uint64_t x;
    if (!Le(&x, 2)) return false;
    *v = static_cast<uint16_t>(x);
    return true;
  }
  bool U32(uint32_t* v) {
    uint64_t x;
    if (!Le(&x, 4)) return false;
    *v = static_cast<uint32_t>(x);
    return true;
  }
  bool U64(uint64_t* v) { return Le(v, 8); }
  bool Bytes(uint8_t* dst, size_t n) {
    if (b_.size() - at_ < n) return false;
    std::memcpy(dst, b_.data() + at_, n);
    at_ += n;
    return true;
  }
  bool Str(std::string* s, size_t max) {
    uint16_t n;
    if (!U16(&n) || n > max || b_.size() - at_ < n) return false;
    s->assign(reinterpret_cast<const char*>(b_.data() + at_), n);
    at_ += n;
    return s->find('\0') == std::string::npos;
  }
  size_t left() const { return b_.size() - at_; }

 private:
  bool Le(uint64_t* v, int n) {
    if (b_.size() - at_ < static_cast<size_t>(n)) return false;
    uint64_t x = 0;
    for (int i = 0; i < n; ++i) x |= static_cast<uint64_t>(b_[at_ + i]) << (8 * i);
    at_ += n;
    *v = x;
    return true;
  }
  std::span<const uint8_t> b_;
  size_t at_ = 0;
};

constexpr size_t kHeaderSize = 24;
constexpr size_t kMaxName = 63;  // CSVFS_MAX_VOLUME_NAME without the NUL
constexpr uint32_t kMaxItems = 4096;

void PutPairs(Writer* w, const std::set<NodeVolume>& s) {
  w->U32(static_cast<uint32_t>(s.size()));
  for (const auto& [n, v] : s) {
    w->U32(n);
    w->Str(v);
  }
}

bool GetPairs(Reader* r, std::set<NodeVolume>* s) {
  uint32_t count;
  if (!r->U32(&count) || count > kMaxItems) return false;
  for (uint32_t i = 0; i < count; ++i) {
    NodeVolume p;
    if (!r->U32(&p.first) || !r->Str(&p.second, kMaxName)) return false;
    s->insert(std::move(p));
  }
  return true;
}

}  // namespace

std::vector<uint8_t> EncodeStateMsg(const StateMsg& m) {
  Writer body;
  switch (m.type) {
    case MsgType::kSync:
      body.U32(static_cast<uint32_t>(m.volumes.size()));
      for (const auto& v : m.volumes) {
        body.Str(v.name);
        body.Bytes(v.uuid);
        body.U32(v.preferred);
        body.U32(v.coordinator);
        body.U64(v.epoch);
        body.U8(v.ready ? 1 : 0);
        body.U32(static_cast<uint32_t>(v.holders.size()));
        for (NodeId h : v.holders) body.U32(h);
        body.U8(v.redirected ? 1 : 0);
        body.U32(v.backup);
      }
      PutPairs(&body, m.healthy_paths);
      PutPairs(&body, m.open_failed);
      body.U8(m.from_quorum ? 1 : 0);
      break;
    default:
      body.Str(m.volume);
      body.Bytes(m.uuid);
      body.U32(m.node);
      body.U64(m.epoch);
      body.U8(m.healthy ? 1 : 0);
      if (m.type == MsgType::kKernelMode) body.U32(m.io_mode);
      break;
  }
  Writer w;
  w.U32(kStateMagic);
  w.U16(kStateVersion);
  w.U16(static_cast<uint16_t>(m.type));
  w.U32(static_cast<uint32_t>(body.out().size()));
  w.U32(0);
  w.U64(m.origin_seq);
  w.Bytes(body.out());
  return std::move(w.out());
}

bool DecodeStateMsg(std::span<const uint8_t> bytes, StateMsg* out, std::string* error) {
  auto fail = [error](const char* why) {
    *error = why;
    return false;
  };
  if (bytes.size() < kHeaderSize) return fail("shorter than the header");
  if (bytes.size() > kMaxStateMessage) return fail("larger than the limit");
  Reader r(bytes);
  uint32_t magic, body_len, reserved;
  uint16_t version, type;
  StateMsg m;
  r.U32(&magic);
  r.U16(&version);
  r.U16(&type);
  r.U32(&body_len);
  r.U32(&reserved);
  r.U64(&m.origin_seq);
  if (magic != kStateMagic) return fail("bad magic");
  if (version != kStateVersion) return fail("unknown protocol version");
  if (type == 0 || type >= static_cast<uint16_t>(MsgType::kMax)) return fail("unknown type");
  if (reserved != 0) return fail("reserved field set");
  if (body_len != r.left()) return fail("body length does not match");
  m.type = static_cast<MsgType>(type);
  uint8_t flag;
  if (m.type == MsgType::kSync) {
    uint32_t count;
    if (!r.U32(&count) || count > kMaxItems) return fail("bad volume count");
    for (uint32_t i = 0; i < count; ++i) {
      VolumeState v;
      uint32_t holders;
      if (!r.Str(&v.name, kMaxName) || v.name.empty() || !r.Bytes(v.uuid.data(), v.uuid.size()) ||
          !r.U32(&v.preferred) || !r.U32(&v.coordinator) || !r.U64(&v.epoch) || !r.U8(&flag) ||
          flag > 1 || !r.U32(&holders) || holders > kMaxItems)
        return fail("truncated or malformed volume");
      v.ready = flag;
      for (uint32_t h = 0; h < holders; ++h) {
        NodeId n;
        if (!r.U32(&n)) return fail("truncated holders");
        v.holders.insert(n);
      }
      if (!r.U8(&flag) || flag > 1 || !r.U32(&v.backup)) return fail("truncated flags");
      v.redirected = flag;
      m.volumes.push_back(std::move(v));
    }
    if (!GetPairs(&r, &m.healthy_paths) || !GetPairs(&r, &m.open_failed))
      return fail("truncated or malformed path list");
    if (!r.U8(&flag) || flag > 1) return fail("truncated or malformed quorum flag");
    m.from_quorum = flag;
  } else {
    if (!r.Str(&m.volume, kMaxName) || m.volume.empty() || !r.Bytes(m.uuid.data(), m.uuid.size()) ||
        !r.U32(&m.node) || !r.U64(&m.epoch) || !r.U8(&flag) || flag > 1)
      return fail("truncated or malformed body");
    m.healthy = flag;
    if (m.type == MsgType::kKernelMode &&
        (!r.U32(&m.io_mode) || (m.io_mode >= kIoModeCount && m.io_mode != kIoNotMounted)))
      return fail("truncated or malformed I/O mode");
  }
  if (r.left() != 0) return fail("bytes left over");
  *out = std::move(m);
  return true;
}

const VolumeState* ClusterState::volume(const std::string& name) const {
  auto it = volumes_.find(name);
  return it == volumes_.end() ? nullptr : &it->second;
}

bool ClusterState::PathHealthy(NodeId node, const std::string& volume) const {
  return healthy_paths_.count({node, volume}) > 0;
}

bool ClusterState::OpenFailed(NodeId node, const std::string& volume) const {
  return open_failed_.count({node, volume}) > 0;
}

const KernelMode* ClusterState::KernelModeOf(NodeId node, const std::string& volume) const {
  auto it = kernel_modes_.find({node, volume});
  return it == kernel_modes_.end() ? nullptr : &it->second;
}

bool ClusterState::IsMember(NodeId node) const {
  return std::find(members_.begin(), members_.end(), node) != members_.end();
}

ElectionInput ClusterState::InputFor(const VolumeState& v) const {
  ElectionInput in;
  in.members = members_;
  in.quorate = quorate();
  for (NodeId n : members_)
    if (PathHealthy(n, v.name) && !OpenFailed(n, v.name)) in.eligible.insert(n);
  in.current = v.coordinator;
  in.preferred = v.preferred;
  for (const auto& [name, other] : volumes_)
    if (name != v.name && other.coordinator != kNoNode) in.load[other.coordinator]++;
  return in;
}

void ClusterState::SetCoordinator(VolumeState* v, NodeId next, ApplyResult* result) {
  if (next == v->coordinator) return;
  if (v->coordinator != kNoNode && IsMember(v->coordinator)) v->holders.insert(v->coordinator);
  result->changes.push_back({v->name, v->coordinator, next, v->epoch + 1});
  // A node that gets the role back while it still holds the filesystem
  // keeps it: it waits for nobody, least of all itself.
  v->holders.erase(next);
  v->coordinator = next;
  v->epoch++;
  v->ready = false;
}

ApplyResult ClusterState::ElectAll() {
  ApplyResult result;
  for (auto& [name, v] : volumes_) SetCoordinator(&v, Elect(InputFor(v)), &result);
  return result;
}

void ClusterState::Rebalance(ApplyResult* result) {
  for (auto& [name, v] : volumes_) {
    if (v.backup != kNoNode) continue;  // a backup keeps its node
    NodeId to = BalanceTarget(InputFor(v));
    if (to != kNoNode) SetCoordinator(&v, to, result);
  }
}

ApplyResult ClusterState::OnMembership(std::vector<NodeId> members) {
  std::sort(members.begin(), members.end());
  members_ = std::move(members);
  // A node that left forgets what it published; a node that failed to
  // mount gets another chance on every membership change.
  std::erase_if(healthy_paths_, [this](const NodeVolume& p) { return !IsMember(p.first); });
  open_failed_.clear();
  kernel_modes_.clear();  // every member reports again
  for (auto& [name, v] : volumes_) {
    std::erase_if(v.holders, [this](NodeId n) { return !IsMember(n); });
    if (v.backup != kNoNode && !IsMember(v.backup)) v.backup = kNoNode;  // its backup ended
  }
  return ElectAll();
}

ApplyResult ClusterState::Apply(NodeId sender, const StateMsg& m) {
  ApplyResult result;
  bool rebalance = false;
  auto it = volumes_.find(m.volume);
  VolumeState* v = it == volumes_.end() ? nullptr : &it->second;
  switch (m.type) {
    case MsgType::kSync:
      result.error = "a sync is adopted, not applied";
      return result;
    case MsgType::kVolumeAdd: {
      if (v && v->uuid != m.uuid) {
        result.error = "volume " + m.volume + " exists with another filesystem UUID";
        return result;
      }
      for (const auto& [name, other] : volumes_) {
        if (name != m.volume && other.uuid == m.uuid) {
          result.error = "that filesystem is already volume " + name;
          return result;
        }
      }
      if (!v) {
        VolumeState nv;
        nv.name = m.volume;
        nv.uuid = m.uuid;
        v = &volumes_.emplace(m.volume, std::move(nv)).first->second;
      }
      v->preferred = m.node;
      break;
    }
    case MsgType::kVolumeRemove:
      if (!v) {
        result.error = "no volume " + m.volume;
        return result;
      }
      volumes_.erase(it);
      std::erase_if(healthy_paths_, [&m](const NodeVolume& p) { return p.second == m.volume; });
      std::erase_if(open_failed_, [&m](const NodeVolume& p) { return p.second == m.volume; });
      std::erase_if(kernel_modes_, [&m](const auto& e) { return e.first.second == m.volume; });
      return result;
    case MsgType::kPath:
      if (m.healthy) {
        // A node that becomes eligible (it rejoined, or its path healed)
        // takes volumes over from the busiest nodes, after the election.
        bool added = healthy_paths_.insert({sender, m.volume}).second;
        rebalance = added && IsMember(sender);
        open_failed_.erase({sender, m.volume});
      } else {
        healthy_paths_.erase({sender, m.volume});
      }
      break;
    case MsgType::kMove: {
      if (!v) {
        result.error = "no volume " + m.volume;
        return result;
      }
      ElectionInput in = InputFor(*v);
      NodeId target = m.node == kNoNode ? NextOwner(in) : m.node;
      if (target == kNoNode) {
        result.error = "no other node can serve " + m.volume;
        return result;
      }
      if (target == v->coordinator) return result;
      if (!in.quorate || !in.eligible.count(target)) {
        result.error = "node " + std::to_string(target) + " cannot serve " + m.volume +
                       " (not a member, no healthy path, or no quorum)";
        return result;
      }
      SetCoordinator(v, target, &result);
      return result;
    }
    case MsgType::kReady:
      if (v && v->coordinator == sender && v->epoch == m.epoch && v->holders.empty())
        v->ready = true;
      return result;
    case MsgType::kReleased:
      if (v) v->holders.erase(sender);
      return result;
    case MsgType::kOpenFailed:
      if (v && v->coordinator == sender && v->epoch == m.epoch)
        open_failed_.insert({sender, m.volume});
      break;
    case MsgType::kRedirect:
      if (!v) {
        result.error = "no volume " + m.volume;
        return result;
      }
      v->redirected = m.healthy;
      return result;
    case MsgType::kBackup: {
      if (!v) {
        result.error = "no volume " + m.volume;
        return result;
      }
      if (m.node == kNoNode) {
        v->backup = kNoNode;
        return result;
      }
      if (v->backup != kNoNode && v->backup != m.node) {
        result.error = "node " + std::to_string(v->backup) + " is already taking a backup of " +
                       m.volume + " (csvctl backup end " + m.volume + " there first)";
        return result;
      }
      ElectionInput in = InputFor(*v);
      if (!in.quorate || !in.eligible.count(m.node)) {
        result.error = "node " + std::to_string(m.node) + " cannot coordinate " + m.volume +
                       " for a backup (not a member, no healthy path, or no quorum)";
        return result;
      }
      v->backup = m.node;
      SetCoordinator(v, m.node, &result);
      return result;
    }
    case MsgType::kKernelMode:
      if (v) kernel_modes_[{sender, m.volume}] = KernelMode{m.epoch, m.io_mode};
      return result;
    case MsgType::kMax:
      result.error = "bad type";
      return result;
  }
  ApplyResult elected = ElectAll();
  if (rebalance) Rebalance(&elected);
  elected.error = result.error;
  return elected;
}

ApplyResult ClusterState::Adopt(const StateMsg& sync) {
  volumes_.clear();
  for (const auto& v : sync.volumes) volumes_[v.name] = v;
  healthy_paths_ = sync.healthy_paths;
  open_failed_ = sync.open_failed;
  kernel_modes_.clear();  // not in the snapshot: every member reports again
  // The snapshot was taken before the membership that delivered it.
  std::erase_if(healthy_paths_, [this](const NodeVolume& p) { return !IsMember(p.first); });
  for (auto& [name, v] : volumes_)
    std::erase_if(v.holders, [this](NodeId n) { return !IsMember(n); });
  return ElectAll();
}

StateMsg ClusterState::Snapshot() const {
  StateMsg m;
  m.type = MsgType::kSync;
  for (const auto& [name, v] : volumes_) m.volumes.push_back(v);
  m.healthy_paths = healthy_paths_;
  m.open_failed = open_failed_;
  return m;
}

}  // namespace csv::core
