// csvd's configuration: a JSON file (--config), some fields overridable by
// flags. See docs/daemon.md for every field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/peer.h"

namespace csv::core {

// The packaged locations (tools/csvd.service, docs/operations.md). The
// legacy ones are read, with a warning, when the new ones do not exist.
inline constexpr const char* kDefaultConfigPath = "/etc/csv/csvd.conf";
inline constexpr const char* kDefaultKeyPath = "/etc/csv/cluster.key";
inline constexpr const char* kLegacyConfigPath = "/etc/csvfs/csvd.json";
inline constexpr const char* kLegacyKeyPath = "/etc/csvfs/cluster.key";

struct Config {
  NodeId node_id = kNoNode;        // kNoNode: Corosync's local node id
  std::vector<PeerAddress> nodes;  // every node of the cluster, with its address
  std::string key_file = kDefaultKeyPath;
  std::string state_dir = "/var/lib/csvd";
  std::string run_dir = "/run/csvd";
  std::string control_socket;  // default run_dir/control.sock
  std::string test_socket;     // default: none (the test channel is off)
  std::string group = "csvd";  // CPG group name
  int workers = 4;
  // Path probes have their own threads, never queued behind requests (see
  // docs/daemon.md "Path monitor"); a hung probe holds one.
  int probe_threads = 4;
  int path_interval_ms = 1000;
  int path_timeout_ms = 3000;
  int call_timeout_ms = 10000;  // coordinator-initiated calls (recalls)
  // The node lease: the kernel stops direct I/O this long after the last
  // renewal (every lease_ms / 4 while quorate); a new coordinator waits
  // this long (+ lease_margin_ms) after a node left before it mounts.
  int lease_ms = 3000;
  int lease_margin_ms = 500;
  // SCHED_RR priority of the event loop thread, which renews the lease
  // (0: normal scheduling). See docs/daemon.md "Scheduling".
  int realtime_priority = 99;
  // A new coordinator removes the files that lost their last name while
  // open (orphans) that no node reclaimed this long after it served.
  int reclaim_grace_ms = 30000;
  std::string path_fault_file;  // test seam: while it exists, probes fail
  bool kernel = true;           // look for csvfs.ko's genl family
  bool private_mounts = true;   // unshare the mount namespace at start
};

// Parses a config file; false with *error naming the bad field.
bool LoadConfig(const std::string& path, Config* config, std::string* error);

}  // namespace csv::core
