// Open files that lose their last name (service_impl.h, "Orphans").
//
// A node's application may keep using a file after it was unlinked or
// renamed over, on its own node or on another. XFS keeps such an inode
// while the coordinator has it open, but only while: a new coordinator's
// log recovery (after a crash) or the unmount (at a move) frees it, and
// the node's next I/O gets ESTALE. So a regular file that some node has
// open is linked into kOrphanDir before it loses its last name; it stays
// there until its last open anywhere is released. A new coordinator finds
// the orphans at mount, lets the nodes reclaim their opens (an OPEN that
// carries the OPEN_ID of an earlier coordinator) and removes, once the
// grace period ends (EndGrace), every orphan nobody reclaimed.
//
// Crash safety: the link into kOrphanDir is made before the name goes, so
// a crash in between leaves a file with two links; Init removes such
// entries (the re-sent op then runs again and orphans it again if needed).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "coordinator/service_impl.h"

namespace csv::coord {

int ServiceImpl::OpenOrphans(std::string* error) {
  int root = fs_->mount_fd();
  if (::mkdirat(root, kOrphanDir, 0700) != 0 && errno != EEXIST) {
    *error = std::string("cannot make ") + kOrphanDir + ": " + std::strerror(errno);
    return -1;
  }
  orphan_dir_.Reset(::openat(root, kOrphanDir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!orphan_dir_.valid()) {
    *error = std::string("cannot open ") + kOrphanDir + ": " + std::strerror(errno);
    return -1;
  }
  UniqueFd scan(::openat(orphan_dir_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  DIR* d = scan.valid() ? ::fdopendir(scan.get()) : nullptr;
  if (!d) {
    *error = std::string("cannot read ") + kOrphanDir + ": " + std::strerror(errno);
    return -1;
  }
  scan.Release();  // closedir closes it
  while (const dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    AdoptOrphan(name);
  }
  ::closedir(d);
  return 0;
}

// One entry found at mount: a file that still has another name is the
// leftover of an op cut short by a crash; the rest wait for a reclaim.
void ServiceImpl::AdoptOrphan(const std::string& name) {
  UniqueFd fd(::openat(orphan_dir_.get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  FileKey key;
  if (fd.valid() && ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1 &&
      fs_->HandleOf(fd.get(), &key) == 0) {
    std::lock_guard lock(mu_);
    orphans_[st.st_ino] = {name, std::move(key)};
    orphan_count_.store(orphans_.size());
    return;
  }
  if (::unlinkat(orphan_dir_.get(), name.c_str(), 0) != 0)
    std::fprintf(stderr, "csvd: volume %s: cannot remove %s/%s: %s\n", options_.volume.c_str(),
                 kOrphanDir, name.c_str(), std::strerror(errno));
}

bool ServiceImpl::OpenAnywhere(const FileKey& key) const {
  for (const auto& [id, f] : opens_)
    if (f->key == key) return true;
  return false;
}

// Asked for every attribute reply: without orphans (nearly always) it
// takes no lock.
bool ServiceImpl::IsOrphan(ino_t ino) const {
  if (orphan_count_.load() == 0) return false;
  std::lock_guard lock(mu_);
  return orphans_.count(ino) > 0;
}

// Before `name` in `dirfd` (the last name of `key`) goes: if some node has
// the file open, give it a name in kOrphanDir. Returns the orphan's inode
// number (0: nothing done) or -errno.
int64_t ServiceImpl::OrphanIfOpen(int dirfd, const std::string& name, const FileKey& key) {
  {
    std::lock_guard lock(mu_);
    if (!OpenAnywhere(key)) return 0;
  }
  struct stat st {};
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return LastError();
  std::string oname = std::to_string(st.st_ino);
  if (::linkat(dirfd, name.c_str(), orphan_dir_.get(), oname.c_str(), 0) != 0) {
    struct stat there {};
    // Already there: the same op, re-sent after a crash between its steps.
    bool same = errno == EEXIST &&
                ::fstatat(orphan_dir_.get(), oname.c_str(), &there, AT_SYMLINK_NOFOLLOW) == 0 &&
                there.st_ino == st.st_ino;
    if (!same) return LastError();
  }
  std::lock_guard lock(mu_);
  orphans_[st.st_ino] = {oname, key};
  orphan_count_.store(orphans_.size());
  return static_cast<int64_t>(st.st_ino);
}

// The op that was to take the orphan's last name failed: it keeps its name.
void ServiceImpl::UndoOrphan(int64_t ino) {
  if (ino <= 0) return;
  std::string name;
  {
    std::lock_guard lock(mu_);
    auto it = orphans_.find(static_cast<ino_t>(ino));
    if (it == orphans_.end()) return;
    name = it->second.name;
    orphans_.erase(it);
    orphan_count_.store(orphans_.size());
  }
  ::unlinkat(orphan_dir_.get(), name.c_str(), 0);
}

// Orphans no node has open, taken out of orphans_ (mu_ held). None during
// the grace period: nodes may not have reclaimed their opens yet.
std::vector<std::string> ServiceImpl::TakeUnusedOrphans() {
  std::vector<std::string> names;
  if (grace_) return names;
  std::erase_if(orphans_, [&](const auto& kv) {
    if (OpenAnywhere(kv.second.key)) return false;
    names.push_back(kv.second.name);
    return true;
  });
  orphan_count_.store(orphans_.size());
  return names;
}

// Nobody has them open any more: their blocks are freed. No node holds a
// layout of an orphan (LAYOUT_GET refuses them and the unlink recalled
// them), so nothing needs recalling first.
void ServiceImpl::RemoveOrphans(const std::vector<std::string>& names) {
  for (const auto& name : names) {
    if (::unlinkat(orphan_dir_.get(), name.c_str(), 0) != 0 && errno != ENOENT)
      std::fprintf(stderr, "csvd: volume %s: cannot remove %s/%s: %s\n", options_.volume.c_str(),
                   kOrphanDir, name.c_str(), std::strerror(errno));
  }
  removed_orphans_ += names.size();
}

size_t ServiceImpl::EndGrace() {
  std::vector<std::string> names;
  if (!orphan_dir_.valid()) return 0;  // closed
  {
    std::lock_guard lock(mu_);
    grace_ = false;
    names = TakeUnusedOrphans();
  }
  RemoveOrphans(names);
  return names.size();
}

}  // namespace csv::coord
