// libFuzzer target: the frame and attribute decoders must refuse any input
// cleanly (never crash, never read out of bounds).
#include <cstddef>
#include <cstdint>

#include "abi/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  csv::abi::Message m;
  (void)m.Decode(data[0], std::span(data + 1, size - 1));
  csv::abi::FrameDecoder d;
  d.Feed(std::span(data, size));
  csv::abi::Status s;
  for (int i = 0; i < 64 && d.Next(&m, &s) && !d.failed(); ++i) {
  }
  return 0;
}
