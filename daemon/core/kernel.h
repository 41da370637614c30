// The generic netlink channel to csvfs.ko: resolves the "csvfs" family,
// registers with HELLO, receives the kernel's requests and sends replies and
// pushed state (VOLUME_STATE, LAYOUT_RECALL, ...). Without the module the
// daemon runs on (logged once) and looks for the family again every 10 s.
//
// Thread-safety: use from the io_context's thread only.
#pragma once

#include <boost/asio.hpp>
#include <functional>
#include <memory>

#include "abi/message.h"

struct nl_sock;
struct nl_msg;

namespace csv::core {

class KernelChannel {
 public:
  using OnRequest = std::function<void(abi::Message)>;
  KernelChannel(boost::asio::io_context& io, OnRequest on_request);
  ~KernelChannel();

  void Start();
  bool connected() const { return sock_ != nullptr; }
  // Sends a message to the kernel; false if there is no module.
  bool Send(const abi::Message& m);
  void Stop();

 private:
  bool TryConnect();
  void Wait();
  static int OnValid(nl_msg* msg, void* arg);

  boost::asio::io_context& io_;
  OnRequest on_request_;
  nl_sock* sock_ = nullptr;
  int family_ = -1;
  bool logged_absent_ = false;
  bool stopped_ = false;
  std::unique_ptr<boost::asio::posix::stream_descriptor> fd_;
  boost::asio::steady_timer retry_;
};

}  // namespace csv::core
