// Framing of Messages on the TCP connections between daemons.
//
// A frame is a FrameHeader followed by the message's attribute stream
// (Message::EncodeAttributes). The magic doubles as a byte-order check: the
// binary structures inside are host-endian, so a peer of the other byte
// order is refused at its first frame.
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "abi/message.h"

namespace csv::abi {

inline constexpr uint32_t kFrameMagic = 0x43535631;  // "CSV1"
inline constexpr uint32_t kMaxFramePayload = 256 * 1024;

struct FrameHeader {
  uint32_t magic;
  uint32_t length;  // bytes of attribute stream after the header
  uint8_t cmd;
  uint8_t version;  // CSVFS_ABI_VERSION
  uint16_t reserved;
};
static_assert(sizeof(FrameHeader) == 12);

std::vector<uint8_t> EncodeFrame(const Message& m);

// Accumulates bytes from a stream and yields whole, validated messages.
// After an error the stream is unusable (the connection must be closed):
// there is no way to find the next frame boundary in garbage.
class FrameDecoder {
 public:
  void Feed(std::span<const uint8_t> bytes);
  // Returns true and fills *out when a whole frame is buffered. On a
  // malformed frame returns true with *status not ok.
  bool Next(Message* out, Status* status);
  bool failed() const { return failed_; }
  size_t buffered() const { return buffer_.size(); }

 private:
  std::vector<uint8_t> buffer_;
  bool failed_ = false;
};

}  // namespace csv::abi
