#include "core/election.h"

#include <gtest/gtest.h>

namespace csv::core {
namespace {

ElectionInput Input(std::vector<NodeId> members, std::set<NodeId> eligible, NodeId current = 0,
                    NodeId preferred = 0, bool quorate = true) {
  ElectionInput in;
  in.members = std::move(members);
  in.eligible = std::move(eligible);
  in.current = current;
  in.preferred = preferred;
  in.quorate = quorate;
  return in;
}

TEST(ElectionTest, LowestNodeWithoutPreference) {
  EXPECT_EQ(Elect(Input({3, 1, 2}, {1, 2, 3})), 1u);
}

TEST(ElectionTest, KeepsCurrentWhileMemberWithHealthyPath) {
  EXPECT_EQ(Elect(Input({1, 2, 3}, {1, 2, 3}, 3, 2)), 3u);
}

TEST(ElectionTest, CurrentLeavesThenPreferred) {
  EXPECT_EQ(Elect(Input({1, 2}, {1, 2}, 3, 2)), 2u);
}

TEST(ElectionTest, CurrentLosesPathThenLowestHealthy) {
  EXPECT_EQ(Elect(Input({1, 2, 3}, {2, 3}, 1)), 2u);
}

TEST(ElectionTest, PreferredWithoutPathIsSkipped) {
  EXPECT_EQ(Elect(Input({1, 2, 3}, {1, 3}, 0, 2)), 1u);
}

TEST(ElectionTest, PreferredNotMemberIsSkipped) {
  EXPECT_EQ(Elect(Input({1, 3}, {1, 2, 3}, 0, 2)), 1u);
}

TEST(ElectionTest, EligibleButNotMemberIsNeverElected) {
  EXPECT_EQ(Elect(Input({2}, {1, 2}, 1)), 2u);
}

TEST(ElectionTest, NoQuorumElectsNobody) {
  EXPECT_EQ(Elect(Input({1, 2, 3}, {1, 2, 3}, 1, 1, false)), kNoNode);
}

TEST(ElectionTest, NoHealthyPathElectsNobody) {
  EXPECT_EQ(Elect(Input({1, 2, 3}, {}, 1)), kNoNode);
}

TEST(ElectionTest, LeastLoadedWithoutPreference) {
  ElectionInput in = Input({1, 2, 3}, {1, 2, 3});
  in.load = {{1, 1}};
  EXPECT_EQ(Elect(in), 2u) << "node 1 already coordinates another volume";
  in.load = {{1, 1}, {2, 1}};
  EXPECT_EQ(Elect(in), 3u);
  in.load = {{1, 2}, {2, 1}, {3, 1}};
  EXPECT_EQ(Elect(in), 2u) << "ties go to the lowest node id";
  in.eligible = {1};
  EXPECT_EQ(Elect(in), 1u) << "load never beats eligibility";
}

TEST(ElectionTest, LoadDoesNotMoveTheCurrentOrBeatThePreferred) {
  ElectionInput in = Input({1, 2, 3}, {1, 2, 3}, 1);
  in.load = {{1, 5}};
  EXPECT_EQ(Elect(in), 1u);
  in = Input({1, 2, 3}, {1, 2, 3}, 0, 1);
  in.load = {{1, 5}};
  EXPECT_EQ(Elect(in), 1u);
}

TEST(ElectionTest, BalanceTargetOnlyForAnImbalanceOfTwo) {
  ElectionInput in = Input({1, 2, 3}, {1, 2, 3}, 1);
  in.load = {{1, 1}, {2, 1}};
  EXPECT_EQ(BalanceTarget(in), 3u) << "node 1 serves 2 volumes, node 3 none";
  in.load = {{1, 1}, {2, 1}, {3, 1}};
  EXPECT_EQ(BalanceTarget(in), kNoNode) << "2 vs 1: a move would only swap";
  in.load = {};
  EXPECT_EQ(BalanceTarget(in), kNoNode);
  in.load = {{1, 1}};
  in.eligible = {1, 2};
  in.members = {1, 2};
  EXPECT_EQ(BalanceTarget(in), 2u);
  in.preferred = 1;
  EXPECT_EQ(BalanceTarget(in), kNoNode) << "a preferred owner is never balanced away";
  in.preferred = 0;
  in.quorate = false;
  EXPECT_EQ(BalanceTarget(in), kNoNode);
}

TEST(ElectionTest, NextOwnerWrapsAround) {
  EXPECT_EQ(NextOwner(Input({1, 2, 3}, {1, 2, 3}, 2)), 3u);
  EXPECT_EQ(NextOwner(Input({1, 2, 3}, {1, 2, 3}, 3)), 1u);
  EXPECT_EQ(NextOwner(Input({1, 2, 3}, {2}, 2)), kNoNode);
}

}  // namespace
}  // namespace csv::core
