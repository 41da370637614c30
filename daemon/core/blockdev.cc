#include "core/blockdev.h"

#include <blkid/blkid.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace csv::core {

std::string UuidString(const Uuid& u) {
  char buf[37];
  std::snprintf(buf, sizeof buf,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                u[15]);
  return buf;
}

bool ParseUuid(const std::string& text, Uuid* out) {
  std::string hex;
  for (char c : text)
    if (c != '-') hex += c;
  if (hex.size() != 32) return false;
  for (size_t i = 0; i < 16; ++i) {
    char byte[3] = {hex[2 * i], hex[2 * i + 1], 0};
    char* end = nullptr;
    long v = std::strtol(byte, &end, 16);
    if (end != byte + 2) return false;
    (*out)[i] = static_cast<uint8_t>(v);
  }
  return true;
}

std::optional<FsIdentity> ProbeFilesystem(const std::string& device, std::string* error) {
  blkid_probe pr = blkid_new_probe_from_filename(device.c_str());
  if (!pr) {
    *error = "cannot open " + device + " for probing";
    return std::nullopt;
  }
  blkid_probe_enable_superblocks(pr, 1);
  blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_UUID | BLKID_SUBLKS_TYPE);
  std::optional<FsIdentity> result;
  if (blkid_do_safeprobe(pr) == 0) {
    const char* uuid = nullptr;
    const char* type = nullptr;
    blkid_probe_lookup_value(pr, "UUID", &uuid, nullptr);
    blkid_probe_lookup_value(pr, "TYPE", &type, nullptr);
    FsIdentity id;
    if (uuid && ParseUuid(uuid, &id.uuid)) {
      id.type = type ? type : "";
      result = id;
    }
  }
  blkid_free_probe(pr);
  if (!result) *error = device + " holds no filesystem with a UUID";
  return result;
}

std::string FindDeviceByUuid(const Uuid& uuid) {
  // blkid_evaluate_tag verifies the cached answer against the device and
  // scans all block devices when the cache is stale.
  std::string text = UuidString(uuid);
  char* dev = blkid_evaluate_tag("UUID", text.c_str(), nullptr);
  std::string out = dev ? dev : "";
  free(dev);
  if (out.empty()) return out;
  // Confirm with a fresh probe: the cache may be older than the device.
  std::string error;
  auto id = ProbeFilesystem(out, &error);
  return id && id->uuid == uuid ? out : "";
}

bool ProbePath(const std::string& device) {
  int fd = open(device.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return false;
  void* buf = nullptr;
  bool ok = false;
  if (posix_memalign(&buf, 4096, 4096) == 0) {
    ok = pread(fd, buf, 4096, 0) == 4096;
    free(buf);
  }
  close(fd);
  return ok;
}

uint64_t DeviceSize(const std::string& device) {
  int fd = open(device.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  uint64_t size = 0;
  if (ioctl(fd, BLKGETSIZE64, &size) != 0) size = 0;
  close(fd);
  return size;
}

}  // namespace csv::core
