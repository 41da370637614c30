// csvio: a small client of csvd's test channel (a Unix socket speaking the
// frames of daemon/abi/frame.h). It resolves paths with LOOKUP from the
// root handle that ATTACH returns, and does file operations through the
// daemon, file-redirected (READ/WRITE) or block-redirected
// (LAYOUT_GET + BLOCK_READ/BLOCK_WRITE). Output is JSON on stdout; errors
// go to stderr with exit status 1 (2 for usage errors).
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "abi/frame.h"
#include "core/auth.h"
#include "core/peer.h"

namespace {

using csv::abi::Message;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Error : std::runtime_error {
  Error(const std::string& what, int err = 0) : std::runtime_error(what), errno_value(err) {}
  int errno_value;
};

class Channel {
 public:
  Channel(const std::string& path, std::string volume, int timeout_s) : volume_(std::move(volume)) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) throw Error("socket path too long");
    std::strcpy(addr.sun_path, path.c_str());
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw Error("cannot connect to the test channel " + path + ": " + std::strerror(errno) +
                  " (is csvd running with --test-socket?)");
    timeval tv{timeout_s, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Channel() { close(fd_); }

  // Sends a request and returns the reply; throws on transport errors.
  Message Call(Message m) {
    uint64_t id = next_id_++;
    m.PutU64(CSVFS_A_REQ_ID, id);
    m.PutString(CSVFS_A_VOLUME, volume_);
    auto frame = csv::abi::EncodeFrame(m);
    for (size_t at = 0; at < frame.size();) {
      ssize_t n = send(fd_, frame.data() + at, frame.size() - at, MSG_NOSIGNAL);
      if (n <= 0) throw Error("test channel: send failed");
      at += n;
    }
    for (;;) {
      Message r;
      csv::abi::Status st;
      while (decoder_.Next(&r, &st)) {
        if (!st.ok()) throw Error("test channel: bad reply: " + st.message);
        if (r.cmd() == CSVFS_CMD_REPLY && r.req_id() == 0)
          throw Error("the daemon refused the request", r.error());
        if (r.cmd() == CSVFS_CMD_REPLY && r.req_id() == id) return r;
      }
      uint8_t buf[65536];
      ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n == 0) throw Error("test channel: csvd closed the connection");
      if (n < 0) throw Error(std::string("test channel: ") + std::strerror(errno));
      decoder_.Feed(std::span<const uint8_t>(buf, n));
    }
  }

  // Like Call, but a non-zero ERRNO throws.
  Message Must(Message m, const std::string& what) {
    std::string name(csv::abi::CommandName(m.cmd()));
    Message r = Call(std::move(m));
    if (r.error() != 0)
      throw Error(name + " " + what + ": " + std::strerror(-r.error()), r.error());
    return r;
  }

 private:
  int fd_ = -1;
  std::string volume_;
  uint64_t next_id_ = 1;
  csv::abi::FrameDecoder decoder_;
};

using Fh = std::vector<uint8_t>;

Fh ToFh(std::span<const uint8_t> b) { return Fh(b.begin(), b.end()); }

std::vector<std::string> Split(const std::string& path) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : path) {
    if (c == '/') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

class Client {
 public:
  explicit Client(Channel* ch) : ch_(ch) {
    Message r = ch_->Must(Message(CSVFS_CMD_ATTACH), "of the volume");
    root_ = ToFh(*r.GetBinary(CSVFS_A_FH));
    attach_ = r;
  }
  const Message& attach() const { return attach_; }

  std::optional<std::pair<Fh, csvfs_attr>> Lookup(const Fh& parent, const std::string& name) {
    Message m(CSVFS_CMD_LOOKUP);
    m.PutBinary(CSVFS_A_PARENT_FH, parent).PutString(CSVFS_A_NAME, name);
    Message r = ch_->Call(m);
    if (r.error() == -ENOENT) return std::nullopt;
    if (r.error() != 0) throw Error("LOOKUP " + name + ": " + std::strerror(-r.error()), r.error());
    return std::make_pair(ToFh(*r.GetBinary(CSVFS_A_FH)),
                          r.GetStruct<csvfs_attr>(CSVFS_A_ATTR).value_or(csvfs_attr{}));
  }

  Fh Resolve(const std::string& path) {
    Fh fh = root_;
    for (const auto& c : Split(path)) {
      auto r = Lookup(fh, c);
      if (!r) throw Error(path + ": no such file or directory", -ENOENT);
      fh = r->first;
    }
    return fh;
  }

  // Parent handle and last component.
  std::pair<Fh, std::string> Parent(const std::string& path) {
    auto parts = Split(path);
    if (parts.empty()) throw Error("the root has no parent");
    std::string name = parts.back();
    parts.pop_back();
    std::string dir;
    for (auto& p : parts) dir += "/" + p;
    return {Resolve(dir), name};
  }

  csvfs_attr GetAttr(const Fh& fh) {
    Message m(CSVFS_CMD_GETATTR);
    m.PutBinary(CSVFS_A_FH, fh);
    return *ch_->Must(m, "").GetStruct<csvfs_attr>(CSVFS_A_ATTR);
  }

  void Mkdir(const std::string& path, bool parents) {
    Fh fh = root_;
    auto parts = Split(path);
    for (size_t i = 0; i < parts.size(); ++i) {
      auto r = Lookup(fh, parts[i]);
      if (r) {
        if (i + 1 == parts.size() && !parents) throw Error(path + ": exists", -EEXIST);
        fh = r->first;
        continue;
      }
      if (i + 1 < parts.size() && !parents) throw Error(path + ": no such directory", -ENOENT);
      Message m(CSVFS_CMD_MKDIR);
      m.PutBinary(CSVFS_A_PARENT_FH, fh)
          .PutString(CSVFS_A_NAME, parts[i])
          .PutU32(CSVFS_A_MODE, 0755);
      fh = ToFh(*ch_->Must(m, parts[i]).GetBinary(CSVFS_A_FH));
    }
  }

  Fh CreateOrOpen(const std::string& path) {
    auto [parent, name] = Parent(path);
    if (auto r = Lookup(parent, name)) return r->first;
    Message m(CSVFS_CMD_CREATE);
    m.PutBinary(CSVFS_A_PARENT_FH, parent)
        .PutString(CSVFS_A_NAME, name)
        .PutU32(CSVFS_A_MODE, 0100644)
        .PutU32(CSVFS_A_FLAGS, O_RDWR | O_CREAT);
    Message r = ch_->Must(m, name);
    Fh fh = ToFh(*r.GetBinary(CSVFS_A_FH));
    if (auto open_id = r.GetU64(CSVFS_A_OPEN_ID)) {  // we use transient opens
      Message rel(CSVFS_CMD_RELEASE);
      rel.PutBinary(CSVFS_A_FH, fh).PutU64(CSVFS_A_OPEN_ID, *open_id);
      ch_->Call(rel);
    }
    return fh;
  }

  void WriteFile(const Fh& fh, uint64_t off, std::span<const uint8_t> data) {
    for (size_t at = 0; at < data.size();) {
      size_t n = std::min<size_t>(CSVFS_MAX_IO, data.size() - at);
      Message m(CSVFS_CMD_WRITE);
      m.PutBinary(CSVFS_A_FH, fh)
          .PutU64(CSVFS_A_OFFSET, off + at)
          .PutBinary(CSVFS_A_DATA, data.subspan(at, n));
      ch_->Must(m, "");
      at += n;
    }
  }

  std::vector<csvfs_extent> Layout(const Fh& fh, uint64_t off, uint64_t len, uint32_t mode) {
    Message m(CSVFS_CMD_LAYOUT_GET);
    m.PutBinary(CSVFS_A_FH, fh)
        .PutU64(CSVFS_A_OFFSET, off)
        .PutU64(CSVFS_A_LENGTH, len)
        .PutU32(CSVFS_A_LAYOUT_IOMODE, mode);
    Message r = ch_->Must(m, "");
    std::vector<csvfs_extent> ext;
    if (auto b = r.GetBinary(CSVFS_A_EXTENTS)) {
      auto st = csv::abi::UnpackExtents(*b, &ext);
      if (!st.ok()) throw Error("bad layout: " + st.message);
      if (getenv("CSVIO_DEBUG"))
        for (const auto& e : ext)
          std::cerr << "extent file " << e.file_offset << "+" << e.length << " dev " << e.dev_offset
                    << " state " << e.state << "\n";
    }
    return ext;
  }

  void ReturnLayout(const Fh& fh) {
    Message m(CSVFS_CMD_LAYOUT_RETURN);
    m.PutBinary(CSVFS_A_FH, fh);
    ch_->Call(m);
  }

  // Block-redirected write: allocate through the file path, then write the
  // data to the device blocks of the layout. Returns blocks written so.
  uint64_t WriteBlocks(const Fh& fh, uint64_t off, std::span<const uint8_t> data) {
    if (off % 512 || data.size() % 512)
      throw Error("block mode needs offset and size in multiples of 512");
    std::vector<uint8_t> zeros(data.size(), 0);
    WriteFile(fh, off, zeros);  // allocates written extents
    uint64_t block_bytes = 0;
    uint64_t pos = off;
    const uint64_t end = off + data.size();
    while (pos < end) {
      auto ext = Layout(fh, pos, end - pos, CSVFS_LAYOUT_RW);
      if (ext.empty()) throw Error("empty layout");
      for (const auto& e : ext) {
        uint64_t s = std::max<uint64_t>(pos, e.file_offset);
        uint64_t t = std::min<uint64_t>(end, e.file_offset + e.length);
        if (s >= t) continue;
        auto piece = data.subspan(s - off, t - s);
        if (e.state == CSVFS_EXT_WRITTEN) {
          for (uint64_t at = 0; at < piece.size();) {
            uint64_t n = std::min<uint64_t>(CSVFS_MAX_IO, piece.size() - at);
            Message m(CSVFS_CMD_BLOCK_WRITE);
            m.PutU64(CSVFS_A_DEV_OFFSET, e.dev_offset + (s - e.file_offset) + at)
                .PutBinary(CSVFS_A_DATA, piece.subspan(at, n));
            ch_->Must(m, "");
            at += n;
          }
          block_bytes += piece.size();
        } else {
          WriteFile(fh, s, piece);
        }
        pos = t;
      }
    }
    ReturnLayout(fh);
    return block_bytes;
  }

  // open_id 0: a transient open on the coordinator.
  std::vector<uint8_t> ReadFile(const Fh& fh, uint64_t off, uint64_t len, uint64_t open_id = 0) {
    std::vector<uint8_t> out;
    while (out.size() < len) {
      uint64_t n = std::min<uint64_t>(CSVFS_MAX_IO, len - out.size());
      Message m(CSVFS_CMD_READ);
      m.PutBinary(CSVFS_A_FH, fh)
          .PutU64(CSVFS_A_OFFSET, off + out.size())
          .PutU64(CSVFS_A_LENGTH, n);
      if (open_id) m.PutU64(CSVFS_A_OPEN_ID, open_id);
      Message r = ch_->Must(m, "");
      auto d = r.GetBinary(CSVFS_A_DATA).value_or(std::span<const uint8_t>());
      out.insert(out.end(), d.begin(), d.end());
      if (d.size() < n) break;
    }
    return out;
  }

  // OPEN (kept until Release): the OPEN_ID.
  uint64_t Open(const Fh& fh, uint32_t flags) {
    Message m(CSVFS_CMD_OPEN);
    m.PutBinary(CSVFS_A_FH, fh).PutU32(CSVFS_A_FLAGS, flags);
    auto id = ch_->Must(m, "").GetU64(CSVFS_A_OPEN_ID);
    if (!id) throw Error("OPEN answered without an OPEN_ID");
    return *id;
  }

  void Release(const Fh& fh, uint64_t open_id) {
    Message m(CSVFS_CMD_RELEASE);
    m.PutBinary(CSVFS_A_FH, fh).PutU64(CSVFS_A_OPEN_ID, open_id);
    ch_->Must(m, "");
  }

  // Block-redirected read through the layout; holes read as zeros.
  std::vector<uint8_t> ReadBlocks(const Fh& fh, uint64_t off, uint64_t len, uint64_t* block_bytes) {
    std::vector<uint8_t> out(len, 0);
    uint64_t end = off + len, pos = off;
    while (pos < end) {
      auto ext = Layout(fh, pos, end - pos, CSVFS_LAYOUT_READ);
      if (ext.empty()) break;
      for (const auto& e : ext) {
        uint64_t s = std::max<uint64_t>(pos, e.file_offset);
        uint64_t t = std::min<uint64_t>(end, e.file_offset + e.length);
        if (s >= t) continue;
        if (e.state == CSVFS_EXT_WRITTEN) {
          // Whole 512-byte sectors around [s, t).
          uint64_t ds = e.dev_offset + (s - e.file_offset);
          uint64_t a = ds / 512 * 512, b = (ds + (t - s) + 511) / 512 * 512;
          std::vector<uint8_t> buf;
          for (uint64_t at = a; at < b;) {
            uint64_t n = std::min<uint64_t>(CSVFS_MAX_IO, b - at);
            Message m(CSVFS_CMD_BLOCK_READ);
            m.PutU64(CSVFS_A_DEV_OFFSET, at).PutU64(CSVFS_A_LENGTH, n);
            Message r = ch_->Must(m, "");
            auto d = r.GetBinary(CSVFS_A_DATA).value_or(std::span<const uint8_t>());
            if (d.size() != n) throw Error("short block read");
            buf.insert(buf.end(), d.begin(), d.end());
            at += n;
          }
          std::memcpy(out.data() + (s - off), buf.data() + (ds - a), t - s);
          *block_bytes += t - s;
        } else if (e.state == CSVFS_EXT_DELALLOC) {
          auto d = ReadFile(fh, s, t - s);
          std::memcpy(out.data() + (s - off), d.data(), d.size());
        }
        pos = t;
      }
    }
    ReturnLayout(fh);
    return out;
  }

  std::vector<csv::abi::DirEntry> List(const Fh& fh) {
    std::vector<csv::abi::DirEntry> all;
    uint64_t cookie = 0;
    for (int guard = 0; guard < 100000; ++guard) {
      Message m(CSVFS_CMD_READDIR);
      m.PutBinary(CSVFS_A_FH, fh).PutU64(CSVFS_A_COOKIE, cookie);
      Message r = ch_->Must(m, "");
      std::vector<csv::abi::DirEntry> batch;
      if (auto b = r.GetBinary(CSVFS_A_DIRENTS)) {
        auto st = csv::abi::UnpackDirents(*b, &batch);
        if (!st.ok()) throw Error("bad dirents: " + st.message);
      }
      for (auto& e : batch) {
        cookie = e.cookie;
        if (e.name != "." && e.name != "..") all.push_back(e);
      }
      if (r.Has(CSVFS_A_EOF) || batch.empty()) break;
    }
    return all;
  }

  void Remove(const std::string& path, int cmd) {
    auto [parent, name] = Parent(path);
    Message m(static_cast<uint8_t>(cmd));
    m.PutBinary(CSVFS_A_PARENT_FH, parent).PutString(CSVFS_A_NAME, name);
    ch_->Must(m, path);
  }

  void Rename(const std::string& from, const std::string& to) {
    auto [p1, n1] = Parent(from);
    auto [p2, n2] = Parent(to);
    Message m(CSVFS_CMD_RENAME);
    m.PutBinary(CSVFS_A_PARENT_FH, p1)
        .PutString(CSVFS_A_NAME, n1)
        .PutBinary(CSVFS_A_NEW_PARENT_FH, p2)
        .PutString(CSVFS_A_NEW_NAME, n2)
        .PutU32(CSVFS_A_FLAGS, 0);
    ch_->Must(m, from + " -> " + to);
  }

  void Truncate(const std::string& path, uint64_t size) {
    csvfs_setattr sa{};
    sa.valid = CSVFS_SETATTR_SIZE;
    sa.size = size;
    Message m(CSVFS_CMD_SETATTR);
    m.PutBinary(CSVFS_A_FH, Resolve(path)).PutStruct(CSVFS_A_SETATTR, sa);
    ch_->Must(m, path);
  }

 private:
  Channel* ch_;
  Fh root_;
  Message attach_;
};

json AttrJson(const csvfs_attr& a) {
  return {{"ino", a.ino},
          {"size", a.size},
          {"mode", a.mode},
          {"nlink", a.nlink},
          {"uid", a.uid},
          {"gid", a.gid},
          {"blocks", a.blocks},
          {"mtime", a.mtime},
          {"type", (a.mode & 0170000) == 0040000   ? "dir"
                   : (a.mode & 0170000) == 0100000 ? "file"
                                                   : "other"}};
}

std::vector<uint8_t> ReadLocal(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

// A metadata and data workload that runs until stopped; each operation's
// latency is timed, so a failover shows as the longest one.
json Workload(Client& c, const std::string& dir, int min_rounds, const std::string& stop_file,
              int max_seconds) {
  c.Mkdir(dir, true);
  double max_ms = 0;
  std::string max_op;
  int ops = 0, rounds = 0;
  auto deadline = Clock::now() + std::chrono::seconds(max_seconds);
  std::vector<uint8_t> data(8192);
  auto timed = [&](const std::string& what, auto&& fn) {
    auto t0 = Clock::now();
    fn();
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    ++ops;
    if (ms > max_ms) {
      max_ms = ms;
      max_op = what;
    }
  };
  for (;; ++rounds) {
    if (rounds >= min_rounds && (stop_file.empty() || access(stop_file.c_str(), F_OK) == 0)) break;
    if (Clock::now() > deadline) throw Error("workload: time limit reached");
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(rounds * 13 + i * 7);
    std::string d = dir + "/r" + std::to_string(rounds);
    std::string f = d + "/file";
    Fh fh;
    timed("mkdir", [&] { c.Mkdir(d, false); });
    timed("create", [&] { fh = c.CreateOrOpen(f); });
    timed("write", [&] { c.WriteFile(fh, 0, data); });
    std::vector<uint8_t> back;
    timed("read", [&] { back = c.ReadFile(c.Resolve(f), 0, data.size()); });
    if (back != data)
      throw Error("workload: data read back differs in round " + std::to_string(rounds));
    timed("rename", [&] { c.Rename(f, d + "/renamed"); });
    timed("unlink", [&] { c.Remove(d + "/renamed", CSVFS_CMD_UNLINK); });
    timed("rmdir", [&] { c.Remove(d, CSVFS_CMD_RMDIR); });
  }
  return {
      {"ok", true}, {"rounds", rounds}, {"ops", ops}, {"max_op_ms", max_ms}, {"max_op", max_op}};
}

int AuthProbe(const std::string& addr, uint16_t port, const std::string& key_file, uint32_t node) {
  std::string error;
  auto key = csv::core::LoadClusterKey(key_file, &error);
  if (!key) throw Error(error);
  boost::asio::io_context io;
  bool accepted = false;
  std::string why;
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        boost::asio::ip::tcp::socket s(io);
        boost::asio::ip::tcp::endpoint ep(boost::asio::ip::make_address(addr), port);
        co_await s.async_connect(ep, boost::asio::use_awaitable);
        auto conn = std::make_shared<csv::core::TcpConn>(std::move(s), "probe");
        csv::core::NodeId peer = co_await csv::core::Handshake(
            conn, node, *key, csv::core::kNoNode, [](csv::core::NodeId) { return true; }, &why);
        if (peer == csv::core::kNoNode) co_return;
        // The server may still refuse after its own check: it closes.
        Message m(CSVFS_CMD_STATFS);
        m.PutU64(CSVFS_A_REQ_ID, 1).PutString(CSVFS_A_VOLUME, "probe").PutU64(CSVFS_A_EPOCH, 0);
        conn->Send(m);
        auto r = co_await conn->ReadOne();
        accepted = r.has_value();
        if (!accepted) why = "closed by the peer after the handshake";
      },
      [&](std::exception_ptr e) {
        if (e) why = "connection failed";
      });
  io.run_for(std::chrono::seconds(10));
  std::cout << json{{"accepted", accepted}, {"why", why}}.dump() << "\n";
  return accepted ? 0 : 3;
}

// Opens `path` and holds it open (prints a first JSON line once it is)
// until `until` exists; then reads it through that open, releases it and
// returns what it read and its link count. For tests of a file that loses
// its name, or its coordinator, while open.
json Hold(Client& c, const std::string& path, const std::string& until, int max_seconds) {
  Fh fh = c.Resolve(path);
  uint64_t id = c.Open(fh, O_RDWR);
  std::cout << json{{"held", true}, {"open_id", id}}.dump() << std::endl;
  auto deadline = Clock::now() + std::chrono::seconds(max_seconds);
  while (::access(until.c_str(), F_OK) != 0) {
    if (Clock::now() > deadline) throw Error("hold: " + until + " did not appear", -ETIMEDOUT);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  csvfs_attr a = c.GetAttr(fh);
  auto bytes = c.ReadFile(fh, 0, a.size, id);
  c.Release(fh, id);
  return {{"ok", true},
          {"open_id", id},
          {"nlink", a.nlink},
          {"data", std::string(bytes.begin(), bytes.end())}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"csvio - file operations through csvd's test channel"};
  app.require_subcommand(1);
  app.fallthrough();
  std::string socket_path = "/run/csvd/test.sock", volume;
  int timeout = 120;
  app.add_option("--socket,-s", socket_path, "csvd's test channel");
  app.add_option("--volume,-V", volume, "volume name");
  app.add_option("--timeout", timeout, "seconds to wait for one reply");

  std::string path, path2, data, data_file, out_file, mode = "file", stop_file;
  uint64_t offset = 0, length = 0, size = 0;
  bool parents = false;
  int rounds = 1, max_seconds = 600;
  auto* attach = app.add_subcommand("attach", "show the volume's root handle and epoch");
  auto* mkdir = app.add_subcommand("mkdir", "make a directory");
  mkdir->add_option("path", path)->required();
  mkdir->add_flag("-p,--parents", parents);
  auto* write = app.add_subcommand("write", "create if needed and write a file");
  write->add_option("path", path)->required();
  write->add_option("--data", data, "bytes to write");
  write->add_option("--data-file", data_file, "local file whose bytes to write");
  write->add_option("--offset", offset);
  write->add_option("--mode", mode, "file (READ/WRITE) or block (LAYOUT_GET + BLOCK_WRITE)")
      ->check(CLI::IsMember({"file", "block"}));
  auto* read = app.add_subcommand("read", "read a file");
  read->add_option("path", path)->required();
  read->add_option("--offset", offset);
  read->add_option("--length", length, "bytes (default: to the end)");
  read->add_option("--out", out_file, "write the bytes to this local file (default: stdout)");
  read->add_option("--mode", mode)->check(CLI::IsMember({"file", "block"}));
  auto* ls = app.add_subcommand("ls", "list a directory");
  ls->add_option("path", path)->required();
  auto* stat = app.add_subcommand("stat", "attributes of a file");
  stat->add_option("path", path)->required();
  auto* rename = app.add_subcommand("rename", "rename a file or directory");
  rename->add_option("from", path)->required();
  rename->add_option("to", path2)->required();
  auto* truncate = app.add_subcommand("truncate", "set a file's size");
  truncate->add_option("path", path)->required();
  truncate->add_option("size", size)->required();
  auto* unlink = app.add_subcommand("unlink", "remove a file");
  unlink->add_option("path", path)->required();
  auto* rmdir = app.add_subcommand("rmdir", "remove an empty directory");
  rmdir->add_option("path", path)->required();
  auto* workload = app.add_subcommand("workload", "metadata + data loop until a stop file exists");
  workload->add_option("dir", path)->required();
  workload->add_option("--min-rounds", rounds);
  workload->add_option("--stop-file", stop_file);
  workload->add_option("--max-seconds", max_seconds);
  auto* hold =
      app.add_subcommand("hold", "open a file, hold it until a file exists, read, release");
  hold->add_option("path", path)->required();
  hold->add_option("--until", stop_file, "local file whose existence ends the hold")->required();
  hold->add_option("--max-seconds", max_seconds);
  std::string addr, key_file;
  uint16_t port = 7410;
  uint32_t node = 0;
  auto* probe = app.add_subcommand("auth-probe", "try the peer handshake against a csvd");
  probe->add_option("--addr", addr)->required();
  probe->add_option("--port", port);
  probe->add_option("--key", key_file)->required();
  probe->add_option("--node-id", node)->required();
  CLI11_PARSE(app, argc, argv);

  try {
    if (probe->parsed()) return AuthProbe(addr, port, key_file, node);
    if (volume.empty()) throw Error("--volume is required");
    Channel ch(socket_path, volume, timeout);
    Client c(&ch);
    json out = {{"ok", true}};
    if (attach->parsed()) {
      out["epoch"] = c.attach().GetU64(CSVFS_A_EPOCH).value_or(0);
      out["device"] = std::string(c.attach().GetString(CSVFS_A_DEVICE).value_or(""));
      out["root_fh_bytes"] = c.attach().GetBinary(CSVFS_A_FH)->size();
    } else if (mkdir->parsed()) {
      c.Mkdir(path, parents);
    } else if (write->parsed()) {
      std::vector<uint8_t> bytes =
          data_file.empty() ? std::vector<uint8_t>(data.begin(), data.end()) : ReadLocal(data_file);
      Fh fh = c.CreateOrOpen(path);
      uint64_t block_bytes = 0;
      if (mode == "block")
        block_bytes = c.WriteBlocks(fh, offset, bytes);
      else
        c.WriteFile(fh, offset, bytes);
      out["written"] = bytes.size();
      out["block_bytes"] = block_bytes;
    } else if (read->parsed()) {
      Fh fh = c.Resolve(path);
      csvfs_attr a = c.GetAttr(fh);
      uint64_t len = length ? length : (a.size > offset ? a.size - offset : 0);
      uint64_t block_bytes = 0;
      auto bytes =
          mode == "block"
              ? c.ReadBlocks(fh, offset,
                             std::min<uint64_t>(len, a.size > offset ? a.size - offset : 0),
                             &block_bytes)
              : c.ReadFile(fh, offset, len);
      if (out_file.empty()) {
        std::cout.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
        return 0;
      }
      std::ofstream(out_file, std::ios::binary)
          .write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      out["read"] = bytes.size();
      out["block_bytes"] = block_bytes;
    } else if (ls->parsed()) {
      json names = json::array();
      for (const auto& e : c.List(c.Resolve(path))) names.push_back(e.name);
      std::sort(names.begin(), names.end());
      out["entries"] = names;
    } else if (stat->parsed()) {
      out["attr"] = AttrJson(c.GetAttr(c.Resolve(path)));
    } else if (rename->parsed()) {
      c.Rename(path, path2);
    } else if (truncate->parsed()) {
      c.Truncate(path, size);
    } else if (unlink->parsed()) {
      c.Remove(path, CSVFS_CMD_UNLINK);
    } else if (rmdir->parsed()) {
      c.Remove(path, CSVFS_CMD_RMDIR);
    } else if (workload->parsed()) {
      out = Workload(c, path, rounds, stop_file, max_seconds);
    } else if (hold->parsed()) {
      out = Hold(c, path, stop_file, max_seconds);
    }
    std::cout << out.dump() << "\n";
    return 0;
  } catch (const Error& e) {
    std::cerr << "csvio: " << e.what() << "\n";
    std::cout << json{{"ok", false}, {"error", e.what()}, {"errno", e.errno_value}}.dump() << "\n";
    return 1;
  }
}
