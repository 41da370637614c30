// Local block devices: a volume is found on each node by its filesystem
// UUID (device names may differ between nodes), and its path is probed.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "core/state.h"

namespace csv::core {

// The filesystem UUID of `device` and its type ("xfs", "ext4"), read by
// libblkid's low-level probe. nullopt with *error if there is none.
struct FsIdentity {
  Uuid uuid{};
  std::string type;
};
std::optional<FsIdentity> ProbeFilesystem(const std::string& device, std::string* error);

// The local block device holding filesystem `uuid`, or "" (libblkid cache,
// refreshed by a scan of all block devices).
std::string FindDeviceByUuid(const Uuid& uuid);

std::string UuidString(const Uuid& uuid);
bool ParseUuid(const std::string& text, Uuid* out);

// Reads the first 4 KiB of `device` with O_DIRECT. Blocking: call it from a
// worker. True if the read succeeded.
bool ProbePath(const std::string& device);

uint64_t DeviceSize(const std::string& device);

}  // namespace csv::core
