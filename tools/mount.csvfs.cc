// mount.csvfs / umount.csvfs: the mount(8) helper of csvfs.
//
//   mount.csvfs DEVICE|VOLUME [DIR] [-fnsv] [-o OPTIONS]
//   umount.csvfs DIR [-flnrv]
//
// Mount: asks the local csvd (control socket) to attach the volume, which
// checks that the volume exists and that DEVICE holds its filesystem; then
// calls mount(2) with -o volume=NAME. VOLUME alone mounts the device this
// node sees for it at /ClusterStorage/VOLUME. fstab-only options (_netdev,
// x-systemd.*, nofail, auto, noauto, defaults, user, users) are not passed
// to the kernel. Umount: umount2(2), then tells csvd the volume is detached.
//
// Exit status as mount(8): 0 ok, 1 usage or permissions, 32 mount failure
// (the message says why: unknown volume, csvd not running, wrong device...).
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "csvctl/control.h"

namespace {

using json = nlohmann::json;
constexpr int kUsage = 1, kMountFailed = 32;

int Die(int code, const std::string& msg) {
  std::cerr << "mount.csvfs: " << msg << "\n";
  return code;
}

struct Flag {
  const char* name;
  unsigned long set, clear;
};
const Flag kFlags[] = {
    {"ro", MS_RDONLY, 0},         {"rw", 0, MS_RDONLY},
    {"nosuid", MS_NOSUID, 0},     {"suid", 0, MS_NOSUID},
    {"nodev", MS_NODEV, 0},       {"dev", 0, MS_NODEV},
    {"noexec", MS_NOEXEC, 0},     {"exec", 0, MS_NOEXEC},
    {"sync", MS_SYNCHRONOUS, 0},  {"async", 0, MS_SYNCHRONOUS},
    {"dirsync", MS_DIRSYNC, 0},   {"noatime", MS_NOATIME, 0},
    {"atime", 0, MS_NOATIME},     {"nodiratime", MS_NODIRATIME, 0},
    {"relatime", MS_RELATIME, 0}, {"strictatime", MS_STRICTATIME, 0},
    {"lazytime", MS_LAZYTIME, 0}, {"silent", MS_SILENT, 0},
};

bool FstabOnly(const std::string& o) {
  return o == "_netdev" || o == "nofail" || o == "auto" || o == "noauto" || o == "defaults" ||
         o == "user" || o == "users" || o == "nouser" || o == "owner" || o == "group" ||
         o.rfind("x-", 0) == 0 || o.rfind("comment=", 0) == 0;
}

std::string Socket() {
  const char* s = getenv("CSVD_CONTROL_SOCKET");
  return s && *s ? s : csvctl::kDefaultSocket;
}

// The volume= option of the csvfs mount at `dir` (from mountinfo), or "".
std::string MountedVolume(const std::string& dir, bool* is_csvfs) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line, found;
  *is_csvfs = false;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, devno, root, mnt, opts, f;
    ls >> id >> parent >> devno >> root >> mnt >> opts;
    while (ls >> f && f != "-") {
    }
    std::string fstype, source, super;
    ls >> fstype >> source >> super;
    if (mnt != dir) continue;
    *is_csvfs = fstype == "csvfs";
    found.clear();
    std::istringstream os(super);
    for (std::string o; std::getline(os, o, ',');)
      if (o.rfind("volume=", 0) == 0) found = o.substr(7);
  }
  return found;
}

// Where volume `volume` is mounted (csvfs) in this mount namespace, or "".
std::string MountPointOf(const std::string& volume) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, devno, root, mnt, opts, f;
    ls >> id >> parent >> devno >> root >> mnt >> opts;
    while (ls >> f && f != "-") {
    }
    std::string fstype, source, super;
    ls >> fstype >> source >> super;
    if (fstype != "csvfs") continue;
    std::istringstream os(super);
    for (std::string o; std::getline(os, o, ',');)
      if (o == "volume=" + volume) return mnt;
  }
  return "";
}

int Umount(int argc, char** argv) {
  std::string dir;
  bool lazy = false, force = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-l")
      lazy = true;
    else if (a == "-f")
      force = true;
    else if (a == "-t" || a == "-N")
      ++i;
    else if (a[0] != '-' && dir.empty())
      dir = a;
  }
  if (dir.empty()) return Die(kUsage, "usage: umount.csvfs DIR [-flnrv]");
  std::error_code ec;
  auto canon = std::filesystem::weakly_canonical(dir, ec);
  if (!ec) dir = canon.string();
  bool is_csvfs = false;
  std::string volume = MountedVolume(dir, &is_csvfs);
  if (umount2(dir.c_str(), (lazy ? MNT_DETACH : 0) | (force ? MNT_FORCE : 0)) != 0)
    return Die(kMountFailed,
               "cannot unmount " + dir + ": " + std::strerror(errno) +
                   (errno == EBUSY ? " (files are open there: fuser -vm " + dir + ")" : ""));
  if (!volume.empty()) {
    try {
      csvctl::Request(Socket(), {{"cmd", "detach"}, {"volume", volume}}, 5);
    } catch (const std::exception&) {
      // csvd gone: nothing to tell it; the kernel's UNMOUNT already went.
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string self = std::filesystem::path(argv[0]).filename().string();
  if (self.rfind("umount", 0) == 0) return Umount(argc, argv);

  std::vector<std::string> pos;
  std::string opts;
  bool fake = false, verbose = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-o" && i + 1 < argc) {
      opts += (opts.empty() ? "" : ",") + std::string(argv[++i]);
    } else if (a.rfind("-o", 0) == 0 && a.size() > 2) {
      opts += (opts.empty() ? "" : ",") + a.substr(2);
    } else if (a == "-t" || a == "-N") {
      ++i;  // type (csvfs) and namespace: not used
    } else if (a == "-f") {
      fake = true;
    } else if (a == "-v") {
      verbose = true;
    } else if (a == "-s" || a == "-n") {
    } else if (a == "-h" || a == "--help") {
      std::cout << "usage: mount.csvfs DEVICE|VOLUME [DIR] [-fnsv] [-o volume=NAME,...]\n"
                   "       (DIR defaults to /ClusterStorage/VOLUME)\n";
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      return Die(kUsage, "unknown option " + a + " (usage: mount.csvfs DEVICE DIR -o volume=NAME)");
    } else {
      pos.push_back(a);
    }
  }
  if (pos.empty() || pos.size() > 2)
    return Die(kUsage, "usage: mount.csvfs DEVICE|VOLUME [DIR] [-o volume=NAME,...]");
  if (geteuid() != 0) return Die(kUsage, "only root can mount csvfs");

  // Split the options: flags for mount(2), fstab-only ones dropped, the
  // rest (volume=, csvfs's own) passed as data.
  unsigned long flags = 0;
  std::string volume, data;
  std::istringstream os(opts);
  for (std::string o; std::getline(os, o, ',');) {
    if (o.empty() || FstabOnly(o)) continue;
    bool is_flag = false;
    for (const auto& f : kFlags)
      if (o == f.name) {
        flags = (flags | f.set) & ~f.clear;
        is_flag = true;
      }
    if (is_flag) continue;
    if (o.rfind("volume=", 0) == 0) {
      volume = o.substr(7);
      continue;
    }
    data += (data.empty() ? "" : ",") + o;
  }
  std::string device = pos[0];
  bool spec_is_volume = device.find('/') == std::string::npos;
  if (spec_is_volume) {
    if (!volume.empty() && volume != device)
      return Die(kUsage, "the volume is given twice: " + device + " and volume=" + volume);
    volume = device;
    device.clear();
  }
  if (volume.empty())
    return Die(kUsage, "which volume is " + device + "? add -o volume=NAME (csvctl volume list)");
  std::string dir = pos.size() > 1 ? pos[1] : "/ClusterStorage/" + volume;

  // Attach: csvd checks the volume and the device. At boot csvd may still
  // be starting or synchronising: wait for it a while.
  int timeout_s = 60;
  if (const char* t = getenv("CSV_MOUNT_TIMEOUT")) timeout_s = std::atoi(t);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  json r;
  for (;;) {
    std::string why;
    bool retry = false;
    try {
      r = csvctl::Request(Socket(), {{"cmd", "attach"}, {"volume", volume}, {"device", device}},
                          15);
      if (r.value("ok", false)) break;
      why = r.value("error", std::string("csvd refused"));
      retry = why.find("not synchronised") != std::string::npos;
    } catch (const csvctl::NotRunning& e) {
      why = e.what();
      retry = why.find("not running") != std::string::npos;
    }
    if (!retry || std::chrono::steady_clock::now() > deadline)
      return Die(kMountFailed, "cannot mount volume " + volume + ": " + why);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  if (device.empty()) device = r.value("device", std::string());
  if (device.empty())
    return Die(kMountFailed, "this node does not see the device of volume " + volume +
                                 " (filesystem UUID " + r.value("uuid", std::string()) +
                                 "): check its storage path (lsblk -f)");
  // The default mount point is created (also when fstab names it: at boot
  // /ClusterStorage may not exist yet); any other must exist.
  if (dir == "/ClusterStorage/" + volume) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return Die(kMountFailed, "cannot create " + dir + ": " + ec.message());
  }
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0)
    return Die(kMountFailed, "mount point " + dir + " does not exist: mkdir -p " + dir +
                                 " (or use the default, /ClusterStorage/" + volume + ")");
  if (!S_ISDIR(st.st_mode)) return Die(kMountFailed, "mount point " + dir + " is not a directory");
  // csvfs mounts a volume once per node (the kernel refuses a second
  // superblock with EINVAL): say so instead of "bad option".
  if (std::string at = MountPointOf(volume); !at.empty())
    return Die(kMountFailed, "volume " + volume + " is already mounted on this node at " + at +
                                 " (a volume is mounted once per node: umount " + at + " first)");
  data = "volume=" + volume + (data.empty() ? "" : "," + data);
  if (verbose)
    std::cerr << "mount.csvfs: mount -t csvfs -o " << data << " " << device << " " << dir
              << " (coordinator " << r.value("coordinator", 0) << ", epoch " << r.value("epoch", 0)
              << ")\n";
  if (fake) return 0;
  if (mount(device.c_str(), dir.c_str(), "csvfs", flags, data.c_str()) != 0) {
    int e = errno;
    std::string hint;
    if (e == ENODEV)
      hint = ": the csvfs module is not loaded (modprobe csvfs)";
    else if (e == EBUSY)
      hint = ": already mounted there?";
    else if (e == EINVAL)
      hint = ": bad option in " + data + " (see docs/kmod.md)";
    return Die(kMountFailed,
               "mount(2) of " + device + " on " + dir + " failed: " + std::strerror(e) + hint);
  }
  return 0;
}
