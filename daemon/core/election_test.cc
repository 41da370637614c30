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

TEST(ElectionTest, NextOwnerWrapsAround) {
  EXPECT_EQ(NextOwner(Input({1, 2, 3}, {1, 2, 3}, 2)), 3u);
  EXPECT_EQ(NextOwner(Input({1, 2, 3}, {1, 2, 3}, 3)), 1u);
  EXPECT_EQ(NextOwner(Input({1, 2, 3}, {2}, 2)), kNoNode);
}

}  // namespace
}  // namespace csv::core
