// The coordinator's Service on real filesystems: a sparse image, mkfs.xfs
// (or mkfs.ext4), a loop device, Service::Open, then requests through
// Handle() exactly as the daemon core passes them (each request and reply
// also goes through the codec, so both are valid on the wire). Every test
// ends with an unmount and a read-only fsck of the image, which must be
// clean. Needs root and loop devices; skips otherwise.
#include "coordinator/service.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace csv::coord {
namespace {

using abi::Message;
using Bytes = std::vector<uint8_t>;

// Output of a shell command, or nullopt if it failed.
std::optional<std::string> Run(const std::string& cmd) {
  FILE* p = ::popen((cmd + " 2>/dev/null").c_str(), "r");
  if (!p) return std::nullopt;
  std::string out;
  char buf[256];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int status = ::pclose(p);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return std::nullopt;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

// Mounts made by the tests stay in a private namespace of the test process.
bool PrivateMountNamespace(std::string* why) {
  static int rc = [] {
    if (::unshare(CLONE_NEWNS) != 0) return errno;
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return errno;
    return 0;
  }();
  if (rc) *why = std::string("cannot make a private mount namespace: ") + std::strerror(rc);
  return rc == 0;
}

// A sparse image with a filesystem on a loop device.
struct Volume {
  std::string dir, image, loop, fstype;

  // "" on success, else why the test cannot run here.
  std::string Make(const std::string& type, bool format = true) {
    fstype = type;
    if (::geteuid() != 0) return "needs root (mount, loop devices)";
    if (::access("/dev/loop-control", F_OK) != 0) return "no loop devices (/dev/loop-control)";
    std::string why;
    if (!PrivateMountNamespace(&why)) return why;
    char tmpl[] = "/var/tmp/csvcoord.XXXXXX";
    if (!::mkdtemp(tmpl)) return "cannot create a temporary directory";
    dir = tmpl;
    image = dir + "/volume.img";
    if (!Run("truncate -s 320M " + image)) return "cannot create a sparse image";
    if (format && type == "xfs" && !Run("mkfs.xfs -q -f " + image)) return "mkfs.xfs failed";
    if (format && type == "ext4" && !Run("mkfs.ext4 -q -F " + image)) return "mkfs.ext4 failed";
    auto dev = Run("losetup -f --show " + image);
    if (!dev || dev->empty()) return "no free loop device";
    loop = *dev;
    return "";
  }

  // Read-only check of the unmounted filesystem: true if clean.
  bool Check() const {
    if (fstype == "xfs") return Run("xfs_repair -n " + loop).has_value();
    return Run("e2fsck -fn " + loop).has_value();
  }

  ~Volume() {
    if (!loop.empty()) Run("losetup -d " + loop);
    if (!dir.empty()) Run("rm -rf " + dir);
  }
};

// call_node stand-in: records what the coordinator sent, acks everything.
struct NodeCalls {
  std::mutex mu;
  std::vector<std::pair<uint32_t, Message>> sent;

  Message Call(uint32_t node, const Message& m) {
    std::lock_guard lock(mu);
    sent.emplace_back(node, m);
    return abi::MakeReply(m, 0);
  }
  std::vector<uint32_t> To(uint8_t cmd) {
    std::lock_guard lock(mu);
    std::vector<uint32_t> nodes;
    for (auto& [node, m] : sent)
      if (m.cmd() == cmd) nodes.push_back(node);
    return nodes;
  }
  void Clear() {
    std::lock_guard lock(mu);
    sent.clear();
  }
};

Bytes Pattern(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 7 + i / 251);
  return b;
}

class ServiceTest : public ::testing::Test {
 protected:
  virtual std::string FsType() const { return "xfs"; }

  void SetUp() override {
    std::string why = vol_.Make(FsType());
    if (!why.empty()) GTEST_SKIP() << why;
    ServiceOptions o;
    o.volume = "Test1";
    o.device = vol_.loop;
    o.mount_dir = vol_.dir + "/mnt";
    o.call_node = [this](uint32_t node, const Message& m) { return calls_.Call(node, m); };
    std::string error;
    svc_ = Service::Open(o, &error);
    ASSERT_TRUE(svc_) << error;
    root_ = svc_->RootHandle();
    ASSERT_FALSE(root_.empty());
  }

  void TearDown() override {
    if (!svc_) return;
    svc_->Close();
    svc_.reset();
    EXPECT_TRUE(vol_.Check()) << "fsck of " << vol_.fstype << " found problems";
  }

  Message Req(uint8_t cmd) {
    Message m(cmd);
    m.PutU64(CSVFS_A_REQ_ID, ++req_id_);
    return m;
  }

  // Through the codec both ways, as on the wire.
  Message Do(const Message& m, uint32_t node = 1) {
    Message in;
    auto st = in.Decode(m.cmd(), m.EncodeAttributes());
    EXPECT_TRUE(st.ok()) << abi::CommandName(m.cmd()) << ": " << st.message;
    Message reply = svc_->Handle(in, node);
    Message out;
    auto rs = out.Decode(reply.cmd(), reply.EncodeAttributes());
    EXPECT_TRUE(rs.ok()) << "reply to " << abi::CommandName(m.cmd()) << ": " << rs.message;
    EXPECT_EQ(out.req_id(), m.req_id());
    return out;
  }

  Message Named(uint8_t cmd, const Bytes& parent, const std::string& name) {
    Message m = Req(cmd);
    m.PutBinary(CSVFS_A_PARENT_FH, parent).PutString(CSVFS_A_NAME, name);
    return m;
  }
  Message OnFh(uint8_t cmd, const Bytes& fh) {
    Message m = Req(cmd);
    m.PutBinary(CSVFS_A_FH, fh);
    return m;
  }

  static Bytes GetFh(const Message& r) {
    auto b = r.GetBinary(CSVFS_A_FH);
    return b ? Bytes(b->begin(), b->end()) : Bytes{};
  }
  static csvfs_attr Attr(const Message& r) {
    return r.GetStruct<csvfs_attr>(CSVFS_A_ATTR).value_or(csvfs_attr{});
  }

  Bytes Mkdir(const Bytes& parent, const std::string& name, uint32_t mode = 0755) {
    Message r = Do(Named(CSVFS_CMD_MKDIR, parent, name).PutU32(CSVFS_A_MODE, mode));
    EXPECT_EQ(r.error(), 0) << "mkdir " << name;
    return GetFh(r);
  }
  // CREATE: {fh, open id}.
  std::pair<Bytes, uint64_t> Create(const Bytes& parent, const std::string& name,
                                    uint32_t flags = O_RDWR | O_EXCL, uint32_t node = 1) {
    Message r = Do(Named(CSVFS_CMD_CREATE, parent, name)
                       .PutU32(CSVFS_A_MODE, S_IFREG | 0644)
                       .PutU32(CSVFS_A_FLAGS, flags),
                   node);
    EXPECT_EQ(r.error(), 0) << "create " << name;
    return {GetFh(r), r.GetU64(CSVFS_A_OPEN_ID).value_or(0)};
  }
  // In messages of at most CSVFS_MAX_IO bytes, as a node sends them.
  int Write(const Bytes& fh, uint64_t open_id, uint64_t off, const Bytes& data, uint32_t node = 1) {
    for (size_t at = 0; at < data.size(); at += CSVFS_MAX_IO) {
      size_t n = std::min<size_t>(CSVFS_MAX_IO, data.size() - at);
      Message m = OnFh(CSVFS_CMD_WRITE, fh);
      m.PutU64(CSVFS_A_OFFSET, off + at).PutBinary(CSVFS_A_DATA, {data.data() + at, n});
      if (open_id) m.PutU64(CSVFS_A_OPEN_ID, open_id);
      if (int err = Do(m, node).error()) return err;
    }
    return 0;
  }
  Bytes Read(const Bytes& fh, uint64_t open_id, uint64_t off, uint64_t len, uint32_t node = 1) {
    Message m = OnFh(CSVFS_CMD_READ, fh);
    m.PutU64(CSVFS_A_OFFSET, off).PutU64(CSVFS_A_LENGTH, len);
    if (open_id) m.PutU64(CSVFS_A_OPEN_ID, open_id);
    Message r = Do(m, node);
    EXPECT_EQ(r.error(), 0);
    auto d = r.GetBinary(CSVFS_A_DATA);
    return d ? Bytes(d->begin(), d->end()) : Bytes{};
  }
  csvfs_attr Getattr(const Bytes& fh) {
    Message r = Do(OnFh(CSVFS_CMD_GETATTR, fh));
    EXPECT_EQ(r.error(), 0);
    return Attr(r);
  }
  int Lookup(const Bytes& parent, const std::string& name, Bytes* fh = nullptr) {
    Message r = Do(Named(CSVFS_CMD_LOOKUP, parent, name));
    if (fh) *fh = GetFh(r);
    return r.error();
  }
  Message Setattr(const Bytes& fh, const csvfs_setattr& sa, uint32_t node = 1) {
    Message m = OnFh(CSVFS_CMD_SETATTR, fh);
    m.PutStruct(CSVFS_A_SETATTR, sa);
    return Do(m, node);
  }
  std::vector<csvfs_extent> LayoutGet(const Bytes& fh, uint64_t off, uint64_t len, uint32_t mode,
                                      uint32_t node = 1) {
    Message m = OnFh(CSVFS_CMD_LAYOUT_GET, fh);
    m.PutU64(CSVFS_A_OFFSET, off).PutU64(CSVFS_A_LENGTH, len).PutU32(CSVFS_A_LAYOUT_IOMODE, mode);
    Message r = Do(m, node);
    EXPECT_EQ(r.error(), 0);
    std::vector<csvfs_extent> ext;
    if (auto b = r.GetBinary(CSVFS_A_EXTENTS)) {
      EXPECT_TRUE(abi::UnpackExtents(*b, &ext).ok());
    }
    return ext;
  }

  Volume vol_;
  NodeCalls calls_;
  std::unique_ptr<Service> svc_;
  Bytes root_;
  uint64_t req_id_ = 0;
};

TEST_F(ServiceTest, TreeLookupGetattrAndErrnos) {
  Bytes a = Mkdir(root_, "a", 0750);
  Bytes b = Mkdir(a, "b");
  auto [f, id] = Create(b, "f");
  ASSERT_FALSE(f.empty());
  EXPECT_NE(id, 0u);
  Bytes found;
  EXPECT_EQ(Lookup(b, "f", &found), 0);
  EXPECT_EQ(found, f);
  csvfs_attr aa = Getattr(a);
  EXPECT_TRUE(S_ISDIR(aa.mode));
  EXPECT_EQ(aa.mode & 07777, 0750u);  // exactly as asked, whatever the umask
  EXPECT_EQ(aa.nlink, 3u);
  EXPECT_EQ(Getattr(f).mode & 07777, 0644u);
  EXPECT_EQ(Lookup(a, "missing"), -ENOENT);
  EXPECT_EQ(Lookup(f, "x"), -ENOTDIR);
  Message dup = Do(Named(CSVFS_CMD_CREATE, b, "f")
                       .PutU32(CSVFS_A_MODE, 0644)
                       .PutU32(CSVFS_A_FLAGS, O_RDWR | O_EXCL));
  EXPECT_EQ(dup.error(), -EEXIST);
  EXPECT_EQ(Do(Named(CSVFS_CMD_MKDIR, a, "b").PutU32(CSVFS_A_MODE, 0755)).error(), -EEXIST);
  EXPECT_EQ(Do(Named(CSVFS_CMD_RMDIR, a, "b")).error(), -ENOTEMPTY);
  EXPECT_EQ(Do(Named(CSVFS_CMD_UNLINK, a, "b")).error(), -EISDIR);
  EXPECT_EQ(Do(Named(CSVFS_CMD_RMDIR, b, "f")).error(), -ENOTDIR);
  EXPECT_EQ(Do(Named(CSVFS_CMD_UNLINK, b, "f")).error(), 0);
  EXPECT_EQ(Do(Named(CSVFS_CMD_RMDIR, a, "b")).error(), 0);
  Message rel = OnFh(CSVFS_CMD_RELEASE, f);
  EXPECT_EQ(Do(rel.PutU64(CSVFS_A_OPEN_ID, id)).error(), 0);
  // again (re-sent after a daemon restart), or an id this service never
  // gave out (an earlier coordinator's): nothing left to release
  EXPECT_EQ(Do(OnFh(CSVFS_CMD_RELEASE, f).PutU64(CSVFS_A_OPEN_ID, id)).error(), 0);
}

// Nodes skip the security.capability lookup of every write (S_NOSEC) only
// while the attributes say the file has none.
TEST_F(ServiceTest, AttrSaysWhetherTheFileHasCapabilities) {
  auto [f, id] = Create(root_, "capfile");
  ASSERT_FALSE(f.empty());
  EXPECT_TRUE(Getattr(f).flags & CSVFS_ATTR_NO_CAPS);
  EXPECT_FALSE(Getattr(root_).flags & CSVFS_ATTR_NO_CAPS);  // regular files only
  // struct vfs_cap_data, revision 2: cap_net_raw permitted and effective
  const uint32_t cap[5] = {0x02000001, 1u << 13, 0, 0, 0};
  std::string lower = vol_.dir + "/mnt/capfile";
  if (::setxattr(lower.c_str(), "security.capability", cap, sizeof(cap), 0) != 0)
    GTEST_SKIP() << "cannot set security.capability here: " << std::strerror(errno);
  EXPECT_FALSE(Getattr(f).flags & CSVFS_ATTR_NO_CAPS);
  ASSERT_EQ(::removexattr(lower.c_str(), "security.capability"), 0);
  EXPECT_TRUE(Getattr(f).flags & CSVFS_ATTR_NO_CAPS);
}

TEST_F(ServiceTest, BadNamesAreRefusedByCodecAndService) {
  // The codec refuses them on the wire ...
  Message longname = Named(CSVFS_CMD_LOOKUP, root_, std::string(300, 'x'));
  Message decoded;
  EXPECT_FALSE(decoded.Decode(longname.cmd(), longname.EncodeAttributes()).ok());
  for (const char* bad : {".", "..", "a/b"}) {
    Message m = Named(CSVFS_CMD_MKDIR, root_, bad).PutU32(CSVFS_A_MODE, 0755);
    EXPECT_FALSE(decoded.Decode(m.cmd(), m.EncodeAttributes()).ok()) << bad;
    // ... and the service refuses them again if a message skipped it.
    EXPECT_EQ(svc_->Handle(m, 1).error(), -EINVAL) << bad;
  }
  EXPECT_EQ(svc_->Handle(longname, 1).error(), -ENAMETOOLONG);
  Message no_name = Req(CSVFS_CMD_LOOKUP);
  no_name.PutBinary(CSVFS_A_PARENT_FH, root_);
  EXPECT_EQ(svc_->Handle(no_name, 1).error(), -EINVAL);
  EXPECT_EQ(svc_->Handle(Req(CSVFS_CMD_HELLO), 1).error(), -EOPNOTSUPP);
}

TEST_F(ServiceTest, StaleAndForgedHandles) {
  auto [f, id] = Create(root_, "gone", O_RDWR | O_EXCL);
  ASSERT_EQ(Do(OnFh(CSVFS_CMD_RELEASE, f).PutU64(CSVFS_A_OPEN_ID, id)).error(), 0);
  ASSERT_EQ(Do(Named(CSVFS_CMD_UNLINK, root_, "gone")).error(), 0);
  EXPECT_EQ(Do(OnFh(CSVFS_CMD_GETATTR, f)).error(), -ESTALE);
  EXPECT_EQ(Lookup(f, "x"), -ESTALE);
  Bytes forged = f;
  for (size_t i = sizeof(csvfs_fh); i < forged.size(); ++i) forged[i] ^= 0x5a;
  EXPECT_EQ(Do(OnFh(CSVFS_CMD_GETATTR, forged)).error(), -ESTALE);
  // Lengths that lie are refused before the kernel sees them.
  Bytes lying = root_;
  lying[4] = 100;
  EXPECT_EQ(svc_->Handle(OnFh(CSVFS_CMD_GETATTR, lying), 1).error(), -ESTALE);
  EXPECT_EQ(svc_->Handle(OnFh(CSVFS_CMD_GETATTR, Bytes{1, 2}), 1).error(), -ESTALE);
}

TEST_F(ServiceTest, SetattrSizeModeOwnerTimes) {
  auto [f, id] = Create(root_, "s");
  csvfs_setattr sa{};
  sa.valid = CSVFS_SETATTR_SIZE | CSVFS_SETATTR_MODE | CSVFS_SETATTR_UID | CSVFS_SETATTR_GID |
             CSVFS_SETATTR_MTIME | CSVFS_SETATTR_ATIME;
  sa.size = 123456;
  sa.mode = 0600;
  sa.uid = 1234;
  sa.gid = 5678;
  sa.mtime = 1000000000;
  sa.mtime_nsec = 42;
  sa.atime = 999;
  Message r = Setattr(f, sa);
  ASSERT_EQ(r.error(), 0);
  csvfs_attr a = Attr(r);
  EXPECT_EQ(a.size, 123456u);
  EXPECT_EQ(a.mode & 07777, 0600u);
  EXPECT_EQ(a.uid, 1234u);
  EXPECT_EQ(a.gid, 5678u);
  EXPECT_EQ(a.mtime, 1000000000);
  EXPECT_EQ(a.mtime_nsec, 42u);
  EXPECT_EQ(a.atime, 999);
  sa.valid = CSVFS_SETATTR_SIZE;
  sa.size = 10;
  EXPECT_EQ(Attr(Setattr(f, sa)).size, 10u);
  Bytes d = Mkdir(root_, "d");
  EXPECT_EQ(Setattr(d, sa).error(), -EISDIR);
}

TEST_F(ServiceTest, RenameFlags) {
  Bytes x, y;
  auto [fx, ix] = Create(root_, "x");
  auto [fy, iy] = Create(root_, "y");
  uint64_t ino_x = Getattr(fx).ino, ino_y = Getattr(fy).ino;
  auto rename = [&](const char* from, const char* to, uint32_t flags) {
    Message m = Named(CSVFS_CMD_RENAME, root_, from);
    m.PutBinary(CSVFS_A_NEW_PARENT_FH, root_).PutString(CSVFS_A_NEW_NAME, to);
    m.PutU32(CSVFS_A_FLAGS, flags);
    return Do(m).error();
  };
  EXPECT_EQ(rename("x", "y", RENAME_NOREPLACE), -EEXIST);
  EXPECT_EQ(rename("x", "y", RENAME_EXCHANGE), 0);
  ASSERT_EQ(Lookup(root_, "x", &x), 0);
  ASSERT_EQ(Lookup(root_, "y", &y), 0);
  EXPECT_EQ(Getattr(x).ino, ino_y);
  EXPECT_EQ(Getattr(y).ino, ino_x);
  EXPECT_EQ(rename("x", "z", RENAME_NOREPLACE), 0);
  EXPECT_EQ(rename("z", "y", 0), 0);  // over an existing file
  EXPECT_EQ(Lookup(root_, "z"), -ENOENT);
  ASSERT_EQ(Lookup(root_, "y", &y), 0);
  EXPECT_EQ(Getattr(y).ino, ino_y);
  EXPECT_EQ(rename("y", "w", RENAME_WHITEOUT), -EINVAL);
  EXPECT_EQ(rename("nope", "w", 0), -ENOENT);
}

TEST_F(ServiceTest, ReaddirPagesLargeDirectoryWithCookies) {
  Bytes dir = Mkdir(root_, "big");
  constexpr int kEntries = 5000;
  for (int i = 0; i < kEntries; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "entry-%05d-with-a-longer-name", i);
    Message m = Named(CSVFS_CMD_MKNOD, dir, name);
    m.PutU32(CSVFS_A_MODE, S_IFREG | 0644).PutU32(CSVFS_A_RDEV, 0);
    ASSERT_EQ(Do(m).error(), 0) << name;
  }
  std::map<std::string, int> seen;
  uint64_t cookie = 0;
  int pages = 0;
  for (bool eof = false; !eof; ++pages) {
    ASSERT_LT(pages, 1000);
    Message r = Do(OnFh(CSVFS_CMD_READDIR, dir).PutU64(CSVFS_A_COOKIE, cookie));
    ASSERT_EQ(r.error(), 0);
    std::vector<abi::DirEntry> entries;
    ASSERT_TRUE(abi::UnpackDirents(*r.GetBinary(CSVFS_A_DIRENTS), &entries).ok());
    eof = r.Has(CSVFS_A_EOF);
    ASSERT_TRUE(eof || !entries.empty());
    for (const auto& e : entries) {
      ++seen[e.name];
      EXPECT_EQ(e.type, static_cast<uint32_t>(DT_REG));
    }
    if (!entries.empty()) cookie = entries.back().cookie;
  }
  EXPECT_GT(pages, 2);
  EXPECT_EQ(seen.size(), static_cast<size_t>(kEntries));
  for (const auto& [name, count] : seen) EXPECT_EQ(count, 1) << name;
}

TEST_F(ServiceTest, CreateFamilyGivesInodesToTheCaller) {
  auto as_user = [](Message m) {
    m.PutU32(CSVFS_A_UID, 1000).PutU32(CSVFS_A_GID, 1001);
    return m;
  };
  Message d = Do(as_user(Named(CSVFS_CMD_MKDIR, root_, "home")).PutU32(CSVFS_A_MODE, 02775));
  ASSERT_EQ(d.error(), 0);
  EXPECT_EQ(Attr(d).uid, 1000u);
  EXPECT_EQ(Attr(d).gid, 1001u);
  EXPECT_EQ(Attr(d).mode & 07777, 02775u) << "chown must not leave set-gid cleared";
  Message f = Do(as_user(Named(CSVFS_CMD_CREATE, GetFh(d), "f"))
                     .PutU32(CSVFS_A_MODE, S_IFREG | 0640)
                     .PutU32(CSVFS_A_FLAGS, O_RDWR | O_EXCL));
  ASSERT_EQ(f.error(), 0);
  EXPECT_EQ(Attr(f).uid, 1000u);
  Message other = Named(CSVFS_CMD_SYMLINK, GetFh(d), "ln");
  other.PutString(CSVFS_A_TARGET, "f").PutU32(CSVFS_A_UID, 7).PutU32(CSVFS_A_GID, 7);
  Message l = Do(other);
  ASSERT_EQ(l.error(), 0);
  EXPECT_EQ(Attr(l).uid, 7u);
  EXPECT_EQ(Attr(l).gid, 1001u) << "a set-gid directory's group is inherited";
  Message root_owned = Do(Named(CSVFS_CMD_MKDIR, root_, "plain").PutU32(CSVFS_A_MODE, 0755));
  ASSERT_EQ(root_owned.error(), 0);
  EXPECT_EQ(Attr(root_owned).uid, 0u);
}

TEST_F(ServiceTest, SymlinkReadlinkAndLinkCounts) {
  Message s = Named(CSVFS_CMD_SYMLINK, root_, "ln");
  s.PutString(CSVFS_A_TARGET, "some/where/else");
  Message r = Do(s);
  ASSERT_EQ(r.error(), 0);
  EXPECT_TRUE(S_ISLNK(Attr(r).mode));
  Message rl = Do(OnFh(CSVFS_CMD_READLINK, GetFh(r)));
  ASSERT_EQ(rl.error(), 0);
  EXPECT_EQ(*rl.GetString(CSVFS_A_TARGET), "some/where/else");
  auto [f, id] = Create(root_, "orig");
  EXPECT_EQ(Do(OnFh(CSVFS_CMD_READLINK, f)).error(), -EINVAL);
  Message link = OnFh(CSVFS_CMD_LINK, f);
  link.PutBinary(CSVFS_A_NEW_PARENT_FH, root_).PutString(CSVFS_A_NEW_NAME, "second");
  Message lr = Do(link);
  ASSERT_EQ(lr.error(), 0);
  EXPECT_EQ(Attr(lr).nlink, 2u);
  EXPECT_EQ(Do(link).error(), -EEXIST);
  ASSERT_EQ(Do(Named(CSVFS_CMD_UNLINK, root_, "orig")).error(), 0);
  EXPECT_EQ(Getattr(f).nlink, 1u);
  Message dirlink = OnFh(CSVFS_CMD_LINK, root_);
  dirlink.PutBinary(CSVFS_A_NEW_PARENT_FH, root_).PutString(CSVFS_A_NEW_NAME, "rootlink");
  EXPECT_EQ(Do(dirlink).error(), -EPERM);
  Message fifo = Named(CSVFS_CMD_MKNOD, root_, "fifo");
  fifo.PutU32(CSVFS_A_MODE, S_IFIFO | 0600).PutU32(CSVFS_A_RDEV, 0);
  Message fr = Do(fifo);
  ASSERT_EQ(fr.error(), 0);
  EXPECT_TRUE(S_ISFIFO(Attr(fr).mode));
  Message open = OnFh(CSVFS_CMD_OPEN, GetFh(fr));  // never blocks on a FIFO
  EXPECT_EQ(Do(open.PutU32(CSVFS_A_FLAGS, O_RDONLY)).error(), 0);
  Message chr = Named(CSVFS_CMD_MKNOD, root_, "null");
  chr.PutU32(CSVFS_A_MODE, S_IFCHR | 0666).PutU32(CSVFS_A_RDEV, makedev(1, 3));
  Message cr = Do(chr);
  ASSERT_EQ(cr.error(), 0);
  EXPECT_EQ(Attr(cr).rdev, static_cast<uint32_t>(makedev(1, 3)));
}

TEST_F(ServiceTest, Xattrs) {
  auto [f, id] = Create(root_, "x");
  auto set = [&](const char* name, const std::string& v, uint32_t flags) {
    Message m = OnFh(CSVFS_CMD_SETXATTR, f);
    m.PutString(CSVFS_A_XATTR_NAME, name)
        .PutBinary(CSVFS_A_XATTR_VALUE, Bytes(v.begin(), v.end()))
        .PutU32(CSVFS_A_FLAGS, flags);
    return Do(m).error();
  };
  auto get = [&](const char* name, uint32_t size) {
    Message m = OnFh(CSVFS_CMD_GETXATTR, f);
    m.PutString(CSVFS_A_XATTR_NAME, name).PutU32(CSVFS_A_SIZE, size);
    return Do(m);
  };
  EXPECT_EQ(set("user.color", "blue-green", XATTR_CREATE), 0);
  EXPECT_EQ(set("user.color", "red", XATTR_CREATE), -EEXIST);
  EXPECT_EQ(set("user.none", "red", XATTR_REPLACE), -ENODATA);
  Message sz = get("user.color", 0);
  ASSERT_EQ(sz.error(), 0);
  EXPECT_EQ(*sz.GetU32(CSVFS_A_SIZE), 10u);
  EXPECT_EQ(get("user.color", 4).error(), -ERANGE);
  Message got = get("user.color", 64);
  auto v = *got.GetBinary(CSVFS_A_XATTR_VALUE);
  EXPECT_EQ(std::string(v.begin(), v.end()), "blue-green");
  Message list = Do(OnFh(CSVFS_CMD_LISTXATTR, f).PutU32(CSVFS_A_SIZE, 256));
  ASSERT_EQ(list.error(), 0);
  auto l = *list.GetBinary(CSVFS_A_XATTR_VALUE);
  EXPECT_NE(std::string(l.begin(), l.end()).find("user.color"), std::string::npos);
  Message rm = OnFh(CSVFS_CMD_REMOVEXATTR, f);
  EXPECT_EQ(Do(rm.PutString(CSVFS_A_XATTR_NAME, "user.color")).error(), 0);
  EXPECT_EQ(get("user.color", 64).error(), -ENODATA);
  EXPECT_EQ(set("user.d", "1", 0), 0);
  EXPECT_EQ(set("bad.namespace", "1", 0), -EOPNOTSUPP);
}

TEST_F(ServiceTest, WriteReadAlignedAndUnaligned) {
  auto [f, id] = Create(root_, "data");
  Bytes aligned = Pattern(16384, 1);
  ASSERT_EQ(Write(f, id, 0, aligned), 0);
  EXPECT_EQ(Read(f, id, 0, 16384), aligned);
  EXPECT_EQ(Read(f, id, 0, 8192), Bytes(aligned.begin(), aligned.begin() + 8192));
  Bytes small = Pattern(100, 9);
  ASSERT_EQ(Write(f, id, 4000, small), 0);  // crosses a 4 KiB boundary
  Bytes expect = aligned;
  std::copy(small.begin(), small.end(), expect.begin() + 4000);
  EXPECT_EQ(Read(f, id, 3900, 300), Bytes(expect.begin() + 3900, expect.begin() + 4200));
  EXPECT_EQ(Read(f, 0, 0, 16384), expect);            // transient open, no OPEN_ID
  ASSERT_EQ(Write(f, 0, 16384, Pattern(777, 3)), 0);  // unaligned tail, extends
  EXPECT_EQ(Getattr(f).size, 16384u + 777);
  EXPECT_EQ(Read(f, id, 17000, 4096).size(), 16384u + 777 - 17000);
  EXPECT_TRUE(Read(f, id, 1 << 20, 512).empty());  // past EOF
  // The node's OPEN_ID only: another node, or a read-only open, is refused.
  EXPECT_EQ(Write(f, id, 0, small, 2), -EBADF);
  Message ro = OnFh(CSVFS_CMD_OPEN, f);
  Message rr = Do(ro.PutU32(CSVFS_A_FLAGS, O_RDONLY));
  ASSERT_EQ(rr.error(), 0);
  EXPECT_EQ(Write(f, *rr.GetU64(CSVFS_A_OPEN_ID), 0, small), -EBADF);
  Message sync = OnFh(CSVFS_CMD_FSYNC, f);
  EXPECT_EQ(Do(sync.PutU64(CSVFS_A_OPEN_ID, id)).error(), 0);
  Message st = Do(Req(CSVFS_CMD_STATFS));
  ASSERT_EQ(st.error(), 0);
  EXPECT_GT(st.GetStruct<csvfs_statfs>(CSVFS_A_STATFS)->blocks, 0u);
}

TEST_F(ServiceTest, SeekHoleAndFallocate) {
  auto [f, id] = Create(root_, "sparse");
  ASSERT_EQ(Write(f, id, 1 << 20, Pattern(4096, 5)), 0);
  auto seek = [&](uint64_t off, uint32_t whence) {
    Message m = OnFh(CSVFS_CMD_LSEEK, f);
    Message r = Do(m.PutU64(CSVFS_A_OFFSET, off).PutU32(CSVFS_A_WHENCE, whence));
    EXPECT_EQ(r.error(), 0);
    return r.GetU64(CSVFS_A_OFFSET).value_or(~0ULL);
  };
  EXPECT_EQ(seek(0, SEEK_HOLE), 0u);
  EXPECT_EQ(seek(0, SEEK_DATA), 1u << 20);
  EXPECT_EQ(seek(1 << 20, SEEK_HOLE), (1u << 20) + 4096);
  Message punch = OnFh(CSVFS_CMD_FALLOCATE, f);
  punch.PutU64(CSVFS_A_OFFSET, 1 << 20).PutU64(CSVFS_A_LENGTH, 4096);
  Message pr = Do(punch.PutU32(CSVFS_A_FLAGS, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE));
  ASSERT_EQ(pr.error(), 0);
  EXPECT_EQ(Attr(pr).blocks, 0u);
  EXPECT_EQ(Read(f, id, 1 << 20, 4096), Bytes(4096, 0));
}

TEST_F(ServiceTest, LayoutMatchesBlockReadAndGuardsBlockWrite) {
  auto [f, id] = Create(root_, "mapped");
  Bytes data = Pattern(65536, 11);
  ASSERT_EQ(Write(f, id, 0, data), 0);
  auto ext = LayoutGet(f, 0, 1 << 20, CSVFS_LAYOUT_RW);
  ASSERT_FALSE(ext.empty());
  EXPECT_EQ(ext.front().file_offset, 0u);
  EXPECT_EQ(ext.front().state, static_cast<uint32_t>(CSVFS_EXT_WRITTEN));
  EXPECT_EQ(ext.back().state, static_cast<uint32_t>(CSVFS_EXT_HOLE));
  EXPECT_EQ(ext.back().file_offset + ext.back().length, 1u << 20);
  const csvfs_extent& e = ext.front();
  Message br = Do(Req(CSVFS_CMD_BLOCK_READ)
                      .PutU64(CSVFS_A_DEV_OFFSET, e.dev_offset)
                      .PutU64(CSVFS_A_LENGTH, 4096));
  ASSERT_EQ(br.error(), 0);
  auto dev = *br.GetBinary(CSVFS_A_DATA);
  EXPECT_EQ(Bytes(dev.begin(), dev.end()), Read(f, id, e.file_offset, 4096));
  // Block-redirected write into the node's RW layout: READ sees it at once.
  Bytes fresh = Pattern(4096, 77);
  Message bw = Req(CSVFS_CMD_BLOCK_WRITE);
  bw.PutU64(CSVFS_A_DEV_OFFSET, e.dev_offset).PutBinary(CSVFS_A_DATA, fresh);
  EXPECT_EQ(Do(bw, 1).error(), 0);
  EXPECT_EQ(Read(f, id, 0, 4096), fresh);
  EXPECT_EQ(Do(bw, 2).error(), -EPERM);  // node 2 holds no layout there
  Message far = Req(CSVFS_CMD_BLOCK_WRITE);
  far.PutU64(CSVFS_A_DEV_OFFSET, 320ULL << 20).PutBinary(CSVFS_A_DATA, fresh);
  EXPECT_EQ(Do(far).error(), -ERANGE);
  Message past = Req(CSVFS_CMD_BLOCK_READ);
  past.PutU64(CSVFS_A_DEV_OFFSET, (320ULL << 20) - 512).PutU64(CSVFS_A_LENGTH, 1024);
  EXPECT_EQ(Do(past).error(), -ERANGE);
  Message odd = Req(CSVFS_CMD_BLOCK_READ);
  odd.PutU64(CSVFS_A_DEV_OFFSET, 100).PutU64(CSVFS_A_LENGTH, 512);
  EXPECT_EQ(svc_->Handle(odd, 1).error(), -EINVAL);  // the codec refuses it too
  Message ret = OnFh(CSVFS_CMD_LAYOUT_RETURN, f);
  EXPECT_EQ(Do(ret).error(), 0);
  EXPECT_EQ(Do(bw, 1).error(), -EPERM);  // returned: no more block writes
  csvfs_setattr sa{};
  sa.valid = CSVFS_SETATTR_SIZE | CSVFS_SETATTR_MTIME;
  sa.size = 1 << 20;
  sa.mtime = 12345;
  Message commit = OnFh(CSVFS_CMD_LAYOUT_COMMIT, f);
  Message cr = Do(commit.PutStruct(CSVFS_A_SETATTR, sa));
  ASSERT_EQ(cr.error(), 0);
  EXPECT_EQ(Attr(cr).size, 1u << 20);
  EXPECT_EQ(Attr(cr).mtime, 12345);
  sa.size = 10;  // a commit never shrinks
  EXPECT_EQ(Attr(Do(OnFh(CSVFS_CMD_LAYOUT_COMMIT, f).PutStruct(CSVFS_A_SETATTR, sa))).size,
            1u << 20);
}

TEST_F(ServiceTest, UnwrittenExtentsAreReportedSo) {
  auto [f, id] = Create(root_, "prealloc");
  Message fa = OnFh(CSVFS_CMD_FALLOCATE, f);
  fa.PutU64(CSVFS_A_OFFSET, 0).PutU64(CSVFS_A_LENGTH, 65536).PutU32(CSVFS_A_FLAGS, 0);
  ASSERT_EQ(Do(fa).error(), 0);
  auto ext = LayoutGet(f, 0, 65536, CSVFS_LAYOUT_READ);
  ASSERT_FALSE(ext.empty());
  for (const auto& e : ext) EXPECT_EQ(e.state, static_cast<uint32_t>(CSVFS_EXT_UNWRITTEN));
}

TEST_F(ServiceTest, TruncateByAnotherNodeRecallsLayouts) {
  auto [f, id] = Create(root_, "shared");
  ASSERT_EQ(Write(f, id, 0, Pattern(65536, 2)), 0);
  ASSERT_FALSE(LayoutGet(f, 0, 65536, CSVFS_LAYOUT_READ, 2).empty());
  ASSERT_FALSE(LayoutGet(f, 0, 65536, CSVFS_LAYOUT_RW, 3).empty());
  csvfs_setattr sa{};
  sa.valid = CSVFS_SETATTR_SIZE;
  sa.size = 100000;  // growing frees nothing
  ASSERT_EQ(Setattr(f, sa, 3).error(), 0);
  EXPECT_TRUE(calls_.To(CSVFS_CMD_LAYOUT_RECALL).empty());
  sa.size = 4096;
  ASSERT_EQ(Setattr(f, sa, 3).error(), 0);
  EXPECT_EQ(calls_.To(CSVFS_CMD_LAYOUT_RECALL), std::vector<uint32_t>{2});  // not the truncater
  {
    std::lock_guard lock(calls_.mu);
    const Message& m = calls_.sent.front().second;
    EXPECT_EQ(*m.GetU64(CSVFS_A_OFFSET), 4096u);
    auto fh = *m.GetBinary(CSVFS_A_FH);
    EXPECT_EQ(Bytes(fh.begin(), fh.end()), f);
  }
  calls_.Clear();
  ASSERT_EQ(Setattr(f, sa, 1).error(), 0);  // nothing past 4096 is held any more
  EXPECT_TRUE(calls_.To(CSVFS_CMD_LAYOUT_RECALL).empty());
  // Unlinking the last link recalls whatever remains.
  ASSERT_FALSE(LayoutGet(f, 0, 4096, CSVFS_LAYOUT_READ, 2).empty());
  ASSERT_EQ(Do(Named(CSVFS_CMD_UNLINK, root_, "shared"), 1).error(), 0);
  EXPECT_EQ(calls_.To(CSVFS_CMD_LAYOUT_RECALL), (std::vector<uint32_t>{2, 3}));
}

// XFS frees a file without links at its last close, at unmount or in log
// recovery, with no request that could recall a layout first: so none is
// handed out; its I/O goes through the coordinator.
TEST_F(ServiceTest, NoLayoutForAFileWithoutLinks) {
  auto [f, id] = Create(root_, "doomed");
  ASSERT_EQ(Write(f, id, 0, Pattern(65536, 4)), 0);
  ASSERT_EQ(Do(Named(CSVFS_CMD_UNLINK, root_, "doomed"), 1).error(), 0);
  Message m = OnFh(CSVFS_CMD_LAYOUT_GET, f);
  m.PutU64(CSVFS_A_OFFSET, 0)
      .PutU64(CSVFS_A_LENGTH, 65536)
      .PutU32(CSVFS_A_LAYOUT_IOMODE, CSVFS_LAYOUT_RW);
  Message r = Do(m, 2);
  EXPECT_EQ(r.error(), -ESTALE);
  EXPECT_FALSE(r.Has(CSVFS_A_EXTENTS));
  // the open file is still read and written through the coordinator
  ASSERT_EQ(Write(f, id, 0, Pattern(4096, 5)), 0);
}

// A file open on node 2 that node 1 unlinks, and one that node 1 renames
// over, live on in the hidden orphan directory: node 2 still reads them
// through its open, they show no link and have no layout; the orphan goes
// with node 2's last release.
TEST_F(ServiceTest, OpenFileThatLosesItsLastNameLivesOnUntilItsLastRelease) {
  svc_->EndGrace();
  auto [f, id] = Create(root_, "held", O_RDWR | O_EXCL, 2);
  auto [g, gid] = Create(root_, "replaced", O_RDWR | O_EXCL, 2);
  auto [n, nid] = Create(root_, "new", O_RDWR | O_EXCL, 1);
  ASSERT_EQ(Write(f, id, 0, Pattern(8192, 1), 2), 0);
  ASSERT_EQ(Write(g, gid, 0, Pattern(4096, 2), 2), 0);
  ASSERT_EQ(Do(Named(CSVFS_CMD_UNLINK, root_, "held"), 1).error(), 0);
  Message ren = Named(CSVFS_CMD_RENAME, root_, "new");
  ren.PutBinary(CSVFS_A_NEW_PARENT_FH, root_).PutString(CSVFS_A_NEW_NAME, "replaced");
  ASSERT_EQ(Do(ren.PutU32(CSVFS_A_FLAGS, 0), 1).error(), 0);
  EXPECT_EQ(Lookup(root_, "held"), -ENOENT);
  EXPECT_EQ(Getattr(f).nlink, 0u);
  EXPECT_EQ(Getattr(g).nlink, 0u);
  EXPECT_EQ(Read(f, id, 0, 8192, 2), Pattern(8192, 1));
  EXPECT_EQ(Read(g, gid, 0, 4096, 2), Pattern(4096, 2));
  Message lg = OnFh(CSVFS_CMD_LAYOUT_GET, f);
  lg.PutU64(CSVFS_A_OFFSET, 0).PutU64(CSVFS_A_LENGTH, 8192).PutU32(CSVFS_A_LAYOUT_IOMODE, 1);
  EXPECT_EQ(Do(lg, 2).error(), -ESTALE);
  // the directory is hidden and its name reserved
  Message rd = OnFh(CSVFS_CMD_READDIR, root_);
  Message list = Do(rd.PutU64(CSVFS_A_COOKIE, 0));
  std::vector<abi::DirEntry> entries;
  ASSERT_TRUE(abi::UnpackDirents(*list.GetBinary(CSVFS_A_DIRENTS), &entries).ok());
  std::set<std::string> names;
  for (const auto& e : entries) names.insert(e.name);
  EXPECT_EQ(names, (std::set<std::string>{"replaced"}));
  EXPECT_EQ(Lookup(root_, ".csvfs-orphans"), -ENOENT);
  EXPECT_EQ(Do(Named(CSVFS_CMD_MKDIR, root_, ".csvfs-orphans").PutU32(CSVFS_A_MODE, 0755)).error(),
            -EPERM);
  std::string odir = vol_.dir + "/mnt/.csvfs-orphans";
  EXPECT_EQ(::csv::coord::Run("ls " + odir + " | wc -l"), "2");
  ASSERT_EQ(Do(OnFh(CSVFS_CMD_RELEASE, f).PutU64(CSVFS_A_OPEN_ID, id), 2).error(), 0);
  ASSERT_EQ(Do(OnFh(CSVFS_CMD_RELEASE, g).PutU64(CSVFS_A_OPEN_ID, gid), 2).error(), 0);
  EXPECT_EQ(::csv::coord::Run("ls " + odir + " | wc -l"), "0");
  EXPECT_EQ(svc_->RemovedOrphans(), 2u);
  EXPECT_EQ(Do(OnFh(CSVFS_CMD_GETATTR, f)).error(), -ESTALE);
  // a file nobody has open is simply removed
  ASSERT_EQ(Do(OnFh(CSVFS_CMD_RELEASE, n).PutU64(CSVFS_A_OPEN_ID, nid), 1).error(), 0);
  ASSERT_EQ(Do(Named(CSVFS_CMD_UNLINK, root_, "replaced"), 1).error(), 0);
  EXPECT_EQ(::csv::coord::Run("ls " + odir + " | wc -l"), "0");
}

// The next coordinator (here: the service closed and opened again, as at a
// move; a crash leaves the same on the volume) finds the orphans. Node 2
// reclaims its open by its OPEN_ID and keeps reading; the orphan nobody
// reclaims is removed when the grace period ends, the reclaimed one at its
// release.
TEST_F(ServiceTest, OrphansSurviveTheCoordinatorAndAreReclaimed) {
  auto [f, id] = Create(root_, "kept", O_RDWR | O_EXCL, 2);
  auto [g, gid] = Create(root_, "dropped", O_RDWR | O_EXCL, 3);
  ASSERT_EQ(Write(f, id, 0, Pattern(4096, 7), 2), 0);
  ASSERT_EQ(Do(Named(CSVFS_CMD_UNLINK, root_, "kept"), 1).error(), 0);
  ASSERT_EQ(Do(Named(CSVFS_CMD_UNLINK, root_, "dropped"), 1).error(), 0);
  svc_->Close();
  ServiceOptions o;
  o.volume = "Test1";
  o.device = vol_.loop;
  o.mount_dir = vol_.dir + "/mnt";
  std::string error;
  svc_ = Service::Open(o, &error);
  ASSERT_TRUE(svc_) << error;
  EXPECT_EQ(Getattr(f).nlink, 0u);
  Message reclaim = OnFh(CSVFS_CMD_OPEN, f);
  reclaim.PutU32(CSVFS_A_FLAGS, O_RDWR | O_TRUNC).PutU64(CSVFS_A_OPEN_ID, id);
  Message r = Do(reclaim, 2);
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.GetU64(CSVFS_A_OPEN_ID), id);  // the same id, and O_TRUNC ignored
  EXPECT_EQ(Do(reclaim, 2).error(), 0);      // a reclaim re-sent
  EXPECT_EQ(Do(reclaim, 3).error(), -EEXIST);
  EXPECT_EQ(svc_->EndGrace(), 1u);
  EXPECT_EQ(Do(OnFh(CSVFS_CMD_GETATTR, g)).error(), -ESTALE);
  EXPECT_EQ(Read(f, id, 0, 4096, 2), Pattern(4096, 7));
  // the reclaimed id is this node's open: another node cannot release it
  EXPECT_EQ(Do(OnFh(CSVFS_CMD_RELEASE, f).PutU64(CSVFS_A_OPEN_ID, id), 3).error(), -EBADF);
  ASSERT_EQ(Do(OnFh(CSVFS_CMD_RELEASE, f).PutU64(CSVFS_A_OPEN_ID, id), 2).error(), 0);
  EXPECT_EQ(Do(OnFh(CSVFS_CMD_GETATTR, f)).error(), -ESTALE);
  EXPECT_EQ(::csv::coord::Run("ls " + vol_.dir + "/mnt/.csvfs-orphans | wc -l"), "0");
}

// A node that leaves takes its opens with it: its orphans go.
TEST_F(ServiceTest, OrphansOfANodeThatLeftAreRemoved) {
  svc_->EndGrace();
  auto [f, id] = Create(root_, "x", O_RDWR | O_EXCL, 3);
  ASSERT_EQ(Do(Named(CSVFS_CMD_UNLINK, root_, "x"), 1).error(), 0);
  EXPECT_EQ(Getattr(f).nlink, 0u);
  svc_->ForgetNode(3);
  EXPECT_EQ(Do(OnFh(CSVFS_CMD_GETATTR, f)).error(), -ESTALE);
  EXPECT_EQ(svc_->RemovedOrphans(), 1u);
}

TEST_F(ServiceTest, RedirectedWriteIntoAHoleRecallsHoleLayouts) {
  auto [f, id] = Create(root_, "holes");
  ASSERT_EQ(Write(f, id, 0, Pattern(4096, 1)), 0);
  auto ext = LayoutGet(f, 0, 65536, CSVFS_LAYOUT_READ, 2);
  ASSERT_EQ(ext.back().state, static_cast<uint32_t>(CSVFS_EXT_HOLE));
  ASSERT_EQ(Write(f, id, 0, Pattern(4096, 2)), 0);  // WRITTEN there: no recall
  EXPECT_TRUE(calls_.To(CSVFS_CMD_LAYOUT_RECALL).empty());
  ASSERT_EQ(Write(f, id, 8192, Pattern(4096, 3)), 0);  // fills node 2's hole
  EXPECT_EQ(calls_.To(CSVFS_CMD_LAYOUT_RECALL), std::vector<uint32_t>{2});
}

TEST_F(ServiceTest, LeasesBreakOnConflict) {
  auto [f, id] = Create(root_, "leased");
  ASSERT_EQ(Do(OnFh(CSVFS_CMD_RELEASE, f).PutU64(CSVFS_A_OPEN_ID, id)).error(), 0);
  auto lease = [&](uint32_t level, uint32_t node) {
    Message r = Do(OnFh(CSVFS_CMD_LEASE_GET, f).PutU32(CSVFS_A_LEASE, level), node);
    EXPECT_EQ(r.error(), 0);
    return *r.GetU32(CSVFS_A_LEASE);
  };
  EXPECT_EQ(lease(CSVFS_LEASE_WRITE, 1), static_cast<uint32_t>(CSVFS_LEASE_WRITE));
  EXPECT_TRUE(calls_.To(CSVFS_CMD_LEASE_BREAK).empty());
  EXPECT_EQ(lease(CSVFS_LEASE_READ, 2), static_cast<uint32_t>(CSVFS_LEASE_READ));
  ASSERT_EQ(calls_.To(CSVFS_CMD_LEASE_BREAK), std::vector<uint32_t>{1});
  {
    std::lock_guard lock(calls_.mu);
    EXPECT_EQ(*calls_.sent.front().second.GetU32(CSVFS_A_LEASE),
              static_cast<uint32_t>(CSVFS_LEASE_READ));
  }
  calls_.Clear();
  EXPECT_EQ(lease(CSVFS_LEASE_WRITE, 3), static_cast<uint32_t>(CSVFS_LEASE_WRITE));
  EXPECT_EQ(calls_.To(CSVFS_CMD_LEASE_BREAK), (std::vector<uint32_t>{1, 2}));
  calls_.Clear();
  // An open for writing elsewhere breaks the writer's cache ...
  Message open = Do(OnFh(CSVFS_CMD_OPEN, f).PutU32(CSVFS_A_FLAGS, O_RDWR), 4);
  ASSERT_EQ(open.error(), 0);
  EXPECT_EQ(calls_.To(CSVFS_CMD_LEASE_BREAK), std::vector<uint32_t>{3});
  // ... and while it stays open nobody else gets one.
  EXPECT_EQ(lease(CSVFS_LEASE_READ, 5), static_cast<uint32_t>(CSVFS_LEASE_NONE));
  Message rel = OnFh(CSVFS_CMD_RELEASE, f);
  ASSERT_EQ(Do(rel.PutU64(CSVFS_A_OPEN_ID, *open.GetU64(CSVFS_A_OPEN_ID)), 4).error(), 0);
  EXPECT_EQ(lease(CSVFS_LEASE_READ, 5), static_cast<uint32_t>(CSVFS_LEASE_READ));
  EXPECT_EQ(Do(OnFh(CSVFS_CMD_LEASE_RETURN, f), 5).error(), 0);
}

// A cached size would be stale after any size change or fallocate, not
// only after a truncate that frees blocks.
TEST_F(ServiceTest, LeasesBreakOnGrowAndFallocate) {
  auto [f, id] = Create(root_, "grown");
  ASSERT_EQ(Do(OnFh(CSVFS_CMD_RELEASE, f).PutU64(CSVFS_A_OPEN_ID, id)).error(), 0);
  auto lease_read = [&](uint32_t node) {
    Message r = Do(OnFh(CSVFS_CMD_LEASE_GET, f).PutU32(CSVFS_A_LEASE, CSVFS_LEASE_READ), node);
    ASSERT_EQ(r.error(), 0);
    ASSERT_EQ(*r.GetU32(CSVFS_A_LEASE), static_cast<uint32_t>(CSVFS_LEASE_READ));
  };
  lease_read(2);
  csvfs_setattr sa{};
  sa.valid = CSVFS_SETATTR_SIZE;
  sa.size = 1 << 20;
  ASSERT_EQ(Setattr(f, sa, 3).error(), 0);
  EXPECT_EQ(calls_.To(CSVFS_CMD_LEASE_BREAK), std::vector<uint32_t>{2});
  calls_.Clear();
  ASSERT_EQ(Setattr(f, sa, 3).error(), 0);  // same size: nothing to break
  EXPECT_TRUE(calls_.To(CSVFS_CMD_LEASE_BREAK).empty());
  lease_read(2);
  Message fa = OnFh(CSVFS_CMD_FALLOCATE, f);
  fa.PutU64(CSVFS_A_OFFSET, 0).PutU64(CSVFS_A_LENGTH, 2 << 20).PutU32(CSVFS_A_FLAGS, 0);
  ASSERT_EQ(Do(fa, 3).error(), 0);
  EXPECT_EQ(calls_.To(CSVFS_CMD_LEASE_BREAK), std::vector<uint32_t>{2});
}

TEST_F(ServiceTest, PosixLocksConflictBetweenNodes) {
  auto [f, id] = Create(root_, "locked");
  auto lock = [&](uint32_t node, uint32_t type, uint64_t start, uint64_t end, uint32_t flags) {
    csvfs_lock l{start, end, 42, 1000 + node, type, flags, 0};
    return Do(OnFh(CSVFS_CMD_LOCK, f).PutStruct(CSVFS_A_LOCK, l), node);
  };
  ASSERT_EQ(lock(1, CSVFS_LOCK_WRITE, 0, 99, 0).error(), 0);
  Message t = lock(2, CSVFS_LOCK_READ, 50, 60, CSVFS_LOCK_F_TEST);
  ASSERT_EQ(t.error(), 0);
  csvfs_lock c = *t.GetStruct<csvfs_lock>(CSVFS_A_LOCK);
  EXPECT_EQ(c.type, static_cast<uint32_t>(CSVFS_LOCK_WRITE));
  EXPECT_EQ(c.start, 0u);
  EXPECT_EQ(c.end, 99u);
  EXPECT_EQ(c.pid, 1001u);
  EXPECT_EQ(lock(2, CSVFS_LOCK_READ, 50, 60, 0).error(), -EAGAIN);
  EXPECT_EQ(lock(2, CSVFS_LOCK_READ, 50, 60, CSVFS_LOCK_F_WAIT).error(), -EAGAIN);
  EXPECT_EQ(lock(2, CSVFS_LOCK_READ, 100, 200, 0).error(), 0);
  // The same owner number on another node is another owner.
  EXPECT_EQ(lock(1, CSVFS_LOCK_UNLOCK, 0, 99, 0).error(), 0);
  EXPECT_EQ(lock(2, CSVFS_LOCK_WRITE, 0, 99, 0).error(), 0);
  EXPECT_EQ(lock(1, CSVFS_LOCK_WRITE, 0, ~0ULL, CSVFS_LOCK_F_FLOCK).error(), 0);  // separate
  svc_->ForgetNode(2);
  Message free = lock(3, CSVFS_LOCK_WRITE, 0, 200, CSVFS_LOCK_F_TEST);
  EXPECT_EQ(free.GetStruct<csvfs_lock>(CSVFS_A_LOCK)->type,
            static_cast<uint32_t>(CSVFS_LOCK_UNLOCK));
}

TEST_F(ServiceTest, ConcurrentRequestsFromAPool) {
  constexpr int kThreads = 4, kFiles = 25;
  std::vector<std::thread> pool;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < kFiles; ++i) {
        Message m(CSVFS_CMD_CREATE);
        m.PutU64(CSVFS_A_REQ_ID, t * 1000 + i).PutBinary(CSVFS_A_PARENT_FH, root_);
        m.PutString(CSVFS_A_NAME, "t" + std::to_string(t) + "-" + std::to_string(i));
        m.PutU32(CSVFS_A_MODE, 0644).PutU32(CSVFS_A_FLAGS, O_RDWR | O_EXCL);
        Message r = svc_->Handle(m, t + 1);
        auto fh = r.GetBinary(CSVFS_A_FH);
        if (r.error() || !fh) {
          ++failures;
          continue;
        }
        Message w(CSVFS_CMD_WRITE);
        w.PutU64(CSVFS_A_REQ_ID, 1).PutBinary(CSVFS_A_FH, *fh);
        w.PutU64(CSVFS_A_OPEN_ID, *r.GetU64(CSVFS_A_OPEN_ID)).PutU64(CSVFS_A_OFFSET, 0);
        w.PutBinary(CSVFS_A_DATA, Pattern(4096, static_cast<uint8_t>(i)));
        if (svc_->Handle(w, t + 1).error()) ++failures;
        LayoutGet(Bytes(fh->begin(), fh->end()), 0, 4096, CSVFS_LAYOUT_READ, t + 1);
      }
      svc_->ForgetNode(t + 1);
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(failures.load(), 0);
}

class Ext4ServiceTest : public ServiceTest {
 protected:
  std::string FsType() const override { return "ext4"; }
};

TEST_F(Ext4ServiceTest, TreeDataReaddirAndLayouts) {
  Bytes d = Mkdir(root_, "dir");
  for (int i = 0; i < 2000; ++i) {
    Message m = Named(CSVFS_CMD_MKNOD, d, "n" + std::to_string(i));
    ASSERT_EQ(Do(m.PutU32(CSVFS_A_MODE, S_IFREG | 0600).PutU32(CSVFS_A_RDEV, 0)).error(), 0);
  }
  std::set<std::string> seen;
  uint64_t cookie = 0;
  size_t total = 0;
  for (bool eof = false; !eof;) {
    Message r = Do(OnFh(CSVFS_CMD_READDIR, d).PutU64(CSVFS_A_COOKIE, cookie));
    ASSERT_EQ(r.error(), 0);
    std::vector<abi::DirEntry> entries;
    ASSERT_TRUE(abi::UnpackDirents(*r.GetBinary(CSVFS_A_DIRENTS), &entries).ok());
    eof = r.Has(CSVFS_A_EOF);
    for (auto& e : entries) seen.insert(e.name);
    total += entries.size();
    if (!entries.empty()) cookie = entries.back().cookie;
  }
  EXPECT_EQ(seen.size(), 2000u);
  EXPECT_EQ(total, 2000u);
  auto [f, id] = Create(d, "file");
  Bytes data = Pattern(32768, 4);
  ASSERT_EQ(Write(f, id, 0, data), 0);
  ASSERT_EQ(Write(f, id, 5, Pattern(10, 1)), 0);
  std::copy_n(Pattern(10, 1).begin(), 10, data.begin() + 5);
  EXPECT_EQ(Read(f, id, 0, 32768), data);
  auto ext = LayoutGet(f, 0, 32768, CSVFS_LAYOUT_READ);
  ASSERT_FALSE(ext.empty());
  ASSERT_EQ(ext.front().state, static_cast<uint32_t>(CSVFS_EXT_WRITTEN));
  Message br = Req(CSVFS_CMD_BLOCK_READ);
  br.PutU64(CSVFS_A_DEV_OFFSET, ext.front().dev_offset).PutU64(CSVFS_A_LENGTH, 4096);
  Message brr = Do(br);
  auto dev = *brr.GetBinary(CSVFS_A_DATA);
  EXPECT_EQ(Bytes(dev.begin(), dev.end()), Bytes(data.begin(), data.begin() + 4096));
  EXPECT_EQ(Do(Named(CSVFS_CMD_RMDIR, root_, "dir")).error(), -ENOTEMPTY);
}

TEST(ServiceOpen, ClearErrors) {
  std::string error;
  ServiceOptions o{"Bad", "/dev/does-not-exist", "/tmp/csvcoord-none", {}};
  EXPECT_EQ(Service::Open(o, &error), nullptr);
  EXPECT_NE(error.find("/dev/does-not-exist"), std::string::npos) << error;
  Volume blank;
  std::string why = blank.Make("none", /*format=*/false);
  if (!why.empty()) GTEST_SKIP() << why;
  o.device = blank.loop;
  o.mount_dir = blank.dir + "/mnt";
  EXPECT_EQ(Service::Open(o, &error), nullptr);
  EXPECT_NE(error.find("no filesystem"), std::string::npos) << error;
}

}  // namespace
}  // namespace csv::coord
