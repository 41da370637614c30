#include "core/state.h"

#include <gtest/gtest.h>

namespace csv::core {
namespace {

StateMsg Msg(MsgType type, std::string volume, NodeId node = 0, uint64_t epoch = 0,
             bool healthy = false) {
  StateMsg m;
  m.type = type;
  m.volume = std::move(volume);
  m.node = node;
  m.epoch = epoch;
  m.healthy = healthy;
  m.uuid[0] = 0xab;
  return m;
}

// Three members, volume V1 added, every node's path healthy.
ClusterState ThreeNodes() {
  ClusterState s(3);
  s.OnMembership({1, 2, 3});
  s.Apply(1, Msg(MsgType::kVolumeAdd, "V1", 0));
  for (NodeId n : {1, 2, 3}) s.Apply(n, Msg(MsgType::kPath, "V1", 0, 0, true));
  return s;
}

TEST(StateTest, AddElectsLowestOnceAPathIsHealthy) {
  ClusterState s(3);
  s.OnMembership({1, 2, 3});
  s.Apply(1, Msg(MsgType::kVolumeAdd, "V1"));
  EXPECT_EQ(s.volume("V1")->coordinator, kNoNode);
  auto r = s.Apply(2, Msg(MsgType::kPath, "V1", 0, 0, true));
  ASSERT_EQ(r.changes.size(), 1u);
  EXPECT_EQ(r.changes[0].new_coordinator, 2u);
  EXPECT_EQ(s.volume("V1")->epoch, 1u);
  s.Apply(1, Msg(MsgType::kPath, "V1", 0, 0, true));
  EXPECT_EQ(s.volume("V1")->coordinator, 2u) << "the current coordinator is kept";
}

TEST(StateTest, EveryChangeBumpsTheEpoch) {
  ClusterState s = ThreeNodes();
  uint64_t e = s.volume("V1")->epoch;
  EXPECT_EQ(s.volume("V1")->coordinator, 1u);
  auto r = s.OnMembership({2, 3});
  ASSERT_EQ(r.changes.size(), 1u);
  EXPECT_EQ(r.changes[0].old_coordinator, 1u);
  EXPECT_EQ(r.changes[0].new_coordinator, 2u);
  EXPECT_EQ(s.volume("V1")->epoch, e + 1);
  EXPECT_FALSE(s.volume("V1")->ready);
  EXPECT_TRUE(s.volume("V1")->holders.empty()) << "a node that left holds nothing";
}

TEST(StateTest, QuorumLossStopsServing) {
  ClusterState s = ThreeNodes();
  uint64_t e = s.volume("V1")->epoch;
  s.OnMembership({1});
  EXPECT_FALSE(s.quorate());
  EXPECT_EQ(s.volume("V1")->coordinator, kNoNode);
  EXPECT_EQ(s.volume("V1")->epoch, e + 1);
  EXPECT_TRUE(s.volume("V1")->holders.count(1)) << "node 1 must release before anyone mounts";
}

TEST(StateTest, PathLossMovesAndReadyWaitsForRelease) {
  ClusterState s = ThreeNodes();
  s.Apply(1, Msg(MsgType::kReady, "V1", 0, s.volume("V1")->epoch));
  EXPECT_TRUE(s.volume("V1")->ready);
  s.Apply(1, Msg(MsgType::kPath, "V1", 0, 0, false));
  const VolumeState* v = s.volume("V1");
  EXPECT_EQ(v->coordinator, 2u);
  EXPECT_FALSE(v->ready);
  s.Apply(2, Msg(MsgType::kReady, "V1", 0, v->epoch));
  EXPECT_FALSE(v->ready) << "node 1 still holds the filesystem";
  s.Apply(1, Msg(MsgType::kReleased, "V1"));
  s.Apply(2, Msg(MsgType::kReady, "V1", 0, v->epoch));
  EXPECT_TRUE(v->ready);
}

TEST(StateTest, RoleRegainedWhileHoldingNeedsNoRelease) {
  ClusterState s = ThreeNodes();
  s.OnMembership({1});  // quorum lost: node 1 holds the filesystem
  EXPECT_TRUE(s.volume("V1")->holders.count(1));
  s.OnMembership({1, 2});
  EXPECT_EQ(s.volume("V1")->coordinator, 1u);
  EXPECT_TRUE(s.volume("V1")->holders.empty());
  s.Apply(1, Msg(MsgType::kReady, "V1", 0, s.volume("V1")->epoch));
  EXPECT_TRUE(s.volume("V1")->ready);
}

TEST(StateTest, ReadyForAStaleEpochIsIgnored) {
  ClusterState s = ThreeNodes();
  s.Apply(1, Msg(MsgType::kReady, "V1", 0, s.volume("V1")->epoch - 1));
  EXPECT_FALSE(s.volume("V1")->ready);
  s.Apply(2, Msg(MsgType::kReady, "V1", 0, s.volume("V1")->epoch));
  EXPECT_FALSE(s.volume("V1")->ready) << "only the coordinator announces READY";
}

TEST(StateTest, MoveToNodeAndToNext) {
  ClusterState s = ThreeNodes();
  auto r = s.Apply(2, Msg(MsgType::kMove, "V1", 3));
  EXPECT_TRUE(r.error.empty());
  EXPECT_EQ(s.volume("V1")->coordinator, 3u);
  EXPECT_TRUE(s.volume("V1")->holders.count(1));
  s.Apply(2, Msg(MsgType::kMove, "V1", 0));
  EXPECT_EQ(s.volume("V1")->coordinator, 1u);
  s.Apply(2, Msg(MsgType::kPath, "V1", 0, 0, false));
  r = s.Apply(1, Msg(MsgType::kMove, "V1", 2));
  EXPECT_FALSE(r.error.empty()) << "a node without a path cannot be the target";
  EXPECT_EQ(s.volume("V1")->coordinator, 1u);
}

TEST(StateTest, PreferredOwnerWinsWhenCoordinatorFails) {
  ClusterState s(3);
  s.OnMembership({1, 2, 3});
  s.Apply(1, Msg(MsgType::kVolumeAdd, "V1", 3));
  for (NodeId n : {1, 2, 3}) s.Apply(n, Msg(MsgType::kPath, "V1", 0, 0, true));
  EXPECT_EQ(s.volume("V1")->coordinator, 1u) << "kept: 1 was healthy first";
  s.OnMembership({2, 3});
  EXPECT_EQ(s.volume("V1")->coordinator, 3u);
}

TEST(StateTest, OpenFailureExcludesNodeUntilMembershipChanges) {
  ClusterState s = ThreeNodes();
  s.Apply(1, Msg(MsgType::kOpenFailed, "V1", 0, s.volume("V1")->epoch));
  EXPECT_EQ(s.volume("V1")->coordinator, 2u);
}

TEST(StateTest, AddConflicts) {
  ClusterState s = ThreeNodes();
  StateMsg other = Msg(MsgType::kVolumeAdd, "V1");
  other.uuid[0] = 0xcd;
  EXPECT_FALSE(s.Apply(1, other).error.empty());
  EXPECT_FALSE(s.Apply(1, Msg(MsgType::kVolumeAdd, "V2")).error.empty()) << "same UUID";
  EXPECT_TRUE(s.Apply(1, Msg(MsgType::kVolumeRemove, "V1")).error.empty());
  EXPECT_EQ(s.volume("V1"), nullptr);
}

TEST(StateTest, SyncMakesJoinerIdentical) {
  ClusterState a = ThreeNodes();
  a.Apply(1, Msg(MsgType::kMove, "V1", 2));
  std::vector<uint8_t> wire = EncodeStateMsg(a.Snapshot());
  StateMsg decoded;
  std::string error;
  ASSERT_TRUE(DecodeStateMsg(wire, &decoded, &error)) << error;
  ClusterState b(3);
  b.OnMembership({1, 2, 3});
  b.Adopt(decoded);
  EXPECT_EQ(a.volumes(), b.volumes());
  EXPECT_TRUE(b.PathHealthy(3, "V1"));
}

TEST(StateTest, RedirectIsAReplicatedFlag) {
  ClusterState s = ThreeNodes();
  uint64_t e = s.volume("V1")->epoch;
  EXPECT_TRUE(s.Apply(2, Msg(MsgType::kRedirect, "V1", 0, 0, true)).error.empty());
  EXPECT_TRUE(s.volume("V1")->redirected);
  EXPECT_EQ(s.volume("V1")->epoch, e) << "maintenance mode keeps the coordinator";
  s.Apply(3, Msg(MsgType::kRedirect, "V1", 0, 0, false));
  EXPECT_FALSE(s.volume("V1")->redirected);
  EXPECT_FALSE(s.Apply(1, Msg(MsgType::kRedirect, "nope", 0, 0, true)).error.empty());
}

TEST(StateTest, BackupMovesTheRoleToTheBackupNode) {
  ClusterState s = ThreeNodes();
  ASSERT_EQ(s.volume("V1")->coordinator, 1u);
  auto r = s.Apply(3, Msg(MsgType::kBackup, "V1", 3));
  EXPECT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(s.volume("V1")->coordinator, 3u);
  EXPECT_EQ(s.volume("V1")->backup, 3u);
  EXPECT_FALSE(s.Apply(2, Msg(MsgType::kBackup, "V1", 2)).error.empty()) << "one backup at a time";
  s.Apply(3, Msg(MsgType::kBackup, "V1", kNoNode));
  EXPECT_EQ(s.volume("V1")->backup, kNoNode);
  EXPECT_EQ(s.volume("V1")->coordinator, 3u) << "the role stays after the backup";
  s.Apply(2, Msg(MsgType::kBackup, "V1", 2));
  s.OnMembership({1, 3});
  EXPECT_EQ(s.volume("V1")->backup, kNoNode) << "a backup node that left ends its backup";
}

TEST(StateTest, KernelModeReportsAreClearedOnMembershipAndSync) {
  ClusterState s = ThreeNodes();
  StateMsg k = Msg(MsgType::kKernelMode, "V1", 0, 7);
  k.io_mode = 2;
  s.Apply(2, k);
  ASSERT_NE(s.KernelModeOf(2, "V1"), nullptr);
  EXPECT_EQ(s.KernelModeOf(2, "V1")->epoch, 7u);
  EXPECT_EQ(s.KernelModeOf(2, "V1")->io_mode, 2u);
  EXPECT_EQ(s.KernelModeOf(3, "V1"), nullptr) << "node 3 has not reported";
  s.Apply(2, Msg(MsgType::kKernelMode, "nope", 0, 7));
  EXPECT_EQ(s.KernelModeOf(2, "nope"), nullptr) << "no report for an unknown volume";
  s.OnMembership({1, 2});
  EXPECT_EQ(s.KernelModeOf(2, "V1"), nullptr) << "every member reports again";
  s.Apply(2, k);
  s.Adopt(s.Snapshot());
  EXPECT_EQ(s.KernelModeOf(2, "V1"), nullptr) << "not carried by a sync";
}

TEST(StateWireTest, KernelModeRoundTripAndBounds) {
  StateMsg m = Msg(MsgType::kKernelMode, "V1", 0, 9);
  m.io_mode = kIoNotMounted;
  StateMsg d;
  std::string error;
  ASSERT_TRUE(DecodeStateMsg(EncodeStateMsg(m), &d, &error)) << error;
  EXPECT_EQ(d.io_mode, kIoNotMounted);
  EXPECT_EQ(d.epoch, 9u);
  m.io_mode = kIoModeCount;  // not a mode
  EXPECT_FALSE(DecodeStateMsg(EncodeStateMsg(m), &d, &error));
  auto wire = EncodeStateMsg(Msg(MsgType::kKernelMode, "V1", 0, 9));
  for (size_t n = 0; n < wire.size(); ++n)
    EXPECT_FALSE(DecodeStateMsg(std::span(wire.data(), n), &d, &error)) << n;
}

// Volumes without a preferred owner, every path healthy.
ClusterState Volumes(std::vector<std::string> names) {
  ClusterState s(3);
  s.OnMembership({1, 2, 3});
  for (const auto& v : names) {
    StateMsg add = Msg(MsgType::kVolumeAdd, v, 0);
    add.uuid[1] = static_cast<uint8_t>(v.back());  // one filesystem each
    s.Apply(1, add);
  }
  for (NodeId n : {1, 2, 3})
    for (const auto& v : names) s.Apply(n, Msg(MsgType::kPath, v, 0, 0, true));
  return s;
}

std::map<NodeId, int> Loads(const ClusterState& s) {
  std::map<NodeId, int> load;
  for (const auto& [name, v] : s.volumes()) load[v.coordinator]++;
  return load;
}

TEST(BalanceTest, VolumesSpreadOverTheNodes) {
  ClusterState s = Volumes({"V1", "V2", "V3"});
  EXPECT_EQ(Loads(s), (std::map<NodeId, int>{{1, 1}, {2, 1}, {3, 1}}));
  ClusterState t = Volumes({"V1", "V2"});
  EXPECT_NE(t.volume("V1")->coordinator, t.volume("V2")->coordinator);
}

TEST(BalanceTest, FailoverGoesToTheLeastLoadedNode) {
  ClusterState s = Volumes({"V1", "V2"});
  NodeId c1 = s.volume("V1")->coordinator, c2 = s.volume("V2")->coordinator;
  NodeId idle = 6 - c1 - c2;
  std::vector<NodeId> rest;
  for (NodeId n : {1, 2, 3})
    if (n != c1) rest.push_back(n);
  s.OnMembership(rest);
  EXPECT_EQ(s.volume("V1")->coordinator, idle) << "not onto V2's node";
  EXPECT_EQ(s.volume("V2")->coordinator, c2) << "V2 is not touched";
}

TEST(BalanceTest, RejoiningNodeTakesVolumesBackWhenItIsEligible) {
  ClusterState s = Volumes({"V1", "V2", "V3"});
  NodeId gone = s.volume("V3")->coordinator;
  std::vector<NodeId> rest;
  for (NodeId n : {1, 2, 3})
    if (n != gone) rest.push_back(n);
  s.OnMembership(rest);
  auto loads = Loads(s);
  EXPECT_EQ(loads.size(), 2u);
  EXPECT_EQ(std::max(loads.begin()->second, loads.rbegin()->second), 2);
  // It rejoins: nothing moves before it publishes a healthy path.
  auto r = s.OnMembership({1, 2, 3});
  EXPECT_TRUE(r.changes.empty());
  uint64_t epochs = 0;
  for (const auto& [name, v] : s.volumes()) epochs += v.epoch;
  size_t moves = 0;
  for (const char* v : {"V1", "V2", "V3"})
    moves += s.Apply(gone, Msg(MsgType::kPath, v, 0, 0, true)).changes.size();
  EXPECT_EQ(moves, 1u) << "exactly one volume moves back";
  EXPECT_EQ(Loads(s), (std::map<NodeId, int>{{1, 1}, {2, 1}, {3, 1}}));
  uint64_t after = 0;
  for (const auto& [name, v] : s.volumes()) after += v.epoch;
  EXPECT_EQ(after, epochs + 1) << "the move bumped one epoch";
  // A repeated path message changes nothing.
  EXPECT_TRUE(s.Apply(gone, Msg(MsgType::kPath, "V1", 0, 0, true)).changes.empty());
}

TEST(BalanceTest, PreferredOwnerIsNotBalancedAway) {
  ClusterState s(3);
  s.OnMembership({1, 2, 3});
  s.Apply(1, Msg(MsgType::kVolumeAdd, "V1", 1));
  StateMsg add = Msg(MsgType::kVolumeAdd, "V2", 1);
  add.uuid[1] = 2;
  s.Apply(1, add);
  for (NodeId n : {1, 2, 3})
    for (const char* v : {"V1", "V2"}) s.Apply(n, Msg(MsgType::kPath, v, 0, 0, true));
  EXPECT_EQ(s.volume("V1")->coordinator, 1u);
  EXPECT_EQ(s.volume("V2")->coordinator, 1u);
}

TEST(StateWireTest, SyncCarriesRedirectAndBackup) {
  ClusterState a = ThreeNodes();
  a.Apply(1, Msg(MsgType::kRedirect, "V1", 0, 0, true));
  a.Apply(2, Msg(MsgType::kBackup, "V1", 2));
  StateMsg d;
  std::string error;
  ASSERT_TRUE(DecodeStateMsg(EncodeStateMsg(a.Snapshot()), &d, &error)) << error;
  ASSERT_EQ(d.volumes.size(), 1u);
  EXPECT_TRUE(d.volumes[0].redirected);
  EXPECT_EQ(d.volumes[0].backup, 2u);
}

TEST(StateWireTest, SyncCarriesWhetherItComesFromQuorum) {
  ClusterState a = ThreeNodes();
  StateMsg d;
  std::string error;
  for (bool from_quorum : {false, true}) {
    StateMsg m = a.Snapshot();
    m.from_quorum = from_quorum;
    auto wire = EncodeStateMsg(m);
    ASSERT_TRUE(DecodeStateMsg(wire, &d, &error)) << error;
    EXPECT_EQ(d.from_quorum, from_quorum);
    wire.back() = 2;  // the flag is the body's last byte: 0 or 1 only
    EXPECT_FALSE(DecodeStateMsg(wire, &d, &error));
  }
}

TEST(StateWireTest, RoundTrip) {
  StateMsg m = Msg(MsgType::kPath, "Volume1", 7, 42, true);
  m.origin_seq = 0x1122334455667788ull;
  auto wire = EncodeStateMsg(m);
  EXPECT_EQ(wire[0], 'C');  // explicit little-endian magic
  StateMsg d;
  std::string error;
  ASSERT_TRUE(DecodeStateMsg(wire, &d, &error)) << error;
  EXPECT_EQ(d.type, MsgType::kPath);
  EXPECT_EQ(d.volume, "Volume1");
  EXPECT_EQ(d.node, 7u);
  EXPECT_EQ(d.epoch, 42u);
  EXPECT_TRUE(d.healthy);
  EXPECT_EQ(d.origin_seq, m.origin_seq);
  EXPECT_EQ(d.uuid, m.uuid);
}

TEST(StateWireTest, RefusesEveryTruncation) {
  ClusterState a = ThreeNodes();
  for (auto wire : {EncodeStateMsg(a.Snapshot()), EncodeStateMsg(Msg(MsgType::kMove, "V", 2))}) {
    StateMsg d;
    std::string error;
    for (size_t n = 0; n < wire.size(); ++n)
      EXPECT_FALSE(DecodeStateMsg(std::span(wire.data(), n), &d, &error)) << n;
    wire.push_back(0);
    EXPECT_FALSE(DecodeStateMsg(wire, &d, &error));
  }
}

TEST(StateWireTest, RefusesBadHeaderFields) {
  auto wire = EncodeStateMsg(Msg(MsgType::kReady, "V", 0, 1));
  StateMsg d;
  std::string error;
  auto bad = wire;
  bad[4] = 9;  // version
  EXPECT_FALSE(DecodeStateMsg(bad, &d, &error));
  bad = wire;
  bad[6] = 0x7f;  // type
  EXPECT_FALSE(DecodeStateMsg(bad, &d, &error));
  bad = wire;
  bad[0] ^= 1;  // magic
  EXPECT_FALSE(DecodeStateMsg(bad, &d, &error));
  bad = wire;
  bad.back() = 2;  // a flag that is not 0 or 1
  EXPECT_FALSE(DecodeStateMsg(bad, &d, &error));
}

TEST(StateWireTest, RandomBytesNeverCrash) {
  std::vector<uint8_t> b(200);
  uint32_t x = 12345;
  StateMsg d;
  std::string error;
  for (int i = 0; i < 20000; ++i) {
    for (auto& c : b) c = static_cast<uint8_t>((x = x * 1103515245 + 12345) >> 16);
    b[0] = 'C', b[1] = 'S', b[2] = 'V', b[3] = 'S', b[4] = 1, b[5] = 0;
    (void)DecodeStateMsg(std::span(b.data(), x % b.size()), &d, &error);
  }
}

}  // namespace
}  // namespace csv::core
