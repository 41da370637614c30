// csvd's link to Corosync: one CPG group for membership and totally ordered
// state messages, and votequorum for this node's view of quorum. Both file
// descriptors are driven by the daemon's io_context (wait_read, then
// dispatch everything); sends that get CS_ERR_TRY_AGAIN are retried on a
// timer, in order, with rate-limited logging.
//
// Thread-safety: not thread-safe; use from the io_context's thread only.
#pragma once

#include <corosync/cpg.h>
#include <corosync/votequorum.h>

#include <boost/asio.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/election.h"

namespace csv::core {

class Corosync {
 public:
  struct Callbacks {
    // A membership change of the group; `members` is the whole new list.
    std::function<void(std::vector<NodeId> members, std::vector<NodeId> joined,
                       std::vector<NodeId> left)>
        on_membership;
    std::function<void(NodeId sender, std::span<const uint8_t> bytes)> on_message;
    std::function<void(bool quorate)> on_quorum;
    // Corosync went away: the daemon cannot stay in the cluster.
    std::function<void(const std::string& why)> on_lost;
  };

  Corosync(boost::asio::io_context& io, std::string group, Callbacks callbacks);
  ~Corosync();
  Corosync(const Corosync&) = delete;
  Corosync& operator=(const Corosync&) = delete;

  // Connects and joins; false with *error if Corosync is not reachable.
  bool Start(std::string* error);
  NodeId local_node() const { return local_node_; }
  // Multicasts in agreed order. Queued: never blocks, never fails here.
  void Send(std::vector<uint8_t> bytes);
  void Stop();

 private:
  static void OnDeliver(cpg_handle_t, const cpg_name*, uint32_t nodeid, uint32_t pid, void* msg,
                        size_t len);
  static void OnConfchg(cpg_handle_t, const cpg_name*, const cpg_address* members, size_t n_members,
                        const cpg_address* left, size_t n_left, const cpg_address* joined,
                        size_t n_joined);
  static void OnQuorum(votequorum_handle_t, uint64_t context, uint32_t quorate, uint32_t n,
                       votequorum_node_t nodes[]);
  void WaitCpg();
  void WaitQuorum();
  void Flush();

  boost::asio::io_context& io_;
  std::string group_;
  Callbacks callbacks_;
  cpg_handle_t cpg_ = 0;
  votequorum_handle_t vq_ = 0;
  NodeId local_node_ = kNoNode;
  std::unique_ptr<boost::asio::posix::stream_descriptor> cpg_fd_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> vq_fd_;
  boost::asio::steady_timer retry_;
  std::deque<std::vector<uint8_t>> outbox_;
  bool retry_armed_ = false;
  bool stopped_ = false;
  unsigned try_again_count_ = 0;
};

}  // namespace csv::core
