// Internals of csv::coord::Service: one class, one member function per
// command, split over files by concern:
//   service.cc      Open/Close, dispatch, argument helpers
//   namespace_ops.cc  LOOKUP .. READLINK, STATFS, xattrs
//   data_ops.cc     OPEN/RELEASE/FSYNC, READ/WRITE, BLOCK_*, FALLOCATE, LSEEK
//   state_ops.cc    LAYOUT_*, LEASE_*, LOCK, recalls and breaks
//
// Lock order: the per-file gates are never held together (leases are
// broken before the layout gate is entered) and are taken before mu_. mu_
// is never held across a syscall that blocks on I/O or across call_node.
// Close() must not race with Handle(): the core drains its pool first.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/lower_fs.h"
#include "coordinator/oplog.h"
#include "coordinator/service.h"
#include "coordinator/tables.h"

namespace csv::coord {

// One OPEN (or CREATE) of one node: the lower file, opened O_DIRECT for
// regular files; no fd for special files (they are opened on the node).
struct OpenFile {
  uint32_t node = 0;
  FileKey key;
  int accmode = O_RDONLY;  // what the node asked for
  mode_t type = 0;         // S_IFMT bits
  bool direct = false;     // fd is O_DIRECT
  UniqueFd fd;
};

// One request being executed: the message, who sent it, and the reply the
// command function fills with result attributes.
struct Call {
  const abi::Message& req;
  uint32_t node;
  abi::Message reply;
};

class ServiceImpl final : public Service {
 public:
  using OpFn = int (ServiceImpl::*)(Call&);

  ServiceImpl(ServiceOptions options, std::unique_ptr<LowerFs> fs);
  ~ServiceImpl() override;

  int Init(std::string* error);
  abi::Message Handle(const abi::Message& request, uint32_t from_node) override;
  std::vector<uint8_t> RootHandle() const override { return root_fh_; }
  void ForgetNode(uint32_t node) override;
  size_t EndGrace() override;
  uint64_t RemovedOrphans() const override { return removed_orphans_; }
  void Close() override;

 private:
  static const std::vector<OpFn>& Dispatch();

  // Argument helpers: 0 or -errno.
  int OpenFh(const Call& c, int attr, int flags, UniqueFd* fd) const;
  int OpenFhKey(const Call& c, int flags, UniqueFd* fd, FileKey* key, struct stat* st) const;
  int ReopenRegular(const FileKey& fh, const struct stat& st, int flags, UniqueFd* fd,
                    bool* direct) const;
  static int GetName(const Call& c, int attr, std::string* name);
  int PutEntry(Call& c, int fd) const;
  // The attributes of fd; an orphan's name in kOrphanDir is not counted.
  int PutAttr(Call& c, int fd) const;

  // Namespace (namespace_ops.cc).
  int Lookup(Call& c);
  int Getattr(Call& c);
  int Setattr(Call& c);
  int SetOwnerModeTimes(int fd, const struct stat& st, const csvfs_setattr& sa);
  // fsync of a regular file or directory (others: nothing to do here), so
  // that an answered change survives a coordinator crash.
  int SyncInode(const FileKey& key, const struct stat& st);
  int Create(Call& c);
  int CreateOpen(int dirfd, const std::string& name, int flags, mode_t mode, UniqueFd* fd,
                 bool* created);
  // Gives a new inode to the creator named by the request's UID/GID.
  static int ApplyCreator(const Call& c, int dirfd, int fd);
  int Mknod(Call& c);
  int Mkdir(Call& c);
  int Symlink(Call& c);
  int FinishCreate(Call& c, int dirfd, const std::string& name, mode_t mode);
  int Link(Call& c);
  int Unlink(Call& c);
  int Rmdir(Call& c);
  int Remove(Call& c, int at_flags);
  int Rename(Call& c);
  // The key of the regular file `name` would free (its last link), if any.
  int VictimKey(int dirfd, const std::string& name, std::optional<FileKey>* key) const;
  int RemoveEntry(Call& c, int dirfd, const std::string& name, int at_flags);
  int Readdir(Call& c);
  int Readlink(Call& c);
  int Statfs(Call& c);
  int Getxattr(Call& c);
  int Setxattr(Call& c);
  int Listxattr(Call& c);
  int Removexattr(Call& c);
  int OpenXattrFd(const Call& c, UniqueFd* fd) const;
  static int ChmodFd(int fd, mode_t mode);

  // Retries of non-idempotent ops by OP_ID (retry_ops.cc).
  static bool Logged(uint8_t cmd);
  int LoggedOp(Call& c, OpFn fn);
  void PreState(const Call& c, OpRecord* rec) const;
  bool TookEffect(const Call& c, const OpRecord& rec) const;
  int Replay(Call& c, const OpRecord& rec);
  void SyncDirs(const Call& c) const;

  // Data (data_ops.cc).
  int Open(Call& c);
  int AddOpen(Call& c, std::shared_ptr<OpenFile> file, uint64_t reclaim = 0);
  int Release(Call& c);
  int Fsync(Call& c);
  int Read(Call& c);
  int Write(Call& c);
  int IoFile(const Call& c, int accmode, std::shared_ptr<OpenFile>* file);
  int ReadFile(const OpenFile& f, uint64_t off, uint64_t len, std::vector<uint8_t>* out) const;
  int WriteFile(const OpenFile& f, uint64_t off, std::span<const uint8_t> data) const;
  int BlockRead(Call& c);
  int BlockWrite(Call& c);
  int CheckDeviceRange(uint64_t off, uint64_t len) const;
  int Fallocate(Call& c);
  int Lseek(Call& c);
  int Truncate(const FileKey& key, const struct stat& st, uint64_t size, uint32_t node);

  // Layouts, leases, locks (state_ops.cc).
  int LayoutGet(Call& c);
  int MapExtents(int fd, Range want, uint32_t iomode, std::vector<csvfs_extent>* out) const;
  int LayoutReturn(Call& c);
  int LayoutCommit(Call& c);
  int LeaseGet(Call& c);
  uint32_t GrantableLease(const FileKey& key, uint32_t node, uint32_t wanted) const;
  int LeaseReturn(Call& c);
  int Lock(Call& c);
  // Recalls other nodes' layouts overlapping `range` and forgets them;
  // the caller holds layout_gate_ exclusively for `key`.
  void RecallLayouts(const FileKey& key, const Range& range, uint32_t node);
  // Breaks leases of nodes other than `node` that conflict with `wanted`
  // (CSVFS_LEASE_WRITE for any change of the file's data).
  void BreakLeases(const FileKey& key, uint32_t node, uint32_t wanted);
  abi::Message NodeRequest(uint8_t cmd, const FileKey& key);

  // Orphans: open files that lost their last name (orphans.cc).
  static constexpr const char* kOrphanDir = ".csvfs-orphans";  // reserved, hidden
  struct Orphan {
    std::string name;  // in kOrphanDir
    FileKey key;
  };
  int OpenOrphans(std::string* error);
  void AdoptOrphan(const std::string& name);
  bool OpenAnywhere(const FileKey& key) const;  // mu_ held
  bool IsOrphan(ino_t ino) const;
  int64_t OrphanIfOpen(int dirfd, const std::string& name, const FileKey& key);
  void UndoOrphan(int64_t ino);
  std::vector<std::string> TakeUnusedOrphans();  // mu_ held
  void RemoveOrphans(const std::vector<std::string>& names);

  const ServiceOptions options_;
  std::unique_ptr<LowerFs> fs_;
  UniqueFd dev_fd_;        // the device, O_RDWR | O_DIRECT
  uint64_t dev_size_ = 0;  // bytes
  uint32_t dev_block_ = 512;
  uint32_t dio_align_ = 4096;  // offset/length alignment of lower O_DIRECT
  std::vector<uint8_t> root_fh_;
  std::unique_ptr<OpLog> oplog_;  // recent OP_IDs, on the volume
  std::atomic<uint64_t> replayed_ops_{0};
  std::atomic<uint64_t> next_req_id_{1};

  KeyGate layout_gate_;  // LAYOUT_GET shared, block-moving ops exclusive
  KeyGate lease_gate_;   // serializes lease grants and breaks per file

  mutable std::mutex mu_;
  uint64_t next_open_id_ = 1;                            // guarded by mu_
  std::map<uint64_t, std::shared_ptr<OpenFile>> opens_;  // guarded by mu_
  LayoutTable layouts_;                                  // guarded by mu_
  LeaseTable leases_;                                    // guarded by mu_
  LockTable locks_;                                      // guarded by mu_
  UniqueFd orphan_dir_;
  std::map<ino_t, Orphan> orphans_;      // guarded by mu_
  std::atomic<size_t> orphan_count_{0};  // orphans_.size(), stored under mu_
  bool grace_ = true;                    // guarded by mu_: reclaims still expected
  std::atomic<uint64_t> removed_orphans_{0};
};

}  // namespace csv::coord
