#include "abi/frame.h"

#include <algorithm>
#include <cstring>

namespace csv::abi {

std::vector<uint8_t> EncodeFrame(const Message& m) {
  std::vector<uint8_t> attrs = m.EncodeAttributes();
  FrameHeader h{kFrameMagic, static_cast<uint32_t>(attrs.size()), m.cmd(), CSVFS_ABI_VERSION, 0};
  std::vector<uint8_t> out(sizeof h + attrs.size());
  std::memcpy(out.data(), &h, sizeof h);
  std::copy(attrs.begin(), attrs.end(), out.begin() + sizeof h);
  return out;
}

void FrameDecoder::Feed(std::span<const uint8_t> bytes) {
  buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
}

bool FrameDecoder::Next(Message* out, Status* status) {
  if (failed_) {
    *status = {Errc::kBadValue, "stream already failed"};
    return true;
  }
  FrameHeader h{};
  if (buffer_.size() < sizeof h) return false;
  std::memcpy(&h, buffer_.data(), sizeof h);
  if (h.magic != kFrameMagic || h.version != CSVFS_ABI_VERSION || h.reserved != 0) {
    failed_ = true;
    *status = {Errc::kBadValue, "bad frame header (magic, byte order or ABI version)"};
    return true;
  }
  if (h.length > kMaxFramePayload) {
    failed_ = true;
    *status = {Errc::kTooLarge, "frame of " + std::to_string(h.length) +
                                    " bytes exceeds the limit of " +
                                    std::to_string(kMaxFramePayload)};
    return true;
  }
  if (buffer_.size() < sizeof h + h.length) return false;
  std::span<const uint8_t> payload(buffer_.data() + sizeof h, h.length);
  *status = out->Decode(h.cmd, payload);
  // A well-framed message with bad content is refused, but the stream
  // stays in sync: the next frame starts after this one.
  buffer_.erase(buffer_.begin(), buffer_.begin() + sizeof h + h.length);
  return true;
}

}  // namespace csv::abi
