#include "core/daemon.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <set>
#include <sstream>
#include <thread>

#include "core/auth.h"
#include "core/blockdev.h"
#include "core/frame_conn.h"
#include "core/log.h"

namespace csv::core {
namespace {

using json = nlohmann::json;
using UnixConn = FrameConn<asio::local::stream_protocol::socket>;

constexpr auto kRebroadcast = std::chrono::milliseconds(1000);
constexpr auto kHeldRetry = std::chrono::milliseconds(100);
constexpr auto kControlTimeout = std::chrono::seconds(15);
constexpr auto kSyncFallback = std::chrono::seconds(3);
// How long after a membership change a state no quorate membership held
// waits for one that did (sent by the other side of a merge at once)
// before csvd acts on it: serves a volume, answers "no such volume".
constexpr auto kStateSettle = std::chrono::seconds(10);
// A timer that fires a little early still counts as a full tick.
constexpr auto kTickSlack = std::chrono::milliseconds(20);

const char* ModeName(uint32_t m) {
  switch (m) {
    case CSVFS_IO_DIRECT:
      return "Direct";
    case CSVFS_IO_BLOCK_REDIRECTED:
      return "BlockRedirected";
    case CSVFS_IO_FILE_REDIRECTED:
      return "FileRedirected";
    case CSVFS_IO_PAUSED:
      return "Paused";
    case kIoNotMounted:
      return "not mounted";
  }
  return "?";
}

const char* ReasonName(uint32_t r) {
  static const char* names[] = {"none",      "user request",   "no path",
                                "backup",    "lease conflict", "unsupported filesystem",
                                "no quorum", "failover"};
  return r < std::size(names) ? names[r] : "?";
}

bool PeerIsRoot(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == 0;
}

// Commands that are not idempotent: they carry an OP_ID.
bool NeedsOpId(int cmd) {
  switch (cmd) {
    case CSVFS_CMD_CREATE:
    case CSVFS_CMD_MKDIR:
    case CSVFS_CMD_MKNOD:
    case CSVFS_CMD_SYMLINK:
    case CSVFS_CMD_LINK:
    case CSVFS_CMD_UNLINK:
    case CSVFS_CMD_RMDIR:
    case CSVFS_CMD_RENAME:
      return true;
    default:
      return false;
  }
}

// Commands a local client may send (the rest are daemon <-> kernel only).
bool IsClientRequest(int cmd) {
  switch (cmd) {
    case CSVFS_CMD_HELLO:
    case CSVFS_CMD_REPLY:
    case CSVFS_CMD_LAYOUT_RECALL:
    case CSVFS_CMD_LAYOUT_RECALL_ALL:
    case CSVFS_CMD_LEASE_BREAK:
    case CSVFS_CMD_INVALIDATE:
    case CSVFS_CMD_VOLUME_STATE:
    case CSVFS_CMD_PATH_ERROR:
    case CSVFS_CMD_UNMOUNT:
    case CSVFS_CMD_DETACH:
      return false;
    default:
      return true;
  }
}

}  // namespace

Daemon::Daemon(asio::io_context& io, Config config)
    : io_(io),
      config_(std::move(config)),
      workers_(config_.workers),
      probes_(config_.probe_threads),
      state_(config_.nodes.size()),
      retry_timer_(io),
      probe_timer_(io) {}

Daemon::~Daemon() { Stop(); }

bool Daemon::Start(std::string* error) {
  auto key = LoadClusterKey(config_.key_file, error);
  if (!key) return false;
  std::error_code fec;
  std::filesystem::create_directories(config_.state_dir, fec);
  std::filesystem::create_directories(config_.run_dir + "/mnt", fec);
  if (config_.control_socket.empty()) config_.control_socket = config_.run_dir + "/control.sock";

  Corosync::Callbacks cb;
  cb.on_membership = [this](auto m, auto j, auto l) {
    OnMembership(std::move(m), std::move(j), std::move(l));
  };
  cb.on_message = [this](NodeId s, std::span<const uint8_t> b) { OnStateMessage(s, b); };
  cb.on_quorum = [this](bool q) { OnQuorum(q); };
  cb.on_lost = [this](const std::string& why) {
    LOG(kError) << why << "; stopping";
    Stop();
    io_.stop();
  };
  corosync_ = std::make_unique<Corosync>(io_, config_.group, std::move(cb));
  self_ = config_.node_id;
  // Volumes persisted by an earlier run seed the state until a sync.
  LoadVolumes();
  if (!corosync_->Start(error)) return false;
  if (self_ == kNoNode) self_ = corosync_->local_node();
  if (self_ != corosync_->local_node()) {
    *error = "node_id " + std::to_string(self_) + " is not Corosync's local node id " +
             std::to_string(corosync_->local_node());
    return false;
  }
  SetLogNode(self_);
  const PeerAddress* me = nullptr;
  for (const auto& n : config_.nodes)
    if (n.id == self_) me = &n;
  if (!me) {
    *error = "node " + std::to_string(self_) + " is not listed in the configuration's nodes";
    return false;
  }
  PeerNet::Callbacks pcb;
  pcb.on_request = [this](NodeId from, abi::Message m, PeerNet::Reply r) {
    OnPeerRequest(from, std::move(m), std::move(r));
  };
  pcb.is_member = [this](NodeId n) { return state_.IsMember(n); };
  pcb.on_connected = [this](NodeId) { DispatchHeld(); };
  peers_ = std::make_unique<PeerNet>(io_, self_, std::move(*key), config_.nodes, std::move(pcb));
  if (!peers_->Listen(me->host, me->port, error)) return false;
  if (!StartControl(error)) return false;
  if (!config_.test_socket.empty() && !StartTestChannel(error)) return false;
  if (config_.kernel) {
    kernel_ = std::make_unique<KernelChannel>(
        io_, [this](abi::Message m) { OnKernelMessage(std::move(m)); });
    kernel_->Start();
  }
  unsynced_since_ = Clock::now();
  ProbeTick();
  LOG(kInfo) << "csvd started: peers on " << me->host << ":" << me->port << ", control "
             << config_.control_socket
             << (config_.test_socket.empty() ? "" : ", test channel " + config_.test_socket);
  return true;
}

void Daemon::Stop() {
  if (stopping_) return;
  stopping_ = true;
  retry_timer_.cancel();
  probe_timer_.cancel();
  for (auto& [name, l] : locals_) {
    if (!l.service) continue;
    std::unique_lock lock(*l.gate);
    l.service->Close();
    l.service.reset();
    LOG(kInfo) << "volume " << name << ": closed at shutdown";
  }
  if (peers_) peers_->Stop();
  if (kernel_) kernel_->Stop();
  if (corosync_) corosync_->Stop();
  boost::system::error_code ec;
  if (test_acceptor_) test_acceptor_->close(ec);
  if (control_acceptor_) control_acceptor_->close(ec);
  workers_.stop();
  probes_.stop();
}

// ---- cluster events ----------------------------------------------------

void Daemon::OnMembership(std::vector<NodeId> members, std::vector<NodeId> joined,
                          std::vector<NodeId> left) {
  bool i_joined = std::find(joined.begin(), joined.end(), self_) != joined.end();
  std::set<NodeId> member_set(members.begin(), members.end());
  // Our view before this change: without quorum we were a minority.
  const bool was_quorate = state_.quorate();
  bool stale = false;
  last_membership_ = Clock::now();
  // A state held through a whole quorate membership is the cluster's.
  if (synced_ && was_quorate) state_from_quorum_ = true;
  if (i_joined && !joined_) {
    joined_ = true;
    synced_ = false;
    state_from_quorum_ = false;
    unsynced_since_ = Clock::now();
    synced_set_.clear();
    for (NodeId n : members)
      if (std::find(joined.begin(), joined.end(), n) == joined.end()) synced_set_.insert(n);
  } else if (!joined.empty() && synced_ && !was_quorate && had_quorum_) {
    // The rejoin rule: we come back from a minority (a partition, the
    // survivor of a quorum loss; not a cluster that is still forming,
    // which never had quorum). While we had no quorum the others may
    // have elected new coordinators at newer epochs; our state is older
    // than theirs, so we act on none of it (no service, no lease, no
    // forwarding) and never send it: we wait for their SYNC, as a joiner
    // does. The nodes that appeared may hold the cluster's state.
    stale = true;
    synced_ = false;
    state_from_quorum_ = false;
    unsynced_since_ = Clock::now();
    synced_set_.clear();
    synced_set_.insert(joined.begin(), joined.end());
    LOG(kInfo) << "rejoining without quorum before: waiting for the cluster's state";
  } else {
    std::erase_if(synced_set_, [&](NodeId n) { return !member_set.count(n); });
  }
  std::string text;
  for (NodeId n : members) text += " " + std::to_string(n);
  LOG(kInfo) << "membership:" << text << " (joined " << joined.size() << ", left " << left.size()
             << ")" << (state_.IsMember(self_) || i_joined ? "" : "");
  for (NodeId n : left) peers_->Drop(n);
  if (!left.empty()) {
    // A node that vanished may write until its lease runs out: nobody
    // takes over a volume (mounts its filesystem) before that.
    lease_wait_until_ =
        Clock::now() + std::chrono::milliseconds(config_.lease_ms + config_.lease_margin_ms);
  }
  ApplyResult r = state_.OnMembership(members);
  if (synced_ && state_.quorate()) had_quorum_ = true;
  if (synced_ && state_.quorate() && !state_from_quorum_ && !joined.empty())
    LOG(kInfo) << "our state is not one a quorate membership held: acting on it in "
               << std::chrono::duration_cast<std::chrono::seconds>(kStateSettle).count()
               << " s unless the cluster's state arrives first";
  // Drop a left node's state in our coordinator services.
  for (NodeId n : left)
    for (auto& [name, l] : locals_)
      if (auto svc = l.service)
        asio::post(workers_, [svc, n, gate = l.gate] {
          std::shared_lock lock(*gate);
          svc->ForgetNode(n);
        });
  if (!joined.empty() && !stale) {
    // The lowest synced member sends its state to the joiners; if nobody
    // is synced yet (the whole group is new), the lowest member does.
    std::set<NodeId> candidates;
    for (NodeId n : synced_set_) candidates.insert(n);
    if (synced_) candidates.insert(self_);
    NodeId sender = candidates.empty() ? *member_set.begin() : *candidates.begin();
    if (sender == self_) {
      last_sync_sent_ = Clock::now();
      BroadcastSync();
    }
  }
  AfterChange(r);
}

void Daemon::OnStateMessage(NodeId sender, std::span<const uint8_t> bytes) {
  StateMsg m;
  std::string error;
  if (!DecodeStateMsg(bytes, &m, &error)) {
    LOG(kWarning) << "refused state message from node " << sender << ": " << error;
    return;
  }
  ApplyResult r;
  if (m.type == MsgType::kSync) {
    // Two sides of a merge may both send their state. One that a node made
    // up alone (its csvd started before its Corosync merged) must never
    // replace the one the quorate cluster ran with, whatever the order.
    if (!m.from_quorum && state_from_quorum_) {
      LOG(kInfo) << "ignoring node " << sender << "'s state sync (" << m.volumes.size()
                 << " volumes): it is not from a quorate membership and ours is";
      return;
    }
    r = state_.Adopt(m);
    if (m.from_quorum) state_from_quorum_ = true;
    if (!synced_) LOG(kInfo) << "state synced from node " << sender;
    synced_ = true;
    synced_set_.clear();
    synced_set_.insert(state_.members().begin(), state_.members().end());
    if (state_.quorate()) had_quorum_ = true;
    PersistVolumes();
    // Control messages delivered before the sync may have been lost with
    // the state they changed: send them again.
    for (auto& [seq, w] : control_waits_) Broadcast(w.msg);
  } else {
    r = state_.Apply(sender, m);
    if (m.type == MsgType::kVolumeAdd || m.type == MsgType::kVolumeRemove) PersistVolumes();
    if (sender == self_) {
      auto it = control_waits_.find(m.origin_seq);
      if (it != control_waits_.end()) {
        json out = {{"ok", r.error.empty()}};
        if (!r.error.empty()) out["error"] = r.error;
        if (const VolumeState* v = state_.volume(m.volume)) {
          out["coordinator"] = v->coordinator;
          out["epoch"] = v->epoch;
        }
        auto reply = std::move(it->second.reply);
        control_waits_.erase(it);
        reply(out);
      }
    }
  }
  AfterChange(r);
}

void Daemon::OnQuorum(bool quorate) {
  if (quorate != local_quorate_)
    ::csv::core::LogMessage(quorate ? Level::kInfo : Level::kWarning, "", 0).stream()
        << (quorate ? "quorum gained" : "quorum lost: not serving");
  local_quorate_ = quorate;
  Reconcile();
}

void Daemon::Broadcast(StateMsg m) {
  if (m.origin_seq == 0) m.origin_seq = next_seq_++;
  corosync_->Send(EncodeStateMsg(m));
}

void Daemon::BroadcastSync() {
  StateMsg snap = state_.Snapshot();
  snap.from_quorum = state_from_quorum_;
  LOG(kInfo) << "sending state sync (" << snap.volumes.size() << " volumes"
             << (snap.from_quorum ? "" : ", not from a quorate membership") << ")";
  Broadcast(std::move(snap));
}

void Daemon::AfterChange(const ApplyResult& r) {
  for (const Change& c : r.changes)
    VLOG(kInfo, c.volume, c.epoch)
        << "coordinator " << c.old_coordinator << " -> " << c.new_coordinator;
  Reconcile();
}

void Daemon::Reconcile() {
  if (stopping_) return;
  auto now = Clock::now();
  for (const auto& [name, v] : state_.volumes()) {
    Local& l = locals_[name];
    if (l.busy) continue;
    bool mine = StateSettled() && v.coordinator == self_;
    bool held_by_me = v.holders.count(self_) > 0;
    if (l.service && !mine) {
      CloseService(name);
      continue;
    }
    if (l.service) {
      if (!v.ready && v.holders.empty() &&
          (l.served_epoch != v.epoch || now - l.last_ready_sent > kRebroadcast)) {
        l.served_epoch = v.epoch;
        l.last_ready_sent = now;
        StateMsg m;
        m.type = MsgType::kReady;
        m.volume = name;
        m.epoch = v.epoch;
        Broadcast(m);
      }
      continue;
    }
    if (held_by_me && synced_ && now - l.last_released_sent > kRebroadcast) {
      l.last_released_sent = now;
      StateMsg m;
      m.type = MsgType::kReleased;
      m.volume = name;
      Broadcast(m);
    }
    bool others_hold =
        std::any_of(v.holders.begin(), v.holders.end(), [this](NodeId n) { return n != self_; });
    if (mine && !others_hold && !held_by_me && !l.device.empty()) {
      if (now < lease_wait_until_) {
        if (!l.lease_wait_logged)
          VLOG(kInfo, name, v.epoch)
              << "waiting "
              << std::chrono::duration_cast<std::chrono::milliseconds>(lease_wait_until_ - now)
                     .count()
              << " ms for the lease of a node that left";
        l.lease_wait_logged = true;
        continue;
      }
      l.lease_wait_logged = false;
      OpenService(name, v.epoch);
    }
  }
  for (auto& [name, l] : locals_)
    if (!state_.volume(name) && l.service && !l.busy) CloseService(name);
  PushKernelState();
  ReclaimOpens();
  DispatchHeld();
}

void Daemon::OpenService(const std::string& name, uint64_t epoch) {
  Local& l = locals_[name];
  l.busy = true;
  coord::ServiceOptions opts;
  opts.volume = name;
  opts.device = l.device;
  opts.mount_dir = config_.run_dir + "/mnt/" + name;
  opts.call_node = [this, name](uint32_t node, const abi::Message& m) {
    return CallNode(name, node, m);
  };
  std::error_code fec;
  std::filesystem::create_directories(opts.mount_dir, fec);
  VLOG(kInfo, name, epoch) << "elected: mounting " << opts.device << " on " << opts.mount_dir;
  auto start = Clock::now();
  asio::post(workers_, [this, name, epoch, opts, start] {
    std::string error;
    std::shared_ptr<coord::Service> svc = coord::Service::Open(opts, &error);
    asio::post(io_, [this, name, epoch, svc, error, start] {
      Local& lv = locals_[name];
      const VolumeState* v = state_.volume(name);
      if (!svc) {
        lv.busy = false;
        VLOG(kError, name, epoch) << "cannot serve: " << error;
        StateMsg m;
        m.type = MsgType::kOpenFailed;
        m.volume = name;
        m.epoch = epoch;
        Broadcast(m);
        return;
      }
      double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      VLOG(kInfo, name, epoch) << "mounted in " << static_cast<int>(ms) << " ms";
      if (!v || v->coordinator != self_ || v->epoch != epoch)
        VLOG(kInfo, name, epoch) << "role changed while mounting";
      RecallAllLayouts(name, epoch, [this, name, epoch, svc, start] {
        Local& lr = locals_[name];
        lr.busy = false;
        double total = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        VLOG(kInfo, name, epoch) << "serving (" << static_cast<int>(total) << " ms)";
        lr.service = svc;
        lr.served_epoch = 0;  // READY goes out in Reconcile
        EndGraceLater(name, svc, epoch);
        Reconcile();
      });
    });
  });
}

// Before a new coordinator serves: every member's kernel ends the layouts
// it holds from earlier coordinators (this one knows nothing of them and
// would free their blocks without a recall) and drains the direct I/O that
// uses them. Until then those nodes' direct I/O goes on through the pause.
// A member that does not answer is waited for like any recall (its lease
// runs out meanwhile); a node that joins later holds none: its kernel ended
// them when its lease ran out or its daemon registered.
void Daemon::RecallAllLayouts(const std::string& name, uint64_t epoch, std::function<void()> done) {
  struct Round {
    explicit Round(asio::io_context& io) : timer(io) {}
    std::set<NodeId> pending;
    std::function<void()> done;
    asio::steady_timer timer;
    Clock::time_point start = Clock::now();
  };
  auto round = std::make_shared<Round>(io_);
  round->done = std::move(done);
  const auto& members = state_.members();
  round->pending.insert(members.begin(), members.end());
  auto finish = [this, name, epoch, round](const char* how) {
    if (!round->done) return;
    round->timer.cancel();
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - round->start).count();
    VLOG(kInfo, name, epoch) << "layouts of earlier coordinators " << how << " ("
                             << static_cast<int>(ms) << " ms)";
    auto done_now = std::move(round->done);
    round->done = nullptr;
    done_now();
  };
  if (round->pending.empty()) {
    finish("ended: no member");
    return;
  }
  // Like any recall, an unanswered one ends when the node's lease has run
  // out (call_timeout_ms is longer than any lease).
  round->timer.expires_after(std::chrono::milliseconds(config_.call_timeout_ms));
  round->timer.async_wait([this, name, epoch, round, finish](boost::system::error_code ec) {
    if (ec || !round->done) return;
    std::string nodes;
    for (NodeId n : round->pending) nodes += " " + std::to_string(n);
    VLOG(kWarning, name, epoch) << "no answer to the recall of all layouts from node(s)" << nodes;
    finish("ended, some nodes timed out");
  });
  auto answered = [this, name, epoch, round, finish](NodeId node, const abi::Message& r) {
    if (r.error() != 0)
      VLOG(kWarning, name, epoch) << "node " << node
                                  << " did not end its layouts: " << std::strerror(-r.error());
    round->pending.erase(node);
    if (round->pending.empty()) finish("ended on every node");
  };
  for (NodeId node : std::vector<NodeId>(round->pending.begin(), round->pending.end())) {
    abi::Message m(CSVFS_CMD_LAYOUT_RECALL_ALL);
    m.PutU64(CSVFS_A_REQ_ID, next_seq_++);
    CallNodeAsync(name, node, std::move(m),
                  [answered, node](abi::Message r) { answered(node, r); });
  }
}

void Daemon::CloseService(const std::string& name) {
  Local& l = locals_[name];
  l.busy = true;
  auto svc = l.service;
  auto gate = l.gate;
  const VolumeState* v = state_.volume(name);
  uint64_t epoch = v ? v->epoch : 0;
  VLOG(kInfo, name, epoch) << "no longer coordinator: unmounting";
  std::string thaw_error;
  if (l.frozen) Thaw(name, "the role is lost", &thaw_error);
  asio::post(workers_, [this, name, svc, gate, epoch] {
    {
      std::unique_lock lock(*gate);  // waits for requests in flight
      svc->Close();
    }
    asio::post(io_, [this, name, epoch] {
      Local& lv = locals_[name];
      lv.service.reset();
      lv.busy = false;
      VLOG(kInfo, name, epoch) << "released";
      lv.last_released_sent = Clock::now();
      StateMsg m;
      m.type = MsgType::kReleased;
      m.volume = name;
      Broadcast(m);
      Reconcile();
    });
  });
}

void Daemon::PersistVolumes() {
  json vols = json::array();
  for (const auto& [name, v] : state_.volumes())
    vols.push_back({{"name", name}, {"uuid", UuidString(v.uuid)}, {"preferred", v.preferred}});
  std::string path = config_.state_dir + "/volumes.json";
  std::ofstream out(path + ".tmp");
  out << vols.dump(2) << "\n";
  out.close();
  std::rename((path + ".tmp").c_str(), path.c_str());
}

void Daemon::LoadVolumes() {
  std::ifstream in(config_.state_dir + "/volumes.json");
  if (!in) return;
  json vols = json::parse(in, nullptr, false);
  if (!vols.is_array()) return;
  for (const auto& j : vols) {
    StateMsg m;
    m.type = MsgType::kVolumeAdd;
    if (!j.is_object() || !j.contains("name") || !j.contains("uuid") || !j["name"].is_string() ||
        !j["uuid"].is_string() || !ParseUuid(j["uuid"].get<std::string>(), &m.uuid))
      continue;
    m.volume = j["name"].get<std::string>();
    m.node = j.value("preferred", 0u);
    state_.Apply(self_, m);
  }
}

// ---- requests ----------------------------------------------------------

bool Daemon::Serving(const VolumeState& v) const {
  return synced_ && local_quorate_ && state_.quorate() && v.coordinator != kNoNode && v.ready;
}

// Whether our state is the cluster's, to act on (serve a volume) and to
// answer from ("no such volume"). A csvd that started before its Corosync
// merged with the cluster synced with itself alone; at the merge it is
// quorate before the cluster's SYNC reaches it, and meanwhile its own state
// (empty on a fresh node, or an old volume list that elects itself) must
// neither mount a volume the cluster's coordinator has mounted nor fail a
// mount. A state no quorate membership held counts only once none came.
bool Daemon::StateSettled() const {
  if (!synced_ || !local_quorate_ || !state_.quorate()) return false;
  return state_from_quorum_ || Clock::now() - last_membership_ >= kStateSettle;
}

void Daemon::CountRequest(const std::string& volume, const abi::Message& m) {
  VolumeCounters& c = vol_counters_[volume];
  auto bytes = [&m] {
    if (auto d = m.GetBinary(CSVFS_A_DATA)) return static_cast<uint64_t>(d->size());
    return m.GetU64(CSVFS_A_LENGTH).value_or(0);
  };
  switch (m.cmd()) {
    case CSVFS_CMD_READ:
    case CSVFS_CMD_WRITE:
      ++c.file_io;
      c.file_bytes += bytes();
      break;
    case CSVFS_CMD_BLOCK_READ:
    case CSVFS_CMD_BLOCK_WRITE:
      ++c.block_io;
      c.block_bytes += bytes();
      break;
    case CSVFS_CMD_LAYOUT_GET:
    case CSVFS_CMD_LAYOUT_RETURN:
    case CSVFS_CMD_LAYOUT_COMMIT:
      ++c.layouts;
      break;
    default:
      ++c.metadata;
  }
}

void Daemon::Submit(const std::string& volume, abi::Message request, Reply done) {
  ++counters_.requests;
  CountRequest(volume, request);
  uint64_t id = next_pending_++;
  Pending p;
  p.volume = volume;
  p.client_req_id = request.req_id();
  // Non-idempotent ops carry an OP_ID that survives re-sends (the kernel
  // sets its own; the test channel's clients get one here): the
  // coordinator answers a re-sent op that already ran with its first
  // result (docs/failover.md).
  if (NeedsOpId(request.cmd()) && !request.Has(CSVFS_A_OP_ID))
    request.PutU64(CSVFS_A_OP_ID, op_id_base_ | next_op_id_++);
  if (request.cmd() == CSVFS_CMD_RELEASE) MarkReleasing(volume, request);
  p.request = std::move(request);
  p.done = std::move(done);
  p.start = Clock::now();
  pending_.emplace(id, std::move(p));
  Dispatch(id);
}

void Daemon::Dispatch(uint64_t id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  Pending& p = it->second;
  const VolumeState* v = state_.volume(p.volume);
  if (!v && StateSettled()) {
    Finish(id, abi::MakeReply(p.request, -ENODEV));
    return;
  }
  if (!v || !Serving(*v)) {
    Hold(id);
    return;
  }
  if (p.held) {
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - p.held_since).count();
    counters_.last_hold_ms = ms;
    counters_.max_hold_ms = std::max(counters_.max_hold_ms, ms);
    p.held = false;
    ++counters_.resent;
  }
  p.epoch = v->epoch;
  abi::Message req = p.request;
  req.PutU64(CSVFS_A_EPOCH, v->epoch);
  req.PutString(CSVFS_A_VOLUME, p.volume);
  uint64_t epoch = v->epoch;
  if (v->coordinator == self_) {
    ServeLocally(p.volume, epoch, std::move(req), self_, [this, id](abi::Message reply) {
      if (reply.error() == -kErrStaleEpoch) {
        Hold(id);
        return;
      }
      Finish(id, std::move(reply));
    });
    return;
  }
  ++counters_.forwarded;
  NodeId coord = v->coordinator;
  peers_->Call(coord, std::move(req), [this, id](std::optional<abi::Message> reply) {
    auto pit = pending_.find(id);
    if (pit == pending_.end()) return;
    if (!reply) {
      Hold(id);
      return;
    }
    if (reply->error() == -kErrStaleEpoch) {
      ++counters_.refused_stale;
      Hold(id);
      return;
    }
    Finish(id, std::move(*reply));
  });
}

void Daemon::Hold(uint64_t id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  if (!it->second.held) {
    it->second.held = true;
    it->second.held_since = Clock::now();
    ++counters_.held;
  }
  ArmRetry();
}

void Daemon::ArmRetry() {
  if (retry_armed_ || stopping_) return;
  retry_armed_ = true;
  retry_timer_.expires_after(kHeldRetry);
  retry_timer_.async_wait([this](boost::system::error_code ec) {
    retry_armed_ = false;
    if (!ec) DispatchHeld();
  });
}

void Daemon::DispatchHeld() {
  std::vector<uint64_t> ids;
  for (auto& [id, p] : pending_)
    if (p.held) ids.push_back(id);
  for (uint64_t id : ids) {
    auto it = pending_.find(id);
    if (it == pending_.end() || !it->second.held) continue;
    const VolumeState* v = state_.volume(it->second.volume);
    if (v && Serving(*v)) {
      Dispatch(id);
    } else if (!v && StateSettled()) {
      Dispatch(id);  // answers -ENODEV
    }
  }
  for (auto& [id, p] : pending_)
    if (p.held) {
      ArmRetry();
      break;
    }
}

void Daemon::Finish(uint64_t id, abi::Message reply) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  Pending p = std::move(it->second);
  pending_.erase(it);
  int cmd = p.request.cmd();
  if (reply.error() != 0) ++counters_.errors;
  TrackOpen(p, reply);
  reply.PutU64(CSVFS_A_REQ_ID, p.client_req_id);
  // Results only this node knows: where the volume is here.
  if (cmd == CSVFS_CMD_ATTACH && reply.error() == 0) {
    auto lit = locals_.find(p.volume);
    if (lit != locals_.end() && !lit->second.device.empty()) {
      reply.PutString(CSVFS_A_DEVICE, lit->second.device);
      reply.PutU64(CSVFS_A_DEV_SIZE, DeviceSize(lit->second.device));
    }
  }
  p.done(std::move(reply));
}

// OPEN, CREATE and RELEASE of local clients keep opens_ (OpenRecord).
void Daemon::TrackOpen(const Pending& p, const abi::Message& reply) {
  const int cmd = p.request.cmd();
  if (cmd != CSVFS_CMD_RELEASE && cmd != CSVFS_CMD_OPEN && cmd != CSVFS_CMD_CREATE) return;
  auto& opens = opens_[p.volume];
  if (cmd == CSVFS_CMD_RELEASE) {
    if (auto id = p.request.GetU64(CSVFS_A_OPEN_ID)) opens.erase(*id);
    return;
  }
  const auto reclaim = cmd == CSVFS_CMD_OPEN ? p.request.GetU64(CSVFS_A_OPEN_ID) : std::nullopt;
  if (reclaim) {
    auto it = opens.find(*reclaim);
    if (reply.error() != 0) {
      ++counters_.reclaim_failed;
      VLOG(kWarning, p.volume, p.epoch)
          << "reclaim of open " << *reclaim << " refused: " << std::strerror(-reply.error());
      if (it != opens.end()) opens.erase(it);
      return;
    }
    ++counters_.reclaimed;
    if (it == opens.end() || it->second.releasing) {
      // Released while the reclaim was on its way (the coordinator may have
      // taken the RELEASE first): release it again there.
      abi::Message rel(CSVFS_CMD_RELEASE);
      rel.PutBinary(CSVFS_A_FH, *p.request.GetBinary(CSVFS_A_FH)).PutU64(CSVFS_A_OPEN_ID, *reclaim);
      Submit(p.volume, std::move(rel), [](abi::Message) {});
      return;
    }
    it->second.epoch = p.epoch;
    it->second.reclaiming = false;
    return;
  }
  auto id = reply.GetU64(CSVFS_A_OPEN_ID);
  auto fh = cmd == CSVFS_CMD_OPEN ? p.request.GetBinary(CSVFS_A_FH) : reply.GetBinary(CSVFS_A_FH);
  auto flags = p.request.GetU32(CSVFS_A_FLAGS);
  if (reply.error() != 0 || !id || !fh || !flags) return;
  OpenRecord& r = opens[*id];
  r.fh.assign(fh->begin(), fh->end());
  r.flags = *flags;  // the coordinator ignores O_CREAT, O_EXCL, O_TRUNC in a reclaim
  r.epoch = p.epoch;
  r.reclaiming = false;
}

// A RELEASE on its way: no reclaim of that open any more (TrackOpen).
void Daemon::MarkReleasing(const std::string& volume, const abi::Message& release) {
  auto vit = opens_.find(volume);
  auto id = release.GetU64(CSVFS_A_OPEN_ID);
  if (vit == opens_.end() || !id) return;
  if (auto it = vit->second.find(*id); it != vit->second.end()) it->second.releasing = true;
}

// Every open a serving coordinator does not know yet (made under an
// earlier epoch) goes to it again, with its OPEN_ID.
void Daemon::ReclaimOpens() {
  for (auto& [volume, opens] : opens_) {
    const VolumeState* v = state_.volume(volume);
    if (!v || !Serving(*v)) continue;
    for (auto& [id, r] : opens) {
      if (r.epoch == v->epoch || r.reclaiming || r.releasing) continue;
      r.reclaiming = true;
      abi::Message m(CSVFS_CMD_OPEN);
      m.PutBinary(CSVFS_A_FH, r.fh).PutU32(CSVFS_A_FLAGS, r.flags).PutU64(CSVFS_A_OPEN_ID, id);
      Submit(volume, std::move(m), [](abi::Message) {});  // TrackOpen sees the reply
    }
  }
}

// Orphans (files that lost their last name while open) that no node
// reclaimed within the grace period are removed; the service decides.
void Daemon::EndGraceLater(const std::string& name, std::shared_ptr<coord::Service> svc,
                           uint64_t epoch) {
  auto timer = std::make_shared<asio::steady_timer>(io_);
  timer->expires_after(std::chrono::milliseconds(config_.reclaim_grace_ms));
  timer->async_wait([this, timer, name, svc, epoch](boost::system::error_code ec) {
    if (ec || stopping_) return;
    auto it = locals_.find(name);
    if (it == locals_.end() || it->second.service != svc) return;  // closed meanwhile
    auto gate = it->second.gate;
    asio::post(workers_, [this, svc, gate, name, epoch] {
      size_t removed;
      {
        std::shared_lock lock(*gate);
        removed = svc->EndGrace();
      }
      asio::post(io_, [name, epoch, removed] {
        VLOG(kInfo, name, epoch) << "reclaim grace over: " << removed
                                 << " unreclaimed orphan(s) removed";
      });
    });
  });
}

void Daemon::ServeLocally(const std::string& volume, uint64_t epoch, abi::Message request,
                          NodeId from, Reply reply) {
  auto lit = locals_.find(volume);
  const VolumeState* v = state_.volume(volume);
  if (!v || lit == locals_.end() || !lit->second.service || lit->second.busy ||
      v->coordinator != self_ || v->epoch != epoch || !local_quorate_) {
    ++counters_.refused_stale;
    reply(abi::MakeReply(request, -kErrStaleEpoch));
    return;
  }
  if (from == self_) {
    ++counters_.served_local;
  } else {
    ++counters_.served_for_peers;
    ++vol_counters_[volume].served_for_peers;
  }
  auto svc = lit->second.service;
  auto gate = lit->second.gate;
  Uuid uuid = v->uuid;
  asio::post(workers_, [this, svc, gate, request = std::move(request), from, reply, epoch, uuid] {
    abi::Message out;
    {
      std::shared_lock lock(*gate);
      if (request.cmd() == CSVFS_CMD_ATTACH || request.cmd() == CSVFS_CMD_MOUNT) {
        out = abi::MakeReply(request, 0);
        out.PutBinary(CSVFS_A_FH, svc->RootHandle());
        out.PutU64(CSVFS_A_EPOCH, epoch);
        out.PutBinary(CSVFS_A_FS_UUID, uuid);
      } else {
        out = svc->Handle(request, from);
      }
    }
    out.PutU64(CSVFS_A_REQ_ID, request.req_id());
    asio::post(io_, [reply, out = std::move(out)]() mutable { reply(std::move(out)); });
  });
}

void Daemon::OnPeerRequest(NodeId from, abi::Message request, PeerNet::Reply reply) {
  switch (request.cmd()) {
    case CSVFS_CMD_LAYOUT_RECALL:
    case CSVFS_CMD_LAYOUT_RECALL_ALL:
    case CSVFS_CMD_LEASE_BREAK:
      // The kernel drops the layout(s) and drains its direct I/O, or flushes
      // and invalidates its page cache, before it answers.
      if (auto volume = request.GetString(CSVFS_A_VOLUME)) {
        CallKernel(std::string(*volume), std::move(request), std::move(reply));
        return;
      }
      reply(abi::MakeReply(request, 0));
      return;
    case CSVFS_CMD_INVALIDATE:
      // Coordinator-initiated: the kernel holds what is recalled. The test
      // channel's clients cache nothing, so without a module: done.
      reply(abi::MakeReply(request, 0));
      return;
    default:
      break;
  }
  auto volume = request.GetString(CSVFS_A_VOLUME);
  auto epoch = request.GetU64(CSVFS_A_EPOCH);
  if (!volume || !epoch || !IsClientRequest(request.cmd())) {
    reply(abi::MakeReply(request, -EINVAL));
    return;
  }
  ServeLocally(std::string(*volume), *epoch, std::move(request), from, std::move(reply));
}

// On the loop: a coordinator-initiated message to NODE (this node: its own
// kernel), answered with the reply, or -ETIMEDOUT when the peer cannot be
// reached. Recalls and breaks wait for the kernel; an INVALIDATE does not.
void Daemon::CallNodeAsync(const std::string& volume, NodeId node, abi::Message m, Reply done) {
  m.PutString(CSVFS_A_VOLUME, volume);
  if (node == self_) {
    if (m.cmd() == CSVFS_CMD_LAYOUT_RECALL || m.cmd() == CSVFS_CMD_LAYOUT_RECALL_ALL ||
        m.cmd() == CSVFS_CMD_LEASE_BREAK) {
      CallKernel(volume, std::move(m), std::move(done));
      return;
    }
    if (kernel_ && kernel_->connected()) kernel_->Send(m);
    done(abi::MakeReply(m, 0));
    return;
  }
  peers_->Call(node, m, [done = std::move(done), m](std::optional<abi::Message> r) {
    done(r ? std::move(*r) : abi::MakeReply(m, -ETIMEDOUT));
  });
}

abi::Message Daemon::CallNode(const std::string& volume, NodeId node, abi::Message m) {
  // Runs on a worker: hand the call to the loop and wait, bounded.
  auto promise = std::make_shared<std::promise<abi::Message>>();
  auto future = promise->get_future();
  asio::post(io_, [this, volume, node, m, promise] {
    CallNodeAsync(volume, node, m, [promise](abi::Message r) { promise->set_value(std::move(r)); });
  });
  if (future.wait_for(std::chrono::milliseconds(config_.call_timeout_ms)) !=
      std::future_status::ready)
    return abi::MakeReply(m, -ETIMEDOUT);
  return future.get();
}

void Daemon::CallKernel(const std::string& volume, abi::Message m, Reply done) {
  std::vector<uint32_t> sbs;
  for (const auto& [sb, name] : sb_volumes_)
    if (name == volume) sbs.push_back(sb);
  const uint64_t caller_id = m.req_id();
  if (sbs.empty() || !kernel_ || !kernel_->connected()) {
    done(abi::MakeReply(m, 0));  // nothing held here
    return;
  }
  // One mount per volume per node: the first superblock answers.
  uint64_t id = next_kernel_call_++;
  m.PutU64(CSVFS_A_REQ_ID, id).PutU32(CSVFS_A_SB_ID, sbs.front());
  kernel_calls_[id] = {caller_id, std::move(done),
                       Clock::now() + std::chrono::milliseconds(config_.call_timeout_ms)};
  if (!kernel_->Send(m)) {
    auto call = std::move(kernel_calls_[id]);
    kernel_calls_.erase(id);
    abi::Message r = abi::MakeReply(m, -EIO);
    r.PutU64(CSVFS_A_REQ_ID, caller_id);
    call.done(std::move(r));
  }
}

void Daemon::ExpireKernelCalls() {
  auto now = Clock::now();
  for (auto it = kernel_calls_.begin(); it != kernel_calls_.end();) {
    if (now < it->second.deadline) {
      ++it;
      continue;
    }
    abi::Message r(CSVFS_CMD_REPLY);
    r.PutU64(CSVFS_A_REQ_ID, it->second.caller_req_id).PutS32(CSVFS_A_ERRNO, -ETIMEDOUT);
    auto done = std::move(it->second.done);
    it = kernel_calls_.erase(it);
    done(std::move(r));
  }
}

// ---- channels ----------------------------------------------------------

bool Daemon::StartTestChannel(std::string* error) {
  ::unlink(config_.test_socket.c_str());
  boost::system::error_code ec;
  test_acceptor_ = std::make_unique<asio::local::stream_protocol::acceptor>(io_);
  asio::local::stream_protocol::endpoint ep(config_.test_socket);
  test_acceptor_->open(ep.protocol(), ec);
  if (!ec) test_acceptor_->bind(ep, ec);
  if (!ec) test_acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    *error = "cannot listen on " + config_.test_socket + ": " + ec.message();
    return false;
  }
  chmod(config_.test_socket.c_str(), 0600);
  asio::co_spawn(io_, AcceptTestClients(),
                 [](std::exception_ptr e) { LogException("test channel", e); });
  return true;
}

asio::awaitable<void> Daemon::AcceptTestClients() {
  while (!stopping_) {
    auto [aec, socket] = co_await test_acceptor_->async_accept(asio::as_tuple(asio::use_awaitable));
    if (aec) {
      if (aec == asio::error::operation_aborted) co_return;
      continue;
    }
    if (!PeerIsRoot(socket.native_handle())) {
      LOG(kWarning) << "test channel: refused a non-root client";
      continue;
    }
    auto conn = std::make_shared<UnixConn>(std::move(socket), "test channel");
    std::weak_ptr<UnixConn> weak = conn;
    conn->Start(
        [this, weak](abi::Message m) {
          auto send = [weak](abi::Message r) {
            if (auto c = weak.lock()) c->Send(r);
          };
          auto volume = m.GetString(CSVFS_A_VOLUME);
          if (!IsClientRequest(m.cmd()) || !volume) {
            send(abi::MakeReply(m, -EINVAL));
            return;
          }
          Submit(std::string(*volume), std::move(m), send);
        },
        [this, conn] { counters_.malformed += conn->malformed(); });
  }
}

void Daemon::OnKernelMessage(abi::Message m) {
  auto reply_to_kernel = [this](abi::Message r) {
    if (kernel_) kernel_->Send(r);
  };
  switch (m.cmd()) {
    case CSVFS_CMD_PATH_ERROR: {
      for (auto& [sb, vol] : sb_volumes_) {
        if (m.GetU32(CSVFS_A_SB_ID) != sb) continue;
        Local& l = locals_[vol];
        l.kernel_error_until = Clock::now() + std::chrono::seconds(5);
        l.path_ok = false;
        VLOG(kWarning, vol, 0) << "path error from the kernel (" << m.error() << ")";
      }
      ProbeTick();
      return;
    }
    case CSVFS_CMD_UNMOUNT:
      if (auto sb = m.GetU32(CSVFS_A_SB_ID)) {
        if (auto it = sb_volumes_.find(*sb); it != sb_volumes_.end())
          kernel_took_.erase(it->second);
        sb_volumes_.erase(*sb);
      }
      reply_to_kernel(abi::MakeReply(m, 0));
      return;
    case CSVFS_CMD_MOUNT:
      sb_volumes_[*m.GetU32(CSVFS_A_SB_ID)] = std::string(*m.GetString(CSVFS_A_VOLUME));
      kernel_pushed_.erase(std::string(*m.GetString(CSVFS_A_VOLUME)));
      kernel_took_.erase(std::string(*m.GetString(CSVFS_A_VOLUME)));
      break;
    case CSVFS_CMD_REPLY: {
      auto it = kernel_calls_.find(m.req_id());
      if (it == kernel_calls_.end()) return;
      auto call = std::move(it->second);
      kernel_calls_.erase(it);
      abi::Message r = abi::MakeReply(m, m.error());
      r.PutU64(CSVFS_A_REQ_ID, call.caller_req_id);
      call.done(std::move(r));
      return;
    }
    default:
      break;
  }
  std::string volume;
  if (auto v = m.GetString(CSVFS_A_VOLUME)) {
    volume = *v;
    // Every kernel request names its volume: a restarted daemon relearns
    // the superblocks of the mounts made before it started.
    if (auto sb = m.GetU32(CSVFS_A_SB_ID); sb && !sb_volumes_.count(*sb)) {
      sb_volumes_[*sb] = volume;
      PushKernelState();
    }
  } else if (auto sb = m.GetU32(CSVFS_A_SB_ID); sb && sb_volumes_.count(*sb)) {
    volume = sb_volumes_[*sb];
  } else {
    reply_to_kernel(abi::MakeReply(m, -ENODEV));
    return;
  }
  if (!IsClientRequest(m.cmd()) && m.cmd() != CSVFS_CMD_MOUNT) {
    reply_to_kernel(abi::MakeReply(m, -EINVAL));
    return;
  }
  Submit(volume, std::move(m), reply_to_kernel);
}

void Daemon::PushKernelState(bool renew) {
  if (!kernel_ || !kernel_->connected()) return;
  // The lease is renewed only while this node is a synced member of a
  // quorate cluster: otherwise 0 (the kernel stops direct I/O now), and a
  // hung daemon renews nothing (the kernel's deadline passes).
  const bool lease = synced_ && local_quorate_ && state_.quorate();
  if (renew) last_lease_push_ = Clock::now();
  std::set<std::string> failed;
  for (const auto& [sb, name] : sb_volumes_) {
    const VolumeState* v = state_.volume(name);
    if (!v) continue;
    auto [mode, reason] = IoMode(self_, *v);
    auto now = std::make_tuple(v->epoch, mode, reason);
    if (kernel_pushed_[name] == now && !renew) continue;
    kernel_pushed_[name] = now;
    abi::Message m(CSVFS_CMD_VOLUME_STATE);
    m.PutU64(CSVFS_A_REQ_ID, next_seq_++)
        .PutU32(CSVFS_A_SB_ID, sb)
        .PutString(CSVFS_A_VOLUME, name)
        .PutU64(CSVFS_A_EPOCH, v->epoch)
        .PutU32(CSVFS_A_IO_MODE, mode)
        .PutU32(CSVFS_A_MODE_REASON, reason)
        .PutU32(CSVFS_A_LEASE_MS, lease ? static_cast<uint32_t>(config_.lease_ms) : 0);
    // A generic netlink request runs its handler inside sendmsg(): once
    // Send() returned, the kernel has switched (csvfs_volume_state).
    if (kernel_->Send(m) && !failed.count(name)) {
      kernel_took_[name] = KernelMode{v->epoch, mode};
    } else {
      failed.insert(name);
      kernel_took_.erase(name);
      kernel_pushed_.erase(name);  // try again at the next push
    }
  }
  PublishKernelModes();
}

static_assert(CSVFS_IO_PAUSED + 1 == kIoModeCount, "kIoModeCount follows the uapi CSVFS_IO_*");

std::optional<KernelMode> Daemon::LocalKernelMode(const std::string& volume) const {
  bool mounted = std::any_of(sb_volumes_.begin(), sb_volumes_.end(),
                             [&](const auto& e) { return e.second == volume; });
  if (!mounted) return KernelMode{0, kIoNotMounted};
  auto it = kernel_took_.find(volume);
  if (it == kernel_took_.end()) return std::nullopt;
  return it->second;
}

void Daemon::PublishKernelModes() {
  if (!synced_) return;
  auto now = Clock::now();
  for (const auto& [name, v] : state_.volumes()) {
    auto mine = LocalKernelMode(name);
    if (!mine) continue;
    const KernelMode* published = state_.KernelModeOf(self_, name);
    if (published && *published == *mine) continue;
    Local& l = locals_[name];
    if (l.last_kmode_value == *mine && now - l.last_kmode_sent < kRebroadcast) continue;
    l.last_kmode_value = *mine;
    l.last_kmode_sent = now;
    StateMsg m;
    m.type = MsgType::kKernelMode;
    m.volume = name;
    m.epoch = mine->epoch;
    m.io_mode = mine->io_mode;
    Broadcast(m);
  }
}

std::string Daemon::NotRedirectedYet(const VolumeState& v) const {
  std::string out;
  for (NodeId n : state_.members()) {
    const KernelMode* k = state_.KernelModeOf(n, v.name);
    if (k && (k->io_mode == kIoNotMounted ||
              (k->io_mode == CSVFS_IO_FILE_REDIRECTED && k->epoch == v.epoch)))
      continue;
    if (!out.empty()) out += ", ";
    out += "node " + std::to_string(n) + " (";
    out += k ? std::string(ModeName(k->io_mode)) + " at epoch " + std::to_string(k->epoch)
             : std::string("no report yet");
    out += ")";
  }
  return out;
}

std::pair<uint32_t, uint32_t> Daemon::IoMode(NodeId node, const VolumeState& v) const {
  if (!state_.quorate() || (node == self_ && !local_quorate_))
    return {CSVFS_IO_PAUSED, CSVFS_REASON_NO_QUORUM};
  if (v.coordinator == kNoNode || !v.ready) return {CSVFS_IO_PAUSED, CSVFS_REASON_FAILOVER};
  if (v.backup != kNoNode) return {CSVFS_IO_FILE_REDIRECTED, CSVFS_REASON_BACKUP};
  if (v.redirected) return {CSVFS_IO_FILE_REDIRECTED, CSVFS_REASON_USER};
  if (!state_.PathHealthy(node, v.name)) return {CSVFS_IO_BLOCK_REDIRECTED, CSVFS_REASON_NO_PATH};
  return {CSVFS_IO_DIRECT, CSVFS_REASON_NONE};
}

// ---- path monitor ------------------------------------------------------

void Daemon::ProbeTick() {
  if (stopping_) return;
  auto now = Clock::now();
  for (const auto& [name, v] : state_.volumes()) {
    Local& l = locals_[name];
    if (l.probing) {
      // A probe that hangs past the timeout is a failed path.
      if (now - l.probe_started > std::chrono::milliseconds(config_.path_timeout_ms) && l.path_ok) {
        l.path_ok = false;
        VLOG(kWarning, name, v.epoch) << "path probe timed out";
      }
      continue;
    }
    l.probing = true;
    l.probe_started = now;
    std::string device = l.device;
    Uuid uuid = v.uuid;
    std::string fault = config_.path_fault_file;
    asio::post(probes_, [this, name, device, uuid, fault] {
      std::string dev = device;
      bool ok = false;
      bool faulted = !fault.empty() && access(fault.c_str(), F_OK) == 0;
      if (!faulted) {
        if (dev.empty()) dev = FindDeviceByUuid(uuid);
        ok = !dev.empty() && ProbePath(dev);
        if (!ok && !device.empty()) {  // the name may have changed
          dev = FindDeviceByUuid(uuid);
          ok = !dev.empty() && ProbePath(dev);
        }
      }
      asio::post(io_, [this, name, dev, ok] {
        Local& lv = locals_[name];
        lv.probing = false;
        if (dev != lv.device && !dev.empty())
          VLOG(kInfo, name, 0) << "device " << dev << " holds the volume";
        if (!dev.empty()) lv.device = dev;
        bool healthy = ok && Clock::now() >= lv.kernel_error_until;
        if (healthy != lv.path_ok)
          ::csv::core::LogMessage(healthy ? Level::kInfo : Level::kWarning, name, 0).stream()
              << "path " << (healthy ? "healthy" : "FAILED") << " (" << lv.device << ")";
        lv.path_ok = healthy;
      });
    });
  }
  // Publish what differs from the replicated view.
  for (auto& [name, l] : locals_) {
    if (!synced_ || !state_.volume(name)) continue;
    bool published = state_.PathHealthy(self_, name);
    if (published != l.path_ok &&
        (l.last_path_value != l.path_ok || now - l.last_path_sent > kRebroadcast)) {
      l.last_path_value = l.path_ok;
      l.last_path_sent = now;
      StateMsg m;
      m.type = MsgType::kPath;
      m.volume = name;
      m.healthy = l.path_ok;
      Broadcast(m);
    }
  }
  // Members that have not adopted a sync yet (its sender left first, or
  // it was lost): the lowest synced member sends the state again.
  if (joined_ && synced_ && now - last_membership_ > kSyncFallback &&
      now - last_sync_sent_ > kSyncFallback) {
    bool waiting = std::any_of(state_.members().begin(), state_.members().end(),
                               [this](NodeId n) { return n != self_ && !synced_set_.count(n); });
    NodeId lowest = synced_set_.empty() ? self_ : std::min(self_, *synced_set_.begin());
    if (waiting && lowest == self_) {
      LOG(kInfo) << "a member has no state yet: sending the state sync again";
      last_sync_sent_ = now;
      BroadcastSync();
    }
  }
  // Nobody with a state is there (a new cluster, or every side of a merge
  // was without quorum, so no side served): the lowest member sends its
  // own. While members that may hold the cluster's state are present this
  // waits much longer, so that they are the ones that send it.
  auto fallback = synced_set_.empty() ? kSyncFallback : 3 * kSyncFallback;
  if (joined_ && !synced_ && now - unsynced_since_ > fallback && !state_.members().empty() &&
      state_.members().front() == self_) {
    LOG(kWarning) << "no state sync received: sending mine";
    unsynced_since_ = now;
    BroadcastSync();
  }
  PublishKernelModes();
  CheckControlWaits();
  ExpireKernelCalls();
  for (auto& [name, l] : locals_) {
    std::string error;
    if (l.frozen && now > l.frozen_until) Thaw(name, "the freeze timed out", &error);
  }
  // Renew every lease/4 (the tick is no longer): a daemon starved of CPU
  // for less than 3/4 of the lease never lets the kernel's deadline pass.
  const int renew_ms = std::max(config_.lease_ms / 4, 1);
  if (now - last_lease_push_ + kTickSlack >= std::chrono::milliseconds(renew_ms)) {
    // A renewal later than lease_ms let the kernel's lease run out: it
    // stopped direct I/O and dropped its layouts. Say so: it is the
    // daemon's loop that was held up (CPU starvation, a slow Corosync).
    auto gap = std::chrono::duration_cast<std::chrono::milliseconds>(now - last_lease_push_);
    if (kernel_ && !sb_volumes_.empty() && last_lease_push_ != Clock::time_point{}) {
      counters_.lease_renew_max_gap_ms = std::max(counters_.lease_renew_max_gap_ms, gap.count());
      if (gap.count() > config_.lease_ms) {
        ++counters_.lease_renewals_late;
        LOG(kWarning) << "lease renewed " << gap.count() << " ms after the last one (lease "
                      << config_.lease_ms << " ms): the kernel's lease ran out meanwhile";
      }
    }
    PushKernelState(true);
  }
  Reconcile();
  probe_timer_.expires_after(std::chrono::milliseconds(
      std::min({config_.path_interval_ms, 250, renew_ms})));  // publish quickly
  probe_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) ProbeTick();
  });
}

// ---- control socket ----------------------------------------------------

namespace {

class ControlSession : public std::enable_shared_from_this<ControlSession> {
 public:
  using Handler = std::function<json(const json&, std::function<void(json)>, bool*)>;
  ControlSession(asio::local::stream_protocol::socket s, Handler h)
      : socket_(std::move(s)), handler_(std::move(h)) {}
  void Read() {
    auto self = shared_from_this();
    asio::async_read_until(socket_, asio::dynamic_buffer(in_, 1 << 20), '\n',
                           [self](boost::system::error_code ec, size_t n) {
                             if (ec) return;
                             std::string line = self->in_.substr(0, n);
                             self->in_.erase(0, n);
                             self->OnLine(line);
                           });
  }

 private:
  void OnLine(const std::string& line) {
    json req = json::parse(line, nullptr, false);
    if (req.is_discarded() || !req.is_object() || !req.contains("cmd") || !req["cmd"].is_string()) {
      Write({{"ok", false}, {"error", "malformed request: expected {\"cmd\": ...}"}});
      return;
    }
    bool deferred = false;
    auto self = shared_from_this();
    json out;
    try {
      out = handler_(
          req, [self](json r) { self->Write(std::move(r)); }, &deferred);
    } catch (const json::exception& e) {
      out = {{"ok", false}, {"error", std::string("bad request: ") + e.what()}};
      deferred = false;
    }
    if (!deferred) Write(std::move(out));
  }
  void Write(json r) {
    auto self = shared_from_this();
    auto text = std::make_shared<std::string>(r.dump() + "\n");
    asio::async_write(socket_, asio::buffer(*text),
                      [self, text](boost::system::error_code ec, size_t) {
                        if (!ec) self->Read();
                      });
  }
  asio::local::stream_protocol::socket socket_;
  Handler handler_;
  std::string in_;
};

}  // namespace

bool Daemon::StartControl(std::string* error) {
  ::unlink(config_.control_socket.c_str());
  boost::system::error_code ec;
  control_acceptor_ = std::make_unique<asio::local::stream_protocol::acceptor>(io_);
  asio::local::stream_protocol::endpoint ep(config_.control_socket);
  control_acceptor_->open(ep.protocol(), ec);
  if (!ec) control_acceptor_->bind(ep, ec);
  if (!ec) control_acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    *error = "cannot listen on " + config_.control_socket + ": " + ec.message();
    return false;
  }
  chmod(config_.control_socket.c_str(), 0600);
  asio::co_spawn(io_, AcceptControlClients(),
                 [](std::exception_ptr e) { LogException("control socket", e); });
  return true;
}

asio::awaitable<void> Daemon::AcceptControlClients() {
  while (!stopping_) {
    auto [aec, socket] =
        co_await control_acceptor_->async_accept(asio::as_tuple(asio::use_awaitable));
    if (aec) {
      if (aec == asio::error::operation_aborted) co_return;
      continue;
    }
    if (!PeerIsRoot(socket.native_handle())) {
      LOG(kWarning) << "control socket: refused a non-root client";
      continue;
    }
    std::make_shared<ControlSession>(std::move(socket), [this](const json& r,
                                                               std::function<void(json)> later,
                                                               bool* deferred) {
      return HandleControl(r, std::move(later), deferred);
    })->Read();
  }
}

json Daemon::HandleControl(const json& req, std::function<void(json)> later, bool* deferred) {
  std::string cmd = req["cmd"].get<std::string>();
  auto fail = [](std::string why) { return json{{"ok", false}, {"error", std::move(why)}}; };
  if (cmd == "status") return Status();
  if (cmd == "volume-list") {
    json out = {{"ok", true}, {"volumes", json::array()}};
    for (const auto& [name, v] : state_.volumes())
      out["volumes"].push_back({{"name", name},
                                {"uuid", UuidString(v.uuid)},
                                {"preferred", v.preferred},
                                {"coordinator", v.coordinator},
                                {"epoch", v.epoch}});
    return out;
  }
  if (cmd == "stats") return Stats();
  std::string vname = req.value("name", req.value("volume", std::string()));
  if (cmd == "attach" || cmd == "detach") {
    // mount.csvfs: is this a volume, and is `device` its filesystem?
    const VolumeState* v = state_.volume(vname);
    if (!v) {
      // Only a synchronised member of a quorate cluster knows the volume
      // list: a csvd that just started may have synced with itself alone.
      if (!StateSettled())
        return fail(
            "csvd is not synchronised with the cluster yet (no quorum, or its state "
            "not received yet): try again");
      return fail("no volume " + vname + " in this cluster (csvctl volume list)");
    }
    auto lit = locals_.find(vname);
    std::string local_dev = lit == locals_.end() ? "" : lit->second.device;
    std::string device = req.value("device", std::string());
    if (cmd == "attach" && !device.empty()) {
      std::string error;
      auto id = ProbeFilesystem(device, &error);
      if (!id) return fail(error);
      if (id->uuid != v->uuid)
        return fail(device + " holds filesystem " + UuidString(id->uuid) + ", not volume " + vname +
                    " (" + UuidString(v->uuid) + ")" +
                    (local_dev.empty() ? "" : ": this node sees the volume on " + local_dev));
    }
    VLOG(kInfo, vname, v->epoch) << (cmd == "attach" ? "attach" : "detach") << " requested"
                                 << (device.empty() ? "" : " (" + device + ")");
    return {{"ok", true},
            {"volume", vname},
            {"uuid", UuidString(v->uuid)},
            {"device", local_dev},
            {"coordinator", v->coordinator},
            {"epoch", v->epoch},
            {"ready", v->ready},
            {"synced", synced_},
            {"quorate", local_quorate_ && state_.quorate()}};
  }
  if (cmd == "thaw") {  // always allowed: never leave a filesystem frozen
    std::string error;
    if (!Thaw(vname, "csvctl asked", &error)) return fail(error);
    return {{"ok", true}, {"volume", vname}, {"frozen", false}};
  }
  if (cmd == "backup-end") {
    std::string error;
    auto lit = locals_.find(vname);
    if (lit != locals_.end() && lit->second.frozen) Thaw(vname, "backup ended", &error);
  }
  if (!synced_ || !state_.quorate() || !local_quorate_)
    return fail("this node has no quorum or is not synchronised with the cluster yet");
  if (cmd == "freeze") {
    const VolumeState* v = state_.volume(vname);
    if (!v) return fail("no volume " + vname);
    if (v->backup != self_)
      return fail("no backup of " + vname + " in progress on this node (csvctl backup begin " +
                  vname + " first)");
    // Direct writes would bypass the frozen filesystem: every node's kernel
    // must have switched to FileRedirected first.
    if (std::string late = NotRedirectedYet(*v); !late.empty())
      return fail("not every node's kernel has confirmed FileRedirected for " + vname +
                  " yet: " + late + "; wait (csvctl backup begin waits), or check csvd there");
    return Freeze(vname, req.value("timeout_s", 300), std::move(later), deferred);
  }
  StateMsg m;
  m.volume = vname;
  if (m.volume.empty() || m.volume.size() >= CSVFS_MAX_VOLUME_NAME ||
      m.volume.find_first_not_of(
          "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != std::string::npos)
    return fail("a volume name is 1-63 letters, digits, '.', '-', '_'");
  if (cmd == "volume-add") {
    std::string device = req.value("device", std::string());
    std::string error;
    auto id = ProbeFilesystem(device, &error);
    if (!id) return fail(error);
    if (id->type != "xfs" && id->type != "ext4")
      return fail(device + " holds " + id->type + ", not XFS or ext4");
    m.type = MsgType::kVolumeAdd;
    m.uuid = id->uuid;
    m.node = req.value("preferred", 0u);
  } else if (cmd == "volume-remove") {
    if (!state_.volume(m.volume)) return fail("no volume " + m.volume);
    m.type = MsgType::kVolumeRemove;
  } else if (cmd == "move") {
    const VolumeState* v = state_.volume(m.volume);
    if (!v) return fail("no volume " + m.volume);
    if (v->backup != kNoNode)
      return fail("a backup of " + m.volume + " is in progress on node " +
                  std::to_string(v->backup) + ": csvctl backup end " + m.volume + " first");
    m.type = MsgType::kMove;
    m.node = req.value("node", 0u);
  } else if (cmd == "redirect") {
    if (!state_.volume(m.volume)) return fail("no volume " + m.volume);
    m.type = MsgType::kRedirect;
    m.healthy = req.value("on", true);
  } else if (cmd == "backup-begin" || cmd == "backup-end") {
    const VolumeState* v = state_.volume(m.volume);
    if (!v) return fail("no volume " + m.volume);
    if (cmd == "backup-end" && v->backup == kNoNode)
      return {{"ok", true},
              {"volume", m.volume},
              {"coordinator", v->coordinator},
              {"epoch", v->epoch},
              {"note", "no backup was in progress"}};
    if (cmd == "backup-end" && v->backup != self_)
      return fail("the backup of " + m.volume + " is taken by node " + std::to_string(v->backup) +
                  ": end it there");
    m.type = MsgType::kBackup;
    m.node = cmd == "backup-begin" ? self_ : kNoNode;
  } else {
    return fail("unknown command " + cmd);
  }
  m.origin_seq = next_seq_++;
  ControlWait w{req, std::move(later), m, Clock::now() + kControlTimeout};
  control_waits_.emplace(m.origin_seq, std::move(w));
  Broadcast(m);
  *deferred = true;
  return {};
}

void Daemon::CheckControlWaits() {
  auto now = Clock::now();
  for (auto it = control_waits_.begin(); it != control_waits_.end();) {
    if (now > it->second.deadline) {
      it->second.reply({{"ok", false}, {"error", "timed out waiting for the cluster"}});
      it = control_waits_.erase(it);
    } else {
      ++it;
    }
  }
}

json Daemon::Status() const {
  json out = {{"ok", true},
              {"node", self_},
              {"quorate", local_quorate_ && state_.quorate()},
              {"synced", synced_},
              {"members", state_.members()}};
  json nodes = json::array();
  for (const auto& n : config_.nodes)
    nodes.push_back(
        {{"id", n.id},
         {"addr", n.host + ":" + std::to_string(n.port)},
         {"member", state_.IsMember(n.id)},
         {"lease", state_.IsMember(n.id) && state_.quorate() && (n.id != self_ || local_quorate_)
                       ? "valid"
                       : "expired"},
         {"connected", n.id == self_ || peers_->Connected(n.id)}});
  out["nodes"] = nodes;
  json vols = json::array();
  for (const auto& [name, v] : state_.volumes()) {
    json jv = {{"name", name},
               {"uuid", UuidString(v.uuid)},
               {"preferred", v.preferred},
               {"coordinator", v.coordinator},
               {"epoch", v.epoch},
               {"ready", v.ready},
               {"redirected", v.redirected},
               {"backup_node", v.backup}};
    auto lit = locals_.find(name);
    jv["device"] = lit == locals_.end() ? "" : lit->second.device;
    jv["frozen_here"] = lit != locals_.end() && lit->second.frozen;
    jv["serving_here"] = lit != locals_.end() && lit->second.service != nullptr;
    // Files that lost their last name while open, removed by this node's
    // service since it began serving (orphans.cc).
    jv["orphans_removed"] = jv["serving_here"] ? lit->second.service->RemovedOrphans() : 0;
    auto oit = opens_.find(name);
    jv["opens_here"] = oit == opens_.end() ? 0 : oit->second.size();
    json per = json::array();
    for (NodeId n : state_.members()) {
      auto [mode, reason] = IoMode(n, v);
      per.push_back(
          {{"id", n},
           {"path_healthy", state_.PathHealthy(n, name)},
           {"io_mode", ModeName(mode)},
           {"reason", ReasonName(reason)},
           {"lease",
            (n == self_ ? local_quorate_ : true) && state_.quorate() ? "valid" : "expired"}});
      // What the node's kernel confirmed (kKernelMode), for backup begin.
      const KernelMode* k = state_.KernelModeOf(n, name);
      per.back()["kernel_mode"] = k ? ModeName(k->io_mode) : "unknown";
      per.back()["kernel_epoch"] = k ? k->epoch : 0;
    }
    jv["kernels_not_redirected"] = NotRedirectedYet(v);
    jv["nodes"] = per;
    vols.push_back(jv);
  }
  out["volumes"] = vols;
  const auto& ps = peers_->stats();
  out["counters"] = {{"requests", counters_.requests},
                     {"served_local", counters_.served_local},
                     {"served_for_peers", counters_.served_for_peers},
                     {"forwarded", counters_.forwarded},
                     {"held", counters_.held},
                     {"resent", counters_.resent},
                     {"reclaimed", counters_.reclaimed},
                     {"reclaim_failed", counters_.reclaim_failed},
                     {"refused_stale_epoch", counters_.refused_stale},
                     {"errors", counters_.errors},
                     {"malformed_frames", counters_.malformed + ps.malformed},
                     {"peer_auth_failures", ps.auth_failures},
                     {"peer_connects", ps.connects},
                     {"pending", pending_.size()},
                     {"last_hold_ms", counters_.last_hold_ms},
                     {"max_hold_ms", counters_.max_hold_ms},
                     {"lease_renew_max_gap_ms", counters_.lease_renew_max_gap_ms},
                     {"lease_renewals_late", counters_.lease_renewals_late}};
  return out;
}

}  // namespace csv::core

namespace csv::core {

namespace {

// The module's counters of one mount, /proc/fs/csvfs/<sb> (kmod/stats.c):
// "stat <path> <read|write> <ops> <bytes> <ns>" lines become
// {path: {read|write: {ops, bytes, avg_us}}}; null without the file.
json KernelStats(uint32_t sb) {
  std::ifstream in("/proc/fs/csvfs/" + std::to_string(sb));
  if (!in) return nullptr;
  json out = json::object();
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string tag, path, op;
    uint64_t ops = 0, bytes = 0, ns = 0;
    if (!(words >> tag >> path >> op >> ops >> bytes >> ns) || tag != "stat") continue;
    out[path][op] = {{"ops", ops}, {"bytes", bytes}, {"avg_us", ops ? ns / ops / 1000 : 0}};
  }
  return out;
}

}  // namespace

json Daemon::Stats() const {
  json vols = json::array();
  for (const auto& [name, v] : state_.volumes()) {
    auto [mode, reason] = IoMode(self_, v);
    auto it = vol_counters_.find(name);
    VolumeCounters c = it == vol_counters_.end() ? VolumeCounters{} : it->second;
    vols.push_back({{"name", name},
                    {"coordinator", v.coordinator},
                    {"epoch", v.epoch},
                    {"io_mode", ModeName(mode)},
                    {"reason", ReasonName(reason)},
                    {"metadata_ops", c.metadata},
                    {"file_redirected_ios", c.file_io},
                    {"file_redirected_bytes", c.file_bytes},
                    {"block_redirected_ios", c.block_io},
                    {"block_redirected_bytes", c.block_bytes},
                    {"layout_ops", c.layouts},
                    {"served_for_peers", c.served_for_peers}});
    // Direct and cached I/O never pass through csvd: the module counts them.
    for (const auto& [sb, volume] : sb_volumes_)
      if (volume == name) vols.back()["kernel"] = KernelStats(sb);
  }
  json out = Status();
  return {{"ok", true}, {"node", self_}, {"volumes", vols}, {"counters", out["counters"]}};
}

json Daemon::Freeze(const std::string& volume, int timeout_s, std::function<void(json)> later,
                    bool* deferred) {
  auto fail = [](std::string why) { return json{{"ok", false}, {"error", std::move(why)}}; };
  Local& l = locals_[volume];
  if (!l.service || l.busy) return fail("this node does not serve " + volume + " yet: retry");
  if (l.frozen) return fail(volume + " is already frozen");
  if (l.freezing) return fail(volume + " is being frozen");
  timeout_s = std::clamp(timeout_s, 1, 3600);
  l.freezing = true;
  std::string dir = config_.run_dir + "/mnt/" + volume;
  *deferred = true;
  // FIFREEZE syncs the filesystem first: off the loop, and off the worker
  // pool (its workers may block on the frozen filesystem).
  std::thread([this, volume, dir, timeout_s, later = std::move(later)] {
    int err = 0;
    int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || ioctl(fd, FIFREEZE, 0) != 0) err = errno;
    if (fd >= 0) close(fd);
    asio::post(io_, [this, volume, err, timeout_s, later] {
      Local& lv = locals_[volume];
      lv.freezing = false;
      const VolumeState* v = state_.volume(volume);
      uint64_t epoch = v ? v->epoch : 0;
      if (err) {
        VLOG(kWarning, volume, epoch) << "FIFREEZE failed: " << std::strerror(err);
        later({{"ok", false}, {"error", "cannot freeze " + volume + ": " + std::strerror(err)}});
        return;
      }
      lv.frozen = true;
      lv.frozen_until = Clock::now() + std::chrono::seconds(timeout_s);
      VLOG(kInfo, volume, epoch) << "lower filesystem frozen for a backup (at most " << timeout_s
                                 << " s)";
      later({{"ok", true}, {"volume", volume}, {"frozen", true}, {"timeout_s", timeout_s}});
    });
  }).detach();
  return {};
}

bool Daemon::Thaw(const std::string& volume, const char* why, std::string* error) {
  auto it = locals_.find(volume);
  if (it == locals_.end() || !it->second.frozen) {
    *error = volume + " is not frozen on this node";
    return false;
  }
  std::string dir = config_.run_dir + "/mnt/" + volume;
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int err = 0;
  if (fd < 0 || (ioctl(fd, FITHAW, 0) != 0 && errno != EINVAL)) err = errno;
  if (fd >= 0) close(fd);
  const VolumeState* v = state_.volume(volume);
  if (err) {
    *error = "cannot thaw " + volume + ": " + std::strerror(err);
    VLOG(kError, volume, v ? v->epoch : 0) << *error;
    return false;
  }
  it->second.frozen = false;
  VLOG(kInfo, volume, v ? v->epoch : 0) << "lower filesystem thawed (" << why << ")";
  return true;
}

}  // namespace csv::core
