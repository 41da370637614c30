// TCP transport between daemons: authenticated connections (auth.h) that
// carry daemon/abi frames, request/reply matching by REQ_ID, and automatic
// reconnection (a connection is dialled again on the next call after it
// failed, at most once per second per node).
//
// Thread-safety: use from the io_context's thread only.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "abi/message.h"
#include "core/election.h"
#include "core/frame_conn.h"

namespace csv::core {

using TcpConn = FrameConn<asio::ip::tcp::socket>;

struct PeerAddress {
  NodeId id = kNoNode;
  std::string host;
  uint16_t port = 0;
};

// The handshake of auth.h on a connected stream. `expected` is the node
// dialled (kNoNode when accepting); `accept` decides whether a peer's id is
// acceptable. Returns the authenticated peer id or kNoNode, with *why set.
asio::awaitable<NodeId> Handshake(std::shared_ptr<TcpConn> conn, NodeId self,
                                  std::span<const uint8_t> key, NodeId expected,
                                  std::function<bool(NodeId)> accept, std::string* why);

class PeerNet {
 public:
  using Reply = std::function<void(abi::Message)>;
  using Done = std::function<void(std::optional<abi::Message>)>;
  struct Callbacks {
    std::function<void(NodeId from, abi::Message request, Reply reply)> on_request;
    std::function<bool(NodeId)> is_member;
    std::function<void(NodeId)> on_connected;
  };
  struct Stats {
    uint64_t auth_failures = 0;
    uint64_t connects = 0;
    uint64_t malformed = 0;
  };

  PeerNet(asio::io_context& io, NodeId self, std::vector<uint8_t> key,
          std::vector<PeerAddress> nodes, Callbacks callbacks);

  bool Listen(const std::string& host, uint16_t port, std::string* error);
  // Sends `request` (its REQ_ID is replaced) to `node`; `done` gets the
  // reply, or nullopt if there was no connection or it broke first.
  void Call(NodeId node, abi::Message request, Done done);
  bool Connected(NodeId node) const;
  // The node left the membership: close our connection to it.
  void Drop(NodeId node);
  const Stats& stats() const { return stats_; }
  void Stop();

 private:
  struct Outgoing {
    std::shared_ptr<TcpConn> conn;  // authenticated, or null
    bool connecting = false;
    std::chrono::steady_clock::time_point next_attempt{};
    std::vector<std::pair<abi::Message, Done>> waiting;  // until connected
    std::map<uint64_t, Done> inflight;
  };

  asio::awaitable<void> Accept();
  asio::awaitable<void> Serve(asio::ip::tcp::socket socket);
  asio::awaitable<void> Connect(NodeId node);
  void Fail(Outgoing* out);
  void SendOn(Outgoing* out, abi::Message request, Done done);
  const PeerAddress* Address(NodeId node) const;

  asio::io_context& io_;
  NodeId self_;
  std::vector<uint8_t> key_;
  std::vector<PeerAddress> nodes_;
  Callbacks callbacks_;
  std::unique_ptr<asio::ip::tcp::acceptor> acceptor_;
  std::map<NodeId, Outgoing> out_;
  std::multimap<NodeId, std::weak_ptr<TcpConn>> incoming_;
  uint64_t next_req_id_ = 1;
  Stats stats_;
  bool stopped_ = false;
};

}  // namespace csv::core
