#include "core/peer.h"

#include "core/auth.h"
#include "core/log.h"

namespace csv::core {
namespace {

constexpr auto kHandshakeTimeout = std::chrono::seconds(5);
const std::string kHandshakeTimeoutText = std::to_string(kHandshakeTimeout.count()) + " s";
constexpr auto kReconnectInterval = std::chrono::milliseconds(500);

}  // namespace

asio::awaitable<NodeId> Handshake(std::shared_ptr<TcpConn> conn, NodeId self,
                                  std::span<const uint8_t> key, NodeId expected,
                                  std::function<bool(NodeId)> accept, std::string* why) {
  // A watchdog closes a connection that does not complete in time.
  asio::steady_timer watchdog(conn->socket().get_executor());
  watchdog.expires_after(kHandshakeTimeout);
  watchdog.async_wait([weak = std::weak_ptr<TcpConn>(conn)](boost::system::error_code ec) {
    if (ec) return;
    if (auto c = weak.lock()) {
      boost::system::error_code ignored;
      c->socket().close(ignored);
    }
  });
  Nonce mine = RandomNonce();
  abi::Message hello(CSVFS_CMD_HELLO);
  hello.PutU64(CSVFS_A_REQ_ID, 0)
      .PutU32(CSVFS_A_ABI_VERSION, CSVFS_ABI_VERSION)
      .PutU32(CSVFS_A_NODE_ID, self)
      .PutBinary(CSVFS_A_DATA, mine);
  conn->Send(hello);
  auto theirs = co_await conn->ReadOne();
  if (!theirs) {
    // Closed by the peer, or by the watchdog: not a wrong key (a loaded peer
    // that answers late must not send the administrator after the key).
    *why = "no HELLO: connection closed or no answer within " + kHandshakeTimeoutText;
    co_return kNoNode;
  }
  if (theirs->cmd() != CSVFS_CMD_HELLO || !theirs->GetU32(CSVFS_A_NODE_ID) ||
      theirs->GetBinary(CSVFS_A_DATA).value_or(std::span<const uint8_t>()).size() != kNonceSize ||
      theirs->GetU32(CSVFS_A_ABI_VERSION) != CSVFS_ABI_VERSION) {
    *why = "no valid HELLO";
    co_return kNoNode;
  }
  NodeId peer = *theirs->GetU32(CSVFS_A_NODE_ID);
  if ((expected != kNoNode && peer != expected) || peer == self || !accept(peer)) {
    *why = "node id " + std::to_string(peer) + " is not a member of the cluster";
    co_return kNoNode;
  }
  std::vector<uint8_t> their_nonce(theirs->GetBinary(CSVFS_A_DATA)->begin(),
                                   theirs->GetBinary(CSVFS_A_DATA)->end());
  abi::Message proof(CSVFS_CMD_REPLY);
  proof.PutU64(CSVFS_A_REQ_ID, 0)
      .PutS32(CSVFS_A_ERRNO, 0)
      .PutBinary(CSVFS_A_DATA, MakeProof(key, self, peer, mine, their_nonce));
  conn->Send(proof);
  auto answer = co_await conn->ReadOne();
  watchdog.cancel();
  if (!answer) {
    *why = "no proof from node id " + std::to_string(peer) +
           ": connection closed or no answer within " + kHandshakeTimeoutText;
    co_return kNoNode;
  }
  if (answer->cmd() != CSVFS_CMD_REPLY || !answer->GetBinary(CSVFS_A_DATA) ||
      !ProofMatches(*answer->GetBinary(CSVFS_A_DATA),
                    MakeProof(key, peer, self, their_nonce, mine))) {
    *why = "authentication failed (wrong cluster key?) for node id " + std::to_string(peer);
    co_return kNoNode;
  }
  co_return peer;
}

PeerNet::PeerNet(asio::io_context& io, NodeId self, std::vector<uint8_t> key,
                 std::vector<PeerAddress> nodes, Callbacks callbacks)
    : io_(io),
      self_(self),
      key_(std::move(key)),
      nodes_(std::move(nodes)),
      callbacks_(std::move(callbacks)) {}

const PeerAddress* PeerNet::Address(NodeId node) const {
  for (const auto& n : nodes_)
    if (n.id == node) return &n;
  return nullptr;
}

bool PeerNet::Listen(const std::string& host, uint16_t port, std::string* error) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) {
    *error = "bad listen address " + host;
    return false;
  }
  acceptor_ = std::make_unique<asio::ip::tcp::acceptor>(io_);
  asio::ip::tcp::endpoint ep(addr, port);
  acceptor_->open(ep.protocol(), ec);
  if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_->bind(ep, ec);
  if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    *error = "cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message();
    return false;
  }
  asio::co_spawn(io_, Accept(), [](std::exception_ptr e) { LogException("peer listener", e); });
  return true;
}

asio::awaitable<void> PeerNet::Accept() {
  while (!stopped_) {
    auto [ec, socket] = co_await acceptor_->async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (stopped_ || ec == asio::error::operation_aborted) co_return;
      continue;
    }
    asio::co_spawn(io_, Serve(std::move(socket)),
                   [](std::exception_ptr e) { LogException("peer session", e); });
  }
}

asio::awaitable<void> PeerNet::Serve(asio::ip::tcp::socket socket) {
  boost::system::error_code ec;
  auto remote = socket.remote_endpoint(ec);
  std::string label = "peer " + (ec ? std::string("?") : remote.address().to_string());
  socket.set_option(asio::ip::tcp::no_delay(true), ec);
  auto conn = std::make_shared<TcpConn>(std::move(socket), label);
  std::string why;
  auto accept = [this](NodeId n) { return Address(n) != nullptr && callbacks_.is_member(n); };
  NodeId peer = co_await Handshake(conn, self_, key_, kNoNode, accept, &why);
  if (peer == kNoNode) {
    ++stats_.auth_failures;
    LOG(kWarning) << "refused " << label << ": " << why;
    conn->Close();
    co_return;
  }
  LOG(kInfo) << "accepted authenticated connection from node " << peer << " (" << label << ")";
  incoming_.emplace(peer, conn);
  std::erase_if(incoming_, [](const auto& p) { return p.second.expired(); });
  std::weak_ptr<TcpConn> weak = conn;
  conn->Start(
      [this, peer, weak](abi::Message m) {
        if (m.cmd() == CSVFS_CMD_REPLY) return;  // we send no requests on this one
        callbacks_.on_request(peer, std::move(m), [weak](abi::Message reply) {
          if (auto c = weak.lock()) c->Send(reply);
        });
      },
      [this, conn] { stats_.malformed += conn->malformed(); });
}

void PeerNet::Call(NodeId node, abi::Message request, Done done) {
  if (stopped_ || !Address(node)) {
    done(std::nullopt);
    return;
  }
  Outgoing& out = out_[node];
  if (out.conn && out.conn->open()) {
    SendOn(&out, std::move(request), std::move(done));
    return;
  }
  out.waiting.emplace_back(std::move(request), std::move(done));
  if (out.connecting) return;
  auto now = std::chrono::steady_clock::now();
  if (now < out.next_attempt) {
    // Too soon after a failure: the caller holds the request and retries.
    auto waiting = std::move(out.waiting);
    out.waiting.clear();
    for (auto& [m, d] : waiting) d(std::nullopt);
    return;
  }
  out.connecting = true;
  out.next_attempt = now + kReconnectInterval;
  asio::co_spawn(io_, Connect(node), [](std::exception_ptr e) { LogException("peer connect", e); });
}

void PeerNet::SendOn(Outgoing* out, abi::Message request, Done done) {
  uint64_t id = next_req_id_++;
  request.PutU64(CSVFS_A_REQ_ID, id);
  out->inflight[id] = std::move(done);
  out->conn->Send(request);
}

void PeerNet::Fail(Outgoing* out) {
  auto inflight = std::move(out->inflight);
  auto waiting = std::move(out->waiting);
  out->inflight.clear();
  out->waiting.clear();
  out->conn.reset();
  for (auto& [id, d] : inflight) d(std::nullopt);
  for (auto& [m, d] : waiting) d(std::nullopt);
}

asio::awaitable<void> PeerNet::Connect(NodeId node) {
  const PeerAddress* addr = Address(node);
  asio::ip::tcp::socket socket(io_);
  boost::system::error_code ec;
  asio::ip::tcp::endpoint ep(asio::ip::make_address(addr->host, ec), addr->port);
  std::string label = "peer node " + std::to_string(node);
  if (!ec) {
    asio::steady_timer watchdog(io_);
    watchdog.expires_after(kHandshakeTimeout);
    watchdog.async_wait([&socket](boost::system::error_code e) {
      if (!e) socket.close(e);
    });
    std::tie(ec) = co_await socket.async_connect(ep, asio::as_tuple(asio::use_awaitable));
    watchdog.cancel();
  }
  Outgoing& out = out_[node];
  out.connecting = false;
  if (ec || stopped_) {
    LOG(kDebug) << "cannot connect to " << label << ": " << ec.message();
    Fail(&out);
    co_return;
  }
  socket.set_option(asio::ip::tcp::no_delay(true), ec);
  auto conn = std::make_shared<TcpConn>(std::move(socket), label);
  std::string why;
  NodeId peer = co_await Handshake(
      conn, self_, key_, node, [](NodeId) { return true; }, &why);
  Outgoing& o = out_[node];
  if (peer == kNoNode || stopped_) {
    ++stats_.auth_failures;
    LOG(kWarning) << "handshake with " << label << " failed: " << why;
    conn->Close();
    Fail(&o);
    co_return;
  }
  ++stats_.connects;
  LOG(kInfo) << "connected to " << label;
  o.conn = conn;
  conn->Start(
      [this, node](abi::Message m) {
        Outgoing& ob = out_[node];
        if (m.cmd() != CSVFS_CMD_REPLY) return;  // peers send requests on their own link
        auto it = ob.inflight.find(m.req_id());
        if (it == ob.inflight.end()) return;
        Done d = std::move(it->second);
        ob.inflight.erase(it);
        d(std::move(m));
      },
      [this, node, conn] {
        stats_.malformed += conn->malformed();
        Outgoing& ob = out_[node];
        if (ob.conn == conn) {
          LOG(kInfo) << "connection to node " << node << " closed";
          Fail(&ob);
        }
      });
  auto waiting = std::move(o.waiting);
  o.waiting.clear();
  for (auto& [m, d] : waiting) SendOn(&o, std::move(m), std::move(d));
  if (callbacks_.on_connected) callbacks_.on_connected(node);
}

bool PeerNet::Connected(NodeId node) const {
  auto it = out_.find(node);
  return it != out_.end() && it->second.conn && it->second.conn->open();
}

void PeerNet::Drop(NodeId node) {
  auto it = out_.find(node);
  if (it != out_.end() && it->second.conn) it->second.conn->Close();
  auto [first, last] = incoming_.equal_range(node);
  std::vector<std::shared_ptr<TcpConn>> doomed;
  for (auto i = first; i != last; ++i)
    if (auto c = i->second.lock()) doomed.push_back(c);
  incoming_.erase(first, last);
  for (auto& c : doomed) c->Close();
}

void PeerNet::Stop() {
  stopped_ = true;
  boost::system::error_code ec;
  if (acceptor_) acceptor_->close(ec);
  for (auto& [n, o] : out_)
    if (o.conn) o.conn->Close();
  for (auto& [n, w] : incoming_)
    if (auto c = w.lock()) c->Close();
}

}  // namespace csv::core
