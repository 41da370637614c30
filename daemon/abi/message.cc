#include "abi/message.h"

#include <netlink/attr.h>
#include <netlink/msg.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <initializer_list>
#include <memory>

namespace csv::abi {
namespace {

enum class Kind { kNone, kU8, kU32, kU64, kS32, kFlag, kString, kBinary, kStruct };

struct Policy {
  Kind kind = Kind::kNone;
  size_t limit = 0;  // max bytes (STRING incl. NUL, BINARY) or exact (STRUCT)
  std::string_view name;
};

constexpr Kind KindOf(std::string_view t) {
  return t == "U8"       ? Kind::kU8
         : t == "U32"    ? Kind::kU32
         : t == "U64"    ? Kind::kU64
         : t == "S32"    ? Kind::kS32
         : t == "FLAG"   ? Kind::kFlag
         : t == "STRING" ? Kind::kString
         : t == "BINARY" ? Kind::kBinary
                         : Kind::kStruct;
}

// The attribute policy, expanded from the uapi header's single table.
const std::array<Policy, CSVFS_A_MAX + 1>& Policies() {
  static const auto table = [] {
    std::array<Policy, CSVFS_A_MAX + 1> t{};
#define CSVFS_X_POLICY(name, type, maxlen) \
  t[CSVFS_A_##name] = {KindOf(#type), static_cast<size_t>(maxlen), #name};
    CSVFS_ATTR_TABLE(CSVFS_X_POLICY)
#undef CSVFS_X_POLICY
    return t;
  }();
  return table;
}

struct CommandSpec {
  std::string_view name;
  std::vector<int> required;
};

// Attributes each command must carry. Result attributes of a REPLY depend
// on the request and are checked where the reply is consumed.
const std::array<CommandSpec, CSVFS_CMD_MAX + 1>& Commands() {
  static const auto table = [] {
    std::array<CommandSpec, CSVFS_CMD_MAX + 1> t{};
    auto def = [&t](int cmd, std::string_view name, std::initializer_list<int> req) {
      t[cmd].name = name;
      t[cmd].required.assign(req);
      t[cmd].required.insert(t[cmd].required.begin(), CSVFS_A_REQ_ID);
    };
    def(CSVFS_CMD_HELLO, "HELLO", {CSVFS_A_ABI_VERSION});
    def(CSVFS_CMD_REPLY, "REPLY", {CSVFS_A_ERRNO});
    def(CSVFS_CMD_MOUNT, "MOUNT", {CSVFS_A_SB_ID, CSVFS_A_VOLUME, CSVFS_A_DEVICE});
    def(CSVFS_CMD_UNMOUNT, "UNMOUNT", {CSVFS_A_SB_ID});
    def(CSVFS_CMD_ATTACH, "ATTACH", {CSVFS_A_VOLUME});
    def(CSVFS_CMD_DETACH, "DETACH", {CSVFS_A_VOLUME});
    def(CSVFS_CMD_LOOKUP, "LOOKUP", {CSVFS_A_PARENT_FH, CSVFS_A_NAME});
    def(CSVFS_CMD_GETATTR, "GETATTR", {CSVFS_A_FH});
    def(CSVFS_CMD_SETATTR, "SETATTR", {CSVFS_A_FH, CSVFS_A_SETATTR});
    def(CSVFS_CMD_CREATE, "CREATE", {CSVFS_A_PARENT_FH, CSVFS_A_NAME, CSVFS_A_MODE, CSVFS_A_FLAGS});
    def(CSVFS_CMD_MKNOD, "MKNOD", {CSVFS_A_PARENT_FH, CSVFS_A_NAME, CSVFS_A_MODE, CSVFS_A_RDEV});
    def(CSVFS_CMD_MKDIR, "MKDIR", {CSVFS_A_PARENT_FH, CSVFS_A_NAME, CSVFS_A_MODE});
    def(CSVFS_CMD_SYMLINK, "SYMLINK", {CSVFS_A_PARENT_FH, CSVFS_A_NAME, CSVFS_A_TARGET});
    def(CSVFS_CMD_LINK, "LINK", {CSVFS_A_FH, CSVFS_A_NEW_PARENT_FH, CSVFS_A_NEW_NAME});
    def(CSVFS_CMD_UNLINK, "UNLINK", {CSVFS_A_PARENT_FH, CSVFS_A_NAME});
    def(CSVFS_CMD_RMDIR, "RMDIR", {CSVFS_A_PARENT_FH, CSVFS_A_NAME});
    def(CSVFS_CMD_RENAME, "RENAME",
        {CSVFS_A_PARENT_FH, CSVFS_A_NAME, CSVFS_A_NEW_PARENT_FH, CSVFS_A_NEW_NAME, CSVFS_A_FLAGS});
    def(CSVFS_CMD_READDIR, "READDIR", {CSVFS_A_FH, CSVFS_A_COOKIE});
    def(CSVFS_CMD_READLINK, "READLINK", {CSVFS_A_FH});
    def(CSVFS_CMD_OPEN, "OPEN", {CSVFS_A_FH, CSVFS_A_FLAGS});
    def(CSVFS_CMD_RELEASE, "RELEASE", {CSVFS_A_FH, CSVFS_A_OPEN_ID});
    def(CSVFS_CMD_FSYNC, "FSYNC", {CSVFS_A_FH});
    def(CSVFS_CMD_STATFS, "STATFS", {});
    def(CSVFS_CMD_GETXATTR, "GETXATTR", {CSVFS_A_FH, CSVFS_A_XATTR_NAME, CSVFS_A_SIZE});
    def(CSVFS_CMD_SETXATTR, "SETXATTR",
        {CSVFS_A_FH, CSVFS_A_XATTR_NAME, CSVFS_A_XATTR_VALUE, CSVFS_A_FLAGS});
    def(CSVFS_CMD_LISTXATTR, "LISTXATTR", {CSVFS_A_FH, CSVFS_A_SIZE});
    def(CSVFS_CMD_REMOVEXATTR, "REMOVEXATTR", {CSVFS_A_FH, CSVFS_A_XATTR_NAME});
    def(CSVFS_CMD_FALLOCATE, "FALLOCATE",
        {CSVFS_A_FH, CSVFS_A_OFFSET, CSVFS_A_LENGTH, CSVFS_A_FLAGS});
    def(CSVFS_CMD_LSEEK, "LSEEK", {CSVFS_A_FH, CSVFS_A_OFFSET, CSVFS_A_WHENCE});
    def(CSVFS_CMD_READ, "READ", {CSVFS_A_FH, CSVFS_A_OFFSET, CSVFS_A_LENGTH});
    def(CSVFS_CMD_WRITE, "WRITE", {CSVFS_A_FH, CSVFS_A_OFFSET, CSVFS_A_DATA});
    def(CSVFS_CMD_BLOCK_READ, "BLOCK_READ", {CSVFS_A_DEV_OFFSET, CSVFS_A_LENGTH});
    def(CSVFS_CMD_BLOCK_WRITE, "BLOCK_WRITE", {CSVFS_A_DEV_OFFSET, CSVFS_A_DATA});
    def(CSVFS_CMD_LAYOUT_GET, "LAYOUT_GET",
        {CSVFS_A_FH, CSVFS_A_OFFSET, CSVFS_A_LENGTH, CSVFS_A_LAYOUT_IOMODE});
    def(CSVFS_CMD_LAYOUT_RETURN, "LAYOUT_RETURN", {CSVFS_A_FH});
    def(CSVFS_CMD_LAYOUT_COMMIT, "LAYOUT_COMMIT", {CSVFS_A_FH, CSVFS_A_SETATTR});
    def(CSVFS_CMD_LAYOUT_RECALL, "LAYOUT_RECALL", {CSVFS_A_FH, CSVFS_A_OFFSET, CSVFS_A_LENGTH});
    def(CSVFS_CMD_LEASE_GET, "LEASE_GET", {CSVFS_A_FH, CSVFS_A_LEASE});
    def(CSVFS_CMD_LEASE_RETURN, "LEASE_RETURN", {CSVFS_A_FH});
    def(CSVFS_CMD_LEASE_BREAK, "LEASE_BREAK", {CSVFS_A_FH, CSVFS_A_LEASE});
    def(CSVFS_CMD_LOCK, "LOCK", {CSVFS_A_FH, CSVFS_A_LOCK});
    def(CSVFS_CMD_INVALIDATE, "INVALIDATE", {CSVFS_A_INVAL_FLAGS});
    def(CSVFS_CMD_VOLUME_STATE, "VOLUME_STATE",
        {CSVFS_A_EPOCH, CSVFS_A_IO_MODE, CSVFS_A_MODE_REASON, CSVFS_A_LEASE_MS});
    def(CSVFS_CMD_PATH_ERROR, "PATH_ERROR", {CSVFS_A_DEV_OFFSET, CSVFS_A_LENGTH, CSVFS_A_ERRNO});
    def(CSVFS_CMD_LAYOUT_RECALL_ALL, "LAYOUT_RECALL_ALL", {});
    return t;
  }();
  return table;
}

Status Fail(Errc code, std::string message) { return {code, std::move(message)}; }

std::string AttrLabel(int attr) { return "attribute " + std::string(AttributeName(attr)); }

Status CheckLength(int type, const Policy& p, size_t len) {
  size_t exact = 0;
  switch (p.kind) {
    case Kind::kU8:
      exact = 1;
      break;
    case Kind::kU32:
    case Kind::kS32:
      exact = 4;
      break;
    case Kind::kU64:
      exact = 8;
      break;
    case Kind::kFlag:
      exact = 0;
      break;
    case Kind::kStruct:
      exact = p.limit;
      break;
    case Kind::kString:
    case Kind::kBinary:
      if (len > p.limit)
        return Fail(Errc::kBadLength, AttrLabel(type) + ": " + std::to_string(len) +
                                          " bytes exceeds the limit of " + std::to_string(p.limit));
      return Status::Ok();
    case Kind::kNone:
      return Fail(Errc::kUnknownAttribute, AttrLabel(type));
  }
  if (len != exact)
    return Fail(Errc::kBadLength, AttrLabel(type) + ": length " + std::to_string(len) +
                                      ", expected " + std::to_string(exact));
  return Status::Ok();
}

Status CheckString(int type, std::span<const uint8_t> b) {
  if (b.empty() || b.back() != '\0')
    return Fail(Errc::kBadString, AttrLabel(type) + ": not NUL-terminated");
  if (std::find(b.begin(), b.end() - 1, '\0') != b.end() - 1)
    return Fail(Errc::kBadString, AttrLabel(type) + ": embedded NUL");
  return Status::Ok();
}

bool IsValidVolumeName(std::string_view v) {
  if (v.empty() || v == "." || v == "..") return false;
  return std::all_of(v.begin(), v.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  });
}

Status CheckFileHandle(int type, std::span<const uint8_t> b) {
  csvfs_fh h{};
  if (b.size() < sizeof h)
    return Fail(Errc::kBadValue, AttrLabel(type) + ": shorter than a handle header");
  std::memcpy(&h, b.data(), sizeof h);
  if (h.len == 0 || h.len != b.size() - sizeof h)
    return Fail(Errc::kBadValue, AttrLabel(type) + ": handle length " + std::to_string(h.len) +
                                     " does not match " + std::to_string(b.size() - sizeof h) +
                                     " bytes");
  return Status::Ok();
}

template <typename T>
T Load(std::span<const uint8_t> b) {
  T v;
  std::memcpy(&v, b.data(), sizeof v);
  return v;
}

Status CheckBelow(int type, uint64_t v, uint64_t limit) {
  if (v >= limit)
    return Fail(Errc::kBadValue,
                AttrLabel(type) + ": value " + std::to_string(v) + " out of range");
  return Status::Ok();
}

// Checks that need the value, per attribute.
Status CheckValue(int type, std::span<const uint8_t> b) {
  switch (type) {
    case CSVFS_A_NAME:
    case CSVFS_A_NEW_NAME:
      if (!IsValidName(std::string_view(reinterpret_cast<const char*>(b.data()), b.size() - 1)))
        return Fail(Errc::kBadString, AttrLabel(type) + ": not a valid file name");
      return Status::Ok();
    case CSVFS_A_XATTR_NAME:
    case CSVFS_A_TARGET:
      if (b.size() < 2) return Fail(Errc::kBadString, AttrLabel(type) + ": empty");
      return Status::Ok();
    case CSVFS_A_VOLUME:
      if (!IsValidVolumeName(
              std::string_view(reinterpret_cast<const char*>(b.data()), b.size() - 1)))
        return Fail(Errc::kBadString,
                    AttrLabel(type) + ": a volume name is letters, digits, '.', '-', '_'");
      return Status::Ok();
    case CSVFS_A_FH:
    case CSVFS_A_PARENT_FH:
    case CSVFS_A_NEW_PARENT_FH:
      return CheckFileHandle(type, b);
    case CSVFS_A_ERRNO: {
      int32_t e = Load<int32_t>(b);
      if (e > 0 || e < -4095)
        return Fail(Errc::kBadValue,
                    AttrLabel(type) + ": " + std::to_string(e) + " is not 0 or a negative errno");
      return Status::Ok();
    }
    case CSVFS_A_LEASE:
      return CheckBelow(type, Load<uint32_t>(b), __CSVFS_LEASE_MAX);
    case CSVFS_A_IO_MODE:
      return CheckBelow(type, Load<uint32_t>(b), __CSVFS_IO_MAX);
    case CSVFS_A_MODE_REASON:
      return CheckBelow(type, Load<uint32_t>(b), __CSVFS_REASON_MAX);
    case CSVFS_A_WHENCE:
      return CheckBelow(type, Load<uint32_t>(b), 5);  // SEEK_SET..SEEK_HOLE
    case CSVFS_A_LAYOUT_IOMODE: {
      uint32_t m = Load<uint32_t>(b);
      if (m != CSVFS_LAYOUT_READ && m != CSVFS_LAYOUT_RW)
        return Fail(Errc::kBadValue, AttrLabel(type) + ": not READ or RW");
      return Status::Ok();
    }
    case CSVFS_A_SETATTR:
      if (Load<csvfs_setattr>(b).valid & ~CSVFS_SETATTR_ALL)
        return Fail(Errc::kBadValue, AttrLabel(type) + ": unknown bits in valid");
      return Status::Ok();
    case CSVFS_A_LOCK: {
      auto l = Load<csvfs_lock>(b);
      constexpr uint32_t kKnown = CSVFS_LOCK_F_FLOCK | CSVFS_LOCK_F_WAIT | CSVFS_LOCK_F_TEST;
      if (l.type >= __CSVFS_LOCK_TYPE_MAX || (l.flags & ~kKnown) || l.start > l.end)
        return Fail(Errc::kBadValue, AttrLabel(type) + ": malformed lock");
      return Status::Ok();
    }
    case CSVFS_A_DIRENTS: {
      std::vector<DirEntry> tmp;
      return UnpackDirents(b, &tmp);
    }
    case CSVFS_A_EXTENTS: {
      std::vector<csvfs_extent> tmp;
      return UnpackExtents(b, &tmp);
    }
    default:
      return Status::Ok();
  }
}

Status CheckAttribute(int type, std::span<const uint8_t> b) {
  const auto& p = Policies()[type];
  if (Status s = CheckLength(type, p, b.size()); !s.ok()) return s;
  if (p.kind == Kind::kString) {
    if (Status s = CheckString(type, b); !s.ok()) return s;
  }
  return CheckValue(type, b);
}

// Rules that tie a command to the values of its attributes.
Status CheckCommandRules(const Message& m) {
  auto length = m.GetU64(CSVFS_A_LENGTH);
  switch (m.cmd()) {
    case CSVFS_CMD_READ:
    case CSVFS_CMD_BLOCK_READ:
      if (*length > CSVFS_MAX_IO)
        return Fail(Errc::kBadLength, "LENGTH " + std::to_string(*length) +
                                          " exceeds the I/O limit of " +
                                          std::to_string(CSVFS_MAX_IO));
      break;
    default:
      break;
  }
  if (m.cmd() == CSVFS_CMD_BLOCK_READ || m.cmd() == CSVFS_CMD_BLOCK_WRITE) {
    uint64_t len = m.cmd() == CSVFS_CMD_BLOCK_READ ? *length : m.GetBinary(CSVFS_A_DATA)->size();
    if (*m.GetU64(CSVFS_A_DEV_OFFSET) % 512 || len % 512 || len == 0)
      return Fail(Errc::kBadValue, "block I/O must be a non-empty multiple of 512 bytes");
  }
  return Status::Ok();
}

// One owner for nl_msg, freed on every path.
struct NlMsgDeleter {
  void operator()(nl_msg* m) const { nlmsg_free(m); }
};

}  // namespace

std::string_view CommandName(int cmd) {
  if (cmd <= CSVFS_CMD_UNSPEC || cmd > CSVFS_CMD_MAX) return "?";
  return Commands()[cmd].name;
}

std::string_view AttributeName(int attr) {
  if (attr <= CSVFS_A_UNSPEC || attr > CSVFS_A_MAX) return "?";
  return Policies()[attr].name;
}

std::span<const int> RequiredAttributes(int cmd) {
  if (cmd <= CSVFS_CMD_UNSPEC || cmd > CSVFS_CMD_MAX) return {};
  return Commands()[cmd].required;
}

bool IsValidName(std::string_view name) {
  return !name.empty() && name.size() < CSVFS_MAX_NAME && name != "." && name != ".." &&
         name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

Message& Message::PutString(int attr, std::string_view s) {
  std::vector<uint8_t> b(s.begin(), s.end());
  b.push_back('\0');
  return PutRaw(attr, b.data(), b.size());
}

Message& Message::PutRaw(int attr, const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  std::vector<uint8_t> bytes(p, p + len);
  for (auto& a : attrs_) {
    if (a.type == attr) {
      a.bytes = std::move(bytes);
      return *this;
    }
  }
  attrs_.push_back({attr, std::move(bytes)});
  return *this;
}

const Message::Attr* Message::Find(int attr) const {
  for (const auto& a : attrs_)
    if (a.type == attr) return &a;
  return nullptr;
}

std::optional<std::string_view> Message::GetString(int attr) const {
  const auto* a = Find(attr);
  if (!a || a->bytes.empty() || a->bytes.back() != '\0') return std::nullopt;
  return std::string_view(reinterpret_cast<const char*>(a->bytes.data()), a->bytes.size() - 1);
}

std::optional<std::span<const uint8_t>> Message::GetBinary(int attr) const {
  const auto* a = Find(attr);
  if (!a) return std::nullopt;
  return std::span<const uint8_t>(a->bytes);
}

size_t Message::EncodedSize() const {
  size_t n = 0;
  for (const auto& a : attrs_) n += nla_total_size(static_cast<int>(a.bytes.size()));
  return n;
}

Status Message::AppendTo(nl_msg* msg) const {
  for (const auto& a : attrs_) {
    if (a.bytes.size() > 0xffff - NLA_HDRLEN)
      return Fail(Errc::kTooLarge, AttrLabel(a.type) + ": too large for a netlink attribute");
    int err = nla_put(msg, a.type, static_cast<int>(a.bytes.size()), a.bytes.data());
    if (err < 0) return Fail(Errc::kTooLarge, AttrLabel(a.type) + ": does not fit the message");
  }
  return Status::Ok();
}

std::vector<uint8_t> Message::EncodeAttributes() const {
  std::unique_ptr<nl_msg, NlMsgDeleter> msg(nlmsg_alloc_size(NLMSG_HDRLEN + EncodedSize() + 64));
  if (!msg || !AppendTo(msg.get()).ok()) return {};
  nlmsghdr* hdr = nlmsg_hdr(msg.get());
  const auto* begin = static_cast<const uint8_t*>(nlmsg_data(hdr));
  return std::vector<uint8_t>(begin, begin + nlmsg_datalen(hdr));
}

Status Message::Decode(uint8_t cmd, std::span<const uint8_t> bytes) {
  attrs_.clear();
  cmd_ = CSVFS_CMD_UNSPEC;
  if (cmd <= CSVFS_CMD_UNSPEC || cmd > CSVFS_CMD_MAX)
    return Fail(Errc::kUnknownCommand, "unknown command " + std::to_string(cmd));
  Message out(cmd);
  // libnl's iterators; nla_ok refuses a header or length past the end.
  auto* head = reinterpret_cast<nlattr*>(const_cast<uint8_t*>(bytes.data()));
  int rem = static_cast<int>(bytes.size());
  nlattr* nla = head;
  for (; nla_ok(nla, rem); nla = nla_next(nla, &rem)) {
    int type = nla_type(nla);
    if (nla->nla_type & ~NLA_TYPE_MASK)
      return Fail(Errc::kBadValue, AttrLabel(type) + ": nested/byte-order flags are not used");
    if (type <= CSVFS_A_UNSPEC || type > CSVFS_A_MAX)
      return Fail(Errc::kUnknownAttribute, "unknown attribute " + std::to_string(type));
    if (out.Has(type)) return Fail(Errc::kDuplicateAttribute, AttrLabel(type) + ": given twice");
    std::span<const uint8_t> value(static_cast<const uint8_t*>(nla_data(nla)),
                                   static_cast<size_t>(nla_len(nla)));
    if (Status s = CheckAttribute(type, value); !s.ok()) return s;
    out.PutRaw(type, value.data(), value.size());
  }
  // nla_next takes rem below zero only when the alignment padding of the
  // last attribute is missing, which is harmless; bytes left over are a
  // truncated or malformed attribute.
  if (rem > 0)
    return Fail(Errc::kTruncated,
                "attribute stream truncated (" + std::to_string(rem) + " bytes left over)");
  for (int req : Commands()[cmd].required) {
    if (!out.Has(req))
      return Fail(Errc::kMissingAttribute,
                  std::string(CommandName(cmd)) + " requires " + AttrLabel(req));
  }
  if (Status s = CheckCommandRules(out); !s.ok()) return s;
  *this = std::move(out);
  return Status::Ok();
}

Message MakeReply(const Message& request, int32_t err) {
  Message r(CSVFS_CMD_REPLY);
  r.PutU64(CSVFS_A_REQ_ID, request.req_id());
  r.PutS32(CSVFS_A_ERRNO, err);
  return r;
}

std::vector<uint8_t> PackFileHandle(uint32_t type, std::span<const uint8_t> handle) {
  csvfs_fh h{type, static_cast<uint32_t>(handle.size())};
  std::vector<uint8_t> out(sizeof h + handle.size());
  std::memcpy(out.data(), &h, sizeof h);
  std::copy(handle.begin(), handle.end(), out.begin() + sizeof h);
  return out;
}

size_t PackDirents(std::span<const DirEntry> entries, std::vector<uint8_t>* out) {
  size_t n = 0;
  for (const auto& e : entries) {
    csvfs_dirent d{e.ino, e.cookie, static_cast<uint32_t>(e.name.size()), e.type};
    size_t size = CSVFS_DIRENT_SIZE(&d);
    if (out->size() + size > CSVFS_MAX_DIRENTS) break;
    size_t at = out->size();
    out->resize(at + size, 0);
    std::memcpy(out->data() + at, &d, sizeof d);
    std::memcpy(out->data() + at + sizeof d, e.name.data(), e.name.size());
    ++n;
  }
  return n;
}

Status UnpackDirents(std::span<const uint8_t> bytes, std::vector<DirEntry>* out) {
  size_t at = 0;
  while (at < bytes.size()) {
    csvfs_dirent d{};
    if (bytes.size() - at < sizeof d) return Fail(Errc::kTruncated, "dirent header truncated");
    std::memcpy(&d, bytes.data() + at, sizeof d);
    if (d.namelen == 0 || d.namelen >= CSVFS_MAX_NAME)
      return Fail(Errc::kBadValue, "dirent name length " + std::to_string(d.namelen));
    size_t size = CSVFS_DIRENT_SIZE(&d);
    if (bytes.size() - at < size) return Fail(Errc::kTruncated, "dirent overruns the buffer");
    std::string name(reinterpret_cast<const char*>(bytes.data() + at + sizeof d), d.namelen);
    if (name != "." && name != ".." && !IsValidName(name))
      return Fail(Errc::kBadString, "dirent with an invalid name");
    out->push_back({d.ino, d.cookie, d.type, std::move(name)});
    at += size;
  }
  return Status::Ok();
}

Status UnpackExtents(std::span<const uint8_t> bytes, std::vector<csvfs_extent>* out) {
  if (bytes.size() % sizeof(csvfs_extent))
    return Fail(Errc::kBadLength, "EXTENTS is not a whole number of extents");
  for (size_t at = 0; at < bytes.size(); at += sizeof(csvfs_extent)) {
    auto e = Load<csvfs_extent>(bytes.subspan(at));
    if (e.state >= __CSVFS_EXT_MAX || e.length == 0 || e.file_offset % 512 || e.length % 512 ||
        e.dev_offset % 512 || e.file_offset + e.length < e.file_offset)
      return Fail(Errc::kBadValue,
                  "malformed extent at index " + std::to_string(at / sizeof(csvfs_extent)));
    out->push_back(e);
  }
  return Status::Ok();
}

}  // namespace csv::abi
