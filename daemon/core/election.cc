#include "core/election.h"

#include <algorithm>

namespace csv::core {
namespace {

bool CanServe(const ElectionInput& in, NodeId n) {
  return n != kNoNode && in.eligible.count(n) &&
         std::find(in.members.begin(), in.members.end(), n) != in.members.end();
}

size_t Load(const ElectionInput& in, NodeId n) {
  auto it = in.load.find(n);
  return it == in.load.end() ? 0 : it->second;
}

// The eligible member with the fewest volumes; ties: the lowest id.
NodeId LeastLoaded(const ElectionInput& in) {
  NodeId best = kNoNode;
  for (NodeId n : in.members) {
    if (!CanServe(in, n)) continue;
    if (best == kNoNode || Load(in, n) < Load(in, best) ||
        (Load(in, n) == Load(in, best) && n < best))
      best = n;
  }
  return best;
}

}  // namespace

NodeId Elect(const ElectionInput& in) {
  if (!in.quorate) return kNoNode;
  if (CanServe(in, in.current)) return in.current;
  if (CanServe(in, in.preferred)) return in.preferred;
  return LeastLoaded(in);
}

NodeId BalanceTarget(const ElectionInput& in) {
  if (!in.quorate || in.preferred != kNoNode || !CanServe(in, in.current)) return kNoNode;
  NodeId least = LeastLoaded(in);
  // The current coordinator serves this volume too: its load is one more.
  if (least == kNoNode || Load(in, in.current) + 1 < Load(in, least) + 2) return kNoNode;
  return least;
}

NodeId NextOwner(const ElectionInput& in) {
  if (!in.quorate) return kNoNode;
  std::vector<NodeId> sorted(in.members);
  std::sort(sorted.begin(), sorted.end());
  for (NodeId n : sorted)
    if (n > in.current && CanServe(in, n)) return n;
  for (NodeId n : sorted)
    if (n != in.current && CanServe(in, n)) return n;
  return kNoNode;
}

}  // namespace csv::core
