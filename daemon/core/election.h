// The coordinator election: a pure function of the replicated state, so that
// every member computes the same result from the same membership (CPG
// delivers membership changes and state messages in one total order).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <vector>

namespace csv::core {

using NodeId = uint32_t;
inline constexpr NodeId kNoNode = 0;  // Corosync never uses node id 0

struct ElectionInput {
  std::vector<NodeId> members;  // current CPG members of the csvd group
  bool quorate = false;         // the members hold a majority of the votes
  std::set<NodeId> eligible;    // nodes with a healthy path that can serve
  NodeId current = kNoNode;     // the volume's coordinator now
  NodeId preferred = kNoNode;   // the volume's preferred owner
  // How many other volumes each node coordinates (absent: none), so that
  // volumes without a preferred owner spread over the nodes.
  std::map<NodeId, size_t> load;
};

// DESIGN.md: keep the current coordinator while it is a member with a
// healthy path; otherwise the preferred owner, else the least loaded node
// (fewest other volumes coordinated; ties: the lowest node id), among
// quorate members with a healthy path. kNoNode without quorum or without
// any eligible member.
NodeId Elect(const ElectionInput& in);

// Rebalancing when a node becomes eligible (rejoined, path healed): the
// node a volume without a preferred owner should move to, or kNoNode to
// stay. It moves only when its coordinator serves at least two volumes
// more than the least loaded eligible node (so a move never just swaps
// the imbalance), to that node.
NodeId BalanceTarget(const ElectionInput& in);

// The node a planned move without a target goes to: the lowest eligible
// member above `current`, wrapping around; kNoNode if there is none.
NodeId NextOwner(const ElectionInput& in);

}  // namespace csv::core
