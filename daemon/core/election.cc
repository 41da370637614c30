#include "core/election.h"

#include <algorithm>

namespace csv::core {
namespace {

bool CanServe(const ElectionInput& in, NodeId n) {
  return n != kNoNode && in.eligible.count(n) &&
         std::find(in.members.begin(), in.members.end(), n) != in.members.end();
}

}  // namespace

NodeId Elect(const ElectionInput& in) {
  if (!in.quorate) return kNoNode;
  if (CanServe(in, in.current)) return in.current;
  if (CanServe(in, in.preferred)) return in.preferred;
  NodeId best = kNoNode;
  for (NodeId n : in.members)
    if (CanServe(in, n) && (best == kNoNode || n < best)) best = n;
  return best;
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
