#include "coordinator/lower_fs.h"

#include <blkid/blkid.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace csv::coord {
namespace {

constexpr size_t kMaxHandleBytes = CSVFS_MAX_FH - sizeof(csvfs_fh);

// Storage for struct file_handle with the largest handle the ABI carries.
struct HandleBuffer {
  file_handle header;
  unsigned char bytes[CSVFS_MAX_FH];
};

std::string Errno(int err) { return std::strerror(err); }

// The filesystem type blkid finds on `device`, or "" with *error set.
std::string ProbeType(const std::string& device, std::string* error) {
  blkid_probe pr = blkid_new_probe_from_filename(device.c_str());
  if (!pr) {
    *error = "cannot open " + device + " to probe its filesystem: " + Errno(errno);
    return "";
  }
  blkid_probe_enable_superblocks(pr, 1);
  blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE);
  int rc = blkid_do_safeprobe(pr);
  const char* type = nullptr;
  std::string result;
  if (rc == 0 && blkid_probe_lookup_value(pr, "TYPE", &type, nullptr) == 0 && type)
    result = type;
  else if (rc == -2)
    *error = device + " carries several filesystem signatures; refusing to guess";
  else
    *error = device + " has no filesystem that blkid recognizes";
  blkid_free_probe(pr);
  return result;
}

bool IsSupportedType(const std::string& type) {
  return type == "xfs" || type == "ext4" || type == "ext3" || type == "ext2";
}

}  // namespace

int LastError() { return errno > 0 ? -errno : -EIO; }

std::unique_ptr<LowerFs> LowerFs::Mount(const std::string& device, const std::string& dir,
                                        std::string* error) {
  std::string type = ProbeType(device, error);
  if (type.empty()) return nullptr;
  if (!IsSupportedType(type)) {
    *error = device + " holds a " + type + " filesystem; a cluster volume must be xfs or ext4";
    return nullptr;
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    *error = "cannot create the mount point " + dir + ": " + Errno(errno);
    return nullptr;
  }
  // ext2/ext3 are mounted by the ext4 driver, as Debian does.
  std::string fstype = type == "xfs" ? "xfs" : "ext4";
  // nodev: the coordinator must never open a device node of the volume.
  unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
  if (::mount(device.c_str(), dir.c_str(), fstype.c_str(), flags, nullptr) != 0) {
    *error = "cannot mount " + device + " (" + type + ") at " + dir + ": " + Errno(errno);
    return nullptr;
  }
  std::unique_ptr<LowerFs> fs(new LowerFs());
  fs->dir_ = dir;
  fs->fs_type_ = type;
  fs->mounted_ = true;
  fs->mount_fd_.Reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fs->mount_fd_.valid()) {
    *error = "mounted " + device + " at " + dir + " but cannot open it: " + Errno(errno);
    return nullptr;  // the destructor unmounts
  }
  return fs;
}

LowerFs::~LowerFs() { Unmount(); }

int LowerFs::Unmount() {
  if (!mounted_) return 0;
  if (mount_fd_.valid()) ::syncfs(mount_fd_.get());
  mount_fd_.Reset();
  if (::umount2(dir_.c_str(), 0) != 0) return LastError();
  mounted_ = false;
  return 0;
}

int LowerFs::Open(std::span<const uint8_t> fh, int flags, UniqueFd* out) const {
  csvfs_fh h{};
  if (fh.size() < sizeof h || fh.size() > CSVFS_MAX_FH) return -ESTALE;
  std::memcpy(&h, fh.data(), sizeof h);
  if (h.len == 0 || h.len > kMaxHandleBytes || h.len != fh.size() - sizeof h) return -ESTALE;
  HandleBuffer buf{};
  buf.header.handle_bytes = h.len;
  buf.header.handle_type = static_cast<int>(h.type);
  std::memcpy(buf.header.f_handle, fh.data() + sizeof h, h.len);
  int fd = ::open_by_handle_at(mount_fd_.get(), &buf.header, flags | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    int err = errno;
    // A handle that does not decode, or names a freed inode, is stale.
    if (err == ESTALE || err == EINVAL || err == ENOENT || err == EBADF || err == EOVERFLOW)
      return -ESTALE;
    return -err;
  }
  out->Reset(fd);
  return 0;
}

int LowerFs::HandleOf(int fd, FileKey* out) const {
  HandleBuffer buf{};
  buf.header.handle_bytes = kMaxHandleBytes;
  int mount_id = 0;
  if (::name_to_handle_at(fd, "", &buf.header, &mount_id, AT_EMPTY_PATH) != 0) return LastError();
  *out = {};
  csvfs_fh h{static_cast<uint32_t>(buf.header.handle_type), buf.header.handle_bytes};
  out->resize(sizeof h + h.len);
  std::memcpy(out->data(), &h, sizeof h);
  std::memcpy(out->data() + sizeof h, buf.header.f_handle, h.len);
  return 0;
}

int LowerFs::OpenChild(int dirfd, const std::string& name, UniqueFd* out) {
  int fd = ::openat(dirfd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return LastError();
  out->Reset(fd);
  return 0;
}

// The lab's kernel test seam packs the same layout (ATTR_FMT).
static_assert(sizeof(csvfs_attr) == 96, "update tests/system/seam_responder.py too");

// fd may be O_PATH (no fgetxattr): its /proc/self/fd link names the file.
// None: ENODATA, or no xattrs at all (ENOTSUP). Any other error counts as
// "has one": the node then looks for it itself.
static bool HasCapabilityXattr(int fd) {
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (::getxattr(path.c_str(), "security.capability", nullptr, 0) >= 0) return true;
  return errno != ENODATA && errno != ENOTSUP;
}

int StatAttr(int fd, csvfs_attr* attr, struct stat* out) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return LastError();
  *attr = {};
  attr->ino = st.st_ino;
  attr->size = static_cast<uint64_t>(st.st_size);
  attr->blocks = static_cast<uint64_t>(st.st_blocks);
  attr->atime = st.st_atim.tv_sec;
  attr->mtime = st.st_mtim.tv_sec;
  attr->ctime = st.st_ctim.tv_sec;
  attr->atime_nsec = static_cast<uint32_t>(st.st_atim.tv_nsec);
  attr->mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  attr->ctime_nsec = static_cast<uint32_t>(st.st_ctim.tv_nsec);
  attr->mode = st.st_mode;
  attr->nlink = static_cast<uint32_t>(st.st_nlink);
  attr->uid = st.st_uid;
  attr->gid = st.st_gid;
  attr->rdev = static_cast<uint32_t>(st.st_rdev);  // new_encode_dev layout
  attr->blksize = static_cast<uint32_t>(st.st_blksize);
  if (S_ISREG(st.st_mode) && !HasCapabilityXattr(fd)) attr->flags |= CSVFS_ATTR_NO_CAPS;
  if (out) *out = st;
  return 0;
}

}  // namespace csv::coord
