// Service::Open, the dispatch table and the argument helpers every command
// shares. The commands themselves are in namespace_ops.cc, data_ops.cc and
// state_ops.cc.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "coordinator/service_impl.h"

namespace csv::coord {

std::unique_ptr<Service> Service::Open(const ServiceOptions& options, std::string* error) {
  std::string ignored;
  if (!error) error = &ignored;
  if (options.device.empty() || options.mount_dir.empty()) {
    *error = "volume " + options.volume + ": a device and a mount directory are required";
    return nullptr;
  }
  auto fs = LowerFs::Mount(options.device, options.mount_dir, error);
  if (!fs) return nullptr;
  auto service = std::make_unique<ServiceImpl>(options, std::move(fs));
  if (service->Init(error) != 0) return nullptr;  // the destructor unmounts
  return service;
}

ServiceImpl::ServiceImpl(ServiceOptions options, std::unique_ptr<LowerFs> fs)
    : options_(std::move(options)), fs_(std::move(fs)) {}

ServiceImpl::~ServiceImpl() { Close(); }

int ServiceImpl::Init(std::string* error) {
  const std::string& dev = options_.device;
  dev_fd_.Reset(::open(dev.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC));
  struct stat st {};
  if (!dev_fd_.valid() || ::fstat(dev_fd_.get(), &st) != 0) {
    *error = "cannot open " + dev + " for block I/O: " + std::strerror(errno);
    return -1;
  }
  int block = 0;
  if (!S_ISBLK(st.st_mode) || ::ioctl(dev_fd_.get(), BLKGETSIZE64, &dev_size_) != 0 ||
      ::ioctl(dev_fd_.get(), BLKSSZGET, &block) != 0) {
    *error = dev + " is not a block device whose size can be read";
    return -1;
  }
  dev_block_ = static_cast<uint32_t>(std::max(block, 512));
  dio_align_ = dev_block_;
  if (int err = fs_->HandleOf(fs_->mount_fd(), &root_fh_); err != 0) {
    *error = "the " + fs_->fs_type() + " filesystem on " + dev +
             " cannot export file handles: " + std::strerror(-err);
    return -1;
  }
  oplog_ = std::make_unique<OpLog>();
  if (int err = oplog_->Open(fs_->mount_fd()); err != 0) {
    *error = std::string("cannot open the operation record ") + OpLog::kName + " on " + dev + ": " +
             std::strerror(-err);
    return -1;
  }
  return OpenOrphans(error);
}

void ServiceImpl::Close() {
  {
    std::lock_guard lock(mu_);
    opens_.clear();
    layouts_ = {};
    leases_ = {};
    locks_ = {};
  }
  dev_fd_.Reset();
  orphan_dir_.Reset();
  oplog_.reset();  // its open file would keep the mount busy
  if (!fs_) return;
  if (int err = fs_->Unmount(); err != 0)
    std::fprintf(stderr, "csvd: volume %s: cannot unmount %s: %s\n", options_.volume.c_str(),
                 options_.mount_dir.c_str(), std::strerror(-err));
  fs_.reset();
}

void ServiceImpl::ForgetNode(uint32_t node) {
  std::vector<std::string> unused;
  std::lock_guard lock(mu_);
  std::erase_if(opens_, [node](const auto& kv) { return kv.second->node == node; });
  unused = TakeUnusedOrphans();
  // Its layouts stay: until its lease has run out it may still write with
  // them, so freeing their blocks must still recall them (a recall to a
  // node that is gone ends after call_timeout_ms, longer than any lease,
  // and then drops them). And a block-redirected write it held across a
  // partition is still accepted when it comes back, if no block of that
  // layout was freed meanwhile (the lab partition test saw -EPERM there).
  leases_.ForgetNode(node);
  locks_.ForgetNode(node);
  RemoveOrphans(unused);  // under mu_: rare, and unlink of an inode in use is quick
}

const std::vector<ServiceImpl::OpFn>& ServiceImpl::Dispatch() {
  static const std::vector<OpFn> table = [] {
    std::vector<OpFn> t(CSVFS_CMD_MAX + 1, nullptr);
    t[CSVFS_CMD_LOOKUP] = &ServiceImpl::Lookup;
    t[CSVFS_CMD_GETATTR] = &ServiceImpl::Getattr;
    t[CSVFS_CMD_SETATTR] = &ServiceImpl::Setattr;
    t[CSVFS_CMD_CREATE] = &ServiceImpl::Create;
    t[CSVFS_CMD_MKNOD] = &ServiceImpl::Mknod;
    t[CSVFS_CMD_MKDIR] = &ServiceImpl::Mkdir;
    t[CSVFS_CMD_SYMLINK] = &ServiceImpl::Symlink;
    t[CSVFS_CMD_LINK] = &ServiceImpl::Link;
    t[CSVFS_CMD_UNLINK] = &ServiceImpl::Unlink;
    t[CSVFS_CMD_RMDIR] = &ServiceImpl::Rmdir;
    t[CSVFS_CMD_RENAME] = &ServiceImpl::Rename;
    t[CSVFS_CMD_READDIR] = &ServiceImpl::Readdir;
    t[CSVFS_CMD_READLINK] = &ServiceImpl::Readlink;
    t[CSVFS_CMD_OPEN] = &ServiceImpl::Open;
    t[CSVFS_CMD_RELEASE] = &ServiceImpl::Release;
    t[CSVFS_CMD_FSYNC] = &ServiceImpl::Fsync;
    t[CSVFS_CMD_STATFS] = &ServiceImpl::Statfs;
    t[CSVFS_CMD_GETXATTR] = &ServiceImpl::Getxattr;
    t[CSVFS_CMD_SETXATTR] = &ServiceImpl::Setxattr;
    t[CSVFS_CMD_LISTXATTR] = &ServiceImpl::Listxattr;
    t[CSVFS_CMD_REMOVEXATTR] = &ServiceImpl::Removexattr;
    t[CSVFS_CMD_FALLOCATE] = &ServiceImpl::Fallocate;
    t[CSVFS_CMD_LSEEK] = &ServiceImpl::Lseek;
    t[CSVFS_CMD_READ] = &ServiceImpl::Read;
    t[CSVFS_CMD_WRITE] = &ServiceImpl::Write;
    t[CSVFS_CMD_BLOCK_READ] = &ServiceImpl::BlockRead;
    t[CSVFS_CMD_BLOCK_WRITE] = &ServiceImpl::BlockWrite;
    t[CSVFS_CMD_LAYOUT_GET] = &ServiceImpl::LayoutGet;
    t[CSVFS_CMD_LAYOUT_RETURN] = &ServiceImpl::LayoutReturn;
    t[CSVFS_CMD_LAYOUT_COMMIT] = &ServiceImpl::LayoutCommit;
    t[CSVFS_CMD_LEASE_GET] = &ServiceImpl::LeaseGet;
    t[CSVFS_CMD_LEASE_RETURN] = &ServiceImpl::LeaseReturn;
    t[CSVFS_CMD_LOCK] = &ServiceImpl::Lock;
    return t;
  }();
  return table;
}

abi::Message ServiceImpl::Handle(const abi::Message& request, uint32_t from_node) {
  const auto& table = Dispatch();
  const uint8_t cmd = request.cmd();
  if (cmd >= table.size() || !table[cmd]) return abi::MakeReply(request, -EOPNOTSUPP);
  if (!fs_) return abi::MakeReply(request, -EIO);  // closed
  // The codec checked this for decoded messages; a Message built in the
  // process is checked here, so no command reads an absent attribute.
  for (int attr : abi::RequiredAttributes(cmd))
    if (attr != CSVFS_A_REQ_ID && !request.Has(attr)) return abi::MakeReply(request, -EINVAL);
  Call call{request, from_node, abi::MakeReply(request, 0)};
  int err = (Logged(cmd) && request.Has(CSVFS_A_OP_ID) && oplog_) ? LoggedOp(call, table[cmd])
                                                                  : (this->*table[cmd])(call);
  if (err > 0 || err < -4095) err = -EIO;
  return err ? abi::MakeReply(request, err) : std::move(call.reply);
}

// ---- argument helpers ----------------------------------------------------

int ServiceImpl::OpenFh(const Call& c, int attr, int flags, UniqueFd* fd) const {
  auto fh = c.req.GetBinary(attr);
  if (!fh) return -EINVAL;
  return fs_->Open(*fh, flags, fd);
}

int ServiceImpl::OpenFhKey(const Call& c, int flags, UniqueFd* fd, FileKey* key,
                           struct stat* st) const {
  if (int err = OpenFh(c, CSVFS_A_FH, flags, fd)) return err;
  if (int err = fs_->HandleOf(fd->get(), key)) return err;
  if (::fstat(fd->get(), st) != 0) return LastError();
  return 0;
}

int ServiceImpl::ReopenRegular(const FileKey& fh, const struct stat& st, int flags, UniqueFd* fd,
                               bool* direct) const {
  if (S_ISDIR(st.st_mode)) return -EISDIR;
  if (!S_ISREG(st.st_mode)) return -EINVAL;
  *direct = true;  // XFS and ext4 both do direct I/O on regular files
  return fs_->Open(fh, flags | O_DIRECT, fd);
}

int ServiceImpl::GetName(const Call& c, int attr, std::string* name) {
  auto s = c.req.GetString(attr);
  if (!s) return -EINVAL;
  if (s->size() >= CSVFS_MAX_NAME) return -ENAMETOOLONG;
  if (!abi::IsValidName(*s)) return -EINVAL;                  // '/', NUL, ".", ".."
  if (*s == OpLog::kName || *s == kOrphanDir) return -EPERM;  // reserved
  *name = std::string(*s);
  return 0;
}

int ServiceImpl::PutEntry(Call& c, int fd) const {
  FileKey fh;
  if (int err = fs_->HandleOf(fd, &fh)) return err;
  c.reply.PutBinary(CSVFS_A_FH, fh);
  return PutAttr(c, fd);
}

int ServiceImpl::PutAttr(Call& c, int fd) const {
  csvfs_attr attr{};
  if (int err = StatAttr(fd, &attr)) return err;
  if (attr.nlink > 0 && S_ISREG(attr.mode) && IsOrphan(static_cast<ino_t>(attr.ino))) --attr.nlink;
  c.reply.PutStruct(CSVFS_A_ATTR, attr);
  return 0;
}

abi::Message ServiceImpl::NodeRequest(uint8_t cmd, const FileKey& key) {
  abi::Message m(cmd);
  m.PutU64(CSVFS_A_REQ_ID, next_req_id_.fetch_add(1));
  m.PutBinary(CSVFS_A_FH, key);
  return m;
}

}  // namespace csv::coord
