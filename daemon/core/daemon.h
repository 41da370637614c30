// csvd's core: ties the replicated state (Corosync), the peer transport,
// the coordinator services, the client channels (csvfs.ko over generic
// netlink, the Unix test channel), the path monitor and the control socket.
//
// Threads: one io_context thread owns every member below; coordinator
// requests (Service::Handle), Open/Close and path probes run on a worker
// pool and post their results back. See docs/daemon.md.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <shared_mutex>
#include <string>

#include "coordinator/service.h"
#include "core/config.h"
#include "core/corosync.h"
#include "core/kernel.h"
#include "core/peer.h"
#include "core/state.h"

namespace csv::core {

// The errno a coordinator answers when a request's epoch is not the
// volume's current one, or it is not (or not yet) the volume's coordinator:
// the sender re-resolves the coordinator and sends again. Never returned to
// an application. EREMCHG ("remote address changed") is used because no
// filesystem operation returns it, unlike ESTALE (stale file handle).
inline constexpr int kErrStaleEpoch = EREMCHG;

class Daemon {
 public:
  Daemon(asio::io_context& io, Config config);
  ~Daemon();

  // Connects to Corosync, opens sockets; false with *error on failure.
  bool Start(std::string* error);
  // Closes every service, leaves the group.
  void Stop();

 private:
  using Reply = std::function<void(abi::Message)>;
  using Clock = std::chrono::steady_clock;

  // Node-local state of one volume.
  struct Local {
    std::string device;                       // found by UUID, "" if not
    std::shared_ptr<coord::Service> service;  // open: we are its coordinator
    std::shared_ptr<std::shared_mutex> gate = std::make_shared<std::shared_mutex>();
    bool busy = false;  // Open or Close running on a worker
    uint64_t served_epoch = 0;
    bool path_ok = false;
    bool probing = false;
    Clock::time_point probe_started{};
    Clock::time_point kernel_error_until{};
    Clock::time_point last_ready_sent{}, last_released_sent{}, last_path_sent{};
    bool last_path_value = false;
    bool lease_wait_logged = false;
    // csvctl backup: the lower filesystem frozen (FIFREEZE) until thawed or
    // frozen_until, whichever comes first.
    bool frozen = false;
    bool freezing = false;
    Clock::time_point frozen_until{};
    // The kernel mode last published (kKernelMode) and when.
    KernelMode last_kmode_value{};
    Clock::time_point last_kmode_sent{};
  };

  // Requests of local clients per volume, by data path (csvctl stats).
  struct VolumeCounters {
    uint64_t metadata = 0, file_io = 0, file_bytes = 0, block_io = 0, block_bytes = 0, layouts = 0,
             errors = 0, served_for_peers = 0;
  };

  // A request from a local client, until its final reply.
  struct Pending {
    std::string volume;
    abi::Message request;
    uint64_t client_req_id = 0;
    Reply done;
    bool held = false;
    uint64_t epoch = 0;  // of the coordinator it was last sent to
    Clock::time_point start{};
    Clock::time_point held_since{};
  };

  // An open of this node's clients (kernel, test channel), kept until its
  // RELEASE and re-sent with its OPEN_ID to every new coordinator
  // (reclaim): the new one then knows it, and keeps a file that lost its
  // last name while open (daemon/coordinator/orphans.cc).
  struct OpenRecord {
    std::vector<uint8_t> fh;
    uint32_t flags = 0;  // as opened (a reclaim ignores O_CREAT, O_EXCL, O_TRUNC)
    uint64_t epoch = 0;  // the coordinator's epoch that knows it
    bool reclaiming = false;
    bool releasing = false;  // its RELEASE is on its way
  };

  struct ControlWait {
    nlohmann::json request;
    std::function<void(nlohmann::json)> reply;
    StateMsg msg;
    Clock::time_point deadline;
  };

  // Cluster events.
  void OnMembership(std::vector<NodeId> members, std::vector<NodeId> joined,
                    std::vector<NodeId> left);
  void OnStateMessage(NodeId sender, std::span<const uint8_t> bytes);
  void OnQuorum(bool quorate);
  void Broadcast(StateMsg m);
  void BroadcastSync();
  void AfterChange(const ApplyResult& r);
  void Reconcile();
  void OpenService(const std::string& name, uint64_t epoch);
  void RecallAllLayouts(const std::string& name, uint64_t epoch, std::function<void()> done);
  void CloseService(const std::string& name);
  void PersistVolumes();
  void LoadVolumes();

  // Requests.
  void Submit(const std::string& volume, abi::Message request, Reply done);
  void Dispatch(uint64_t id);
  void Hold(uint64_t id);
  void DispatchHeld();
  void ArmRetry();
  void Finish(uint64_t id, abi::Message reply);
  void TrackOpen(const Pending& p, const abi::Message& reply);
  void ReclaimOpens();
  void MarkReleasing(const std::string& volume, const abi::Message& release);
  void EndGraceLater(const std::string& name, std::shared_ptr<coord::Service> svc, uint64_t epoch);
  bool Serving(const VolumeState& v) const;
  bool StateSettled() const;
  void ServeLocally(const std::string& volume, uint64_t epoch, abi::Message request, NodeId from,
                    Reply reply);
  void OnPeerRequest(NodeId from, abi::Message request, PeerNet::Reply reply);
  abi::Message CallNode(const std::string& volume, NodeId node, abi::Message m);
  void CallNodeAsync(const std::string& volume, NodeId node, abi::Message m, Reply done);
  // Delivers a coordinator's call (LAYOUT_RECALL) to this node's kernel for
  // every superblock of `volume` and answers with the kernel's reply (0 if
  // nothing is mounted here). Loop thread only.
  void CallKernel(const std::string& volume, abi::Message m, Reply done);
  void ExpireKernelCalls();

  // Channels.
  bool StartTestChannel(std::string* error);
  asio::awaitable<void> AcceptTestClients();
  asio::awaitable<void> AcceptControlClients();
  bool StartControl(std::string* error);
  void OnKernelMessage(abi::Message m);
  void PushKernelState(bool renew = false);
  // Publishes (kKernelMode) what this node's kernel took for each volume
  // when the replicated view differs from it.
  void PublishKernelModes();
  // What this node's kernel runs for `volume`: not mounted, the last
  // VOLUME_STATE it took, or nullopt (mounted, nothing delivered yet).
  std::optional<KernelMode> LocalKernelMode(const std::string& volume) const;
  // Members whose kernel has not confirmed FileRedirected at v's epoch
  // (or has no mount), as "node N (its report)"; empty when all did.
  std::string NotRedirectedYet(const VolumeState& v) const;
  nlohmann::json HandleControl(const nlohmann::json& req, std::function<void(nlohmann::json)> later,
                               bool* deferred);
  nlohmann::json Status() const;
  nlohmann::json Stats() const;
  // csvctl backup: freeze/thaw the lower filesystem this node serves.
  nlohmann::json Freeze(const std::string& volume, int timeout_s,
                        std::function<void(nlohmann::json)> later, bool* deferred);
  bool Thaw(const std::string& volume, const char* why, std::string* error);
  void CountRequest(const std::string& volume, const abi::Message& m);
  void CheckControlWaits();

  // Path monitor.
  void ProbeTick();

  std::pair<uint32_t, uint32_t> IoMode(NodeId node, const VolumeState& v) const;

  asio::io_context& io_;
  Config config_;
  NodeId self_ = kNoNode;
  asio::thread_pool workers_;
  // Path probes: apart from the workers, which may all wait on the
  // filesystem (a freeze, a slow fsync) while the path is fine.
  asio::thread_pool probes_;
  std::unique_ptr<Corosync> corosync_;
  std::unique_ptr<PeerNet> peers_;
  std::unique_ptr<KernelChannel> kernel_;
  ClusterState state_;
  bool local_quorate_ = false;
  bool synced_ = false;
  bool joined_ = false;
  bool had_quorum_ = false;  // synced in a quorate membership at least once
  // Our state is the cluster's: adopted from a sync that had it, or held
  // (synced) through a quorate membership. Not a state this node made up
  // while its Corosync had not merged with the others yet.
  bool state_from_quorum_ = false;
  std::set<NodeId> synced_set_;
  Clock::time_point unsynced_since_{};
  Clock::time_point last_membership_{};  // the last membership change
  Clock::time_point last_sync_sent_{};   // the last SYNC this node sent
  std::map<std::string, Local> locals_;
  std::map<uint64_t, Pending> pending_;
  std::map<std::string, std::map<uint64_t, OpenRecord>> opens_;  // volume -> OPEN_ID ->
  uint64_t next_pending_ = 1;
  // OP_IDs of the test channel's requests: top bit set (the kernel's are
  // clear), 31 random bits per daemon start, a counter.
  uint64_t op_id_base_ =
      (1ULL << 63) | (static_cast<uint64_t>(std::random_device{}() & 0x7fffffff) << 32);
  uint32_t next_op_id_ = 1;
  // Leases: the last renewal pushed to the kernel; no new coordinator
  // mounts before lease_wait_until_ (a node left: its lease runs out).
  Clock::time_point last_lease_push_{};
  Clock::time_point lease_wait_until_{};
  asio::steady_timer retry_timer_;
  bool retry_armed_ = false;
  asio::steady_timer probe_timer_;
  uint64_t next_seq_ = 1;
  std::map<uint64_t, ControlWait> control_waits_;
  std::map<uint32_t, std::string> sb_volumes_;  // kernel superblock -> volume
  // Calls to the kernel waiting for its REPLY, by the REQ_ID sent.
  struct KernelCall {
    uint64_t caller_req_id = 0;
    Reply done;
    Clock::time_point deadline;
  };
  std::map<uint64_t, KernelCall> kernel_calls_;
  uint64_t next_kernel_call_ = 1ULL << 62;  // apart from VOLUME_STATE ids
  std::map<std::string, std::tuple<uint64_t, uint32_t, uint32_t>> kernel_pushed_;
  // Per volume: the epoch and I/O mode the kernel took (VOLUME_STATE sent
  // to every superblock of it; genl runs the handler within the send).
  std::map<std::string, KernelMode> kernel_took_;
  std::unique_ptr<asio::local::stream_protocol::acceptor> test_acceptor_;
  std::unique_ptr<asio::local::stream_protocol::acceptor> control_acceptor_;
  bool stopping_ = false;

  struct Counters {
    uint64_t requests = 0, served_local = 0, served_for_peers = 0, forwarded = 0, held = 0,
             resent = 0, refused_stale = 0, errors = 0, malformed = 0, reclaimed = 0,
             reclaim_failed = 0;
    double max_hold_ms = 0, last_hold_ms = 0;
    // Kernel lease renewals: the longest time between two, and how many came
    // later than lease_ms (the kernel's lease ran out before them).
    int64_t lease_renew_max_gap_ms = 0;
    uint64_t lease_renewals_late = 0;
  } counters_;
  std::map<std::string, VolumeCounters> vol_counters_;
};

}  // namespace csv::core
