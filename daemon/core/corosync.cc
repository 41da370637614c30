#include "core/corosync.h"

#include <sys/uio.h>

#include <cstring>

#include "core/log.h"

namespace csv::core {
namespace {

// cpg and votequorum callbacks find their object through the handle
// context; one Corosync per process.
Corosync* g_instance = nullptr;

std::vector<NodeId> Nodes(const cpg_address* a, size_t n) {
  std::vector<NodeId> out;
  for (size_t i = 0; i < n; ++i) out.push_back(a[i].nodeid);
  return out;
}

}  // namespace

Corosync::Corosync(boost::asio::io_context& io, std::string group, Callbacks callbacks)
    : io_(io), group_(std::move(group)), callbacks_(std::move(callbacks)), retry_(io) {
  g_instance = this;
}

Corosync::~Corosync() {
  Stop();
  g_instance = nullptr;
}

bool Corosync::Start(std::string* error) {
  cpg_callbacks_t cb{};
  cb.cpg_deliver_fn = &Corosync::OnDeliver;
  cb.cpg_confchg_fn = &Corosync::OnConfchg;
  cs_error_t err = cpg_initialize(&cpg_, &cb);
  if (err != CS_OK) {
    *error = "cannot connect to Corosync CPG (error " + std::to_string(err) +
             "): is corosync running in this network namespace?";
    return false;
  }
  unsigned int local = 0;
  cpg_local_get(cpg_, &local);
  local_node_ = local;
  cpg_name name{};
  name.length = static_cast<uint32_t>(std::min(group_.size(), sizeof name.value));
  std::memcpy(name.value, group_.data(), name.length);
  for (int i = 0; (err = cpg_join(cpg_, &name)) == CS_ERR_TRY_AGAIN && i < 100; ++i)
    usleep(100 * 1000);  // start-up only, before the loop runs
  if (err != CS_OK) {
    *error = "cannot join CPG group " + group_ + " (error " + std::to_string(err) + ")";
    return false;
  }
  int fd = -1;
  cpg_fd_get(cpg_, &fd);
  cpg_fd_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, fd);

  votequorum_callbacks_t vcb{};
  vcb.votequorum_quorum_notify_fn = &Corosync::OnQuorum;
  err = votequorum_initialize(&vq_, &vcb);
  if (err != CS_OK) {
    *error = "cannot connect to votequorum (error " + std::to_string(err) +
             "): is the votequorum provider configured?";
    return false;
  }
  votequorum_trackstart(vq_, 0, CS_TRACK_CHANGES | CS_TRACK_CURRENT);
  votequorum_fd_get(vq_, &fd);
  vq_fd_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, fd);
  WaitCpg();
  WaitQuorum();
  return true;
}

void Corosync::Stop() {
  if (stopped_) return;
  stopped_ = true;
  retry_.cancel();
  // The libraries own the descriptors: release them from Asio unclosed.
  if (cpg_fd_) {
    cpg_fd_->cancel();
    cpg_fd_->release();
  }
  if (vq_fd_) {
    vq_fd_->cancel();
    vq_fd_->release();
  }
  if (cpg_) cpg_finalize(cpg_);
  if (vq_) votequorum_finalize(vq_);
  cpg_ = 0;
  vq_ = 0;
}

void Corosync::WaitCpg() {
  cpg_fd_->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                      [this](boost::system::error_code ec) {
                        if (ec || stopped_) return;
                        cs_error_t err = cpg_dispatch(cpg_, CS_DISPATCH_ALL);
                        if (err != CS_OK && err != CS_ERR_TRY_AGAIN) {
                          callbacks_.on_lost("cpg_dispatch failed (error " + std::to_string(err) +
                                             "): Corosync went away");
                          return;
                        }
                        if (!stopped_) WaitCpg();
                      });
}

void Corosync::WaitQuorum() {
  vq_fd_->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                     [this](boost::system::error_code ec) {
                       if (ec || stopped_) return;
                       cs_error_t err = votequorum_dispatch(vq_, CS_DISPATCH_ALL);
                       if (err != CS_OK && err != CS_ERR_TRY_AGAIN) {
                         callbacks_.on_lost("votequorum_dispatch failed (error " +
                                            std::to_string(err) + "): Corosync went away");
                         return;
                       }
                       if (!stopped_) WaitQuorum();
                     });
}

void Corosync::Send(std::vector<uint8_t> bytes) {
  outbox_.push_back(std::move(bytes));
  if (!retry_armed_) Flush();
}

void Corosync::Flush() {
  while (!outbox_.empty() && !stopped_) {
    iovec iov{outbox_.front().data(), outbox_.front().size()};
    cs_error_t err = cpg_mcast_joined(cpg_, CPG_TYPE_AGREED, &iov, 1);
    if (err == CS_ERR_TRY_AGAIN) {
      if (try_again_count_++ % 50 == 0)
        LOG(kWarning) << "CPG send: try again (" << try_again_count_ << " times so far)";
      retry_armed_ = true;
      retry_.expires_after(std::chrono::milliseconds(20));
      retry_.async_wait([this](boost::system::error_code ec) {
        retry_armed_ = false;
        if (!ec) Flush();
      });
      return;
    }
    if (err != CS_OK) LOG(kError) << "CPG send failed (error " << err << "); message dropped";
    outbox_.pop_front();
  }
}

void Corosync::OnDeliver(cpg_handle_t, const cpg_name*, uint32_t nodeid, uint32_t, void* msg,
                         size_t len) {
  if (g_instance)
    g_instance->callbacks_.on_message(nodeid,
                                      std::span<const uint8_t>(static_cast<uint8_t*>(msg), len));
}

void Corosync::OnConfchg(cpg_handle_t, const cpg_name*, const cpg_address* members,
                         size_t n_members, const cpg_address* left, size_t n_left,
                         const cpg_address* joined, size_t n_joined) {
  if (g_instance)
    g_instance->callbacks_.on_membership(Nodes(members, n_members), Nodes(joined, n_joined),
                                         Nodes(left, n_left));
}

void Corosync::OnQuorum(votequorum_handle_t, uint64_t, uint32_t quorate, uint32_t,
                        votequorum_node_t[]) {
  if (g_instance) g_instance->callbacks_.on_quorum(quorate != 0);
}

}  // namespace csv::core
