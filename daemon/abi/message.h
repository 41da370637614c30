// The one codec for csvfs's attribute sets (include/uapi/linux/csvfs.h).
//
// A Message is a command plus its attributes. The same bytes travel on both
// hops: inside a generic netlink message between csvfs.ko and csvd, and in a
// TCP frame between daemons (frame.h). Decoding validates everything before a
// single value is handed out: attribute types and lengths against the policy
// table of the uapi header, strings, names, file handles, packed arrays, enum
// ranges, and the attributes each command must carry. Errors are values.
//
// Thread-safety: a Message is a value type; distinct objects may be used from
// distinct threads.
#pragma once

#include <linux/csvfs.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

struct nl_msg;

namespace csv::abi {

// Why a buffer was refused. kOk means decoded.
enum class Errc {
  kOk = 0,
  kTruncated,         // a header or length runs past the end of the buffer
  kUnknownCommand,    // command number not in enum csvfs_cmd
  kUnknownAttribute,  // attribute number not in enum csvfs_attr
  kDuplicateAttribute,
  kBadLength,         // wrong size for the attribute's type, or over limit
  kBadString,         // not NUL-terminated, embedded NUL, bad name
  kBadValue,          // enum out of range, malformed handle/array/extent
  kMissingAttribute,  // an attribute the command requires is absent
  kTooLarge,          // the encoded message would not fit its container
};

struct Status {
  Errc code = Errc::kOk;
  std::string message;  // for people: names the attribute and the limit

  bool ok() const { return code == Errc::kOk; }
  static Status Ok() { return {}; }
};

// Human name of a command or attribute ("LOOKUP", "PARENT_FH"); "?" if
// unknown.
std::string_view CommandName(int cmd);
std::string_view AttributeName(int attr);
// Attributes that a command must carry (REQ_ID first); empty if unknown.
std::span<const int> RequiredAttributes(int cmd);

class Message {
 public:
  Message() = default;
  explicit Message(uint8_t cmd) : cmd_(cmd) {}

  uint8_t cmd() const { return cmd_; }
  void set_cmd(uint8_t cmd) { cmd_ = cmd; }

  // Setters replace an existing value of the same attribute.
  Message& PutU32(int attr, uint32_t v) { return PutRaw(attr, &v, sizeof v); }
  Message& PutS32(int attr, int32_t v) { return PutRaw(attr, &v, sizeof v); }
  Message& PutU64(int attr, uint64_t v) { return PutRaw(attr, &v, sizeof v); }
  Message& PutFlag(int attr) { return PutRaw(attr, nullptr, 0); }
  Message& PutString(int attr, std::string_view s);
  Message& PutBinary(int attr, std::span<const uint8_t> b) {
    return PutRaw(attr, b.data(), b.size());
  }
  template <typename T>
  Message& PutStruct(int attr, const T& v) {
    return PutRaw(attr, &v, sizeof v);
  }
  Message& PutRaw(int attr, const void* data, size_t len);

  bool Has(int attr) const { return Find(attr) != nullptr; }
  std::optional<uint32_t> GetU32(int attr) const { return GetScalar<uint32_t>(attr); }
  std::optional<int32_t> GetS32(int attr) const { return GetScalar<int32_t>(attr); }
  std::optional<uint64_t> GetU64(int attr) const { return GetScalar<uint64_t>(attr); }
  // The string without its NUL.
  std::optional<std::string_view> GetString(int attr) const;
  std::optional<std::span<const uint8_t>> GetBinary(int attr) const;
  template <typename T>
  std::optional<T> GetStruct(int attr) const {
    const auto* a = Find(attr);
    if (!a || a->bytes.size() != sizeof(T)) return std::nullopt;
    T v;
    std::memcpy(&v, a->bytes.data(), sizeof v);
    return v;
  }

  // Convenience for the two attributes every exchange has.
  uint64_t req_id() const { return GetU64(CSVFS_A_REQ_ID).value_or(0); }
  int32_t error() const { return GetS32(CSVFS_A_ERRNO).value_or(0); }

  // The attribute stream (struct nlattr, NLA_ALIGNed), built with libnl.
  std::vector<uint8_t> EncodeAttributes() const;
  // Appends the attributes to an nl_msg (after its genl header, if any).
  Status AppendTo(nl_msg* msg) const;
  // Bytes EncodeAttributes() will produce.
  size_t EncodedSize() const;

  // Validates and decodes cmd + attribute stream. On error, *this is left
  // empty and the Status says what was wrong.
  Status Decode(uint8_t cmd, std::span<const uint8_t> attrs);

  struct Attr {
    int type;
    std::vector<uint8_t> bytes;
  };
  const std::vector<Attr>& attrs() const { return attrs_; }

 private:
  const Attr* Find(int attr) const;
  template <typename T>
  std::optional<T> GetScalar(int attr) const {
    const auto* a = Find(attr);
    if (!a || a->bytes.size() != sizeof(T)) return std::nullopt;
    T v;
    std::memcpy(&v, a->bytes.data(), sizeof v);
    return v;
  }

  uint8_t cmd_ = CSVFS_CMD_UNSPEC;
  std::vector<Attr> attrs_;
};

// A REPLY to `request` carrying `err` (0 or -errno).
Message MakeReply(const Message& request, int32_t err);

// File handles: struct csvfs_fh followed by its bytes.
std::vector<uint8_t> PackFileHandle(uint32_t type, std::span<const uint8_t> handle);

// Packed directory entries, for READDIR replies.
struct DirEntry {
  uint64_t ino = 0;
  uint64_t cookie = 0;
  uint32_t type = 0;
  std::string name;
};
// Appends entries while they fit in CSVFS_MAX_DIRENTS; returns how many fit.
size_t PackDirents(std::span<const DirEntry> entries, std::vector<uint8_t>* out);
// Validates and unpacks; an error Status on any malformed entry.
Status UnpackDirents(std::span<const uint8_t> bytes, std::vector<DirEntry>* out);

Status UnpackExtents(std::span<const uint8_t> bytes, std::vector<csvfs_extent>* out);

// A name as it may appear in one path component: 1..255 bytes, no '/', no
// NUL, not "." or "..".
bool IsValidName(std::string_view name);

}  // namespace csv::abi
