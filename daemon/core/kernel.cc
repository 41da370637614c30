#include "core/kernel.h"

#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <sys/socket.h>

#include "core/log.h"

namespace csv::core {

namespace {
constexpr int kReceiveBuffer = 8 << 20;  // ~128 queued 32 KiB data messages
constexpr int kReceiveBatch = 64;        // messages read per wake-up
}  // namespace

KernelChannel::KernelChannel(boost::asio::io_context& io, OnRequest on_request)
    : io_(io), on_request_(std::move(on_request)), retry_(io) {}

KernelChannel::~KernelChannel() { Stop(); }

void KernelChannel::Start() {
  if (stopped_ || TryConnect()) return;
  retry_.expires_after(std::chrono::seconds(10));
  retry_.async_wait([this](boost::system::error_code ec) {
    if (!ec) Start();
  });
}

bool KernelChannel::TryConnect() {
  nl_sock* sk = nl_socket_alloc();
  if (!sk) return false;
  if (genl_connect(sk) < 0) {
    nl_socket_free(sk);
    return false;
  }
  int family = genl_ctrl_resolve(sk, CSVFS_GENL_NAME);
  if (family < 0) {
    if (!logged_absent_)
      LOG(kInfo) << "no csvfs generic netlink family (module not loaded): serving only the "
                    "test channel; will look again every 10 s";
    logged_absent_ = true;
    nl_socket_free(sk);
    return false;
  }
  nl_socket_disable_seq_check(sk);
  nl_socket_disable_auto_ack(sk);
  nl_socket_modify_cb(sk, NL_CB_VALID, NL_CB_CUSTOM, &KernelChannel::OnValid, this);
  nl_socket_set_nonblocking(sk);
  // The module sends without blocking: a full receive buffer costs the
  // request a 100 ms re-send (docs/benchmarks.md). The default 208 KiB holds
  // three 32 KiB data messages; csvd runs as root, so force a larger one.
  const int rcvbuf = kReceiveBuffer;
  if (setsockopt(nl_socket_get_fd(sk), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0)
    nl_socket_set_buffer_size(sk, kReceiveBuffer, 0);  // capped by net.core.rmem_max
  sock_ = sk;
  family_ = family;
  abi::Message hello(CSVFS_CMD_HELLO);
  hello.PutU64(CSVFS_A_REQ_ID, 0)
      .PutU32(CSVFS_A_ABI_VERSION, CSVFS_ABI_VERSION)
      .PutU64(CSVFS_A_CAPS, 0);
  if (!Send(hello)) {
    LOG(kWarning) << "csvfs family found but HELLO failed";
    Stop();
    stopped_ = false;
    return false;
  }
  fd_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, nl_socket_get_fd(sk));
  LOG(kInfo) << "registered with csvfs.ko (genl family " << family << ")";
  Wait();
  return true;
}

void KernelChannel::Wait() {
  fd_->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                  [this](boost::system::error_code ec) {
                    if (ec || !sock_) return;
                    // Drain what is queued (bounded, so the loop's other
                    // work is not starved), not one message per wake-up.
                    int err = 0;
                    for (int i = 0; i < kReceiveBatch && sock_ && err >= 0; ++i)
                      err = nl_recvmsgs_default(sock_);
                    if (err < 0 && err != -NLE_AGAIN)
                      LOG(kWarning) << "netlink receive: " << nl_geterror(err);
                    if (sock_) Wait();
                  });
}

int KernelChannel::OnValid(nl_msg* msg, void* arg) {
  auto* self = static_cast<KernelChannel*>(arg);
  nlmsghdr* nlh = nlmsg_hdr(msg);
  if (nlh->nlmsg_type != self->family_) return NL_SKIP;
  auto* gnlh = static_cast<genlmsghdr*>(nlmsg_data(nlh));
  if (nlh->nlmsg_len < NLMSG_HDRLEN + GENL_HDRLEN) return NL_SKIP;
  std::span<const uint8_t> attrs(reinterpret_cast<const uint8_t*>(genlmsg_attrdata(gnlh, 0)),
                                 static_cast<size_t>(genlmsg_attrlen(gnlh, 0)));
  abi::Message m;
  abi::Status st = m.Decode(gnlh->cmd, attrs);
  if (!st.ok()) {
    LOG(kWarning) << "refused a message from the kernel: " << st.message;
    return NL_SKIP;
  }
  self->on_request_(std::move(m));
  return NL_OK;
}

bool KernelChannel::Send(const abi::Message& m) {
  if (!sock_) return false;
  nl_msg* msg = nlmsg_alloc_size(NLMSG_HDRLEN + GENL_HDRLEN + m.EncodedSize() + 64);
  if (!msg) return false;
  bool ok = genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, family_, 0, 0, m.cmd(),
                        CSVFS_GENL_VERSION) != nullptr &&
            m.AppendTo(msg).ok() && nl_send_auto(sock_, msg) >= 0;
  nlmsg_free(msg);
  return ok;
}

void KernelChannel::Stop() {
  stopped_ = true;
  retry_.cancel();
  if (fd_) {
    fd_->cancel();
    fd_->release();
    fd_.reset();
  }
  if (sock_) nl_socket_free(sock_);
  sock_ = nullptr;
}

}  // namespace csv::core
