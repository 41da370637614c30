// The coordinator's lower filesystem: the real XFS/ext4 of a volume, mounted
// in the daemon's private mount namespace, and the file-handle scheme that
// addresses its files.
//
// Handles on the wire are struct csvfs_fh followed by the f_handle bytes of
// name_to_handle_at(2). A handle is re-opened with open_by_handle_at(2)
// relative to the mount, so it can never reach another filesystem; every
// malformed or unresolvable handle is -ESTALE. The canonical handle of an
// inode (what name_to_handle_at returns for it) also keys the coordinator's
// tables (opens, layouts, leases, locks).
//
// Errors are values: functions return 0 or a negative errno.
// Thread-safety: all const methods may be called concurrently; Unmount()
// must not race with them.
#pragma once

#include <linux/csvfs.h>
#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "coordinator/unique_fd.h"

namespace csv::coord {

// Packed struct csvfs_fh + bytes; the tables' key for a file.
using FileKey = std::vector<uint8_t>;

class LowerFs {
 public:
  // Probes `device` with libblkid (xfs, ext4, ext3, ext2), mounts it at
  // `dir` (created if missing) and opens the mount root. nullptr and a
  // sentence in *error on failure.
  static std::unique_ptr<LowerFs> Mount(const std::string& device, const std::string& dir,
                                        std::string* error);
  ~LowerFs();

  // Syncs and unmounts; idempotent. Returns 0 or -errno.
  int Unmount();

  const std::string& fs_type() const { return fs_type_; }
  int mount_fd() const { return mount_fd_.get(); }

  // Re-opens a handle from the wire with open(2) `flags` (O_PATH allowed).
  // Malformed or unresolvable handles give -ESTALE.
  int Open(std::span<const uint8_t> fh, int flags, UniqueFd* out) const;
  // The canonical packed handle of an open file (an O_PATH fd is fine).
  int HandleOf(int fd, FileKey* out) const;
  // The child `name` of directory `dirfd`, not following a symlink: an
  // O_PATH fd.
  static int OpenChild(int dirfd, const std::string& name, UniqueFd* out);

 private:
  LowerFs() = default;

  std::string dir_;
  std::string fs_type_;
  UniqueFd mount_fd_;
  bool mounted_ = false;
};

// struct csvfs_attr from fstat(2) of any fd (O_PATH included). generation
// is 0: the lower filesystem's generation is inside the handle instead.
// flags: CSVFS_ATTR_NO_CAPS for a regular file without security.capability.
int StatAttr(int fd, csvfs_attr* attr, struct stat* st = nullptr);

// -errno of the last failed call, never 0.
int LastError();

}  // namespace csv::coord
