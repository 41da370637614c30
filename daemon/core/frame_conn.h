// A stream connection that carries daemon/abi frames: a read loop that
// yields whole, validated Messages, and an ordered write queue. Used for
// TCP peer connections and for the Unix test channel.
//
// A frame whose header is bad (magic, version, size) closes the connection:
// the stream cannot be resynchronised. A well-framed message whose
// attributes are refused gets a REPLY with REQ_ID 0 and -EINVAL, and the
// connection goes on.
//
// Thread-safety: use from the io_context's thread only.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/as_tuple.hpp>
#include <cerrno>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "abi/frame.h"
#include "core/log.h"

namespace csv::core {

namespace asio = boost::asio;

template <typename Socket>
class FrameConn : public std::enable_shared_from_this<FrameConn<Socket>> {
 public:
  using OnMessage = std::function<void(abi::Message)>;
  using OnClose = std::function<void()>;

  FrameConn(Socket socket, std::string label)
      : socket_(std::move(socket)), label_(std::move(label)) {}

  Socket& socket() { return socket_; }
  const std::string& label() const { return label_; }
  bool open() const { return open_; }
  uint64_t malformed() const { return malformed_; }

  // Starts the read loop; on_message for each valid message, on_close once.
  void Start(OnMessage on_message, OnClose on_close) {
    on_message_ = std::move(on_message);
    on_close_ = std::move(on_close);
    auto self = this->shared_from_this();
    asio::co_spawn(socket_.get_executor(), self->ReadLoop(), [self](std::exception_ptr e) {
      if (e) LOG(kWarning) << self->label_ << ": read loop ended by an exception";
      self->Close();
    });
  }

  // Reads exactly one message (handshakes); nullopt on error or EOF.
  asio::awaitable<std::optional<abi::Message>> ReadOne() {
    std::array<uint8_t, 4096> buf;
    for (;;) {
      abi::Message m;
      abi::Status st;
      if (decoder_.Next(&m, &st)) {
        if (!st.ok()) {
          ++malformed_;
          LOG(kWarning) << label_ << ": malformed frame: " << st.message;
          co_return std::nullopt;
        }
        co_return m;
      }
      auto [ec, n] =
          co_await socket_.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
      if (ec) co_return std::nullopt;
      decoder_.Feed(std::span<const uint8_t>(buf.data(), n));
    }
  }

  void Send(const abi::Message& m) {
    if (!open_) return;
    queue_.push_back(abi::EncodeFrame(m));
    if (!writing_) WriteNext();
  }

  void Close() {
    if (!open_) return;
    open_ = false;
    boost::system::error_code ec;
    socket_.shutdown(Socket::shutdown_both, ec);
    socket_.close(ec);
    queue_.clear();
    if (on_close_) {
      auto cb = std::move(on_close_);
      on_close_ = nullptr;
      cb();
    }
  }

 private:
  asio::awaitable<void> ReadLoop() {
    std::array<uint8_t, 65536> buf;
    while (open_) {
      abi::Message m;
      abi::Status st;
      while (open_ && decoder_.Next(&m, &st)) {
        if (decoder_.failed()) {
          ++malformed_;
          LOG(kWarning) << label_ << ": malformed frame, closing: " << st.message;
          co_return;
        }
        if (!st.ok()) {
          ++malformed_;
          LOG(kWarning) << label_ << ": refused message: " << st.message;
          abi::Message err(CSVFS_CMD_REPLY);
          err.PutU64(CSVFS_A_REQ_ID, 0).PutS32(CSVFS_A_ERRNO, -EINVAL);
          Send(err);
          continue;
        }
        on_message_(std::move(m));
      }
      auto [ec, n] =
          co_await socket_.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      decoder_.Feed(std::span<const uint8_t>(buf.data(), n));
    }
  }

  void WriteNext() {
    if (queue_.empty() || !open_) {
      writing_ = false;
      return;
    }
    writing_ = true;
    auto self = this->shared_from_this();
    asio::async_write(socket_, asio::buffer(queue_.front()),
                      [self](boost::system::error_code ec, size_t) {
                        if (ec) {
                          self->writing_ = false;
                          self->Close();
                          return;
                        }
                        if (!self->queue_.empty()) self->queue_.pop_front();
                        self->WriteNext();
                      });
  }

  Socket socket_;
  std::string label_;
  abi::FrameDecoder decoder_;
  std::deque<std::vector<uint8_t>> queue_;
  bool writing_ = false;
  bool open_ = true;
  uint64_t malformed_ = 0;
  OnMessage on_message_;
  OnClose on_close_;
};

}  // namespace csv::core
