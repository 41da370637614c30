// The replicated cluster state of csvd and the messages that change it.
//
// The state (volumes, their preferred owner, coordinator and epoch, the path
// health each node published) changes only when CPG delivers a membership
// change or a state message, in CPG's total order; every member applies the
// same events in the same order and so holds the same state. Nothing here
// does I/O: the daemon feeds events in and acts on the Changes that come out.
//
// Wire format of a state message (all integers little-endian, whatever the
// host): a 24-byte header {magic u32 "CSVS", version u16, type u16,
// body_len u32, reserved u32, origin_seq u64} and a type-specific body.
// Decoding checks every length; a message of an unknown version or type, or
// with bytes left over, is refused.
//
// Thread-safety: not thread-safe; the daemon uses it from its event loop.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/election.h"

namespace csv::core {

using Uuid = std::array<uint8_t, 16>;

inline constexpr uint32_t kStateMagic = 0x53565343;  // "CSVS" little-endian
inline constexpr uint16_t kStateVersion = 3;         // 2: redirect, backup; 3: from_quorum
inline constexpr size_t kMaxStateMessage = 1 << 20;
// kKernelMode: CSVFS_IO_* values are below kIoModeCount (daemon.cc checks it
// against the uapi header); kIoNotMounted says the sender has no mount.
inline constexpr uint32_t kIoModeCount = 4;
inline constexpr uint32_t kIoNotMounted = 0xff;

struct VolumeState {
  std::string name;
  Uuid uuid{};
  NodeId preferred = kNoNode;
  NodeId coordinator = kNoNode;  // kNoNode: none (electing, no quorum)
  uint64_t epoch = 0;            // bumped on every coordinator change
  bool ready = false;            // the coordinator announced READY for epoch
  std::set<NodeId> holders;      // former coordinators that may still have
                                 // the lower fs mounted (until RELEASED)
  bool redirected = false;       // csvctl redirect on: every node FileRedirected
  NodeId backup = kNoNode;       // csvctl backup begin: the node taking the backup
  bool operator==(const VolumeState&) const = default;
};

enum class MsgType : uint16_t {
  kSync = 1,      // full state, from the lowest synced member to joiners
  kVolumeAdd,     // volume, uuid, node = preferred owner
  kVolumeRemove,  // volume
  kPath,          // volume, healthy: the sender's path to the device
  kMove,          // volume, node = target (kNoNode: next eligible)
  kReady,         // volume, epoch: the sender serves the volume
  kReleased,      // volume: the sender has unmounted the lower fs
  kOpenFailed,    // volume, epoch: the sender could not mount it
  kRedirect,      // volume, healthy = on/off: maintenance (file-system redirected)
  kBackup,        // volume, node = the backup node (kNoNode: backup ended)
  kKernelMode,    // volume, epoch, io_mode: what the sender's kernel was told
                  // and took (io_mode kIoNotMounted: no mount of it there)
  kMax
};

using NodeVolume = std::pair<NodeId, std::string>;

struct StateMsg {
  MsgType type = MsgType::kSync;
  uint64_t origin_seq = 0;  // the sender's counter; answers control requests
  std::string volume;
  Uuid uuid{};
  NodeId node = kNoNode;
  uint64_t epoch = 0;
  bool healthy = false;
  uint32_t io_mode = 0;  // kKernelMode only (after the common body on the wire)
  // kSync only.
  std::vector<VolumeState> volumes;
  std::set<NodeVolume> healthy_paths;
  std::set<NodeVolume> open_failed;
  // The sender's state is the one a quorate membership ran with (not one
  // it made up alone): members holding such a state ignore a sync without.
  bool from_quorum = false;
};

std::vector<uint8_t> EncodeStateMsg(const StateMsg& m);
// False with *error set on any malformed input; never reads out of bounds.
bool DecodeStateMsg(std::span<const uint8_t> bytes, StateMsg* out, std::string* error);

// A coordinator change that an event caused.
struct Change {
  std::string volume;
  NodeId old_coordinator = kNoNode;
  NodeId new_coordinator = kNoNode;
  uint64_t epoch = 0;
};

struct ApplyResult {
  std::vector<Change> changes;
  std::string error;  // why a control message (add, remove, move) was refused
};

// The I/O mode a node's kernel confirmed for a volume (kKernelMode). Not
// part of the sync: cleared on every membership change and sync, and sent
// again by every member (so all members hold the same reports).
struct KernelMode {
  uint64_t epoch = 0;
  uint32_t io_mode = kIoNotMounted;
  bool operator==(const KernelMode&) const = default;
};

class ClusterState {
 public:
  // expected_nodes: votes of the whole cluster (one per configured node).
  explicit ClusterState(size_t expected_nodes) : expected_nodes_(expected_nodes) {}

  ApplyResult OnMembership(std::vector<NodeId> members);
  // Any message but kSync, delivered from `sender`.
  ApplyResult Apply(NodeId sender, const StateMsg& m);
  // Replaces the state with a kSync snapshot (membership stays) and elects.
  ApplyResult Adopt(const StateMsg& sync);
  StateMsg Snapshot() const;

  bool quorate() const { return members_.size() * 2 > expected_nodes_; }
  const std::vector<NodeId>& members() const { return members_; }
  const std::map<std::string, VolumeState>& volumes() const { return volumes_; }
  const VolumeState* volume(const std::string& name) const;
  bool PathHealthy(NodeId node, const std::string& volume) const;
  bool OpenFailed(NodeId node, const std::string& volume) const;
  // nullptr: the node has not reported since the last membership change.
  const KernelMode* KernelModeOf(NodeId node, const std::string& volume) const;
  bool IsMember(NodeId node) const;
  ElectionInput InputFor(const VolumeState& v) const;

 private:
  ApplyResult ElectAll();
  // Moves volumes without a preferred owner off overloaded nodes
  // (BalanceTarget); called when a node becomes eligible for a volume.
  void Rebalance(ApplyResult* result);
  void SetCoordinator(VolumeState* v, NodeId next, ApplyResult* result);

  size_t expected_nodes_;
  std::vector<NodeId> members_;
  std::map<std::string, VolumeState> volumes_;
  std::set<NodeVolume> healthy_paths_;
  std::set<NodeVolume> open_failed_;
  std::map<NodeVolume, KernelMode> kernel_modes_;
};

}  // namespace csv::core
